//! The CoCa objective: `λ_con · L_con + λ_cap · L_cap`, as open_clip's `CoCaLoss` on a single process.

use candle_core::{DType, Result, Tensor, D};

use crate::coca::CocaOutput;
use crate::nn::fused;
use crate::nn::ops::log_softmax_last_dim;

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
    let labels = labels.reshape((b * l, 1))?.to_dtype(DType::U32)?;
    let keep = labels.squeeze(1)?.ne(pad_id)?.to_dtype(logits.dtype())?;
    let count = keep.to_dtype(DType::F32)?.sum_all()?.to_scalar::<f32>()?;
    if count == 0.0 {
        candle_core::bail!("caption loss: every label is padding");
    }
    if fused::applies(&[&logits]) {
        // One pass over the (tokens × vocab) logits each way instead of a composed log-softmax.
        let host = labels
            .flatten_all()?
            .to_device(&candle_core::Device::Cpu)?
            .to_vec1::<u32>()?;
        let nll = fused::cross_entropy_rows(&logits, &host)?;
        return (nll * keep)?.sum_all()?.affine(1.0 / count as f64, 0.0);
    }
    let logp = log_softmax_last_dim(&logits)?;
    let picked = logp.gather(&labels, D::Minus1)?.squeeze(1)?;
    (picked * keep.to_dtype(DType::F32)?)?
        .sum_all()?
        .affine(-1.0 / count as f64, 0.0)
}

/// open_clip's `CoCaLoss` on one process. A zero contrastive weight skips the contrastive term entirely (as
/// open_clip does for caption-only fine-tuning).
pub fn coca_loss(out: &CocaOutput, cfg: &CocaLossConfig) -> Result<CocaLoss> {
    let device = out.logits.device();
    let contrastive = if cfg.contrastive_weight == 0.0 {
        Tensor::zeros((), DType::F32, device)?
    } else {
        (contrastive_loss(&out.image_features, &out.text_features, &out.logit_scale)?
            * cfg.contrastive_weight)?
    };
    let caption = (caption_loss(&out.logits, &out.labels, cfg.pad_id)? * cfg.caption_weight)?;
    let total = (&contrastive + &caption)?;
    Ok(CocaLoss {
        contrastive,
        caption,
        total,
    })
}
