//! Elementary functions shared by every tower.
//!
//! candle's fused `layer_norm` and `softmax_last_dim` kernels are fast but have no backward pass: a gradient
//! flowing through them is silently dropped. Each function here therefore picks the fused kernel only when no
//! input takes part in autograd (`track_op() == false`), and otherwise composes differentiable primitives. The
//! gradient-parity tests against open_clip prove the training path. On the CPU in f32, training and inference use
//! the single-node kernels of [`super::fused`] (forward and backward in one pass each) instead of both;
//! on CUDA it does so for LayerNorm, GELU and the attention softmax in f32 and bf16 when the `cuda` feature is
//! built and `COCA_CUDA_KERNELS=1` ([`fused::cuda_applies`]).

use candle_core::{DType, Result, Tensor, D};

use super::fused;

/// open_clip's LayerNorm epsilon.
pub const LAYER_NORM_EPS: f64 = 1e-5;

/// `true` when any tensor records its graph, i.e. a backward pass may run through this op.
fn any_tracks(ts: &[&Tensor]) -> bool {
    ts.iter().any(|t| t.track_op())
}

/// LayerNorm over the last dimension, computed in f32 whatever the input dtype (as open_clip's `LayerNormFp32`
/// does for half-precision weights), result cast back to the input dtype.
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    let dtype = x.dtype();
    // candle's kernel accumulates in f32 whatever the storage dtype, as LayerNormFp32 does.
    let cpu_fused = fused::applies(&[x, weight, bias]);
    if !cpu_fused
        && !any_tracks(&[x, weight, bias])
        && weight.dtype() == dtype
        && bias.dtype() == dtype
    {
        return candle_nn::ops::layer_norm(&x.contiguous()?, weight, bias, eps as f32);
    }
    if cpu_fused || fused::cuda_applies(&[x, weight, bias]) {
        return fused::layer_norm(x, weight, bias, eps);
    }
    let xf = x.to_dtype(DType::F32)?;
    let mean = xf.mean_keepdim(D::Minus1)?;
    let centered = xf.broadcast_sub(&mean)?;
    let var = centered.sqr()?.mean_keepdim(D::Minus1)?;
    let normed = centered.broadcast_div(&(var + eps)?.sqrt()?)?;
    let w = weight.to_dtype(DType::F32)?;
    let b = bias.to_dtype(DType::F32)?;
    normed.broadcast_mul(&w)?.broadcast_add(&b)?.to_dtype(dtype)
}

/// Softmax over the last dimension (computed in f32 for half-precision inputs).
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    let dtype = x.dtype();
    if !any_tracks(&[x]) {
        return candle_nn::ops::softmax_last_dim(&x.contiguous()?);
    }
    let xf = x.to_dtype(DType::F32)?;
    // The max only stabilises the exponent; it carries no gradient (softmax is shift-invariant).
    let max = xf.max_keepdim(D::Minus1)?.detach();
    let num = xf.broadcast_sub(&max)?.exp()?;
    let den = num.sum_keepdim(D::Minus1)?;
    num.broadcast_div(&den)?.to_dtype(dtype)
}

/// Attention probabilities `softmax(scale · scores + mask)` over the last dimension (`mask` additive,
/// broadcastable to `scores`).
pub fn attention_softmax(scores: &Tensor, scale: f64, mask: Option<&Tensor>) -> Result<Tensor> {
    let tracks = any_tracks(&[scores]);
    let cpu = fused::applies(&[scores]) && mask.is_none_or(|m| fused::applies(&[m]));
    let cuda = fused::cuda_applies(&[scores]) && mask.is_none_or(|m| fused::cuda_applies(&[m]));
    if tracks && (cpu || cuda) {
        return fused::scaled_masked_softmax(scores, scale, mask);
    }
    let mut scores = (scores * scale)?;
    if let Some(mask) = mask {
        scores = scores.broadcast_add(mask)?;
    }
    softmax_last_dim(&scores)
}

/// Log-softmax over the last dimension, in f32.
pub fn log_softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    let xf = x.to_dtype(DType::F32)?;
    let max = xf.max_keepdim(D::Minus1)?.detach();
    let shifted = xf.broadcast_sub(&max)?;
    let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    shifted.broadcast_sub(&lse)
}

/// Exact (erf) GELU, as `nn.GELU()`; differentiable in candle.
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    // On the CPU coca's vectorised kernel is faster than candle's scalar erf, with or without a gradient.
    if fused::applies(&[x]) || (any_tracks(&[x]) && fused::cuda_applies(&[x])) {
        return fused::gelu_erf(x);
    }
    x.gelu_erf()
}

/// QuickGELU `x·σ(1.702x)`, for configs with `quick_gelu: true`.
pub fn quick_gelu(x: &Tensor) -> Result<Tensor> {
    x.broadcast_mul(&candle_nn::ops::sigmoid(&(x * 1.702)?)?)
}

/// `F.normalize(x, dim=-1)`: divide by the L2 norm, clamped below at 1e-12.
pub fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let norm = x.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?.maximum(1e-12)?;
    x.broadcast_div(&norm)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// Largest absolute elementwise difference (shared by the kernel tests of this module tree).
    pub(crate) fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    #[test]
    fn fused_and_differentiable_layer_norm_agree() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 2.0, (3, 5, 16), &dev).unwrap();
        let w = Tensor::randn(1f32, 0.1, 16, &dev).unwrap();
        let b = Tensor::randn(0f32, 0.1, 16, &dev).unwrap();
        let fused = layer_norm(&x, &w, &b, LAYER_NORM_EPS).unwrap();
        let xv = Var::from_tensor(&x).unwrap();
        let slow = layer_norm(xv.as_tensor(), &w, &b, LAYER_NORM_EPS).unwrap();
        assert!(max_abs_diff(&fused, &slow) < 1e-5);
    }

    #[test]
    fn layer_norm_gradient_reaches_weights() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (4, 8), &dev).unwrap();
        let w = Var::ones(8, DType::F32, &dev).unwrap();
        let b = Var::zeros(8, DType::F32, &dev).unwrap();
        let y = layer_norm(&x, w.as_tensor(), b.as_tensor(), LAYER_NORM_EPS).unwrap();
        let loss = (y.sqr().unwrap().sum_all().unwrap() * 0.5).unwrap();
        let grads = loss.backward().unwrap();
        let gw = grads.get(w.as_tensor()).expect("weight gradient");
        // d/dw of 0.5·Σ(w·n + b)² at w=1, b=0 is Σ n², which is 4 per feature for unit-variance rows.
        let gw = gw.to_vec1::<f32>().unwrap();
        assert!(gw.iter().all(|g| g.abs() > 0.1), "{gw:?}");
        assert!(grads.get(b.as_tensor()).is_some());
    }

    #[test]
    fn softmax_paths_agree_and_differentiate() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 3.0, (2, 7), &dev).unwrap();
        let fused = softmax_last_dim(&x).unwrap();
        let xv = Var::from_tensor(&x).unwrap();
        let slow = softmax_last_dim(xv.as_tensor()).unwrap();
        assert!(max_abs_diff(&fused, &slow) < 1e-6);
        let target = Tensor::randn(0f32, 1.0, (2, 7), &dev).unwrap();
        let loss = (slow * target).unwrap().sum_all().unwrap();
        let grads = loss.backward().unwrap();
        let g = grads.get(xv.as_tensor()).expect("input gradient");
        // Softmax gradients sum to zero along the normalised axis.
        let row_sums = g.sum(1).unwrap().to_vec1::<f32>().unwrap();
        assert!(row_sums.iter().all(|s| s.abs() < 1e-5), "{row_sums:?}");
        assert!(
            g.abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
                > 1e-3
        );
    }

    #[test]
    fn l2_normalize_gives_unit_rows() {
        let x = Tensor::new(&[[3f32, 4.0], [0.0, 0.0]], &Device::Cpu).unwrap();
        let n = l2_normalize(&x).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(n[0], vec![0.6, 0.8]);
        assert_eq!(n[1], vec![0.0, 0.0]);
    }
}
