//! `coca tokenize`: the ids open_clip's tokenizer gives, padded to the model's context length.

use anyhow::{Context, Result};
use clap::Args;
use coca_text::Tokenizer;
use serde_json::json;

use crate::cli::Global;
use crate::model_args::resolve_config;
use crate::output::write_json;

/// `coca tokenize`.
#[derive(Debug, Args)]
pub struct TokenizeArgs {
    /// Model name or config JSON (gives the context length; default coca_ViT-B-32).
    #[arg(long, default_value = "coca_ViT-B-32", value_name = "NAME|CONFIG.json")]
    pub model: String,
    /// Print JSON {"context_length": N, "tokens": [[..]], "truncated": [..]}.
    #[arg(long)]
    pub json: bool,
    /// The texts.
    #[arg(required = true, value_name = "TEXT")]
    pub texts: Vec<String>,
}

/// Run the command.
pub fn run(args: TokenizeArgs, _global: &Global) -> Result<()> {
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
