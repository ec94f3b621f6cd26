//! GIF: the first frame, laid out the way PIL's `GifImagePlugin` opens it.
//!
//! PIL keeps frame 0 as palette indices ("P", resized with nearest
//! neighbour) on a canvas of the logical screen size; pixels outside the
//! frame hold the transparent index if there is one, else index 0, and the
//! transparent index still maps to its palette colour when converted to
//! RGB. A palette that is the identity grey ramp (or no palette at all)
//! makes the image mode "L" instead. Later frames are never read.
//!
//! Both the logical screen and the first frame's size are checked against
//! the pixel limit before any pixel buffer exists, and the canvas is built
//! directly in its final layout (no index canvas expanded afterwards).

use std::num::NonZeroU64;

use crate::decoded::DecodedImage;
use crate::error::ImageError;
use crate::limits::DecodeLimits;
use crate::PilMode;

/// PIL's `_is_palette_needed`: false when entry i is (i, i, i) throughout.
fn is_palette_needed(palette: &[u8]) -> bool {
    palette
        .chunks(3)
        .enumerate()
        .any(|(i, rgb)| rgb.iter().any(|&c| usize::from(c) != i) || rgb.len() < 3)
}

fn decode_error(err: ::gif::DecodingError, name: &str) -> ImageError {
    let detail = err.to_string();
    match err {
        ::gif::DecodingError::Io(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            ImageError::Truncated {
                name: name.into(),
                detail,
            }
        }
        ::gif::DecodingError::MemoryLimit => ImageError::Unsupported {
            name: name.into(),
            detail,
        },
        _ => super::corrupt_or_truncated(name.into(), detail),
    }
}

/// Decodes the first frame of a GIF.
pub(super) fn decode(
    bytes: &[u8],
    name: &str,
    limits: &DecodeLimits,
) -> Result<DecodedImage, ImageError> {
    let mut options = ::gif::DecodeOptions::new();
    options.set_color_output(::gif::ColorOutput::Indexed);
    // A second line of defence: indexed frames take a byte a pixel.
    if let Some(limit) = NonZeroU64::new(limits.max_pixels) {
        options.set_memory_limit(::gif::MemoryLimit::Bytes(limit));
    }
    let mut decoder = options
        .read_info(bytes)
        .map_err(|e| decode_error(e, name))?;
    let (screen_w, screen_h) = (usize::from(decoder.width()), usize::from(decoder.height()));
    limits.check(name, screen_w as u64, screen_h as u64)?;
    let global = decoder
        .global_palette()
        .filter(|p| is_palette_needed(p))
        .map(<[u8]>::to_vec);
    let frame = decoder
        .next_frame_info()
        .map_err(|e| decode_error(e, name))?
        .ok_or_else(|| ImageError::Corrupt {
            name: name.into(),
            detail: "GIF contains no image".into(),
        })?;
    let (left, top) = (usize::from(frame.left), usize::from(frame.top));
    let (fw, fh) = (usize::from(frame.width), usize::from(frame.height));
    let transparent = frame.transparent;
    let local = frame.palette.clone();
    // PIL grows the canvas when the first frame extends past the screen.
    let width = screen_w.max(left + fw);
    let height = screen_h.max(top + fh);
    limits.check(name, width as u64, height as u64)?;
    if width == 0 || height == 0 {
        return Err(ImageError::ZeroSize {
            name: name.into(),
            width: width as u32,
            height: height as u32,
        });
    }
    let mut buffer = vec![0u8; decoder.buffer_size()];
    decoder
        .read_into_buffer(&mut buffer)
        .map_err(|e| decode_error(e, name))?;
    let background = transparent.unwrap_or(0);
    let palette = match local {
        Some(local) => is_palette_needed(&local).then_some(local),
        None => global,
    };
    let (w, h) = (width as u32, height as u32);
    let rows = buffer.chunks_exact(fw.max(1)).take(fh);
    Ok(match palette {
        None => {
            let mut indices = vec![background; width * height];
            for (y, row) in rows.enumerate() {
                let start = (top + y) * width + left;
                indices[start..start + fw].copy_from_slice(&row[..fw]);
            }
            DecodedImage::new_u8(w, h, PilMode::L, indices)
        }
        Some(palette) => {
            let colour = |i: u8| -> [u8; 3] {
                let at = usize::from(i) * 3;
                palette
                    .get(at..at + 3)
                    .map_or([0; 3], |c| [c[0], c[1], c[2]])
            };
            let fill = colour(background);
            let mut rgb: Vec<u8> = fill
                .iter()
                .copied()
                .cycle()
                .take(width * height * 3)
                .collect();
            for (y, row) in rows.enumerate() {
                let start = ((top + y) * width + left) * 3;
                for (dst, &i) in rgb[start..start + fw * 3].chunks_exact_mut(3).zip(row) {
                    dst.copy_from_slice(&colour(i));
                }
            }
            DecodedImage::new_palette(w, h, rgb, colour(0))
        }
    })
}
