//! Fused CPU kernels with a backward pass: the training path, and CPU inference in f32.
//!
//! candle's autograd records every elementary op, and its backward allocates a zero tensor and adds into it for
//! every input of every node. A LayerNorm composed of ten primitives therefore costs tens of full passes over the
//! activations in the backward. Each op here is one graph node whose forward and backward are single passes over
//! raw slices, split over rayon's threads by rows. The backward kernels are themselves custom ops without a
//! backward (second derivatives are out of scope, as in candle).
//!
//! The kernels run for f32 tensors on the CPU, with or without a gradient (without one, candle records nothing and
//! the backward state is dropped with the op); callers check [`applies`] and otherwise use composed candle ops.
//! With the `cuda` feature, LayerNorm, GELU and the attention softmax also have CUDA kernels (the `cuda` module) for f32
//! and bf16 tensors, which the call sites use where [`cuda_applies`] (opt-in: `COCA_CUDA_KERNELS=1`).

pub mod attention;
pub mod cross_entropy;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod gelu;
pub mod gemm512;
pub mod layer_norm;
pub mod linear;
pub mod lm_head;
pub mod softmax;
pub mod vexp;

pub use attention::{multi_head_attention, Projections};
pub use cross_entropy::cross_entropy_rows;
pub use gelu::{bias_gelu_erf, gelu_erf};
pub use layer_norm::layer_norm;
pub use linear::linear;
pub use lm_head::{lm_head_cross_entropy, lm_head_cross_entropy_sum};
pub use softmax::scaled_masked_softmax;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, DType, Device, Layout, Result, Tensor};

/// Elements per parallel task: enough work to amortise rayon's scheduling, small enough to balance two cores.
const ELEMS_PER_TASK: usize = 16 * 1024;

/// `true` when the fused kernels can run on all of `ts`: f32 tensors on the CPU, unless `COCA_FUSED=0`.
pub fn applies(ts: &[&Tensor]) -> bool {
    enabled()
        && ts
            .iter()
            .all(|t| t.dtype() == DType::F32 && matches!(t.device(), Device::Cpu))
}

/// `true` when coca's CUDA kernels of [`layer_norm()`], [`gelu_erf`], [`bias_gelu_erf`] and
/// [`scaled_masked_softmax`] can run on all of `ts`: built with the `cuda` feature, `COCA_CUDA_KERNELS=1`, every
/// tensor f32 or bf16 on a CUDA device.
/// Off by default until the kernels have passed their GPU tests on the card in use (`tests/cuda_kernels.rs`).
pub fn cuda_applies(ts: &[&Tensor]) -> bool {
    #[cfg(feature = "cuda")]
    {
        cuda::applies(ts)
    }
    #[cfg(not(feature = "cuda"))]
    {
        let _ = ts;
        false
    }
}

/// `COCA_FUSED=0` turns the fused kernels off, so the composed ops that other devices run can be measured and
/// tested on the CPU; [`with_composed_ops`] does the same for one call.
fn enabled() -> bool {
    static ENABLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    !COMPOSED_ONLY.with(std::cell::Cell::get)
        && *ENABLED.get_or_init(|| std::env::var("COCA_FUSED").map_or(true, |v| v != "0"))
}

thread_local! {
    static COMPOSED_ONLY: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Run `f` with the CPU kernels of this module off on the calling thread, so that the models inside it take
/// candle's composed ops: the path of CUDA (without `COCA_CUDA_KERNELS`) and of half precision. Lets the parity
/// tests hold that path to open_clip on the CPU as well. The choice is made per op on the calling thread, so the
/// kernels' own worker threads need no flag.
pub fn with_composed_ops<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            COMPOSED_ONLY.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(COMPOSED_ONLY.with(|c| c.replace(true)));
    f()
}

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

    #[test]
    fn composed_ops_are_chosen_only_inside_the_scope_and_after_a_panic_in_it() {
        let x = Tensor::zeros(4, DType::F32, &candle_core::Device::Cpu).unwrap();
        let default = super::applies(&[&x]);
        super::with_composed_ops(|| {
            assert!(!super::applies(&[&x]));
            // Nested scopes keep it off until the outermost ends.
            super::with_composed_ops(|| assert!(!super::applies(&[&x])));
            assert!(!super::applies(&[&x]));
        });
        assert_eq!(super::applies(&[&x]), default);
        let caught = std::panic::catch_unwind(|| super::with_composed_ops(|| panic!("inside")));
        assert!(caught.is_err());
        assert_eq!(super::applies(&[&x]), default);
        // Other threads are not affected.
        super::with_composed_ops(|| {
            let elsewhere =
                std::thread::scope(|s| s.spawn(|| super::applies(&[&x])).join().unwrap());
            assert_eq!(elsewhere, default);
        });
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
