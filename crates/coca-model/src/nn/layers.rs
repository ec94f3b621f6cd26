//! Linear, LayerNorm and MLP layers loaded by open_clip's parameter names.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

use super::ops::{self, LinearWeight, PackedFormat};

/// What a walk over a model's product weights calls for each one: the checkpoint name of the weight, what kind
/// of weight it is, and the weight itself ([`crate::Coca::for_each_product`]).
pub type ProductVisitor<'a> = dyn FnMut(&str, WeightKind, &mut LinearWeight) -> Result<()> + 'a;

/// The two kinds of weight matrix the walk of [`ProductVisitor`] visits, which pack differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightKind {
    /// The weight of a product `x·Wᵀ`: its rounding is averaged over the sums of the product.
    Product,
    /// The token embedding table: a looked-up row enters the residual stream as it is, with nothing to average
    /// its rounding.
    EmbeddingTable,
}

impl WeightKind {
    /// The format a weight of this kind is packed to in a model packed to `format`, or `None` where it stays
    /// as loaded: products take the model's format; the embedding table is packed to bf16 in a bf16 model and
    /// stays f32 in an int8 one, where rounding its rows as well cost a trained model more accuracy than int8 is
    /// allowed to (measured in `docs/inference.md`).
    pub fn packed_format(self, format: PackedFormat) -> Option<PackedFormat> {
        match (self, format) {
            (Self::Product, format) => Some(format),
            (Self::EmbeddingTable, PackedFormat::Bf16) => Some(PackedFormat::Bf16),
            (Self::EmbeddingTable, PackedFormat::Int8) => None,
        }
    }
}

/// The checkpoint name of parameter `name` under `vb`'s prefix.
pub(crate) fn parameter_name(vb: &VarBuilder, name: &str) -> String {
    match vb.prefix() {
        prefix if prefix.is_empty() => name.to_string(),
        prefix => format!("{prefix}.{name}"),
    }
}

/// `nn.Linear`: `y = x·Wᵀ + b` with `W` stored as (out, in); also a bare projection matrix (in, out) without
/// bias, and either packed for the low-precision CPU kernels.
#[derive(Debug, Clone)]
pub struct Linear {
    weight: LinearWeight,
    bias: Option<Tensor>,
    /// The checkpoint name of the weight.
    name: String,
}

impl Linear {
    /// Load `weight` (and `bias` when `with_bias`) under `vb`.
    pub fn load(vb: VarBuilder, in_dim: usize, out_dim: usize, with_bias: bool) -> Result<Self> {
        let weight = LinearWeight::Dense(vb.get((out_dim, in_dim), "weight")?);
        let bias = if with_bias {
            Some(vb.get(out_dim, "bias")?)
        } else {
            None
        };
        let name = parameter_name(&vb, "weight");
        Ok(Self { weight, bias, name })
    }

    /// A bare projection matrix `name` (in, out) under `vb`, applied as `x·P` ([`ops::project`]).
    pub fn load_matrix(vb: VarBuilder, name: &str, in_dim: usize, out_dim: usize) -> Result<Self> {
        Ok(Self {
            weight: LinearWeight::Matrix(vb.get((in_dim, out_dim), name)?),
            bias: None,
            name: parameter_name(&vb, name),
        })
    }

    /// Wrap existing parts: the weight, its bias, and the weight's checkpoint name.
    pub fn from_parts(weight: LinearWeight, bias: Option<Tensor>, name: String) -> Self {
        Self { weight, bias, name }
    }

    /// The weight.
    pub fn weight(&self) -> &LinearWeight {
        &self.weight
    }

    /// The bias, if any.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// Output channels `start .. start + len` of the product, weight and bias (a part of a packed attention
    /// projection); named like this one.
    pub fn narrow_out(&self, start: usize, len: usize) -> Result<Self> {
        Ok(Self {
            weight: self.weight.narrow_out(start, len)?,
            bias: self
                .bias
                .as_ref()
                .map(|b| b.narrow(0, start, len))
                .transpose()?,
            name: self.name.clone(),
        })
    }

    /// Apply to `x` of shape (..., in) ([`ops::linear`]).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        ops::linear(x, &self.weight, self.bias.as_ref())
    }

    /// Call `f` with the weight's checkpoint name and the weight.
    pub(crate) fn for_each_product(&mut self, f: &mut ProductVisitor) -> Result<()> {
        f(&self.name, WeightKind::Product, &mut self.weight)
    }
}

/// `nn.LayerNorm(dim)` with open_clip's epsilon.
#[derive(Debug, Clone)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
}

impl LayerNorm {
    /// Load `weight` and `bias` of size `dim` under `vb`.
    pub fn load(vb: VarBuilder, dim: usize) -> Result<Self> {
        Ok(Self {
            weight: vb.get(dim, "weight")?,
            bias: vb.get(dim, "bias")?,
        })
    }

    /// Normalise the last dimension.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        ops::layer_norm(x, &self.weight, &self.bias, ops::LAYER_NORM_EPS)
    }
}

/// The MLP non-linearity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// Exact erf GELU (`nn.GELU()`), what every CoCa config uses.
    Gelu,
    /// `x·σ(1.702x)`.
    QuickGelu,
}

impl Activation {
    /// Apply elementwise.
    pub fn forward(self, x: &Tensor) -> Result<Tensor> {
        match self {
            Activation::Gelu => ops::gelu(x),
            Activation::QuickGelu => ops::quick_gelu(x),
        }
    }
}

/// open_clip's block MLP: `c_fc` → activation → `c_proj`.
#[derive(Debug, Clone)]
pub struct Mlp {
    c_fc: Linear,
    c_proj: Linear,
    act: Activation,
}

impl Mlp {
    /// Load `c_fc` (width → hidden) and `c_proj` (hidden → width) under `vb`.
    pub fn load(vb: VarBuilder, width: usize, hidden: usize, act: Activation) -> Result<Self> {
        Ok(Self {
            c_fc: Linear::load(vb.pp("c_fc"), width, hidden, true)?,
            c_proj: Linear::load(vb.pp("c_proj"), hidden, width, true)?,
            act,
        })
    }

    /// Apply to (..., width).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = ops::linear_activation(x, &self.c_fc.weight, self.c_fc.bias.as_ref(), self.act)?;
        self.c_proj.forward(&h)
    }

    /// Call `f` with each of the MLP's product weights.
    pub(crate) fn for_each_product(&mut self, f: &mut ProductVisitor) -> Result<()> {
        self.c_fc.for_each_product(f)?;
        self.c_proj.for_each_product(f)
    }
}
