//! Vectorised `exp` and row maximum for the softmax passes over vocabulary-wide rows.
//!
//! glibc's `expf` is scalar: over a (tokens × 49,408) caption softmax it alone took a tenth of a training step.
//! Here `exp` is a range reduction `x = n·ln 2 + r` (|r| ≤ ln 2 / 2, ln 2 split in two constants so `n·ln 2` is
//! exact), a degree-7 polynomial for `exp(r)` (Cephes' minimax coefficients, about 1 ulp) and a scaling by `2ⁿ`
//! built from exponent bits. The scaling is done as two factors `2^⌊n/2⌋ · 2^⌈n/2⌉`, each a normal float, so
//! results down to the subnormal range and up to overflow come out right without special cases: inputs are
//! clamped to [−104, 89], where the result is already 0 or +∞. NaN propagates.
//!
//! AVX-512F and AVX2+FMA kernels are picked at run time; elsewhere the same arithmetic runs one lane at a time.
//! Every kernel reduces in a fixed order, so results are reproducible run to run on one machine.

use super::cpu::{simd, Simd};

const LOG2E: f32 = std::f32::consts::LOG2_E;
/// ln 2 = LN2_HI + LN2_LO, LN2_HI with few mantissa bits so that `n · LN2_HI` is exact for |n| ≤ 150.
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// Below this `exp` is 0 in f32 (the smallest subnormal is e^−103.28).
const X_MIN: f32 = -104.0;
/// Above this `exp` is +∞ in f32 (the largest float is e^88.72).
const X_MAX: f32 = 89.0;
/// Coefficients of `(exp(r) − 1 − r) / r²`, highest degree first.
const POLY: [f32; 6] = [
    1.987_569_1e-4,
    1.398_199_9e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    1.666_666_5e-1,
    0.5,
];

/// `exp(x)` with the vector kernels' arithmetic, one value at a time (tails and the portable fallback).
#[inline]
pub fn exp_scalar(x: f32) -> f32 {
    // `max`/`min` return the other operand for NaN; keep NaN explicitly.
    if x.is_nan() {
        return x;
    }
    let x = x.clamp(X_MIN, X_MAX);
    let n = (x * LOG2E).round_ties_even();
    let r = n.mul_add(-LN2_LO, n.mul_add(-LN2_HI, x));
    let p = POLY[1..].iter().fold(POLY[0], |p, &c| p.mul_add(r, c));
    let y = p.mul_add(r * r, r) + 1.0;
    let n = n as i32;
    let half = n >> 1;
    y * pow2(half) * pow2(n - half)
}

/// `2ⁿ` for −126 ≤ n ≤ 127.
#[inline]
fn pow2(n: i32) -> f32 {
    f32::from_bits(((n + 127) as u32) << 23)
}

/// `xs[i] ← exp(xs[i] − shift)` for every element; returns the sum of the results.
pub fn exp_shifted_sum(xs: &mut [f32], shift: f32) -> f32 {
    exp_shifted_sum_on(simd(), xs, shift)
}

/// `xs[i] ← exp(xs[i])` for every element.
pub fn exp_in_place(xs: &mut [f32]) {
    exp_shifted_sum(xs, 0.0);
}

/// The largest element of `xs` (−∞ when empty; NaN elements are skipped).
pub fn max(xs: &[f32]) -> f32 {
    max_on(simd(), xs)
}

/// [`exp_shifted_sum`] with the kernel of `simd`.
fn exp_shifted_sum_on(simd: Simd, xs: &mut [f32], shift: f32) -> f32 {
    match simd {
        #[cfg(target_arch = "x86_64")]
        Simd::Avx512(cpu) => x86::exp_shifted_sum_avx512(cpu, xs, shift),
        #[cfg(target_arch = "x86_64")]
        Simd::Avx2(cpu) => x86::exp_shifted_sum_avx2(cpu, xs, shift),
        _ => exp_shifted_sum_portable(xs, shift),
    }
}

/// [`max`] with the kernel of `simd`.
fn max_on(simd: Simd, xs: &[f32]) -> f32 {
    match simd {
        #[cfg(target_arch = "x86_64")]
        Simd::Avx512(cpu) => x86::max_avx512(cpu, xs),
        #[cfg(target_arch = "x86_64")]
        Simd::Avx2(cpu) => x86::max_avx2(cpu, xs),
        _ => max_portable(xs),
    }
}

fn exp_shifted_sum_portable(xs: &mut [f32], shift: f32) -> f32 {
    let mut sum = 0f32;
    for v in xs.iter_mut() {
        *v = exp_scalar(*v - shift);
        sum += *v;
    }
    sum
}

fn max_portable(xs: &[f32]) -> f32 {
    xs.iter().copied().fold(f32::NEG_INFINITY, f32::max)
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{LN2_HI, LN2_LO, LOG2E, POLY, X_MAX, X_MIN};
    use crate::nn::kernels::cpu::{Avx2Fma, Avx512};

    /// Lanes of the widest kernel; tails are padded to it.
    const WIDE: usize = 16;

    /// Run `body` over `xs` in full vectors of `LANES`, then once more over the tail copied into a buffer padded
    /// with `pad` (so the kernels never read or write out of bounds); the tail's results are copied back.
    #[inline(always)]
    fn with_padded_tail<const LANES: usize>(
        xs: &mut [f32],
        pad: f32,
        mut body: impl FnMut(&mut [f32]),
    ) {
        let full = xs.len() / LANES * LANES;
        let (head, tail) = xs.split_at_mut(full);
        body(head);
        if !tail.is_empty() {
            let mut buf = [pad; WIDE];
            buf[..tail.len()].copy_from_slice(tail);
            body(&mut buf[..LANES]);
            tail.copy_from_slice(&buf[..tail.len()]);
        }
    }

    pub(super) fn exp_shifted_sum_avx512(_: Avx512, xs: &mut [f32], shift: f32) -> f32 {
        // SAFETY: the token proves that this CPU has AVX-512F and FMA.
        unsafe { exp_shifted_sum_avx512_impl(xs, shift) }
    }

    /// `exp` of each lane (the arithmetic of [`super::exp_scalar`]).
    #[target_feature(enable = "avx512f")]
    fn exp_avx512(x: __m512) -> __m512 {
        let x = _mm512_min_ps(
            _mm512_set1_ps(X_MAX),
            _mm512_max_ps(_mm512_set1_ps(X_MIN), x),
        );
        let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm512_mul_ps(x, _mm512_set1_ps(LOG2E)),
        );
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_HI), x);
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_LO), r);
        let mut p = _mm512_set1_ps(POLY[0]);
        for &c in &POLY[1..] {
            p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
        }
        let y = _mm512_add_ps(
            _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r),
            _mm512_set1_ps(1.0),
        );
        let n = _mm512_cvtps_epi32(n);
        let half = _mm512_srai_epi32::<1>(n);
        let bias = _mm512_set1_epi32(127);
        let s1 = _mm512_castsi512_ps(_mm512_slli_epi32::<23>(_mm512_add_epi32(half, bias)));
        let s2 = _mm512_castsi512_ps(_mm512_slli_epi32::<23>(_mm512_add_epi32(
            _mm512_sub_epi32(n, half),
            bias,
        )));
        _mm512_mul_ps(_mm512_mul_ps(y, s1), s2)
    }

    /// # Safety
    /// The CPU must have AVX-512F.
    #[target_feature(enable = "avx512f")]
    unsafe fn exp_shifted_sum_avx512_impl(xs: &mut [f32], shift: f32) -> f32 {
        let shift_v = _mm512_set1_ps(shift);
        let mut acc = _mm512_setzero_ps();
        // Padding with −∞ makes the tail's extra lanes exp(−∞) = 0, so the sum needs no mask.
        with_padded_tail::<16>(xs, f32::NEG_INFINITY, |part| {
            for chunk in part.chunks_exact_mut(16) {
                // SAFETY: `chunk` holds 16 f32, so the unaligned 16-lane load and store stay inside it; the CPU
                // has AVX-512F (this function's contract).
                unsafe {
                    let v = _mm512_loadu_ps(chunk.as_ptr());
                    let e = exp_avx512(_mm512_sub_ps(v, shift_v));
                    _mm512_storeu_ps(chunk.as_mut_ptr(), e);
                    acc = _mm512_add_ps(acc, e);
                }
            }
        });
        _mm512_reduce_add_ps(acc)
    }

    pub(super) fn max_avx512(_: Avx512, xs: &[f32]) -> f32 {
        // SAFETY: the token proves that this CPU has AVX-512F and FMA.
        unsafe { max_avx512_impl(xs) }
    }

    /// # Safety
    /// The CPU must have AVX-512F.
    #[target_feature(enable = "avx512f")]
    unsafe fn max_avx512_impl(xs: &[f32]) -> f32 {
        let mut acc = _mm512_set1_ps(f32::NEG_INFINITY);
        let chunks = xs.chunks_exact(16);
        let tail = chunks.remainder();
        for chunk in chunks {
            // `max(acc, v)` keeps `v` when either is NaN, `max(v, acc)` keeps acc: NaN elements are skipped as
            // `f32::max` does.
            // SAFETY: `chunk` holds 16 f32, so the unaligned 16-lane load stays inside it.
            let v = unsafe { _mm512_loadu_ps(chunk.as_ptr()) };
            acc = _mm512_max_ps(v, acc);
        }
        tail.iter()
            .copied()
            .fold(_mm512_reduce_max_ps(acc), f32::max)
    }

    pub(super) fn exp_shifted_sum_avx2(_: Avx2Fma, xs: &mut [f32], shift: f32) -> f32 {
        // SAFETY: the token proves that this CPU has AVX2 and FMA.
        unsafe { exp_shifted_sum_avx2_impl(xs, shift) }
    }

    /// `exp` of each lane (the arithmetic of [`super::exp_scalar`]).
    #[target_feature(enable = "avx2,fma")]
    fn exp_avx2(x: __m256) -> __m256 {
        let x = _mm256_min_ps(
            _mm256_set1_ps(X_MAX),
            _mm256_max_ps(_mm256_set1_ps(X_MIN), x),
        );
        let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm256_mul_ps(x, _mm256_set1_ps(LOG2E)),
        );
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HI), x);
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_LO), r);
        let mut p = _mm256_set1_ps(POLY[0]);
        for &c in &POLY[1..] {
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
        }
        let y = _mm256_add_ps(
            _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r),
            _mm256_set1_ps(1.0),
        );
        let n = _mm256_cvtps_epi32(n);
        let half = _mm256_srai_epi32::<1>(n);
        let bias = _mm256_set1_epi32(127);
        let s1 = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(half, bias)));
        let s2 = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(
            _mm256_sub_epi32(n, half),
            bias,
        )));
        _mm256_mul_ps(_mm256_mul_ps(y, s1), s2)
    }

    /// # Safety
    /// The CPU must have AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn exp_shifted_sum_avx2_impl(xs: &mut [f32], shift: f32) -> f32 {
        let shift_v = _mm256_set1_ps(shift);
        let mut acc = _mm256_setzero_ps();
        with_padded_tail::<8>(xs, f32::NEG_INFINITY, |part| {
            for chunk in part.chunks_exact_mut(8) {
                // SAFETY: `chunk` holds 8 f32, so the unaligned 8-lane load and store stay inside it; the CPU has
                // AVX2 and FMA (this function's contract).
                unsafe {
                    let v = _mm256_loadu_ps(chunk.as_ptr());
                    let e = exp_avx2(_mm256_sub_ps(v, shift_v));
                    _mm256_storeu_ps(chunk.as_mut_ptr(), e);
                    acc = _mm256_add_ps(acc, e);
                }
            }
        });
        sum_lanes(acc)
    }

    pub(super) fn max_avx2(_: Avx2Fma, xs: &[f32]) -> f32 {
        // SAFETY: the token proves that this CPU has AVX2 and FMA.
        unsafe { max_avx2_impl(xs) }
    }

    /// # Safety
    /// The CPU must have AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn max_avx2_impl(xs: &[f32]) -> f32 {
        let mut acc = _mm256_set1_ps(f32::NEG_INFINITY);
        let chunks = xs.chunks_exact(8);
        let tail = chunks.remainder();
        for chunk in chunks {
            // NaN elements are skipped (see the AVX-512 kernel).
            // SAFETY: `chunk` holds 8 f32, so the unaligned 8-lane load stays inside it.
            let v = unsafe { _mm256_loadu_ps(chunk.as_ptr()) };
            acc = _mm256_max_ps(v, acc);
        }
        lanes(acc)
            .into_iter()
            .chain(tail.iter().copied())
            .fold(f32::NEG_INFINITY, f32::max)
    }

    /// The eight lanes of `v`, lowest first.
    #[target_feature(enable = "avx2,fma")]
    fn lanes(v: __m256) -> [f32; 8] {
        let mut out = [0f32; 8];
        // SAFETY: `out` holds the 8 f32 the unaligned store writes.
        unsafe { _mm256_storeu_ps(out.as_mut_ptr(), v) };
        out
    }

    /// The sum of `v`'s lanes, lowest first (a fixed order, so results repeat run to run).
    #[target_feature(enable = "avx2,fma")]
    fn sum_lanes(v: __m256) -> f32 {
        lanes(v).iter().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Distance in units in the last place between two finite non-negative floats.
    fn ulps(a: f32, b: f32) -> u32 {
        (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
    }

    #[test]
    fn exp_is_within_a_few_ulp_of_std_over_the_whole_range() {
        // A dense sweep of [−110, 90] plus the points around the edges of the range.
        let mut xs: Vec<f32> = (0..=200_000).map(|i| -110.0 + i as f32 * 1e-3).collect();
        xs.extend([
            0.0,
            -0.0,
            1e-30,
            -1e-30,
            88.72,
            88.73,
            -87.33,
            -103.9,
            -104.5,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::MAX,
            f32::MIN,
        ]);
        for simd in Simd::all() {
            let name = simd.name();
            // Odd lengths exercise the tails.
            for len in [xs.len(), 13, 1] {
                let src = &xs[xs.len() - len..];
                let mut got = src.to_vec();
                let sum = exp_shifted_sum_on(simd, &mut got, 0.0);
                let mut want_sum = 0f64;
                for (&x, &g) in src.iter().zip(&got) {
                    let want = x.exp();
                    want_sum += want as f64;
                    assert!(!g.is_nan(), "{name}: exp({x}) is NaN");
                    if want.is_infinite() || g.is_infinite() {
                        assert_eq!(g, want, "{name}: exp({x})");
                    } else if want >= f32::MIN_POSITIVE {
                        assert!(
                            ulps(g, want) <= 2,
                            "{name}: exp({x}) = {g}, std says {want}"
                        );
                    } else {
                        // Subnormal results: absolute error of a couple of the smallest steps.
                        assert!(
                            (g - want).abs() <= 4.0 * 1.4e-45,
                            "{name}: exp({x}) = {g} vs {want}"
                        );
                    }
                }
                if want_sum.is_finite() {
                    assert!(
                        ((sum as f64 - want_sum) / want_sum.max(1e-30)).abs() < 1e-5,
                        "{name}: sum {sum} vs {want_sum}"
                    );
                }
            }
        }
    }

    #[test]
    fn shift_large_negatives_and_nan() {
        for simd in Simd::all() {
            let name = simd.name();
            let mut v = vec![-1e30f32, -5000.0, 0.5, f32::NEG_INFINITY, 2.0];
            let sum = exp_shifted_sum_on(simd, &mut v, 2.0);
            assert_eq!(&v[..2], &[0.0, 0.0], "{name}");
            assert_eq!(v[3], 0.0, "{name}");
            assert_eq!(v[4], 1.0, "{name}: exp(0) is exact");
            assert!((v[2] - (-1.5f32).exp()).abs() < 1e-7, "{name}");
            assert!((sum - 1.0 - (-1.5f32).exp()).abs() < 1e-6, "{name}");
            let mut nan = vec![f32::NAN; 19];
            exp_shifted_sum_on(simd, &mut nan, 0.0);
            assert!(nan.iter().all(|v| v.is_nan()), "{name}: NaN propagates");
        }
    }

    #[test]
    fn max_matches_fold_for_any_length() {
        for simd in Simd::all() {
            let name = simd.name();
            assert_eq!(max_on(simd, &[]), f32::NEG_INFINITY, "{name}");
            for len in [1usize, 7, 16, 17, 33, 1000] {
                let xs: Vec<f32> = (0..len)
                    .map(|i| ((i * 7919) % 1013) as f32 * 0.37 - 100.0)
                    .collect();
                let want = xs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                assert_eq!(max_on(simd, &xs), want, "{name} len {len}");
                let mut with_nan = xs.clone();
                with_nan[len / 2] = f32::NAN;
                let want = with_nan.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                assert_eq!(max_on(simd, &with_nan), want, "{name} len {len} with NaN");
            }
        }
    }

    #[test]
    fn dispatched_kernels_agree_with_the_scalar_formula() {
        let mut xs: Vec<f32> = (0..1001).map(|i| -50.0 + i as f32 * 0.05).collect();
        let want: Vec<f32> = xs.iter().map(|&x| exp_scalar(x - 1.0)).collect();
        exp_shifted_sum(&mut xs, 1.0);
        for (g, w) in xs.iter().zip(&want) {
            assert!(ulps(*g, *w) <= 1, "{g} vs {w}");
        }
        assert_eq!(max(&[1.0, 3.0, -2.0]), 3.0);
    }
}
