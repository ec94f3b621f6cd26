//! Gradients of one optimiser step, with open_clip's gradient accumulation.

use std::collections::{BTreeMap, BTreeSet};

use candle_core::{Result, Tensor, Var};
use coca_model::segments::{SegmentMode, Segments};
use coca_model::{coca_loss_fused_with, AllAtOnce, CaptionNll, Coca, CocaLossConfig, TrainOutput};

/// One micro-batch: preprocessed images `(B, 3, H, W)` and token ids `(B, L)`.
#[derive(Debug, Clone)]
pub struct MicroBatch {
    /// Pixels, normalised as the model expects.
    pub images: Tensor,
    /// Token ids (u32), padded to the context length.
    pub ids: Tensor,
}

/// Loss parts of a step (already weighted by λ).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct StepLosses {
    /// `λ_con·L_con + λ_cap·L_cap`.
    pub total: f64,
    /// `λ_con·L_con`.
    pub contrastive: f64,
    /// `λ_cap·L_cap`.
    pub caption: f64,
}

/// What a cached micro-batch contributes to the other micro-batches' losses: its embeddings (concatenated into
/// the accumulated batch, so the contrastive loss sees every negative) and its caption NLL, a constant there.
struct Cached {
    image: Tensor,
    text: Tensor,
    caption: CaptionNll,
}

/// The loss of one optimiser step and its gradients for `params` (by name).
///
/// With one micro-batch this is a plain forward and backward. With several it follows open_clip's
/// `--accum-freq`: every micro-batch is first run without gradients to collect its features; then, for each
/// micro-batch in turn, its features are recomputed with gradients and put in place of the cached ones, the loss
/// over the *whole* accumulated batch is backpropagated, and the gradients are summed. The contrastive loss so
/// sees all negatives of the accumulated batch, and the summed gradient equals that of one big batch.
///
/// The caption loss never forms logits ([`coca_model::coca_loss_fused`]): the cached micro-batches enter it
/// as their summed NLL and token count, constants exactly as open_clip's detached cached logits are.
///
/// With `grad_checkpointing` (open_clip's `--grad-checkpointing`) every residual block keeps only its input
/// during the forward and is recomputed in the backward ([`coca_model::segments`]): far less activation
/// memory for about one more forward pass; the gradients are the same.
pub fn step_gradients(
    model: &Coca,
    params: &[(String, Var)],
    micro: &[MicroBatch],
    loss_cfg: &CocaLossConfig,
    grad_checkpointing: bool,
) -> Result<(StepLosses, BTreeMap<String, Tensor>)> {
    step_gradients_with(
        model,
        params,
        micro,
        loss_cfg.pad_id,
        grad_checkpointing,
        &mut |out, held| {
            let loss = coca_loss_fused_with(out, held, loss_cfg)?;
            Ok((read_losses(&loss)?, loss.total))
        },
        None,
    )
}

/// The objective of one backward pass of [`step_gradients_with`]: given the (accumulated) output with one
/// micro-batch live and the other micro-batches' caption NLL held constant, the loss parts to report and the
/// scalar whose gradients are the step's (the loss itself, or a surrogate with the same gradients).
pub type Objective<'a, E> =
    dyn FnMut(&TrainOutput, CaptionNll) -> std::result::Result<(StepLosses, Tensor), E> + 'a;

/// Receives, during the step's last backward pass, the parameters whose gradients have just become final
/// (summed over micro-batches), with those gradients, while the segments below are still to be
/// differentiated: data-parallel training starts their all-reduce here.
pub type OnGradientsFinal<'a, E> =
    dyn FnMut(&[(String, Tensor)]) -> std::result::Result<(), E> + 'a;

/// [`step_gradients`] with the loss supplied by `objective` (the distributed loss plugs in here) and an
/// optional `on_final`, which makes the backward run segment by segment ([`coca_model::segments`]) so that
/// gradients become final early; the micro-batch and accumulation logic are the same.
pub fn step_gradients_with<E: From<candle_core::Error>>(
    model: &Coca,
    params: &[(String, Var)],
    micro: &[MicroBatch],
    pad_id: u32,
    grad_checkpointing: bool,
    objective: &mut Objective<'_, E>,
    mut on_final: Option<&mut OnGradientsFinal<'_, E>>,
) -> std::result::Result<(StepLosses, BTreeMap<String, Tensor>), E> {
    if micro.is_empty() {
        return Err(candle_core::Error::Msg(
            "a training step needs at least one micro-batch".into(),
        )
        .into());
    }
    let mode = match (grad_checkpointing, on_final.is_some()) {
        (true, _) => SegmentMode::Recompute,
        (false, true) => SegmentMode::Cut,
        (false, false) => SegmentMode::Whole,
    };
    let mut grads: BTreeMap<String, Tensor> = BTreeMap::new();
    // Differentiate one live micro-batch pass by pass, adding its gradients to `grads`; on the step's last
    // micro-batch each pass's gradients are final and go to `on_final` at once.
    let mut backward = |segments: Segments,
                        total: &Tensor,
                        last: bool|
     -> std::result::Result<(), E> {
        let mut failure: Option<E> = None;
        let mut seen = BTreeSet::new();
        segments
            .backward(total, |store| {
                let mut completed = Vec::new();
                for (name, var) in params {
                    let Some(g) = store.get(var.as_tensor()) else {
                        continue;
                    };
                    if !seen.insert(name.as_str()) {
                        candle_core::bail!(
                            "parameter {name} is used by two segments of the model, so its gradient is \
                             not final after either"
                        );
                    }
                    // candle's backward builds each gradient with recorded ops, so a gradient references
                    // the step's activations; detached, they are freed with the graph instead of living on
                    // in the gradients and optimiser moments.
                    let g = g.detach();
                    let sum = match grads.remove(name) {
                        Some(prev) => (prev + g)?,
                        None => g,
                    };
                    grads.insert(name.clone(), sum.clone());
                    completed.push((name.clone(), sum));
                }
                if let (true, Some(hook)) = (last, on_final.as_mut()) {
                    if let Err(e) = hook(&completed) {
                        failure = Some(e);
                        candle_core::bail!("gradient hand-off failed");
                    }
                }
                Ok(())
            })
            .map_err(|e| failure.take().unwrap_or_else(|| e.into()))
    };
    if micro.len() == 1 {
        let segments = Segments::new(mode);
        let out = model.forward_for_loss(&micro[0].images, &micro[0].ids, &segments)?;
        let (losses, total) = objective(&out, CaptionNll::default())?;
        drop(out);
        backward(segments, &total, true)?;
        return Ok((losses, grads));
    }
    let cached: Vec<Cached> = micro
        .iter()
        .map(|mb| {
            let out = model.forward_for_loss(&mb.images, &mb.ids, &AllAtOnce)?;
            Ok(Cached {
                image: out.image_features.detach(),
                text: out.text_features.detach(),
                caption: CaptionNll::of(&out, pad_id)?,
            })
        })
        .collect::<Result<_>>()?;
    let mut losses = StepLosses::default();
    for (j, mb) in micro.iter().enumerate() {
        let segments = Segments::new(mode);
        let live = model.forward_for_loss(&mb.images, &mb.ids, &segments)?;
        let pick = |f: fn(&Cached) -> &Tensor, own: &Tensor| -> Result<Tensor> {
            let parts: Vec<&Tensor> = cached
                .iter()
                .enumerate()
                .map(|(i, c)| if i == j { own } else { f(c) })
                .collect();
            Tensor::cat(&parts, 0)
        };
        // Summed in micro-batch order so every step adds the same constants in the same order.
        let held = cached
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != j)
            .fold(CaptionNll::default(), |acc, (_, c)| acc + c.caption);
        let joined = TrainOutput {
            image_features: pick(|c| &c.image, &live.image_features)?,
            text_features: pick(|c| &c.text, &live.text_features)?,
            ..live
        };
        let (step_losses, total) = objective(&joined, held)?;
        losses = step_losses;
        drop(joined);
        backward(segments, &total, j + 1 == micro.len())?;
    }
    Ok((losses, grads))
}

/// The loss parts of `loss` as numbers.
pub(crate) fn read_losses(loss: &coca_model::CocaLoss) -> Result<StepLosses> {
    let scalar = |t: &Tensor| -> Result<f64> { Ok(t.to_scalar::<f32>()? as f64) };
    Ok(StepLosses {
        total: scalar(&loss.total)?,
        contrastive: scalar(&loss.contrastive)?,
        caption: scalar(&loss.caption)?,
    })
}

/// Keep the learned temperature in open_clip's range after an update: `logit_scale ∈ [0, ln 100]`.
pub fn clamp_logit_scale(var: &Var) -> Result<()> {
    let clamped = var.as_tensor().clamp(0f32, 100f32.ln())?;
    var.set(&clamped)
}
