//! Models by open_clip name (or config file) and checkpoint file (or pretrained tag), on a device and precision.

use std::path::{Path, PathBuf};

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context, Result};
use candle_core::{CpuStorage, DType, Device, Shape, Storage, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder};
use coca_checkpoint::Checkpoint;
use coca_model::budget::{check_fits, Workload};
use coca_model::load::{validate_checkpoint, LoadOptions};
use coca_model::nn::ops::PackedFormat;
use coca_model::{Coca, CocaConfig, ConfigSource, ModelError};

/// Compute precision, as open_clip's `--precision` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    /// 32-bit floats.
    Fp32,
    /// 16-bit IEEE floats.
    Fp16,
    /// bfloat16: on the CPU bf16 product weights with f32 activations (bf16×bf16 products summed in f32), on a
    /// GPU candle's bf16 tensors.
    Bf16,
    /// int8 product weights (one scale per output channel) with activations quantised per row, on the CPU.
    Int8,
}

/// How a [`Precision`] runs on a device: the dtype the weights load in (which the activations and the inputs
/// take), and the packing of the product weights, if any ([`Coca::pack_weights`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compute {
    /// Element type of the loaded weights, the activations and the input tensors.
    pub dtype: DType,
    /// The format the product weights are packed in after load (CPU only).
    pub packed: Option<PackedFormat>,
}

impl Compute {
    /// A short name of what changes the numbers (cache keys): the dtype's name (`f32`, `bf16`, ...), or the
    /// packing (`int8-packed`, `bf16-packed`).
    pub fn tag(&self) -> String {
        match self.packed {
            None => self.dtype.as_str().to_string(),
            Some(PackedFormat::Int8) => "int8-packed".to_string(),
            Some(PackedFormat::Bf16) => "bf16-packed".to_string(),
        }
    }
}

impl Precision {
    /// How this precision runs on `device`; int8 on a GPU is refused (there is no int8 GPU kernel), before the
    /// device is opened.
    pub fn compute(self, device: DeviceSpec) -> Result<Compute> {
        let dense = |dtype| Compute {
            dtype,
            packed: None,
        };
        let packed = |format| Compute {
            dtype: DType::F32,
            packed: Some(format),
        };
        // Only int8 has no float dtype of its own.
        Ok(match (self, self.float_dtype(), device) {
            (Self::Bf16, _, DeviceSpec::Cpu) => packed(PackedFormat::Bf16),
            (_, Some(dtype), _) => dense(dtype),
            (_, None, DeviceSpec::Cpu) => packed(PackedFormat::Int8),
            (_, None, DeviceSpec::Cuda(_)) => bail!(
                "--precision int8 runs on the CPU only (there is no int8 GPU kernel); use --device cpu, or \
                 --precision bf16 or fp16 on `{device}`"
            ),
        })
    }

    /// The element type of tensors stored in this precision (`None` for int8, which only packed weights
    /// have). What runs is [`Precision::compute`]'s.
    pub fn float_dtype(self) -> Option<DType> {
        match self {
            Self::Fp32 => Some(DType::F32),
            Self::Fp16 => Some(DType::F16),
            Self::Bf16 => Some(DType::BF16),
            Self::Int8 => None,
        }
    }

    /// open_clip's name: `fp32`, `fp16` or `bf16`; or `int8`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Fp32 => "fp32",
            Self::Fp16 => "fp16",
            Self::Bf16 => "bf16",
            Self::Int8 => "int8",
        }
    }
}

/// open_clip's names, and the dtype spellings (`float32`, `bfloat16`, ...), in any case.
impl std::str::FromStr for Precision {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "fp32" | "f32" | "float32" | "pure_fp32" => Self::Fp32,
            "fp16" | "f16" | "float16" | "pure_fp16" => Self::Fp16,
            "bf16" | "bfloat16" | "pure_bf16" => Self::Bf16,
            "int8" | "i8" | "qint8" => Self::Int8,
            other => bail!("unknown precision `{other}`; use fp32, fp16, bf16 or int8"),
        })
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a model runs: parsed from `cpu`, `cuda` or `cuda:N` without touching the device, opened by
/// [`DeviceSpec::open`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSpec {
    /// The CPU.
    Cpu,
    /// The NVIDIA GPU of this ordinal.
    Cuda(usize),
}

impl DeviceSpec {
    /// The device itself (a CUDA device needs the `cuda` feature and a GPU).
    pub fn open(self) -> Result<Device> {
        match self {
            Self::Cpu => Ok(Device::Cpu),
            Self::Cuda(ordinal) => Device::new_cuda(ordinal).with_context(|| {
                format!(
                    "cannot use device `{self}` (this binary needs the `cuda` feature and an NVIDIA GPU)"
                )
            }),
        }
    }
}

impl std::str::FromStr for DeviceSpec {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        if s == "cpu" {
            return Ok(Self::Cpu);
        }
        match s.strip_prefix("cuda") {
            Some("") => Ok(Self::Cuda(0)),
            Some(rest) => rest
                .strip_prefix(':')
                .and_then(|n| n.parse::<usize>().ok())
                .map(Self::Cuda)
                .with_context(|| format!("bad device `{s}`; use cpu or cuda:N")),
            None => bail!("unknown device `{s}`; use cpu or cuda:N"),
        }
    }
}

impl std::fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(ordinal) => write!(f, "cuda:{ordinal}"),
        }
    }
}

/// Up to ten names, then how many more.
pub fn name_list(names: &[String]) -> String {
    const SHOWN: usize = 10;
    let mut out = names
        .iter()
        .take(SHOWN)
        .map(|n| format!("'{n}'"))
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > SHOWN {
        out.push_str(&format!(", ... and {} more", names.len() - SHOWN));
    }
    out
}

/// Refuse a checkpoint whose floating-point tensors `bad` hold NaN or infinite weights (a model built from it
/// answers NaN), or only warn when `allow` is set; either way the message names the tensors.
fn refuse_non_finite(path: &Path, bad: &[String], allow: bool) -> Result<()> {
    if bad.is_empty() {
        return Ok(());
    }
    let what = format!(
        "checkpoint '{}' has NaN or infinite weights in {} tensor{}: {}",
        path.display(),
        bad.len(),
        if bad.len() == 1 { "" } else { "s" },
        name_list(bad)
    );
    if allow {
        tracing::warn!("{what}; running anyway (--allow-nonfinite-weights)");
        Ok(())
    } else {
        bail!(
            "{what}; its outputs would be NaN. Use a healthy checkpoint, or pass --allow-nonfinite-weights to run \
             it anyway"
        )
    }
}

/// A checkpoint as a `VarBuilder` backend that tests every floating-point weight for NaN and infinity as it
/// is loaded, while its stored bytes are in memory anyway, so the weights are read once, not once more for a
/// separate scan. The names of the tensors that fail are collected in `non_finite`.
struct FiniteChecked {
    checkpoint: Checkpoint,
    non_finite: Arc<Mutex<BTreeSet<String>>>,
}

impl SimpleBackend for FiniteChecked {
    fn get(
        &self,
        shape: Shape,
        name: &str,
        init: Init,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        // The stored values, on the CPU: what the file holds, before a conversion could turn a large finite
        // value into an infinity. The checkpoint's own backend checks the shape first.
        let Some(stored) = self.checkpoint.info(name).map(|i| i.dtype) else {
            return SimpleBackend::get(&self.checkpoint, shape, name, init, dtype, device);
        };
        let tensor = SimpleBackend::get(&self.checkpoint, shape, name, init, stored, &Device::Cpu)?;
        self.check(name, &tensor)?;
        convert(tensor, dtype, device)
    }

    fn get_unchecked(
        &self,
        name: &str,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        let Some(stored) = self.checkpoint.info(name).map(|i| i.dtype) else {
            return SimpleBackend::get_unchecked(&self.checkpoint, name, dtype, device);
        };
        let tensor = SimpleBackend::get_unchecked(&self.checkpoint, name, stored, &Device::Cpu)?;
        self.check(name, &tensor)?;
        convert(tensor, dtype, device)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.checkpoint.contains(name)
    }
}

impl FiniteChecked {
    /// Record `name` when the CPU tensor `t` holds a NaN or an infinity.
    fn check(&self, name: &str, t: &Tensor) -> candle_core::Result<()> {
        if has_non_finite(t) {
            self.non_finite
                .lock()
                .map_err(|_| candle_core::Error::Msg("non-finite weight record poisoned".into()))?
                .insert(name.to_string());
        }
        Ok(())
    }
}

/// A stored tensor in the model's dtype on its device: narrowing conversions on the CPU so less data travels
/// to an accelerator, widening ones on the device for the same reason (as the checkpoint reader converts).
fn convert(t: Tensor, dtype: DType, device: &Device) -> candle_core::Result<Tensor> {
    if dtype.size_in_bytes() < t.dtype().size_in_bytes() {
        t.to_dtype(dtype)?.to_device(device)
    } else {
        t.to_device(device)?.to_dtype(dtype)
    }
}

/// Whether a CPU tensor of floating-point values holds a NaN or an infinity (integer tensors never do).
fn has_non_finite(t: &Tensor) -> bool {
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else {
        return false;
    };
    let range = layout.contiguous_offsets().map(|(start, end)| start..end);
    fn any<T>(
        values: &[T],
        range: Option<std::ops::Range<usize>>,
        bad: impl Fn(&T) -> bool,
    ) -> bool {
        let values = match range {
            Some(r) => &values[r],
            None => values,
        };
        values.iter().any(bad)
    }
    match cpu {
        CpuStorage::F16(v) => any(v, range, |x| !x.is_finite()),
        CpuStorage::BF16(v) => any(v, range, |x| !x.is_finite()),
        CpuStorage::F32(v) => any(v, range, |x| !x.is_finite()),
        CpuStorage::F64(v) => any(v, range, |x| !x.is_finite()),
        _ => false,
    }
}

/// Resolve a model name or config path into a validated config (every size within
/// `coca_model::config::limits`).
pub fn resolve_config(model: &str) -> Result<(CocaConfig, ConfigSource)> {
    Ok(CocaConfig::resolve(model)?)
}

/// The checkpoint file: `pretrained` itself when it is a file, else the tag's file from the Hugging Face cache
/// (downloaded on first use; HF_HOME, HF_HUB_OFFLINE and HF_TOKEN are honoured).
pub fn weights_path(model: &str, pretrained: &str) -> Result<PathBuf> {
    let resolved =
        coca_hub::resolve_pretrained(model, pretrained, &coca_hub::HubOptions::from_env())?;
    Ok(resolved.path)
}

/// What `--model`, `--pretrained`, `--precision`, `--device` and `--allow-nonfinite-weights` name.
#[derive(Debug, Clone)]
pub struct ModelSpec<'a> {
    /// Model name or config path.
    pub model: &'a str,
    /// Checkpoint file or pretrained tag.
    pub pretrained: &'a str,
    /// Compute precision.
    pub precision: Precision,
    /// Where the model runs.
    pub device: DeviceSpec,
    /// Run a checkpoint with NaN or infinite weights (with a warning) instead of refusing it.
    pub allow_nonfinite_weights: bool,
}

impl ModelSpec<'_> {
    /// Resolve the config and the checkpoint, and load the model (after checking that it fits in memory; its
    /// weights are checked to be finite as they load).
    pub fn load(&self) -> Result<(Coca, CocaConfig)> {
        let (cfg, source) = resolve_config(self.model)?;
        let compute = self.precision.compute(self.device)?;
        let opts = LoadOptions {
            dtype: compute.dtype,
            device: self.device.open()?,
        };
        let workload = Workload {
            batch: 1,
            dtype_bytes: opts.dtype.size_in_bytes(),
            training: false,
            device: opts.device.clone(),
        };
        check_fits(&cfg, &source, &workload)?;
        let weights = weights_path(self.model, self.pretrained)?;
        let started = std::time::Instant::now();
        let checkpoint = Checkpoint::open(&weights).map_err(ModelError::from)?;
        let model = if coca_model::quantized::is_quantized(&checkpoint) {
            self.load_quantized(&cfg, checkpoint, &opts)?
        } else {
            let mut model = load_checked(&cfg, checkpoint, &opts, self.allow_nonfinite_weights)?;
            if let Some(format) = compute.packed {
                model.pack_weights(format)?;
            }
            model
        };
        tracing::info!(
            "loaded {source} from {} in {:.2}s",
            weights.display(),
            started.elapsed().as_secs_f64()
        );
        Ok((model, cfg))
    }
}

impl ModelSpec<'_> {
    /// Load a file written by `coca quantize`: it runs in the precision it records, on the CPU. The default
    /// `--precision fp32` means "as stored"; another precision than the file's is refused, as is a GPU.
    fn load_quantized(
        &self,
        cfg: &CocaConfig,
        checkpoint: Checkpoint,
        opts: &LoadOptions,
    ) -> Result<Coca> {
        let path = checkpoint.path().to_path_buf();
        let format = coca_model::quantized::recorded_format(&checkpoint)?;
        let stored = coca_model::quantized::format_name(format);
        if !matches!(opts.device, Device::Cpu) {
            bail!(
                "'{}' holds {stored} weights packed for the CPU (written by coca quantize); run it with \
                 --device cpu, or give the f32 checkpoint for `{}`",
                path.display(),
                self.device
            );
        }
        if self.precision != Precision::Fp32 && self.precision.name() != stored {
            bail!(
                "'{}' holds {stored} weights (written by coca quantize) and runs in {stored} only, not \
                 --precision {}: drop --precision, or quantise the f32 checkpoint with --precision {}",
                path.display(),
                self.precision,
                self.precision
            );
        }
        let bad = checkpoint.non_finite_tensors().map_err(ModelError::from)?;
        refuse_non_finite(&path, &bad, self.allow_nonfinite_weights)?;
        let (model, _) = coca_model::quantized::load_quantized(cfg, &checkpoint)?;
        Ok(model)
    }
}

/// `coca_model::load::load_model` with every weight checked to be finite as it loads: a checkpoint with NaN or
/// infinite weights is refused (or, with `allow`, loaded with a warning), naming the tensors.
fn load_checked(
    cfg: &CocaConfig,
    checkpoint: Checkpoint,
    opts: &LoadOptions,
    allow: bool,
) -> Result<Coca> {
    let path = checkpoint.path().to_path_buf();
    let path = path.as_path();
    if let Err(mismatch) = validate_checkpoint(cfg, &checkpoint) {
        // Non-finite weights are reported before a mismatch, as for a checkpoint that fits; this one is not
        // loaded, so its weights are scanned here.
        let bad = checkpoint.non_finite_tensors().map_err(ModelError::from)?;
        refuse_non_finite(path, &bad, allow)?;
        return Err(mismatch.into());
    }
    let non_finite = Arc::new(Mutex::new(BTreeSet::new()));
    let backend = FiniteChecked {
        checkpoint,
        non_finite: non_finite.clone(),
    };
    let vb = VarBuilder::from_backend(Box::new(backend), opts.dtype, opts.device.clone());
    let model = Coca::new(cfg, vb)?;
    let bad: Vec<String> = non_finite
        .lock()
        .map_err(|_| anyhow::anyhow!("non-finite weight record poisoned"))?
        .iter()
        .cloned()
        .collect();
    refuse_non_finite(path, &bad, allow)?;
    Ok(model)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_finite_values_are_found_in_every_float_type_and_not_in_integers() {
        for dtype in [DType::F16, DType::BF16, DType::F32, DType::F64] {
            for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
                let t = Tensor::new(&[1f32, bad, 3.0], &Device::Cpu)
                    .and_then(|t| t.to_dtype(dtype))
                    .unwrap();
                assert!(has_non_finite(&t), "{dtype:?} {bad}");
            }
            let fine = Tensor::new(&[1f32, -2.0, 0.0], &Device::Cpu)
                .and_then(|t| t.to_dtype(dtype))
                .unwrap();
            assert!(!has_non_finite(&fine), "{dtype:?}");
        }
        let ints = Tensor::new(&[u32::MAX, 0], &Device::Cpu).unwrap();
        assert!(!has_non_finite(&ints));
        // Only the tensor's own elements count, not the rest of a shared buffer.
        let t = Tensor::new(&[f32::NAN, 1.0, 2.0], &Device::Cpu).unwrap();
        assert!(!has_non_finite(&t.narrow(0, 1, 2).unwrap()));
    }

    #[test]
    fn conversion_gives_the_model_dtype() {
        let t = Tensor::new(&[1f32, 2.0], &Device::Cpu).unwrap();
        for dtype in [DType::F16, DType::F32, DType::F64] {
            let c = convert(t.clone(), dtype, &Device::Cpu).unwrap();
            assert_eq!(c.dtype(), dtype);
            let back: Vec<f32> = c.to_dtype(DType::F32).unwrap().to_vec1().unwrap();
            assert_eq!(back, [1.0, 2.0]);
        }
    }
}
