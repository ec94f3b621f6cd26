//! open_clip's pre-LN `ResidualAttentionBlock` and `Transformer` stack.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

use super::attention::{KeyValue, LayerCache, MultiheadAttention};
use super::layers::{Activation, LayerNorm, Mlp, ProductVisitor};
use super::ops;

/// `x + attn(ln_1(x)[, ln_1_kv(ctx)])`, then `x + mlp(ln_2(x))`.
#[derive(Debug, Clone)]
pub struct ResidualAttentionBlock {
    ln_1: LayerNorm,
    /// Present for cross-attention blocks: normalises the context before it becomes keys/values.
    ln_1_kv: Option<LayerNorm>,
    attn: MultiheadAttention,
    ln_2: LayerNorm,
    mlp: Mlp,
}

impl ResidualAttentionBlock {
    /// Load a block of `width` with `heads` heads and an MLP of `mlp_width`; `cross` adds `ln_1_kv`.
    pub fn load(
        vb: VarBuilder,
        width: usize,
        heads: usize,
        mlp_width: usize,
        act: Activation,
        cross: bool,
    ) -> Result<Self> {
        Ok(Self {
            ln_1: LayerNorm::load(vb.pp("ln_1"), width)?,
            ln_1_kv: if cross {
                Some(LayerNorm::load(vb.pp("ln_1_kv"), width)?)
            } else {
                None
            },
            attn: MultiheadAttention::load(vb.pp("attn"), width, width, heads)?,
            ln_2: LayerNorm::load(vb.pp("ln_2"), width)?,
            mlp: Mlp::load(vb.pp("mlp"), width, mlp_width, act)?,
        })
    }

    /// Call `f` with each of the block's product weights (attention, then MLP).
    pub(crate) fn for_each_product(&mut self, f: &mut ProductVisitor) -> Result<()> {
        self.attn.for_each_product(f)?;
        self.mlp.for_each_product(f)
    }

    /// The MLP half of the block: `x + mlp(ln_2(x))`.
    fn mlp_residual(&self, x: &Tensor) -> Result<Tensor> {
        ops::add(x, &self.mlp.forward(&self.ln_2.forward(x)?)?)
    }

    /// Self-attention block (`context == None`) or cross-attention to `context`.
    pub fn forward(
        &self,
        x: &Tensor,
        context: Option<&Tensor>,
        mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        let h = self.ln_1.forward(x)?;
        let attn_out = match (context, &self.ln_1_kv) {
            (Some(ctx), Some(ln_kv)) => {
                let ctx = ln_kv.forward(ctx)?;
                self.attn.forward(&h, Some(&ctx), mask)?
            }
            (Some(ctx), None) => self.attn.forward(&h, Some(ctx), mask)?,
            (None, _) => self.attn.forward(&h, None, mask)?,
        };
        let x = ops::add(x, &attn_out)?;
        self.mlp_residual(&x)
    }

    /// [`ResidualAttentionBlock::forward`] of a self-attention block for new positions `x` (rows, n, width) that
    /// also attend to the positions in `cache`, which then holds the new positions' keys and values too. `mask`
    /// (broadcastable to (rows, heads, n, cached + n)) is that of the new queries over every key.
    pub(crate) fn forward_cached(
        &self,
        x: &Tensor,
        cache: &mut LayerCache,
        mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        let h = self.ln_1.forward(x)?;
        let (q, kv_new) = self.attn.project_qkv(&h)?;
        let kv = cache.extend(kv_new)?;
        let attn = self.attn.attend(&q, &kv, mask)?;
        self.mlp_residual(&ops::add(x, &attn)?)
    }

    /// The keys and values a cross-attention block makes of `context` (images, n, width), computed once for a
    /// decoding run and read by [`ResidualAttentionBlock::forward_grouped_cross`] at every step.
    pub(crate) fn cross_key_value(&self, context: &Tensor) -> Result<KeyValue> {
        match &self.ln_1_kv {
            Some(ln) => self.attn.project_kv(&ln.forward(context)?),
            None => self.attn.project_kv(context),
        }
    }

    /// [`ResidualAttentionBlock::forward`] of a cross-attention block over the context whose keys and values are
    /// `context_kv` (images, heads, n, head_dim), for `x` (rows, n, width) whose rows are grouped by image,
    /// `rows_per_image` consecutive rows each. The rows of one image attend in one call, their queries side by
    /// side, so the image's keys and values are never copied per row.
    pub(crate) fn forward_grouped_cross(
        &self,
        x: &Tensor,
        context_kv: &KeyValue,
        rows_per_image: usize,
    ) -> Result<Tensor> {
        let (rows, n, width) = x.dims3()?;
        let images = rows / rows_per_image;
        let h = self.ln_1.forward(x)?;
        // (rows, n, width) → (images, rows_per_image·n, width): the queries of one image's rows side by side.
        let h = h.reshape((images, rows_per_image * n, width))?;
        let q = self.attn.project_query(&h)?;
        let attn = self.attn.attend(&q, context_kv, None)?;
        let attn = attn.reshape((rows, n, width))?;
        self.mlp_residual(&ops::add(x, &attn)?)
    }
}

/// How a forward runs the residual blocks and hands the towers' outputs over: [`AllAtOnce`], or as segments
/// that a training backward differentiates one at a time ([`crate::segments::Segments`]). See the crate docs for
/// where a runner is passed.
pub trait BlockRunner {
    /// `block.forward(x, context, mask)`.
    fn run(
        &self,
        block: &ResidualAttentionBlock,
        x: &Tensor,
        context: Option<&Tensor>,
        mask: Option<&Tensor>,
    ) -> Result<Tensor>;

    /// Tensors one part of the model hands to another together (a tower's outputs); the same values.
    fn cut(&self, ts: &[&Tensor]) -> Result<Vec<Tensor>>;
}

/// Every block run as it is and nothing cut: the whole forward is one graph. What inference runs, and training
/// that differentiates in one pass.
#[derive(Debug, Clone, Copy, Default)]
pub struct AllAtOnce;

impl BlockRunner for AllAtOnce {
    fn run(
        &self,
        block: &ResidualAttentionBlock,
        x: &Tensor,
        context: Option<&Tensor>,
        mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        block.forward(x, context, mask)
    }

    fn cut(&self, ts: &[&Tensor]) -> Result<Vec<Tensor>> {
        Ok(ts.iter().map(|&t| t.clone()).collect())
    }
}

/// A stack of self-attention blocks under `resblocks.{i}`.
#[derive(Debug, Clone)]
pub struct Transformer {
    blocks: Vec<ResidualAttentionBlock>,
}

impl Transformer {
    /// Load `layers` blocks under `vb.pp("resblocks")`.
    pub fn load(
        vb: VarBuilder,
        width: usize,
        layers: usize,
        heads: usize,
        mlp_width: usize,
        act: Activation,
    ) -> Result<Self> {
        let vb = vb.pp("resblocks");
        let blocks = (0..layers)
            .map(|i| ResidualAttentionBlock::load(vb.pp(i), width, heads, mlp_width, act, false))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { blocks })
    }

    /// Number of blocks.
    pub fn depth(&self) -> usize {
        self.blocks.len()
    }

    /// Call `f` with each block's product weights, bottom first.
    pub(crate) fn for_each_product(&mut self, f: &mut ProductVisitor) -> Result<()> {
        self.blocks
            .iter_mut()
            .try_for_each(|block| block.for_each_product(f))
    }

    /// Run every block with the same additive mask, each by `runner`.
    pub fn forward(
        &self,
        x: &Tensor,
        mask: Option<&Tensor>,
        runner: &dyn BlockRunner,
    ) -> Result<Tensor> {
        let mut x = x.clone();
        for block in &self.blocks {
            x = runner.run(block, &x, None, mask)?;
        }
        Ok(x)
    }

    /// [`Transformer::forward`] of new positions `x` (rows, n, width) that also attend to the positions in
    /// `caches` (one per block, bottom first), which then hold the new positions too.
    pub(crate) fn forward_cached(
        &self,
        x: &Tensor,
        caches: &mut [LayerCache],
        mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        let mut x = x.clone();
        for (block, cache) in self.blocks.iter().zip(caches) {
            x = block.forward_cached(&x, cache, mask)?;
        }
        Ok(x)
    }
}
