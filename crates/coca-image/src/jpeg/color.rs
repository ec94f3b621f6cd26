//! From coefficients to pixels: IDCT into per-component sample planes,
//! libjpeg's chroma upsampling (jdsample.c) and colour conversion
//! (jdcolor.c).

use super::header::{Component, Frame};
use super::idct::idct_block;
use super::smooth::smoothed_coefficients;
use super::{ColorSpace, JpegError, JpegImage, JpegPixels};

/// One component's samples, `width * height`, row-major.
struct Plane {
    width: usize,
    height: usize,
    data: Vec<u8>,
}

/// Decodes the component's blocks (`coefs`, laid out like
/// `comp.coefs`) and keeps the samples inside its grid.
fn component_plane(comp: &Component, coefs: &[i16]) -> Plane {
    // A component no scan ever covered has no latched table; libjpeg then
    // dequantises with an all-zero table, which yields mid-grey.
    let quant = comp.quant.unwrap_or([0; 64]);
    let stride = comp.blocks_w * 8;
    let mut samples = vec![0u8; stride * comp.blocks_h * 8];
    for by in 0..comp.blocks_h {
        for bx in 0..comp.blocks_w {
            let block = (by * comp.stride_blocks + bx) * 64;
            let offset = by * 8 * stride + bx * 8;
            idct_block(
                &coefs[block..block + 64],
                &quant,
                &mut samples[offset..],
                stride,
            );
        }
    }
    let mut data = Vec::with_capacity(comp.width * comp.height);
    for row in samples.chunks_exact(stride).take(comp.height) {
        data.extend_from_slice(&row[..comp.width]);
    }
    Plane {
        width: comp.width,
        height: comp.height,
        data,
    }
}

/// Brings a component plane to the full image size with the method
/// libjpeg's `jinit_upsampler` selects for its sampling ratio (fancy
/// upsampling is libjpeg's default and PIL keeps it).
fn upsample(plane: Plane, rh: usize, rv: usize, width: usize, height: usize) -> Plane {
    let data = match (rh, rv) {
        (1, 1) => return plane,
        (2, 1) if plane.width > 2 => fancy_h2v1(&plane, width, height),
        (1, 2) => fancy_v2(&plane, width, height, false),
        (2, 2) if plane.width > 2 => fancy_v2(&plane, width, height, true),
        _ => replicate(&plane, rh, rv, width, height),
    };
    Plane {
        width,
        height,
        data,
    }
}

/// Box upsampling: each sample repeated `rh` × `rv` times.
fn replicate(plane: &Plane, rh: usize, rv: usize, width: usize, height: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(width * height);
    for y in 0..height {
        let row = &plane.data[(y / rv) * plane.width..];
        out.extend((0..width).map(|x| row[x / rh]));
    }
    out
}

/// Triangle filter 2:1 horizontally on one row: output samples sit 1/4 and
/// 3/4 of the way between input centres, with the bias alternating (+1,
/// +2) so halves round both ways. Edge samples reuse themselves as the
/// missing neighbour, which reproduces libjpeg's special-cased first and
/// last columns. `row` holds sums scaled by `scale` (1, or 4 after a
/// vertical pass); `bias` and `shift` finish the rounding.
fn triangle_row(row: &[i32], out: &mut Vec<u8>, width: usize, bias: [i32; 2], shift: u32) {
    let last = row.len() - 1;
    for x in 0..width {
        let c = x / 2;
        let near = 3 * row[c];
        let v = if x % 2 == 0 {
            near + row[c.saturating_sub(1)] + bias[0]
        } else {
            near + row[(c + 1).min(last)] + bias[1]
        };
        out.push((v >> shift) as u8);
    }
}

/// libjpeg's h2v1 fancy upsampling.
fn fancy_h2v1(plane: &Plane, width: usize, height: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(width * height);
    let mut row = vec![0i32; plane.width];
    for y in 0..height {
        let src = &plane.data[y * plane.width..(y + 1) * plane.width];
        row.iter_mut()
            .zip(src)
            .for_each(|(d, &s)| *d = i32::from(s));
        triangle_row(&row, &mut out, width, [1, 2], 2);
    }
    out
}

/// Triangle filter 2:1 vertically, and also 2:1 horizontally when
/// `horizontal` (libjpeg's h1v2 / h2v2 fancy upsampling). Vertical
/// neighbours beyond the first / last sample row repeat that row, as
/// libjpeg's context-row pointers do.
fn fancy_v2(plane: &Plane, width: usize, height: usize, horizontal: bool) -> Vec<u8> {
    let last_row = plane.height - 1;
    let mut out = Vec::with_capacity(width * height);
    // Vertically blended "column sums": 3 * nearer row + farther row.
    let mut colsum = vec![0i32; plane.width];
    for y in 0..height {
        let r = y / 2;
        let other = if y % 2 == 0 {
            r.saturating_sub(1)
        } else {
            (r + 1).min(last_row)
        };
        let near = &plane.data[r * plane.width..(r + 1) * plane.width];
        let far = &plane.data[other * plane.width..(other + 1) * plane.width];
        for ((d, &n), &f) in colsum.iter_mut().zip(near).zip(far) {
            *d = 3 * i32::from(n) + i32::from(f);
        }
        if horizontal {
            triangle_row(&colsum, &mut out, width, [8, 7], 4);
        } else {
            let bias = if y % 2 == 0 { 1 } else { 2 };
            out.extend(colsum[..width].iter().map(|&v| ((v + bias) >> 2) as u8));
        }
    }
    out
}

/// libjpeg's fixed-point YCbCr -> RGB tables (16 fractional bits).
struct YccTables {
    cr_r: [i32; 256],
    cb_b: [i32; 256],
    cr_g: [i64; 256],
    cb_g: [i64; 256],
}

const SCALEBITS: u32 = 16;
const ONE_HALF: i64 = 1 << (SCALEBITS - 1);

/// `FIX(x)` for the four conversion constants.
const FIX_1_40200: i64 = 91881;
const FIX_1_77200: i64 = 116130;
const FIX_0_71414: i64 = 46802;
const FIX_0_34414: i64 = 22554;

impl YccTables {
    fn new() -> Self {
        let mut t = Self {
            cr_r: [0; 256],
            cb_b: [0; 256],
            cr_g: [0; 256],
            cb_g: [0; 256],
        };
        for i in 0..256 {
            let x = i as i64 - 128;
            t.cr_r[i] = ((FIX_1_40200 * x + ONE_HALF) >> SCALEBITS) as i32;
            t.cb_b[i] = ((FIX_1_77200 * x + ONE_HALF) >> SCALEBITS) as i32;
            t.cr_g[i] = -FIX_0_71414 * x;
            t.cb_g[i] = -FIX_0_34414 * x + ONE_HALF;
        }
        t
    }

    /// Returns the unclamped (R, G, B) offsets for chroma (cb, cr).
    #[inline]
    fn offsets(&self, cb: u8, cr: u8) -> [i32; 3] {
        let (cb, cr) = (usize::from(cb), usize::from(cr));
        [
            self.cr_r[cr],
            ((self.cb_g[cb] + self.cr_g[cr]) >> SCALEBITS) as i32,
            self.cb_b[cb],
        ]
    }
}

#[inline]
fn clamp8(v: i32) -> u8 {
    v.clamp(0, 255) as u8
}

/// Runs IDCT, upsampling and colour conversion for the whole frame.
pub(super) fn reconstruct(
    frame: &Frame,
    color_space: ColorSpace,
    smoothing: bool,
) -> Result<JpegImage, JpegError> {
    let (width, height) = (frame.width, frame.height);
    let mut planes = Vec::with_capacity(frame.components.len());
    for comp in &frame.components {
        // (`is_multiple_of` would need Rust 1.87; the workspace supports 1.85.)
        let divides = |max: usize, factor: usize| max / factor * factor == max;
        if !divides(frame.max_h, comp.h) || !divides(frame.max_v, comp.v) {
            return Err(JpegError::Unsupported(format!(
                "fractional sampling ratio {}x{} : {}x{}",
                frame.max_h, frame.max_v, comp.h, comp.v
            )));
        }
        let plane = if smoothing {
            component_plane(comp, &smoothed_coefficients(comp, frame))
        } else {
            component_plane(comp, &comp.coefs)
        };
        planes.push(upsample(
            plane,
            frame.max_h / comp.h,
            frame.max_v / comp.v,
            width,
            height,
        ));
    }
    let n = width * height;
    let pixels = match color_space {
        ColorSpace::Gray => JpegPixels::Gray(planes.swap_remove(0).data),
        ColorSpace::Rgb => {
            let mut out = Vec::with_capacity(n * 3);
            for i in 0..n {
                out.extend(planes.iter().map(|p| p.data[i]));
            }
            JpegPixels::Rgb(out)
        }
        ColorSpace::YCbCr => {
            let t = YccTables::new();
            let mut out = Vec::with_capacity(n * 3);
            let (y, cb, cr) = (&planes[0].data, &planes[1].data, &planes[2].data);
            for ((&y, &cb), &cr) in y.iter().zip(cb).zip(cr) {
                let off = t.offsets(cb, cr);
                let y = i32::from(y);
                out.extend_from_slice(&[
                    clamp8(y + off[0]),
                    clamp8(y + off[1]),
                    clamp8(y + off[2]),
                ]);
            }
            JpegPixels::Rgb(out)
        }
        ColorSpace::Cmyk | ColorSpace::Ycck => {
            let t = YccTables::new();
            let mut out = Vec::with_capacity(n * 4);
            for i in 0..n {
                let mut cmyk: [u8; 4] = std::array::from_fn(|c| planes[c].data[i]);
                if color_space == ColorSpace::Ycck {
                    let y = i32::from(cmyk[0]);
                    let off = t.offsets(cmyk[1], cmyk[2]);
                    for c in 0..3 {
                        cmyk[c] = clamp8(255 - (y + off[c]));
                    }
                }
                // PIL reads JPEG CMYK with raw mode "CMYK;I" (inverted).
                out.extend(cmyk.iter().map(|&v| 255 - v));
            }
            JpegPixels::Cmyk(out)
        }
    };
    Ok(JpegImage {
        width: width as u32,
        height: height as u32,
        pixels,
    })
}
