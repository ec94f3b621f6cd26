//! The attentional pooler: learned queries cross-attending to encoder tokens (one MHA, no residual, no MLP).

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

use crate::nn::layers::ProductVisitor;
use crate::nn::{LayerNorm, MultiheadAttention};

/// open_clip's `AttentionalPooler`: `attn(ln_q(query), ln_k(x), ln_k(x))`.
#[derive(Debug, Clone)]
pub struct AttentionalPooler {
    query: Tensor,
    attn: MultiheadAttention,
    ln_q: LayerNorm,
    ln_k: LayerNorm,
}

impl AttentionalPooler {
    /// `n_queries` queries of width `d_model` reading a context of width `context_dim`.
    pub fn load(
        vb: VarBuilder,
        d_model: usize,
        context_dim: usize,
        heads: usize,
        n_queries: usize,
    ) -> Result<Self> {
        Ok(Self {
            query: vb.get((n_queries, d_model), "query")?,
            attn: MultiheadAttention::load(vb.pp("attn"), d_model, context_dim, heads)?,
            ln_q: LayerNorm::load(vb.pp("ln_q"), d_model)?,
            ln_k: LayerNorm::load(vb.pp("ln_k"), context_dim)?,
        })
    }

    /// Call `f` with each of the pooler's product weights (its attention's).
    pub(crate) fn for_each_product(&mut self, f: &mut ProductVisitor) -> Result<()> {
        self.attn.for_each_product(f)
    }

    /// Pool `x` (batch, tokens, context_dim) into (batch, n_queries, d_model).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let context = self.ln_k.forward(x)?;
        // The queries do not depend on the input: a batch of one, which the attention shares across the batch.
        let q = self.ln_q.forward(&self.query)?.unsqueeze(0)?;
        self.attn.forward(&q, Some(&context), None)
    }
}
