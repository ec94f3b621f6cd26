//! Writing safetensors files atomically.
//!
//! The file is streamed tensor by tensor (each converted only when it is written), so
//! saving never needs a second copy of the whole model in memory. Tensors are laid
//! out largest element type first, which keeps every tensor aligned to its element
//! size for zero-copy readers.

use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::Write;
use std::path::Path;

use candle_core::{DType, Tensor};
use serde_json::{json, Map, Value};

use crate::CheckpointError;
use coca_fs::write_atomic;

/// Save named tensors as a safetensors file at `path`, atomically (see [`coca_fs::write_atomic`]).
///
/// When `float_dtype` is given, floating-point tensors are converted to it; integer
/// tensors keep their type. `metadata` becomes the header's `__metadata__` map
/// (omitted when empty). Tensors may live on any device; they are copied to the host
/// one at a time.
///
/// Accepts anything yielding `(name, tensor)` pairs: `&HashMap<String, Tensor>`,
/// `&BTreeMap<String, Tensor>`, `Vec<(String, Tensor)>`, or
/// `slice.iter().map(|(n, t)| (n, t))`.
pub fn save_safetensors<N, T>(
    path: impl AsRef<Path>,
    tensors: impl IntoIterator<Item = (N, T)>,
    float_dtype: Option<DType>,
    metadata: &BTreeMap<String, String>,
) -> Result<(), CheckpointError>
where
    N: AsRef<str>,
    T: Borrow<Tensor>,
{
    save_safetensors_with_int8(path, tensors, float_dtype, &BTreeSet::new(), metadata)
}

/// [`save_safetensors`] where the tensors named in `int8` are `U8` tensors holding the bytes of int8 values
/// (two's complement), written as safetensors `I8` (candle has no int8 type); read back with
/// [`crate::Checkpoint::int8_values`].
pub fn save_safetensors_with_int8<N, T>(
    path: impl AsRef<Path>,
    tensors: impl IntoIterator<Item = (N, T)>,
    float_dtype: Option<DType>,
    int8: &BTreeSet<String>,
    metadata: &BTreeMap<String, String>,
) -> Result<(), CheckpointError>
where
    N: AsRef<str>,
    T: Borrow<Tensor>,
{
    let path = path.as_ref();
    let plan = Plan::new(path, tensors, float_dtype, int8)?;
    let header = plan.header(metadata);
    write_atomic(path, |w| -> Result<(), CheckpointError> {
        let io = |source| CheckpointError::Write {
            path: path.to_path_buf(),
            source,
        };
        w.write_all(&(header.len() as u64).to_le_bytes())
            .map_err(io)?;
        w.write_all(&header).map_err(io)?;
        for item in &plan.items {
            let written = item
                .tensor
                .to_dtype(item.dtype)
                .and_then(|t| write_le_bytes(&t, w));
            written.map_err(|source| match source {
                candle_core::Error::Io(e) => io(e),
                source => CheckpointError::Tensor {
                    path: path.to_path_buf(),
                    name: item.name.clone(),
                    source: Box::new(source),
                },
            })?;
        }
        Ok(())
    })
}

/// Write the tensor's elements, row-major and little-endian.
///
/// One bulk write per tensor: candle's `Tensor::write_bytes` writes element by
/// element, which is an order of magnitude slower for a 1 GB model.
#[cfg(target_endian = "little")]
fn write_le_bytes(tensor: &Tensor, w: &mut impl Write) -> candle_core::Result<()> {
    use bytemuck::cast_slice;
    let flat = tensor.flatten_all()?;
    // In memory, a little-endian machine already holds the bytes in file order.
    match flat.dtype() {
        DType::U8 => w.write_all(&flat.to_vec1::<u8>()?)?,
        DType::U32 => w.write_all(cast_slice(&flat.to_vec1::<u32>()?))?,
        DType::I16 => w.write_all(cast_slice(&flat.to_vec1::<i16>()?))?,
        DType::I32 => w.write_all(cast_slice(&flat.to_vec1::<i32>()?))?,
        DType::I64 => w.write_all(cast_slice(&flat.to_vec1::<i64>()?))?,
        DType::BF16 => w.write_all(cast_slice(&flat.to_vec1::<half::bf16>()?))?,
        DType::F16 => w.write_all(cast_slice(&flat.to_vec1::<half::f16>()?))?,
        DType::F32 => w.write_all(cast_slice(&flat.to_vec1::<f32>()?))?,
        DType::F64 => w.write_all(cast_slice(&flat.to_vec1::<f64>()?))?,
        // `Plan::new` admits only the types above.
        other => candle_core::bail!("cannot write {other:?} to safetensors"),
    }
    Ok(())
}

/// Big-endian machines need the byte swapping candle's writer does.
#[cfg(not(target_endian = "little"))]
fn write_le_bytes(tensor: &Tensor, w: &mut impl Write) -> candle_core::Result<()> {
    tensor.write_bytes(w)
}

/// One tensor to write.
struct Item {
    name: String,
    tensor: Tensor,
    /// The dtype it is written as.
    dtype: DType,
    /// Written as `I8` (the tensor is `U8`).
    int8: bool,
}

/// The tensors in file order, checked for problems before anything is written.
struct Plan {
    items: Vec<Item>,
}

impl Plan {
    fn new<N: AsRef<str>, T: Borrow<Tensor>>(
        path: &Path,
        tensors: impl IntoIterator<Item = (N, T)>,
        float_dtype: Option<DType>,
        int8: &BTreeSet<String>,
    ) -> Result<Self, CheckpointError> {
        let invalid = |name: &str, reason: String| CheckpointError::InvalidSave {
            path: path.to_path_buf(),
            name: name.to_string(),
            reason,
        };
        let mut seen = HashSet::new();
        let mut items = Vec::new();
        for (name, tensor) in tensors {
            let (name, tensor) = (name.as_ref(), tensor.borrow());
            if name.is_empty() || name == "__metadata__" {
                return Err(invalid(name, "this name is reserved or empty".to_string()));
            }
            if !seen.insert(name.to_string()) {
                return Err(invalid(name, "the name appears twice".to_string()));
            }
            let dtype = match float_dtype {
                Some(d) if tensor.dtype().is_float() => d,
                _ => tensor.dtype(),
            };
            if dtype_name(dtype).is_none() {
                return Err(invalid(
                    name,
                    format!("element type {dtype:?} cannot be written to safetensors"),
                ));
            }
            let is_int8 = int8.contains(name);
            if is_int8 && dtype != DType::U8 {
                return Err(invalid(
                    name,
                    format!("int8 values must be given as U8 bytes, not {dtype:?}"),
                ));
            }
            items.push(Item {
                name: name.to_string(),
                tensor: tensor.clone(),
                dtype,
                int8: is_int8,
            });
        }
        items.sort_by(|a, b| {
            b.dtype
                .size_in_bytes()
                .cmp(&a.dtype.size_in_bytes())
                .then_with(|| a.name.cmp(&b.name))
        });
        Ok(Self { items })
    }

    /// The JSON header, space-padded so the data starts 8-byte aligned.
    fn header(&self, metadata: &BTreeMap<String, String>) -> Vec<u8> {
        let mut map = Map::new();
        if !metadata.is_empty() {
            map.insert("__metadata__".to_string(), json!(metadata));
        }
        let mut offset = 0usize;
        for item in &self.items {
            let len = item.tensor.elem_count() * item.dtype.size_in_bytes();
            map.insert(
                item.name.clone(),
                json!({
                    "dtype": if item.int8 { Some("I8") } else { dtype_name(item.dtype) },
                    "shape": item.tensor.dims(),
                    "data_offsets": [offset, offset + len],
                }),
            );
            offset += len;
        }
        let mut header = Value::Object(map).to_string().into_bytes();
        while !(8 + header.len()).is_multiple_of(8) {
            header.push(b' ');
        }
        header
    }
}

/// The safetensors spelling of the element types this writer supports.
fn dtype_name(dtype: DType) -> Option<&'static str> {
    Some(match dtype {
        DType::U8 => "U8",
        DType::U32 => "U32",
        DType::I16 => "I16",
        DType::I32 => "I32",
        DType::I64 => "I64",
        DType::BF16 => "BF16",
        DType::F16 => "F16",
        DType::F32 => "F32",
        DType::F64 => "F64",
        _ => return None,
    })
}
