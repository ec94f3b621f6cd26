//! Per-row cross-entropy `logsumexp(z) − z[label]` as one autograd node: the caption loss over (tokens × vocab)
//! logits is the widest tensor of a CoCa step, and the composed log-softmax makes several full passes over it in
//! each direction. The backward `dy · (softmax(z) − onehot(label))` recomputes the softmax from the logits.

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::{f32_slice, rows_per_task};

/// The negative log-likelihood of `labels[r]` under `softmax(logits[r])` for each row of `logits` (rows, classes):
/// shape (rows,). f32 on the CPU only.
pub fn cross_entropy_rows(logits: &Tensor, labels: &[u32]) -> Result<Tensor> {
    let (rows, classes) = logits.dims2()?;
    if labels.len() != rows {
        candle_core::bail!("cross entropy: {} labels for {rows} rows", labels.len());
    }
    if let Some(bad) = labels.iter().find(|&&l| l as usize >= classes) {
        candle_core::bail!("cross entropy: label {bad} out of range for {classes} classes");
    }
    logits.contiguous()?.apply_op1(CrossEntropyRows {
        labels: Arc::new(labels.to_vec()),
    })
}

/// Max and log Σ exp(z − max) of one row.
#[inline]
fn row_logsumexp(z: &[f32]) -> (f32, f32) {
    let max = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = z.iter().map(|v| (v - max).exp()).sum();
    (max, sum.ln())
}

struct CrossEntropyRows {
    labels: Arc<Vec<u32>>,
}

impl CustomOp1 for CrossEntropyRows {
    fn name(&self) -> &'static str {
        "coca-cross-entropy-rows"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let z = f32_slice(storage, layout, self.name())?;
        let classes = layout.dims()[1].max(1);
        let out: Vec<f32> = z
            .par_chunks_exact(classes)
            .zip(self.labels.par_iter())
            .map(|(row, &label)| {
                let (max, lse) = row_logsumexp(row);
                max + lse - row[label as usize]
            })
            .collect();
        let rows = out.len();
        Ok((CpuStorage::F32(out), Shape::from(rows)))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let dz = arg.apply_op2_no_bwd(
            &grad.contiguous()?,
            &CrossEntropyBackward {
                labels: self.labels.clone(),
            },
        )?;
        Ok(Some(dz))
    }
}

/// `dy[r] · (softmax(z[r]) − onehot(label[r]))`; inputs `z` (rows, classes) and `dy` (rows,).
struct CrossEntropyBackward {
    labels: Arc<Vec<u32>>,
}

impl CustomOp2 for CrossEntropyBackward {
    fn name(&self) -> &'static str {
        "coca-cross-entropy-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let z = f32_slice(s1, l1, self.name())?;
        let dy = f32_slice(s2, l2, self.name())?;
        let classes = l1.dims()[1].max(1);
        let mut out = vec![0f32; z.len()];
        let rows_per = rows_per_task(classes);
        out.par_chunks_mut(rows_per * classes)
            .zip(z.par_chunks(rows_per * classes))
            .enumerate()
            .for_each(|(task, (out, z))| {
                for (i, (o, row)) in out
                    .chunks_exact_mut(classes)
                    .zip(z.chunks_exact(classes))
                    .enumerate()
                {
                    let r = task * rows_per + i;
                    let (max, lse) = row_logsumexp(row);
                    let shift = max + lse;
                    let g = dy[r];
                    for (o, &v) in o.iter_mut().zip(row) {
                        *o = g * (v - shift).exp();
                    }
                    o[self.labels[r] as usize] -= g;
                }
            });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::kernels::tests::{assert_close, grads_of};
    use crate::nn::ops::log_softmax_last_dim;
    use candle_core::{Device, Var, D};

    #[test]
    fn loss_and_gradient_match_composed_log_softmax() {
        let dev = Device::Cpu;
        let z = Var::from_tensor(&Tensor::randn(0f32, 3.0, (13, 1037), &dev).unwrap()).unwrap();
        let labels: Vec<u32> = (0..13).map(|i| (i * 97 + 5) % 1037).collect();
        let fused = cross_entropy_rows(z.as_tensor(), &labels).unwrap();
        let idx = Tensor::new(labels.as_slice(), &dev)
            .unwrap()
            .unsqueeze(1)
            .unwrap();
        let reference = log_softmax_last_dim(z.as_tensor())
            .unwrap()
            .gather(&idx, D::Minus1)
            .unwrap()
            .squeeze(1)
            .unwrap()
            .neg()
            .unwrap();
        assert_close(&fused, &reference, 1e-5);
        let w = Tensor::randn(0f32, 1.0, 13, &dev).unwrap();
        let gf = grads_of(&fused, &w, &[z.as_tensor()]);
        let gr = grads_of(&reference, &w, &[z.as_tensor()]);
        assert_close(&gf[0], &gr[0], 1e-5);
    }

    #[test]
    fn labels_are_checked() {
        let z = Tensor::zeros((2, 4), candle_core::DType::F32, &Device::Cpu).unwrap();
        assert!(cross_entropy_rows(&z, &[0]).is_err());
        let err = cross_entropy_rows(&z, &[0, 4]).unwrap_err().to_string();
        assert!(err.contains("label 4 out of range"), "{err}");
    }
}
