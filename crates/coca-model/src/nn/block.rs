//! open_clip's pre-LN `ResidualAttentionBlock` and `Transformer` stack.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

use super::attention::MultiheadAttention;
use super::layers::{Activation, LayerNorm, Mlp};

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

    /// The attention module (for callers that cache keys and values).
    pub fn attn(&self) -> &MultiheadAttention {
        &self.attn
    }

    /// First LayerNorm (applied to the query stream).
    pub fn ln_1(&self) -> &LayerNorm {
        &self.ln_1
    }

    /// Context LayerNorm of a cross-attention block.
    pub fn ln_1_kv(&self) -> Option<&LayerNorm> {
        self.ln_1_kv.as_ref()
    }

    /// The MLP half of the block: `x + mlp(ln_2(x))`.
    pub fn mlp_residual(&self, x: &Tensor) -> Result<Tensor> {
        x + self.mlp.forward(&self.ln_2.forward(x)?)?
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
        let x = (x + attn_out)?;
        self.mlp_residual(&x)
    }
}

/// How the towers run their residual blocks and hand their outputs over: [`Direct`]ly, or as segments that a
/// training backward differentiates one at a time ([`crate::segments::Segments`]).
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

/// Blocks run as they are, in one graph: inference, and training differentiated in one pass.
#[derive(Debug, Clone, Copy, Default)]
pub struct Direct;

impl BlockRunner for Direct {
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

    /// The blocks, bottom first.
    pub fn blocks(&self) -> &[ResidualAttentionBlock] {
        &self.blocks
    }

    /// Run every block with the same additive mask.
    pub fn forward(&self, x: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        self.forward_in(x, mask, &Direct)
    }

    /// [`Transformer::forward`] with the blocks run by `runner`.
    pub fn forward_in(
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
}
