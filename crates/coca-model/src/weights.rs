//! Which parameters a config needs, and building a model from named tensors.

use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Result, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder, VarMap};

use crate::coca::Coca;
use crate::config::CocaConfig;

/// A backend that records every parameter the model asks for and hands out zero-cost broadcast zeros, so the
/// expected state dict comes from the model's own constructor: one source of truth for names and shapes.
struct ShapeRecorder {
    seen: Arc<Mutex<Vec<ParameterSpec>>>,
}

/// A parameter's open_clip name and shape.
pub type ParameterSpec = (String, Vec<usize>);

impl SimpleBackend for ShapeRecorder {
    fn get(&self, s: Shape, name: &str, _: Init, dtype: DType, dev: &Device) -> Result<Tensor> {
        self.seen
            .lock()
            .map_err(|_| candle_core::Error::Msg("shape recorder poisoned".into()))?
            .push((name.to_string(), s.dims().to_vec()));
        Tensor::zeros((), dtype, dev)?.broadcast_as(s)
    }

    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> Result<Tensor> {
        candle_core::bail!("shape recorder cannot serve `{name}` without a shape")
    }

    fn contains_tensor(&self, _: &str) -> bool {
        true
    }
}

/// Every parameter of the model described by `cfg`: open_clip state-dict names and shapes, in model order.
pub fn parameter_specs(cfg: &CocaConfig) -> Result<Vec<ParameterSpec>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let backend: Box<dyn SimpleBackend> = Box::new(ShapeRecorder { seen: seen.clone() });
    let vb = VarBuilder::from_backend(backend, DType::F32, Device::Cpu);
    Coca::new(cfg, vb)?;
    let specs = seen
        .lock()
        .map_err(|_| candle_core::Error::Msg("shape recorder poisoned".into()))?
        .clone();
    Ok(specs)
}

/// Total number of scalar parameters.
pub fn parameter_count(specs: &[ParameterSpec]) -> usize {
    specs.iter().map(|(_, s)| s.iter().product::<usize>()).sum()
}

/// A model whose parameters are trainable `Var`s, plus the map that owns them (for optimisers and saving).
pub struct TrainableCoca {
    /// The model; its forward records the autograd graph.
    pub model: Coca,
    /// The variables, by open_clip name.
    pub vars: VarMap,
}

/// Build a trainable model whose variables start from `get(name)` (e.g. a checkpoint's tensors).
pub fn trainable_from(
    cfg: &CocaConfig,
    dtype: DType,
    device: &Device,
    mut get: impl FnMut(&str) -> Result<Tensor>,
) -> Result<TrainableCoca> {
    let vars = VarMap::new();
    let vb = VarBuilder::from_varmap(&vars, dtype, device);
    let model = Coca::new(cfg, vb)?;
    {
        let data = vars
            .data()
            .lock()
            .map_err(|_| candle_core::Error::Msg("var map poisoned".into()))?;
        for (name, var) in data.iter() {
            let value = get(name)?.to_dtype(dtype)?.to_device(device)?;
            var.set(&value)?;
        }
    }
    Ok(TrainableCoca { model, vars })
}

/// Serves pre-cast tensors whatever dtype the model asks for (the cast is decided per parameter).
struct CastView {
    tensors: std::collections::HashMap<String, Tensor>,
}

impl CastView {
    fn lookup(&self, name: &str) -> Result<Tensor> {
        self.tensors
            .get(name)
            .cloned()
            .ok_or_else(|| candle_core::Error::Msg(format!("no variable `{name}`")))
    }
}

impl SimpleBackend for CastView {
    fn get(&self, s: Shape, name: &str, _: Init, _: DType, _: &Device) -> Result<Tensor> {
        let t = self.lookup(name)?;
        if t.shape() != &s {
            candle_core::bail!("`{name}`: variable {:?}, model expects {s:?}", t.shape());
        }
        Ok(t)
    }

    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> Result<Tensor> {
        self.lookup(name)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }
}

/// `true` for the parameters of LayerNorms (`…ln_1.weight`, `…ln_final.bias`, …), which mixed precision keeps
/// in f32 as autocast does (the norms compute in f32).
fn is_layer_norm_parameter(name: &str) -> bool {
    name.rsplit('.')
        .nth(1)
        .is_some_and(|module| module.starts_with("ln"))
}

/// The model of `vars` (f32 master weights) computing in `dtype`, as autocast does: every parameter but the
/// LayerNorms' and `logit_scale` enters as a cast of its variable. The casts are recorded, so gradients reach
/// the f32 variables in f32. Built anew for each step (the casts must see the current weights).
pub fn mixed_precision_view(cfg: &CocaConfig, vars: &VarMap, dtype: DType) -> Result<Coca> {
    let data = vars
        .data()
        .lock()
        .map_err(|_| candle_core::Error::Msg("var map poisoned".into()))?;
    let mut tensors = std::collections::HashMap::with_capacity(data.len());
    let mut device = Device::Cpu;
    for (name, var) in data.iter() {
        let t = var.as_tensor();
        device = t.device().clone();
        let keep = is_layer_norm_parameter(name) || name == "logit_scale";
        tensors.insert(
            name.clone(),
            if keep { t.clone() } else { t.to_dtype(dtype)? },
        );
    }
    drop(data);
    let vb = VarBuilder::from_backend(Box::new(CastView { tensors }), dtype, device);
    Coca::new(cfg, vb)
}
