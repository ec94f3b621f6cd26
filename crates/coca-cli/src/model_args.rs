//! `--model` / `--pretrained` / `--precision` / `--device`, shared by the commands that run a model.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use clap::Args;
use coca_checkpoint::Checkpoint;
use coca_model::budget::{check_fits, Workload};
use coca_model::load::{load_model, LoadOptions};
use coca_model::{Coca, CocaConfig, ConfigSource};

/// Which model to run and where.
#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// Model name (coca_ViT-B-32, coca_ViT-L-14, coca_base) or the path of an open_clip config JSON.
    #[arg(long, value_name = "NAME|CONFIG.json")]
    pub model: String,
    /// Checkpoint: a file (open_clip_pytorch_model.bin or .safetensors) or an open_clip pretrained tag such as
    /// laion2b_s13b_b90k or mscoco_finetuned_laion2b_s13b_b90k, fetched into the Hugging Face cache (HF_HOME,
    /// HF_HUB_OFFLINE and HF_TOKEN are honoured).
    #[arg(long, value_name = "FILE|TAG")]
    pub pretrained: String,
    /// Compute precision, as open_clip's --precision: fp32, fp16 or bf16.
    #[arg(long, default_value = "fp32", value_name = "fp32|fp16|bf16")]
    pub precision: String,
    /// Device: cpu (default), or cuda:N in builds with the `cuda` feature.
    #[arg(long, default_value = "cpu", value_name = "cpu|cuda:N")]
    pub device: String,
    /// Run a checkpoint whose weights hold NaN or infinite values (refused by default, as its outputs would be
    /// NaN too); the affected tensors are named in a warning.
    #[arg(long)]
    pub allow_nonfinite_weights: bool,
}

/// Parse open_clip-style precision names (also accepting dtype spellings).
pub fn parse_precision(s: &str) -> Result<DType> {
    Ok(match s.to_ascii_lowercase().as_str() {
        "fp32" | "f32" | "float32" | "pure_fp32" => DType::F32,
        "fp16" | "f16" | "float16" | "pure_fp16" => DType::F16,
        "bf16" | "bfloat16" | "pure_bf16" => DType::BF16,
        other => bail!("unknown precision `{other}`; use fp32, fp16 or bf16"),
    })
}

/// Parse `cpu` / `cuda` / `cuda:N`.
pub fn parse_device(s: &str) -> Result<Device> {
    if s == "cpu" {
        return Ok(Device::Cpu);
    }
    let ordinal = match s.strip_prefix("cuda") {
        Some("") => 0,
        Some(rest) => rest
            .strip_prefix(':')
            .and_then(|n| n.parse::<usize>().ok())
            .with_context(|| format!("bad device `{s}`; use cpu or cuda:N"))?,
        None => bail!("unknown device `{s}`; use cpu or cuda:N"),
    };
    Device::new_cuda(ordinal).with_context(|| {
        format!("cannot use device `{s}` (this binary needs the `cuda` feature and an NVIDIA GPU)")
    })
}

/// Up to ten names, then how many more.
pub fn name_list(names: &[String]) -> String {
    const SHOWN: usize = 10;
    let mut out = names
        .iter()
        .take(SHOWN)
        .map(|n| format!("'{n}'"))
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > SHOWN {
        out.push_str(&format!(", ... and {} more", names.len() - SHOWN));
    }
    out
}

/// Refuse a checkpoint with NaN or infinite weights (a model built from it answers NaN), or only warn when
/// `allow` is set; either way the message names the tensors.
pub fn check_finite_weights(path: &std::path::Path, allow: bool) -> Result<()> {
    let bad = Checkpoint::open(path)?.non_finite_tensors()?;
    if bad.is_empty() {
        return Ok(());
    }
    let what = format!(
        "checkpoint '{}' has NaN or infinite weights in {} tensor{}: {}",
        path.display(),
        bad.len(),
        if bad.len() == 1 { "" } else { "s" },
        name_list(&bad)
    );
    if allow {
        tracing::warn!("{what}; running anyway (--allow-nonfinite-weights)");
        Ok(())
    } else {
        bail!(
            "{what}; its outputs would be NaN. Use a healthy checkpoint, or pass --allow-nonfinite-weights to run \
             it anyway"
        )
    }
}

/// Resolve `--model` into a validated config (every size within `coca_model::config::limits`).
pub fn resolve_config(model: &str) -> Result<(CocaConfig, ConfigSource)> {
    Ok(CocaConfig::resolve(model)?)
}

impl ModelArgs {
    /// The checkpoint file: `--pretrained` itself when it is a file, else the tag's file from the Hugging Face
    /// cache (downloaded on first use).
    pub fn weights_path(&self) -> Result<PathBuf> {
        let resolved = coca_hub::resolve_pretrained(
            &self.model,
            &self.pretrained,
            &coca_hub::HubOptions::from_env(),
        )?;
        Ok(resolved.path)
    }

    /// Resolve the config and the checkpoint, and load the model (after checking that it fits in memory).
    pub fn load(&self) -> Result<(Coca, CocaConfig)> {
        let (cfg, source) = resolve_config(&self.model)?;
        let opts = LoadOptions {
            dtype: parse_precision(&self.precision)?,
            device: parse_device(&self.device)?,
        };
        let workload = Workload {
            batch: 1,
            dtype_bytes: opts.dtype.size_in_bytes(),
            training: false,
            device: opts.device.clone(),
        };
        check_fits(&cfg, &source, &workload)?;
        let weights = self.weights_path()?;
        check_finite_weights(&weights, self.allow_nonfinite_weights)?;
        let started = std::time::Instant::now();
        let model = load_model(&cfg, &weights, &opts)?;
        tracing::info!(
            "loaded {source} from {} in {:.2}s",
            weights.display(),
            started.elapsed().as_secs_f64()
        );
        Ok((model, cfg))
    }
}
