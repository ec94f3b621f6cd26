//! `coca tokenize`: the ids open_clip's tokenizer gives, padded to the model's context length.

use anyhow::{Context, Result};
use coca_text::Tokenizer;
use serde_json::json;

use crate::cli::TokenizeArgs;
use crate::model_args::resolve_config;
use crate::output::write_json;

/// Run the command.
pub fn run(args: TokenizeArgs) -> Result<()> {
    let (cfg, _) = resolve_config(&args.model)?;
    let context = cfg.text_cfg.context_length;
    let tokenizer = Tokenizer::new().context("loading the CLIP tokenizer")?;
    let results = tokenizer.tokenize_batch(&args.texts, context);
    for (i, r) in results.iter().enumerate() {
        if r.truncated {
            tracing::info!(
                "text #{} has {} tokens; truncated to {context} with end-of-text last, as open_clip does",
                i + 1,
                r.n_tokens
            );
        }
    }
    if args.json {
        let value = json!({
            "context_length": context,
            "tokens": results.iter().map(|r| &r.ids).collect::<Vec<_>>(),
            "truncated": results.iter().map(|r| r.truncated).collect::<Vec<_>>(),
        });
        return write_json(&value, None);
    }
    for r in &results {
        let ids: Vec<String> = r.ids.iter().map(u32::to_string).collect();
        println!("{}", ids.join(" "));
    }
    Ok(())
}
