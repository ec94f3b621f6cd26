//! [`Checkpoint`]: an opened weights file, read lazily tensor by tensor.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use crate::detect::{self, Format, Sniffed};
use crate::safetensors_file::SafetensorsFile;
use crate::torch::{PickledTensor, TorchArchive};
use crate::validate::ValidationReport;
use crate::CheckpointError;

/// The prefix `torch.nn.parallel.DistributedDataParallel` adds to every name.
const DDP_PREFIX: &str = "module.";

/// Shape and on-disk element type of one tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// Dimensions; empty for a 0-d scalar such as `logit_scale`.
    pub shape: Vec<usize>,
    /// Element type as stored in the file (torch `bool` tensors read as `U8`).
    pub dtype: DType,
}

impl TensorInfo {
    /// Number of elements (1 for a 0-d tensor).
    pub fn elem_count(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Where a tensor's data lives in the file.
#[derive(Debug)]
enum Location {
    Torch(PickledTensor),
    /// The name as written in the safetensors header (before prefix stripping).
    Safetensors(String),
}

#[derive(Debug)]
struct Entry {
    info: TensorInfo,
    location: Location,
}

#[derive(Debug)]
enum Source {
    Torch(TorchArchive),
    Safetensors(SafetensorsFile),
}

/// An open_clip checkpoint: a map of tensor names to lazily loaded tensors.
///
/// [`Checkpoint::open`] reads only the file's directory (zip central directory and
/// pickle, or safetensors header); tensor data is memory-mapped and copied into
/// candle only when [`Checkpoint::get`] asks for it.
///
/// Names follow open_clip's `load_state_dict`: for a training checkpoint the
/// `state_dict` entry is used, and a `module.` prefix present on every name (from
/// DistributedDataParallel) is removed.
///
/// The file must not be modified or truncated while the `Checkpoint` is alive: it is
/// memory-mapped, and changing it underneath the mapping gives wrong data (or, if
/// truncated, a bus error), as with any memory-mapped reader.
#[derive(Debug)]
pub struct Checkpoint {
    path: PathBuf,
    format: Format,
    source: Source,
    tensors: BTreeMap<String, Entry>,
    metadata: BTreeMap<String, String>,
    stripped_prefix: bool,
    /// The tensors stored as `I8` (listed with dtype `U8`), by their names after prefix stripping.
    int8: std::collections::BTreeSet<String>,
}

impl Checkpoint {
    /// Open a PyTorch zip (`.bin`/`.pt`/`.pth`) or safetensors file, recognised by
    /// content, not extension.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, CheckpointError> {
        let path = path.as_ref();
        let (head, file_len) = read_head(path)?;
        let format = match detect::sniff(&head) {
            Sniffed::Known(format) => format,
            Sniffed::LegacyTorch => {
                return Err(CheckpointError::LegacyTorchFormat {
                    path: path.to_path_buf(),
                })
            }
            Sniffed::Other(looks_like) => {
                return Err(CheckpointError::NotACheckpoint {
                    path: path.to_path_buf(),
                    looks_like,
                })
            }
        };
        let mut int8 = std::collections::BTreeSet::new();
        let (source, listed, metadata) = match format {
            Format::TorchZip => {
                let (archive, tensors) = TorchArchive::open(path, map_file(path)?)?;
                let listed: Vec<(String, Entry)> = tensors
                    .into_iter()
                    .map(|(name, t)| {
                        let info = TensorInfo {
                            shape: t.layout.shape.clone(),
                            dtype: t.dtype,
                        };
                        let location = Location::Torch(t);
                        (name, Entry { info, location })
                    })
                    .collect();
                (Source::Torch(archive), listed, BTreeMap::new())
            }
            Format::Safetensors => {
                let (file, contents) = SafetensorsFile::open(path, file_len)?;
                int8 = contents.int8;
                let listed = contents
                    .tensors
                    .into_iter()
                    .map(|(name, dtype, shape)| {
                        let location = Location::Safetensors(name.clone());
                        let info = TensorInfo { shape, dtype };
                        (name, Entry { info, location })
                    })
                    .collect();
                (Source::Safetensors(file), listed, contents.metadata)
            }
        };
        let stripped_prefix =
            !listed.is_empty() && listed.iter().all(|(n, _)| n.starts_with(DDP_PREFIX));
        if stripped_prefix {
            int8 = int8
                .into_iter()
                .map(|n| n[DDP_PREFIX.len()..].to_string())
                .collect();
        }
        let tensors = listed
            .into_iter()
            .map(|(name, entry)| {
                let name = match stripped_prefix {
                    true => name[DDP_PREFIX.len()..].to_string(),
                    false => name,
                };
                (name, entry)
            })
            .collect();
        Ok(Self {
            path: path.to_path_buf(),
            format,
            source,
            tensors,
            metadata,
            stripped_prefix,
            int8,
        })
    }

    /// Whether `name` is stored as `I8` (a quantised file's weights; [`TensorInfo::dtype`] says `U8`, and
    /// [`Checkpoint::get`] refuses it: read it with [`Checkpoint::int8_values`]).
    pub fn is_int8(&self, name: &str) -> bool {
        self.int8.contains(name)
    }

    /// The values of an `I8` tensor, row-major, borrowed from the memory-mapped file.
    pub fn int8_values(&self, name: &str) -> Result<Cow<'_, [i8]>, CheckpointError> {
        if !self.is_int8(name) {
            return Err(CheckpointError::UnsupportedDtype {
                path: self.path.clone(),
                name: name.to_string(),
                dtype: "not I8 (int8 values were asked for)".to_string(),
            });
        }
        let (_, bytes) = self.bytes(name)?;
        Ok(match bytes {
            Cow::Borrowed(b) => Cow::Borrowed(bytemuck::cast_slice(b)),
            Cow::Owned(b) => Cow::Owned(b.into_iter().map(|v| v as i8).collect()),
        })
    }

    /// The bit patterns of a `BF16` tensor, row-major: borrowed from the memory-mapped file where it is
    /// 2-byte aligned, else copied (a bf16 weight then never passes through f32 on its way to the packed
    /// layout).
    pub fn bf16_bits(&self, name: &str) -> Result<Cow<'_, [u16]>, CheckpointError> {
        let (entry, bytes) = self.bytes(name)?;
        if entry.info.dtype != DType::BF16 {
            return Err(CheckpointError::UnsupportedDtype {
                path: self.path.clone(),
                name: name.to_string(),
                dtype: format!("{:?} (bf16 values were asked for)", entry.info.dtype),
            });
        }
        let owned = |b: &[u8]| {
            b.chunks_exact(2)
                .map(|e| u16::from_le_bytes([e[0], e[1]]))
                .collect::<Vec<u16>>()
        };
        Ok(match bytes {
            Cow::Borrowed(b) if cfg!(target_endian = "little") => match bytemuck::try_cast_slice(b)
            {
                Ok(bits) => Cow::Borrowed(bits),
                Err(_) => Cow::Owned(owned(b)),
            },
            b => Cow::Owned(owned(&b)),
        })
    }

    /// The file this checkpoint was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The container format the file turned out to be.
    pub fn format(&self) -> Format {
        self.format
    }

    /// Whether a `module.` prefix was removed from every name.
    pub fn stripped_module_prefix(&self) -> bool {
        self.stripped_prefix
    }

    /// The safetensors `__metadata__` map (always empty for PyTorch archives).
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// Tensor names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> + '_ {
        self.tensors.keys().map(String::as_str)
    }

    /// Every tensor's name and info, sorted by name.
    pub fn infos(&self) -> impl Iterator<Item = (&str, &TensorInfo)> + '_ {
        self.tensors.iter().map(|(n, e)| (n.as_str(), &e.info))
    }

    /// Shape and stored dtype of `name`, if present.
    pub fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.get(name).map(|e| &e.info)
    }

    /// Whether the checkpoint holds a tensor called `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    /// Whether there are no tensors (never true for a successfully opened file).
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// Total number of elements over all tensors, buffers included. Tensors that
    /// share storage under two names (tied weights) count twice.
    pub fn num_params(&self) -> usize {
        self.tensors.values().map(|e| e.info.elem_count()).sum()
    }

    /// Load `name` converted to `dtype` on `device`.
    ///
    /// Conversion follows candle's `to_dtype` (round-to-nearest-even for narrowing
    /// float conversions, which matches torch's `.half()`/`.bfloat16()`).
    pub fn get(
        &self,
        name: &str,
        dtype: DType,
        device: &Device,
    ) -> Result<Tensor, CheckpointError> {
        if self.is_int8(name) {
            return Err(CheckpointError::UnsupportedDtype {
                path: self.path.clone(),
                name: name.to_string(),
                dtype: "I8 (quantised weights, read by the model loader as they are)".to_string(),
            });
        }
        let (entry, bytes) = self.bytes(name)?;
        let tensor = materialize(&bytes, &entry.info, dtype, device).map_err(|source| {
            CheckpointError::Tensor {
                path: self.path.clone(),
                name: name.to_string(),
                source: Box::new(source),
            }
        })?;
        self.release(name);
        Ok(tensor)
    }

    /// Once `name`'s bytes have been read (a tensor built from them, or the values borrowed from
    /// [`Checkpoint::int8_values`] or [`Checkpoint::bf16_bits`] packed), give the memory pages of
    /// the file's mapping that hold them back to the system, so that loading a model keeps the
    /// model in memory and not the file as well. The bytes stay readable (they come back from the
    /// page cache). Nothing to do for a PyTorch archive, whose tensors are read, not mapped.
    pub fn release(&self, name: &str) {
        if let (
            Source::Safetensors(file),
            Some(Entry {
                location: Location::Safetensors(key),
                ..
            }),
        ) = (&self.source, self.tensors.get(name))
        {
            file.release(key);
        }
    }

    /// Load `name` on `device` in the dtype it is stored with.
    pub fn get_stored(&self, name: &str, device: &Device) -> Result<Tensor, CheckpointError> {
        let dtype = self
            .info(name)
            .map(|i| i.dtype)
            .ok_or_else(|| self.not_found(name))?;
        self.get(name, dtype, device)
    }

    /// Load every tensor, converting floating-point ones to `float_dtype` when given
    /// (integer buffers keep their type), e.g. to re-save a `.bin` as safetensors.
    pub fn load_all(
        &self,
        float_dtype: Option<DType>,
        device: &Device,
    ) -> Result<BTreeMap<String, Tensor>, CheckpointError> {
        self.infos()
            .map(|(name, info)| {
                let dtype = match float_dtype {
                    Some(d) if info.dtype.is_float() => d,
                    _ => info.dtype,
                };
                Ok((name.to_string(), self.get(name, dtype, device)?))
            })
            .collect()
    }

    /// The names of the floating-point tensors holding at least one NaN or infinity, sorted.
    ///
    /// Reads every float tensor once, straight from the file (no conversion, no copy for
    /// row-major views), testing the exponent bits of each element.
    pub fn non_finite_tensors(&self) -> Result<Vec<String>, CheckpointError> {
        let mut found = Vec::new();
        for (name, entry) in &self.tensors {
            if !entry.info.dtype.is_float() {
                continue;
            }
            let (_, bytes) = self.bytes(name)?;
            if has_non_finite(&bytes, entry.info.dtype) {
                found.push(name.clone());
            }
            self.release(name);
        }
        Ok(found)
    }

    /// Strictly compare the checkpoint with the tensors a model expects.
    ///
    /// Succeeds only if the names match exactly and every shape agrees; otherwise the
    /// single [`CheckpointError::Mismatch`] lists every missing, unexpected and
    /// mis-shaped tensor. Duplicate names in `expected` count once (the last shape wins).
    pub fn validate(&self, expected: &[(String, Vec<usize>)]) -> Result<(), CheckpointError> {
        let actual = self.infos().map(|(n, i)| (n, i.shape.as_slice()));
        let report = ValidationReport::compare(expected, actual);
        if report.is_empty() {
            Ok(())
        } else {
            Err(CheckpointError::Mismatch {
                path: self.path.clone(),
                report,
            })
        }
    }

    fn not_found(&self, name: &str) -> CheckpointError {
        CheckpointError::TensorNotFound {
            path: self.path.clone(),
            name: name.to_string(),
        }
    }

    fn bytes(&self, name: &str) -> Result<(&Entry, Cow<'_, [u8]>), CheckpointError> {
        let entry = self.tensors.get(name).ok_or_else(|| self.not_found(name))?;
        let bytes = match (&self.source, &entry.location) {
            (Source::Torch(archive), Location::Torch(t)) => archive.tensor_bytes(name, t)?,
            (Source::Safetensors(file), Location::Safetensors(key)) => {
                Cow::Borrowed(file.tensor_bytes(key)?)
            }
            _ => unreachable!("entries are built from their own source"),
        };
        Ok((entry, bytes))
    }
}

/// Whether any element of `bytes` (little-endian `dtype` values) is a NaN or an infinity: those
/// are exactly the values whose exponent bits are all ones.
fn has_non_finite(bytes: &[u8], dtype: DType) -> bool {
    match dtype {
        DType::F16 => any_element(bytes, |e| u16::from_le_bytes(e) & 0x7c00 == 0x7c00),
        DType::BF16 => any_element(bytes, |e| u16::from_le_bytes(e) & 0x7f80 == 0x7f80),
        DType::F32 => any_element(bytes, |e| {
            u32::from_le_bytes(e) & 0x7f80_0000 == 0x7f80_0000
        }),
        DType::F64 => any_element(bytes, |e| {
            u64::from_le_bytes(e) & 0x7ff0_0000_0000_0000 == 0x7ff0_0000_0000_0000
        }),
        _ => false,
    }
}

/// Whether `test` holds for any `N`-byte element of `bytes`. Each block is scanned without an
/// early exit, which lets the compiler vectorise the scan; the first block with a hit ends it.
fn any_element<const N: usize>(bytes: &[u8], test: impl Fn([u8; N]) -> bool) -> bool {
    bytes.chunks(N * 4096).any(|block| {
        block.chunks_exact(N).fold(false, |hit, e| {
            let mut element = [0u8; N];
            element.copy_from_slice(e);
            hit | test(element)
        })
    })
}

/// Build the tensor on `device` in `dtype` from row-major little-endian bytes.
fn materialize(
    bytes: &[u8],
    info: &TensorInfo,
    dtype: DType,
    device: &Device,
) -> candle_core::Result<Tensor> {
    // Narrowing conversions run on the CPU so less data travels to an accelerator;
    // widening ones run on the device for the same reason.
    if dtype.size_in_bytes() < info.dtype.size_in_bytes() && !device.is_cpu() {
        Tensor::from_raw_buffer(bytes, info.dtype, &info.shape, &Device::Cpu)?
            .to_dtype(dtype)?
            .to_device(device)
    } else {
        Tensor::from_raw_buffer(bytes, info.dtype, &info.shape, device)?.to_dtype(dtype)
    }
}

/// The first bytes (for format detection) and the length of `path`.
fn read_head(path: &Path) -> Result<(Vec<u8>, u64), CheckpointError> {
    let io = |source: std::io::Error| match source.kind() {
        std::io::ErrorKind::NotFound => CheckpointError::NotFound {
            path: path.to_path_buf(),
        },
        _ => CheckpointError::Io {
            path: path.to_path_buf(),
            source,
        },
    };
    let file = File::open(path).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if meta.is_dir() {
        return Err(io(std::io::Error::new(
            std::io::ErrorKind::IsADirectory,
            "is a directory, not a file",
        )));
    }
    if meta.len() == 0 {
        return Err(CheckpointError::Empty {
            path: path.to_path_buf(),
        });
    }
    let mut head = Vec::with_capacity(detect::SNIFF_LEN);
    file.take(detect::SNIFF_LEN as u64)
        .read_to_end(&mut head)
        .map_err(io)?;
    Ok((head, meta.len()))
}

/// Memory-map `path` read-only.
fn map_file(path: &Path) -> Result<memmap2::Mmap, CheckpointError> {
    let io = |source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(io)?;
    // SAFETY: see the `Checkpoint` docs: the file must not change while mapped.
    // The mapping is only ever read through bounds-checked slices.
    unsafe { memmap2::Mmap::map(&file) }.map_err(io)
}

/// The message of the innermost candle error, without the path/backtrace wrappers
/// candle adds (our own messages already name the file).
pub(crate) fn innermost_message(err: &candle_core::Error) -> String {
    match err {
        candle_core::Error::WithPath { inner, .. }
        | candle_core::Error::WithBacktrace { inner, .. } => innermost_message(inner),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_finite_values_are_found_in_every_float_type() {
        let f16 = |v: f32| half::f16::from_f32(v).to_le_bytes();
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            // The bad value in the second block, after many finite ones (the largest included).
            let mut f32s: Vec<f32> = vec![f32::MAX; 5000];
            f32s.push(bad);
            let bytes: Vec<u8> = f32s.iter().flat_map(|v| v.to_le_bytes()).collect();
            assert!(has_non_finite(&bytes, DType::F32), "{bad}");
            assert!(!has_non_finite(&bytes[..bytes.len() - 4], DType::F32));
            let halves: Vec<u8> = [65504.0, -0.0, bad].iter().flat_map(|&v| f16(v)).collect();
            assert!(has_non_finite(&halves, DType::F16), "{bad}");
            assert!(!has_non_finite(&halves[..4], DType::F16));
            let brains: Vec<u8> = [half::bf16::MAX, half::bf16::ONE, half::bf16::from_f32(bad)]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect();
            assert!(has_non_finite(&brains, DType::BF16), "{bad}");
            assert!(!has_non_finite(&brains[..4], DType::BF16));
            let doubles: Vec<u8> = [f64::MAX, f64::from(bad)]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect();
            assert!(has_non_finite(&doubles, DType::F64), "{bad}");
            assert!(!has_non_finite(&doubles[..8], DType::F64));
        }
        // Integer buffers are never flagged, whatever their bits.
        assert!(!has_non_finite(&[0xff; 16], DType::I64));
    }
}
