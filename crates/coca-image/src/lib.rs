//! Image loading and open_clip's eval-time preprocessing for coca, written
//! to reproduce what `open_clip.image_transform(224, is_train=False)` does
//! to a `PIL.Image.open` result, sample for sample:
//!
//! 1. decode as PIL 13 does, keeping PIL's image mode ([`DecodedImage`],
//!    [`PilMode`]). JPEGs go through a decoder that reproduces
//!    libjpeg-turbo's output exactly (including its handling of damaged
//!    files and block smoothing of incomplete progressive files); PNG, GIF,
//!    WebP and BMP pixels come from the `image` / `gif` crates, with PIL's
//!    mode rules applied on top. EXIF orientation and ICC profiles are
//!    ignored, as `PIL.Image.open` ignores them.
//! 2. resize like torchvision `Resize` on a PIL image, i.e. Pillow's
//!    `Image.resize`: bicubic or bilinear convolution with antialiasing and
//!    8-bit fixed-point arithmetic, nearest neighbour for palette and
//!    bilevel images, premultiplied alpha for RGBA/LA, 16-bit arithmetic for
//!    16-bit greyscale. See [`ResizeMode`] for the size arithmetic.
//! 3. center crop (or pad with black), then convert to RGB like
//!    `Image.convert("RGB")`: alpha is dropped, not composited.
//! 4. `ToTensor` + `Normalize` in f32, giving `3 × S × S` values in CHW
//!    order.
//!
//! On the fixture set (real photos from scikit-image / scikit-learn plus
//! synthetic edge cases in every mode) the output is bit-identical to
//! open_clip's. Known gaps: arithmetic-coded, lossless and hierarchical
//! JPEGs are rejected ([`ImageError::Unsupported`]); palette TIFFs are
//! resized as RGB (PIL would use nearest neighbour); where open_clip's
//! `longest` mode would round a side to 0 pixels and fail, it becomes 1.
//!
//! ```no_run
//! use coca_image::{preprocess_path, PreprocessConfig};
//! let cfg = PreprocessConfig::default(); // CoCa: 224 px, OpenAI mean/std
//! let pixels: Vec<f32> = preprocess_path("cat.jpg", &cfg)?;
//! assert_eq!(pixels.len(), 3 * 224 * 224);
//! # Ok::<(), coca_image::ImageError>(())
//! ```

mod batch;
mod config;
mod decode;
mod decoded;
mod error;
mod geometry;
mod jpeg;
mod limits;
mod preprocess;
mod region;
mod resample;

use std::path::Path;

pub use batch::preprocess_paths;
pub use config::{Interpolation, PreprocessConfig, ResizeMode, OPENAI_MEAN, OPENAI_STD};
pub use decoded::{DecodedImage, PilMode};
pub use error::{ImageError, BYTES_NAME};
/// The `image` crate this crate's API uses ([`image::RgbImage`]).
pub use image;
use image::RgbImage;
pub use limits::{DecodeLimits, PIL_MAX_IMAGE_PIXELS};
pub use preprocess::{preprocess, preprocess_decoded, resize_and_crop, to_tensor};
pub use region::resize_region;

/// Reads an image file and converts it to 8-bit RGB the way PIL's
/// `Image.open(path).convert("RGB")` does, within the default
/// [`DecodeLimits`].
pub fn load_rgb(path: impl AsRef<Path>) -> Result<RgbImage, ImageError> {
    DecodedImage::open(path).map(DecodedImage::into_rgb)
}

/// Decodes an image held in memory and converts it to 8-bit RGB like
/// [`load_rgb`]; `name` labels errors (pass [`BYTES_NAME`] when there is no
/// better name).
pub fn decode_rgb(bytes: &[u8], name: &str) -> Result<RgbImage, ImageError> {
    DecodedImage::decode(bytes, name).map(DecodedImage::into_rgb)
}

/// Reads an image file (within `cfg.limits`) and runs the full eval
/// transform on it, resizing in the file's own PIL mode as open_clip does:
/// `3 × S × S` values, CHW.
pub fn preprocess_path(
    path: impl AsRef<Path>,
    cfg: &PreprocessConfig,
) -> Result<Vec<f32>, ImageError> {
    DecodedImage::open_limited(path, &cfg.limits).map(|img| preprocess_decoded(&img, cfg))
}
