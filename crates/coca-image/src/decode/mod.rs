//! Reading files and bytes into [`DecodedImage`]s in PIL's modes.
//!
//! The format is recognised from the leading bytes (as PIL does), never
//! from the file extension. EXIF orientation is *not* applied, and ICC
//! profiles are ignored: `PIL.Image.open` does neither, so open_clip sees
//! the stored pixels.

mod bmp;
mod generic;
mod gif_frame;
mod png;

use std::path::Path;

use crate::decoded::DecodedImage;
use crate::error::ImageError;
use crate::jpeg::{self, JpegError, JpegImage, JpegPixels};
use crate::limits::DecodeLimits;
use crate::PilMode;

/// Image formats recognised by their signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Jpeg,
    Png,
    Gif,
    WebP,
    Bmp,
    Tiff,
}

fn sniff(bytes: &[u8]) -> Option<Format> {
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some(Format::Jpeg)
    } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some(Format::Png)
    } else if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
        Some(Format::Gif)
    } else if bytes.len() >= 12 && bytes.starts_with(b"RIFF") && &bytes[8..12] == b"WEBP" {
        Some(Format::WebP)
    } else if bytes.starts_with(b"BM") {
        Some(Format::Bmp)
    } else if bytes.starts_with(b"II*\0") || bytes.starts_with(b"MM\0*") {
        Some(Format::Tiff)
    } else {
        None
    }
}

impl DecodedImage {
    /// Reads and decodes the image file at `path` within the default
    /// [`DecodeLimits`] (PIL's pixel limit).
    pub fn open(path: impl AsRef<Path>) -> Result<Self, ImageError> {
        Self::open_limited(path, &DecodeLimits::default())
    }

    /// Reads and decodes the image file at `path`, refusing an image that
    /// claims more pixels than `limits` allow before allocating them.
    pub fn open_limited(path: impl AsRef<Path>, limits: &DecodeLimits) -> Result<Self, ImageError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| ImageError::from_io(path, e))?;
        Self::decode_limited(&bytes, &path.display().to_string(), limits)
    }

    /// Decodes an image held in memory within the default [`DecodeLimits`];
    /// `name` (a path, or [`crate::BYTES_NAME`]) only labels errors.
    pub fn decode(bytes: &[u8], name: &str) -> Result<Self, ImageError> {
        Self::decode_limited(bytes, name, &DecodeLimits::default())
    }

    /// Decodes an image held in memory, refusing one that claims more
    /// pixels than `limits` allow before allocating them; `name` only
    /// labels errors.
    pub fn decode_limited(
        bytes: &[u8],
        name: &str,
        limits: &DecodeLimits,
    ) -> Result<Self, ImageError> {
        if bytes.is_empty() {
            return Err(ImageError::Empty { name: name.into() });
        }
        let img = match sniff(bytes) {
            Some(Format::Jpeg) => decode_jpeg(bytes, name, limits)?,
            Some(Format::Png) => png::decode(bytes, name, limits)?,
            Some(Format::Gif) => gif_frame::decode(bytes, name, limits)?,
            Some(Format::WebP) => generic::decode(bytes, image::ImageFormat::WebP, name, limits)?,
            Some(Format::Bmp) => bmp::decode(bytes, name, limits)?,
            Some(Format::Tiff) => generic::decode(bytes, image::ImageFormat::Tiff, name, limits)?,
            None => {
                return Err(ImageError::Unsupported {
                    name: name.into(),
                    detail: "not a recognised image file (expected JPEG, PNG, GIF, WebP, BMP or \
                             TIFF)"
                        .into(),
                })
            }
        };
        // Every decoder checks the size its header claims before allocating;
        // this catches a decoder whose output differs from that claim.
        limits.check(name, img.width().into(), img.height().into())?;
        if img.width() == 0 || img.height() == 0 {
            return Err(ImageError::ZeroSize {
                name: name.into(),
                width: img.width(),
                height: img.height(),
            });
        }
        Ok(img)
    }
}

/// Decodes with the libjpeg-compatible decoder (the `image` crate's JPEG
/// decoder differs from libjpeg by several levels, and supports none of the
/// few JPEG variants this one lacks, so there is no fallback).
fn decode_jpeg(
    bytes: &[u8],
    name: &str,
    limits: &DecodeLimits,
) -> Result<DecodedImage, ImageError> {
    match jpeg::decode(bytes, limits.max_pixels) {
        Ok(JpegImage {
            width,
            height,
            pixels,
        }) => Ok(match pixels {
            JpegPixels::Gray(s) => DecodedImage::new_u8(width, height, PilMode::L, s),
            JpegPixels::Rgb(s) => DecodedImage::new_u8(width, height, PilMode::Rgb, s),
            JpegPixels::Cmyk(s) => DecodedImage::new_u8(width, height, PilMode::Cmyk, s),
        }),
        Err(JpegError::Unsupported(detail)) => Err(ImageError::Unsupported {
            name: name.into(),
            detail: format!("JPEG: {detail}"),
        }),
        Err(JpegError::Corrupt(detail)) => Err(ImageError::Corrupt {
            name: name.into(),
            detail: format!("JPEG: {detail}"),
        }),
        Err(JpegError::Truncated(detail)) => Err(ImageError::Truncated {
            name: name.into(),
            detail: format!("JPEG: {detail}"),
        }),
        Err(JpegError::TooMuchMemory {
            width,
            height,
            pixels,
        }) => Err(ImageError::TooMuchMemory {
            name: name.into(),
            width: width.into(),
            height: height.into(),
            pixels,
            limit: limits.max_pixels,
        }),
        Err(JpegError::ZeroSize { width, height }) => Err(ImageError::ZeroSize {
            name: name.into(),
            width,
            height,
        }),
        Err(JpegError::TooLarge { width, height }) => Err(ImageError::TooLarge {
            name: name.into(),
            width: width.into(),
            height: height.into(),
            limit: limits.max_pixels,
        }),
    }
}

/// Maps an `image` crate error for input `name`.
fn from_image_error(err: image::ImageError, name: &str) -> ImageError {
    let name = name.to_string();
    match err {
        image::ImageError::IoError(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            ImageError::Truncated {
                name,
                detail: e.to_string(),
            }
        }
        image::ImageError::Unsupported(e) => ImageError::Unsupported {
            name,
            detail: e.to_string(),
        },
        image::ImageError::Limits(e) => ImageError::Unsupported {
            name,
            detail: e.to_string(),
        },
        other => corrupt_or_truncated(name, other.to_string()),
    }
}

/// Decoders report running out of data as a generic format error; their
/// messages are the only way to tell truncation from corruption.
pub(crate) fn corrupt_or_truncated(name: String, detail: String) -> ImageError {
    let lower = detail.to_ascii_lowercase();
    if lower.contains("eof") || lower.contains("end of file") || lower.contains("fill whole buffer")
    {
        ImageError::Truncated { name, detail }
    } else {
        ImageError::Corrupt { name, detail }
    }
}
