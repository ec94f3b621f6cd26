//! Caption generation for CoCa with a key/value cache, matching open_clip 3.3.0's `CoCa.generate`.
//!
//! open_clip recomputes the whole prefix at every step, encodes each image once per beam and handles one
//! decoding configuration per call. Here:
//! - each image is encoded once, and the decoder's cross-attention keys/values are computed once per image,
//!   whatever the number of beams ([`session::DecodeSession`]);
//! - self-attention keys/values of the text tower and of the decoder are cached per layer and per row, so a step
//!   costs one position, not the whole prefix;
//! - many images are decoded as one batch, and captions that finish leave the batch;
//! - the results are open_clip's: the same tokens for greedy and beam search (tested against open_clip on the
//!   committed fixtures), including its legacy CLS/pad key mask and the raw-logit beam scores of its default call.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use coca_generate::{generate, GenerationConfig};
//! # let model: coca_model::Coca = unimplemented!();
//! # let pixels: candle_core::Tensor = unimplemented!();
//! let cfg = GenerationConfig::open_clip(model.text().vocab_size()); // open_clip's default call
//! let tokenizer = coca_text::Tokenizer::new()?;
//! for caption in generate(&model, &pixels, &cfg)? {
//!     println!("{} (log p = {:.2})", caption.text(&tokenizer), caption.log_prob);
//! }
//! # Ok(())
//! # }
//! ```

mod beam;
pub mod caption;
pub mod config;
pub mod error;
pub mod logits;
pub mod options;
mod sampling;
pub mod session;

use candle_core::Tensor;
use coca_model::{Coca, ImageEncoding};

pub use caption::Caption;
pub use config::{
    BeamConfig, BeamScoring, GenerationConfig, SamplingConfig, SpecialTokens, Strategy,
};
pub use error::{GenerateError, Result};
pub use options::{GenerationOptions, OptionNames, StrategyChoice};
pub use session::DecodeSession;

/// Caption preprocessed images (batch, 3, H, W): one [`Caption`] per image, in order.
pub fn generate(model: &Coca, pixels: &Tensor, cfg: &GenerationConfig) -> Result<Vec<Caption>> {
    let encoding = model.encode_image(pixels)?;
    generate_from_encoding(model, &encoding, cfg)
}

/// Caption images already encoded with [`Coca::encode_image`].
pub fn generate_from_encoding(
    model: &Coca,
    encoding: &ImageEncoding,
    cfg: &GenerationConfig,
) -> Result<Vec<Caption>> {
    generate_from_tokens(model, &encoding.tokens, cfg)
}

/// Caption from the decoder's image context directly: `image_tokens` (images, n, width).
pub fn generate_from_tokens(
    model: &Coca,
    image_tokens: &Tensor,
    cfg: &GenerationConfig,
) -> Result<Vec<Caption>> {
    generate_from_tokens_until(model, image_tokens, cfg, &|| false)
}

/// [`generate_from_tokens`] that asks `cancel` before every decoding step and stops with
/// [`GenerateError::Cancelled`] once it answers true, so that a caller (a Ctrl-C in the Python package) can end
/// a long beam search within one step.
pub fn generate_from_tokens_until(
    model: &Coca,
    image_tokens: &Tensor,
    cfg: &GenerationConfig,
    cancel: &dyn Fn() -> bool,
) -> Result<Vec<Caption>> {
    let context = model
        .text()
        .context_length()
        .min(model.text_decoder().context_length());
    cfg.validate(model.text().vocab_size(), context)?;
    if image_tokens.dim(0).map_err(GenerateError::Model)? == 0 {
        return Ok(Vec::new());
    }
    match cfg.strategy {
        Strategy::Greedy => sampling::run(model, image_tokens, cfg, None, cancel),
        Strategy::Sample(sc) => sampling::run(model, image_tokens, cfg, Some(sc), cancel),
        Strategy::Beam(bc) => beam::run(model, image_tokens, cfg, bc, cancel),
    }
}
