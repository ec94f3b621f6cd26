//! Pillow's `Image.resize` (libImaging/Resample.c and the nearest-neighbour
//! scale in Geometry.c), reimplemented so that the output matches PIL bit
//! for bit:
//!
//! - separable convolution, horizontal pass first, over only the source rows
//!   the vertical pass will read;
//! - the filter support widens by the scale factor when downscaling
//!   (antialiasing), and each output's weights are normalised to sum to one;
//! - for 8-bit images the weights become 22-bit fixed-point integers, and
//!   the intermediate image between the passes is rounded and clipped to
//!   8 bits;
//! - 16-bit ("I;16") images keep double-precision weights and round half
//!   away from zero after each pass;
//! - a pass whose size does not change is skipped.

use std::ops::Range;

use crate::config::Interpolation;

/// Fixed-point precision of 8-bit resampling weights (`PRECISION_BITS`).
const PRECISION_BITS: u32 = 32 - 8 - 2;

impl Interpolation {
    /// Pillow's filter function for this interpolation.
    fn weight(self, x: f64) -> f64 {
        let x = x.abs();
        match self {
            Self::Bilinear => {
                if x < 1.0 {
                    1.0 - x
                } else {
                    0.0
                }
            }
            Self::Bicubic => {
                // Keys' cubic convolution with a = -0.5, evaluated in the
                // same operation order as Pillow.
                const A: f64 = -0.5;
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
        }
    }

    /// Half-width of the filter kernel at scale 1.
    fn support(self) -> f64 {
        match self {
            Self::Bilinear => 1.0,
            Self::Bicubic => 2.0,
        }
    }
}

/// Per-output-sample source windows and weights along one axis, for a
/// range of output indices.
struct Coefficients {
    /// Weights per output sample (only the first `count` of each are used).
    ksize: usize,
    /// (first source index, number of source samples) per output sample.
    bounds: Vec<(usize, usize)>,
    weights: Vec<f64>,
}

impl Coefficients {
    /// Pillow's `precompute_coeffs` for the source span `[0, in_size)`
    /// (passed as a 32-bit float box, as PIL does) mapped onto `out_size`
    /// samples, evaluated for the output indices in `range` only: each
    /// output's weights depend on nothing but its own index.
    fn new(in_size: usize, out_size: usize, range: Range<usize>, filter: Interpolation) -> Self {
        let (in0, in1) = (0.0f32, in_size as f32);
        let scale = f64::from(in1 - in0) / out_size as f64;
        let filterscale = scale.max(1.0);
        let support = filter.support() * filterscale;
        let ksize = support.ceil() as usize * 2 + 1;
        let inv_filterscale = 1.0 / filterscale;
        let mut bounds = Vec::with_capacity(range.len());
        let mut weights = vec![0.0; range.len() * ksize];
        for (xx, k) in range.zip(weights.chunks_exact_mut(ksize)) {
            let center = f64::from(in0) + (xx as f64 + 0.5) * scale;
            // C's (int) conversion truncates toward zero.
            let xmin = ((center - support + 0.5) as i64).max(0);
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64);
            let count = (xmax - xmin).max(0) as usize;
            let mut total = 0.0;
            for (x, w) in k[..count].iter_mut().enumerate() {
                *w = filter.weight(((x as i64 + xmin) as f64 - center + 0.5) * inv_filterscale);
                total += *w;
            }
            if total != 0.0 {
                k[..count].iter_mut().for_each(|w| *w /= total);
            }
            bounds.push((xmin as usize, count));
        }
        Self {
            ksize,
            bounds,
            weights,
        }
    }

    /// Source start and weights of the `i`-th computed output.
    #[cfg(test)]
    fn window(&self, i: usize) -> (usize, &[f64]) {
        let (start, count) = self.bounds[i];
        (start, &self.weights[i * self.ksize..i * self.ksize + count])
    }

    /// The weights as Pillow's 8-bit path rounds them (half away from zero).
    fn fixed_point(&self) -> Vec<i32> {
        let one = f64::from(1u32 << PRECISION_BITS);
        self.weights
            .iter()
            .map(|&w| {
                if w < 0.0 {
                    (-0.5 + w * one) as i32
                } else {
                    (0.5 + w * one) as i32
                }
            })
            .collect()
    }

    /// First source index read and one past the last one.
    fn span(&self) -> Range<usize> {
        let first = self.bounds.iter().map(|b| b.0).min().unwrap_or(0);
        let last = self.bounds.iter().map(|b| b.0 + b.1).max().unwrap_or(0);
        first..last.max(first)
    }
}

/// Rounds a fixed-point accumulator to 8 bits with clipping (`clip8`).
#[inline]
fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// An interleaved image borrowed for resampling.
#[derive(Clone, Copy)]
pub(crate) struct View<'a, T> {
    pub data: &'a [T],
    pub width: usize,
    pub height: usize,
    pub channels: usize,
}

/// The part of a resized image that is actually needed: columns `x` and
/// rows `y` of the full `out_width` × `out_height` result. Pillow computes
/// every output sample independently, so computing only a window yields
/// exactly the same samples (and avoids huge intermediates for extreme
/// aspect ratios).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Window {
    pub out_width: usize,
    pub out_height: usize,
    pub x: Range<usize>,
    pub y: Range<usize>,
}

/// Sample types Pillow resamples by convolution, with the arithmetic of
/// its 8-bit and 16-bit paths.
trait Convolve: Copy {
    type Weight: Copy;
    type Acc: Copy;
    /// The weights in the form this path uses.
    fn weights(c: &Coefficients) -> Vec<Self::Weight>;
    /// Initial accumulator (the rounding bias for fixed point).
    fn start() -> Self::Acc;
    /// Adds one weighted sample.
    fn add(acc: Self::Acc, v: Self, w: Self::Weight) -> Self::Acc;
    /// Rounds and clips the accumulator to a sample.
    fn finish(acc: Self::Acc) -> Self;
}

/// 8-bit: 22-bit fixed-point weights, rounding bias, clip to 0..=255.
impl Convolve for u8 {
    type Weight = i32;
    type Acc = i32;

    fn weights(c: &Coefficients) -> Vec<i32> {
        c.fixed_point()
    }

    #[inline]
    fn start() -> i32 {
        1 << (PRECISION_BITS - 1)
    }

    #[inline]
    fn add(acc: i32, v: u8, w: i32) -> i32 {
        acc + i32::from(v) * w
    }

    #[inline]
    fn finish(acc: i32) -> u8 {
        clip8(acc)
    }
}

/// 16-bit ("I;16"): double weights summed in tap order, rounded half away
/// from zero (`ROUND_UP`) and clipped to 0..=65535.
impl Convolve for u16 {
    type Weight = f64;
    type Acc = f64;

    fn weights(c: &Coefficients) -> Vec<f64> {
        c.weights.clone()
    }

    #[inline]
    fn start() -> f64 {
        0.0
    }

    #[inline]
    fn add(acc: f64, v: u16, w: f64) -> f64 {
        acc + f64::from(v) * w
    }

    #[inline]
    fn finish(acc: f64) -> u16 {
        let r = if acc >= 0.0 { acc + 0.5 } else { acc - 0.5 } as i64;
        r.clamp(0, 65535) as u16
    }
}

/// Pillow's two-pass resample restricted to `win`: a horizontal pass over
/// the source rows the vertical pass reads, then the vertical pass. A pass
/// is skipped when its axis keeps its size (Pillow's `need_horizontal` /
/// `need_vertical`), in which case the window just selects samples. Each
/// output accumulates its taps in Pillow's order, so even the
/// floating-point path gives identical sums.
fn two_pass<T: Convolve>(src: View<T>, win: &Window, filter: Interpolation) -> Vec<T> {
    let ch = src.channels;
    let pass = |in_size: usize, out_size: usize, range: &Range<usize>| {
        (out_size != in_size).then(|| Coefficients::new(in_size, out_size, range.clone(), filter))
    };
    let horiz = pass(src.width, win.out_width, &win.x);
    let vert = pass(src.height, win.out_height, &win.y);
    let rows = vert.as_ref().map_or(win.y.clone(), Coefficients::span);
    let cols = win.x.len();

    // Intermediate image: `rows` source rows by `cols` window columns.
    let mut mid = Vec::with_capacity(rows.len() * cols * ch);
    let horiz_weights = horiz.as_ref().map(T::weights);
    for y in rows.clone() {
        let line = &src.data[y * src.width * ch..(y + 1) * src.width * ch];
        let (Some(coefs), Some(weights)) = (&horiz, &horiz_weights) else {
            mid.extend_from_slice(&line[win.x.start * ch..win.x.end * ch]);
            continue;
        };
        for i in 0..cols {
            let (start, count) = coefs.bounds[i];
            let k = &weights[i * coefs.ksize..i * coefs.ksize + count];
            let taps = &line[start * ch..(start + count) * ch];
            let mut acc = [T::start(); 4];
            for (px, &w) in taps.chunks_exact(ch).zip(k) {
                for (a, &v) in acc.iter_mut().zip(px) {
                    *a = T::add(*a, v, w);
                }
            }
            mid.extend(acc[..ch].iter().map(|&a| T::finish(a)));
        }
    }
    let Some(coefs) = vert else {
        return mid;
    };
    let weights = T::weights(&coefs);
    let stride = cols * ch;
    let mut out = Vec::with_capacity(win.y.len() * stride);
    let mut acc = vec![T::start(); stride];
    for i in 0..win.y.len() {
        let (start, count) = coefs.bounds[i];
        let k = &weights[i * coefs.ksize..i * coefs.ksize + count];
        acc.fill(T::start());
        for (t, &w) in k.iter().enumerate() {
            let row = &mid[(start - rows.start + t) * stride..][..stride];
            for (a, &v) in acc.iter_mut().zip(row) {
                *a = T::add(*a, v, w);
            }
        }
        out.extend(acc.iter().map(|&a| T::finish(a)));
    }
    out
}

/// Resamples an 8-bit image (any channel count up to 4, channels
/// independent) like Pillow's `ImagingResample`, returning the `win` part
/// of the result.
pub(crate) fn resample_u8(src: View<u8>, win: &Window, filter: Interpolation) -> Vec<u8> {
    two_pass(src, win, filter)
}

/// Resamples a single-channel 16-bit image like Pillow's 16bpc path,
/// returning the `win` part of the result.
pub(crate) fn resample_u16(src: View<u16>, win: &Window, filter: Interpolation) -> Vec<u16> {
    two_pass(src, win, filter)
}

/// Pillow's nearest-neighbour scaling (`ImagingScaleAffine`), which PIL
/// uses for "1" and "P" images whatever filter is requested, returning the
/// `win` part. Source positions are accumulated in floating point exactly
/// as Pillow does; outputs that fall outside the source get `fill`.
pub(crate) fn resample_nearest<T: Copy>(src: View<T>, win: &Window, fill: &[T]) -> Vec<T> {
    let ch = src.channels;
    let positions = |in_size: usize, out_size: usize, range: &Range<usize>| {
        let step = f64::from(in_size as f32) / out_size as f64;
        let mut pos = step * 0.5;
        let mut picked = Vec::with_capacity(range.len());
        for i in 0..range.end {
            if i >= range.start {
                picked.push(source_index(pos, in_size));
            }
            pos += step;
        }
        picked
    };
    let columns = positions(src.width, win.out_width, &win.x);
    let rows = positions(src.height, win.out_height, &win.y);
    let mut out = Vec::with_capacity(columns.len() * rows.len() * ch);
    for row in rows {
        let line = row.map(|y| &src.data[y * src.width * ch..(y + 1) * src.width * ch]);
        for col in &columns {
            match (line, col) {
                (Some(line), Some(x)) => out.extend_from_slice(&line[x * ch..x * ch + ch]),
                _ => out.extend_from_slice(fill),
            }
        }
    }
    out
}

/// Pillow's `COORD`: truncation, with negatives mapped outside.
fn source_index(pos: f64, size: usize) -> Option<usize> {
    if pos < 0.0 {
        return None;
    }
    let i = pos as usize;
    (i < size).then_some(i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(data: &[u8], width: usize, height: usize, channels: usize) -> View<'_, u8> {
        View {
            data,
            width,
            height,
            channels,
        }
    }

    fn full(out_width: usize, out_height: usize) -> Window {
        Window {
            out_width,
            out_height,
            x: 0..out_width,
            y: 0..out_height,
        }
    }

    #[test]
    fn weights_sum_to_one_and_widen_when_downscaling() {
        let c = Coefficients::new(100, 10, 0..10, Interpolation::Bicubic);
        // Support 2 * scale 10 = 20 each side.
        assert_eq!(c.ksize, 41);
        for i in 0..10 {
            let (_, k) = c.window(i);
            assert!((k.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        }
        let up = Coefficients::new(10, 20, 0..20, Interpolation::Bilinear);
        assert_eq!(up.ksize, 3);
    }

    #[test]
    fn constant_image_stays_constant() {
        let data = vec![77u8; 13 * 7 * 3];
        for filter in [Interpolation::Bicubic, Interpolation::Bilinear] {
            for (w, h) in [(5, 3), (26, 14), (13, 20)] {
                let out = resample_u8(view(&data, 13, 7, 3), &full(w, h), filter);
                assert_eq!(out.len(), w * h * 3);
                assert!(out.iter().all(|&v| v == 77), "{filter:?} {w}x{h}");
            }
        }
    }

    #[test]
    fn same_size_is_identity() {
        let data: Vec<u8> = (0..60).map(|i| (i * 37 % 256) as u8).collect();
        let out = resample_u8(view(&data, 5, 4, 3), &full(5, 4), Interpolation::Bicubic);
        assert_eq!(out, data);
    }

    #[test]
    fn window_matches_full_result() {
        let data: Vec<u8> = (0..(17 * 11 * 2)).map(|i| (i * 91 % 253) as u8).collect();
        let src = view(&data, 17, 11, 2);
        for (w, h) in [(7, 5), (40, 23), (17, 30), (9, 11)] {
            let all = resample_u8(src, &full(w, h), Interpolation::Bicubic);
            let win = Window {
                out_width: w,
                out_height: h,
                x: 2..w - 1,
                y: 1..h - 2,
            };
            let part = resample_u8(src, &win, Interpolation::Bicubic);
            let expected: Vec<u8> = win
                .y
                .clone()
                .flat_map(|y| all[(y * w + win.x.start) * 2..(y * w + win.x.end) * 2].to_vec())
                .collect();
            assert_eq!(part, expected, "{w}x{h}");
        }
    }

    #[test]
    fn bicubic_overshoot_is_clipped() {
        // A hard edge upscaled with a negative-lobe kernel rings; the result
        // must saturate rather than wrap.
        let data = [0u8, 0, 255, 255];
        let out = resample_u8(view(&data, 4, 1, 1), &full(16, 1), Interpolation::Bicubic);
        assert_eq!(out.first(), Some(&0));
        assert_eq!(out.last(), Some(&255));
        assert!(out.windows(2).all(|w| w[0] <= w[1]), "{out:?}");
    }

    #[test]
    fn nearest_picks_centres() {
        let data: Vec<u8> = (0..8).collect();
        let out = resample_nearest(view(&data, 8, 1, 1), &full(4, 1), &[0]);
        assert_eq!(out, vec![1, 3, 5, 7]);
        let out = resample_nearest(view(&data, 8, 1, 1), &full(16, 1), &[0]);
        assert_eq!(out, vec![0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7]);
    }

    #[test]
    fn sixteen_bit_rounds_and_clips() {
        let data = [0u16, 65535, 65535, 0];
        let src = View {
            data: &data[..],
            width: 4,
            height: 1,
            channels: 1,
        };
        let out = resample_u16(src, &full(9, 1), Interpolation::Bicubic);
        assert_eq!(out.len(), 9);
        assert!(out.contains(&65535) && out.contains(&0));
    }
}
