//! The model being fine-tuned: CoCa's image encoder (trainable [`TrainableCoca`] variables) under a new
//! attentional pooler + linear head ([`ProbeHead`], the probe's own modules), with AdamW per learning-rate
//! scale for layer-wise lr decay.
//!
//! The head reads exactly what `coca probe` reads ([`coca_model::vision::VisionTower::pooler_context`], the
//! frames' tokens concatenated for a video), so a fine-tuned head file works with `coca probe --predict` given
//! the fine-tuned weights.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor, Var};
use coca_checkpoint::{save_safetensors, Checkpoint};
use coca_model::segments::{SegmentMode, Segments};
use coca_model::weights::TrainableCoca;
use coca_model::{BlockRunner, CocaConfig};
use coca_train::params::{excluded_from_decay, image_group};
use coca_train::{AdamW, AdamWConfig, Locks};

use crate::commands::probe::head::ProbeHead;

/// Encoder + head, and their optimisers.
pub struct Finetuner {
    model: TrainableCoca,
    head: ProbeHead,
    /// Frames per item (1 for images).
    frames: usize,
    /// Every optimised variable by name (encoder and head).
    params: Vec<(String, Var)>,
    /// One optimiser per learning-rate scale, with its scale.
    optimizers: Vec<(f64, AdamW)>,
}

/// The parameters (name, variable, whether weight decay applies) that share one learning-rate scale.
type ScaleGroup = (f64, Vec<(String, Var, bool)>);

/// How the encoder trains.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EncoderTraining {
    /// `--layer-decay`: the learning rate of image-tower group g is lr · decay^(L + 1 − g).
    pub layer_decay: f64,
    /// Frozen groups.
    pub locks: Locks,
    /// AdamW settings.
    pub adamw: AdamWConfig,
}

/// The learning-rate scale of an image-tower parameter: the head group (and the new head) 1, the last block
/// `decay`, ..., the stem (patch embedding, class and position embeddings) decay^(L+1).
pub fn lr_scale(cfg: &CocaConfig, name: &str, decay: f64) -> f64 {
    let top = cfg.vision_cfg.layers + 1;
    decay.powi((top - image_group(cfg, name).min(top)) as i32)
}

impl Finetuner {
    /// Put `model` and `head` together; only `visual.*` parameters that `training.locks` leaves trainable are
    /// optimised (the text tower is not used).
    pub fn new(
        cfg: &CocaConfig,
        model: TrainableCoca,
        head: ProbeHead,
        frames: usize,
        training: &EncoderTraining,
    ) -> Result<Self> {
        if !(training.layer_decay > 0.0 && training.layer_decay <= 1.0) {
            bail!(
                "--layer-decay must be in (0, 1], got {}",
                training.layer_decay
            );
        }
        // By the scale's bits: (scale, its parameters with their weight-decay flags).
        let mut by_scale: BTreeMap<u64, ScaleGroup> = BTreeMap::new();
        let mut params = Vec::new();
        let mut add = |name: String, var: Var, scale: f64| {
            let decay = !excluded_from_decay(&name, var.dims());
            params.push((name.clone(), var.clone()));
            by_scale
                .entry(scale.to_bits())
                .or_insert_with(|| (scale, Vec::new()))
                .1
                .push((name, var, decay));
        };
        {
            let data = model
                .vars
                .data()
                .lock()
                .map_err(|_| anyhow::anyhow!("variable map poisoned"))?;
            let mut names: Vec<&String> = data.keys().collect();
            names.sort();
            for name in names {
                if name.starts_with("visual.") && training.locks.trainable(cfg, name) {
                    let scale = lr_scale(cfg, name, training.layer_decay);
                    add(name.clone(), data[name].clone(), scale);
                }
            }
        }
        for (name, var, _) in head.params() {
            add(format!("head.{name}"), var, 1.0);
        }
        let optimizers = by_scale
            .into_values()
            .map(|(scale, group)| Ok((scale, AdamW::new(training.adamw, group)?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            model,
            head,
            frames,
            params,
            optimizers,
        })
    }

    /// The head.
    pub fn head(&self) -> &ProbeHead {
        &self.head
    }

    /// Logits (items, classes) of pixels (items × frames, 3, S, S), the encoder's blocks run by `runner`.
    pub fn logits(&self, pixels: &Tensor, runner: &dyn BlockRunner) -> Result<Tensor> {
        let tokens = self.tokens(pixels, runner)?;
        self.head.logits(&tokens)
    }

    /// The head's input: pooler-context tokens (items, frames × T, W) on the CPU.
    pub fn tokens(&self, pixels: &Tensor, runner: &dyn BlockRunner) -> Result<Tensor> {
        let visual = self.model.model.visual();
        let x = visual.encode_tokens(pixels, runner)?;
        let tokens = visual.pooler_context(&x)?;
        let (n, t, w) = tokens.dims3()?;
        Ok(tokens
            .reshape((n / self.frames, self.frames * t, w))?
            .to_dtype(DType::F32)?
            .to_device(&Device::Cpu)?)
    }

    /// One optimiser step on a batch: softmax cross-entropy of `labels` (u32, CPU), AdamW at `lr` times each
    /// group's scale. With `recompute`, each residual block is recomputed in the backward
    /// (`--grad-checkpointing`). Returns the batch's loss.
    pub fn step(
        &mut self,
        pixels: &Tensor,
        labels: &Tensor,
        lr: f64,
        recompute: bool,
    ) -> Result<f64> {
        let mode = if recompute {
            SegmentMode::Recompute
        } else {
            SegmentMode::Whole
        };
        let segments = Segments::new(mode);
        let logits = self.logits(pixels, &segments)?;
        let loss = candle_nn::loss::cross_entropy(&logits, labels)?;
        let value = loss.to_scalar::<f32>()? as f64;
        let mut grads: BTreeMap<String, Tensor> = BTreeMap::new();
        let params = &self.params;
        segments.backward(&loss, |store| {
            for (name, var) in params {
                if let Some(g) = store.get(var.as_tensor()) {
                    let g = match grads.remove(name) {
                        Some(prev) => (prev + g)?,
                        None => g.clone(),
                    };
                    grads.insert(name.clone(), g);
                }
            }
            Ok(())
        })?;
        for (scale, optimizer) in &mut self.optimizers {
            optimizer.step(&grads, lr * *scale)?;
        }
        Ok(value)
    }

    /// The names of the optimised parameters and their learning-rate scales.
    pub fn scales(&self) -> Vec<(String, f64)> {
        let mut out: Vec<(String, f64)> = self
            .optimizers
            .iter()
            .flat_map(|(s, o)| o.names().map(move |n| (n.to_string(), *s)))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Write the fine-tuned CoCa weights (open_clip names, every tensor of the model) to `path`.
    pub fn save_weights(&self, path: &Path) -> Result<()> {
        coca_train::trainer::save_var_map(&self.model.vars, path)
            .with_context(|| format!("{}: cannot save the fine-tuned weights", path.display()))
    }

    /// Write the optimiser moments to `path`.
    pub fn save_optimizer(&self, path: &Path) -> Result<()> {
        let mut tensors = Vec::new();
        for (_, o) in &self.optimizers {
            tensors.extend(o.state_tensors()?);
        }
        save_safetensors(path, tensors, None, &BTreeMap::new())
            .with_context(|| format!("{}: cannot save the optimiser state", path.display()))?;
        Ok(())
    }

    /// Restore the optimiser moments written by [`Finetuner::save_optimizer`] after `steps` steps.
    pub fn load_optimizer(&mut self, path: &Path, steps: u64) -> Result<()> {
        let file = Checkpoint::open(path)?;
        for (_, o) in &mut self.optimizers {
            o.load_state(steps, |name| {
                file.get(name, DType::F32, &Device::Cpu)
                    .map_err(|e| e.to_string())
            })
            .map_err(|reason| anyhow::anyhow!("{}: {reason}", path.display()))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::probe::head::ProbeKind;
    use coca_model::nn::ops::with_composed_ops;
    use coca_model::AllAtOnce;

    const CFG: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../assets/demo/coca_demo-tiny.json"
    );
    const WEIGHTS: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../assets/demo/coca_demo-tiny.safetensors"
    );

    fn config() -> CocaConfig {
        crate::model_args::resolve_config(CFG).unwrap().0
    }

    fn tiny(decay: f64, locks: Locks) -> Finetuner {
        let cfg = config();
        let model =
            coca_train::trainer::load_trainable(&cfg, Path::new(WEIGHTS), &Device::Cpu).unwrap();
        let width = cfg.vision_cfg.width;
        let kind = ProbeKind::Attentional {
            queries: 1,
            heads: cfg.vision_cfg.attn_pooler_heads,
        };
        let head = ProbeHead::new(kind, width, 3, None, 4).unwrap();
        let training = EncoderTraining {
            layer_decay: decay,
            locks,
            adamw: AdamWConfig::default(),
        };
        Finetuner::new(&cfg, model, head, 2, &training).unwrap()
    }

    /// `n` images of deterministic pseudo-random pixels in [-1, 1).
    fn pixels(ft: &Finetuner, n: usize, seed: u64) -> Tensor {
        let (h, w) = ft.model.model.visual().image_size();
        let mut values = Vec::with_capacity(n * 3 * h * w);
        let mut x = 0.1 + seed as f32 * 0.013;
        for _ in 0..n * 3 * h * w {
            x = (x * 3.7 + 0.31).fract();
            values.push(x * 2.0 - 1.0);
        }
        Tensor::from_vec(values, (n, 3, h, w), &Device::Cpu).unwrap()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    /// After fine-tuning steps (with and without recomputation), the head's logits on a video batch (2 frames
    /// per item, one query over all tokens) equal those computed with candle's composed ops.
    #[test]
    fn the_fine_tuned_pooler_matches_the_composed_ops() {
        let mut ft = tiny(0.65, Locks::default());
        let labels = Tensor::new(&[0u32, 2], &Device::Cpu).unwrap();
        let batch = pixels(&ft, 4, 1);
        ft.step(&batch, &labels, 1e-3, false).unwrap();
        ft.step(&batch, &labels, 1e-3, true).unwrap();
        let test = pixels(&ft, 4, 7);
        let fast = ft.logits(&test, &AllAtOnce).unwrap();
        let composed = with_composed_ops(|| ft.logits(&test, &AllAtOnce).unwrap());
        assert_eq!(fast.dims(), &[2, 3]);
        let d = max_diff(&fast, &composed);
        assert!(d < 1e-4, "logits differ by {d}");
        // Recomputing blocks gives the gradients of one backward: the same step from the same state.
        let mut a = tiny(0.65, Locks::default());
        let mut b = tiny(0.65, Locks::default());
        let la = a.step(&batch, &labels, 1e-3, false).unwrap();
        let lb = b.step(&batch, &labels, 1e-3, true).unwrap();
        assert_eq!(la, lb);
        let d = max_diff(
            &a.logits(&test, &AllAtOnce).unwrap(),
            &b.logits(&test, &AllAtOnce).unwrap(),
        );
        assert!(d < 1e-5, "checkpointed step differs by {d}");
    }

    #[test]
    fn layer_decay_scales_groups_and_locks_leave_out_frozen_ones() {
        let ft = tiny(0.5, Locks::default());
        let cfg = config();
        let layers = cfg.vision_cfg.layers;
        let scales: BTreeMap<String, f64> = ft.scales().into_iter().collect();
        assert_eq!(scales["head.head.weight"], 1.0);
        let last = format!("visual.transformer.resblocks.{}.ln_1.weight", layers - 1);
        assert_eq!(scales[&last], 0.5);
        assert_eq!(
            scales["visual.transformer.resblocks.0.ln_1.weight"],
            0.5f64.powi(layers as i32)
        );
        assert_eq!(
            scales["visual.conv1.weight"],
            0.5f64.powi(layers as i32 + 1)
        );
        assert!(scales.keys().all(|n| !n.starts_with("text")));
        let locked = tiny(
            0.5,
            Locks {
                image: true,
                image_unlocked_groups: 1,
                ..Locks::default()
            },
        );
        let names: Vec<String> = locked.scales().into_iter().map(|(n, _)| n).collect();
        assert!(!names.contains(&last));
        assert!(names.contains(&"head.head.weight".to_string()));
        let err = Finetuner::new(
            &cfg,
            coca_train::trainer::load_trainable(&cfg, Path::new(WEIGHTS), &Device::Cpu).unwrap(),
            ProbeHead::new(ProbeKind::Linear, 4, 2, None, 0).unwrap(),
            1,
            &EncoderTraining {
                layer_decay: 1.5,
                locks: Locks::default(),
                adamw: AdamWConfig::default(),
            },
        )
        .err()
        .unwrap();
        assert!(err.to_string().contains("--layer-decay"), "{err}");
    }
}
