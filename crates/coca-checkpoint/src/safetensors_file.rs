//! Reading safetensors files through candle's memory-mapped reader.
//!
//! [`MmapedSafetensors`] validates the header (offsets inside the file, no overlap,
//! data fully covered) and hands out tensor data as slices of the mapping, so loading
//! copies each tensor once, straight from the page cache. The optional
//! `__metadata__` map is not exposed by candle, so it is read here from the header.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use candle_core::safetensors::MmapedSafetensors;
use candle_core::DType;

use crate::CheckpointError;

/// The largest header the safetensors format allows (the reference implementation
/// refuses anything bigger); also keeps a corrupt length from allocating gigabytes.
const MAX_HEADER_LEN: u64 = 100_000_000;

/// An opened safetensors file.
pub(crate) struct SafetensorsFile {
    path: PathBuf,
    tensors: MmapedSafetensors,
}

impl std::fmt::Debug for SafetensorsFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SafetensorsFile")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// What [`SafetensorsFile::open`] learns about the contents.
pub(crate) struct Contents {
    /// Name, on-disk dtype and shape of every tensor (`I8` tensors listed as `U8`: candle has no int8 type;
    /// their names are also in `int8`).
    pub tensors: Vec<(String, DType, Vec<usize>)>,
    /// The tensors stored as `I8`.
    pub int8: std::collections::BTreeSet<String>,
    /// The `__metadata__` string map (empty when absent).
    pub metadata: BTreeMap<String, String>,
}

impl SafetensorsFile {
    /// Map and validate the file, and list its tensors.
    pub fn open(path: &Path, file_len: u64) -> Result<(Self, Contents), CheckpointError> {
        let corrupt = |reason: String| CheckpointError::CorruptSafetensors {
            path: path.to_path_buf(),
            reason,
        };
        let raw_header = read_header(path, file_len)?;
        let header: serde_json::Value = serde_json::from_slice(&raw_header)
            .map_err(|e| corrupt(format!("invalid JSON header: {e}")))?;
        // Checked here because the reader's own message for it is cryptic.
        let data_len = file_len - 8 - raw_header.len() as u64;
        if let Some(needed) = data_end(&header) {
            if needed > data_len {
                return Err(corrupt(format!(
                    "the tensor data needs {needed} bytes but only {data_len} follow the header (truncated?)"
                )));
            }
        }
        // SAFETY: the mapping stays valid as long as the file is not truncated or
        // rewritten while open; this is the documented contract of `Checkpoint`
        // (a checkpoint is an input file nobody edits in place while we load it).
        let tensors = unsafe { MmapedSafetensors::new(path) }
            .map_err(|e| corrupt(crate::checkpoint::innermost_message(&e)))?;
        let metadata = parse_metadata(&header).map_err(corrupt)?;
        let mut listed = Vec::new();
        let mut int8 = std::collections::BTreeSet::new();
        for (name, view) in tensors.tensors() {
            if view.dtype().to_string() == "I8" {
                int8.insert(name.clone());
                listed.push((name, DType::U8, view.shape().to_vec()));
                continue;
            }
            let dtype =
                DType::try_from(view.dtype()).map_err(|_| CheckpointError::UnsupportedDtype {
                    path: path.to_path_buf(),
                    name: name.clone(),
                    dtype: view.dtype().to_string(),
                })?;
            listed.push((name, dtype, view.shape().to_vec()));
        }
        let file = Self {
            path: path.to_path_buf(),
            tensors,
        };
        Ok((
            file,
            Contents {
                tensors: listed,
                int8,
                metadata,
            },
        ))
    }

    /// Give this process's memory pages of `name`'s bytes back, once they have been read: the pages stay in
    /// the kernel's page cache and a later read maps them again, so the bytes do not change; meanwhile the
    /// process's resident memory holds the tensors it built from them, not the file as well.
    pub fn release(&self, name: &str) {
        if let Ok(bytes) = self.tensor_bytes(name) {
            release_pages(bytes);
        }
    }

    /// The tensor's bytes, borrowed from the mapping (safetensors data is always row-major).
    pub fn tensor_bytes(&self, name: &str) -> Result<&[u8], CheckpointError> {
        self.tensors.get(name).map(|view| view.data()).map_err(|_| {
            CheckpointError::TensorNotFound {
                path: self.path.clone(),
                name: name.to_string(),
            }
        })
    }
}

/// Read the JSON header, checking its announced length against the file first so a
/// truncated file gets a precise message.
fn read_header(path: &Path, file_len: u64) -> Result<Vec<u8>, CheckpointError> {
    let corrupt = |reason: String| CheckpointError::CorruptSafetensors {
        path: path.to_path_buf(),
        reason,
    };
    let io = |source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(io)?;
    let mut len_bytes = [0u8; 8];
    file.read_exact(&mut len_bytes).map_err(io)?;
    let header_len = u64::from_le_bytes(len_bytes);
    if header_len > MAX_HEADER_LEN {
        return Err(corrupt(format!(
            "the header claims {header_len} bytes, more than the format allows"
        )));
    }
    if 8 + header_len > file_len {
        return Err(corrupt(format!(
            "the header claims {header_len} bytes but the file has only {} after the length \
             prefix (truncated?)",
            file_len - 8
        )));
    }
    let mut header = vec![0u8; header_len as usize];
    file.read_exact(&mut header).map_err(io)?;
    Ok(header)
}

/// The largest `data_offsets` end in the header: how many data bytes the file needs.
fn data_end(header: &serde_json::Value) -> Option<u64> {
    header
        .as_object()?
        .iter()
        .filter(|(k, _)| *k != "__metadata__")
        .filter_map(|(_, v)| v.get("data_offsets")?.get(1)?.as_u64())
        .max()
}

/// The `__metadata__` entry of a safetensors header: a map of strings to strings.
fn parse_metadata(value: &serde_json::Value) -> Result<BTreeMap<String, String>, String> {
    let Some(meta) = value.get("__metadata__") else {
        return Ok(BTreeMap::new());
    };
    let Some(meta) = meta.as_object() else {
        return Err("__metadata__ is not a JSON object".to_string());
    };
    meta.iter()
        .map(|(k, v)| match v.as_str() {
            Some(s) => Ok((k.clone(), s.to_string())),
            None => Err(format!("__metadata__ entry '{k}' is not a string")),
        })
        .collect()
}

/// `madvise(MADV_DONTNEED)` over the whole pages inside `bytes` (the partial pages at either end may hold a
/// neighbour's bytes, which may not have been read yet, and are kept).
#[cfg(unix)]
fn release_pages(bytes: &[u8]) {
    // SAFETY: sysconf has no preconditions.
    let page = match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        p if p > 0 => p as usize,
        _ => return,
    };
    let start = (bytes.as_ptr() as usize).next_multiple_of(page);
    let end = (bytes.as_ptr() as usize + bytes.len()) / page * page;
    if end > start {
        // SAFETY: [start, end) lies inside `bytes`, which lies inside the read-only MAP_SHARED mapping of the
        // checkpoint file that `MmapedSafetensors` made with memmap2 (`MmapOptions::map`). For such a mapping
        // MADV_DONTNEED only unmaps the pages from this process: a later access faults them in again from the
        // page cache with the file's same contents, so every live borrow of these bytes still reads the same
        // values. The return value is ignored: failing to release memory changes nothing else.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED);
        }
    }
}

#[cfg(not(unix))]
fn release_pages(_bytes: &[u8]) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_is_optional_and_must_hold_strings() {
        let parse = |s: &str| parse_metadata(&serde_json::from_str(s).unwrap());
        assert!(
            parse(r#"{"a":{"dtype":"F32","shape":[],"data_offsets":[0,4]}}"#)
                .unwrap()
                .is_empty()
        );
        let meta = parse(r#"{"__metadata__":{"format":"pt"}}"#).unwrap();
        assert_eq!(meta.get("format").map(String::as_str), Some("pt"));
        assert!(parse(r#"{"__metadata__":{"n":1}}"#).is_err());
    }

    #[test]
    fn data_end_is_the_largest_offset() {
        let header = serde_json::json!({
            "__metadata__": {"x": "y"},
            "a": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]},
            "b": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
        });
        assert_eq!(data_end(&header), Some(16));
    }
}
