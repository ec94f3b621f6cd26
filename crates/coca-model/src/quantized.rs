//! Quantised checkpoints: the model's product weights packed to int8 or bf16 ahead of time (`coca quantize`),
//! written as safetensors and loaded straight into packed weights.
//!
//! # File layout (format version [`FORMAT_VERSION`])
//!
//! - every weight of [`Coca::for_each_product`] (the products, and the token embedding table) under its
//!   checkpoint name, as (out, in) row-major (a projection matrix stored (in, out) by open_clip is written as
//!   its transpose), in the format [`crate::nn::WeightKind::packed_format`] gives it: `I8` plus `<name>_scale`
//!   `F32` (out) for int8, or `BF16` for bf16 (the token embedding table: `BF16` in a bf16 file, `F32` in an
//!   int8 one);
//! - every other parameter as `F32`, under open_clip's name (LayerNorms, the positional and class embeddings,
//!   the patch embedding, the logit scale: what stays f32 at inference anyway);
//! - metadata: [`META_FORMAT`] (the format version), [`META_PRECISION`] (`int8` or `bf16`) and [`META_CONFIG`]
//!   (the model config's JSON), checked against the `--model` given when the file is loaded.
//!
//! Loading builds the model with a zero-sized placeholder for each packed weight (a broadcast scalar: no f32
//! copy is made), then packs each one from the memory-mapped file. The packed values are exactly those that
//! packing the f32 model at load gives, so both ways compute the same bits.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder};
use coca_checkpoint::Checkpoint;

use crate::coca::Coca;
use crate::config::CocaConfig;
use crate::error::{ModelError, Result};
use crate::nn::ops::{LinearWeight, PackedFormat, PackedWeight};
use crate::nn::WeightKind;
use crate::weights::parameter_specs;

/// The version of the layout above, written to [`META_FORMAT`].
pub const FORMAT_VERSION: &str = "2";
/// Metadata key of the format version.
pub const META_FORMAT: &str = "coca.quantized.format";
/// Metadata key of the precision (`int8` or `bf16`).
pub const META_PRECISION: &str = "coca.quantized.precision";
/// Metadata key of the model config's JSON.
pub const META_CONFIG: &str = "coca.quantized.config";

/// Suffix of an int8 weight's per-channel scales.
const SCALE_SUFFIX: &str = "_scale";

/// The safetensors dtype a packed weight of `format` is stored as.
fn dtype_name(format: PackedFormat) -> &'static str {
    match format {
        PackedFormat::Int8 => "I8",
        PackedFormat::Bf16 => "BF16",
    }
}

/// The name of a packed format in the file's metadata and in messages.
pub fn format_name(format: PackedFormat) -> &'static str {
    match format {
        PackedFormat::Int8 => "int8",
        PackedFormat::Bf16 => "bf16",
    }
}

/// Whether `ckpt` is a quantised file (it carries [`META_FORMAT`]).
pub fn is_quantized(ckpt: &Checkpoint) -> bool {
    ckpt.metadata().contains_key(META_FORMAT)
}

/// The packed format a quantised file records, after checking its format version.
pub fn recorded_format(ckpt: &Checkpoint) -> Result<PackedFormat> {
    let path = ckpt.path().display();
    let meta = ckpt.metadata();
    match meta.get(META_FORMAT).map(String::as_str) {
        Some(FORMAT_VERSION) => {}
        Some(other) => {
            return Err(ModelError::Input(format!(
                "'{path}' is a quantised file of format version {other}; this coca reads version \
                 {FORMAT_VERSION}: quantise the f32 checkpoint again with coca quantize"
            )))
        }
        None => {
            return Err(ModelError::Input(format!(
                "'{path}' is not a quantised file: its metadata has no {META_FORMAT}"
            )))
        }
    }
    match meta.get(META_PRECISION).map(String::as_str) {
        Some("int8") => Ok(PackedFormat::Int8),
        Some("bf16") => Ok(PackedFormat::Bf16),
        Some(other) => Err(ModelError::Input(format!(
            "'{path}': unknown quantised precision `{other}` in {META_PRECISION} (int8 or bf16)"
        ))),
        None => Err(ModelError::Input(format!(
            "'{path}': the quantised file's metadata has no {META_PRECISION}"
        ))),
    }
}

/// Write `model` (as loaded from `ckpt`, not yet packed) with its products packed to `format` to `path`,
/// atomically, in the layout of the module documentation.
pub fn write_quantized(
    model: &mut Coca,
    ckpt: &Checkpoint,
    format: PackedFormat,
    path: &Path,
) -> Result<()> {
    let cfg = model.config().clone();
    model.pack_weights(format)?;
    let mut packed: BTreeMap<String, PackedWeight> = BTreeMap::new();
    model.for_each_product(&mut |name, _, weight| {
        if let Some(w) = weight.packed() {
            packed.insert(name.to_string(), w.clone());
        }
        Ok(())
    })?;
    let mut tensors: Vec<(String, Tensor)> = Vec::new();
    let mut int8 = BTreeSet::new();
    let cpu = Device::Cpu;
    for (name, w) in &packed {
        let (n, k) = (w.n(), w.k());
        match w.format() {
            PackedFormat::Int8 => {
                let (values, scales) = w.int8_rows()?;
                let bytes: Vec<u8> = values.into_iter().map(|v| v as u8).collect();
                tensors.push((name.clone(), Tensor::from_vec(bytes, (n, k), &cpu)?));
                tensors.push((
                    format!("{name}{SCALE_SUFFIX}"),
                    Tensor::from_vec(scales, n, &cpu)?,
                ));
                int8.insert(name.clone());
            }
            PackedFormat::Bf16 => {
                // bf16 values widen to f32 exactly, and narrow back to the same bits.
                let values = w.dequantize()?;
                let t = Tensor::from_vec(values, (n, k), &cpu)?.to_dtype(DType::BF16)?;
                tensors.push((name.clone(), t));
            }
        }
    }
    for (name, _) in parameter_specs(&cfg)? {
        if !packed.contains_key(&name) {
            let t = ckpt.get(&name, DType::F32, &cpu)?;
            tensors.push((name, t));
        }
    }
    let config_json = serde_json::to_string(&cfg)
        .map_err(|e| ModelError::Input(format!("the model config does not serialise: {e}")))?;
    let metadata = BTreeMap::from([
        (META_FORMAT.to_string(), FORMAT_VERSION.to_string()),
        (META_PRECISION.to_string(), format_name(format).to_string()),
        (META_CONFIG.to_string(), config_json),
    ]);
    let named = tensors.iter().map(|(n, t)| (n, t));
    coca_checkpoint::save_safetensors_with_int8(path, named, None, &int8, &metadata)?;
    Ok(())
}

/// Check that the config recorded in a quantised file is `cfg`; the error names every field that differs,
/// with both values.
fn check_config(cfg: &CocaConfig, ckpt: &Checkpoint) -> Result<()> {
    let path = ckpt.path().display();
    let Some(recorded) = ckpt.metadata().get(META_CONFIG) else {
        return Err(ModelError::Input(format!(
            "'{path}': the quantised file's metadata has no {META_CONFIG}"
        )));
    };
    let recorded: serde_json::Value = serde_json::from_str(recorded).map_err(|e| {
        ModelError::Input(format!(
            "'{path}': the config in {META_CONFIG} is not JSON: {e}"
        ))
    })?;
    let ours = serde_json::to_value(cfg)
        .map_err(|e| ModelError::Input(format!("the model config does not serialise: {e}")))?;
    let mut differences = Vec::new();
    diff_json("", &recorded, &ours, &mut differences);
    if differences.is_empty() {
        return Ok(());
    }
    Err(ModelError::Input(format!(
        "'{path}' was quantised from a different model config than --model gives: {}; pass the \
         --model it was written for, or quantise this model's checkpoint",
        differences.join(", ")
    )))
}

/// The fields where `file` and `model` differ, as `path: file X, --model Y`.
fn diff_json(at: &str, file: &serde_json::Value, model: &serde_json::Value, out: &mut Vec<String>) {
    use serde_json::Value;
    match (file, model) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for key in keys {
                let sub = if at.is_empty() {
                    key.clone()
                } else {
                    format!("{at}.{key}")
                };
                let null = Value::Null;
                diff_json(
                    &sub,
                    a.get(key).unwrap_or(&null),
                    b.get(key).unwrap_or(&null),
                    out,
                );
            }
        }
        (a, b) if a != b => out.push(format!("{at}: file {a}, --model {b}")),
        _ => {}
    }
}

/// A checkpoint as a `VarBuilder` backend that hands out a zero-sized placeholder for each packed tensor (the
/// model's loaders ask for every weight by its dense shape; the walk then replaces the placeholders).
struct Placeholders<'a> {
    ckpt: &'a Checkpoint,
    /// Names of the tensors stored packed.
    packed: &'a BTreeSet<String>,
}

impl SimpleBackend for Placeholders<'_> {
    fn get(
        &self,
        shape: Shape,
        name: &str,
        init: Init,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        if self.packed.contains(name) {
            // The orientation is checked by the walk, which knows it.
            return Tensor::zeros((), dtype, device)?.broadcast_as(shape);
        }
        SimpleBackend::get(self.ckpt, shape, name, init, dtype, device)
    }

    fn get_unchecked(
        &self,
        name: &str,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        SimpleBackend::get_unchecked(self.ckpt, name, dtype, device)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.ckpt.contains(name)
    }
}

/// Build the model `cfg` on the CPU from the quantised file `ckpt` (its products packed as the file stores
/// them, everything else f32), after checking the recorded config and every tensor's presence, type and
/// shape; returns the model and its packed format.
pub fn load_quantized(cfg: &CocaConfig, ckpt: &Checkpoint) -> Result<(Coca, PackedFormat)> {
    let format = recorded_format(ckpt)?;
    check_config(cfg, ckpt)?;
    let path = ckpt.path().display().to_string();
    let bad = |msg: String| ModelError::Input(format!("quantised file '{path}': {msg}"));
    // How a tensor is stored: packed int8, packed bf16, or neither. Which one each weight must be is decided by
    // `WeightKind::packed_format`, checked by the walk below.
    let stored_format = |name: &str| {
        if ckpt.is_int8(name) {
            Some(PackedFormat::Int8)
        } else if ckpt.info(name).is_some_and(|i| i.dtype == DType::BF16) {
            Some(PackedFormat::Bf16)
        } else {
            None
        }
    };
    // Every parameter present with its shape (a packed one in either orientation; the walk checks which).
    let specs = parameter_specs(cfg)?;
    let mut packed = BTreeSet::new();
    for (name, shape) in &specs {
        let Some(info) = ckpt.info(name) else {
            return Err(bad(format!("tensor '{name}' is missing")));
        };
        let transposed: Vec<usize> = shape.iter().rev().copied().collect();
        if stored_format(name).is_some() && shape.len() == 2 {
            if info.shape != *shape && info.shape != transposed {
                return Err(bad(format!(
                    "'{name}' has shape {:?}, expected {:?} (out, in)",
                    info.shape, transposed
                )));
            }
            packed.insert(name.clone());
        } else if info.shape != *shape || !info.dtype.is_float() {
            return Err(bad(format!(
                "'{name}' is {:?} {:?}, expected F32 {shape:?}",
                info.dtype, info.shape
            )));
        }
    }
    let expected: BTreeSet<String> = specs
        .iter()
        .map(|(n, _)| n.clone())
        .chain(
            packed
                .iter()
                .filter(|n| stored_format(n) == Some(PackedFormat::Int8))
                .map(|n| format!("{n}{SCALE_SUFFIX}")),
        )
        .collect();
    if let Some(extra) = ckpt.names().find(|n| !expected.contains(*n)) {
        return Err(bad(format!("unexpected tensor '{extra}'")));
    }
    let backend = Placeholders {
        ckpt,
        packed: &packed,
    };
    let vb = VarBuilder::from_backend(Box::new(backend), DType::F32, Device::Cpu);
    let mut model = Coca::new(cfg, vb)?;
    let mut seen = 0usize;
    model.for_each_product(&mut |name, kind, weight| {
        let what = match kind {
            WeightKind::Product => "product weight",
            WeightKind::EmbeddingTable => "embedding table",
        };
        let Some(want) = kind.packed_format(format) else {
            // Stays as loaded: stored F32, read by the builder above like every other parameter.
            if packed.contains(name) {
                candle_core::bail!(
                    "quantised file '{path}': '{name}' is stored packed, but {} files store every {what} as F32",
                    format_name(format)
                );
            }
            return Ok(());
        };
        if !packed.contains(name) || stored_format(name) != Some(want) {
            candle_core::bail!(
                "quantised file '{path}': '{name}' is not stored as {}; {} files store every {what} so",
                dtype_name(want),
                format_name(format)
            );
        }
        seen += 1;
        let (n, k) = (weight.out_dim()?, weight.in_dim()?);
        let info_shape = ckpt.info(name).map(|i| i.shape.clone()).unwrap_or_default();
        if info_shape != [n, k] {
            candle_core::bail!(
                "quantised file '{path}': '{name}' has shape {info_shape:?}, expected ({n}, {k}) (out, in)"
            );
        }
        let wrap = |e: coca_checkpoint::CheckpointError| candle_core::Error::Msg(e.to_string());
        let packed = match want {
            PackedFormat::Int8 => {
                let scale_name = format!("{name}{SCALE_SUFFIX}");
                let scale_info = ckpt.info(&scale_name);
                if scale_info.is_none_or(|i| i.shape != [n] || i.dtype != DType::F32) {
                    candle_core::bail!(
                        "quantised file '{path}': '{scale_name}' must be F32 of shape [{n}], found {:?}",
                        scale_info.map(|i| (i.dtype, i.shape.clone()))
                    );
                }
                let scales = ckpt
                    .get(&scale_name, DType::F32, &Device::Cpu)
                    .map_err(wrap)?
                    .to_vec1::<f32>()?;
                let values = ckpt.int8_values(name).map_err(wrap)?;
                PackedWeight::from_int8(&values, &scales, n, k)
                    .map_err(|e| candle_core::Error::Msg(format!("'{name}': {e}")))?
            }
            PackedFormat::Bf16 => {
                let bits = ckpt.bf16_bits(name).map_err(wrap)?;
                PackedWeight::from_bf16_bits(&bits, n, k)?
            }
        };
        *weight = LinearWeight::Packed(packed);
        ckpt.release(name);
        Ok(())
    })?;
    if seen != packed.len() {
        return Err(bad(format!(
            "{} tensors are stored packed, but the model has {seen} weights to pack",
            packed.len()
        )));
    }
    Ok((model, format))
}
