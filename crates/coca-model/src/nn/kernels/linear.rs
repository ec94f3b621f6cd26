//! `x·Wᵀ + b` as one autograd node. Composed, a linear layer is five nodes (reshape, transpose, matmul,
//! broadcast, add), and candle's backward makes a zero tensor plus an addition for each of their inputs; here the
//! bias is the GEMM's initial accumulator and the backward is two GEMMs and a column sum.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};

use super::f32_slice;
use super::gemm512::{self, Parallelism};

/// `x·Wᵀ (+ b)` for `x` (rows, in), `weight` (out, in), `bias` (out,). f32 on the CPU only.
pub fn linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let (_, in_dim) = x.dims2()?;
    let (out_dim, w_in) = weight.dims2()?;
    if w_in != in_dim || bias.is_some_and(|b| b.dims() != [out_dim]) {
        candle_core::bail!(
            "linear: input {:?}, weight {:?} and bias {:?} do not fit",
            x.dims(),
            weight.dims(),
            bias.map(|b| b.dims().to_vec())
        );
    }
    let (x, weight) = (x.contiguous()?, weight.contiguous()?);
    match bias {
        Some(b) => x.apply_op3(&weight, &b.contiguous()?, Linear),
        None => x.apply_op2(&weight, Linear),
    }
}

/// `dst = x·Wᵀ (+ bias broadcast over rows)`; `x` (rows, k), `w` (n, k), both row-major.
fn forward(x: &[f32], w: &[f32], bias: Option<&[f32]>, k: usize) -> (Vec<f32>, usize, usize) {
    let n = w.len() / k.max(1);
    let rows = x.len() / k.max(1);
    let mut dst = match bias {
        Some(b) => b.repeat(rows),
        None => vec![0f32; rows * n],
    };
    // Wᵀ as a (k, n) matrix: element (kk, j) is w[j·k + kk].
    product(&mut dst, bias.is_some(), (rows, n, k), (x, k, 1), (w, 1, k));
    (dst, rows, n)
}

/// `dst (+)= lhs · rhs` for a row-major (m × n) `dst`; each operand is (data, row stride, column stride).
fn product(
    dst: &mut [f32],
    accumulate: bool,
    (m, n, k): (usize, usize, usize),
    lhs: (&[f32], usize, usize),
    rhs: (&[f32], usize, usize),
) {
    // Internal invariants (callers derive the sizes from the operands): a failure is a bug, not bad input.
    let fits = |(data, rs, cs): (&[f32], usize, usize), rows: usize, cols: usize| {
        rows == 0 || cols == 0 || (rows - 1) * rs + (cols - 1) * cs < data.len()
    };
    assert!(dst.len() == m * n && fits(lhs, m, k) && fits(rhs, k, n));
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    let threads = candle_core::utils::get_num_threads();
    let parallelism = if threads > 1 {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    };
    // SAFETY: the assert above keeps every element the product touches inside the slices; `dst` is a unique
    // borrow, so it does not alias the operands.
    unsafe {
        gemm512::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            lhs.0.as_ptr(),
            lhs.2 as isize,
            lhs.1 as isize,
            rhs.0.as_ptr(),
            rhs.2 as isize,
            rhs.1 as isize,
            1.0,
            1.0,
            parallelism,
        );
    }
}

/// Gradients of `x·Wᵀ + b`: `dx = g·W`, `dW = gᵀ·x`, `db = Σ_rows g` (computed without recording a graph).
/// `dx` is `None` when `x` records no gradient (the patch embedding's pixels): nothing would read it.
fn backward(
    x: &Tensor,
    weight: &Tensor,
    grad: &Tensor,
) -> Result<(Option<Tensor>, Tensor, Tensor)> {
    let (x_tracks, x) = (x.track_op(), x.detach().contiguous()?);
    let weight = weight.detach().contiguous()?;
    let grad = grad.detach().contiguous()?;
    let dx = if x_tracks {
        Some(grad.apply_op2_no_bwd(&weight, &GradProduct::Input)?)
    } else {
        None
    };
    let dw = grad.apply_op2_no_bwd(&x, &GradProduct::Weight)?;
    // candle's reduction over rows walks the matrix column by column; summing whole rows is one streaming pass.
    let db = grad.apply_op1_no_bwd(&ColumnSum)?;
    Ok((dx, dw, db))
}

/// The backward's products from the upstream gradient `g` (rows, n) and a second row-major operand.
enum GradProduct {
    /// `dx = g·W` with `W` (n, k).
    Input,
    /// `dW = gᵀ·x` with `x` (rows, k).
    Weight,
}

impl CustomOp2 for GradProduct {
    fn name(&self) -> &'static str {
        match self {
            GradProduct::Input => "coca-linear-grad-input",
            GradProduct::Weight => "coca-linear-grad-weight",
        }
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = f32_slice(s1, l1, self.name())?;
        let other = f32_slice(s2, l2, self.name())?;
        let (&[rows, n], &[o_rows, k]) = (l1.dims(), l2.dims()) else {
            candle_core::bail!("{}: expected matrices", self.name());
        };
        let shared = match self {
            GradProduct::Input => n,
            GradProduct::Weight => rows,
        };
        if o_rows != shared {
            candle_core::bail!(
                "{}: gradient {:?} does not fit operand {:?}",
                self.name(),
                l1.dims(),
                l2.dims()
            );
        }
        let (m, lhs) = match self {
            GradProduct::Input => (rows, (g, n, 1)),
            // gᵀ as an (n, rows) matrix: element (j, r) is g[r·n + j].
            GradProduct::Weight => (n, (g, 1, n)),
        };
        let mut dst = vec![0f32; m * k];
        product(&mut dst, false, (m, k, shared), lhs, (other, k, 1));
        Ok((CpuStorage::F32(dst), Shape::from((m, k))))
    }
}

/// Σ over the rows of a (rows, n) matrix: (n,).
struct ColumnSum;

impl CustomOp1 for ColumnSum {
    fn name(&self) -> &'static str {
        "coca-column-sum"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = f32_slice(storage, layout, self.name())?;
        let n = layout.dims()[1];
        let mut acc = vec![0f32; n];
        for row in g.chunks_exact(n.max(1)) {
            acc.iter_mut().zip(row).for_each(|(a, v)| *a += v);
        }
        Ok((CpuStorage::F32(acc), Shape::from(n)))
    }
}

struct Linear;

impl CustomOp3 for Linear {
    fn name(&self) -> &'static str {
        "coca-linear"
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
        let x = f32_slice(s1, l1, CustomOp3::name(self))?;
        let w = f32_slice(s2, l2, CustomOp3::name(self))?;
        let b = f32_slice(s3, l3, CustomOp3::name(self))?;
        let (out, rows, n) = forward(x, w, Some(b), l1.dims()[1]);
        Ok((CpuStorage::F32(out), Shape::from((rows, n))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        _bias: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, db) = backward(x, weight, grad)?;
        Ok((dx, Some(dw), Some(db)))
    }
}

impl CustomOp2 for Linear {
    fn name(&self) -> &'static str {
        "coca-linear-no-bias"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s1, l1, CustomOp2::name(self))?;
        let w = f32_slice(s2, l2, CustomOp2::name(self))?;
        let (out, rows, n) = forward(x, w, None, l1.dims()[1]);
        Ok((CpuStorage::F32(out), Shape::from((rows, n))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, _) = backward(x, weight, grad)?;
        Ok((dx, Some(dw)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::kernels::tests::{assert_close, grads_of};
    use candle_core::{Device, Var};

    #[test]
    fn forward_and_gradients_match_composed_matmul() {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (23, 37), &dev).unwrap()).unwrap();
        let w = Var::from_tensor(&Tensor::randn(0f32, 0.2, (41, 23), &dev).unwrap()).unwrap();
        let b = Var::from_tensor(&Tensor::randn(0f32, 0.2, 41, &dev).unwrap()).unwrap();
        // A transposed (non-contiguous) input of shape (37, 23).
        let xt = x.as_tensor().t().unwrap();
        let target = Tensor::randn(0f32, 1.0, (37, 41), &dev).unwrap();
        let vars = [x.as_tensor(), w.as_tensor(), b.as_tensor()];
        let fused = linear(&xt, w.as_tensor(), Some(b.as_tensor())).unwrap();
        let reference = xt
            .matmul(&w.as_tensor().t().unwrap())
            .unwrap()
            .broadcast_add(b.as_tensor())
            .unwrap();
        assert_close(&fused, &reference, 1e-5);
        for (f, r) in grads_of(&fused, &target, &vars)
            .iter()
            .zip(&grads_of(&reference, &target, &vars))
        {
            assert_close(f, r, 1e-5);
        }
        let fused = linear(&xt, w.as_tensor(), None).unwrap();
        let reference = xt.matmul(&w.as_tensor().t().unwrap()).unwrap();
        assert_close(&fused, &reference, 1e-5);
        let gf = grads_of(&fused, &target, &vars[..2]);
        let gr = grads_of(&reference, &target, &vars[..2]);
        assert_close(&gf[0], &gr[0], 1e-5);
        assert_close(&gf[1], &gr[1], 1e-5);
    }

    #[test]
    fn constant_input_still_gives_the_weight_gradient() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (19, 30), &dev).unwrap();
        let w = Var::from_tensor(&Tensor::randn(0f32, 0.2, (7, 30), &dev).unwrap()).unwrap();
        let target = Tensor::randn(0f32, 1.0, (19, 7), &dev).unwrap();
        let fused = linear(&x, w.as_tensor(), None).unwrap();
        let reference = x.matmul(&w.as_tensor().t().unwrap()).unwrap();
        let gf = grads_of(&fused, &target, &[w.as_tensor()]);
        let gr = grads_of(&reference, &target, &[w.as_tensor()]);
        assert_close(&gf[0], &gr[0], 1e-5);
        let loss = (fused * &target).unwrap().sum_all().unwrap();
        assert!(loss.backward().unwrap().get(&x).is_none());
    }

    #[test]
    fn shapes_are_checked() {
        let dev = Device::Cpu;
        let x = Tensor::zeros((2, 3), candle_core::DType::F32, &dev).unwrap();
        let w = Tensor::zeros((4, 5), candle_core::DType::F32, &dev).unwrap();
        assert!(linear(&x, &w, None).is_err());
    }
}
