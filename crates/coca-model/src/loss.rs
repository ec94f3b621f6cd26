//! The CoCa objective: `λ_con · L_con + λ_cap · L_cap`, as open_clip's `CoCaLoss` on a single process.

use candle_core::{DType, Result, Tensor, D};

use crate::coca::{CocaOutput, TrainOutput};
use crate::nn::ops::{self, log_softmax_last_dim};

/// Loss weights and the ignored padding id.
#[derive(Debug, Clone, Copy)]
pub struct CocaLossConfig {
    /// λ_cap (open_clip's `--coca-caption-loss-weight`, default 2).
    pub caption_weight: f64,
    /// λ_con (open_clip's `--coca-contrastive-loss-weight`, default 1).
    pub contrastive_weight: f64,
    /// Label ignored by the caption loss.
    pub pad_id: u32,
}

impl Default for CocaLossConfig {
    fn default() -> Self {
        Self {
            caption_weight: 2.0,
            contrastive_weight: 1.0,
            pad_id: 0,
        }
    }
}

/// The weighted parts and their sum (scalars).
#[derive(Debug, Clone)]
pub struct CocaLoss {
    /// `λ_con · L_con`.
    pub contrastive: Tensor,
    /// `λ_cap · L_cap`.
    pub caption: Tensor,
    /// The sum, what training minimises.
    pub total: Tensor,
}

/// Mean cross-entropy of rows of `logits` (n, classes) against the diagonal (row i's target is class i).
fn diagonal_cross_entropy(logits: &Tensor) -> Result<Tensor> {
    let n = logits.dim(0)?;
    let logp = log_softmax_last_dim(logits)?;
    let eye = Tensor::eye(n, DType::F32, logits.device())?;
    (logp * eye)?.sum_all()?.affine(-1.0 / n as f64, 0.0)
}

/// Symmetric InfoNCE over the batch: `(CE(s·I·Tᵀ) + CE(s·T·Iᵀ)) / 2`.
pub fn contrastive_loss(image: &Tensor, text: &Tensor, logit_scale: &Tensor) -> Result<Tensor> {
    let image = image.to_dtype(DType::F32)?;
    let text = text.to_dtype(DType::F32)?;
    let scale = logit_scale.to_dtype(DType::F32)?;
    let per_image = image.matmul(&text.t()?)?.broadcast_mul(&scale)?;
    let per_text = per_image.t()?;
    (diagonal_cross_entropy(&per_image)? + diagonal_cross_entropy(&per_text)?)? * 0.5
}

/// Token-level cross-entropy averaged over the labels that are not `pad_id`.
pub fn caption_loss(logits: &Tensor, labels: &Tensor, pad_id: u32) -> Result<Tensor> {
    let (b, l, v) = logits.dims3()?;
    let logits = logits.reshape((b * l, v))?;
    let labels = labels.reshape(b * l)?.to_dtype(DType::U32)?;
    let keep = labels.ne(pad_id)?.to_dtype(DType::F32)?;
    let count = keep.sum_all()?.to_scalar::<f32>()?;
    if count == 0.0 {
        candle_core::bail!("caption loss: every label is padding");
    }
    let nll = ops::cross_entropy(&logits, &labels)?;
    (nll * keep)?.sum_all()?.affine(1.0 / count as f64, 0.0)
}

/// open_clip's `CoCaLoss` on one process. A zero contrastive weight skips the contrastive term entirely (as
/// open_clip does for caption-only fine-tuning).
pub fn coca_loss(out: &CocaOutput, cfg: &CocaLossConfig) -> Result<CocaLoss> {
    let contrastive = weighted_contrastive(
        &out.image_features,
        &out.text_features,
        &out.logit_scale,
        cfg,
    )?;
    let caption = (caption_loss(&out.logits, &out.labels, cfg.pad_id)? * cfg.caption_weight)?;
    let total = (&contrastive + &caption)?;
    Ok(CocaLoss {
        contrastive,
        caption,
        total,
    })
}

/// `λ_con · L_con`, or a zero scalar (and no work) when λ_con is 0.
fn weighted_contrastive(
    image: &Tensor,
    text: &Tensor,
    logit_scale: &Tensor,
    cfg: &CocaLossConfig,
) -> Result<Tensor> {
    if cfg.contrastive_weight == 0.0 {
        return Tensor::zeros((), DType::F32, image.device());
    }
    contrastive_loss(image, text, logit_scale)? * cfg.contrastive_weight
}

/// Caption negative log-likelihood of tokens that enter a loss as constants: its sum over the non-padding
/// tokens and their number. In open_clip's gradient accumulation the other micro-batches' caption tokens are such
/// constants; adding them here instead of concatenating their logits keeps the loss exact and the step small.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CaptionNll {
    /// Σ NLL over the tokens.
    pub sum: f64,
    /// Number of non-padding tokens.
    pub tokens: usize,
}

impl CaptionNll {
    /// The caption NLL of a training output, computed without recording gradients.
    pub fn of(out: &TrainOutput, pad_id: u32) -> Result<Self> {
        let (hidden, labels) = caption_rows(out)?;
        let tokens = labels.iter().filter(|&&l| l != pad_id).count();
        if tokens == 0 {
            return Ok(Self::default());
        }
        let (hidden, head) = (hidden.detach(), out.lm_head.detach());
        let sum = ops::lm_head_nll_sum(&hidden, &head, &labels, pad_id, 1.0)?;
        let sum = sum.to_scalar::<f32>()? as f64;
        Ok(Self { sum, tokens })
    }
}

impl std::ops::Add for CaptionNll {
    type Output = Self;

    fn add(self, other: Self) -> Self {
        Self {
            sum: self.sum + other.sum,
            tokens: self.tokens + other.tokens,
        }
    }
}

/// The caption rows of `out`: hidden states (tokens, width) and labels on the host.
fn caption_rows(out: &TrainOutput) -> Result<(Tensor, Vec<u32>)> {
    let width = out.caption_hidden.dim(D::Minus1)?;
    let hidden = out.caption_hidden.reshape(((), width))?;
    let labels = out
        .labels
        .flatten_all()?
        .to_dtype(DType::U32)?
        .to_device(&candle_core::Device::Cpu)?
        .to_vec1::<u32>()?;
    Ok((hidden, labels))
}

/// [`coca_loss`] from a [`TrainOutput`]: the same value and gradients (up to rounding), but the caption term never
/// materialises the caption logits ([`ops::lm_head_nll_sum`]).
pub fn coca_loss_fused(out: &TrainOutput, cfg: &CocaLossConfig) -> Result<CocaLoss> {
    coca_loss_fused_with(out, CaptionNll::default(), cfg)
}

/// [`coca_loss_fused`] with extra caption tokens held constant: `L_cap = (Σ_out NLL + held.sum) / (tokens of out +
/// held.tokens)`. For open_clip's `--accum-freq`, where `out` carries the whole accumulated batch's embeddings
/// but only the live micro-batch's caption states, and `held` the other micro-batches' caption NLL.
pub fn coca_loss_fused_with(
    out: &TrainOutput,
    held: CaptionNll,
    cfg: &CocaLossConfig,
) -> Result<CocaLoss> {
    let contrastive = weighted_contrastive(
        &out.image_features,
        &out.text_features,
        &out.logit_scale,
        cfg,
    )?;
    let caption = (fused_caption_loss(out, held, cfg.pad_id)? * cfg.caption_weight)?;
    let total = (&contrastive + &caption)?;
    Ok(CocaLoss {
        contrastive,
        caption,
        total,
    })
}

/// The caption term of [`coca_loss_fused_with`], unweighted.
fn fused_caption_loss(out: &TrainOutput, held: CaptionNll, pad_id: u32) -> Result<Tensor> {
    let (hidden, labels) = caption_rows(out)?;
    let live = labels.iter().filter(|&&l| l != pad_id).count();
    let tokens = live + held.tokens;
    if tokens == 0 {
        candle_core::bail!("caption loss: every label is padding");
    }
    let live_part =
        ops::lm_head_nll_sum(&hidden, &out.lm_head, &labels, pad_id, 1.0 / tokens as f64)?;
    if held.tokens == 0 {
        return Ok(live_part);
    }
    live_part.affine(1.0, held.sum / tokens as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::kernels::tests::assert_close;
    use crate::nn::AllAtOnce;
    use crate::test_support::{batch, tiny};
    use crate::weights::TrainableCoca;
    use candle_core::Tensor;

    fn assert_same_gradients(
        tiny: &TrainableCoca,
        a: &candle_core::backprop::GradStore,
        b: &candle_core::backprop::GradStore,
    ) {
        let vars = tiny.vars.data().lock().unwrap();
        for (name, var) in vars.iter() {
            match (a.get(var.as_tensor()), b.get(var.as_tensor())) {
                (Some(x), Some(y)) => assert_close(x, y, 2e-5),
                (x, y) => panic!(
                    "{name}: gradient present in fused {} / reference {}",
                    x.is_some(),
                    y.is_some()
                ),
            }
        }
    }

    #[test]
    fn fused_loss_equals_coca_loss_with_the_same_gradients() {
        let tiny = tiny();
        let (images, ids) = batch(3, 0);
        let cfg = CocaLossConfig::default();
        let reference = coca_loss(&tiny.model.forward(&images, &ids).unwrap(), &cfg).unwrap();
        let out = tiny
            .model
            .forward_for_loss(&images, &ids, &AllAtOnce)
            .unwrap();
        assert_eq!(out.caption_hidden.dims(), &[3, 8, 32]);
        let fused = coca_loss_fused(&out, &cfg).unwrap();
        for (f, r) in [
            (&fused.total, &reference.total),
            (&fused.caption, &reference.caption),
            (&fused.contrastive, &reference.contrastive),
        ] {
            assert_close(f, r, 1e-5);
        }
        assert_same_gradients(
            &tiny,
            &fused.total.backward().unwrap(),
            &reference.total.backward().unwrap(),
        );
    }

    #[test]
    fn held_caption_tokens_equal_concatenated_constant_logits() {
        // open_clip's accumulation: micro-batch 0 live, micro-batch 1 cached (constant) features.
        let tiny = tiny();
        let m = &tiny.model;
        let (im0, ids0) = batch(2, 1);
        let (im1, ids1) = batch(3, 2);
        let cfg = CocaLossConfig::default();
        let cached = m.forward(&im1, &ids1).unwrap();
        let live = m.forward(&im0, &ids0).unwrap();
        let cat = |a: &Tensor, b: &Tensor| Tensor::cat(&[a, &b.detach()], 0).unwrap();
        let joined = CocaOutput {
            image_features: cat(&live.image_features, &cached.image_features),
            text_features: cat(&live.text_features, &cached.text_features),
            logits: cat(&live.logits, &cached.logits),
            labels: cat(&live.labels, &cached.labels),
            logit_scale: live.logit_scale.clone(),
        };
        let reference = coca_loss(&joined, &cfg).unwrap();

        let cached = m.forward_for_loss(&im1, &ids1, &AllAtOnce).unwrap();
        let held = CaptionNll::of(&cached, cfg.pad_id).unwrap();
        assert_eq!(
            held.tokens,
            (0..3).map(|b| 1 + (b + 2) % 6 + 1).sum::<usize>()
        );
        let live = m.forward_for_loss(&im0, &ids0, &AllAtOnce).unwrap();
        let out = TrainOutput {
            image_features: cat(&live.image_features, &cached.image_features),
            text_features: cat(&live.text_features, &cached.text_features),
            ..live
        };
        let fused = coca_loss_fused_with(&out, held, &cfg).unwrap();
        assert_close(&fused.caption, &reference.caption, 1e-5);
        assert_close(&fused.total, &reference.total, 1e-5);
        assert_same_gradients(
            &tiny,
            &fused.total.backward().unwrap(),
            &reference.total.backward().unwrap(),
        );
    }

    #[test]
    fn all_padding_is_an_error_unless_tokens_are_held() {
        let tiny = tiny();
        let (images, ids) = batch(2, 0);
        let mut out = tiny
            .model
            .forward_for_loss(&images, &ids, &AllAtOnce)
            .unwrap();
        out.labels = out.labels.zeros_like().unwrap();
        let cfg = CocaLossConfig::default();
        let err = coca_loss_fused(&out, &cfg).unwrap_err().to_string();
        assert!(err.contains("every label is padding"), "{err}");
        let held = CaptionNll {
            sum: 6.0,
            tokens: 3,
        };
        let loss = coca_loss_fused_with(&out, held, &cfg).unwrap();
        assert_eq!(loss.caption.to_scalar::<f32>().unwrap(), 2.0 * 2.0);
    }
}
