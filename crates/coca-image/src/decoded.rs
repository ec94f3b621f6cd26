//! A decoded image kept in the pixel layout ("mode") PIL would open it
//! with. open_clip resizes *before* converting to RGB, and PIL's resize
//! depends on the mode (nearest-neighbour for palette images, alpha
//! premultiplication for RGBA/LA, 16-bit arithmetic for "I;16"), so the mode
//! has to survive decoding for the preprocessing to match.

use image::RgbImage;

/// The PIL image mode a decoded file corresponds to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PilMode {
    /// "1": bilevel (stored as 0 / 255 samples); PIL resizes it with nearest
    /// neighbour.
    Bilevel,
    /// "L": 8-bit greyscale.
    L,
    /// "LA": 8-bit greyscale with alpha.
    La,
    /// "I;16": 16-bit greyscale (16-bit greyscale PNG).
    I16,
    /// "RGB": 8-bit colour.
    Rgb,
    /// "RGBA": 8-bit colour with alpha.
    Rgba,
    /// "CMYK": 8-bit CMYK (JPEG), in PIL's convention.
    Cmyk,
    /// "P": palette image (stored expanded to RGB); PIL resizes it with
    /// nearest neighbour.
    P,
}

impl PilMode {
    /// PIL's name for the mode, e.g. `"RGBA"` or `"I;16"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bilevel => "1",
            Self::L => "L",
            Self::La => "LA",
            Self::I16 => "I;16",
            Self::Rgb => "RGB",
            Self::Rgba => "RGBA",
            Self::Cmyk => "CMYK",
            Self::P => "P",
        }
    }

    /// Samples per pixel in this crate's storage of the mode (palette images
    /// are stored expanded to RGB).
    pub(crate) fn channels(self) -> usize {
        match self {
            Self::Bilevel | Self::L | Self::I16 => 1,
            Self::La => 2,
            Self::Rgb | Self::P => 3,
            Self::Rgba | Self::Cmyk => 4,
        }
    }
}

impl std::fmt::Display for PilMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Sample storage: 8-bit for every mode except "I;16".
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Samples {
    U8(Vec<u8>),
    U16(Vec<u16>),
}

/// An image as PIL's `Image.open` would hold it: size, mode and samples
/// (interleaved, row-major, [`PilMode`]'s channel count per pixel).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedImage {
    width: u32,
    height: u32,
    mode: PilMode,
    samples: Samples,
    /// The RGB colour PIL's fill value 0 becomes: black, except for palette
    /// images, where 0 is a palette index.
    zero_rgb: [u8; 3],
}

impl DecodedImage {
    /// Wraps 8-bit samples. `samples.len()` must be `width * height *
    /// mode.channels()` and `mode` must not be [`PilMode::I16`]; both are
    /// guaranteed by the decoders in this crate.
    pub(crate) fn new_u8(width: u32, height: u32, mode: PilMode, samples: Vec<u8>) -> Self {
        debug_assert_ne!(mode, PilMode::I16);
        debug_assert_eq!(
            samples.len(),
            width as usize * height as usize * mode.channels()
        );
        Self {
            width,
            height,
            mode,
            samples: Samples::U8(samples),
            zero_rgb: [0; 3],
        }
    }

    /// Wraps 16-bit greyscale samples ("I;16").
    pub(crate) fn new_i16(width: u32, height: u32, samples: Vec<u16>) -> Self {
        debug_assert_eq!(samples.len(), width as usize * height as usize);
        Self {
            width,
            height,
            mode: PilMode::I16,
            samples: Samples::U16(samples),
            zero_rgb: [0; 3],
        }
    }

    /// Wraps a palette image already expanded to RGB; `index0` is the colour
    /// of palette entry 0, which is what PIL pads palette images with.
    pub(crate) fn new_palette(width: u32, height: u32, rgb: Vec<u8>, index0: [u8; 3]) -> Self {
        let mut img = Self::new_u8(width, height, PilMode::P, rgb);
        img.zero_rgb = index0;
        img
    }

    /// Treats an RGB image as PIL mode "RGB".
    pub fn from_rgb(img: RgbImage) -> Self {
        let (width, height) = img.dimensions();
        Self::new_u8(width, height, PilMode::Rgb, img.into_raw())
    }

    /// Width in pixels.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> u32 {
        self.height
    }

    /// The PIL mode the image was decoded into.
    pub fn mode(&self) -> PilMode {
        self.mode
    }

    pub(crate) fn samples(&self) -> &Samples {
        &self.samples
    }

    /// The per-channel fill value that stands for PIL's fill colour 0 in
    /// this image's storage.
    pub(crate) fn zero_fill(&self) -> Vec<u8> {
        match self.mode {
            PilMode::P => self.zero_rgb.to_vec(),
            mode => vec![0; mode.channels()],
        }
    }

    /// Converts to RGB exactly as PIL's `Image.convert("RGB")` does: alpha
    /// is dropped (not composited onto a background), greyscale is
    /// replicated, 16-bit greyscale is clipped at 255 (not scaled), CMYK
    /// uses PIL's `cmyk2rgb` formula, palette images use their palette.
    pub fn to_rgb(&self) -> RgbImage {
        let data = match &self.samples {
            Samples::U8(s) => samples_to_rgb(self.mode, s),
            Samples::U16(s) => s.iter().flat_map(|&v| [v.min(255) as u8; 3]).collect(),
        };
        // The buffer length is width * height * 3 by construction.
        RgbImage::from_raw(self.width, self.height, data)
            .unwrap_or_else(|| RgbImage::new(self.width, self.height))
    }

    /// [`Self::to_rgb`], consuming the image: RGB and palette images hand
    /// over their buffer and 4-channel images are converted in place, so no
    /// second full-size copy is made.
    pub fn into_rgb(self) -> RgbImage {
        let (width, height) = (self.width, self.height);
        let data = match self.samples {
            Samples::U8(s) => samples_into_rgb(self.mode, s),
            Samples::U16(s) => s.iter().flat_map(|&v| [v.min(255) as u8; 3]).collect(),
        };
        RgbImage::from_raw(width, height, data).unwrap_or_else(|| RgbImage::new(width, height))
    }
}

/// PIL's `MULDIV255`: a * b / 255, rounded, in integer arithmetic.
#[inline]
pub(crate) fn muldiv255(a: u32, b: u32) -> u32 {
    let t = a * b + 128;
    ((t >> 8) + t) >> 8
}

/// PIL's conversion of one pixel of 8-bit samples of `mode` to RGB
/// (Convert.c).
#[inline]
fn pixel_to_rgb(mode: PilMode, p: &[u8]) -> [u8; 3] {
    match mode {
        PilMode::Rgb | PilMode::P | PilMode::Rgba => [p[0], p[1], p[2]],
        PilMode::Bilevel | PilMode::L | PilMode::I16 | PilMode::La => [p[0]; 3],
        PilMode::Cmyk => {
            let nk = 255 - u32::from(p[3]);
            let ink = |c: u8| (nk - muldiv255(u32::from(c), nk)) as u8;
            [ink(p[0]), ink(p[1]), ink(p[2])]
        }
    }
}

/// PIL's conversion of 8-bit samples of `mode` to RGB (Convert.c).
pub(crate) fn samples_to_rgb(mode: PilMode, samples: &[u8]) -> Vec<u8> {
    match mode {
        PilMode::Rgb | PilMode::P => samples.to_vec(),
        _ => samples
            .chunks_exact(mode.channels())
            .flat_map(|p| pixel_to_rgb(mode, p))
            .collect(),
    }
}

/// [`samples_to_rgb`] reusing the samples' buffer (grown in place for
/// images of fewer than 3 channels), so converting a large image does not
/// hold two full copies.
fn samples_into_rgb(mode: PilMode, mut samples: Vec<u8>) -> Vec<u8> {
    let channels = mode.channels();
    if channels == 3 {
        return samples;
    }
    let n = samples.len() / channels;
    if channels < 3 {
        // Grow the buffer and widen from the last pixel back: pixel i moves
        // from `channels * i` to 3i, never over a pixel not yet read.
        samples.reserve_exact(n * 3 - samples.len());
        samples.resize(n * 3, 0);
        for i in (0..n).rev() {
            let rgb = pixel_to_rgb(mode, &samples[i * channels..(i + 1) * channels]);
            samples[i * 3..i * 3 + 3].copy_from_slice(&rgb);
        }
        return samples;
    }
    // Pixel i moves from 4i to 3i: forward order never overwrites a pixel
    // before it is read.
    for i in 0..n {
        let rgb = pixel_to_rgb(mode, &samples[i * channels..(i + 1) * channels]);
        samples[i * 3..i * 3 + 3].copy_from_slice(&rgb);
    }
    samples.truncate(n * 3);
    samples.shrink_to_fit();
    samples
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn muldiv255_matches_rounded_division() {
        for a in 0..=255u32 {
            for b in 0..=255u32 {
                let exact = (a * b) as f64 / 255.0;
                assert_eq!(muldiv255(a, b), exact.round() as u32, "{a} {b}");
            }
        }
    }

    #[test]
    fn conversions_follow_pil() {
        let la = DecodedImage::new_u8(2, 1, PilMode::La, vec![10, 0, 200, 255]);
        assert_eq!(la.to_rgb().into_raw(), vec![10, 10, 10, 200, 200, 200]);
        // The consuming conversion gives the same pixels in every mode.
        let cmyk = DecodedImage::new_u8(2, 1, PilMode::Cmyk, vec![255, 0, 0, 0, 9, 80, 7, 30]);
        let rgba = DecodedImage::new_u8(2, 1, PilMode::Rgba, vec![1, 2, 3, 0, 4, 5, 6, 7]);
        let l = DecodedImage::new_u8(2, 1, PilMode::L, vec![3, 250]);
        for img in [la.clone(), cmyk, rgba, l] {
            assert_eq!(img.to_rgb(), img.clone().into_rgb(), "{}", img.mode());
        }
        let rgba = DecodedImage::new_u8(1, 1, PilMode::Rgba, vec![1, 2, 3, 0]);
        assert_eq!(rgba.to_rgb().into_raw(), vec![1, 2, 3]);
        let i16 = DecodedImage::new_i16(3, 1, vec![7, 255, 4000]);
        assert_eq!(
            i16.to_rgb().into_raw(),
            vec![7, 7, 7, 255, 255, 255, 255, 255, 255]
        );
        // Pure cyan ink with no black: red vanishes.
        let cmyk = DecodedImage::new_u8(1, 1, PilMode::Cmyk, vec![255, 0, 0, 0]);
        assert_eq!(cmyk.to_rgb().into_raw(), vec![0, 255, 255]);
        let full_black = DecodedImage::new_u8(1, 1, PilMode::Cmyk, vec![0, 0, 0, 255]);
        assert_eq!(full_black.to_rgb().into_raw(), vec![0, 0, 0]);
    }
}
