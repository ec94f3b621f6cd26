//! CoCa (Contrastive Captioners) on candle, numerically matching open_clip 3.3.0.
//!
//! - [`config`]: open_clip's model-config JSON, the built-in configs, validation;
//! - [`budget`]: whether a config's model fits in the memory available, before anything is allocated;
//! - [`nn`]: attention blocks and the elementary ops (differentiable where training needs it);
//! - [`vision`], [`pooler`], [`text`], [`decoder`]: the towers; [`coca`]: the model; [`loss`]: the objective;
//! - [`segments`]: a training forward cut into segments, differentiated one at a time (overlapped gradient
//!   communication) and optionally recomputed (`--grad-checkpointing`);
//! - [`weights`]: expected parameters and trainable construction; [`load`]: checkpoints to models.

pub mod budget;
pub mod coca;
pub mod config;
pub mod decoder;
pub mod error;
pub mod load;
pub mod loss;
pub mod nn;
pub mod parity;
pub mod pooler;
pub mod segments;
#[cfg(test)]
mod test_support;
pub mod text;
pub mod vision;
pub mod weights;

pub use coca::{Coca, CocaOutput, ImageEncoding, TextEncoding, TrainOutput};
pub use config::{CocaConfig, ConfigSource};
pub use error::{ModelError, Result};
pub use loss::{
    coca_loss, coca_loss_fused, coca_loss_fused_with, CaptionNll, CocaLoss, CocaLossConfig,
};
