//! PNG: pixels from the `image` crate, PIL's mode from the header.
//!
//! The `png` crate expands palettes and turns `tRNS` transparency into an
//! alpha channel, but PIL keeps palette images as "P" (resized with nearest
//! neighbour) and ignores `tRNS` for the mode of greyscale / RGB images, so
//! the IHDR colour type and bit depth decide the mode, as in PIL's
//! `PngImagePlugin._MODES`.

use image::DynamicImage;

use super::generic;
use crate::decoded::DecodedImage;
use crate::error::ImageError;
use crate::limits::DecodeLimits;
use crate::PilMode;

/// IHDR fields PIL's mode depends on.
struct Header {
    width: u32,
    height: u32,
    bit_depth: u8,
    color_type: u8,
}

fn read_header(bytes: &[u8]) -> Option<Header> {
    // Signature (8), chunk length (4), "IHDR" (4), then the fields.
    if bytes.len() < 26 || &bytes[12..16] != b"IHDR" {
        return None;
    }
    let be32 = |i: usize| u32::from_be_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    Some(Header {
        width: be32(16),
        height: be32(20),
        bit_depth: bytes[24],
        color_type: bytes[25],
    })
}

/// Colour of palette entry 0 (PLTE's first three bytes): what PIL pads
/// palette images with.
fn palette_entry0(bytes: &[u8]) -> [u8; 3] {
    let mut pos = 8;
    while pos + 8 <= bytes.len() {
        let len = u32::from_be_bytes([bytes[pos], bytes[pos + 1], bytes[pos + 2], bytes[pos + 3]])
            as usize;
        let kind = &bytes[pos + 4..pos + 8];
        if kind == b"PLTE" && len >= 3 && pos + 11 <= bytes.len() {
            return [bytes[pos + 8], bytes[pos + 9], bytes[pos + 10]];
        }
        if kind == b"IDAT" || kind == b"IEND" {
            break;
        }
        pos = pos.saturating_add(12).saturating_add(len);
    }
    [0; 3]
}

/// Decodes a PNG into the mode PIL opens it with.
pub(super) fn decode(
    bytes: &[u8],
    name: &str,
    limits: &DecodeLimits,
) -> Result<DecodedImage, ImageError> {
    let header = read_header(bytes).ok_or_else(|| ImageError::Corrupt {
        name: name.into(),
        detail: "PNG without an IHDR header".into(),
    })?;
    if header.width == 0 || header.height == 0 {
        return Err(ImageError::ZeroSize {
            name: name.into(),
            width: header.width,
            height: header.height,
        });
    }
    // APNG frames must lie inside this size (the `png` crate refuses an
    // `fcTL` that does not), so the IHDR bounds every frame.
    limits.check(name, header.width.into(), header.height.into())?;
    let img = generic::decode_dynamic(bytes, image::ImageFormat::Png, name, limits)?;
    let (w, h) = (img.width(), img.height());
    let high_byte = |v: &u16| (v >> 8) as u8;
    Ok(match (header.color_type, header.bit_depth) {
        // Greyscale: "1" for 1 bit, "L" for 2..8 bits (both expanded to
        // 0..255 like PIL), "I;16" for 16 bits.
        (0, 1) => DecodedImage::new_u8(w, h, PilMode::Bilevel, img.into_luma8().into_raw()),
        (0, 16) => DecodedImage::new_i16(w, h, img.into_luma16().into_raw()),
        (0, _) => DecodedImage::new_u8(w, h, PilMode::L, img.into_luma8().into_raw()),
        // Palette: "P"; the expanded colours stand in for the indices.
        (3, _) => DecodedImage::new_palette(w, h, rgb8(img), palette_entry0(bytes)),
        // Greyscale + alpha: "LA", but 16-bit goes to "RGBA" ("LA;16B").
        (4, 16) => {
            let la = img.into_luma_alpha16().into_raw();
            let rgba = la
                .chunks_exact(2)
                .flat_map(|p| {
                    let l = high_byte(&p[0]);
                    [l, l, l, high_byte(&p[1])]
                })
                .collect();
            DecodedImage::new_u8(w, h, PilMode::Rgba, rgba)
        }
        (4, _) => DecodedImage::new_u8(w, h, PilMode::La, img.into_luma_alpha8().into_raw()),
        // RGB(A): 16-bit samples keep their high byte ("RGB;16B").
        (6, 16) => {
            let rgba = img.into_rgba16().into_raw().iter().map(high_byte).collect();
            DecodedImage::new_u8(w, h, PilMode::Rgba, rgba)
        }
        (6, _) => DecodedImage::new_u8(w, h, PilMode::Rgba, img.into_rgba8().into_raw()),
        (_, 16) => {
            let rgb = img.into_rgb16().into_raw().iter().map(high_byte).collect();
            DecodedImage::new_u8(w, h, PilMode::Rgb, rgb)
        }
        _ => DecodedImage::new_u8(w, h, PilMode::Rgb, rgb8(img)),
    })
}

/// RGB bytes, dropping any alpha added from `tRNS` (the conversion keeps
/// 8-bit samples unchanged); RGBA is compacted in its own buffer.
fn rgb8(img: DynamicImage) -> Vec<u8> {
    let (w, h) = (img.width(), img.height());
    match img {
        DynamicImage::ImageRgba8(i) => DecodedImage::new_u8(w, h, PilMode::Rgba, i.into_raw())
            .into_rgb()
            .into_raw(),
        other => other.into_rgb8().into_raw(),
    }
}
