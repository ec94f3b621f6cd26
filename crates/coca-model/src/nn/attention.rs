//! `nn.MultiheadAttention` with open_clip's parameter layout (batch-first).

use candle_core::{DType, Device, Result, Tensor};
use candle_nn::VarBuilder;

use super::layers::{parameter_name, Linear, ProductVisitor};
use super::ops::{self, LinearWeight, Projections};

/// An additive attention mask (0 = attend, −∞ = blocked), broadcastable to (batch, heads, queries, keys).
#[derive(Debug, Clone)]
pub struct AttentionMask(pub Tensor);

impl AttentionMask {
    /// The causal mask of `queries` positions that follow `past` earlier ones: (queries, past + queries), query `i`
    /// (position `past + i`) sees keys `0..=past + i`. A whole sequence is `past = 0`; a decoding step's new
    /// positions attend to the cached ones too.
    pub fn causal(past: usize, queries: usize, device: &Device) -> Result<Self> {
        let keys = past + queries;
        let data: Vec<f32> = (0..queries)
            .flat_map(|i| {
                (0..keys).map(move |k| if k > past + i { f32::NEG_INFINITY } else { 0.0 })
            })
            .collect();
        Ok(Self(Tensor::from_vec(data, (queries, keys), device)?))
    }

    /// [`AttentionMask::causal`] for a decoding step's `queries` new positions after `past` cached ones, in
    /// `dtype`, or `None` for a single new position, which may see every key.
    pub(crate) fn step(
        past: usize,
        queries: usize,
        device: &Device,
        dtype: DType,
    ) -> Result<Option<Tensor>> {
        if queries == 1 {
            return Ok(None);
        }
        Ok(Some(Self::causal(past, queries, device)?.to_dtype(dtype)?))
    }

    /// The mask as a tensor of `dtype`.
    pub fn to_dtype(&self, dtype: DType) -> Result<Tensor> {
        self.0.to_dtype(dtype)
    }
}

/// The input projections, in whichever layout the checkpoint stores them.
#[derive(Debug, Clone)]
enum InProjection {
    /// `in_proj_weight` (3E, E): query, key and value share the input width. `q` and `kv` are its first E and
    /// last 2E output channels (views, kept so that no call narrows the weight).
    Packed { qkv: Linear, q: Linear, kv: Linear },
    /// `q_proj_weight` (E, E), `k_proj_weight`/`v_proj_weight` (E, kdim) and one packed `in_proj_bias` (3E): used
    /// by PyTorch whenever the key width differs from the query width (the attentional pooler).
    Separate { q: Linear, k: Linear, v: Linear },
}

impl InProjection {
    /// The packed layout from its (3E, E) projection, with the query and key/value parts.
    fn packed(qkv: Linear, embed_dim: usize) -> Result<Self> {
        Ok(Self::Packed {
            q: qkv.narrow_out(0, embed_dim)?,
            kv: qkv.narrow_out(embed_dim, 2 * embed_dim)?,
            qkv,
        })
    }
}

/// Multi-head attention; `forward(query, context)` attends from `query` to `context` (or to itself).
#[derive(Debug, Clone)]
pub struct MultiheadAttention {
    in_proj: InProjection,
    out_proj: Linear,
    heads: usize,
    embed_dim: usize,
}

/// Keys and values already projected and split into heads: (batch, heads, keys, head_dim) each.
#[derive(Debug, Clone)]
pub(crate) struct KeyValue {
    /// Projected keys.
    pub(crate) k: Tensor,
    /// Projected values.
    pub(crate) v: Tensor,
}

impl KeyValue {
    /// Keep batch items `idx` (u32 indices, in that order).
    pub(crate) fn index_select(&self, idx: &Tensor) -> Result<Self> {
        Ok(Self {
            k: self.k.index_select(idx, 0)?,
            v: self.v.index_select(idx, 0)?,
        })
    }
}

/// The keys and values one self-attention layer has seen while decoding: every position so far, per row.
#[derive(Debug, Clone, Default)]
pub(crate) struct LayerCache(Option<KeyValue>);

impl LayerCache {
    /// Append the new positions' keys/values and return those of every position so far.
    pub(crate) fn extend(&mut self, new: KeyValue) -> Result<KeyValue> {
        let kv = match self.0.take() {
            None => new,
            Some(old) => KeyValue {
                k: Tensor::cat(&[&old.k, &new.k], 2)?,
                v: Tensor::cat(&[&old.v, &new.v], 2)?,
            },
        };
        self.0 = Some(kv.clone());
        Ok(kv)
    }

    /// Keep rows `idx` (u32 indices, in that order).
    pub(crate) fn select(&mut self, idx: &Tensor) -> Result<()> {
        if let Some(kv) = &self.0 {
            self.0 = Some(kv.index_select(idx)?);
        }
        Ok(())
    }
}

/// Projected queries of batch 1 repeated over `batch` context items (gradients sum back over the batch);
/// anything else unchanged.
fn share_across_batch(q: Tensor, batch: usize) -> Result<Tensor> {
    let (qb, n, e) = q.dims3()?;
    if qb == 1 && batch > 1 {
        q.broadcast_as((batch, n, e))?.contiguous()
    } else {
        Ok(q)
    }
}

impl MultiheadAttention {
    /// Load under `vb` (the `attn` module). `kv_dim` is the context width; PyTorch switches to separate
    /// projection weights exactly when it differs from `embed_dim`.
    pub fn load(vb: VarBuilder, embed_dim: usize, kv_dim: usize, heads: usize) -> Result<Self> {
        let bias = vb.get(3 * embed_dim, "in_proj_bias")?;
        let in_proj = if kv_dim == embed_dim {
            let weight = vb.get((3 * embed_dim, embed_dim), "in_proj_weight")?;
            let name = parameter_name(&vb, "in_proj_weight");
            InProjection::packed(
                Linear::from_parts(LinearWeight::Dense(weight), Some(bias), name),
                embed_dim,
            )?
        } else {
            let part = |name: &str, i: usize, in_dim: usize| -> Result<Linear> {
                Ok(Linear::from_parts(
                    LinearWeight::Dense(vb.get((embed_dim, in_dim), name)?),
                    Some(bias.narrow(0, i * embed_dim, embed_dim)?),
                    parameter_name(&vb, name),
                ))
            };
            InProjection::Separate {
                q: part("q_proj_weight", 0, embed_dim)?,
                k: part("k_proj_weight", 1, kv_dim)?,
                v: part("v_proj_weight", 2, kv_dim)?,
            }
        };
        Ok(Self {
            in_proj,
            out_proj: Linear::load(vb.pp("out_proj"), embed_dim, embed_dim, true)?,
            heads,
            embed_dim,
        })
    }

    /// Call `f` with each of the attention's product weights (the packed input projection as one weight).
    pub(crate) fn for_each_product(&mut self, f: &mut ProductVisitor) -> Result<()> {
        match &mut self.in_proj {
            InProjection::Packed { qkv, .. } => {
                qkv.for_each_product(f)?;
                self.in_proj = InProjection::packed(qkv.clone(), self.embed_dim)?;
            }
            InProjection::Separate { q, k, v } => {
                q.for_each_product(f)?;
                k.for_each_product(f)?;
                v.for_each_product(f)?;
            }
        }
        self.out_proj.for_each_product(f)
    }

    /// Number of heads.
    pub fn heads(&self) -> usize {
        self.heads
    }

    /// (batch, len, E) → (batch, heads, len, head_dim), contiguous.
    fn split_heads(&self, x: &Tensor) -> Result<Tensor> {
        ops::split_heads(x, self.heads)
    }

    /// Project the query side: (batch, len, E) → (batch, heads, len, head_dim).
    pub(crate) fn project_query(&self, x: &Tensor) -> Result<Tensor> {
        let q = match &self.in_proj {
            InProjection::Packed { q, .. } | InProjection::Separate { q, .. } => q.forward(x)?,
        };
        self.split_heads(&q)
    }

    /// Project a context into keys and values (computed once and reused, e.g. image tokens during generation).
    pub(crate) fn project_kv(&self, context: &Tensor) -> Result<KeyValue> {
        let (k, v) = match &self.in_proj {
            InProjection::Packed { kv, .. } => {
                let e = self.embed_dim;
                let kv = kv.forward(context)?;
                (kv.narrow(2, 0, e)?, kv.narrow(2, e, e)?)
            }
            InProjection::Separate { k, v, .. } => (k.forward(context)?, v.forward(context)?),
        };
        Ok(KeyValue {
            k: self.split_heads(&k)?,
            v: self.split_heads(&v)?,
        })
    }

    /// Project `x` into queries, keys and values at once (self-attention: one GEMM for all three).
    pub(crate) fn project_qkv(&self, x: &Tensor) -> Result<(Tensor, KeyValue)> {
        match &self.in_proj {
            InProjection::Packed { qkv, .. } => {
                let e = self.embed_dim;
                let qkv = qkv.forward(x)?;
                let q = self.split_heads(&qkv.narrow(2, 0, e)?)?;
                let k = self.split_heads(&qkv.narrow(2, e, e)?)?;
                let v = self.split_heads(&qkv.narrow(2, 2 * e, e)?)?;
                Ok((q, KeyValue { k, v }))
            }
            InProjection::Separate { .. } => Ok((self.project_query(x)?, self.project_kv(x)?)),
        }
    }

    /// Scaled dot-product attention of projected heads ([`ops::attention_heads`]), then the output projection.
    /// `q`: (b, h, lq, d); keys/values: (b, h, lk, d); `mask` additive, broadcastable to (b, h, lq, lk).
    pub(crate) fn attend(
        &self,
        q: &Tensor,
        kv: &KeyValue,
        mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        self.out_proj
            .forward(&ops::attention_heads(q, &kv.k, &kv.v, mask)?)
    }

    /// Attention from `query` to `context` (`None`: self-attention): the projections, [`ops::attention`] from them
    /// to the merged heads, the output projection. A `query` of batch 1 with a larger context batch is shared by
    /// every context item (the attentional pooler's learned queries): it is projected once, then repeated.
    pub fn forward(
        &self,
        query: &Tensor,
        context: Option<&Tensor>,
        mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        let out = match (&self.in_proj, context) {
            (InProjection::Packed { qkv, .. }, None) => {
                let qkv = qkv.forward(query)?;
                ops::attention(Projections::Packed(&qkv), self.heads, mask)?
            }
            (InProjection::Packed { q, kv, .. }, Some(ctx)) => {
                let q = share_across_batch(q.forward(query)?, ctx.dim(0)?)?;
                let kv = kv.forward(ctx)?;
                ops::attention(Projections::QueryKeyValue(&q, &kv), self.heads, mask)?
            }
            (InProjection::Separate { q, k, v }, ctx) => {
                let ctx = ctx.unwrap_or(query);
                let q = share_across_batch(q.forward(query)?, ctx.dim(0)?)?;
                let (k, v) = (k.forward(ctx)?, v.forward(ctx)?);
                ops::attention(Projections::Separate(&q, &k, &v), self.heads, mask)?
            }
        };
        self.out_proj.forward(&out)
    }
}
