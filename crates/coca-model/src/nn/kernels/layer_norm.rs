//! LayerNorm over the last dimension as one autograd node: the backward gives the input, gain and bias gradients
//! in one pass (statistics recomputed from the input rather than stored).

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::{f32_slice, filled, rows_per_task};

/// `(x − mean) / sqrt(var + eps) · weight + bias` over the last dimension of `x`; `weight`, `bias`: (width,).
/// f32 on the CPU; on CUDA with the `cuda` feature, `x` f32 or bf16 and the result in `x`'s dtype, the statistics
/// and the parameters in f32. `x` may have any layout.
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    let width = x.dim(candle_core::D::Minus1)?;
    if weight.dims() != [width] || bias.dims() != [width] {
        candle_core::bail!(
            "layer norm: weight {:?} and bias {:?} must be ({width},)",
            weight.dims(),
            bias.dims()
        );
    }
    // The kernels take f32 parameters (a no-op on the CPU, where everything is f32): bf16 mixed precision keeps
    // LayerNorm's parameters in f32 anyway, and other dtypes get their gradient cast back by autograd.
    x.contiguous()?.apply_op3(
        &weight.to_dtype(candle_core::DType::F32)?.contiguous()?,
        &bias.to_dtype(candle_core::DType::F32)?.contiguous()?,
        LayerNorm { eps: eps as f32 },
    )
}

/// Mean and 1/std of one row (two passes: the centred variance stays accurate for large means).
#[inline]
fn row_stats(row: &[f32], eps: f32) -> (f32, f32) {
    let n = row.len() as f32;
    let mean = row.iter().sum::<f32>() / n;
    let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
    (mean, 1.0 / (var + eps).sqrt())
}

struct LayerNorm {
    eps: f32,
}

impl CustomOp3 for LayerNorm {
    fn name(&self) -> &'static str {
        "coca-layer-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s1, l1, self.name())?;
        let w = f32_slice(s2, l2, self.name())?;
        let b = f32_slice(s3, l3, self.name())?;
        let width = w.len();
        if width == 0 || x.len() % width != 0 || b.len() != width {
            candle_core::bail!(
                "{}: {} values are not rows of the {width} weights and {} biases",
                self.name(),
                x.len(),
                b.len()
            );
        }
        let chunk = rows_per_task(width) * width;
        let fill = |slots: &mut [std::mem::MaybeUninit<f32>]| {
            slots
                .par_chunks_mut(chunk)
                .zip(x.par_chunks(chunk))
                .for_each(|(out, x)| {
                    for (o, r) in out.chunks_exact_mut(width).zip(x.chunks_exact(width)) {
                        let (mean, rstd) = row_stats(r, self.eps);
                        for (((o, &v), &w), &b) in o.iter_mut().zip(r).zip(w).zip(b) {
                            o.write((v - mean) * rstd * w + b);
                        }
                    }
                });
            Ok::<(), candle_core::Error>(())
        };
        // SAFETY: `x` is whole rows of `width` (checked above) and the weight and bias are `width` long, so the
        // chunks, rows and elements above pair a value with every one of the `x.len()` slots.
        let out = unsafe { filled(x.len(), fill) }?;
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
        s3: &candle_core::CudaStorage,
        l3: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        super::cuda::layer_norm::forward(self.eps, s1, l1, s2, l2, s3, l3)
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        _bias: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        #[cfg(feature = "cuda")]
        {
            if x.device().is_cuda() {
                let (dx, dw, db) = super::cuda::layer_norm::backward(x, weight, grad, self.eps)?;
                return Ok((Some(dx), Some(dw), Some(db)));
            }
        }
        let width = weight.dim(0)?;
        let rows = x.elem_count() / width.max(1);
        // One kernel computes all three gradients, packed as (rows + 2, width): dx, then dweight, then dbias.
        let packed = x.apply_op3_no_bwd(
            weight,
            &grad.contiguous()?,
            &LayerNormBackward { eps: self.eps },
        )?;
        let dx = packed.narrow(0, 0, rows)?.reshape(x.shape())?;
        let dw = packed.get(rows)?;
        let db = packed.get(rows + 1)?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

/// The backward kernel: inputs `x`, `weight`, `grad`; output (rows + 2, width) = [dx; dweight; dbias].
struct LayerNormBackward {
    eps: f32,
}

impl CustomOp3 for LayerNormBackward {
    fn name(&self) -> &'static str {
        "coca-layer-norm-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s1, l1, self.name())?;
        let w = f32_slice(s2, l2, self.name())?;
        let g = f32_slice(s3, l3, self.name())?;
        let width = w.len();
        let rows = x.len() / width.max(1);
        let mut out = vec![0f32; (rows + 2) * width];
        let (dx, params) = out.split_at_mut(rows * width);
        let chunk = rows_per_task(width) * width;
        let zero = || vec![0f32; 2 * width];
        // Each task returns its rows' contribution to [dweight, dbias]; the partial sums are added at the end, in
        // task order (rayon's `reduce` would combine them in an order that depends on work stealing, and the
        // rounding with it, so two identical runs would drift apart).
        let partials: Vec<Vec<f32>> = dx
            .par_chunks_mut(chunk)
            .zip(x.par_chunks(chunk))
            .zip(g.par_chunks(chunk))
            .map(|((dx, x), g)| {
                let mut acc = zero();
                let (dw, db) = acc.split_at_mut(width);
                for ((dx, r), g) in dx
                    .chunks_exact_mut(width)
                    .zip(x.chunks_exact(width))
                    .zip(g.chunks_exact(width))
                {
                    let (mean, rstd) = row_stats(r, self.eps);
                    let (mut m1, mut m2) = (0f32, 0f32);
                    for i in 0..width {
                        let xhat = (r[i] - mean) * rstd;
                        let dxhat = g[i] * w[i];
                        m1 += dxhat;
                        m2 += dxhat * xhat;
                        dw[i] += g[i] * xhat;
                        db[i] += g[i];
                    }
                    let n = width as f32;
                    let (m1, m2) = (m1 / n, m2 / n);
                    for i in 0..width {
                        let xhat = (r[i] - mean) * rstd;
                        dx[i] = rstd * (g[i] * w[i] - m1 - xhat * m2);
                    }
                }
                acc
            })
            .collect();
        let sums = partials.iter().fold(zero(), |mut a, b| {
            a.iter_mut().zip(b).for_each(|(a, b)| *a += b);
            a
        });
        params.copy_from_slice(&sums);
        Ok((CpuStorage::F32(out), Shape::from((rows + 2, width))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::kernels::tests::{assert_close, composed_layer_norm, grads_of, values};
    use candle_core::{Device, Var};

    #[test]
    fn forward_and_gradients_match_the_composed_op() {
        let dev = Device::Cpu;
        // Odd width, several leading dims, and a transposed (non-contiguous) input. Fixed values: rows of width
        // 3 drawn at random can come out nearly constant, whose tiny variance amplifies rounding past 1e-5.
        let x = Tensor::from_vec(values(3 * 37 * 5, 7), (3, 37, 5), &dev).unwrap();
        let x = Var::from_tensor(&((x * 3.4).unwrap() + 0.5).unwrap()).unwrap();
        let w = Var::from_tensor(&Tensor::randn(1f32, 0.3, 3, &dev).unwrap()).unwrap();
        let b = Var::from_tensor(&Tensor::randn(0f32, 0.3, 3, &dev).unwrap()).unwrap();
        let xt = x.as_tensor().transpose(0, 2).unwrap(); // (5, 37, 3), non-contiguous
        let target = Tensor::randn(0f32, 1.0, (5, 37, 3), &dev).unwrap();
        let vars = [x.as_tensor(), w.as_tensor(), b.as_tensor()];
        let fused = layer_norm(&xt, w.as_tensor(), b.as_tensor(), 1e-5).unwrap();
        let reference = composed_layer_norm(&xt, w.as_tensor(), b.as_tensor(), 1e-5);
        assert_close(&fused, &reference, 1e-5);
        let gf = grads_of(&fused, &target, &vars);
        let gr = grads_of(&reference, &target, &vars);
        for (f, r) in gf.iter().zip(&gr) {
            assert_close(f, r, 1e-5);
        }
    }

    #[test]
    fn wide_rows_over_many_tasks() {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (301, 257), &dev).unwrap()).unwrap();
        let w = Var::from_tensor(&Tensor::randn(1f32, 0.3, 257, &dev).unwrap()).unwrap();
        let b = Var::from_tensor(&Tensor::randn(0f32, 0.3, 257, &dev).unwrap()).unwrap();
        let target = Tensor::randn(0f32, 1.0, (301, 257), &dev).unwrap();
        let vars = [x.as_tensor(), w.as_tensor(), b.as_tensor()];
        let fused = layer_norm(x.as_tensor(), w.as_tensor(), b.as_tensor(), 1e-5).unwrap();
        let reference = composed_layer_norm(x.as_tensor(), w.as_tensor(), b.as_tensor(), 1e-5);
        assert_close(&fused, &reference, 1e-5);
        for (f, r) in grads_of(&fused, &target, &vars)
            .iter()
            .zip(&grads_of(&reference, &target, &vars))
        {
            assert_close(f, r, 1e-5);
        }
    }
}
