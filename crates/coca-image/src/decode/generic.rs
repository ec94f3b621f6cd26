//! WebP and TIFF (and BMP pixels) through the `image` crate, mapped onto
//! the PIL mode that matches the decoded colour type. WebP matches PIL
//! exactly ("RGB" or "RGBA", like libwebp's output). A palette TIFF would be
//! "P" in PIL (nearest-neighbour resize); this mapping treats it as RGB.

use image::{DynamicImage, ImageDecoder};

use super::from_image_error;
use crate::decoded::DecodedImage;
use crate::error::ImageError;
use crate::limits::DecodeLimits;
use crate::PilMode;

/// Decodes `bytes` as `format`.
pub(super) fn decode(
    bytes: &[u8],
    format: image::ImageFormat,
    name: &str,
    limits: &DecodeLimits,
) -> Result<DecodedImage, ImageError> {
    decode_dynamic(bytes, format, name, limits).map(from_dynamic)
}

/// Decodes `bytes` as `format` with the `image` crate. The decoder reads
/// only the header first; the size it claims (a WebP canvas, the first
/// TIFF page, a BMP or PNG header) is checked against `limits` before the
/// pixel buffer is allocated, and the decoder's own allocations are capped
/// by the same budget.
pub(super) fn decode_dynamic(
    bytes: &[u8],
    format: image::ImageFormat,
    name: &str,
    limits: &DecodeLimits,
) -> Result<DynamicImage, ImageError> {
    let mut reader = image::ImageReader::with_format(std::io::Cursor::new(bytes), format);
    reader.limits(limits.image_crate_limits());
    let decoder = reader
        .into_decoder()
        .map_err(|e| from_image_error(e, name))?;
    let (width, height) = decoder.dimensions();
    limits.check(name, width.into(), height.into())?;
    DynamicImage::from_decoder(decoder).map_err(|e| from_image_error(e, name))
}

/// Chooses the PIL mode for a decoded image; 16-bit colour keeps the high
/// byte of each sample, as PIL's 16-bit raw modes do.
pub(super) fn from_dynamic(img: DynamicImage) -> DecodedImage {
    let (w, h) = (img.width(), img.height());
    let high = |v: &u16| (v >> 8) as u8;
    match img {
        DynamicImage::ImageLuma8(i) => DecodedImage::new_u8(w, h, PilMode::L, i.into_raw()),
        DynamicImage::ImageLumaA8(i) => DecodedImage::new_u8(w, h, PilMode::La, i.into_raw()),
        DynamicImage::ImageRgb8(i) => DecodedImage::new_u8(w, h, PilMode::Rgb, i.into_raw()),
        DynamicImage::ImageRgba8(i) => DecodedImage::new_u8(w, h, PilMode::Rgba, i.into_raw()),
        DynamicImage::ImageLuma16(i) => DecodedImage::new_i16(w, h, i.into_raw()),
        DynamicImage::ImageLumaA16(i) => {
            DecodedImage::new_u8(w, h, PilMode::La, i.into_raw().iter().map(high).collect())
        }
        DynamicImage::ImageRgb16(i) => {
            DecodedImage::new_u8(w, h, PilMode::Rgb, i.into_raw().iter().map(high).collect())
        }
        DynamicImage::ImageRgba16(i) => {
            DecodedImage::new_u8(w, h, PilMode::Rgba, i.into_raw().iter().map(high).collect())
        }
        other if other.color().has_alpha() => {
            DecodedImage::new_u8(w, h, PilMode::Rgba, other.into_rgba8().into_raw())
        }
        other => DecodedImage::new_u8(w, h, PilMode::Rgb, other.into_rgb8().into_raw()),
    }
}
