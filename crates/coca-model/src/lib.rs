//! CoCa (Contrastive Captioners) on candle, numerically matching open_clip 3.3.0.
//!
//! - [`config`]: open_clip's model-config JSON, the built-in configs, validation;
//! - [`budget`]: whether a config's model fits in the memory available, before anything is allocated;
//! - [`nn`]: attention blocks and the elementary ops (differentiable where training needs it);
//! - [`vision`], [`pooler`], [`text`], [`decoder`]: the towers; [`coca`]: the model; [`loss`]: the objective;
//! - [`decode`]: the cached forward that writes captions one position at a time ([`DecodeCache`]);
//! - [`segments`]: a training forward cut into segments, differentiated one at a time (overlapped gradient
//!   communication) and optionally recomputed (`--grad-checkpointing`);
//! - [`weights`]: expected parameters and trainable construction; [`load`]: checkpoints to models;
//!   [`quantized`]: checkpoints with int8 or bf16 product weights (`coca quantize`).
//!
//! # Running the model
//!
//! How the residual blocks run only matters to a forward that will be differentiated, so it is chosen in one
//! place, a [`BlockRunner`] argument: [`nn::AllAtOnce`] runs every block as it is in one graph (inference, and
//! training differentiated in one pass); [`segments::Segments`] cuts the graph at every block and tower output
//! and can recompute blocks in the backward. The towers ([`vision::VisionTower::forward`],
//! [`text::TextTower::forward`], [`decoder::MultimodalDecoder::final_hidden`]) are building blocks and always
//! take the runner. [`Coca`] is the model as its users call it: the inference methods ([`Coca::encode_image`],
//! [`Coca::encode_text`], [`Coca::forward`]) run all at once and take none, and the training forward
//! [`Coca::forward_for_loss`] always takes one. Each computation has one body; nothing exists in a runner and
//! a runner-free version.
//!
//! Writing captions is the third way to run it: [`Coca::decode_cache`] computes the image's keys and values
//! once, and each [`Coca::forward_cached`] runs only the new positions against the cached ones (the same
//! numbers as [`Coca::forward`] at those positions).
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use coca_model::load::{load_model, LoadOptions};
//! use coca_model::nn::AllAtOnce;
//! use coca_model::segments::{SegmentMode, Segments};
//! use coca_model::{coca_loss_fused, CocaConfig, CocaLossConfig};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/parity/tiny_legacy");
//! let cfg = CocaConfig::from_file(&dir.join("config.json"))?;
//! let model = load_model(&cfg, &dir.join("open_clip_model.safetensors"), &LoadOptions::default())?;
//! let (h, w) = model.visual().image_size();
//! let images = Tensor::zeros((2, 3, h, w), candle_core::DType::F32, &Device::Cpu)?;
//! let ids = Tensor::new(&[[254u32, 5, 6, 255, 0], [254, 7, 8, 9, 255]], &Device::Cpu)?;
//!
//! // Inference: embeddings and teacher-forced caption logits.
//! let image = model.encode_image(&images)?;
//! let text = model.encode_text(&ids)?;
//! let similarity = image.embedding.matmul(&text.embedding.t()?)?; // (2 images, 2 captions)
//! let out = model.forward_with_image(&image, &ids)?;
//! assert_eq!(out.logits.dims(), &[2, 4, model.text().vocab_size()]);
//!
//! // Training: the same forward, in one graph or cut into recomputed segments (`--grad-checkpointing`).
//! let one_graph = model.forward_for_loss(&images, &ids, &AllAtOnce)?;
//! let loss = coca_loss_fused(&one_graph, &CocaLossConfig::default())?;
//! let segments = Segments::new(SegmentMode::Recompute);
//! let cut = model.forward_for_loss(&images, &ids, &segments)?;
//! assert_eq!(cut.caption_hidden.dims(), one_graph.caption_hidden.dims());
//! # let _ = (similarity, loss);
//!
//! // Captioning: the start token for both images, then one position per step.
//! let mut cache = model.decode_cache(&image.tokens, 1)?;
//! let logits = model.forward_cached(&[vec![254], vec![254]], &mut cache)?; // (rows, vocab)
//! let next: Vec<u32> = logits.argmax(1)?.to_vec1()?;
//! let logits = model.forward_cached(&[vec![next[0]], vec![next[1]]], &mut cache)?;
//! assert_eq!((cache.len(), logits.dim(0)?), (2, 2));
//! # Ok(())
//! # }
//! ```

pub mod budget;
pub mod coca;
pub mod config;
pub mod decode;
pub mod decoder;
pub mod error;
pub mod load;
pub mod loss;
pub mod nn;
pub mod parity;
pub mod pooler;
pub mod quantized;
pub mod segments;
#[cfg(test)]
mod test_support;
pub mod text;
pub mod vision;
pub mod weights;

pub use coca::{Coca, CocaOutput, ImageEncoding, TextEncoding, TrainOutput};
pub use config::{CocaConfig, ConfigSource};
pub use decode::DecodeCache;
pub use error::{ModelError, Result};
pub use loss::{
    coca_loss, coca_loss_fused, coca_loss_fused_with, CaptionNll, CocaLoss, CocaLossConfig,
};
pub use nn::{AllAtOnce, BlockRunner};
