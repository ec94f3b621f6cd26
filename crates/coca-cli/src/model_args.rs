//! `--model` / `--pretrained` / `--precision` / `--device`, shared by the commands that run a model.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use clap::Args;
use coca_model::load::{load_model, LoadOptions};
use coca_model::{Coca, CocaConfig, ConfigSource};

/// Which model to run and where.
#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// Model name (coca_ViT-B-32, coca_ViT-L-14, coca_base) or the path of an open_clip config JSON.
    #[arg(long, value_name = "NAME|CONFIG.json")]
    pub model: String,
    /// Checkpoint file: open_clip_pytorch_model.bin (PyTorch zip) or a .safetensors file.
    #[arg(long, value_name = "FILE")]
    pub pretrained: PathBuf,
    /// Compute precision, as open_clip's --precision: fp32, fp16 or bf16.
    #[arg(long, default_value = "fp32", value_name = "fp32|fp16|bf16")]
    pub precision: String,
    /// Device: cpu (default), or cuda:N in builds with the `cuda` feature.
    #[arg(long, default_value = "cpu", value_name = "cpu|cuda:N")]
    pub device: String,
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

/// Resolve `--model` into a validated config.
pub fn resolve_config(model: &str) -> Result<(CocaConfig, ConfigSource)> {
    Ok(CocaConfig::resolve(model)?)
}

impl ModelArgs {
    /// Resolve the config, check the checkpoint path, and load the model.
    pub fn load(&self) -> Result<(Coca, CocaConfig)> {
        let (cfg, source) = resolve_config(&self.model)?;
        let opts = LoadOptions {
            dtype: parse_precision(&self.precision)?,
            device: parse_device(&self.device)?,
        };
        self.check_pretrained_path()?;
        let started = std::time::Instant::now();
        let model = load_model(&cfg, &self.pretrained, &opts)?;
        tracing::info!(
            "loaded {source} from {} in {:.2}s",
            self.pretrained.display(),
            started.elapsed().as_secs_f64()
        );
        Ok((model, cfg))
    }

    /// A missing `--pretrained` file gets a message that says what to pass instead.
    pub fn check_pretrained_path(&self) -> Result<()> {
        if !self.pretrained.exists() {
            let shown = self.pretrained.display();
            let looks_like_tag = !shown.to_string().contains(['/', '.']);
            if looks_like_tag {
                bail!(
                    "{shown}: no such file. Pretrained tags are not downloaded by this version; pass the path of \
                     an open_clip checkpoint (open_clip_pytorch_model.bin or .safetensors)"
                );
            }
            bail!("{shown}: no such file");
        }
        Ok(())
    }
}
