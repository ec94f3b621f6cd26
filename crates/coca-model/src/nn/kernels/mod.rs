//! coca's raw kernels: what [`super::ops`] chooses from. Nothing here decides when a kernel runs (beyond running
//! the CUDA version of a kernel for CUDA tensors); each function states the operands it accepts and fails outside
//! them.
//!
//! - Single-node CPU kernels with a backward pass (f32): [`add()`], [`linear()`], [`layer_norm()`], [`gelu_erf`],
//!   [`scaled_masked_softmax`], [`multi_head_attention`], [`cross_entropy_rows`] and the LM head's
//!   [`lm_head_cross_entropy_sum`]. candle's autograd records every elementary op, and its backward allocates a
//!   zero tensor and adds into it for every input of every node, so a LayerNorm composed of ten primitives costs
//!   tens of full passes over the activations in the backward. Each op here is one graph node whose forward and
//!   backward are single passes over raw slices, split over rayon's threads by rows. The backward kernels are
//!   themselves custom ops without a backward (second derivatives are out of scope, as in candle). Without a
//!   gradient candle records nothing and the backward state is dropped with the op.
//! - [`gemm512`]: the AVX-512 f32 GEMM under those kernels' products; [`vexp`]: the vectorised `exp`.
//! - [`cpu`]: which vector instructions this CPU runs (detected once), as tokens that the AVX-512 and AVX2 code
//!   takes, so that no safe call reaches it on a CPU without them.
//! - [`thin_matmul`]: products with at most [`thin_matmul::MAX_ROWS`] activation rows and no gradient (decoding).
//! - [`lowp`]: int8 and bf16 weights packed for the low-precision CPU kernels, and their reference product.
//! - [`chunked_lm_head`]: the LM head's loss from tensor ops in chunks, for devices without a kernel of their own.
//! - `cuda` (the `cuda` feature): CUDA forward and backward of LayerNorm, GELU (with the MLP's bias folded in)
//!   and the attention softmax, for f32 and bf16; the functions above run them for CUDA tensors.

pub mod add;
pub mod attention;
pub mod chunked_lm_head;
pub(crate) mod cpu;
pub mod cross_entropy;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod gelu;
pub mod gemm512;
pub mod layer_norm;
pub mod linear;
pub mod lm_head;
pub mod lowp;
pub mod softmax;
pub mod thin_matmul;
pub mod vexp;

pub use add::add;
pub use attention::{multi_head_attention, Projections};
pub use cross_entropy::cross_entropy_rows;
pub use gelu::{bias_gelu_erf, gelu_erf, gelu_erf_in_place};
pub use layer_norm::layer_norm;
pub use linear::linear;
pub use lm_head::lm_head_cross_entropy_sum;
pub use softmax::scaled_masked_softmax;

use std::mem::MaybeUninit;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, Layout, Result};

/// Elements per parallel task: enough work to amortise rayon's scheduling, small enough to balance two cores.
const ELEMS_PER_TASK: usize = 16 * 1024;

/// The f32 elements of a contiguous operand, or an error naming `op`.
fn f32_slice<'a>(storage: &'a CpuStorage, layout: &Layout, op: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(data) = storage else {
        candle_core::bail!("{op}: expected f32, got {:?}", storage.dtype());
    };
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("{op}: operand must be contiguous");
    };
    Ok(&data[start..end])
}

/// A vector of `len` values that `fill` writes, without zeroing them first: zeroing is a pass over memory on the
/// calling thread alone, while `fill` writes them once on every thread. `fill`'s error is returned as it is.
///
/// # Safety
/// When `fill` returns `Ok`, it must have written every one of the `len` slots it was given.
pub(crate) unsafe fn filled<E>(
    len: usize,
    fill: impl FnOnce(&mut [MaybeUninit<f32>]) -> std::result::Result<(), E>,
) -> std::result::Result<Vec<f32>, E> {
    let mut out = Vec::with_capacity(len);
    fill(&mut out.spare_capacity_mut()[..len])?;
    // SAFETY: `fill` returned Ok, so it wrote all `len` slots (this function's contract), which are the
    // vector's first `len` elements.
    unsafe { out.set_len(len) };
    Ok(out)
}

/// Rows per parallel task for rows of `width` elements (at least one).
fn rows_per_task(width: usize) -> usize {
    (ELEMS_PER_TASK / width.max(1)).max(1)
}

#[cfg(test)]
pub(crate) mod tests {
    use candle_core::{DType, Tensor, D};

    /// Deterministic values in [-1, 1) (a small LCG, so tests need no RNG crate and never flake).
    pub(crate) fn values(len: usize, seed: u64) -> Vec<f32> {
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..len)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// Fail unless `max |a − b| ≤ rel · max(|b|)` (relative to the reference's scale).
    pub(crate) fn assert_close(a: &Tensor, b: &Tensor, rel: f32) {
        assert_eq!(a.dims(), b.dims());
        let a = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let b = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
        let worst = a
            .iter()
            .zip(&b)
            .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(
            worst <= rel * scale,
            "max abs difference {worst:e} exceeds {rel:e} × {scale:e}"
        );
    }

    /// Gradients of `Σ y ∘ target` with respect to each of `vars`.
    pub(crate) fn grads_of(y: &Tensor, target: &Tensor, vars: &[&Tensor]) -> Vec<Tensor> {
        let loss = (y * target).unwrap().sum_all().unwrap();
        let grads = loss.backward().unwrap();
        vars.iter()
            .map(|v| grads.get(v).expect("gradient reaches the variable").clone())
            .collect()
    }

    /// LayerNorm from differentiable primitives (the reference the fused op must reproduce).
    pub(crate) fn composed_layer_norm(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Tensor {
        let mean = x.mean_keepdim(D::Minus1).unwrap();
        let centered = x.broadcast_sub(&mean).unwrap();
        let var = centered.sqr().unwrap().mean_keepdim(D::Minus1).unwrap();
        let normed = centered
            .broadcast_div(&(var + eps).unwrap().sqrt().unwrap())
            .unwrap();
        normed.broadcast_mul(w).unwrap().broadcast_add(b).unwrap()
    }

    /// Softmax from differentiable primitives.
    pub(crate) fn composed_softmax(x: &Tensor) -> Tensor {
        let x = x.to_dtype(DType::F32).unwrap();
        let max = x.max_keepdim(D::Minus1).unwrap().detach();
        let num = x.broadcast_sub(&max).unwrap().exp().unwrap();
        let den = num.sum_keepdim(D::Minus1).unwrap();
        num.broadcast_div(&den).unwrap()
    }
}
