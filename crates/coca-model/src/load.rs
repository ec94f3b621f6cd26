//! Checkpoints to models: strict validation against the config, then construction.

use std::path::Path;

use candle_core::{DType, Device};
use coca_checkpoint::{Checkpoint, CheckpointError};

use crate::coca::Coca;
use crate::config::{builtin_model_names, CocaConfig};
use crate::error::{ModelError, Result};
use crate::weights::parameter_specs;

/// Where and how to materialise the weights.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Compute dtype of the weights (converted on load).
    pub dtype: DType,
    /// Target device.
    pub device: Device,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            dtype: DType::F32,
            device: Device::Cpu,
        }
    }
}

/// The built-in configs whose parameters match the checkpoint exactly (to suggest the right `--model`).
pub fn matching_builtin_models(ckpt: &Checkpoint) -> Vec<&'static str> {
    builtin_model_names()
        .into_iter()
        .filter(|name| {
            CocaConfig::builtin(name)
                .ok()
                .filter(|cfg| {
                    cfg.validate(&crate::ConfigSource::Builtin(name.to_string()))
                        .is_ok()
                })
                .and_then(|cfg| parameter_specs(&cfg).ok())
                .is_some_and(|specs| ckpt.validate(&specs).is_ok())
        })
        .collect()
}

/// Check that `ckpt` holds exactly the parameters `cfg` needs; on failure the error lists every missing,
/// unexpected and mis-shaped tensor, plus which built-in model the file does fit, if any.
pub fn validate_checkpoint(cfg: &CocaConfig, ckpt: &Checkpoint) -> Result<()> {
    let specs = parameter_specs(cfg)?;
    match ckpt.validate(&specs) {
        Ok(()) => Ok(()),
        Err(err @ CheckpointError::Mismatch { .. }) => {
            let fits = matching_builtin_models(ckpt);
            if fits.is_empty() {
                Err(err.into())
            } else {
                Err(ModelError::Input(format!(
                    "{err}\nhint: this checkpoint matches --model {}",
                    fits.join(" or --model ")
                )))
            }
        }
        Err(err) => Err(err.into()),
    }
}

/// Open a checkpoint file (PyTorch `.bin` or `.safetensors`), validate it strictly against `cfg`, and build the
/// model for inference.
pub fn load_model(cfg: &CocaConfig, path: &Path, opts: &LoadOptions) -> Result<Coca> {
    let ckpt = Checkpoint::open(path)?;
    validate_checkpoint(cfg, &ckpt)?;
    let vb = ckpt.into_var_builder(opts.dtype, &opts.device);
    Ok(Coca::new(cfg, vb)?)
}
