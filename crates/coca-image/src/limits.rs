//! The decoding budget: how many pixels an image may claim before anything
//! is allocated for it.

use crate::error::ImageError;

/// PIL's `Image.MAX_IMAGE_PIXELS`. PIL only warns between this and twice
/// this many pixels and refuses beyond; coca refuses beyond this value
/// unless told otherwise ([`DecodeLimits::max_pixels`]).
pub const PIL_MAX_IMAGE_PIXELS: u64 = 89_478_485;

/// Limits every decoder checks against the sizes an image *claims* (a
/// GIF's logical screen and frame, a PNG's IHDR, a JPEG's frame header, a
/// WebP canvas, a TIFF page, a BMP header) before allocating pixels, so a
/// small file cannot make coca allocate gigabytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DecodeLimits {
    /// Most pixels (width × height) an image may have.
    pub max_pixels: u64,
}

impl Default for DecodeLimits {
    /// PIL's default limit, [`PIL_MAX_IMAGE_PIXELS`].
    fn default() -> Self {
        Self {
            max_pixels: PIL_MAX_IMAGE_PIXELS,
        }
    }
}

impl DecodeLimits {
    /// Refuses a `width × height` image above the limit, naming `name`.
    pub fn check(&self, name: &str, width: u64, height: u64) -> Result<(), ImageError> {
        if width.saturating_mul(height) > self.max_pixels {
            return Err(ImageError::TooLarge {
                name: name.into(),
                width,
                height,
                limit: self.max_pixels,
            });
        }
        Ok(())
    }

    /// The same budget for the `image` crate's decoders, in bytes: enough
    /// for the widest sample layout they produce (16-bit RGBA, 8 bytes a
    /// pixel) of an image at the limit, so their own allocations stay
    /// bounded by it too.
    pub fn image_crate_limits(&self) -> image::Limits {
        let mut limits = image::Limits::no_limits();
        limits.max_alloc = Some(self.max_pixels.saturating_mul(8).saturating_add(1 << 20));
        limits
    }
}

/// Decoding an image may hold 1.5 times its RGB size (3 bytes a pixel) at
/// once; an image that must hold more (a progressive JPEG keeps all its
/// coefficients) is charged the pixels whose budget its working memory
/// uses up: `bytes / 4.5`, rounded up.
pub(crate) fn pixels_for_working_memory(bytes: u64) -> u64 {
    bytes.saturating_mul(2).div_ceil(9)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_above_the_limit_only() {
        let limits = DecodeLimits { max_pixels: 100 };
        assert!(limits.check("a.png", 10, 10).is_ok());
        let err = limits.check("a.png", 10, 11).unwrap_err().to_string();
        assert!(err.starts_with("a.png: "), "{err}");
        assert!(err.contains("10x11"), "{err}");
        assert!(err.contains("110 pixels"), "{err}");
        assert!(err.contains("limit of 100 pixels"), "{err}");
        // Products that overflow still count as too large.
        assert!(limits.check("b", u64::MAX, 2).is_err());
        assert_eq!(DecodeLimits::default().max_pixels, 89_478_485);
    }

    #[test]
    fn working_memory_is_charged_at_one_and_a_half_rgb_pixels() {
        assert_eq!(pixels_for_working_memory(9), 2);
        assert_eq!(pixels_for_working_memory(10), 3);
    }
}
