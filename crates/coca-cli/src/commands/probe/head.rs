//! The trainable part of a probe: a new attentional pooler + linear classifier over frozen tokens, or a
//! linear classifier (logistic regression) over the frozen embedding.
//!
//! The pooler is coca-model's own [`AttentionalPooler`] (learned queries, `ln_q`/`ln_k`, one multi-head
//! cross-attention), built fresh on a `VarMap` so every parameter trains; its queries' outputs are averaged,
//! layer-normalised and classified by a linear layer. The linear probe standardises each embedding dimension
//! with the training set's mean and deviation (stored with the probe), which lets one learning rate suit any
//! model.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use coca_model::nn::{LayerNorm, Linear};
use coca_model::pooler::AttentionalPooler;
use coca_train::init::{draw, InitRule};

/// Which probe, and its shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeKind {
    /// A new attentional pooler with `queries` queries and `heads` heads over the tokens, then a linear head.
    Attentional {
        /// Learned queries.
        queries: usize,
        /// Attention heads (must divide the token width).
        heads: usize,
    },
    /// Logistic regression on the standardised embedding.
    Linear,
}

impl ProbeKind {
    /// The name used in results and files.
    pub fn task(&self) -> &'static str {
        match self {
            ProbeKind::Attentional { .. } => "attentional_probe",
            ProbeKind::Linear => "linear_probe",
        }
    }
}

/// A probe's modules, built on the variables of `vars`.
pub struct ProbeHead {
    vars: VarMap,
    pooler: Option<(AttentionalPooler, LayerNorm)>,
    head: Linear,
    /// Standardisation (mean, std) of the linear probe's inputs, (1, E) each.
    standardise: Option<(Tensor, Tensor)>,
}

/// How a parameter starts, by name (PyTorch's defaults for these modules; open_clip's unit-normal queries).
fn init_rule(name: &str, shape: &[usize]) -> InitRule {
    let leaf = name.rsplit('.').next().unwrap_or(name);
    let fan_in = shape.get(1).copied().unwrap_or(1).max(1) as f64;
    if name.contains(".ln") || name.starts_with("ln") {
        return InitRule::Constant(if leaf == "weight" { 1.0 } else { 0.0 });
    }
    match leaf {
        "query" => InitRule::Normal(1.0),
        "in_proj_weight" => InitRule::Uniform((6.0 / (shape[0] + shape[1]) as f64).sqrt()),
        "bias" | "in_proj_bias" => InitRule::Constant(0.0),
        _ => InitRule::Uniform(1.0 / fan_in.sqrt()),
    }
}

impl ProbeHead {
    /// A fresh probe of `kind` over inputs of width `input_dim`, drawn from `seed`. The linear probe takes the
    /// standardisation of its inputs.
    pub fn new(
        kind: ProbeKind,
        input_dim: usize,
        classes: usize,
        standardise: Option<(Tensor, Tensor)>,
        seed: u64,
    ) -> Result<Self> {
        let head = Self::build(kind, input_dim, classes, standardise)?;
        // The var map is a hash map: go by sorted name, so a seed always gives the same probe.
        for (i, (name, var, _)) in head.params().into_iter().enumerate() {
            let value = draw(
                init_rule(&name, var.dims()),
                var.dims(),
                seed.wrapping_add(i as u64 * 7919),
            )?;
            var.set(&value)?;
        }
        Ok(head)
    }

    /// The modules, with variables at candle's default values (overwritten by the caller).
    fn build(
        kind: ProbeKind,
        input_dim: usize,
        classes: usize,
        standardise: Option<(Tensor, Tensor)>,
    ) -> Result<Self> {
        if classes < 2 {
            bail!("a probe needs at least 2 classes, got {classes}");
        }
        let vars = VarMap::new();
        let vb = VarBuilder::from_varmap(&vars, DType::F32, &Device::Cpu);
        let pooler = match kind {
            ProbeKind::Attentional { queries, heads } => {
                if queries == 0 {
                    bail!("--pooler-queries must be at least 1");
                }
                if heads == 0 || !input_dim.is_multiple_of(heads) {
                    bail!(
                        "--pooler-heads {heads} must divide the token width {input_dim} (try {})",
                        divisors(input_dim)
                    );
                }
                Some((
                    AttentionalPooler::load(vb.pp("pool"), input_dim, input_dim, heads, queries)?,
                    LayerNorm::load(vb.pp("ln"), input_dim)?,
                ))
            }
            ProbeKind::Linear => None,
        };
        let head = Linear::load(vb.pp("head"), input_dim, classes, true)?;
        Ok(Self {
            vars,
            pooler,
            head,
            standardise,
        })
    }

    /// Logits (B, classes) of inputs: tokens (B, T, W) for the attentional probe, embeddings (B, E) for the
    /// linear one.
    pub fn logits(&self, x: &Tensor) -> Result<Tensor> {
        let features = match &self.pooler {
            Some((pool, ln)) => ln.forward(&pool.forward(x)?.mean(1)?)?,
            None => match &self.standardise {
                Some((mean, std)) => x.broadcast_sub(mean)?.broadcast_div(std)?,
                None => x.clone(),
            },
        };
        Ok(self.head.forward(&features)?)
    }

    /// The trainable variables by name: (name, variable, whether weight decay applies — open_clip's rule:
    /// not to gains, biases and other vectors).
    pub fn params(&self) -> Vec<(String, Var, bool)> {
        let data = self.vars.data().lock().expect("var map lock");
        let mut params: Vec<(String, Var, bool)> = data
            .iter()
            .map(|(name, var)| {
                let decay = !coca_train::params::excluded_from_decay(name, var.dims());
                (name.clone(), var.clone(), decay)
            })
            .collect();
        params.sort_by(|a, b| a.0.cmp(&b.0));
        params
    }

    /// Save the probe's tensors and `metadata` as safetensors (atomically).
    pub fn save(&self, path: &Path, metadata: &BTreeMap<String, String>) -> Result<()> {
        let mut tensors: Vec<(String, Tensor)> = self
            .params()
            .into_iter()
            .map(|(name, var, _)| (name, var.as_tensor().clone()))
            .collect();
        if let Some((mean, std)) = &self.standardise {
            tensors.push(("standardise.mean".into(), mean.clone()));
            tensors.push(("standardise.std".into(), std.clone()));
        }
        coca_checkpoint::save_safetensors(path, tensors, None, metadata)
            .with_context(|| format!("{}: cannot save the probe", path.display()))?;
        Ok(())
    }

    /// Load a probe saved by [`ProbeHead::save`], with the shape stated in its metadata.
    pub fn load(path: &Path, kind: ProbeKind, input_dim: usize, classes: usize) -> Result<Self> {
        let file = coca_checkpoint::Checkpoint::open(path)?;
        let get = |name: &str| file.get(name, DType::F32, &Device::Cpu);
        let standardise = if kind == ProbeKind::Linear && file.contains("standardise.mean") {
            Some((get("standardise.mean")?, get("standardise.std")?))
        } else {
            None
        };
        let head = Self::build(kind, input_dim, classes, standardise)?;
        {
            let data = head.vars.data().lock().expect("var map lock");
            for (name, var) in data.iter() {
                let value = get(name)
                    .with_context(|| format!("{}: not a probe of this shape", path.display()))?;
                if value.dims() != var.dims() {
                    bail!(
                        "{}: `{name}` has shape {:?}, the probe needs {:?}",
                        path.display(),
                        value.dims(),
                        var.dims()
                    );
                }
                var.set(&value)?;
            }
        }
        Ok(head)
    }
}

/// The divisors of `n` above 1, for error messages.
fn divisors(n: usize) -> String {
    let list: Vec<String> = (1..=n)
        .filter(|d| n.is_multiple_of(*d))
        .map(|d| d.to_string())
        .collect();
    list.join(", ")
}

/// Per-dimension mean and standard deviation (floored at 1e-6) of (N, E) rows: (1, E) each.
pub fn standardisation(x: &Tensor) -> Result<(Tensor, Tensor)> {
    let mean = x.mean_keepdim(0)?;
    let var = x.broadcast_sub(&mean)?.sqr()?.mean_keepdim(0)?;
    let std = var.sqrt()?.maximum(1e-6)?;
    Ok((mean, std))
}
