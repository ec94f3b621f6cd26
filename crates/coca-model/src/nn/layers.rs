//! Linear, LayerNorm and MLP layers loaded by open_clip's parameter names.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

use super::fused;
use super::ops;
use super::thin_matmul::{thin_matmul, thin_matmul_transposed};

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

    /// The weight, then the bias if there is one.
    pub fn parameters(&self) -> impl Iterator<Item = &Tensor> {
        std::iter::once(&self.weight).chain(self.bias.as_ref())
    }

    /// Apply to `x` of shape (..., in). All leading dimensions are folded into one GEMM.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        matmul_transposed(x, &self.weight, self.bias.as_ref())
    }
}

/// `x·Wᵀ (+ b)` over the last dimension of `x`, folding leading dimensions so that one large GEMM runs
/// instead of a batch of small ones.
pub fn matmul_transposed(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let dims = x.dims();
    let in_dim = dims[dims.len() - 1];
    let rows: usize = dims[..dims.len() - 1].iter().product();
    let out_dim = weight.dim(0)?;
    let flat = x.reshape((rows, in_dim))?;
    let mut out_shape = dims[..dims.len() - 1].to_vec();
    out_shape.push(out_dim);
    let fused = fused::applies(&[&flat, weight]) && bias.is_none_or(|b| fused::applies(&[b]));
    let y = match thin_matmul_transposed(&flat, weight)? {
        Some(y) => y,
        // The bias is the fused GEMM's initial accumulator.
        None if fused => return fused::linear(&flat, weight, bias)?.reshape(out_shape),
        None => flat.matmul(&weight.t()?)?,
    };
    match bias {
        Some(b) => y.broadcast_add(b)?.reshape(out_shape),
        None => y.reshape(out_shape),
    }
}

/// `x @ P` for open_clip's bare projection matrices stored as (in, out).
pub fn project(x: &Tensor, proj: &Tensor) -> Result<Tensor> {
    let dims = x.dims();
    let in_dim = dims[dims.len() - 1];
    let rows: usize = dims[..dims.len() - 1].iter().product();
    let flat = x.reshape((rows, in_dim))?;
    let y = match thin_matmul(&flat, proj)? {
        Some(y) => y,
        None => flat.matmul(proj)?,
    };
    let mut out_shape = dims[..dims.len() - 1].to_vec();
    out_shape.push(proj.dim(1)?);
    y.reshape(out_shape)
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
        let h = match (&self.c_fc.bias, self.act) {
            // With coca's CUDA kernels, c_fc's bias joins the GELU kernel instead of taking a pass of its own.
            (Some(b), Activation::Gelu) if fused::cuda_applies(&[x, &self.c_fc.weight, b]) => {
                fused::bias_gelu_erf(&matmul_transposed(x, &self.c_fc.weight, None)?, b)?
            }
            _ => self.act.forward(&self.c_fc.forward(x)?)?,
        };
        self.c_proj.forward(&h)
    }
}
