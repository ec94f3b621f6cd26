//! The unimodal text tower (the decoder's bottom `n_uni` layers): causal self-attention over the caption with a
//! learned CLS token appended at the end, whose output is the text embedding.

use candle_core::{DType, Device, Result, Tensor};
use candle_nn::VarBuilder;

use crate::config::TextConfig;
use crate::nn::layers::{parameter_name, Linear, ProductVisitor, WeightKind};
use crate::nn::ops::{self, LinearWeight};
use crate::nn::{Activation, AttentionMask, BlockRunner, LayerCache, LayerNorm, Transformer};

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
    Linear(Linear),
    None,
}

/// open_clip's `TextTransformer` with `embed_cls=True`.
#[derive(Debug, Clone)]
pub struct TextTower {
    /// (vocabulary, width); packed with the product weights for low-precision inference (a lookup reads one
    /// row, dequantised).
    token_embedding: LinearWeight,
    /// The checkpoint name of the token embedding.
    token_embedding_name: String,
    cls_emb: Tensor,
    positional_embedding: Tensor,
    transformer: Transformer,
    ln_final: LayerNorm,
    projection: Projection,
    pad_id: u32,
    context_length: usize,
    heads: usize,
    width: usize,
    vocab_size: usize,
}

/// The additive mask open_clip builds for CoCa's text tower: causal, plus its legacy padding mask. That padding
/// mask is shifted by one position (it was written for a CLS at the front while the CLS sits at the end), so key
/// 0 is always visible and key `k ≥ 1` is visible iff token `k − 1` is not padding. The published weights were
/// trained with it, so parity requires it exactly.
///
/// The mask is that of the `queries` positions after the first `past` over keys `0..past + queries`:
/// (batch, 1, queries, past + queries). A whole caption of `len` tokens with its appended CLS is `past = 0`,
/// `queries = len + 1`; a decoding step's new positions follow the `past` cached ones. `ids` holds each row's
/// tokens, at least the `past + queries − 1` that the keys after the first stand for.
pub fn legacy_cls_mask(
    ids: &[Vec<u32>],
    pad_id: u32,
    past: usize,
    queries: usize,
    device: &Device,
) -> Result<Tensor> {
    let batch = ids.len();
    let keys = past + queries;
    if let Some(short) = ids.iter().find(|row| row.len() + 1 < keys) {
        candle_core::bail!(
            "the legacy CLS mask over {keys} keys needs {} tokens per row, got {}",
            keys - 1,
            short.len()
        );
    }
    let mut data = vec![0f32; batch * queries * keys];
    for (b, row) in ids.iter().enumerate() {
        let key_visible = |k: usize| k == 0 || row[k - 1] != pad_id;
        for i in 0..queries {
            let q = past + i;
            for k in 0..keys {
                if k > q || !key_visible(k) {
                    data[(b * queries + i) * keys + k] = f32::NEG_INFINITY;
                }
            }
        }
    }
    Tensor::from_vec(data, (batch, 1, queries, keys), device)
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
            (_, false) => Projection::Linear(Linear::load_matrix(
                vb.clone(),
                "text_projection",
                w,
                embed_dim,
            )?),
        };
        Ok(Self {
            token_embedding: LinearWeight::Dense(
                vb.get((cfg.vocab_size, w), "token_embedding.weight")?,
            ),
            token_embedding_name: parameter_name(&vb, "token_embedding.weight"),
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
            width: w,
            vocab_size: cfg.vocab_size,
        })
    }

    /// Call `f` with each product weight of the tower: the token embedding (a table whose rows are packed like
    /// a product's channels), the blocks, then the projection.
    pub(crate) fn for_each_product(&mut self, f: &mut ProductVisitor) -> Result<()> {
        f(
            &self.token_embedding_name,
            WeightKind::EmbeddingTable,
            &mut self.token_embedding,
        )?;
        self.transformer.for_each_product(f)?;
        match &mut self.projection {
            Projection::Linear(l) => l.for_each_product(f),
            Projection::None => Ok(()),
        }
    }

    /// Maximum number of input tokens.
    pub fn context_length(&self) -> usize {
        self.context_length
    }

    /// Number of attention heads.
    pub fn heads(&self) -> usize {
        self.heads
    }

    /// Width of the residual stream.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Number of residual blocks.
    pub(crate) fn depth(&self) -> usize {
        self.transformer.depth()
    }

    /// The id whose *following* key the legacy CLS mask hides (see [`legacy_cls_mask`]).
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// Vocabulary size of the token embedding.
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// The token embeddings of `flat_ids` (rows · n, u32) as (rows, n, width), positions not yet added.
    fn token_states(&self, flat_ids: &Tensor, rows: usize, n: usize) -> Result<Tensor> {
        ops::embedding(flat_ids, &self.token_embedding)?.reshape((rows, n, self.width))
    }

    /// Embed ids (batch, len) and append the CLS: (batch, len + 1, width), positions added.
    fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        let (b, len) = ids.dims2()?;
        let width = self.width;
        let tok = self.token_states(&ids.flatten_all()?, b, len)?;
        let cls = self
            .cls_emb
            .reshape((1, 1, width))?
            .broadcast_as((b, 1, width))?;
        let x = Tensor::cat(&[&tok, &cls.to_dtype(tok.dtype())?], 1)?;
        x.broadcast_add(&self.positional_embedding.narrow(0, 0, len + 1)?)
    }

    /// Run the tower on token ids (batch, len ≤ context_length), dtype u32, the blocks run by `runner`
    /// ([`crate::nn::AllAtOnce`] outside training).
    pub fn forward(&self, ids: &Tensor, runner: &dyn BlockRunner) -> Result<TextOutput> {
        let (_, len) = ids.dims2()?;
        if len == 0 || len > self.context_length {
            candle_core::bail!(
                "text must have between 1 and {} tokens, got {len}",
                self.context_length
            );
        }
        let ids = ids.to_dtype(DType::U32)?;
        let host_ids = ids.to_device(&Device::Cpu)?.to_vec2::<u32>()?;
        let dtype = self.positional_embedding.dtype();
        let mask =
            legacy_cls_mask(&host_ids, self.pad_id, 0, len + 1, ids.device())?.to_dtype(dtype)?;
        let x = self.embed(&ids)?;
        let x = self.transformer.forward(&x, Some(&mask), runner)?;
        let cls = x.narrow(1, len, 1)?.squeeze(1)?;
        let tokens = x.narrow(1, 0, len)?;
        let cls = self.ln_final.forward(&cls)?;
        let pooled = match &self.projection {
            Projection::Linear(l) => l.forward(&cls)?,
            Projection::None => cls,
        };
        Ok(TextOutput { pooled, tokens })
    }

    /// The residual stream of `n` new text positions per row (no CLS: a caption being written has none yet),
    /// attending to the `past` positions in `caches` (one per block), which then hold the new ones too.
    /// `flat_ids` (rows · n, u32) are the new tokens; `history` holds every row's tokens so far, the new ones
    /// included, for the legacy mask. Returns (rows, n, width).
    pub(crate) fn forward_cached(
        &self,
        flat_ids: &Tensor,
        history: &[Vec<u32>],
        past: usize,
        n: usize,
        caches: &mut [LayerCache],
    ) -> Result<Tensor> {
        let x = self.token_states(flat_ids, history.len(), n)?;
        let x = x.broadcast_add(&self.positional_embedding.narrow(0, past, n)?)?;
        let mask = self.step_mask(history, past, n, x.device(), x.dtype())?;
        self.transformer.forward_cached(&x, caches, mask.as_ref())
    }

    /// The mask of [`TextTower::forward_cached`]: [`legacy_cls_mask`] where a row's keys include one after a pad
    /// id, else the purely causal one (`None` for a single new position).
    fn step_mask(
        &self,
        history: &[Vec<u32>],
        past: usize,
        n: usize,
        device: &Device,
        dtype: DType,
    ) -> Result<Option<Tensor>> {
        let keys = past + n;
        let has_pad = history
            .iter()
            .any(|h| h.iter().take(keys - 1).any(|&t| t == self.pad_id));
        if !has_pad {
            return AttentionMask::step(past, n, device, dtype);
        }
        Ok(Some(
            legacy_cls_mask(history, self.pad_id, past, n, device)?.to_dtype(dtype)?,
        ))
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
        let m = legacy_cls_mask(&ids, 0, 0, ids[0].len() + 1, &Device::Cpu).unwrap();
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
        let m = legacy_cls_mask(&ids, 0, 0, ids[0].len() + 1, &Device::Cpu).unwrap();
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

    /// A decoding step's mask is the rows of the whole caption's mask for its new positions, so the cached and
    /// the full forward mask alike.
    #[test]
    fn legacy_mask_of_new_positions_is_a_slice_of_the_full_mask() {
        let ids = vec![vec![9u32, 0, 6, 10, 0, 3], vec![9, 5, 0, 0, 7, 8]];
        let full = legacy_cls_mask(&ids, 0, 0, 7, &Device::Cpu).unwrap();
        for (past, n) in [(0, 3), (2, 1), (4, 3), (6, 1)] {
            let step = legacy_cls_mask(&ids, 0, past, n, &Device::Cpu).unwrap();
            let want = full
                .narrow(2, past, n)
                .unwrap()
                .narrow(3, 0, past + n)
                .unwrap();
            assert_eq!(step.dims(), &[2, 1, n, past + n]);
            assert_eq!(
                step.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                want.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                "past {past}, {n} new"
            );
        }
    }

    #[test]
    fn legacy_mask_refuses_rows_shorter_than_its_keys() {
        let ids = vec![vec![1u32, 2, 3], vec![1, 2]];
        let err = legacy_cls_mask(&ids, 0, 2, 2, &Device::Cpu).unwrap_err();
        assert!(
            err.to_string()
                .contains("the legacy CLS mask over 4 keys needs 3 tokens per row, got 2"),
            "{err}"
        );
    }
}
