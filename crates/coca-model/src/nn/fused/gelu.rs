//! Exact (erf) GELU as one autograd node; the backward `dy · (Φ(x) + x·φ(x))` is one pass instead of candle's
//! ten-op composition.

use candle_core::cpu::erf::erf_f32;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::{f32_slice, ELEMS_PER_TASK};

/// `x · Φ(x)` elementwise, Φ the standard normal CDF (PyTorch's `nn.GELU()`). f32 on the CPU only.
pub fn gelu_erf(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1(GeluErf)
}

/// Φ(x) = (1 + erf(x/√2)) / 2, computed as candle's `gelu_erf` does so both paths agree to the bit.
#[inline]
fn cdf(x: f32) -> f32 {
    (erf_f32(x * std::f32::consts::FRAC_1_SQRT_2) + 1.0) * 0.5
}

struct GeluErf;

impl CustomOp1 for GeluErf {
    fn name(&self) -> &'static str {
        "coca-gelu-erf"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(storage, layout, self.name())?;
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(ELEMS_PER_TASK)
            .zip(x.par_chunks(ELEMS_PER_TASK))
            .for_each(|(o, x)| {
                for (o, &v) in o.iter_mut().zip(x) {
                    *o = v * cdf(v);
                }
            });
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(
            arg.apply_op2_no_bwd(&grad.contiguous()?, &GeluErfBackward)?,
        ))
    }
}

/// `dy · (Φ(x) + x·φ(x))`; inputs `x` and `dy`.
struct GeluErfBackward;

impl CustomOp2 for GeluErfBackward {
    fn name(&self) -> &'static str {
        "coca-gelu-erf-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s1, l1, self.name())?;
        let g = f32_slice(s2, l2, self.name())?;
        // 1/√(2π), the standard normal density at 0.
        const INV_SQRT_2PI: f32 = 0.398_942_3;
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(ELEMS_PER_TASK)
            .zip(x.par_chunks(ELEMS_PER_TASK))
            .zip(g.par_chunks(ELEMS_PER_TASK))
            .for_each(|((o, x), g)| {
                for ((o, &v), &g) in o.iter_mut().zip(x).zip(g) {
                    let pdf = INV_SQRT_2PI * (-0.5 * v * v).exp();
                    *o = g * (cdf(v) + v * pdf);
                }
            });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::fused::tests::{assert_close, grads_of};
    use candle_core::{Device, Var};

    #[test]
    fn forward_and_gradient_match_candle() {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&Tensor::randn(0f32, 3.0, (9, 4, 1031), &dev).unwrap()).unwrap();
        let xt = x.as_tensor().transpose(0, 2).unwrap();
        let fused = gelu_erf(&xt).unwrap();
        let reference = xt.gelu_erf().unwrap();
        assert_close(&fused, &reference, 1e-6);
        let target = Tensor::randn(0f32, 1.0, xt.dims(), &dev).unwrap();
        let gf = grads_of(&fused, &target, &[x.as_tensor()]);
        let gr = grads_of(&reference, &target, &[x.as_tensor()]);
        // candle's backward rounds 1/√(2π) to 0.398942; the exact constant differs by ~1e-6 relative.
        assert_close(&gf[0], &gr[0], 1e-5);
    }

    #[test]
    fn gradient_matches_finite_differences() {
        let dev = Device::Cpu;
        let pts = [-4.0f32, -1.3, -0.2, 0.0, 0.4, 1.7, 3.1];
        let x = Var::from_tensor(&Tensor::new(&pts, &dev).unwrap()).unwrap();
        let y = gelu_erf(x.as_tensor()).unwrap().sum_all().unwrap();
        let g = y.backward().unwrap();
        let g = g.get(x.as_tensor()).unwrap().to_vec1::<f32>().unwrap();
        for (i, &p) in pts.iter().enumerate() {
            let h = 1e-3f64;
            let f = |v: f64| v * 0.5 * (1.0 + erf64(v / std::f64::consts::SQRT_2));
            let fd = (f(p as f64 + h) - f(p as f64 - h)) / (2.0 * h);
            assert!((g[i] as f64 - fd).abs() < 1e-4, "x={p}: {} vs {fd}", g[i]);
        }
    }

    /// erf in f64 for the finite-difference reference.
    fn erf64(x: f64) -> f64 {
        candle_core::cpu::erf::erf_f64(x)
    }
}
