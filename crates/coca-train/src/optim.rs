//! AdamW exactly as PyTorch's `torch.optim.AdamW`, with open_clip's two parameter groups.
//!
//! The update runs on plain `f32` buffers, one fused loop per parameter, instead of a dozen tensor ops per
//! parameter: the moments never leave the host and the step costs one pass over the memory.

use std::collections::BTreeMap;

use candle_core::{DType, Device, Result, Tensor, Var};
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

/// One optimised parameter: the variable, whether it is decayed, and its two moments.
struct Slot {
    var: Var,
    decay: bool,
    exp_avg: Vec<f32>,
    exp_avg_sq: Vec<f32>,
}

/// AdamW over named variables.
pub struct AdamW {
    cfg: AdamWConfig,
    slots: BTreeMap<String, Slot>,
    step: u64,
}

impl AdamW {
    /// An optimiser for `params` (name, variable, whether weight decay applies), moments at zero.
    pub fn new(cfg: AdamWConfig, params: Vec<(String, Var, bool)>) -> Self {
        let slots = params
            .into_iter()
            .map(|(name, var, decay)| {
                let n = var.elem_count();
                let slot = Slot {
                    var,
                    decay,
                    exp_avg: vec![0.0; n],
                    exp_avg_sq: vec![0.0; n],
                };
                (name, slot)
            })
            .collect();
        Self {
            cfg,
            slots,
            step: 0,
        }
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
        let bias_correction1 = 1.0 - beta1.powi(t);
        let bias_correction2_sqrt = (1.0 - beta2.powi(t)).sqrt();
        let step_size = (lr / bias_correction1) as f32;
        let (b1, b2, eps) = (beta1 as f32, beta2 as f32, eps as f32);
        let bc2 = bias_correction2_sqrt as f32;
        for (name, slot) in self.slots.iter_mut() {
            let Some(grad) = grads.get(name) else {
                continue;
            };
            let g = grad.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
            let mut p = slot
                .var
                .as_tensor()
                .to_dtype(DType::F32)?
                .flatten_all()?
                .to_vec1::<f32>()?;
            let decay = if slot.decay {
                (1.0 - lr * weight_decay) as f32
            } else {
                1.0
            };
            for i in 0..p.len() {
                p[i] *= decay;
                let m = &mut slot.exp_avg[i];
                *m += (1.0 - b1) * (g[i] - *m);
                let v = &mut slot.exp_avg_sq[i];
                *v = *v * b2 + (1.0 - b2) * g[i] * g[i];
                let denom = v.sqrt() / bc2 + eps;
                p[i] -= step_size * (*m / denom);
            }
            let tensor = slot.var.as_tensor();
            let updated = Tensor::from_vec(p, tensor.shape(), &Device::Cpu)?
                .to_dtype(tensor.dtype())?
                .to_device(tensor.device())?;
            slot.var.set(&updated)?;
        }
        Ok(())
    }

    /// The moments as tensors named `exp_avg.<param>` and `exp_avg_sq.<param>`, for checkpoints.
    pub fn state_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out = Vec::with_capacity(self.slots.len() * 2);
        for (name, slot) in &self.slots {
            let shape = slot.var.as_tensor().shape().clone();
            out.push((
                format!("exp_avg.{name}"),
                Tensor::from_slice(&slot.exp_avg, &shape, &Device::Cpu)?,
            ));
            out.push((
                format!("exp_avg_sq.{name}"),
                Tensor::from_slice(&slot.exp_avg_sq, &shape, &Device::Cpu)?,
            ));
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
            for (prefix, buffer) in [
                ("exp_avg", &mut slot.exp_avg),
                ("exp_avg_sq", &mut slot.exp_avg_sq),
            ] {
                let key = format!("{prefix}.{name}");
                let t = get(&key)?;
                if t.elem_count() != buffer.len() {
                    return Err(format!(
                        "optimiser state `{key}` has {} values, the parameter has {}",
                        t.elem_count(),
                        buffer.len()
                    ));
                }
                *buffer = t
                    .to_dtype(DType::F32)
                    .and_then(|t| t.flatten_all())
                    .and_then(|t| t.to_vec1::<f32>())
                    .map_err(|e| format!("optimiser state `{key}`: {e}"))?;
            }
        }
        self.step = steps_taken;
        Ok(())
    }
}

/// Scale `grads` in place so their global L2 norm is at most `max_norm`, as `torch.nn.utils.clip_grad_norm_`
/// (coefficient `max_norm / (norm + 1e-6)`, applied only when below 1). Returns the norm before clipping.
pub fn clip_grad_norm(grads: &mut BTreeMap<String, Tensor>, max_norm: Option<f64>) -> Result<f64> {
    let mut total = 0f64;
    for g in grads.values() {
        total += g
            .to_dtype(DType::F32)?
            .sqr()?
            .sum_all()?
            .to_scalar::<f32>()? as f64;
    }
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
