//! The multimodal text decoder (the top `n_multi` layers): causal self-attention, then cross-attention to the
//! image tokens, then an untied LM head.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

use crate::config::MultimodalConfig;
use crate::nn::attention::KeyValue;
use crate::nn::layers::ProductVisitor;
use crate::nn::{
    Activation, AttentionMask, BlockRunner, LayerCache, LayerNorm, Linear, ResidualAttentionBlock,
};

/// open_clip's `MultimodalTransformer`.
#[derive(Debug, Clone)]
pub struct MultimodalDecoder {
    self_blocks: Vec<ResidualAttentionBlock>,
    cross_blocks: Vec<ResidualAttentionBlock>,
    ln_final: LayerNorm,
    lm_head: Linear,
    context_length: usize,
}

impl MultimodalDecoder {
    /// Load under `vb` (`text_decoder.` in open_clip checkpoints).
    pub fn load(vb: VarBuilder, cfg: &MultimodalConfig, act: Activation) -> Result<Self> {
        let w = cfg.width;
        let load_blocks = |prefix: &str, cross: bool| {
            (0..cfg.layers)
                .map(|i| {
                    ResidualAttentionBlock::load(
                        vb.pp(prefix).pp(i),
                        w,
                        cfg.heads,
                        cfg.mlp_width(),
                        act,
                        cross,
                    )
                })
                .collect::<Result<Vec<_>>>()
        };
        Ok(Self {
            self_blocks: load_blocks("resblocks", false)?,
            cross_blocks: load_blocks("cross_attn", true)?,
            ln_final: LayerNorm::load(vb.pp("ln_final"), w)?,
            lm_head: Linear::load_matrix(vb.clone(), "text_projection", w, cfg.vocab_size)?,
            context_length: cfg.context_length,
        })
    }

    /// Pairs of (self-attention block, cross-attention block), bottom first.
    fn layers(&self) -> impl Iterator<Item = (&ResidualAttentionBlock, &ResidualAttentionBlock)> {
        self.self_blocks.iter().zip(&self.cross_blocks)
    }

    /// Number of (self-attention, cross-attention) layer pairs.
    pub(crate) fn depth(&self) -> usize {
        self.self_blocks.len()
    }

    /// Maximum number of positions the decoder takes.
    pub fn context_length(&self) -> usize {
        self.context_length
    }

    /// Final LayerNorm before the LM head.
    pub fn ln_final(&self) -> &LayerNorm {
        &self.ln_final
    }

    /// The LM head matrix (width, vocab); an error once the head is packed for low-precision inference.
    pub fn lm_head(&self) -> Result<&Tensor> {
        self.lm_head.weight().dense()
    }

    /// Call `f` with each product weight of the decoder: the blocks (self-attention, then cross-attention), then
    /// the LM head.
    pub(crate) fn for_each_product(&mut self, f: &mut ProductVisitor) -> Result<()> {
        for block in self.self_blocks.iter_mut().chain(&mut self.cross_blocks) {
            block.for_each_product(f)?;
        }
        self.lm_head.for_each_product(f)
    }

    /// Apply the LM head alone to hidden states already through `ln_final` (…, width) → (…, vocab).
    pub fn apply_lm_head(&self, normed: &Tensor) -> Result<Tensor> {
        self.lm_head.forward(normed)
    }

    /// Apply `ln_final` and the LM head to hidden states (…, width) → (…, vocab).
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        self.lm_head.forward(&self.ln_final.forward(hidden)?)
    }

    /// Caption logits for every position: `image_embs` (batch, n_img, width), `text_embs` (batch, len, width), the
    /// blocks run by `runner` ([`crate::nn::AllAtOnce`] outside training).
    pub fn forward(
        &self,
        image_embs: &Tensor,
        text_embs: &Tensor,
        runner: &dyn BlockRunner,
    ) -> Result<Tensor> {
        self.lm_head
            .forward(&self.final_hidden(image_embs, text_embs, runner)?)
    }

    /// What the LM head sees: the decoder's output after `ln_final` (batch, len, width), for losses that apply
    /// the head themselves (see [`crate::nn::ops::lm_head_nll_sum`]). Same inputs as [`MultimodalDecoder::forward`].
    pub fn final_hidden(
        &self,
        image_embs: &Tensor,
        text_embs: &Tensor,
        runner: &dyn BlockRunner,
    ) -> Result<Tensor> {
        let len = text_embs.dim(1)?;
        if len > self.context_length {
            candle_core::bail!(
                "the decoder takes at most {} positions, got {len}",
                self.context_length
            );
        }
        let mask =
            AttentionMask::causal(0, len, text_embs.device())?.to_dtype(text_embs.dtype())?;
        let mut x = text_embs.clone();
        for (self_block, cross_block) in self.layers() {
            x = runner.run(self_block, &x, None, Some(&mask))?;
            x = runner.run(cross_block, &x, Some(image_embs), None)?;
        }
        self.ln_final.forward(&x)
    }

    /// The keys and values every cross-attention layer makes of the image context `image_embs`
    /// (images, n_img, width), bottom first: computed once per decoding run.
    pub(crate) fn image_key_values(&self, image_embs: &Tensor) -> Result<Vec<KeyValue>> {
        self.cross_blocks
            .iter()
            .map(|block| block.cross_key_value(image_embs))
            .collect()
    }

    /// The decoder's residual stream (before `ln_final`) for `n` new positions per row `x` (rows, n, width) after
    /// `past` positions in `caches` (one per self-attention layer, which then hold the new positions too). The
    /// rows are grouped by image, `rows_per_image` consecutive rows each, and cross-attend to their image's
    /// `image_kv` ([`MultimodalDecoder::image_key_values`]).
    pub(crate) fn forward_cached(
        &self,
        x: &Tensor,
        past: usize,
        caches: &mut [LayerCache],
        image_kv: &[KeyValue],
        rows_per_image: usize,
    ) -> Result<Tensor> {
        let n = x.dim(1)?;
        let causal = AttentionMask::step(past, n, x.device(), x.dtype())?;
        let mut x = x.clone();
        for (((self_block, cross_block), cache), kv) in self.layers().zip(caches).zip(image_kv) {
            x = self_block.forward_cached(&x, cache, causal.as_ref())?;
            x = cross_block.forward_grouped_cross(&x, kv, rows_per_image)?;
        }
        Ok(x)
    }
}
