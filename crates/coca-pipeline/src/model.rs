//! Models by open_clip name (or config file) and checkpoint file (or pretrained tag), on a device and precision.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use coca_checkpoint::Checkpoint;
use coca_model::budget::{check_fits, Workload};
use coca_model::load::{load_model, LoadOptions};
use coca_model::{Coca, CocaConfig, ConfigSource};

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
pub fn check_finite_weights(path: &Path, allow: bool) -> Result<()> {
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

/// Resolve a model name or config path into a validated config (every size within
/// `coca_model::config::limits`).
pub fn resolve_config(model: &str) -> Result<(CocaConfig, ConfigSource)> {
    Ok(CocaConfig::resolve(model)?)
}

/// The checkpoint file: `pretrained` itself when it is a file, else the tag's file from the Hugging Face cache
/// (downloaded on first use; HF_HOME, HF_HUB_OFFLINE and HF_TOKEN are honoured).
pub fn weights_path(model: &str, pretrained: &str) -> Result<PathBuf> {
    let resolved =
        coca_hub::resolve_pretrained(model, pretrained, &coca_hub::HubOptions::from_env())?;
    Ok(resolved.path)
}

/// What `--model`, `--pretrained`, `--precision`, `--device` and `--allow-nonfinite-weights` name.
#[derive(Debug, Clone)]
pub struct ModelSpec<'a> {
    /// Model name or config path.
    pub model: &'a str,
    /// Checkpoint file or pretrained tag.
    pub pretrained: &'a str,
    /// fp32, fp16 or bf16.
    pub precision: &'a str,
    /// cpu or cuda:N.
    pub device: &'a str,
    /// Run a checkpoint with NaN or infinite weights (with a warning) instead of refusing it.
    pub allow_nonfinite_weights: bool,
}

impl ModelSpec<'_> {
    /// Resolve the config and the checkpoint, and load the model (after checking that it fits in memory and
    /// that its weights are finite).
    pub fn load(&self) -> Result<(Coca, CocaConfig)> {
        let (cfg, source) = resolve_config(self.model)?;
        let opts = LoadOptions {
            dtype: parse_precision(self.precision)?,
            device: parse_device(self.device)?,
        };
        let workload = Workload {
            batch: 1,
            dtype_bytes: opts.dtype.size_in_bytes(),
            training: false,
            device: opts.device.clone(),
        };
        check_fits(&cfg, &source, &workload)?;
        let weights = weights_path(self.model, self.pretrained)?;
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
