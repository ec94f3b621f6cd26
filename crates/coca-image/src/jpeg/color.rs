//! From coefficients to pixels: IDCT into per-component sample planes,
//! libjpeg's chroma upsampling (jdsample.c) and colour conversion
//! (jdcolor.c), an iMCU row at a time, so that only a few rows of each
//! component's samples are ever held besides the output.

use super::header::{Component, Frame};
use super::idct::idct_block;
use super::{ColorSpace, JpegError, JpegImage, JpegPixels};

/// Sample rows `first..` of one component (`width` samples of `height`
/// rows in all), in a buffer of whole blocks (`stride` samples a row). Only
/// the rows the next output rows need are held: the iMCU rows being
/// converted and their neighbours.
struct Plane {
    width: usize,
    height: usize,
    stride: usize,
    first: usize,
    data: Vec<u8>,
}

impl Plane {
    fn new(comp: &Component) -> Self {
        Self {
            width: comp.width,
            height: comp.height,
            stride: comp.blocks_w * 8,
            first: 0,
            data: Vec::new(),
        }
    }

    /// Sample row `y` (inside the component's grid, and held).
    fn row(&self, y: usize) -> &[u8] {
        let start = (y - self.first) * self.stride;
        &self.data[start..start + self.width]
    }

    /// Appends the samples of iMCU row `m`, decoded from its coefficient
    /// chunk `coefs`; blocks past the component's grid are padding and are
    /// not decoded.
    fn push_imcu_row(&mut self, comp: &Component, m: usize, coefs: &[i16]) {
        // A component no scan ever covered has no latched table; libjpeg then
        // dequantises with an all-zero table, which yields mid-grey.
        let quant = comp.quant.unwrap_or([0; 64]);
        let block_rows = comp.blocks_h.saturating_sub(m * comp.v).min(comp.v);
        let start = self.data.len();
        self.data.resize(start + block_rows * 8 * self.stride, 0);
        for by in 0..block_rows {
            for bx in 0..comp.blocks_w {
                let block = (by * comp.stride_blocks + bx) * 64;
                let offset = start + by * 8 * self.stride + bx * 8;
                idct_block(
                    &coefs[block..block + 64],
                    &quant,
                    &mut self.data[offset..],
                    self.stride,
                );
            }
        }
    }

    /// Drops the rows above row `y`.
    fn forget_rows_before(&mut self, y: usize) {
        let n = y
            .saturating_sub(self.first)
            .min(self.data.len() / self.stride.max(1));
        if n > 0 {
            self.data.drain(..n * self.stride);
            self.first += n;
        }
    }
}

/// How a component plane is brought to the full image size: the method
/// libjpeg's `jinit_upsampler` selects for its sampling ratio (fancy
/// upsampling is libjpeg's default and PIL keeps it).
#[derive(Clone, Copy)]
enum Upsampling {
    /// Full-size component.
    None,
    /// Triangle filter 2:1 horizontally (h2v1).
    FancyH2V1,
    /// Triangle filter 2:1 vertically, and horizontally too when `true`
    /// (h1v2 / h2v2).
    FancyV2(bool),
    /// Box replication by (`rh`, `rv`).
    Replicate(usize, usize),
}

impl Upsampling {
    fn select(plane: &Plane, rh: usize, rv: usize) -> Self {
        match (rh, rv) {
            (1, 1) => Self::None,
            (2, 1) if plane.width > 2 => Self::FancyH2V1,
            (1, 2) => Self::FancyV2(false),
            (2, 2) if plane.width > 2 => Self::FancyV2(true),
            _ => Self::Replicate(rh, rv),
        }
    }
}

/// Appends output row `y` (`width` samples) of `plane` upsampled with
/// `method` to `out`; `scratch` is reused between rows. Rows are produced
/// one at a time so no full-size upsampled plane is ever held.
fn upsampled_row(
    plane: &Plane,
    method: Upsampling,
    y: usize,
    width: usize,
    scratch: &mut Vec<i32>,
    out: &mut Vec<u8>,
) {
    match method {
        Upsampling::None => out.extend_from_slice(&plane.row(y)[..width]),
        Upsampling::FancyH2V1 => {
            scratch.clear();
            scratch.extend(plane.row(y).iter().map(|&s| i32::from(s)));
            triangle_row(scratch, out, width, [1, 2], 2);
        }
        Upsampling::FancyV2(horizontal) => fancy_v2_row(plane, y, width, horizontal, scratch, out),
        Upsampling::Replicate(rh, rv) => {
            let row = plane.row(y / rv);
            out.extend((0..width).map(|x| row[x / rh]));
        }
    }
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

/// Output row `y` of the triangle filter 2:1 vertically, and also 2:1
/// horizontally when `horizontal` (libjpeg's h1v2 / h2v2 fancy
/// upsampling). Vertical neighbours beyond the first / last sample row
/// repeat that row, as libjpeg's context-row pointers do.
fn fancy_v2_row(
    plane: &Plane,
    y: usize,
    width: usize,
    horizontal: bool,
    colsum: &mut Vec<i32>,
    out: &mut Vec<u8>,
) {
    let last_row = plane.height - 1;
    let r = y / 2;
    let other = if y.is_multiple_of(2) {
        r.saturating_sub(1)
    } else {
        (r + 1).min(last_row)
    };
    // Vertically blended "column sums": 3 * nearer row + farther row.
    colsum.clear();
    colsum.extend(
        plane
            .row(r)
            .iter()
            .zip(plane.row(other))
            .map(|(&n, &f)| 3 * i32::from(n) + i32::from(f)),
    );
    if horizontal {
        triangle_row(colsum, out, width, [8, 7], 4);
    } else {
        let bias = if y.is_multiple_of(2) { 1 } else { 2 };
        out.extend(colsum[..width].iter().map(|&v| ((v + bias) >> 2) as u8));
    }
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

/// Turns iMCU rows of coefficients into pixels as they come: IDCT into
/// each component's [`Plane`], then upsampling and colour conversion of
/// every output row whose samples (and their vertical neighbours, for fancy
/// upsampling) are all held.
pub(super) struct Reconstruction {
    width: usize,
    height: usize,
    /// Output rows per iMCU row.
    imcu_height: usize,
    color_space: ColorSpace,
    planes: Vec<(Plane, Upsampling, usize)>,
    tables: YccTables,
    out: Vec<u8>,
    /// Whether `out` grows with the rows instead of being allocated whole.
    grow: bool,
    /// iMCU rows pushed so far.
    imcu_rows: usize,
    rows: Vec<Vec<u8>>,
    scratch: Vec<i32>,
}

/// A buffered image's output grows in this many steps, so that it takes
/// memory as its coefficient chunks give it back.
pub(super) const OUTPUT_GROWTH_STEPS: usize = 16;

impl Reconstruction {
    /// Sets up the upsampling of each component (refusing sampling ratios
    /// libjpeg does not support, as its `jinit_upsampler` does before any
    /// data is read). The output is allocated whole unless `grow`.
    pub fn new(frame: &Frame, color_space: ColorSpace, grow: bool) -> Result<Self, JpegError> {
        // (`is_multiple_of` would need Rust 1.87; the workspace supports 1.85.)
        let divides = |max: usize, factor: usize| max / factor * factor == max;
        let mut planes = Vec::with_capacity(frame.components.len());
        for comp in &frame.components {
            if !divides(frame.max_h, comp.h) || !divides(frame.max_v, comp.v) {
                return Err(JpegError::Unsupported(format!(
                    "fractional sampling ratio {}x{} : {}x{}",
                    frame.max_h, frame.max_v, comp.h, comp.v
                )));
            }
            let plane = Plane::new(comp);
            let rv = frame.max_v / comp.v;
            let method = Upsampling::select(&plane, frame.max_h / comp.h, rv);
            planes.push((plane, method, rv));
        }
        let total = frame.width * frame.height * channels(color_space);
        Ok(Self {
            width: frame.width,
            height: frame.height,
            imcu_height: 8 * frame.max_v,
            color_space,
            rows: vec![Vec::with_capacity(frame.width); planes.len()],
            planes,
            tables: YccTables::new(),
            out: if grow {
                Vec::new()
            } else {
                Vec::with_capacity(total)
            },
            grow,
            imcu_rows: 0,
            scratch: Vec::new(),
        })
    }

    /// Adds iMCU row `m` (the next one) of component `index` from its
    /// coefficient chunk.
    pub fn push(&mut self, index: usize, comp: &Component, m: usize, coefs: &[i16]) {
        self.planes[index].0.push_imcu_row(comp, m, coefs);
    }

    /// Notes that every component's next iMCU row has been pushed, and
    /// converts the output rows before it, whose neighbours below are now
    /// known.
    pub fn imcu_row_done(&mut self) {
        self.imcu_rows += 1;
        let ready = ((self.imcu_rows - 1) * self.imcu_height).min(self.height);
        self.convert_rows(ready);
    }

    /// Converts the remaining rows and returns the image.
    pub fn finish(mut self) -> JpegImage {
        self.convert_rows(self.height);
        let out = self.out;
        let pixels = match self.color_space {
            ColorSpace::Gray => JpegPixels::Gray(out),
            ColorSpace::Rgb | ColorSpace::YCbCr => JpegPixels::Rgb(out),
            ColorSpace::Cmyk | ColorSpace::Ycck => JpegPixels::Cmyk(out),
        };
        JpegImage {
            width: self.width as u32,
            height: self.height as u32,
            pixels,
        }
    }

    /// Converts output rows up to (not including) `end`.
    fn convert_rows(&mut self, end: usize) {
        let row_bytes = self.width * channels(self.color_space);
        let done = self.out.len() / row_bytes.max(1);
        if end <= done {
            return;
        }
        for (plane, _, rv) in &mut self.planes {
            // Fancy upsampling reads one sample row above.
            plane.forget_rows_before((done / *rv).saturating_sub(1));
        }
        if self.grow {
            let total = row_bytes * self.height;
            let needed = self.out.len() + (end - done) * row_bytes;
            if needed > self.out.capacity() {
                let target = needed
                    .max(self.out.capacity() + total.div_ceil(OUTPUT_GROWTH_STEPS))
                    .min(total);
                self.out.reserve_exact(target - self.out.len());
            }
        }
        for y in done..end {
            self.convert_row(y);
        }
    }

    /// Upsamples and converts output row `y`, appending it to the output.
    fn convert_row(&mut self, y: usize) {
        let width = self.width;
        for ((plane, method, _), row) in self.planes.iter().zip(&mut self.rows) {
            row.clear();
            upsampled_row(plane, *method, y, width, &mut self.scratch, row);
        }
        let (rows, out, t) = (&self.rows, &mut self.out, &self.tables);
        match self.color_space {
            ColorSpace::Gray => out.extend_from_slice(&rows[0]),
            ColorSpace::Rgb => {
                for ((&r, &g), &b) in rows[0].iter().zip(&rows[1]).zip(&rows[2]) {
                    out.extend_from_slice(&[r, g, b]);
                }
            }
            ColorSpace::YCbCr => {
                let (y, cb, cr) = (&rows[0], &rows[1], &rows[2]);
                for ((&y, &cb), &cr) in y.iter().zip(cb).zip(cr) {
                    let off = t.offsets(cb, cr);
                    let y = i32::from(y);
                    out.extend_from_slice(&[
                        clamp8(y + off[0]),
                        clamp8(y + off[1]),
                        clamp8(y + off[2]),
                    ]);
                }
            }
            ColorSpace::Cmyk | ColorSpace::Ycck => {
                let (c, m, ye, k) = (&rows[0], &rows[1], &rows[2], &rows[3]);
                for (((&c, &m), &ye), &k) in c.iter().zip(m).zip(ye).zip(k) {
                    let mut cmyk = [c, m, ye, k];
                    if self.color_space == ColorSpace::Ycck {
                        let y = i32::from(cmyk[0]);
                        let off = t.offsets(cmyk[1], cmyk[2]);
                        for c in 0..3 {
                            cmyk[c] = clamp8(255 - (y + off[c]));
                        }
                    }
                    // PIL reads JPEG CMYK with raw mode "CMYK;I" (inverted).
                    out.extend(cmyk.iter().map(|&v| 255 - v));
                }
            }
        }
    }
}

/// Output samples per pixel.
pub(super) fn channels(color_space: ColorSpace) -> usize {
    match color_space {
        ColorSpace::Gray => 1,
        ColorSpace::Rgb | ColorSpace::YCbCr => 3,
        ColorSpace::Cmyk | ColorSpace::Ycck => 4,
    }
}
