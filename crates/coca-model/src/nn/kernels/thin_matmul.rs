//! Matrix products with only a few activation rows (decoding one token per caption) on the CPU.
//!
//! At batch 1 a decoding step multiplies a single row by every weight matrix, which is bound by how fast the
//! weights stream from memory. candle's GEMM packs the weight operand before every call, which costs as much as
//! the product itself at this shape. Here each weight row is read once, straight from its storage, and dotted with
//! all activation rows while it is in L1; rows of the weight are split over rayon's threads.

use candle_core::{CpuStorage, DType, Device, Result, Storage, Tensor};
use rayon::prelude::*;

use super::cpu::{simd, Simd};

/// Up to this many activation rows take the thin path; beyond it a packed GEMM wins.
pub const MAX_ROWS: usize = 8;

/// Weight rows per parallel task: large enough to amortise scheduling, small enough to balance two cores.
const ROWS_PER_TASK: usize = 64;

/// `x · Wᵀ` for `x` (rows ≤ [`MAX_ROWS`], k) and `W` (n, k) row-major; the operands must pass [`fits`].
pub fn thin_matmul_transposed(x: &Tensor, weight: &Tensor) -> Result<Tensor> {
    with_thin_operands(x, weight, 1, |xs, rows, k, w| {
        let n = w.len() / k;
        let simd = simd();
        // Computed as (n, rows) so each task owns a contiguous slice of the output, then transposed (tiny).
        let mut out_t = vec![0f32; n * rows];
        out_t
            .par_chunks_mut(ROWS_PER_TASK * rows)
            .zip(w.par_chunks(ROWS_PER_TASK * k))
            .for_each(|(out, w_block)| rows_kernel(simd, xs, rows, k, w_block, out));
        let mut out = vec![0f32; rows * n];
        for (j, chunk) in out_t.chunks_exact(rows).enumerate() {
            for (r, v) in chunk.iter().enumerate() {
                out[r * n + j] = *v;
            }
        }
        Ok((out, n))
    })
}

/// Whether the thin kernels take `x` (rows, k) times a 2-D `weight` with `k` along `k_axis` (1: `W` (n, k) of
/// [`thin_matmul_transposed`], 0: `P` (k, n) of [`thin_matmul`]): at most [`MAX_ROWS`] rows, `k > 0`, both f32 on
/// the CPU, the weight contiguous (it is read in place from its storage), and no gradient recorded (the result is
/// a plain tensor outside the autograd graph).
pub fn fits(x: &Tensor, weight: &Tensor, k_axis: usize) -> bool {
    let (Ok((rows, k)), Ok(w_dims)) = (x.dims2(), weight.dims2()) else {
        return false;
    };
    let w_k = if k_axis == 0 { w_dims.0 } else { w_dims.1 };
    rows <= MAX_ROWS
        && k > 0
        && w_k == k
        && matches!(x.device(), Device::Cpu)
        && matches!(weight.device(), Device::Cpu)
        && x.dtype() == DType::F32
        && weight.dtype() == DType::F32
        && weight.is_contiguous()
        && !x.track_op()
        && !weight.track_op()
}

/// Run `compute(x rows, rows, k, weight data)` on operands that pass [`fits`] (an error otherwise), reading the
/// weight in place from its storage. `compute` returns the (rows × n) result and `n`.
fn with_thin_operands(
    x: &Tensor,
    weight: &Tensor,
    k_axis: usize,
    compute: impl FnOnce(&[f32], usize, usize, &[f32]) -> Result<(Vec<f32>, usize)>,
) -> Result<Tensor> {
    if !fits(x, weight, k_axis) {
        candle_core::bail!(
            "thin matmul: operands {:?} and {:?} ({:?}, {:?}) do not fit the kernel",
            x.dims(),
            weight.dims(),
            x.dtype(),
            weight.dtype()
        );
    }
    let (rows, k) = x.dims2()?;
    let (storage, layout) = weight.storage_and_layout();
    let (Some((start, end)), Storage::Cpu(CpuStorage::F32(data))) =
        (layout.contiguous_offsets(), &*storage)
    else {
        candle_core::bail!("thin matmul: the weight must be a contiguous f32 CPU tensor");
    };
    let xs = x.flatten_all()?.to_vec1::<f32>()?;
    let (out, n) = compute(&xs, rows, k, &data[start..end])?;
    drop(storage);
    Tensor::from_vec(out, (rows, n), x.device())
}

/// `x · P` for `x` (rows ≤ [`MAX_ROWS`], k) and `P` (k, n) row-major (open_clip's bare projection matrices such
/// as the LM head); the operands must pass [`fits`].
pub fn thin_matmul(x: &Tensor, proj: &Tensor) -> Result<Tensor> {
    with_thin_operands(x, proj, 0, |xs, rows, k, p| {
        let n = p.len() / k;
        let simd = simd();
        // Each task owns a block of output columns and streams the matching slice of every row of P.
        const COLS_PER_TASK: usize = 1024;
        let blocks: Vec<Vec<f32>> = (0..n.div_ceil(COLS_PER_TASK))
            .into_par_iter()
            .map(|b| {
                let c0 = b * COLS_PER_TASK;
                let width = COLS_PER_TASK.min(n - c0);
                let mut acc = vec![0f32; rows * width];
                axpy_kernel(simd, xs, rows, k, &p[c0..], n, &mut acc);
                acc
            })
            .collect();
        let mut out = vec![0f32; rows * n];
        for (b, acc) in blocks.iter().enumerate() {
            let c0 = b * COLS_PER_TASK;
            let width = acc.len() / rows;
            for r in 0..rows {
                out[r * n + c0..r * n + c0 + width]
                    .copy_from_slice(&acc[r * width..(r + 1) * width]);
            }
        }
        Ok((out, n))
    })
}

/// `out[j·rows + r] = x[r] · w[j]` for every weight row `j` of the block, with the widest kernel of `simd`.
fn rows_kernel(simd: Simd, x: &[f32], rows: usize, k: usize, w: &[f32], out: &mut [f32]) {
    match simd {
        #[cfg(target_arch = "x86_64")]
        Simd::Avx512(_) => {
            #[target_feature(enable = "avx512f,fma")]
            fn inner(x: &[f32], rows: usize, k: usize, w: &[f32], out: &mut [f32]) {
                rows_generic::<true>(x, rows, k, w, out)
            }
            // SAFETY: the `Avx512` token proves that this CPU has AVX-512F and FMA.
            unsafe { inner(x, rows, k, w, out) }
        }
        #[cfg(target_arch = "x86_64")]
        Simd::Avx2(_) => {
            #[target_feature(enable = "avx2,fma")]
            fn inner(x: &[f32], rows: usize, k: usize, w: &[f32], out: &mut [f32]) {
                rows_generic::<true>(x, rows, k, w, out)
            }
            // SAFETY: the `Avx2Fma` token proves that this CPU has AVX2 and FMA.
            unsafe { inner(x, rows, k, w, out) }
        }
        _ => rows_generic::<false>(x, rows, k, w, out),
    }
}

/// `a·b + c`, fused where the caller's target features guarantee a hardware FMA (a software `fmaf` would be
/// far slower than the separate multiply and add).
#[inline(always)]
pub(crate) fn madd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// `out[j·rows + r] = x[r] · w[j]` for every weight row `j` of the block. Sixteen independent accumulators
/// let the compiler keep one vector register of partial sums (no reassociation needed).
#[inline(always)]
fn rows_generic<const FMA: bool>(x: &[f32], rows: usize, k: usize, w: &[f32], out: &mut [f32]) {
    const LANES: usize = 16;
    for (j, w_row) in w.chunks_exact(k).enumerate() {
        for r in 0..rows {
            let x_row = &x[r * k..(r + 1) * k];
            let mut acc = [0f32; LANES];
            let mut wc = w_row.chunks_exact(LANES);
            let mut xc = x_row.chunks_exact(LANES);
            for (a, b) in (&mut wc).zip(&mut xc) {
                for l in 0..LANES {
                    acc[l] = madd::<FMA>(a[l], b[l], acc[l]);
                }
            }
            let mut sum: f32 = acc.iter().sum();
            for (a, b) in wc.remainder().iter().zip(xc.remainder()) {
                sum = madd::<FMA>(*a, *b, sum);
            }
            out[j * rows + r] = sum;
        }
    }
}

/// The column-block product of [`thin_matmul`] (see [`axpy_generic`]) with the widest kernel of `simd`.
fn axpy_kernel(simd: Simd, x: &[f32], rows: usize, k: usize, p: &[f32], n: usize, acc: &mut [f32]) {
    match simd {
        #[cfg(target_arch = "x86_64")]
        Simd::Avx512(_) => {
            #[target_feature(enable = "avx512f,fma")]
            fn inner(x: &[f32], rows: usize, k: usize, p: &[f32], n: usize, acc: &mut [f32]) {
                axpy_generic::<true>(x, rows, k, p, n, acc)
            }
            // SAFETY: the `Avx512` token proves that this CPU has AVX-512F and FMA.
            unsafe { inner(x, rows, k, p, n, acc) }
        }
        #[cfg(target_arch = "x86_64")]
        Simd::Avx2(_) => {
            #[target_feature(enable = "avx2,fma")]
            fn inner(x: &[f32], rows: usize, k: usize, p: &[f32], n: usize, acc: &mut [f32]) {
                axpy_generic::<true>(x, rows, k, p, n, acc)
            }
            // SAFETY: the `Avx2Fma` token proves that this CPU has AVX2 and FMA.
            unsafe { inner(x, rows, k, p, n, acc) }
        }
        _ => axpy_generic::<false>(x, rows, k, p, n, acc),
    }
}

/// `acc[r] += Σ_k x[r][k] · p[k][0..width]`: each row slice of P is streamed once for all activation rows.
#[inline(always)]
fn axpy_generic<const FMA: bool>(
    x: &[f32],
    rows: usize,
    k: usize,
    p: &[f32],
    n: usize,
    acc: &mut [f32],
) {
    let width = acc.len() / rows;
    for kk in 0..k {
        let p_row = &p[kk * n..kk * n + width];
        for r in 0..rows {
            let scale = x[r * k + kk];
            for (a, v) in acc[r * width..(r + 1) * width].iter_mut().zip(p_row) {
                *a = madd::<FMA>(*v, scale, *a);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::ops::tests::max_abs_diff;
    use candle_core::Var;

    #[test]
    fn matches_candle_matmul_for_thin_inputs() {
        let dev = Device::Cpu;
        for (rows, k, n) in [(1, 512, 1536), (3, 77, 130), (8, 33, 7), (2, 16, 64)] {
            let x = Tensor::randn(0f32, 1.0, (rows, k), &dev).unwrap();
            let w = Tensor::randn(0f32, 0.1, (n, k), &dev).unwrap();
            let fast = thin_matmul_transposed(&x, &w).unwrap();
            let reference = x.matmul(&w.t().unwrap()).unwrap();
            let diff = max_abs_diff(&fast, &reference);
            assert!(diff < 1e-4, "rows {rows} k {k} n {n}: {diff}");
        }
    }

    #[test]
    fn projection_form_matches_candle_matmul() {
        let dev = Device::Cpu;
        for (rows, k, n) in [(1, 64, 3000), (5, 17, 1025), (8, 32, 16)] {
            let x = Tensor::randn(0f32, 1.0, (rows, k), &dev).unwrap();
            let p = Tensor::randn(0f32, 0.1, (k, n), &dev).unwrap();
            let fast = thin_matmul(&x, &p).unwrap();
            let reference = x.matmul(&p).unwrap();
            let diff = max_abs_diff(&fast, &reference);
            assert!(diff < 1e-4, "rows {rows} k {k} n {n}: {diff}");
        }
    }

    #[test]
    fn narrowed_weight_rows_are_read_at_their_offset() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (2, 24), &dev).unwrap();
        let w = Tensor::randn(0f32, 1.0, (30, 24), &dev).unwrap();
        let part = w.narrow(0, 10, 12).unwrap();
        let fast = thin_matmul_transposed(&x, &part).unwrap();
        let reference = x.matmul(&part.t().unwrap()).unwrap();
        let diff = (fast - reference)
            .unwrap()
            .abs()
            .unwrap()
            .sum_all()
            .unwrap();
        assert!(diff.to_scalar::<f32>().unwrap() < 1e-3);
    }

    #[test]
    fn refuses_operands_outside_its_contract() {
        let dev = Device::Cpu;
        let w = Var::from_tensor(&Tensor::randn(0f32, 1.0, (4, 8), &dev).unwrap()).unwrap();
        let x = Tensor::randn(0f32, 1.0, (1, 8), &dev).unwrap();
        let plain = Tensor::randn(0f32, 1.0, (4, 8), &dev).unwrap();
        let many = Tensor::randn(0f32, 1.0, (MAX_ROWS + 1, 8), &dev).unwrap();
        let transposed = Tensor::randn(0f32, 1.0, (8, 4), &dev).unwrap().t().unwrap();
        let half = plain.to_dtype(DType::BF16).unwrap();
        for (x, w, why) in [
            (&x, w.as_tensor(), "gradient recorded"),
            (&many, &plain, "too many rows"),
            (&x, &transposed, "weight not contiguous"),
            (&x, &half, "bf16 weight"),
        ] {
            assert!(!fits(x, w, 1), "{why}");
            let err = thin_matmul_transposed(x, w).unwrap_err().to_string();
            assert!(err.contains("do not fit the kernel"), "{why}: {err}");
        }
        assert!(fits(&x, &plain, 1));
        assert!(!fits(&x, &plain, 0), "k along the wrong axis");
    }
}
