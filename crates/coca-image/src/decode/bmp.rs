//! BMP: pixels from the `image` crate, PIL's mode from the header, as
//! `BmpImagePlugin` decides it: palette images stay "P" (nearest-neighbour
//! resize) unless the palette is black/white ("1") or the identity grey
//! ramp ("L"); 32-bit images are "RGB" (the fourth byte is padding) unless
//! their bit fields declare an alpha channel.

use super::generic;
use crate::decoded::DecodedImage;
use crate::error::ImageError;
use crate::limits::DecodeLimits;
use crate::PilMode;

/// The PIL mode of a BMP and, for palette images, palette entry 0.
struct BmpLayout {
    mode: PilMode,
    index0: [u8; 3],
}

fn le16(b: &[u8], i: usize) -> Option<u32> {
    Some(u32::from(u16::from_le_bytes([*b.get(i)?, *b.get(i + 1)?])))
}

fn le32(b: &[u8], i: usize) -> Option<u32> {
    Some(u32::from_le_bytes([
        *b.get(i)?,
        *b.get(i + 1)?,
        *b.get(i + 2)?,
        *b.get(i + 3)?,
    ]))
}

/// Reads the header fields PIL's mode depends on; `None` when they are
/// missing (the decoder then reports the problem).
fn layout(b: &[u8]) -> Option<BmpLayout> {
    let header_size = le32(b, 14)? as usize;
    let (bits, compression, colors, padding) = if header_size == 12 {
        (le16(b, 24)?, 0, 0, 3)
    } else {
        (le16(b, 28)?, le32(b, 30)?, le32(b, 46)?, 4)
    };
    let mode = match bits {
        1 | 2 | 4 | 8 => PilMode::P,
        32 if compression == 3 => {
            // Bit fields: masks follow a 40-byte header, or sit inside a
            // larger one; a non-zero alpha mask makes PIL use "RGBA".
            let alpha_mask = if header_size >= 56 { le32(b, 66)? } else { 0 };
            if alpha_mask != 0 {
                PilMode::Rgba
            } else {
                PilMode::Rgb
            }
        }
        _ => PilMode::Rgb,
    };
    if mode != PilMode::P {
        return Some(BmpLayout {
            mode,
            index0: [0; 3],
        });
    }
    let colors = if colors == 0 { 1 << bits } else { colors } as usize;
    let palette = b.get(14 + header_size..)?;
    let entry = |i: usize| palette.get(i * padding..i * padding + 3);
    // BMP palettes are stored blue, green, red.
    let index0 = entry(0).map_or([0; 3], |p| [p[2], p[1], p[0]]);
    let grey_level = |i: usize| if colors == 2 { [0u8, 255][i] } else { i as u8 };
    let grey = (0..colors.min(256)).all(|i| entry(i) == Some(&[grey_level(i); 3][..]));
    let mode = match (grey, colors) {
        (true, 2) => PilMode::Bilevel,
        (true, _) => PilMode::L,
        (false, _) => PilMode::P,
    };
    Some(BmpLayout { mode, index0 })
}

/// Decodes a BMP into the mode PIL opens it with.
pub(super) fn decode(
    bytes: &[u8],
    name: &str,
    limits: &DecodeLimits,
) -> Result<DecodedImage, ImageError> {
    let img = generic::decode_dynamic(bytes, image::ImageFormat::Bmp, name, limits)?;
    let (w, h) = (img.width(), img.height());
    let Some(layout) = layout(bytes) else {
        return Ok(generic::from_dynamic(img));
    };
    Ok(match layout.mode {
        PilMode::P => DecodedImage::new_palette(w, h, img.into_rgb8().into_raw(), layout.index0),
        // Grey palettes: all three channels hold the level.
        mode @ (PilMode::L | PilMode::Bilevel) => {
            let grey = img
                .into_rgb8()
                .into_raw()
                .chunks_exact(3)
                .map(|p| p[0])
                .collect();
            DecodedImage::new_u8(w, h, mode, grey)
        }
        PilMode::Rgba => DecodedImage::new_u8(w, h, PilMode::Rgba, img.into_rgba8().into_raw()),
        _ => DecodedImage::new_u8(w, h, PilMode::Rgb, img.into_rgb8().into_raw()),
    })
}
