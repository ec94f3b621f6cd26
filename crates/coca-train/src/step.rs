//! Gradients of one optimiser step, with open_clip's gradient accumulation.

use std::collections::BTreeMap;

use candle_core::{Result, Tensor, Var};
use coca_model::{
    coca_loss_fused, coca_loss_fused_with, CaptionNll, Coca, CocaLossConfig, TrainOutput,
};

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
/// The caption loss never forms logits ([`coca_loss_fused`]): the cached micro-batches enter it as their summed
/// NLL and token count, constants exactly as open_clip's detached cached logits are.
pub fn step_gradients(
    model: &Coca,
    params: &[(String, Var)],
    micro: &[MicroBatch],
    loss_cfg: &CocaLossConfig,
) -> Result<(StepLosses, BTreeMap<String, Tensor>)> {
    if micro.is_empty() {
        candle_core::bail!("a training step needs at least one micro-batch");
    }
    let mut grads: BTreeMap<String, Tensor> = BTreeMap::new();
    let mut add = |store: candle_core::backprop::GradStore| -> Result<()> {
        for (name, var) in params {
            if let Some(g) = store.get(var.as_tensor()) {
                let sum = match grads.remove(name) {
                    Some(prev) => (prev + g)?,
                    None => g.clone(),
                };
                grads.insert(name.clone(), sum);
            }
        }
        Ok(())
    };
    if micro.len() == 1 {
        let out = model.forward_for_loss(&micro[0].images, &micro[0].ids)?;
        let loss = coca_loss_fused(&out, loss_cfg)?;
        let losses = read_losses(&loss)?;
        add(loss.total.backward()?)?;
        return Ok((losses, grads));
    }
    let cached: Vec<Cached> = micro
        .iter()
        .map(|mb| {
            let out = model.forward_for_loss(&mb.images, &mb.ids)?;
            Ok(Cached {
                image: out.image_features.detach(),
                text: out.text_features.detach(),
                caption: CaptionNll::of(&out, loss_cfg.pad_id)?,
            })
        })
        .collect::<Result<_>>()?;
    let mut losses = StepLosses::default();
    for (j, mb) in micro.iter().enumerate() {
        let live = model.forward_for_loss(&mb.images, &mb.ids)?;
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
        let loss = coca_loss_fused_with(&joined, held, loss_cfg)?;
        losses = read_losses(&loss)?;
        add(loss.total.backward()?)?;
    }
    Ok((losses, grads))
}

fn read_losses(loss: &coca_model::CocaLoss) -> Result<StepLosses> {
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
