//! AdamW exactly as PyTorch's `torch.optim.AdamW`, with open_clip's two parameter groups.
//!
//! On the CPU the update runs in place on the parameter's own `f32` buffer, one fused loop per parameter split
//! over rayon's threads, instead of a dozen tensor ops per parameter: the moments never leave the host and the
//! step costs one pass over the memory, with no copies. For parameters on
//! a GPU the moments live on the GPU too and the update is composed of tensor ops there, so no step copies
//! parameters or gradients to the host.

use std::cell::RefCell;
use std::collections::BTreeMap;

use candle_core::{CpuStorage, DType, Device, InplaceOp2, Layout, Result, Tensor, Var};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// AdamW hyper-parameters (open_clip's defaults for ViT models).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdamWConfig {
    /// β₁ (`--beta1`).
    pub beta1: f64,
    /// β₂ (`--beta2`; open_clip uses 0.98 for ViTs).
    pub beta2: f64,
    /// ε (`--eps`).
    pub eps: f64,
    /// Decoupled weight decay for the decayed group (`--wd`).
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.98,
            eps: 1e-6,
            weight_decay: 0.2,
        }
    }
}

/// Adam's first and second moments of one parameter, where the parameter lives.
enum Moments {
    Host {
        exp_avg: Vec<f32>,
        exp_avg_sq: Vec<f32>,
    },
    Device {
        exp_avg: Tensor,
        exp_avg_sq: Tensor,
    },
}

/// One optimised parameter: the variable, whether it is decayed, and its two moments.
struct Slot {
    var: Var,
    decay: bool,
    moments: Moments,
}

/// The scalars of one update, shared by every parameter.
#[derive(Clone, Copy)]
struct UpdateScalars {
    beta1: f32,
    beta2: f32,
    eps: f32,
    /// `lr / (1 − β₁ᵗ)`.
    step_size: f32,
    /// `√(1 − β₂ᵗ)`.
    bias_correction2_sqrt: f32,
}

/// AdamW over named variables.
pub struct AdamW {
    cfg: AdamWConfig,
    slots: BTreeMap<String, Slot>,
    step: u64,
}

impl AdamW {
    /// An optimiser for `params` (name, variable, whether weight decay applies), moments at zero.
    pub fn new(cfg: AdamWConfig, params: Vec<(String, Var, bool)>) -> Result<Self> {
        let slots = params
            .into_iter()
            .map(|(name, var, decay)| {
                let moments = zero_moments(&var)?;
                Ok((
                    name,
                    Slot {
                        var,
                        decay,
                        moments,
                    },
                ))
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            cfg,
            slots,
            step: 0,
        })
    }

    /// Number of updates applied so far (PyTorch's per-parameter `step`, shared by all parameters here).
    pub fn steps_taken(&self) -> u64 {
        self.step
    }

    /// Names of the optimised parameters.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.slots.keys().map(String::as_str)
    }

    /// Apply one update with learning rate `lr`; `grads` maps parameter names to gradients. A parameter without a
    /// gradient is left untouched (its moments too), as PyTorch does for `grad is None`.
    pub fn step(&mut self, grads: &BTreeMap<String, Tensor>, lr: f64) -> Result<()> {
        self.step += 1;
        let AdamWConfig {
            beta1,
            beta2,
            eps,
            weight_decay,
        } = self.cfg;
        let t = self.step as i32;
        let scalars = UpdateScalars {
            beta1: beta1 as f32,
            beta2: beta2 as f32,
            eps: eps as f32,
            step_size: (lr / (1.0 - beta1.powi(t))) as f32,
            bias_correction2_sqrt: (1.0 - beta2.powi(t)).sqrt() as f32,
        };
        for (name, slot) in self.slots.iter_mut() {
            let Some(grad) = grads.get(name) else {
                continue;
            };
            let decay = if slot.decay {
                (1.0 - lr * weight_decay) as f32
            } else {
                1.0
            };
            slot.update(grad, decay, scalars)?;
        }
        Ok(())
    }

    /// The moments as tensors named `exp_avg.<param>` and `exp_avg_sq.<param>`, for checkpoints.
    pub fn state_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out = Vec::with_capacity(self.slots.len() * 2);
        for (name, slot) in &self.slots {
            let shape = slot.var.as_tensor().shape().clone();
            let (m, v) = match &slot.moments {
                Moments::Host {
                    exp_avg,
                    exp_avg_sq,
                } => (
                    Tensor::from_slice(exp_avg, &shape, &Device::Cpu)?,
                    Tensor::from_slice(exp_avg_sq, &shape, &Device::Cpu)?,
                ),
                Moments::Device {
                    exp_avg,
                    exp_avg_sq,
                } => (
                    exp_avg.to_device(&Device::Cpu)?,
                    exp_avg_sq.to_device(&Device::Cpu)?,
                ),
            };
            out.push((format!("exp_avg.{name}"), m));
            out.push((format!("exp_avg_sq.{name}"), v));
        }
        Ok(out)
    }

    /// Restore moments and the step count saved by [`AdamW::state_tensors`]; every parameter must be present with
    /// its shape.
    pub fn load_state(
        &mut self,
        steps_taken: u64,
        mut get: impl FnMut(&str) -> std::result::Result<Tensor, String>,
    ) -> std::result::Result<(), String> {
        for (name, slot) in self.slots.iter_mut() {
            let n = slot.var.elem_count();
            let mut read = |prefix: &str| -> std::result::Result<Tensor, String> {
                let key = format!("{prefix}.{name}");
                let t = get(&key)?;
                if t.elem_count() != n {
                    return Err(format!(
                        "optimiser state `{key}` has {} values, the parameter has {n}",
                        t.elem_count()
                    ));
                }
                t.to_dtype(DType::F32)
                    .and_then(|t| t.flatten_all())
                    .map_err(|e| format!("optimiser state `{key}`: {e}"))
            };
            let (m, v) = (read("exp_avg")?, read("exp_avg_sq")?);
            let restore = |m: Tensor, v: Tensor| -> Result<Moments> {
                let device = slot.var.device();
                Ok(if device.is_cpu() {
                    Moments::Host {
                        exp_avg: m.to_vec1::<f32>()?,
                        exp_avg_sq: v.to_vec1::<f32>()?,
                    }
                } else {
                    let shape = slot.var.shape();
                    Moments::Device {
                        exp_avg: m.reshape(shape)?.to_device(device)?,
                        exp_avg_sq: v.reshape(shape)?.to_device(device)?,
                    }
                })
            };
            slot.moments =
                restore(m, v).map_err(|e| format!("optimiser state of `{name}`: {e}"))?;
        }
        self.step = steps_taken;
        Ok(())
    }
}

fn zero_moments(var: &Var) -> Result<Moments> {
    let device = var.device();
    Ok(if device.is_cpu() {
        let n = var.elem_count();
        Moments::Host {
            exp_avg: vec![0.0; n],
            exp_avg_sq: vec![0.0; n],
        }
    } else {
        Moments::Device {
            exp_avg: Tensor::zeros(var.shape(), DType::F32, device)?,
            exp_avg_sq: Tensor::zeros(var.shape(), DType::F32, device)?,
        }
    })
}

impl Slot {
    /// `p ← decay·p − step_size · m̂ / (√v̂ + ε)` with PyTorch's operation order.
    fn update(&mut self, grad: &Tensor, decay: f32, s: UpdateScalars) -> Result<()> {
        let tensor = self.var.as_tensor();
        match &mut self.moments {
            Moments::Host {
                exp_avg,
                exp_avg_sq,
            } => {
                let grad = grad.to_dtype(DType::F32)?;
                let update = HostUpdate {
                    exp_avg: RefCell::new(exp_avg),
                    exp_avg_sq: RefCell::new(exp_avg_sq),
                    decay,
                    scalars: s,
                };
                if tensor.dtype() == DType::F32 && tensor.is_contiguous() {
                    // In place, in the variable's own buffer: no copies of the parameter or the gradient.
                    tensor.inplace_op2(&grad, &update)
                } else {
                    let mut p = tensor
                        .to_dtype(DType::F32)?
                        .flatten_all()?
                        .to_vec1::<f32>()?;
                    let g = grad.flatten_all()?.to_vec1::<f32>()?;
                    update.apply(&mut p, &g)?;
                    let updated = Tensor::from_vec(p, tensor.shape(), &Device::Cpu)?
                        .to_dtype(tensor.dtype())?
                        .to_device(tensor.device())?;
                    self.var.set(&updated)
                }
            }
            Moments::Device {
                exp_avg,
                exp_avg_sq,
            } => {
                // Detached: moments computed from a gradient that recorded its graph would keep that graph (and
                // its activations) alive from step to step.
                let g = grad.detach().to_dtype(DType::F32)?;
                // m ← m + (1 − β₁)(g − m), PyTorch's lerp.
                *exp_avg = (&*exp_avg + ((&g - &*exp_avg)? * (1.0 - s.beta1) as f64)?)?;
                *exp_avg_sq = (exp_avg_sq.affine(s.beta2 as f64, 0.0)?
                    + g.sqr()?.affine((1.0 - s.beta2) as f64, 0.0)?)?;
                let denom = exp_avg_sq
                    .sqrt()?
                    .affine(1.0 / s.bias_correction2_sqrt as f64, s.eps as f64)?;
                let p = tensor
                    .detach()
                    .to_dtype(DType::F32)?
                    .affine(decay as f64, 0.0)?;
                let updated = (p - (&*exp_avg / denom)?.affine(s.step_size as f64, 0.0)?)?;
                self.var.set(&updated.to_dtype(tensor.dtype())?)
            }
        }
    }
}

/// The AdamW update of one parameter held on the host, applied to its f32 values in place.
struct HostUpdate<'a> {
    exp_avg: RefCell<&'a mut Vec<f32>>,
    exp_avg_sq: RefCell<&'a mut Vec<f32>>,
    decay: f32,
    scalars: UpdateScalars,
}

/// Elements per parallel task of the update: a few pages of each of the four buffers.
const UPDATE_CHUNK: usize = 16 * 1024;

impl HostUpdate<'_> {
    /// `p ← decay·p − step_size · m̂ / (√v̂ + ε)` with PyTorch's operation order, element by element (so any
    /// split over threads gives the same bits).
    fn apply(&self, p: &mut [f32], g: &[f32]) -> Result<()> {
        let mut m = self.exp_avg.borrow_mut();
        let mut v = self.exp_avg_sq.borrow_mut();
        if g.len() != p.len() || m.len() != p.len() || v.len() != p.len() {
            candle_core::bail!(
                "AdamW: {} values, gradient {}, moments {} / {}",
                p.len(),
                g.len(),
                m.len(),
                v.len()
            );
        }
        let (decay, s) = (self.decay, self.scalars);
        p.par_chunks_mut(UPDATE_CHUNK)
            .zip(g.par_chunks(UPDATE_CHUNK))
            .zip(m.par_chunks_mut(UPDATE_CHUNK))
            .zip(v.par_chunks_mut(UPDATE_CHUNK))
            .for_each(|(((p, g), m), v)| {
                for i in 0..p.len() {
                    p[i] *= decay;
                    m[i] += (1.0 - s.beta1) * (g[i] - m[i]);
                    v[i] = v[i] * s.beta2 + (1.0 - s.beta2) * g[i] * g[i];
                    let denom = v[i].sqrt() / s.bias_correction2_sqrt + s.eps;
                    p[i] -= s.step_size * (m[i] / denom);
                }
            });
        Ok(())
    }
}

impl InplaceOp2 for HostUpdate<'_> {
    fn name(&self) -> &'static str {
        "adamw-update"
    }

    fn cpu_fwd(
        &self,
        param: &mut CpuStorage,
        param_layout: &Layout,
        grad: &CpuStorage,
        grad_layout: &Layout,
    ) -> Result<()> {
        let (CpuStorage::F32(p), CpuStorage::F32(g)) = (param, grad) else {
            candle_core::bail!("AdamW: the in-place update takes f32 parameters and gradients");
        };
        let (Some((p0, p1)), Some((g0, g1))) = (
            param_layout.contiguous_offsets(),
            grad_layout.contiguous_offsets(),
        ) else {
            candle_core::bail!("AdamW: the in-place update takes contiguous tensors");
        };
        self.apply(&mut p[p0..p1], &g[g0..g1])
    }
}

/// Scale `grads` in place so their global L2 norm is at most `max_norm`, as `torch.nn.utils.clip_grad_norm_`
/// (coefficient `max_norm / (norm + 1e-6)`, applied only when below 1). Returns the norm before clipping.
pub fn clip_grad_norm(grads: &mut BTreeMap<String, Tensor>, max_norm: Option<f64>) -> Result<f64> {
    // Per-gradient sums of squares in f32, read back in one transfer (one synchronisation on a GPU), added in f64.
    let sums = grads
        .values()
        .map(|g| g.to_dtype(DType::F32)?.sqr()?.sum_all())
        .collect::<Result<Vec<_>>>()?;
    let total: f64 = if sums.is_empty() {
        0.0
    } else {
        Tensor::stack(&sums, 0)?
            .to_device(&Device::Cpu)?
            .to_vec1::<f32>()?
            .iter()
            .map(|&x| x as f64)
            .sum()
    };
    let norm = total.sqrt();
    if let Some(max_norm) = max_norm {
        let coef = max_norm / (norm + 1e-6);
        if coef < 1.0 {
            for g in grads.values_mut() {
                *g = (&*g * coef)?;
            }
        }
    }
    Ok(norm)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tensor-op update (used on GPUs) and the host loop give the same parameters and moments.
    #[test]
    fn device_and_host_updates_agree() {
        let dev = Device::Cpu;
        let init = Tensor::randn(0f32, 1.0, (7, 5), &dev).unwrap();
        let host = Var::from_tensor(&init).unwrap();
        let composed = Var::from_tensor(&init).unwrap();
        let mut opt_host = AdamW::new(
            AdamWConfig::default(),
            vec![("w".into(), host.clone(), true)],
        )
        .unwrap();
        let mut opt_composed = AdamW::new(
            AdamWConfig::default(),
            vec![("w".into(), composed.clone(), true)],
        )
        .unwrap();
        let slot = opt_composed.slots.get_mut("w").unwrap();
        slot.moments = Moments::Device {
            exp_avg: Tensor::zeros((7, 5), DType::F32, &dev).unwrap(),
            exp_avg_sq: Tensor::zeros((7, 5), DType::F32, &dev).unwrap(),
        };
        for step in 0..5 {
            let g = Tensor::randn(0f32, 1.0 + step as f32, (7, 5), &dev).unwrap();
            let grads = BTreeMap::from([("w".to_string(), g)]);
            opt_host.step(&grads, 1e-2).unwrap();
            opt_composed.step(&grads, 1e-2).unwrap();
        }
        let diff = (host.as_tensor() - composed.as_tensor())
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(diff < 1e-6, "parameters differ by {diff}");
        assert!(
            (host.as_tensor() - &init)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
                > 1e-3,
            "the updates moved nothing"
        );
        let a = opt_host.state_tensors().unwrap();
        let b = opt_composed.state_tensors().unwrap();
        for ((na, ta), (nb, tb)) in a.iter().zip(&b) {
            assert_eq!(na, nb);
            let d = (ta - tb)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(d < 1e-6, "{na} differs by {d}");
        }
    }
}
