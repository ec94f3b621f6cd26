//! Read and write open_clip checkpoints as named candle tensors.
//!
//! * [`Checkpoint::open`] reads `open_clip_pytorch_model.bin` (a `torch.save` zip
//!   archive, including training checkpoints with a `state_dict` entry and
//!   `module.`-prefixed names) and `open_clip_model.safetensors`, recognised by content.
//!   Tensors are memory-mapped and loaded lazily with [`Checkpoint::get`], converted to
//!   the requested dtype on the requested device. f32, f16 and bf16 weights (and
//!   integer buffers) are supported, including non-contiguous views saved by torch.
//! * [`Checkpoint::validate`] checks the names and shapes a model expects, reporting every
//!   difference in one error.
//! * [`save_safetensors`] writes a file all-or-nothing (with [`coca_fs::write_atomic`]).
//! * A `Checkpoint` is also a `candle_nn` [`SimpleBackend`](candle_nn::var_builder::SimpleBackend).
//!
//! ```no_run
//! use candle_core::{DType, Device};
//! use coca_checkpoint::Checkpoint;
//!
//! let ckpt = Checkpoint::open("open_clip_pytorch_model.bin")?;
//! ckpt.validate(&[("logit_scale".to_string(), vec![])])?;
//! let scale = ckpt.get("logit_scale", DType::F32, &Device::Cpu)?;
//! # Ok::<(), coca_checkpoint::CheckpointError>(())
//! ```

mod checkpoint;
mod detect;
mod error;
mod safetensors_file;
mod save;
mod strided;
mod torch;
mod validate;
mod var_builder;

pub use checkpoint::{Checkpoint, TensorInfo};
pub use detect::Format;
pub use error::CheckpointError;
pub use save::{save_safetensors, save_safetensors_with_int8};
pub use validate::{ShapeMismatch, ValidationReport};
