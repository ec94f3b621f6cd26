//! Attention's `softmax(scale · scores + mask)` over the last dimension as one autograd node. The backward,
//! `scale · y ∘ (dy − Σ dy ∘ y)`, needs only the output.

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::{f32_slice, rows_per_task};

/// An additive mask laid out per score row: row `r` of the scores adds `data[offsets[r]..][..width]`.
pub(super) struct MaskRows {
    pub(super) data: Vec<f32>,
    pub(super) offsets: Vec<usize>,
}

impl MaskRows {
    /// Index a mask broadcastable to `scores` (no broadcasting along the last dimension) by score row.
    pub(super) fn new(mask: &Tensor, scores: &[usize]) -> Result<Self> {
        let strides = mask_strides(mask.dims(), scores)?;
        let lead = &scores[..scores.len() - 1];
        let rows: usize = lead.iter().product();
        let mut offsets = Vec::with_capacity(rows);
        let mut index = vec![0usize; lead.len()];
        for _ in 0..rows {
            offsets.push(index.iter().zip(&strides).map(|(i, s)| i * s).sum());
            for d in (0..lead.len()).rev() {
                index[d] += 1;
                if index[d] < lead[d] {
                    break;
                }
                index[d] = 0;
            }
        }
        let data = mask.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        Ok(Self { data, offsets })
    }
}

/// The strides, per dimension of `scores`, of a contiguous mask of dims `mdims` broadcast to `scores` (0 along
/// broadcast dimensions); the mask may not broadcast along the last dimension (the keys).
pub(super) fn mask_strides(mdims: &[usize], scores: &[usize]) -> Result<Vec<usize>> {
    let width = *scores.last().unwrap_or(&0);
    if mdims.len() > scores.len() || mdims.last() != Some(&width) {
        candle_core::bail!(
            "softmax: mask {mdims:?} does not broadcast to scores {scores:?} along the keys"
        );
    }
    // Right-align the mask's dims with the scores' and give broadcast dims stride 0.
    let pad = scores.len() - mdims.len();
    let mut strides = vec![0usize; scores.len()];
    let mut stride = 1usize;
    for d in (0..mdims.len()).rev() {
        let (m, s) = (mdims[d], scores[d + pad]);
        if m != s && m != 1 {
            candle_core::bail!("softmax: mask {mdims:?} does not broadcast to scores {scores:?}");
        }
        strides[d + pad] = if m == 1 { 0 } else { stride };
        stride *= m;
    }
    Ok(strides)
}

/// `softmax(scale · scores + mask)` over the last dimension; `mask` (additive, −∞ = blocked) broadcasts to
/// `scores` except along the last dimension. Fully masked rows give zeros. f32 on the CPU; f32 or bf16 on CUDA with the `cuda` feature.
pub fn scaled_masked_softmax(scores: &Tensor, scale: f64, mask: Option<&Tensor>) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    {
        if scores.device().is_cuda() {
            return super::cuda::softmax::scaled_masked_softmax(scores, scale, mask);
        }
    }
    let mask = match mask {
        Some(m) => Some(Arc::new(MaskRows::new(m, scores.dims())?)),
        None => None,
    };
    scores.contiguous()?.apply_op1(ScaledMaskedSoftmax {
        scale: scale as f32,
        mask,
    })
}

struct ScaledMaskedSoftmax {
    scale: f32,
    mask: Option<Arc<MaskRows>>,
}

impl CustomOp1 for ScaledMaskedSoftmax {
    fn name(&self) -> &'static str {
        "coca-scaled-masked-softmax"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(storage, layout, self.name())?;
        let width = layout.dims().last().copied().unwrap_or(1).max(1);
        let mut out = vec![0f32; x.len()];
        let rows_per = rows_per_task(width);
        out.par_chunks_mut(rows_per * width)
            .zip(x.par_chunks(rows_per * width))
            .enumerate()
            .for_each(|(task, (out, x))| {
                for (i, (o, r)) in out
                    .chunks_exact_mut(width)
                    .zip(x.chunks_exact(width))
                    .enumerate()
                {
                    let row = task * rows_per + i;
                    match &self.mask {
                        Some(m) => {
                            let mrow = &m.data[m.offsets[row]..m.offsets[row] + width];
                            for ((o, &v), &mv) in o.iter_mut().zip(r).zip(mrow) {
                                *o = v * self.scale + mv;
                            }
                        }
                        None => {
                            for (o, &v) in o.iter_mut().zip(r) {
                                *o = v * self.scale;
                            }
                        }
                    }
                    let max = o.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    if max == f32::NEG_INFINITY {
                        o.fill(0.0);
                        continue;
                    }
                    let mut sum = 0f32;
                    for v in o.iter_mut() {
                        *v = (*v - max).exp();
                        sum += *v;
                    }
                    let inv = 1.0 / sum;
                    o.iter_mut().for_each(|v| *v *= inv);
                }
            });
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }

    fn bwd(&self, _arg: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let dx =
            res.apply_op2_no_bwd(&grad.contiguous()?, &SoftmaxBackward { scale: self.scale })?;
        Ok(Some(dx))
    }
}

/// `scale · y ∘ (dy − Σ dy ∘ y)` row by row; inputs `y` and `dy` (also the backward of the CUDA forward op).
pub(super) struct SoftmaxBackward {
    pub(super) scale: f32,
}

impl CustomOp2 for SoftmaxBackward {
    fn name(&self) -> &'static str {
        "coca-softmax-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let y = f32_slice(s1, l1, self.name())?;
        let g = f32_slice(s2, l2, self.name())?;
        let width = l1.dims().last().copied().unwrap_or(1).max(1);
        let mut out = vec![0f32; y.len()];
        let chunk = rows_per_task(width) * width;
        out.par_chunks_mut(chunk)
            .zip(y.par_chunks(chunk))
            .zip(g.par_chunks(chunk))
            .for_each(|((out, y), g)| {
                for ((o, y), g) in out
                    .chunks_exact_mut(width)
                    .zip(y.chunks_exact(width))
                    .zip(g.chunks_exact(width))
                {
                    let dot: f32 = y.iter().zip(g).map(|(y, g)| y * g).sum();
                    for ((o, &y), &g) in o.iter_mut().zip(y).zip(g) {
                        *o = self.scale * y * (g - dot);
                    }
                }
            });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        super::cuda::softmax::backward(self.scale, s1, l1, s2, l2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::kernels::tests::{assert_close, composed_softmax, grads_of};
    use candle_core::{Device, Var};

    fn check(shape: &[usize], mask: Option<Tensor>, transpose: bool) {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&Tensor::randn(0f32, 2.0, shape, &dev).unwrap()).unwrap();
        let xs = if transpose {
            x.as_tensor().transpose(0, 1).unwrap()
        } else {
            x.as_tensor().clone()
        };
        let scale = 0.37;
        let fused = scaled_masked_softmax(&xs, scale, mask.as_ref()).unwrap();
        let mut scaled = (&xs * scale).unwrap();
        if let Some(m) = &mask {
            scaled = scaled.broadcast_add(m).unwrap();
        }
        let reference = composed_softmax(&scaled);
        assert_close(&fused, &reference, 1e-5);
        let target = Tensor::randn(0f32, 1.0, xs.dims(), &dev).unwrap();
        let gf = grads_of(&fused, &target, &[x.as_tensor()]);
        let gr = grads_of(&reference, &target, &[x.as_tensor()]);
        assert_close(&gf[0], &gr[0], 1e-5);
    }

    #[test]
    fn unmasked_odd_shapes() {
        check(&[3, 2, 5, 11], None, false);
        check(&[7, 3, 13], None, true);
    }

    #[test]
    fn causal_and_per_batch_masks() {
        let dev = Device::Cpu;
        let causal = crate::nn::AttentionMask::causal(0, 9, &dev).unwrap().0;
        check(&[2, 3, 9, 9], Some(causal), false);
        // A per-batch mask broadcast over heads, as the text tower's legacy CLS mask.
        let ids = vec![vec![5u32, 6, 0, 0], vec![5, 6, 7, 8]];
        let m = crate::text::legacy_cls_mask(&ids, 0, 0, 5, &dev).unwrap();
        check(&[2, 3, 5, 5], Some(m), false);
    }

    #[test]
    fn fully_masked_rows_are_zero() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (2, 3), &dev).unwrap();
        let m = Tensor::new(&[f32::NEG_INFINITY; 3], &dev).unwrap();
        let y = scaled_masked_softmax(&x, 1.0, Some(&m)).unwrap();
        assert_eq!(y.to_vec2::<f32>().unwrap(), vec![vec![0.0; 3]; 2]);
    }
}
