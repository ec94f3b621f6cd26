//! The image tower: open_clip's `VisionTransformer` with its CoCa pooling modes.

use candle_core::{DType, Result, Tensor};
use candle_nn::VarBuilder;

use crate::config::{CocaConfig, PaperPoolMode, VisionPooling};
use crate::nn::layers::ProductVisitor;
use crate::nn::{Activation, BlockRunner, LayerNorm, Linear, Transformer};
use crate::pooler::AttentionalPooler;

/// The output of the image tower.
#[derive(Debug, Clone)]
pub struct VisionOutput {
    /// The contrastive image embedding before L2 normalisation: (batch, embed_dim).
    pub pooled: Tensor,
    /// The caption context the decoder cross-attends to: (batch, tokens, width).
    pub tokens: Tensor,
}

#[derive(Debug, Clone)]
enum Pooling {
    Token {
        average: bool,
        ln_after_pool: bool,
    },
    // Boxed: a pooler's projections are large next to the token variant.
    Shared {
        pool: Box<AttentionalPooler>,
        average: bool,
    },
    Split {
        pool: Box<AttentionalPooler>,
        contrastive: Box<AttentionalPooler>,
        mode: PaperPoolMode,
    },
}

/// ViT encoder + pooler(s) + projection.
#[derive(Debug, Clone)]
pub struct VisionTower {
    conv1: Tensor,
    class_embedding: Tensor,
    positional_embedding: Tensor,
    ln_pre: Option<LayerNorm>,
    transformer: Transformer,
    pooling: Pooling,
    ln_post: LayerNorm,
    proj: Linear,
    patch: (usize, usize),
    image_size: (usize, usize),
}

impl VisionTower {
    /// Load under `vb` (`visual.` in open_clip checkpoints).
    pub fn load(vb: VarBuilder, cfg: &CocaConfig, act: Activation) -> Result<Self> {
        let v = &cfg.vision_cfg;
        let (ph, pw) = v.patch_size.hw();
        let (gh, gw) = v.grid();
        let width = v.width;
        let embed = cfg.embed_dim;
        let pooling = match v.pooling() {
            VisionPooling::Token { average } => Pooling::Token {
                average,
                ln_after_pool: v.final_ln_after_pool,
            },
            VisionPooling::Shared => Pooling::Shared {
                pool: Box::new(AttentionalPooler::load(
                    vb.pp("attn_pool"),
                    embed,
                    width,
                    v.attn_pooler_heads,
                    v.attn_pooler_queries,
                )?),
                average: v.pool_type == "avg",
            },
            VisionPooling::Split(mode) => Pooling::Split {
                pool: Box::new(AttentionalPooler::load(
                    vb.pp("attn_pool"),
                    embed,
                    width,
                    v.attn_pooler_heads,
                    v.attn_pooler_queries,
                )?),
                // In cascade mode the contrastive pooler reads the caption pooler's output (width embed_dim);
                // validation guarantees width == embed_dim for the split modes, so both read `width`.
                contrastive: Box::new(AttentionalPooler::load(
                    vb.pp("attn_pool_contrastive"),
                    embed,
                    width,
                    v.attn_pooler_heads,
                    1,
                )?),
                mode,
            },
        };
        let pool_dim = match v.pooling() {
            VisionPooling::Token { .. } => width,
            _ => embed,
        };
        Ok(Self {
            conv1: vb.get((width, 3, ph, pw), "conv1.weight")?,
            class_embedding: vb.get(width, "class_embedding")?,
            positional_embedding: vb.get((gh * gw + 1, width), "positional_embedding")?,
            ln_pre: if v.no_ln_pre {
                None
            } else {
                Some(LayerNorm::load(vb.pp("ln_pre"), width)?)
            },
            transformer: Transformer::load(
                vb.pp("transformer"),
                width,
                v.layers,
                v.heads(),
                v.mlp_width(),
                act,
            )?,
            pooling,
            ln_post: LayerNorm::load(vb.pp("ln_post"), pool_dim)?,
            proj: Linear::load_matrix(vb.clone(), "proj", pool_dim, embed)?,
            patch: (ph, pw),
            image_size: v.image_size.hw(),
        })
    }

    /// Call `f` with each product weight of the tower: the blocks, the poolers, the projection. The patch
    /// embedding is not one of them: it stays as loaded.
    pub(crate) fn for_each_product(&mut self, f: &mut ProductVisitor) -> Result<()> {
        self.transformer.for_each_product(f)?;
        match &mut self.pooling {
            Pooling::Token { .. } => {}
            Pooling::Shared { pool, .. } => pool.for_each_product(f)?,
            Pooling::Split {
                pool, contrastive, ..
            } => {
                pool.for_each_product(f)?;
                contrastive.for_each_product(f)?;
            }
        }
        self.proj.for_each_product(f)
    }

    /// The expected input resolution `(height, width)`.
    pub fn image_size(&self) -> (usize, usize) {
        self.image_size
    }

    /// The bias-free patch convolution with stride = kernel, written as one GEMM over flattened patches.
    fn patch_embed(&self, images: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = images.dims4()?;
        let (ph, pw) = self.patch;
        let (gh, gw) = (h / ph, w / pw);
        let width = self.conv1.dim(0)?;
        let patches = images
            .reshape((b, c, gh, ph, gw, pw))?
            .permute((0, 2, 4, 1, 3, 5))?
            .contiguous()?
            .reshape((b, gh * gw, c * ph * pw))?;
        let kernel = self.conv1.reshape((width, c * ph * pw))?;
        crate::nn::ops::linear(&patches, &crate::nn::ops::LinearWeight::Dense(kernel), None)
    }

    /// Encoder tokens after the transformer, its blocks run by `runner` ([`crate::nn::AllAtOnce`] outside
    /// training): (batch, 1 + patches, width).
    pub fn encode_tokens(&self, images: &Tensor, runner: &dyn BlockRunner) -> Result<Tensor> {
        let (_, c, h, w) = images.dims4()?;
        if c != 3 || (h, w) != self.image_size {
            candle_core::bail!(
                "expected images of shape (batch, 3, {}, {}), got {:?}",
                self.image_size.0,
                self.image_size.1,
                images.dims()
            );
        }
        let dtype = self.conv1.dtype();
        let images = if images.dtype() == dtype {
            images.clone()
        } else {
            images.to_dtype(dtype)?
        };
        let x = self.patch_embed(&images)?;
        let (b, _, width) = x.dims3()?;
        let cls = self
            .class_embedding
            .reshape((1, 1, width))?
            .broadcast_as((b, 1, width))?;
        let x = Tensor::cat(&[&cls.to_dtype(x.dtype())?, &x], 1)?;
        let x = x.broadcast_add(&self.positional_embedding)?;
        let x = match &self.ln_pre {
            Some(ln) => ln.forward(&x)?,
            None => x,
        };
        self.transformer.forward(&x, None, runner)
    }

    /// Split pooled tokens into (embedding, context) as open_clip's `_global_pool` does.
    fn global_pool(x: &Tensor, average: bool) -> Result<(Tensor, Tensor)> {
        let n = x.dim(1)?;
        let tokens = x.narrow(1, 1, n - 1)?;
        let pooled = if average {
            tokens.mean(1)?
        } else {
            x.narrow(1, 0, 1)?.squeeze(1)?
        };
        Ok((pooled, tokens))
    }

    /// Embedding (unnormalised, projected) and caption context, the blocks run by `runner`
    /// ([`crate::nn::AllAtOnce`] outside training).
    pub fn forward(&self, images: &Tensor, runner: &dyn BlockRunner) -> Result<VisionOutput> {
        self.forward_tokens(&self.encode_tokens(images, runner)?)
    }

    /// The encoder tokens exactly as this model's attentional pooler(s) read them, from the output of
    /// [`VisionTower::encode_tokens`]: unchanged for open_clip's shared pooler (it normalises them itself with
    /// its `ln_k`), after `ln_post` for the paper's split poolers and for token pooling. Frozen-feature probes
    /// train a new pooler on these, as the CoCa paper does.
    pub fn pooler_context(&self, x: &Tensor) -> Result<Tensor> {
        match &self.pooling {
            Pooling::Shared { .. } => Ok(x.clone()),
            Pooling::Split { .. } | Pooling::Token { .. } => self.ln_post.forward(x),
        }
    }

    /// [`VisionTower::forward`] from tokens already encoded by [`VisionTower::encode_tokens`] (so a caller that
    /// also needs the tokens runs the transformer once).
    pub fn forward_tokens(&self, x: &Tensor) -> Result<VisionOutput> {
        let x = x.clone();
        let (pooled, tokens) = match &self.pooling {
            Pooling::Token {
                average,
                ln_after_pool,
            } => {
                if *ln_after_pool {
                    let (pooled, tokens) = Self::global_pool(&x, *average)?;
                    (self.ln_post.forward(&pooled)?, tokens)
                } else {
                    Self::global_pool(&self.ln_post.forward(&x)?, *average)?
                }
            }
            Pooling::Shared { pool, average } => {
                let pooled = self.ln_post.forward(&pool.forward(&x)?)?;
                Self::global_pool(&pooled, *average)?
            }
            Pooling::Split {
                pool,
                contrastive,
                mode,
            } => {
                let x = self.ln_post.forward(&x)?;
                let tokens = pool.forward(&x)?;
                let source = match mode {
                    PaperPoolMode::Parallel => &x,
                    PaperPoolMode::Cascade => &tokens,
                };
                let pooled = contrastive.forward(source)?.squeeze(1)?;
                (pooled, tokens)
            }
        };
        Ok(VisionOutput {
            pooled: self.proj.forward(&pooled)?,
            tokens,
        })
    }

    /// The dtype of the weights.
    pub fn dtype(&self) -> DType {
        self.conv1.dtype()
    }
}

/// open_clip's fixed 2-D sine-cosine position embeddings (`pos_embed_type: "sin_cos_2d"`) for a `grid`×`grid`
/// patch grid: `(1 + grid², width)` row-major, a zero row for the class token first. Patch `(row, col)` gets
/// `[sin(col·ω), cos(col·ω), sin(row·ω), cos(row·ω)]` with `ω_k = 10000^(−k/(width/4))`, `k < width/4` (the
/// column comes first, as open_clip's `meshgrid` orders it). `width` must be a multiple of 4.
pub fn sincos_2d_positional_embedding(width: usize, grid: usize) -> Vec<f32> {
    let quarter = width / 4;
    // Frequencies in f64 and values rounded once to f32, as open_clip computes them in numpy.
    let omega: Vec<f64> = (0..quarter)
        .map(|k| 1.0 / 10000f64.powf(k as f64 / quarter as f64))
        .collect();
    let mut table = vec![0f32; width];
    for row in 0..grid {
        for col in 0..grid {
            for pos in [col, row] {
                let angles = omega.iter().map(|w| pos as f64 * w);
                table.extend(angles.clone().map(|a| a.sin() as f32));
                table.extend(angles.map(|a| a.cos() as f32));
            }
        }
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sincos_table_layout() {
        let (width, grid) = (8, 3);
        let t = sincos_2d_positional_embedding(width, grid);
        assert_eq!(t.len(), (grid * grid + 1) * width);
        assert!(
            t[..width].iter().all(|&v| v == 0.0),
            "class token row is zero"
        );
        // Patch (row 1, col 2) is row 1 + 1·3 + 2 = 6 of the table; ω = [1, 0.01] for width 8.
        let r = &t[6 * width..7 * width];
        let want = [
            2f64.sin(),
            0.02f64.sin(),
            2f64.cos(),
            0.02f64.cos(),
            1f64.sin(),
            0.01f64.sin(),
            1f64.cos(),
            0.01f64.cos(),
        ];
        for (got, want) in r.iter().zip(want) {
            assert!((f64::from(*got) - want).abs() < 1e-7, "{r:?}");
        }
    }
}
