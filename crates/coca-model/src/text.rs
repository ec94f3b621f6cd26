//! The unimodal text tower (the decoder's bottom `n_uni` layers): causal self-attention over the caption with a
//! learned CLS token appended at the end, whose output is the text embedding.

use candle_core::{DType, Device, Result, Tensor};
use candle_nn::VarBuilder;

use crate::config::TextConfig;
use crate::nn::layers::Linear;
use crate::nn::ops::project;
use crate::nn::{Activation, BlockRunner, Direct, LayerNorm, Transformer};

/// The output of the text tower.
#[derive(Debug, Clone)]
pub struct TextOutput {
    /// The CLS output after `ln_final` and the projection, before L2 normalisation: (batch, embed_dim).
    pub pooled: Tensor,
    /// The residual stream of the text positions (CLS removed, no `ln_final`): (batch, len, width).
    pub tokens: Tensor,
}

#[derive(Debug, Clone)]
enum Projection {
    Matrix(Tensor),
    Linear(Linear),
    None,
}

/// open_clip's `TextTransformer` with `embed_cls=True`.
#[derive(Debug, Clone)]
pub struct TextTower {
    token_embedding: Tensor,
    cls_emb: Tensor,
    positional_embedding: Tensor,
    transformer: Transformer,
    ln_final: LayerNorm,
    projection: Projection,
    pad_id: u32,
    context_length: usize,
    heads: usize,
}

/// The additive mask open_clip builds for CoCa's text tower, for ids of `len` tokens plus the appended CLS:
/// causal, plus its legacy padding mask. That padding mask is shifted by one position (it was written for a CLS
/// at the front while the CLS sits at the end), so key 0 is always visible and key `k ≥ 1` is visible iff token
/// `k − 1` is not padding. The published weights were trained with it, so parity requires it exactly.
/// Returns a (batch, 1, len + 1, len + 1) tensor.
pub fn legacy_cls_mask(ids: &[Vec<u32>], pad_id: u32, device: &Device) -> Result<Tensor> {
    let batch = ids.len();
    let len = ids.first().map_or(0, Vec::len);
    let n = len + 1;
    let mut data = vec![0f32; batch * n * n];
    for (b, row) in ids.iter().enumerate() {
        let key_visible = |k: usize| k == 0 || row[k - 1] != pad_id;
        for q in 0..n {
            for k in 0..n {
                if k > q || !key_visible(k) {
                    data[(b * n + q) * n + k] = f32::NEG_INFINITY;
                }
            }
        }
    }
    Tensor::from_vec(data, (batch, 1, n, n), device)
}

impl TextTower {
    /// Load under `vb` (`text.` in open_clip checkpoints) with the contrastive width `embed_dim`.
    pub fn load(
        vb: VarBuilder,
        cfg: &TextConfig,
        embed_dim: usize,
        act: Activation,
    ) -> Result<Self> {
        let w = cfg.width;
        let projection = match (cfg.proj_type.as_str(), cfg.proj_bias) {
            ("none", _) => Projection::None,
            (_, true) => {
                Projection::Linear(Linear::load(vb.pp("text_projection"), w, embed_dim, true)?)
            }
            (_, false) => Projection::Matrix(vb.get((w, embed_dim), "text_projection")?),
        };
        Ok(Self {
            token_embedding: vb.get((cfg.vocab_size, w), "token_embedding.weight")?,
            cls_emb: vb.get(w, "cls_emb")?,
            positional_embedding: vb.get((cfg.context_length + 1, w), "positional_embedding")?,
            transformer: Transformer::load(
                vb.pp("transformer"),
                w,
                cfg.layers,
                cfg.heads,
                cfg.mlp_width(),
                act,
            )?,
            ln_final: LayerNorm::load(vb.pp("ln_final"), w)?,
            projection,
            pad_id: cfg.pad_id,
            context_length: cfg.context_length,
            heads: cfg.heads,
        })
    }

    /// Maximum number of input tokens.
    pub fn context_length(&self) -> usize {
        self.context_length
    }

    /// Number of attention heads.
    pub fn heads(&self) -> usize {
        self.heads
    }

    /// The token embedding matrix (vocab, width).
    pub fn token_embedding(&self) -> &Tensor {
        &self.token_embedding
    }

    /// The positional embedding (context_length + 1, width); the last row belongs to the appended CLS.
    pub fn positional_embedding(&self) -> &Tensor {
        &self.positional_embedding
    }

    /// The transformer stack (for callers that run it position by position with a key/value cache).
    pub fn transformer(&self) -> &Transformer {
        &self.transformer
    }

    /// The id whose *following* key the legacy CLS mask hides (see [`legacy_cls_mask`]).
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// Vocabulary size of the token embedding.
    pub fn vocab_size(&self) -> usize {
        self.token_embedding.dim(0).unwrap_or(0)
    }

    /// Embed ids (batch, len) and append the CLS: (batch, len + 1, width), positions added.
    fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        let (b, len) = ids.dims2()?;
        let width = self.cls_emb.dim(0)?;
        let tok = self
            .token_embedding
            .index_select(&ids.flatten_all()?, 0)?
            .reshape((b, len, width))?;
        let cls = self
            .cls_emb
            .reshape((1, 1, width))?
            .broadcast_as((b, 1, width))?;
        let x = Tensor::cat(&[&tok, &cls.to_dtype(tok.dtype())?], 1)?;
        x.broadcast_add(&self.positional_embedding.narrow(0, 0, len + 1)?)
    }

    /// Run the tower on token ids (batch, len ≤ context_length), dtype u32.
    pub fn forward(&self, ids: &Tensor) -> Result<TextOutput> {
        self.forward_in(ids, &Direct)
    }

    /// [`TextTower::forward`] with the blocks run by `runner`.
    pub fn forward_in(&self, ids: &Tensor, runner: &dyn BlockRunner) -> Result<TextOutput> {
        let (_, len) = ids.dims2()?;
        if len == 0 || len > self.context_length {
            candle_core::bail!(
                "text must have between 1 and {} tokens, got {len}",
                self.context_length
            );
        }
        let ids = ids.to_dtype(DType::U32)?;
        let host_ids = ids.to_device(&Device::Cpu)?.to_vec2::<u32>()?;
        let dtype = self.token_embedding.dtype();
        let mask = legacy_cls_mask(&host_ids, self.pad_id, ids.device())?.to_dtype(dtype)?;
        let x = self.embed(&ids)?;
        let x = self.transformer.forward_in(&x, Some(&mask), runner)?;
        let cls = x.narrow(1, len, 1)?.squeeze(1)?;
        let tokens = x.narrow(1, 0, len)?;
        let cls = self.ln_final.forward(&cls)?;
        let pooled = match &self.projection {
            Projection::Matrix(p) => project(&cls, p)?,
            Projection::Linear(l) => l.forward(&cls)?,
            Projection::None => cls,
        };
        Ok(TextOutput { pooled, tokens })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_mask_matches_open_clip_semantics() {
        // "a dog" = [sot, a, dog, eot, pad, pad]: the CLS (position 6) sees keys 0..=4 — the first pad
        // included, itself excluded.
        let ids = vec![vec![9u32, 5, 6, 10, 0, 0]];
        let m = legacy_cls_mask(&ids, 0, &Device::Cpu).unwrap();
        let m = m
            .squeeze(0)
            .unwrap()
            .squeeze(0)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        let visible = |q: usize| (0..7).filter(|&k| m[q][k] == 0.0).collect::<Vec<_>>();
        assert_eq!(visible(6), vec![0, 1, 2, 3, 4]);
        assert_eq!(visible(2), vec![0, 1, 2]);
        // A pad query still sees the keys before it that are not masked.
        assert_eq!(visible(5), vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn legacy_mask_without_padding_lets_cls_see_everything() {
        let ids = vec![vec![1u32, 2, 3]];
        let m = legacy_cls_mask(&ids, 0, &Device::Cpu).unwrap();
        let last = m
            .get(0)
            .unwrap()
            .get(0)
            .unwrap()
            .get(3)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(last, vec![0.0; 4]);
    }
}
