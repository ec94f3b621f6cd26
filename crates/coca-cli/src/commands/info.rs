//! `coca info`: what a model is made of, and whether a checkpoint fits it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use coca_checkpoint::Checkpoint;
use coca_model::config::VisionPooling;
use coca_model::load::validate_checkpoint;
use coca_model::weights::{parameter_count, parameter_specs};
use serde_json::json;

use crate::cli::Global;
use crate::model_args::{name_list, resolve_config};
use crate::output::write_json;

/// `coca info`.
#[derive(Debug, Args)]
pub struct InfoArgs {
    /// Model name or config JSON.
    #[arg(long, value_name = "NAME|CONFIG.json")]
    pub model: String,
    /// A checkpoint to inspect and validate against the model.
    #[arg(long, value_name = "FILE")]
    pub pretrained: Option<PathBuf>,
    /// List every parameter with its shape.
    #[arg(long)]
    pub shapes: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// The tower a parameter belongs to, by its open_clip name.
fn tower(name: &str) -> &str {
    name.split('.').next().unwrap_or(name)
}

fn human(n: usize) -> String {
    match n {
        n if n >= 1_000_000 => format!("{:.2}M", n as f64 / 1e6),
        n if n >= 1_000 => format!("{:.1}K", n as f64 / 1e3),
        n => n.to_string(),
    }
}

/// Run the command.
pub fn run(args: InfoArgs, _global: &Global) -> Result<()> {
    let (cfg, source) = resolve_config(&args.model)?;
    let specs = parameter_specs(&cfg)?;
    let mut per_tower: BTreeMap<&str, usize> = BTreeMap::new();
    for (name, shape) in &specs {
        *per_tower.entry(tower(name)).or_default() += shape.iter().product::<usize>();
    }
    let total = parameter_count(&specs);

    let checkpoint = match &args.pretrained {
        Some(path) => {
            let ckpt = Checkpoint::open(path)?;
            let mut dtypes: BTreeMap<String, usize> = BTreeMap::new();
            for (_, info) in ckpt.infos() {
                *dtypes
                    .entry(format!("{:?}", info.dtype).to_lowercase())
                    .or_default() += info.elem_count();
            }
            let non_finite = ckpt.non_finite_tensors()?;
            let verdict = match validate_checkpoint(&cfg, &ckpt) {
                Ok(()) => "matches the model".to_string(),
                Err(e) => format!("does NOT match the model: {e}"),
            };
            Some(json!({
                "path": path,
                "format": ckpt.format().to_string(),
                "tensors": ckpt.len(),
                "parameters": ckpt.num_params(),
                "dtypes": dtypes,
                "file_bytes": std::fs::metadata(path).map(|m| m.len()).unwrap_or(0),
                "validation": verdict,
                "non_finite_tensors": non_finite,
            }))
        }
        None => None,
    };

    let v = &cfg.vision_cfg;
    let pooling = match v.pooling() {
        VisionPooling::Token { average: false } => "class token".to_string(),
        VisionPooling::Token { average: true } => "mean of patch tokens".to_string(),
        VisionPooling::Shared => format!(
            "attentional pooler, {} queries (1 embedding + {} caption tokens), {} heads",
            v.attn_pooler_queries,
            v.attn_pooler_queries - 1,
            v.attn_pooler_heads
        ),
        VisionPooling::Split(mode) => format!(
            "{mode:?} poolers: 1-query contrastive + {}-query caption, {} heads",
            v.attn_pooler_queries, v.attn_pooler_heads
        )
        .to_lowercase(),
    };

    if args.json {
        let mut value = json!({
            "model": source.to_string(),
            "config": cfg,
            "parameters": {"total": total, "per_tower": per_tower},
            "image_pooling": pooling,
        });
        if args.shapes {
            value["shapes"] = json!(specs.iter().map(|(n, s)| json!([n, s])).collect::<Vec<_>>());
        }
        if let Some(c) = checkpoint {
            value["checkpoint"] = c;
        }
        return write_json(&value, None);
    }

    let (ih, iw) = v.image_size.hw();
    let (ph, pw) = v.patch_size.hw();
    println!("model {source}: {} parameters ({total})", human(total));
    for (tower, n) in &per_tower {
        println!("  {tower:<14} {:>9}  ({n})", human(*n));
    }
    println!(
        "image:   {ih}x{iw} px, patch {ph}x{pw}, ViT {} layers × width {} ({} heads); {pooling}",
        v.layers,
        v.width,
        v.heads()
    );
    let t = &cfg.text_cfg;
    println!(
        "text:    {} unimodal layers × width {} ({} heads), context {} tokens + CLS, vocab {}",
        t.layers, t.width, t.heads, t.context_length, t.vocab_size
    );
    let m = &cfg.multimodal_cfg;
    println!(
        "decoder: {} multimodal layers × width {} ({} heads), LM head {} → {}",
        m.layers, m.width, m.heads, m.width, m.vocab_size
    );
    println!("embedding dimension: {}", cfg.embed_dim);
    if args.shapes {
        for (name, shape) in &specs {
            println!("  {name:<60} {shape:?}");
        }
    }
    if let Some(c) = checkpoint {
        println!(
            "checkpoint {}: {} format, {} tensors, {} parameters, dtypes {}; {}",
            c["path"].as_str().unwrap_or_default(),
            c["format"].as_str().unwrap_or_default(),
            c["tensors"],
            c["parameters"],
            c["dtypes"],
            c["validation"].as_str().unwrap_or_default()
        );
        let non_finite: Vec<String> = c["non_finite_tensors"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|n| n.as_str().map(str::to_string))
            .collect();
        if !non_finite.is_empty() {
            println!(
                "WARNING: {} tensor{} with NaN or infinite values (inference commands refuse this checkpoint): {}",
                non_finite.len(),
                if non_finite.len() == 1 { "" } else { "s" },
                name_list(&non_finite)
            );
        }
    }
    Ok(())
}
