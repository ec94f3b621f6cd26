//! The CoCa model: image tower, unimodal text tower, multimodal decoder and the learned temperature.

use candle_core::{DType, Device, Result, Tensor};
use candle_nn::VarBuilder;

use crate::config::CocaConfig;
use crate::decoder::MultimodalDecoder;
use crate::nn::ops::{l2_normalize, project};
use crate::nn::{Activation, AllAtOnce, BlockRunner};
use crate::text::{TextOutput, TextTower};
use crate::vision::{VisionOutput, VisionTower};

/// A loaded CoCa model. Built from a [`VarBuilder`], so the same code serves inference (weights from a
/// checkpoint) and training (weights as `Var`s of a `VarMap`, gradients flowing through every op).
#[derive(Debug, Clone)]
pub struct Coca {
    config: CocaConfig,
    visual: VisionTower,
    text: TextTower,
    text_decoder: MultimodalDecoder,
    logit_scale: Tensor,
}

/// Image side of the model: the normalised contrastive embedding and the caption context.
#[derive(Debug, Clone)]
pub struct ImageEncoding {
    /// L2-normalised embedding (batch, embed_dim).
    pub embedding: Tensor,
    /// Tokens the decoder cross-attends to (batch, n, width).
    pub tokens: Tensor,
}

/// Text side of the model: the normalised contrastive embedding and the unimodal token states.
#[derive(Debug, Clone)]
pub struct TextEncoding {
    /// L2-normalised embedding (batch, embed_dim).
    pub embedding: Tensor,
    /// Unimodal hidden states of the text positions (batch, len, width).
    pub tokens: Tensor,
}

/// What open_clip's `CoCa.forward` returns.
#[derive(Debug, Clone)]
pub struct CocaOutput {
    /// L2-normalised image embeddings (batch, embed_dim).
    pub image_features: Tensor,
    /// L2-normalised text embeddings (batch, embed_dim).
    pub text_features: Tensor,
    /// Teacher-forced caption logits (batch, len − 1, vocab): position `i` predicts token `i + 1`.
    pub logits: Tensor,
    /// The caption targets `text[:, 1:]` (batch, len − 1), u32.
    pub labels: Tensor,
    /// `exp(logit_scale)`, a scalar.
    pub logit_scale: Tensor,
}

/// What the training loss needs, without the (batch × len − 1 × vocab) caption logits: the decoder's final
/// hidden states and the LM head, so the caption loss can apply the head chunk by chunk
/// ([`crate::loss::coca_loss_fused`]).
#[derive(Debug, Clone)]
pub struct TrainOutput {
    /// L2-normalised image embeddings (batch, embed_dim).
    pub image_features: Tensor,
    /// L2-normalised text embeddings (batch, embed_dim).
    pub text_features: Tensor,
    /// Decoder output after `ln_final` (batch, len − 1, width): position `i` predicts token `i + 1`.
    pub caption_hidden: Tensor,
    /// The LM head (width, vocab); `caption_hidden · lm_head` are [`CocaOutput::logits`].
    pub lm_head: Tensor,
    /// The caption targets `text[:, 1:]` (batch, len − 1), u32.
    pub labels: Tensor,
    /// `exp(logit_scale)`, a scalar.
    pub logit_scale: Tensor,
}

impl Coca {
    /// Build the model from a validated config, taking every parameter from `vb` by open_clip's names.
    pub fn new(config: &CocaConfig, vb: VarBuilder) -> Result<Self> {
        let act = if config.quick_gelu {
            Activation::QuickGelu
        } else {
            Activation::Gelu
        };
        Ok(Self {
            config: config.clone(),
            visual: VisionTower::load(vb.pp("visual"), config, act)?,
            text: TextTower::load(vb.pp("text"), &config.text_cfg, config.embed_dim, act)?,
            text_decoder: MultimodalDecoder::load(
                vb.pp("text_decoder"),
                &config.multimodal_cfg,
                act,
            )?,
            logit_scale: vb.get((), "logit_scale")?,
        })
    }

    /// The config the model was built from.
    pub fn config(&self) -> &CocaConfig {
        &self.config
    }

    /// The image tower.
    pub fn visual(&self) -> &VisionTower {
        &self.visual
    }

    /// The unimodal text tower.
    pub fn text(&self) -> &TextTower {
        &self.text
    }

    /// The multimodal decoder.
    pub fn text_decoder(&self) -> &MultimodalDecoder {
        &self.text_decoder
    }

    /// The raw (log-space) temperature parameter.
    pub fn logit_scale_param(&self) -> &Tensor {
        &self.logit_scale
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        self.logit_scale.device()
    }

    /// The dtype of the weights.
    pub fn dtype(&self) -> DType {
        self.visual.dtype()
    }

    /// Encode preprocessed images (batch, 3, H, W).
    pub fn encode_image(&self, images: &Tensor) -> Result<ImageEncoding> {
        ImageEncoding::of(self.visual.forward(images, &AllAtOnce)?)
    }

    /// Encode token ids (batch, len ≤ context length).
    pub fn encode_text(&self, ids: &Tensor) -> Result<TextEncoding> {
        TextEncoding::of(self.text.forward(ids, &AllAtOnce)?)
    }

    /// open_clip's training forward: both embeddings, teacher-forced caption logits and their labels.
    pub fn forward(&self, images: &Tensor, ids: &Tensor) -> Result<CocaOutput> {
        let image = self.encode_image(images)?;
        self.forward_with_image(&image, ids)
    }

    /// [`Coca::forward`] with the image side already encoded (reused across captions of one image).
    pub fn forward_with_image(&self, image: &ImageEncoding, ids: &Tensor) -> Result<CocaOutput> {
        let out = self.caption_side(image.clone(), ids, &AllAtOnce)?;
        Ok(CocaOutput {
            image_features: out.image_features,
            text_features: out.text_features,
            logits: project(&out.caption_hidden, &out.lm_head)?,
            labels: out.labels,
            logit_scale: out.logit_scale,
        })
    }

    /// The training forward of [`Coca::forward`] stopped before the LM head: everything the CoCa loss needs,
    /// with the decoder's final hidden states in place of the caption logits. Every residual block is run by
    /// `runner`, and the towers' outputs are handed to the rest of the model through [`BlockRunner::cut`]:
    /// [`AllAtOnce`] for one graph, [`crate::segments::Segments`] for a backward cut into segments.
    pub fn forward_for_loss(
        &self,
        images: &Tensor,
        ids: &Tensor,
        runner: &dyn BlockRunner,
    ) -> Result<TrainOutput> {
        let image = ImageEncoding::of(self.visual.forward(images, runner)?)?;
        let (embedding, tokens) = cut_pair(runner, &image.embedding, &image.tokens)?;
        self.caption_side(ImageEncoding { embedding, tokens }, ids, runner)
    }

    /// Everything after the image tower: encode the captions (their outputs handed on through `runner`'s cut),
    /// and run the decoder teacher-forced on the unimodal states of positions `0..len − 1` against the targets
    /// `ids[:, 1:]`.
    fn caption_side(
        &self,
        image: ImageEncoding,
        ids: &Tensor,
        runner: &dyn BlockRunner,
    ) -> Result<TrainOutput> {
        let text = TextEncoding::of(self.text.forward(ids, runner)?)?;
        let (text_features, tokens) = cut_pair(runner, &text.embedding, &text.tokens)?;
        let len = ids.dim(1)?;
        if len < 2 {
            candle_core::bail!("teacher forcing needs at least 2 tokens per caption, got {len}");
        }
        let labels = ids.narrow(1, 1, len - 1)?.to_dtype(DType::U32)?;
        let decoder_in = tokens.narrow(1, 0, len - 1)?;
        let caption_hidden = self
            .text_decoder
            .final_hidden(&image.tokens, &decoder_in, runner)?;
        Ok(TrainOutput {
            image_features: image.embedding,
            text_features,
            caption_hidden,
            lm_head: self.text_decoder.lm_head().clone(),
            labels,
            logit_scale: self.logit_scale.exp()?,
        })
    }
}

impl ImageEncoding {
    fn of(out: VisionOutput) -> Result<Self> {
        Ok(Self {
            embedding: l2_normalize(&out.pooled)?,
            tokens: out.tokens,
        })
    }
}

impl TextEncoding {
    fn of(out: TextOutput) -> Result<Self> {
        Ok(Self {
            embedding: l2_normalize(&out.pooled)?,
            tokens: out.tokens,
        })
    }
}

/// A tower's embedding and tokens handed on together through `runner` (one cut: they share the tower's head).
fn cut_pair(
    runner: &dyn BlockRunner,
    embedding: &Tensor,
    tokens: &Tensor,
) -> Result<(Tensor, Tensor)> {
    match <[Tensor; 2]>::try_from(runner.cut(&[embedding, tokens])?) {
        Ok([embedding, tokens]) => Ok((embedding, tokens)),
        Err(_) => candle_core::bail!("a cut changed the number of tensors"),
    }
}
