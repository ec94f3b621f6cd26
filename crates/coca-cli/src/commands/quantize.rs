//! `coca quantize`: a checkpoint with its product weights packed to int8 or bf16 ahead of time, which every
//! command then loads directly with `--pretrained` (see `coca_model::quantized` for the file layout).

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use coca_checkpoint::Checkpoint;
use coca_model::load::{load_model, validate_checkpoint, LoadOptions};
use coca_model::nn::ops::PackedFormat;
use coca_model::quantized::{format_name, is_quantized, write_quantized};

use crate::cli::Global;
use crate::model_args::{resolve_config, Precision};

/// `coca quantize`.
#[derive(Debug, Args)]
#[command(after_help = "\
Every product weight (attention, MLP, poolers, tower projections, LM head) is stored packed: int8 with one
f32 scale per output channel, or bf16; the rest (LayerNorms, embeddings, patch embedding, logit scale) as f32.
The metadata records the precision and the model config, which --model must match when the file is loaded.
The output is written to a temporary file and renamed.")]
pub struct QuantizeArgs {
    /// Model name (coca_ViT-B-32, coca_ViT-L-14, coca_base) or the path of an open_clip config JSON.
    #[arg(long, value_name = "NAME|CONFIG.json")]
    pub model: String,
    /// The f32 (or f16/bf16) checkpoint: a file or an open_clip pretrained tag.
    #[arg(long, value_name = "FILE|TAG")]
    pub pretrained: String,
    /// The precision of the packed weights.
    #[arg(long, value_name = "int8|bf16")]
    pub precision: Precision,
    /// Where to write the quantised safetensors file.
    #[arg(long, short, value_name = "Q.safetensors")]
    pub output: PathBuf,
    /// Replace an existing output file.
    #[arg(long)]
    pub force: bool,
}

/// Run the command.
pub fn run(args: QuantizeArgs, _global: &Global) -> Result<()> {
    let format = match args.precision {
        Precision::Int8 => PackedFormat::Int8,
        Precision::Bf16 => PackedFormat::Bf16,
        other => bail!("--precision {other}: coca quantize writes int8 or bf16 weights"),
    };
    let (cfg, _) = resolve_config(&args.model)?;
    let weights = coca_pipeline::weights_path(&args.model, &args.pretrained)?;
    if args.output.exists() && !args.force {
        bail!(
            "{}: already exists (pass --force to replace it)",
            args.output.display()
        );
    }
    if let (Ok(a), Ok(b)) = (args.output.canonicalize(), weights.canonicalize()) {
        if a == b {
            bail!("--output must differ from --pretrained");
        }
    }
    let ckpt = Checkpoint::open(&weights)?;
    if is_quantized(&ckpt) {
        bail!(
            "'{}' is already quantised; give coca quantize the f32 checkpoint",
            weights.display()
        );
    }
    validate_checkpoint(&cfg, &ckpt)?;
    let bad = ckpt.non_finite_tensors()?;
    if !bad.is_empty() {
        bail!(
            "'{}' has NaN or infinite weights in {}; they cannot be quantised",
            weights.display(),
            coca_pipeline::name_list(&bad)
        );
    }
    let mut model = load_model(&cfg, &weights, &LoadOptions::default())?;
    write_quantized(&mut model, &ckpt, format, &args.output)?;
    eprintln!(
        "wrote {} ({} product weights, {}) from {}",
        args.output.display(),
        format_name(format),
        byte_size(&args.output),
        weights.display()
    );
    Ok(())
}

/// The size of a written file for the summary line.
fn byte_size(path: &std::path::Path) -> String {
    match std::fs::metadata(path) {
        Ok(m) => format!("{:.1} MB", m.len() as f64 / 1e6),
        Err(_) => "size unknown".to_string(),
    }
}
