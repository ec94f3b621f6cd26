//! The sum of two f32 tensors of one shape (the residual stream's `x + f(x)`) as one autograd node, split over
//! rayon's threads.
//!
//! candle runs its binary ops on a thread pool of its own beside rayon's, whose threads every other kernel of
//! this crate keeps busy or spinning; on a machine with few cores the two pools' threads take turns, and the
//! caller waits for a worker that is not scheduled. Summing on rayon's threads keeps one pool. The sum is the
//! same IEEE addition either way, so results are bit-identical to candle's.

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::{f32_slice, filled, ELEMS_PER_TASK};

/// `x + y` elementwise for f32 tensors of the same shape on the CPU; the gradient flows unchanged to both.
pub fn add(x: &Tensor, y: &Tensor) -> Result<Tensor> {
    if x.shape() != y.shape() {
        candle_core::bail!(
            "coca-add: operands of shapes {:?} and {:?}",
            x.shape(),
            y.shape()
        );
    }
    x.contiguous()?.apply_op2(&y.contiguous()?, Add)
}

struct Add;

impl CustomOp2 for Add {
    fn name(&self) -> &'static str {
        "coca-add"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s1, l1, self.name())?;
        let y = f32_slice(s2, l2, self.name())?;
        let n = x.len();
        if y.len() != n {
            candle_core::bail!("coca-add: operands of {n} and {} elements", y.len());
        }
        let fill = |slots: &mut [std::mem::MaybeUninit<f32>]| {
            slots
                .par_chunks_mut(ELEMS_PER_TASK)
                .zip(x.par_chunks(ELEMS_PER_TASK))
                .zip(y.par_chunks(ELEMS_PER_TASK))
                .for_each(|((o, x), y)| {
                    for ((o, a), b) in o.iter_mut().zip(x).zip(y) {
                        o.write(a + b);
                    }
                });
            Ok::<(), candle_core::Error>(())
        };
        // SAFETY: the chunks cover all n slots, and `x` and `y` (n values each, checked above) pair one value
        // with each, so `fill` writes every slot.
        let out = unsafe { filled(n, fill) }?;
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        _y: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        Ok((Some(grad.clone()), Some(grad.clone())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::kernels::tests::{grads_of, values};
    use candle_core::{Device, Var};

    #[test]
    fn sum_and_gradients_equal_candle_bit_for_bit() {
        let dev = Device::Cpu;
        // Several tasks' worth of elements plus a ragged tail.
        let (rows, cols) = (7_100, 7);
        let n = rows * cols;
        assert!(n > 3 * ELEMS_PER_TASK && n % ELEMS_PER_TASK != 0);
        let x = Var::from_vec(values(n, 1), (rows, cols), &dev).unwrap();
        let y = Var::from_vec(values(n, 2), x.shape(), &dev).unwrap();
        let ours = add(x.as_tensor(), y.as_tensor()).unwrap();
        let theirs = (x.as_tensor() + y.as_tensor()).unwrap();
        let a: Vec<f32> = ours.flatten_all().unwrap().to_vec1().unwrap();
        let b: Vec<f32> = theirs.flatten_all().unwrap().to_vec1().unwrap();
        assert!(a.iter().zip(&b).all(|(p, q)| p.to_bits() == q.to_bits()));

        let target = Tensor::from_vec(values(n, 3), x.shape(), &dev).unwrap();
        let g_ours = grads_of(&ours, &target, &[x.as_tensor(), y.as_tensor()]);
        let g_theirs = grads_of(&theirs, &target, &[x.as_tensor(), y.as_tensor()]);
        for (p, q) in g_ours.iter().zip(&g_theirs) {
            let p: Vec<f32> = p.flatten_all().unwrap().to_vec1().unwrap();
            let q: Vec<f32> = q.flatten_all().unwrap().to_vec1().unwrap();
            assert_eq!(p, q);
        }
    }

    #[test]
    fn operands_of_other_shapes_are_refused() {
        let x = Tensor::zeros((2, 3), candle_core::DType::F32, &Device::Cpu).unwrap();
        let y = Tensor::zeros((3, 2), candle_core::DType::F32, &Device::Cpu).unwrap();
        let err = add(&x, &y).unwrap_err().to_string();
        assert!(err.contains("coca-add: operands of shapes"), "{err}");
    }
}
