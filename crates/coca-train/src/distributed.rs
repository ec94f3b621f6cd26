//! Data-parallel training over a [`Communicator`]: open_clip's distributed CoCa loss (`--local-loss`,
//! `--gather-with-grad`) and DDP's gradient averaging.
//!
//! **The loss.** Every rank forwards its own micro-batch. candle's backward cannot call collectives, so the
//! gathered contrastive loss is differentiated in two stages:
//! 1. the ranks' *detached* image and text features are all-gathered (rank order) into variables, and the
//!    contrastive loss over them is built and backpropagated on its own: a small graph that yields the
//!    gradient for every gathered row, for this rank's own rows where `--local-loss` uses them separately, and
//!    for the temperature;
//! 2. the gradient for this rank's features is assembled as open_clip's autograd would produce it: with
//!    `--gather-with-grad`, the **sum over ranks** of each rank's gradient for this rank's rows (the backward
//!    of a differentiable all-gather, a reduce-scatter: here an all-reduce and a slice); without it only this
//!    rank's own contribution (open_clip's plain all-gather carries no gradient to other ranks);
//! 3. the model is backpropagated once through `caption + Σ features · gradient + exp(logit_scale) · gradient`,
//!    a surrogate whose gradients are the loss's.
//!
//! **What equals what** (`W` ranks of `B` samples, DDP averaging the gradients):
//! - the contrastive loss over gathered features is the single-process loss over the global batch of `W·B`
//!   (with `--local-loss`, rank `r`'s loss covers its `B` rows against all `W·B` columns, labels offset by
//!   `r·B`, and the mean over ranks is the global loss);
//! - the caption loss is each rank's own mean over its tokens; the averaged gradient is that of the mean of
//!   the ranks' means, which is the global mean when every rank has as many caption tokens;
//! - with `--gather-with-grad` (with or without `--local-loss`) the averaged gradients are the single-process
//!   gradients over the global batch;
//! - without it, DDP averages gradients that each saw only their own rows: the contrastive gradient of every
//!   weight except `logit_scale` is `1/W` of the global one; with `--local-loss` too, it is the gradient of
//!   the global loss with the other side of every logit detached (image rows against constant text columns
//!   and vice versa). `logit_scale` gets the full global gradient either way.
//!
//! **Gradient averaging**, overlapped with the backward pass. In a run of several ranks the step's last
//! backward runs segment by segment ([`coca_model::segments`]: the objective, then every residual block and
//! tower from the top of the decoder down to the patch embedding), and each weight's gradient is final once
//! its segment is done. Final gradients go, in that order, into buckets of about
//! [`DistOptions::bucket_bytes`]; each full bucket, and the rest at the end, is started with
//! [`Communicator::start_all_reduce_sum`]. With a [`coca_dist::BackgroundComm`] (what
//! [`crate::Trainer::distributed`] uses for the host backends) the all-reduce runs on the communication thread
//! while this thread differentiates the segments below, as PyTorch DDP's bucket hooks do. After the backward,
//! every bucket is waited for and divided by `W` (clipping and the optimiser step follow, as in open_clip).
//! NCCL stays on the training thread (it must enqueue on that thread's stream); its buckets are enqueued as
//! they fill too, but on the same stream as the backward's kernels, so the GPU runs them in turn: overlapping
//! them on the GPU needs a communication stream with events, not done yet.

use std::collections::{BTreeMap, BTreeSet};

use candle_core::{DType, Tensor, Var};
use coca_dist::{Communicator, PendingTensor};
use coca_model::loss::contrastive_loss;
use coca_model::nn::ops::log_softmax_last_dim;
use coca_model::{coca_loss_fused_with, CaptionNll, Coca, CocaLossConfig, TrainOutput};
use serde::{Deserialize, Serialize};

use crate::error::TrainError;
use crate::step::{read_losses, step_gradients_with, MicroBatch, StepLosses};

/// PyTorch DDP's default bucket size (`bucket_cap_mb=25`).
pub const DEFAULT_BUCKET_BYTES: usize = 25 << 20;

/// How the contrastive loss uses the other ranks' features (open_clip's flags of the same names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DistOptions {
    /// `--local-loss`: logits only for this rank's rows against all gathered columns.
    pub local_loss: bool,
    /// `--gather-with-grad`: gradients flow to every rank's features through the gather.
    pub gather_with_grad: bool,
    /// Bytes of gradients per all-reduce.
    pub bucket_bytes: usize,
}

impl Default for DistOptions {
    fn default() -> Self {
        Self {
            local_loss: false,
            gather_with_grad: false,
            bucket_bytes: DEFAULT_BUCKET_BYTES,
        }
    }
}

/// This rank's loss parts and the parameter gradients **averaged over ranks** for one optimiser step
/// (accumulation as [`crate::step::step_gradients`]). The all-reduces of the averaging start during the
/// backward, as segments make gradients final (see the module docs).
pub fn step_gradients_distributed(
    model: &Coca,
    params: &[(String, Var)],
    micro: &[MicroBatch],
    loss_cfg: &CocaLossConfig,
    grad_checkpointing: bool,
    comm: &dyn Communicator,
    options: &DistOptions,
) -> Result<(StepLosses, BTreeMap<String, Tensor>), TrainError> {
    let mut averager = GradientAverager::new(comm, options.bucket_bytes);
    let mut start_buckets = |completed: &[(String, Tensor)]| -> Result<(), TrainError> {
        for (name, grad) in completed {
            averager.add(name, grad)?;
        }
        Ok(())
    };
    let (losses, mut grads) = step_gradients_with(
        model,
        params,
        micro,
        loss_cfg.pad_id,
        grad_checkpointing,
        &mut |out, held| distributed_objective(out, held, loss_cfg, comm, options),
        // One rank has nothing to communicate, so nothing to overlap.
        (comm.world_size() > 1).then_some(&mut start_buckets),
    )?;
    averager.finish(&mut grads)?;
    Ok((losses, grads))
}

/// The distributed CoCa loss of one backward pass: the loss parts (this rank's view: the gathered
/// contrastive loss, or with `--local-loss` this rank's share of it, and this rank's caption loss) and the
/// surrogate scalar to backpropagate through the model.
pub fn distributed_objective(
    out: &TrainOutput,
    held: CaptionNll,
    cfg: &CocaLossConfig,
    comm: &dyn Communicator,
    options: &DistOptions,
) -> Result<(StepLosses, Tensor), TrainError> {
    // The caption term alone: a zero contrastive weight skips the local contrastive loss entirely.
    let caption_only = CocaLossConfig {
        contrastive_weight: 0.0,
        ..*cfg
    };
    let caption = coca_loss_fused_with(out, held, &caption_only)?;
    let mut losses = read_losses(&caption)?;
    if cfg.contrastive_weight == 0.0 {
        return Ok((losses, caption.total));
    }
    let gathered = GatheredContrastive::new(out, comm)?;
    let (contrastive, grads) =
        gathered.loss_and_gradients(cfg.contrastive_weight, options.local_loss)?;
    let local = gathered.local_gradients(&grads, comm, options)?;
    let image =
        (&out.image_features * local.image.to_dtype(out.image_features.dtype())?)?.sum_all()?;
    let text = (&out.text_features * local.text.to_dtype(out.text_features.dtype())?)?.sum_all()?;
    let scale = (&out.logit_scale * grads.scale.to_dtype(out.logit_scale.dtype())?)?;
    let surrogate = (((caption.total + image)? + text)? + scale)?;
    losses.contrastive = contrastive;
    losses.total = losses.caption + contrastive;
    Ok((losses, surrogate))
}

/// The features of every rank as variables of a small, separate graph.
struct GatheredContrastive {
    rank: usize,
    rows: usize,
    all_image: Var,
    all_text: Var,
    own_image: Var,
    own_text: Var,
    scale: Var,
}

/// Gradients of the gathered contrastive loss.
struct GatheredGrads {
    /// For every gathered row: `(W·B, 2·D)`, image then text features.
    all: Tensor,
    /// For this rank's rows used as local rows (`--local-loss`): `(B, 2·D)`.
    own: Option<Tensor>,
    /// For `exp(logit_scale)`.
    scale: Tensor,
}

/// The gradient for this rank's live features.
struct LocalGrads {
    image: Tensor,
    text: Tensor,
}

impl GatheredContrastive {
    fn new(out: &TrainOutput, comm: &dyn Communicator) -> Result<Self, TrainError> {
        let image = out.image_features.detach().to_dtype(DType::F32)?;
        let text = out.text_features.detach().to_dtype(DType::F32)?;
        let (rows, dim) = image.dims2()?;
        // One collective for both sides: rows of [image | text].
        let all = comm.all_gather(&Tensor::cat(&[&image, &text], 1)?)?;
        Ok(Self {
            rank: comm.rank(),
            rows,
            all_image: Var::from_tensor(&all.narrow(1, 0, dim)?.contiguous()?)?,
            all_text: Var::from_tensor(&all.narrow(1, dim, dim)?.contiguous()?)?,
            own_image: Var::from_tensor(&image)?,
            own_text: Var::from_tensor(&text)?,
            scale: Var::from_tensor(&out.logit_scale.detach().to_dtype(DType::F32)?)?,
        })
    }

    /// `λ_con · L_con` over the gathered features and its gradients.
    fn loss_and_gradients(
        &self,
        weight: f64,
        local_loss: bool,
    ) -> Result<(f64, GatheredGrads), TrainError> {
        let loss = if local_loss {
            let offset = self.rank * self.rows;
            let per_image = self
                .own_image
                .matmul(&self.all_text.t()?)?
                .broadcast_mul(&self.scale)?;
            let per_text = self
                .own_text
                .matmul(&self.all_image.t()?)?
                .broadcast_mul(&self.scale)?;
            ((offset_cross_entropy(&per_image, offset)?
                + offset_cross_entropy(&per_text, offset)?)?
                * 0.5)?
        } else {
            contrastive_loss(&self.all_image, &self.all_text, &self.scale)?
        };
        let weighted = (loss * weight)?;
        let value = weighted.to_scalar::<f32>()? as f64;
        let store = weighted.backward()?;
        let grad = |v: &Var| -> Result<Tensor, TrainError> {
            // Detached: these enter the model's surrogate loss as constants.
            Ok(match store.get(v.as_tensor()) {
                Some(g) => g.detach(),
                None => v.as_tensor().zeros_like()?,
            })
        };
        let all = Tensor::cat(&[grad(&self.all_image)?, grad(&self.all_text)?], 1)?;
        let own = if local_loss {
            Some(Tensor::cat(
                &[grad(&self.own_image)?, grad(&self.own_text)?],
                1,
            )?)
        } else {
            None
        };
        Ok((
            value,
            GatheredGrads {
                all,
                own,
                scale: grad(&self.scale)?,
            },
        ))
    }

    /// This rank's feature gradients from the gathered ones (see the module docs).
    fn local_gradients(
        &self,
        grads: &GatheredGrads,
        comm: &dyn Communicator,
        options: &DistOptions,
    ) -> Result<LocalGrads, TrainError> {
        let mine = |all: &Tensor| all.narrow(0, self.rank * self.rows, self.rows);
        let through_gather = if options.gather_with_grad {
            // Backward of a differentiable all-gather: every rank's gradient for these rows, summed.
            Some(mine(&comm.all_reduce_sum(&grads.all)?)?)
        } else if !options.local_loss {
            // open_clip puts the live local features into the gathered tensor: their own gradient only.
            Some(mine(&grads.all)?)
        } else {
            // Local loss without gradient through the gather: the gathered copy is a constant.
            None
        };
        let both = match (through_gather, &grads.own) {
            (Some(g), Some(own)) => (g + own)?,
            (Some(g), None) => g,
            (None, Some(own)) => own.clone(),
            (None, None) => unreachable!("local loss always has its own rows"),
        };
        let dim = both.dim(1)? / 2;
        Ok(LocalGrads {
            image: both.narrow(1, 0, dim)?,
            text: both.narrow(1, dim, dim)?,
        })
    }
}

/// Mean cross-entropy of the rows of `logits` `(B, N)` whose target is column `offset + row`.
fn offset_cross_entropy(logits: &Tensor, offset: usize) -> Result<Tensor, TrainError> {
    let (rows, cols) = logits.dims2()?;
    let device = logits.device();
    let mut parts = Vec::with_capacity(3);
    if offset > 0 {
        parts.push(Tensor::zeros((rows, offset), DType::F32, device)?);
    }
    parts.push(Tensor::eye(rows, DType::F32, device)?);
    if cols > offset + rows {
        parts.push(Tensor::zeros(
            (rows, cols - offset - rows),
            DType::F32,
            device,
        )?);
    }
    let targets = Tensor::cat(&parts, 1)?;
    let logp = log_softmax_last_dim(logits)?;
    Ok((logp * targets)?
        .sum_all()?
        .affine(-1.0 / rows as f64, 0.0)?)
}

/// Replace every gradient by its mean over ranks: flattened in name order into buckets of about
/// `bucket_bytes`, each all-reduced once. Every rank must hold gradients for the same names and shapes.
pub fn average_gradients(
    comm: &dyn Communicator,
    grads: &mut BTreeMap<String, Tensor>,
    bucket_bytes: usize,
) -> Result<(), TrainError> {
    GradientAverager::new(comm, bucket_bytes).finish(grads)
}

/// Averages gradients over ranks in buckets that are started as gradients arrive and waited for at the end.
/// Every rank must add the same names, with the same shapes, in the same order.
pub struct GradientAverager<'a> {
    comm: &'a dyn Communicator,
    /// Elements per bucket.
    limit: usize,
    /// Gradients of the bucket being filled.
    filling: Vec<(String, Tensor)>,
    filled: usize,
    /// Buckets on their way: the gradients (for their names and shapes), and the pending sum.
    started: Vec<(Vec<(String, Tensor)>, PendingTensor)>,
    added: BTreeSet<String>,
}

impl<'a> GradientAverager<'a> {
    /// An averager over `comm`'s ranks with buckets of about `bucket_bytes` (of f32).
    pub fn new(comm: &'a dyn Communicator, bucket_bytes: usize) -> Self {
        Self {
            comm,
            limit: (bucket_bytes / 4).max(1),
            filling: Vec::new(),
            filled: 0,
            started: Vec::new(),
            added: BTreeSet::new(),
        }
    }

    /// Add the final gradient of `name`; a bucket that reaches the size limit is started.
    pub fn add(&mut self, name: &str, grad: &Tensor) -> Result<(), TrainError> {
        if self.comm.world_size() == 1 {
            return Ok(());
        }
        if !self.added.insert(name.to_string()) {
            return Err(TrainError::Config(format!(
                "gradient of {name} added twice for averaging"
            )));
        }
        self.filled += grad.elem_count();
        self.filling.push((name.to_string(), grad.clone()));
        if self.filled >= self.limit {
            self.flush()?;
        }
        Ok(())
    }

    /// Start the bucket being filled, however full it is.
    pub fn flush(&mut self) -> Result<(), TrainError> {
        if self.filling.is_empty() {
            return Ok(());
        }
        let flat: Vec<Tensor> = self
            .filling
            .iter()
            .map(|(_, g)| g.to_dtype(DType::F32)?.flatten_all())
            .collect::<candle_core::Result<_>>()?;
        let pending = self.comm.start_all_reduce_sum(&Tensor::cat(&flat, 0)?)?;
        self.started
            .push((std::mem::take(&mut self.filling), pending));
        self.filled = 0;
        Ok(())
    }

    /// Average whatever of `grads` was not added yet (in name order), wait for every bucket and replace each
    /// gradient in `grads` by its mean over ranks.
    pub fn finish(mut self, grads: &mut BTreeMap<String, Tensor>) -> Result<(), TrainError> {
        let world = self.comm.world_size();
        if world == 1 {
            return Ok(());
        }
        let rest: Vec<(String, Tensor)> = grads
            .iter()
            .filter(|(name, _)| !self.added.contains(*name))
            .map(|(n, g)| (n.clone(), g.clone()))
            .collect();
        for (name, grad) in &rest {
            self.add(name, grad)?;
        }
        self.flush()?;
        for (bucket, pending) in self.started {
            let mean = pending.wait()?.affine(1.0 / world as f64, 0.0)?;
            let mut at = 0;
            for (name, g) in bucket {
                let n = g.elem_count();
                let averaged = mean
                    .narrow(0, at, n)?
                    .reshape(g.dims())?
                    .to_dtype(g.dtype())?;
                at += n;
                grads.insert(name, averaged);
            }
        }
        Ok(())
    }
}

/// The mean over ranks of the loss parts, identical on every rank (what is logged, and what stops every rank
/// together when it is not finite).
pub fn mean_losses(comm: &dyn Communicator, losses: StepLosses) -> Result<StepLosses, TrainError> {
    let mut parts = [
        losses.total as f32,
        losses.contrastive as f32,
        losses.caption as f32,
    ];
    comm.all_reduce_sum_f32(&mut parts)?;
    let w = comm.world_size() as f64;
    Ok(StepLosses {
        total: parts[0] as f64 / w,
        contrastive: parts[1] as f64 / w,
        caption: parts[2] as f64 / w,
    })
}

/// Copy rank 0's values into every variable (names in sorted order, bucketed), so all ranks start alike.
pub fn broadcast_vars(
    comm: &dyn Communicator,
    vars: &[(String, Var)],
    bucket_bytes: usize,
) -> Result<(), TrainError> {
    if comm.world_size() == 1 {
        return Ok(());
    }
    let mut sorted: Vec<&(String, Var)> = vars.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let limit = (bucket_bytes / 4).max(1);
    let mut start = 0;
    while start < sorted.len() {
        let mut end = start;
        let mut filled = 0;
        while end < sorted.len() && (end == start || filled < limit) {
            filled += sorted[end].1.elem_count();
            end += 1;
        }
        let group = &sorted[start..end];
        let flat: Vec<Tensor> = group
            .iter()
            .map(|(_, v)| v.as_tensor().detach().to_dtype(DType::F32)?.flatten_all())
            .collect::<candle_core::Result<_>>()?;
        let from0 = comm.broadcast(&Tensor::cat(&flat, 0)?)?;
        let mut at = 0;
        for (_, var) in group {
            let n = var.elem_count();
            let value = from0
                .narrow(0, at, n)?
                .reshape(var.dims())?
                .to_dtype(var.dtype())?;
            var.set(&value)?;
            at += n;
        }
        start = end;
    }
    Ok(())
}

/// The per-rank data positions of a checkpoint written by a distributed run (`{"world_size": W, "ranks":
/// [...]}`, see [`crate::Trainer::distributed`]): `W` and the positions in rank order; `None` for a
/// checkpoint of a single process, whose data position is the loader's own.
pub fn rank_positions(saved: &serde_json::Value) -> Option<(usize, Vec<serde_json::Value>)> {
    let world = saved.get("world_size")?.as_u64()? as usize;
    let ranks = saved.get("ranks")?.as_array()?;
    (ranks.len() == world).then(|| (world, ranks.clone()))
}
