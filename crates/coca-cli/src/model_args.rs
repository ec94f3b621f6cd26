//! `--model` / `--pretrained` / `--precision` / `--device`, shared by the commands that run a model.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use coca_model::{Coca, CocaConfig};
pub use coca_pipeline::{name_list, resolve_config, DeviceSpec, Precision};

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
    /// Compute precision: fp32, fp16 or bf16 as open_clip's --precision, or int8. On the CPU bf16 and int8 pack
    /// the product weights (bf16: bf16 weights and f32 activations; int8: int8 weights, activations quantised
    /// per row); on a GPU bf16 is candle's bf16 and int8 is refused. A file written by coca quantize runs in its
    /// own precision.
    #[arg(long, default_value = "fp32", value_name = "fp32|fp16|bf16|int8")]
    pub precision: Precision,
    /// Device: cpu (default), or cuda:N in builds with the `cuda` feature.
    #[arg(long, default_value = "cpu", value_name = "cpu|cuda:N")]
    pub device: DeviceSpec,
    /// Run a checkpoint whose weights hold NaN or infinite values (refused by default, as its outputs would be
    /// NaN too); the affected tensors are named in a warning.
    #[arg(long)]
    pub allow_nonfinite_weights: bool,
}

impl ModelArgs {
    /// The checkpoint file: `--pretrained` itself when it is a file, else the tag's file from the Hugging Face
    /// cache (downloaded on first use).
    pub fn weights_path(&self) -> Result<PathBuf> {
        coca_pipeline::weights_path(&self.model, &self.pretrained)
    }

    /// Resolve the config and the checkpoint, and load the model (after checking that it fits in memory).
    pub fn load(&self) -> Result<(Coca, CocaConfig)> {
        coca_pipeline::ModelSpec {
            model: &self.model,
            pretrained: &self.pretrained,
            precision: self.precision,
            device: self.device,
            allow_nonfinite_weights: self.allow_nonfinite_weights,
        }
        .load()
    }
}
