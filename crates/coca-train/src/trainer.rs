//! The training loop: data → gradients → AdamW → checkpoints, with hooks for logging and validation.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Var};
use coca_checkpoint::{save_safetensors, Checkpoint};
use coca_model::load::validate_checkpoint;
use coca_model::weights::{mixed_precision_view, parameter_specs, trainable_from, TrainableCoca};
use coca_model::{Coca, CocaConfig, CocaLossConfig};
use serde::{Deserialize, Serialize};

use crate::checkpoint::{
    latest_checkpoint, prune_checkpoints, read_state, write_checkpoint_dir, write_state,
    TrainState, MODEL_FILE, OPTIMIZER_FILE,
};
use crate::distributed::{broadcast_vars, mean_losses, step_gradients_distributed, DistOptions};
use crate::error::TrainError;
use crate::init::initial_parameters;
use crate::optim::{clip_grad_norm, AdamW, AdamWConfig};
use crate::params::{excluded_from_decay, Locks};
use crate::schedule::Schedule;
use crate::step::{clamp_logit_scale, step_gradients, MicroBatch, StepLosses};
use coca_dist::{BackgroundComm, Communicator};

/// Settings of a run that the loop itself uses.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainOptions {
    /// Optimiser steps to reach (a resumed run continues up to this).
    pub steps: u64,
    /// Micro-batches per optimiser step (open_clip's `--accum-freq`).
    pub accum_freq: usize,
    /// Learning-rate schedule.
    pub schedule: Schedule,
    /// AdamW settings.
    pub adamw: AdamWConfig,
    /// Clip the global gradient norm to this (`--grad-clip-norm`).
    pub grad_clip_norm: Option<f64>,
    /// λ_cap.
    pub caption_loss_weight: f64,
    /// λ_con.
    pub contrastive_loss_weight: f64,
    /// Frozen parts.
    pub locks: Locks,
    /// Save a checkpoint every this many steps (0: only at the end).
    pub save_every: u64,
    /// Checkpoints kept (0: all).
    pub keep_checkpoints: usize,
    /// Validate every this many steps (0: only at the end).
    pub val_every: u64,
    /// Seed of the initialisation (data order has its own seed in the loader).
    pub seed: u64,
    /// Compute precision of the forward and backward (the weights and optimiser state stay f32).
    #[serde(default)]
    pub precision: TrainPrecision,
    /// Recompute every residual block in the backward instead of keeping its activations (open_clip's
    /// `--grad-checkpointing`): less memory, about one more forward pass of compute, the same gradients.
    #[serde(default)]
    pub grad_checkpointing: bool,
}

/// open_clip's `--precision` for training.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrainPrecision {
    /// Everything in f32.
    #[default]
    Fp32,
    /// bf16 mixed precision as `torch.autocast(dtype=bfloat16)`: matrix products and activations in bf16 from
    /// f32 master weights; LayerNorms, softmax and the losses in f32; f32 gradients and AdamW state.
    AmpBf16,
}

/// Where the batches come from. Implementations tokenize and preprocess; the loop only needs tensors.
pub trait TrainData {
    /// The next micro-batch.
    fn next_micro_batch(&mut self) -> Result<MicroBatch, TrainError>;
    /// The position after the last micro-batch returned, restorable by the implementation.
    fn position(&self) -> serde_json::Value;
}

/// What the loop reports after each step.
#[derive(Debug, Clone, Copy)]
pub struct StepReport {
    /// Steps completed.
    pub step: u64,
    /// Loss parts.
    pub losses: StepLosses,
    /// Learning rate used for this step.
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// `exp(logit_scale)` after the step.
    pub logit_scale: f64,
    /// Samples per second over this step (all ranks together in a distributed run).
    pub samples_per_s: f64,
}

/// Callbacks of the loop (progress, metrics, validation).
pub trait TrainHooks {
    /// After every optimiser step.
    fn on_step(&mut self, report: &StepReport) -> Result<(), TrainError>;
    /// Validation metrics of the current model, given as a gradient-free copy (called every `val_every` steps and
    /// at the end).
    fn validate(&mut self, model: &Coca, step: u64) -> Result<BTreeMap<String, f64>, TrainError>;
    /// After a checkpoint landed.
    fn on_checkpoint(&mut self, _step: u64, _path: &Path) -> Result<(), TrainError> {
        Ok(())
    }
}

/// How the weights of a new run start.
pub enum Start<'a> {
    /// open_clip's initialisation (see [`crate::init`]), seeded by [`TrainOptions::seed`].
    Scratch,
    /// A checkpoint (fine-tuning); validated strictly against the config.
    Pretrained(&'a Path),
}

/// A model being trained, its optimiser and its run directory.
pub struct Trainer {
    cfg: CocaConfig,
    model: TrainableCoca,
    params: Vec<(String, Var)>,
    logit_scale: Option<Var>,
    optimizer: AdamW,
    options: TrainOptions,
    run_dir: PathBuf,
    step: u64,
    dist: Option<Distributed>,
}

/// The collectives of a data-parallel run and how the loss uses them.
struct Distributed {
    comm: Box<dyn Communicator>,
    options: DistOptions,
}

impl Trainer {
    /// A new run in `run_dir`.
    pub fn new(
        cfg: &CocaConfig,
        start: Start<'_>,
        run_dir: &Path,
        options: TrainOptions,
        device: &Device,
    ) -> Result<Self, TrainError> {
        let model = match start {
            Start::Scratch => {
                let specs = parameter_specs(cfg)?;
                let init: BTreeMap<String, candle_core::Tensor> =
                    initial_parameters(cfg, &specs, options.seed)
                        .map_err(TrainError::Config)?
                        .into_iter()
                        .collect();
                trainable_from(cfg, DType::F32, device, |name| {
                    init.get(name).cloned().ok_or_else(|| {
                        candle_core::Error::Msg(format!("no initial value for `{name}`"))
                    })
                })?
            }
            Start::Pretrained(path) => load_trainable(cfg, path, device)?,
        };
        Self::assemble(cfg, model, options, run_dir, 0)
    }

    /// Continue the run saved in `checkpoint` (a `step_N` directory). The model config must be the one the
    /// checkpoint was trained with. Returns the trainer and the saved data position.
    pub fn resume(
        cfg: &CocaConfig,
        checkpoint: &Path,
        run_dir: &Path,
        options: TrainOptions,
        device: &Device,
    ) -> Result<(Self, serde_json::Value), TrainError> {
        let state = read_state(checkpoint)?;
        let wanted = serde_json::to_value(cfg).map_err(|e| TrainError::Config(e.to_string()))?;
        if state.model_config != wanted {
            return Err(TrainError::Checkpoint {
                path: checkpoint.to_path_buf(),
                reason: "it was trained with a different model config (architecture); resume with the same \
                         --model, or start a new run with --pretrained pointing at its model.safetensors"
                    .into(),
            });
        }
        let model = load_trainable(cfg, &checkpoint.join(MODEL_FILE), device)?;
        let mut trainer = Self::assemble(cfg, model, options, run_dir, state.step)?;
        let opt_path = checkpoint.join(OPTIMIZER_FILE);
        let opt = Checkpoint::open(&opt_path)?;
        trainer
            .optimizer
            .load_state(state.step, |name| {
                opt.get(name, DType::F32, &Device::Cpu)
                    .map_err(|e| e.to_string())
            })
            .map_err(|reason| TrainError::Checkpoint {
                path: opt_path.clone(),
                reason,
            })?;
        Ok((trainer, state.data))
    }

    fn assemble(
        cfg: &CocaConfig,
        model: TrainableCoca,
        options: TrainOptions,
        run_dir: &Path,
        step: u64,
    ) -> Result<Self, TrainError> {
        if options.accum_freq == 0 {
            return Err(TrainError::Config("--accum-freq must be at least 1".into()));
        }
        let mut all: Vec<(String, Var)> = {
            let data = model
                .vars
                .data()
                .lock()
                .map_err(|_| TrainError::Config("variable map poisoned".into()))?;
            data.iter().map(|(n, v)| (n.clone(), v.clone())).collect()
        };
        all.sort_by(|a, b| a.0.cmp(&b.0));
        let logit_scale = all
            .iter()
            .find(|(n, _)| n == "logit_scale")
            .map(|(_, v)| v.clone());
        let params: Vec<(String, Var)> = all
            .into_iter()
            .filter(|(n, _)| options.locks.trainable(cfg, n))
            .collect();
        if params.is_empty() {
            return Err(TrainError::Config(
                "every parameter is locked: nothing to train".into(),
            ));
        }
        let groups = params
            .iter()
            .map(|(n, v)| {
                let decay = !excluded_from_decay(n, v.as_tensor().dims());
                (n.clone(), v.clone(), decay)
            })
            .collect();
        let optimizer = AdamW::new(options.adamw, groups)?;
        Ok(Self {
            cfg: cfg.clone(),
            model,
            params,
            logit_scale,
            optimizer,
            options,
            run_dir: run_dir.to_path_buf(),
            step,
            dist: None,
        })
    }

    /// Make this one rank of a data-parallel run (call it on every rank, right after [`Trainer::new`] or
    /// [`Trainer::resume`]). Checks that every rank has the same model, trainable set, settings and step, then
    /// copies rank 0's weights to every rank, so all start from identical weights.
    ///
    /// In a distributed run each step forwards this rank's micro-batches, computes open_clip's distributed
    /// loss ([`crate::distributed`]), averages the gradients over ranks, then clips and steps as usual; the
    /// reported losses are the mean over ranks. Hooks' `on_step` runs on every rank (give other ranks quiet
    /// hooks); validation and checkpoints happen on rank 0 alone. A checkpoint's data position is then
    /// `{"world_size": W, "ranks": [position of rank 0, ...]}` (see [`crate::distributed::rank_positions`]).
    pub fn distributed(
        mut self,
        comm: Box<dyn Communicator>,
        options: DistOptions,
    ) -> Result<Self, TrainError> {
        let mine = self.fingerprint(&options)?;
        let all = comm.all_gather_bytes(mine.as_bytes())?;
        let root = String::from_utf8_lossy(&all[0]).into_owned();
        for (rank, theirs) in all.iter().enumerate().skip(1) {
            let theirs = String::from_utf8_lossy(theirs);
            if theirs != root {
                return Err(TrainError::Config(format!(
                    "rank {rank} does not match rank 0: {}",
                    describe_difference(&root, &theirs)
                )));
            }
        }
        let all_vars: Vec<(String, Var)> = {
            let data = self
                .model
                .vars
                .data()
                .lock()
                .map_err(|_| TrainError::Config("variable map poisoned".into()))?;
            data.iter().map(|(n, v)| (n.clone(), v.clone())).collect()
        };
        broadcast_vars(comm.as_ref(), &all_vars, options.bucket_bytes)?;
        // Host collectives from here on run on their own thread, so gradient buckets travel during the
        // backward.
        let comm = BackgroundComm::wrap_if_blocking(comm)?;
        self.dist = Some(Distributed { comm, options });
        Ok(self)
    }

    /// What every rank must agree on, as `key=value` lines.
    fn fingerprint(&self, options: &DistOptions) -> Result<String, TrainError> {
        let config =
            serde_json::to_string(&self.cfg).map_err(|e| TrainError::Config(e.to_string()))?;
        let trainable: Vec<String> = self
            .params
            .iter()
            .map(|(n, v)| format!("{n}{:?}", v.dims()))
            .collect();
        let o = &self.options;
        Ok([
            format!("step={}", self.step),
            format!("steps={}", o.steps),
            format!("accum_freq={}", o.accum_freq),
            format!("local_loss={}", options.local_loss),
            format!("gather_with_grad={}", options.gather_with_grad),
            format!(
                "loss weights={} {}",
                o.caption_loss_weight, o.contrastive_loss_weight
            ),
            format!("grad_clip_norm={:?}", o.grad_clip_norm),
            format!(
                "optimizer={}",
                serde_json::json!({ "adamw": o.adamw, "schedule": o.schedule })
            ),
            format!("model config={config}"),
            format!("trainable parameters={}", trainable.join(",")),
        ]
        .join("\n"))
    }

    /// This process's rank (0 without [`Trainer::distributed`]).
    pub fn rank(&self) -> usize {
        self.dist.as_ref().map_or(0, |d| d.comm.rank())
    }

    /// The number of ranks (1 without [`Trainer::distributed`]).
    pub fn world_size(&self) -> usize {
        self.dist.as_ref().map_or(1, |d| d.comm.world_size())
    }

    /// Whether this rank writes checkpoints and validates (rank 0, or a single process).
    pub fn is_main(&self) -> bool {
        self.rank() == 0
    }

    /// Steps completed.
    pub fn step(&self) -> u64 {
        self.step
    }

    /// The model (for validation and inference between steps).
    pub fn model(&self) -> &Coca {
        &self.model.model
    }

    /// A copy of the model sharing the current weights but recording no gradients, so inference takes the fused
    /// kernels (the trainable model's forward builds an autograd graph).
    pub fn frozen_model(&self) -> Result<Coca, TrainError> {
        let data = self
            .model
            .vars
            .data()
            .lock()
            .map_err(|_| TrainError::Config("variable map poisoned".into()))?;
        let detached: std::collections::HashMap<String, candle_core::Tensor> = data
            .iter()
            .map(|(n, v)| (n.clone(), v.as_tensor().detach()))
            .collect();
        let vb =
            candle_nn::VarBuilder::from_tensors(detached, DType::F32, self.model.model.device());
        Ok(Coca::new(&self.cfg, vb)?)
    }

    /// Names of the parameters the optimiser updates.
    pub fn trainable_names(&self) -> Vec<&str> {
        self.params.iter().map(|(n, _)| n.as_str()).collect()
    }

    /// Run optimiser steps until `options.steps`, saving and validating on schedule. On a non-finite loss the
    /// run stops with [`TrainError::NonFinite`] naming the last good checkpoint.
    pub fn train(
        &mut self,
        data: &mut dyn TrainData,
        hooks: &mut dyn TrainHooks,
    ) -> Result<(), TrainError> {
        let loss_cfg = CocaLossConfig {
            caption_weight: self.options.caption_loss_weight,
            contrastive_weight: self.options.contrastive_loss_weight,
            pad_id: self.cfg.text_cfg.pad_id,
        };
        while self.step < self.options.steps {
            let started = Instant::now();
            let micro: Vec<MicroBatch> = (0..self.options.accum_freq)
                .map(|_| data.next_micro_batch())
                .collect::<Result<_, _>>()?;
            let mut samples = 0;
            for m in &micro {
                samples += m.ids.dim(0)?;
            }
            samples *= self.world_size();
            let view;
            let (model, micro) = match self.options.precision {
                TrainPrecision::Fp32 => (&self.model.model, micro),
                TrainPrecision::AmpBf16 => {
                    view = mixed_precision_view(&self.cfg, &self.model.vars, DType::BF16)?;
                    let micro = micro
                        .into_iter()
                        .map(|m| {
                            Ok(MicroBatch {
                                images: m.images.to_dtype(DType::BF16)?,
                                ids: m.ids,
                            })
                        })
                        .collect::<Result<Vec<_>, candle_core::Error>>()?;
                    (&view, micro)
                }
            };
            let (losses, mut grads) = match &self.dist {
                None => step_gradients(
                    model,
                    &self.params,
                    &micro,
                    &loss_cfg,
                    self.options.grad_checkpointing,
                )?,
                Some(d) => {
                    let comm = d.comm.as_ref();
                    // Averaged over ranks before clipping, as DDP does for open_clip.
                    let (losses, grads) = step_gradients_distributed(
                        model,
                        &self.params,
                        &micro,
                        &loss_cfg,
                        self.options.grad_checkpointing,
                        comm,
                        &d.options,
                    )?;
                    (mean_losses(comm, losses)?, grads)
                }
            };
            if !losses.total.is_finite() {
                let last_good = match latest_checkpoint(&self.run_dir)? {
                    Some(p) => format!(
                        "Last good checkpoint: {} (resume with --resume latest)",
                        p.display()
                    ),
                    None => "No checkpoint was saved yet.".to_string(),
                };
                return Err(TrainError::NonFinite {
                    step: self.step + 1,
                    value: losses.total,
                    last_good,
                });
            }
            let grad_norm = clip_grad_norm(&mut grads, self.options.grad_clip_norm)?;
            let lr = self.options.schedule.lr(self.step);
            self.optimizer.step(&grads, lr)?;
            if let Some(scale) = &self.logit_scale {
                clamp_logit_scale(scale)?;
            }
            self.step += 1;
            let logit_scale = match &self.logit_scale {
                Some(v) => v.as_tensor().to_scalar::<f32>()?.exp() as f64,
                None => f64::NAN,
            };
            hooks.on_step(&StepReport {
                step: self.step,
                losses,
                lr,
                grad_norm,
                logit_scale,
                samples_per_s: samples as f64 / started.elapsed().as_secs_f64().max(1e-9),
            })?;
            let last = self.step == self.options.steps;
            let every = |n: u64| n > 0 && self.step.is_multiple_of(n);
            if (every(self.options.val_every) || last) && self.is_main() {
                hooks.validate(&self.frozen_model()?, self.step)?;
            }
            if every(self.options.save_every) || last {
                // Every rank contributes its data position; rank 0 alone writes.
                let position = self.data_position(data)?;
                if self.is_main() {
                    let path = self.save(position, Some(losses.total))?;
                    hooks.on_checkpoint(self.step, &path)?;
                }
            }
        }
        Ok(())
    }

    /// The data position to save: this rank's, or in a distributed run every rank's (a collective).
    fn data_position(&self, data: &dyn TrainData) -> Result<serde_json::Value, TrainError> {
        let Some(d) = &self.dist else {
            return Ok(data.position());
        };
        let mine =
            serde_json::to_vec(&data.position()).map_err(|e| TrainError::Config(e.to_string()))?;
        let ranks = d
            .comm
            .all_gather_bytes(&mine)?
            .iter()
            .map(|bytes| serde_json::from_slice(bytes))
            .collect::<Result<Vec<serde_json::Value>, _>>()
            .map_err(|e| TrainError::Config(format!("a rank's data position: {e}")))?;
        Ok(serde_json::json!({ "world_size": ranks.len(), "ranks": ranks }))
    }

    /// Save a checkpoint of the current state and prune old ones.
    pub fn save(
        &self,
        data_position: serde_json::Value,
        last_loss: Option<f64>,
    ) -> Result<PathBuf, TrainError> {
        let state = TrainState {
            step: self.step,
            data: data_position,
            model_config: serde_json::to_value(&self.cfg)
                .map_err(|e| TrainError::Config(e.to_string()))?,
            seed: self.options.seed,
            last_loss,
        };
        let path = write_checkpoint_dir(&self.run_dir, self.step, |dir| {
            self.save_weights(&dir.join(MODEL_FILE))?;
            let moments = self.optimizer.state_tensors()?;
            save_safetensors(
                dir.join(OPTIMIZER_FILE),
                moments.iter().map(|(n, t)| (n, t)),
                None,
                &BTreeMap::new(),
            )?;
            write_state(dir, &state)
        })?;
        prune_checkpoints(&self.run_dir, self.options.keep_checkpoints)?;
        Ok(path)
    }

    /// Write the current weights (open_clip names, f32) to `path`, atomically.
    pub fn save_weights(&self, path: &Path) -> Result<(), TrainError> {
        save_var_map(&self.model.vars, path)
    }
}

/// Write the variables of a model (open_clip names, f32) to `path` atomically, as a checkpoint every inference
/// command reads.
pub fn save_var_map(vars: &candle_nn::VarMap, path: &Path) -> Result<(), TrainError> {
    let data = vars
        .data()
        .lock()
        .map_err(|_| TrainError::Config("variable map poisoned".into()))?;
    let tensors: BTreeMap<String, candle_core::Tensor> = data
        .iter()
        .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
        .collect();
    let metadata = BTreeMap::from([("format".to_string(), "pt".to_string())]);
    save_safetensors(path, &tensors, Some(DType::F32), &metadata)?;
    Ok(())
}

/// The first `key=value` line where two fingerprints differ, for the error message.
fn describe_difference(root: &str, theirs: &str) -> String {
    let short = |s: &str| -> String {
        if s.chars().count() > 120 {
            format!("{}...", s.chars().take(120).collect::<String>())
        } else {
            s.to_string()
        }
    };
    for (a, b) in root.lines().zip(theirs.lines()) {
        if a != b {
            let key = a.split('=').next().unwrap_or(a);
            let value = |line: &str| short(line.split_once('=').map_or(line, |(_, v)| v));
            let hint = if key == "step" {
                " (every rank must resume from the same checkpoint: put the run directory on a filesystem all \
                 ranks share)"
            } else {
                " (every rank must run with the same flags)"
            };
            return format!(
                "{key} is {} there but {} on rank 0{hint}",
                value(b),
                value(a)
            );
        }
    }
    "their settings differ".into()
}

/// A trainable model whose variables start from a checkpoint validated against `cfg`.
pub fn load_trainable(
    cfg: &CocaConfig,
    path: &Path,
    device: &Device,
) -> Result<TrainableCoca, TrainError> {
    let ckpt = Checkpoint::open(path)?;
    validate_checkpoint(cfg, &ckpt)?;
    Ok(trainable_from(cfg, DType::F32, device, |name| {
        ckpt.get(name, DType::F32, device)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))
    })?)
}
