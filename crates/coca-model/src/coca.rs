//! The CoCa model: image tower, unimodal text tower, multimodal decoder and the learned temperature.

use candle_core::{DType, Device, Result, Tensor};
use candle_nn::VarBuilder;

use crate::config::CocaConfig;
use crate::decoder::MultimodalDecoder;
use crate::nn::layers::ProductVisitor;
use crate::nn::ops::{self, l2_normalize, PackedFormat};
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
        ops::on_kernel_threads(images.device(), || {
            ImageEncoding::of(self.visual.forward(images, &AllAtOnce)?)
        })
    }

    /// Encode token ids (batch, len ≤ context length).
    pub fn encode_text(&self, ids: &Tensor) -> Result<TextEncoding> {
        ops::on_kernel_threads(ids.device(), || {
            TextEncoding::of(self.text.forward(ids, &AllAtOnce)?)
        })
    }

    /// The pooled image embedding before L2 normalisation (batch, embed_dim): open_clip's
    /// `encode_image(normalize=False)`.
    pub fn encode_image_pooled(&self, images: &Tensor) -> Result<Tensor> {
        ops::on_kernel_threads(images.device(), || {
            Ok(self.visual.forward(images, &AllAtOnce)?.pooled)
        })
    }

    /// The pooled text embedding before L2 normalisation (batch, embed_dim): open_clip's
    /// `encode_text(normalize=False)`.
    pub fn encode_text_pooled(&self, ids: &Tensor) -> Result<Tensor> {
        ops::on_kernel_threads(ids.device(), || {
            Ok(self.text.forward(ids, &AllAtOnce)?.pooled)
        })
    }

    /// The image tower's token states after its last block, before the poolers (batch, n, width): what frozen-
    /// feature probes read.
    pub fn encode_image_tokens(&self, images: &Tensor) -> Result<Tensor> {
        ops::on_kernel_threads(images.device(), || {
            self.visual.encode_tokens(images, &AllAtOnce)
        })
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
            logits: self.text_decoder.apply_lm_head(&out.caption_hidden)?,
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
        let out = self.caption_side(ImageEncoding { embedding, tokens }, ids, runner)?;
        Ok(TrainOutput {
            image_features: out.image_features,
            text_features: out.text_features,
            caption_hidden: out.caption_hidden,
            lm_head: self.text_decoder.lm_head()?.clone(),
            labels: out.labels,
            logit_scale: out.logit_scale,
        })
    }

    /// Replace every product weight (blocks' attention and MLP, poolers, tower projections, LM head) by its
    /// int8 or bf16 packing, for CPU inference (see `docs/inference.md` for what stays f32 and why). Training,
    /// gradients and the GPU need the model as loaded.
    pub fn pack_weights(&mut self, format: PackedFormat) -> Result<()> {
        self.for_each_product(&mut |_, kind, weight| {
            if let Some(format) = kind.packed_format(format) {
                *weight = weight.pack(format)?;
            }
            Ok(())
        })
    }

    /// Call `f` with the checkpoint name and the weight of every product of the model, and of the token
    /// embedding table (whose rows are packed like a product's output channels), in a fixed order: the one walk
    /// behind [`Coca::pack_weights`], writing a quantised file and loading one. A projection matrix stored as
    /// (in, out) is packed as its transpose (out, in), like every packed weight.
    pub fn for_each_product(&mut self, f: &mut ProductVisitor) -> Result<()> {
        self.visual.for_each_product(f)?;
        self.text.for_each_product(f)?;
        self.text_decoder.for_each_product(f)
    }

    /// Everything after the image tower: encode the captions (their outputs handed on through `runner`'s cut),
    /// and run the decoder teacher-forced on the unimodal states of positions `0..len − 1` against the targets
    /// `ids[:, 1:]`.
    fn caption_side(
        &self,
        image: ImageEncoding,
        ids: &Tensor,
        runner: &dyn BlockRunner,
    ) -> Result<CaptionSide> {
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
        Ok(CaptionSide {
            image_features: image.embedding,
            text_features,
            caption_hidden,
            labels,
            logit_scale: self.logit_scale.exp()?,
        })
    }
}

/// [`TrainOutput`] without the LM head: what the training and the inference forward share.
struct CaptionSide {
    image_features: Tensor,
    text_features: Tensor,
    caption_hidden: Tensor,
    labels: Tensor,
    logit_scale: Tensor,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::{load_model, LoadOptions};
    use crate::test_support::batch;

    fn tiny_model() -> Coca {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../fixtures/parity/tiny_legacy");
        let cfg = CocaConfig::from_file(&dir.join("config.json")).unwrap();
        load_model(
            &cfg,
            &dir.join("open_clip_model.safetensors"),
            &LoadOptions::default(),
        )
        .unwrap()
    }

    /// The smallest cosine between matching rows of two sets of L2-normalised embeddings.
    fn worst_cosine(a: &Tensor, b: &Tensor) -> f32 {
        let dots: Vec<f32> = (a * b).unwrap().sum(1).unwrap().to_vec1().unwrap();
        dots.into_iter().fold(f32::INFINITY, f32::min)
    }

    /// Counts of (packed, dense) product weights.
    fn product_kinds(model: &mut Coca) -> (usize, usize) {
        let (mut packed, mut dense) = (0, 0);
        model
            .for_each_product(&mut |_, _, w| {
                match w.packed() {
                    Some(_) => packed += 1,
                    None => dense += 1,
                }
                Ok(())
            })
            .unwrap();
        (packed, dense)
    }

    #[test]
    fn packed_models_embed_close_to_f32_and_write_captions() {
        let mut reference = tiny_model();
        let (_, products) = product_kinds(&mut reference);
        let (images, ids) = batch(4, 1);
        let image = reference.encode_image(&images).unwrap();
        let text = reference.encode_text(&ids).unwrap();
        // The accuracy goals for the full models, held here on the tiny fixture.
        for (format, bound) in [(PackedFormat::Int8, 0.995), (PackedFormat::Bf16, 0.9995)] {
            let mut model = reference.clone();
            model.pack_weights(format).unwrap();
            // Everything packed, but the token embedding table of an int8 model.
            let dense_left = usize::from(format == PackedFormat::Int8);
            assert_eq!(
                product_kinds(&mut model),
                (products - dense_left, dense_left),
                "{format:?}"
            );
            let packed_image = model.encode_image(&images).unwrap();
            let packed_text = model.encode_text(&ids).unwrap();
            let (ci, ct) = (
                worst_cosine(&image.embedding, &packed_image.embedding),
                worst_cosine(&text.embedding, &packed_text.embedding),
            );
            assert!(
                ci >= bound && ct >= bound,
                "{format:?}: image {ci}, text {ct}"
            );
            let out = model.forward_with_image(&packed_image, &ids).unwrap();
            assert_eq!(out.logits.dims(), &[4, 8, model.text().vocab_size()]);
            let mut cache = model.decode_cache(&packed_image.tokens, 1).unwrap();
            let start: Vec<Vec<u32>> = vec![vec![254]; 4];
            let logits = model.forward_cached(&start, &mut cache).unwrap();
            let next: Vec<u32> = logits.argmax(1).unwrap().to_vec1().unwrap();
            assert_eq!(next.len(), 4);
        }
    }

    #[test]
    fn the_pooled_and_token_encodings_are_those_of_the_towers() {
        let model = tiny_model();
        let (images, ids) = batch(2, 3);
        let image = model.encode_image(&images).unwrap();
        let pooled = model.encode_image_pooled(&images).unwrap();
        assert_eq!(
            l2_normalize(&pooled).unwrap().to_vec2::<f32>().unwrap(),
            image.embedding.to_vec2::<f32>().unwrap()
        );
        let text = model.encode_text(&ids).unwrap();
        let pooled = model.encode_text_pooled(&ids).unwrap();
        assert_eq!(
            l2_normalize(&pooled).unwrap().to_vec2::<f32>().unwrap(),
            text.embedding.to_vec2::<f32>().unwrap()
        );
        let tokens = model.encode_image_tokens(&images).unwrap();
        let direct = model.visual().encode_tokens(&images, &AllAtOnce).unwrap();
        assert_eq!(
            tokens.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            direct.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
    }

    #[test]
    fn a_packed_model_refuses_training() {
        let mut model = tiny_model();
        model.pack_weights(PackedFormat::Int8).unwrap();
        let (images, ids) = batch(2, 0);
        let err = model
            .forward_for_loss(&images, &ids, &AllAtOnce)
            .unwrap_err()
            .to_string();
        assert!(err.contains("need the f32 model"), "{err}");
    }
}
