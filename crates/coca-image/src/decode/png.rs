//! PNG: pixels from the `image` crate, PIL's mode from the header.
//!
//! The `png` crate expands palettes and turns `tRNS` transparency into an
//! alpha channel, but PIL keeps palette images as "P" (resized with nearest
//! neighbour) and ignores `tRNS` for the mode of greyscale / RGB images, so
//! the IHDR colour type and bit depth decide the mode, as in PIL's
//! `PngImagePlugin._MODES`.

use super::from_image_error;
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

/// Where a decoded row's pixels go: PIL's mode, and the samples each pixel
/// of the `png` crate's expanded output contributes to it.
#[derive(Clone, Copy)]
enum Target {
    /// 8-bit samples in `mode`, made of the high byte of the first
    /// `take` source samples, with grey replicated to RGB when `grey_to_rgb`
    /// (then the last source sample is alpha).
    U8 {
        mode: PilMode,
        take: usize,
        grey_to_rgb: bool,
    },
    /// "I;16": the first (grey) sample, all 16 bits.
    I16,
}

impl Target {
    /// PIL's mode for the IHDR's colour type and bit depth, as in
    /// `PngImagePlugin._MODES`.
    fn of(header: &Header) -> Self {
        let u8_mode = |mode: PilMode, take: usize| Self::U8 {
            mode,
            take,
            grey_to_rgb: false,
        };
        match (header.color_type, header.bit_depth) {
            // Greyscale: "1" for 1 bit, "L" for 2..8 bits (both expanded to
            // 0..255 like PIL), "I;16" for 16 bits; `tRNS` alpha is dropped.
            (0, 1) => u8_mode(PilMode::Bilevel, 1),
            (0, 16) => Self::I16,
            (0, _) => u8_mode(PilMode::L, 1),
            // Palette: "P"; the expanded colours stand in for the indices.
            (3, _) => u8_mode(PilMode::P, 3),
            // Greyscale + alpha: "LA", but 16-bit goes to "RGBA" ("LA;16B").
            (4, 16) => Self::U8 {
                mode: PilMode::Rgba,
                take: 2,
                grey_to_rgb: true,
            },
            (4, _) => u8_mode(PilMode::La, 2),
            // RGBA; RGB drops any alpha added from `tRNS`. 16-bit samples
            // keep their high byte ("RGB;16B").
            (6, _) => u8_mode(PilMode::Rgba, 4),
            _ => u8_mode(PilMode::Rgb, 3),
        }
    }

    /// Converts one row (or Adam7 pass row) of `png` output, `channels`
    /// samples of `sample_bytes` (1 or 2, big-endian) a pixel, into `out`.
    fn convert(self, row: &[u8], channels: usize, sample_bytes: usize, out: &mut Vec<u8>) {
        out.clear();
        let pixels = row.chunks_exact(channels * sample_bytes);
        match self {
            Self::I16 => {
                for p in pixels {
                    let v = if sample_bytes == 2 {
                        u16::from_be_bytes([p[0], p[1]])
                    } else {
                        u16::from(p[0])
                    };
                    out.extend_from_slice(&v.to_ne_bytes());
                }
            }
            Self::U8 {
                take, grey_to_rgb, ..
            } => {
                for p in pixels {
                    let high = |k: usize| p[k * sample_bytes];
                    if grey_to_rgb {
                        let (l, a) = (high(0), high(channels - 1));
                        out.extend_from_slice(&[l, l, l, a]);
                    } else {
                        out.extend((0..take).map(high));
                    }
                }
            }
        }
    }
}

/// Maps a `png` crate error the way the `image` crate does, then to this
/// crate's error for input `name`.
fn png_error(err: ::png::DecodingError, name: &str) -> ImageError {
    use image::error::{
        DecodingError, LimitError, LimitErrorKind, ParameterError, ParameterErrorKind,
    };
    let err = match err {
        ::png::DecodingError::IoError(e) => image::ImageError::IoError(e),
        e @ ::png::DecodingError::Format(_) => {
            image::ImageError::Decoding(DecodingError::new(image::ImageFormat::Png.into(), e))
        }
        e @ ::png::DecodingError::Parameter(_) => image::ImageError::Parameter(
            ParameterError::from_kind(ParameterErrorKind::Generic(e.to_string())),
        ),
        ::png::DecodingError::LimitsExceeded => {
            image::ImageError::Limits(LimitError::from_kind(LimitErrorKind::InsufficientMemory))
        }
    };
    from_image_error(err, name)
}

/// Decodes a PNG into the mode PIL opens it with, a row at a time: each
/// row the `png` crate unfilters is converted straight into the output
/// (16-bit samples to their high byte, alpha dropped where PIL drops it),
/// so no full-size image in the decoder's own layout is ever held. Adam7
/// rows are placed into the output at their pass positions.
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
    let max_bytes = limits.image_crate_limits().max_alloc.unwrap_or(u64::MAX);
    let png_limits = ::png::Limits {
        bytes: usize::try_from(max_bytes).unwrap_or(usize::MAX),
    };
    let mut decoder = ::png::Decoder::new_with_limits(std::io::Cursor::new(bytes), png_limits);
    // The settings the `image` crate decodes PNGs with.
    decoder.set_ignore_text_chunk(false);
    decoder.set_transformations(::png::Transformations::EXPAND);
    let mut reader = decoder.read_info().map_err(|e| png_error(e, name))?;
    let (color, depth) = reader.output_color_type();
    let (channels, sample_bytes) = (
        color.samples(),
        usize::from(depth == ::png::BitDepth::Sixteen) + 1,
    );
    let target = Target::of(&header);
    let (w, h) = (header.width, header.height);
    Ok(match target {
        Target::I16 => {
            let grey = read_rows(&mut reader, name, 1, |row, out: &mut Vec<u16>| {
                out.clear();
                out.extend(row.chunks_exact(channels * sample_bytes).map(|p| {
                    if sample_bytes == 2 {
                        u16::from_be_bytes([p[0], p[1]])
                    } else {
                        u16::from(p[0])
                    }
                }));
            })?;
            DecodedImage::new_i16(w, h, grey)
        }
        Target::U8 { mode, .. } => {
            let samples = read_rows(&mut reader, name, mode.channels(), |row, out| {
                target.convert(row, channels, sample_bytes, out)
            })?;
            if mode == PilMode::P {
                DecodedImage::new_palette(w, h, samples, palette_entry0(bytes))
            } else {
                DecodedImage::new_u8(w, h, mode, samples)
            }
        }
    })
}

/// Adam7's passes: first column and row, column and row step.
const ADAM7: [(usize, usize, usize, usize); 7] = [
    (0, 0, 8, 8),
    (4, 0, 8, 8),
    (0, 4, 4, 8),
    (2, 0, 4, 4),
    (0, 2, 2, 4),
    (1, 0, 2, 2),
    (0, 1, 1, 2),
];

/// Reads every row of the image, converting each with `convert` into
/// `per_pixel` output samples a pixel and placing it in the output (an
/// Adam7 pass row at its pass's pixels).
fn read_rows<T: Copy + Default>(
    reader: &mut ::png::Reader<std::io::Cursor<&[u8]>>,
    name: &str,
    per_pixel: usize,
    mut convert: impl FnMut(&[u8], &mut Vec<T>),
) -> Result<Vec<T>, ImageError> {
    let (width, height) = reader.info().size();
    let (w, h) = (width as usize, height as usize);
    let mut out = vec![T::default(); w * h * per_pixel];
    let mut converted = Vec::with_capacity(w * per_pixel);
    // Rows of each Adam7 pass; the `png` crate skips empty passes.
    let pass_lines = |p: usize| {
        let (x0, y0, _, dy) = ADAM7[p];
        if w > x0 {
            h.saturating_sub(y0).div_ceil(dy)
        } else {
            0
        }
    };
    // The next plain row, or the next Adam7 pass and line.
    let (mut next_y, mut pass, mut line) = (0, 0, 0);
    while let Some(row) = reader
        .next_interlaced_row()
        .map_err(|e| png_error(e, name))?
    {
        convert(row.data(), &mut converted);
        let (x0, y, dx) = match row.interlace() {
            ::png::InterlaceInfo::Null(_) => {
                next_y += 1;
                (0, next_y - 1, 1)
            }
            ::png::InterlaceInfo::Adam7(info) => {
                while pass < ADAM7.len() && line >= pass_lines(pass) {
                    pass += 1;
                    line = 0;
                }
                // The crate does not say which pass a row is from, only
                // lets it be compared.
                if pass == ADAM7.len()
                    || *info != ::png::Adam7Info::new(pass as u8 + 1, line as u32, width)
                {
                    return Err(ImageError::Corrupt {
                        name: name.into(),
                        detail: "PNG: Adam7 rows out of order".into(),
                    });
                }
                let (x0, y0, dx, dy) = ADAM7[pass];
                line += 1;
                (x0, y0 + (line - 1) * dy, dx)
            }
        };
        let Some(dst_row) = out.get_mut(y * w * per_pixel..(y + 1) * w * per_pixel) else {
            continue;
        };
        for (i, px) in converted.chunks_exact(per_pixel).enumerate() {
            let x = x0 + i * dx;
            if let Some(dst) = dst_row.get_mut(x * per_pixel..(x + 1) * per_pixel) {
                dst.copy_from_slice(px);
            }
        }
    }
    Ok(out)
}
