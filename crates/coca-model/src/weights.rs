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
