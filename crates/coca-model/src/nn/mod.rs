//! Transformer building blocks with open_clip's parameter names and semantics.
//!
//! The layers ([`layers`], [`attention`], [`block`]) compute through [`ops`], the one module that chooses
//! between coca's kernels and candle's composed ops; the kernels themselves live in a private folder
//! (`nn/kernels/`).

pub mod attention;
pub mod block;
pub(crate) mod kernels;
pub mod layers;
pub mod ops;

pub(crate) use attention::LayerCache;
pub use attention::{AttentionMask, MultiheadAttention};
pub use block::{AllAtOnce, BlockRunner, ResidualAttentionBlock, Transformer};
pub use layers::{Activation, LayerNorm, Linear, Mlp, WeightKind};

/// Raw kernels for the code outside this crate that must call one directly, bypassing [`ops`]'s choice. Model
/// code never uses this module.
///
/// - [`raw_kernels::gemm512`]: `examples/gemm_bench.rs` measures it against the `gemm` crate on the shapes
///   the kernels give it.
/// - [`raw_kernels::lowp`]: the packed low-precision weights, their reference products and (on x86-64) the
///   AMX and AVX-512 kernels, which `examples/kernel_peaks.rs` measures against the f32 kernels.
/// - With the `cuda` feature, LayerNorm, GELU (with and without the MLP's bias) and the attention softmax:
///   `tests/cuda_kernels.rs` runs each on a GPU whatever `COCA_CUDA_KERNELS` says, against the same function on
///   the CPU, which is the point of those tests and something [`ops`] by design never does.
pub mod raw_kernels {
    pub use super::kernels::gemm512;
    pub use super::kernels::lowp;
    #[cfg(feature = "cuda")]
    pub use super::kernels::{bias_gelu_erf, gelu_erf, layer_norm, scaled_masked_softmax};
}
