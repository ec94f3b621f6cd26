//! `coca convert`: any open_clip checkpoint to a validated safetensors file.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Result};
use candle_core::Device;
use clap::Args;
use coca_checkpoint::{save_safetensors, Checkpoint};
use coca_model::load::validate_checkpoint;

use crate::cli::Global;
use crate::model_args::{resolve_config, ModelArgs};

/// `coca convert`.
#[derive(Debug, Args)]
#[command(after_help = "\
The checkpoint is validated strictly against the model first; the output is written to a temporary file
and renamed, so an interrupted conversion never leaves a partial file behind.")]
pub struct ConvertArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Where to write the safetensors file.
    #[arg(long, short, value_name = "FILE.safetensors")]
    pub output: PathBuf,
    /// Storage dtype of the output (default: keep each tensor's dtype).
    #[arg(long = "save-dtype", value_name = "f32|f16|bf16")]
    pub save_dtype: Option<coca_pipeline::Precision>,
    /// Replace an existing output file.
    #[arg(long)]
    pub force: bool,
}

/// Run the command.
pub fn run(args: ConvertArgs, _global: &Global) -> Result<()> {
    let (cfg, source) = resolve_config(&args.model.model)?;
    let weights = args.model.weights_path()?;
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
    let save_dtype = match args.save_dtype.map(|p| (p, p.float_dtype())) {
        None => None,
        Some((_, Some(dtype))) => Some(dtype),
        Some((p, None)) => bail!(
            "--save-dtype {p}: convert writes f32, f16 or bf16 tensors; coca quantize writes {p} weights"
        ),
    };
    let ckpt = Checkpoint::open(&weights)?;
    validate_checkpoint(&cfg, &ckpt)?;
    let tensors: Vec<(String, candle_core::Tensor)> = ckpt
        .names()
        .map(|name| Ok((name.to_string(), ckpt.get_stored(name, &Device::Cpu)?)))
        .collect::<Result<_>>()?;
    let mut metadata = BTreeMap::new();
    metadata.insert("format".to_string(), "pt".to_string());
    metadata.insert("coca_model".to_string(), source.to_string());
    metadata.insert("open_clip_config".to_string(), serde_json::to_string(&cfg)?);
    save_safetensors(
        &args.output,
        tensors.iter().map(|(n, t)| (n, t)),
        save_dtype,
        &metadata,
    )?;
    eprintln!(
        "wrote {} ({} tensors, {} parameters) from {} ({})",
        args.output.display(),
        tensors.len(),
        ckpt.num_params(),
        weights.display(),
        ckpt.format()
    );
    Ok(())
}
