//! Comparison against open_clip reference outputs.
//!
//! A parity directory (written by `scripts/parity/oracle.py`) holds `config.json`, the weights
//! (`open_clip_model.safetensors` and/or `open_clip_pytorch_model.bin`) and `io.safetensors` with inputs,
//! outputs and optionally `grad.<param>` gradients of the CoCa loss. [`compare_dir`] runs coca on the same
//! inputs and measures every difference against the tolerances the project commits to.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use crate::coca::Coca;
use crate::config::CocaConfig;
use crate::error::{ModelError, Result};
use crate::load::{load_model, LoadOptions};
use crate::loss::{coca_loss, CocaLossConfig};
use crate::weights::trainable_from;

/// Max-abs tolerance for embeddings, tokens and logits (f32).
pub const ABS_TOL: f32 = 1e-4;
/// Relative tolerance for loss values.
pub const LOSS_REL_TOL: f32 = 1e-5;
/// Relative-norm tolerance for gradients: ‖g − g_ref‖ / ‖g_ref‖.
pub const GRAD_REL_TOL: f32 = 1e-3;
/// Tolerance for half-precision inference, relative to the reference's largest magnitude: bf16 keeps 8
/// significant bits (relative step 2⁻⁸ ≈ 4e-3) and errors compound over the layers of a tower. On the fixtures'
/// deliberately wide random weights the worst output is ~4e-2 off on the CPU; a real mistake (a mask, a
/// transposed weight) is off by O(1).
pub const HALF_REL_TOL: f32 = 8e-2;

/// One compared quantity.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Check {
    /// Output name (`logits`, `grad.visual.proj`, ...).
    pub name: String,
    /// The measured error (max-abs, relative, or relative-norm, see `metric`).
    pub error: f32,
    /// `max_abs`, `relative` or `relative_norm`.
    pub metric: &'static str,
    /// The tolerance it must not exceed.
    pub tolerance: f32,
}

impl Check {
    /// Within tolerance (NaN never is).
    pub fn passed(&self) -> bool {
        self.error <= self.tolerance
    }
}

/// All checks of one parity directory.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ParityReport {
    /// The directory compared.
    pub dir: PathBuf,
    /// Every check, outputs first, then gradients.
    pub checks: Vec<Check>,
}

impl ParityReport {
    /// `true` when every check passed.
    pub fn passed(&self) -> bool {
        self.checks.iter().all(Check::passed)
    }

    /// The checks that failed.
    pub fn failures(&self) -> Vec<&Check> {
        self.checks.iter().filter(|c| !c.passed()).collect()
    }

    /// The worst check of each metric, for a compact summary.
    pub fn worst(&self) -> Vec<&Check> {
        let mut worst: Vec<&Check> = Vec::new();
        for metric in ["max_abs", "max_abs/scale", "relative", "relative_norm"] {
            if let Some(c) = self
                .checks
                .iter()
                .filter(|c| c.metric == metric)
                .max_by(|a, b| (a.error / a.tolerance).total_cmp(&(b.error / b.tolerance)))
            {
                worst.push(c);
            }
        }
        worst
    }
}

/// What to compare.
#[derive(Debug, Clone)]
pub struct ParityOptions {
    /// Also compare the gradient of every parameter (needs `grad.*` in the fixture; f32 only).
    pub gradients: bool,
    /// Load the weights from the `.bin` instead of the `.safetensors` file.
    pub use_pytorch_bin: bool,
    /// Where coca runs (the references are read onto it).
    pub device: Device,
    /// Compute dtype of the inference path. Half precisions are held to [`HALF_REL_TOL`] relative to each
    /// reference's scale instead of the f32 tolerances, and skip the gradients.
    pub dtype: DType,
}

impl Default for ParityOptions {
    fn default() -> Self {
        Self {
            gradients: true,
            use_pytorch_bin: false,
            device: Device::Cpu,
            dtype: DType::F32,
        }
    }
}

fn to_f32(t: &Tensor) -> Result<Tensor> {
    Ok(t.to_dtype(DType::F32)?)
}

fn max_abs(a: &Tensor, b: &Tensor) -> Result<f32> {
    let a = to_f32(a)?;
    let b = to_f32(b)?;
    if a.dims() != b.dims() {
        return Err(ModelError::Input(format!(
            "shape mismatch: coca {:?} vs reference {:?}",
            a.dims(),
            b.dims()
        )));
    }
    Ok((a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?)
}

fn max_abs_value(t: &Tensor) -> Result<f32> {
    Ok(to_f32(t)?
        .abs()?
        .flatten_all()?
        .max(0)?
        .to_scalar::<f32>()?)
}

fn norm(t: &Tensor) -> Result<f32> {
    Ok(to_f32(t)?.sqr()?.sum_all()?.sqrt()?.to_scalar::<f32>()?)
}

fn relative(a: &Tensor, reference: &Tensor) -> Result<f32> {
    let a = to_f32(a)?.to_scalar::<f32>()?;
    let r = to_f32(reference)?.to_scalar::<f32>()?;
    Ok((a - r).abs() / r.abs().max(1e-12))
}

fn relative_norm(a: &Tensor, reference: &Tensor) -> Result<f32> {
    let diff = norm(&(to_f32(a)? - to_f32(reference)?)?)?;
    Ok(diff / norm(reference)?.max(1e-12))
}

fn reference<'a>(io: &'a HashMap<String, Tensor>, name: &str, dir: &Path) -> Result<&'a Tensor> {
    io.get(name).ok_or_else(|| {
        ModelError::Input(format!("{}: io.safetensors has no `{name}`", dir.display()))
    })
}

/// Run coca on a parity directory's inputs and compare every reference output.
pub fn compare_dir(dir: &Path, opts: &ParityOptions) -> Result<ParityReport> {
    let device = opts.device.clone();
    let half = opts.dtype != DType::F32;
    let cfg = CocaConfig::from_file(&dir.join("config.json"))?;
    cfg.validate(&crate::ConfigSource::File(dir.join("config.json")))?;
    let weights = if opts.use_pytorch_bin {
        dir.join("open_clip_pytorch_model.bin")
    } else {
        dir.join("open_clip_model.safetensors")
    };
    let io_path = dir.join("io.safetensors");
    let io = candle_core::safetensors::load(&io_path, &device).map_err(|e| ModelError::Io {
        path: io_path.clone(),
        reason: e.to_string(),
    })?;
    let images = reference(&io, "image", dir)?.clone();
    let text = reference(&io, "text", dir)?.to_dtype(DType::U32)?;
    let mut checks = Vec::new();
    let mut push_abs = |name: &str, ours: &Tensor| -> Result<()> {
        let want = reference(&io, name, dir)?;
        let check = if half {
            Check {
                name: name.to_string(),
                error: max_abs(ours, want)? / max_abs_value(want)?.max(1e-12),
                metric: "max_abs/scale",
                tolerance: HALF_REL_TOL,
            }
        } else {
            Check {
                name: name.to_string(),
                error: max_abs(ours, want)?,
                metric: "max_abs",
                tolerance: ABS_TOL,
            }
        };
        checks.push(check);
        Ok(())
    };

    // Inference path: weights straight from the checkpoint, fused kernels.
    let load = LoadOptions {
        dtype: opts.dtype,
        device: device.clone(),
    };
    let model = load_model(&cfg, &weights, &load)?;
    let image = model.encode_image(&images.to_dtype(opts.dtype)?)?;
    let text_enc = model.encode_text(&text)?;
    push_abs("image_features", &image.embedding)?;
    push_abs("image_embs", &image.tokens)?;
    push_abs("text_features", &text_enc.embedding)?;
    push_abs("text_tokens", &text_enc.tokens)?;
    let out = model.forward_with_image(&image, &text)?;
    push_abs("logits", &out.logits)?;
    push_abs("logit_scale", &out.logit_scale)?;
    let labels_match = out.labels.to_dtype(DType::I64)?.to_vec2::<i64>()?
        == reference(&io, "labels", dir)?.to_vec2::<i64>()?;
    checks.push(Check {
        name: "labels".into(),
        error: if labels_match { 0.0 } else { f32::INFINITY },
        metric: "exact",
        tolerance: 0.0,
    });

    // Training path: trainable variables, differentiable ops, loss and gradients.
    let has_grads = io.keys().any(|k| k.starts_with("grad."));
    if opts.gradients && has_grads && !half {
        let ckpt_model = coca_checkpoint::Checkpoint::open(&weights)?;
        let trainable = trainable_from(&cfg, DType::F32, &device, |name| {
            ckpt_model
                .get(name, DType::F32, &device)
                .map_err(|e| candle_core::Error::Msg(e.to_string()))
        })?;
        let out = trainable.model.forward(&images, &text)?;
        let loss = coca_loss(&out, &CocaLossConfig::default())?;
        for (name, ours) in [
            ("loss", &loss.total),
            ("loss_caption", &loss.caption),
            ("loss_contrastive", &loss.contrastive),
        ] {
            checks.push(Check {
                name: name.into(),
                error: relative(ours, reference(&io, name, dir)?)?,
                metric: "relative",
                tolerance: LOSS_REL_TOL,
            });
        }
        let grads = loss.total.backward()?;
        let vars = trainable.vars.data().lock().expect("var map lock").clone();
        let mut names: Vec<_> = vars.keys().cloned().collect();
        names.sort();
        for name in names {
            let var = &vars[&name];
            let key = format!("grad.{name}");
            let want = reference(&io, &key, dir)?;
            let error = match grads.get(var.as_tensor()) {
                Some(g) => relative_norm(g, want)?,
                // A missing gradient means the graph was cut: fail loudly.
                None => f32::INFINITY,
            };
            checks.push(Check {
                name: key,
                error,
                metric: "relative_norm",
                tolerance: GRAD_REL_TOL,
            });
        }
    }
    Ok(ParityReport {
        dir: dir.to_path_buf(),
        checks,
    })
}

/// Run a model on a fixture's images only (used by benchmarks and examples).
pub fn fixture_model(dir: &Path) -> Result<Coca> {
    let cfg = CocaConfig::from_file(&dir.join("config.json"))?;
    load_model(
        &cfg,
        &dir.join("open_clip_model.safetensors"),
        &LoadOptions::default(),
    )
}
