//! Resolve `--pretrained` the way the CLI does and print the file:
//!
//! ```text
//! cargo run -p coca-hub --example fetch -- coca_ViT-B-32 laion2b_s13b_b90k
//! ```
//!
//! Honours `HF_HOME`, `HF_HUB_CACHE`, `HF_HUB_OFFLINE`, `HF_ENDPOINT` and
//! `HF_TOKEN`.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [model, tag] = args.as_slice() else {
        eprintln!("usage: fetch MODEL TAG|PATH");
        return ExitCode::from(2);
    };
    match coca_hub::resolve_pretrained(model, tag, &coca_hub::HubOptions::from_env()) {
        Ok(weights) => {
            println!("{} ({:?})", weights.path.display(), weights.origin);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
