//! Linear, LayerNorm and MLP layers loaded by open_clip's parameter names.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

use super::ops;

/// `nn.Linear`: `y = x·Wᵀ + b` with `W` stored as (out, in).
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    /// Load `weight` (and `bias` when `with_bias`) under `vb`.
    pub fn load(vb: VarBuilder, in_dim: usize, out_dim: usize, with_bias: bool) -> Result<Self> {
        let weight = vb.get((out_dim, in_dim), "weight")?;
        let bias = if with_bias {
            Some(vb.get(out_dim, "bias")?)
        } else {
            None
        };
        Ok(Self { weight, bias })
    }

    /// Wrap existing tensors (used for the packed attention projections).
    pub fn from_parts(weight: Tensor, bias: Option<Tensor>) -> Self {
        Self { weight, bias }
    }

    /// Apply to `x` of shape (..., in) ([`ops::linear`]).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        ops::linear(x, &self.weight, self.bias.as_ref())
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
}
