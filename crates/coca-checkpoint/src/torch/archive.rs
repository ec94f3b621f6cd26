//! The `torch.save` zip archive: locate `data.pkl` and the storages, serve tensor bytes.
//!
//! The archive is memory-mapped. `torch.save` stores entries uncompressed (and aligned
//! to 64 bytes), so each storage is a plain byte range of the file: tensors are copied
//! straight from the page cache into candle, and only the tensors asked for are read.
//! Because the mapping bypasses the zip reader, each storage's CRC-32 is checked the
//! first time it is used, so a damaged file is reported instead of loaded.

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::{Cursor, Read};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use memmap2::Mmap;
use zip::result::ZipError;
use zip::{CompressionMethod, ZipArchive};

use super::pickle::{self, Limits};
use super::state_dict::{self, PickledTensor, StateDictError};
use crate::CheckpointError;

/// A zip entry holding one storage's raw little-endian bytes.
#[derive(Debug)]
struct StorageEntry {
    /// Full entry name, for messages (e.g. `archive/data/3`).
    entry_name: String,
    /// Byte range of the data inside the mapped file.
    range: Range<usize>,
    /// CRC-32 recorded in the zip directory.
    crc32: u32,
    /// Whether the CRC matched; computed on first use.
    crc_ok: OnceLock<bool>,
}

/// An opened `torch.save` archive.
#[derive(Debug)]
pub(crate) struct TorchArchive {
    path: PathBuf,
    mmap: Mmap,
    /// Storage key (the `N` of `data/N`) to its entry.
    storages: HashMap<String, StorageEntry>,
}

impl TorchArchive {
    /// Read the archive's directory and pickle; return it with the state dict's tensors
    /// (names as pickled, before any prefix stripping).
    pub fn open(
        path: &Path,
        mmap: Mmap,
    ) -> Result<(Self, Vec<(String, PickledTensor)>), CheckpointError> {
        let corrupt = |reason: String| CheckpointError::CorruptZip {
            path: path.to_path_buf(),
            reason,
        };
        let mut zip = ZipArchive::new(Cursor::new(&mmap[..])).map_err(|e| {
            corrupt(match e {
                ZipError::InvalidArchive(_) => {
                    format!("{e} (an incomplete download or copy leaves exactly this)")
                }
                e => e.to_string(),
            })
        })?;
        let names: Vec<String> = zip
            .file_names()
            .map(|n| n.unwrap_or_default().into_owned())
            .collect();
        let Some(pickle_name) = find_pickle(&names) else {
            return Err(CheckpointError::NotACheckpoint {
                path: path.to_path_buf(),
                looks_like: format!(
                    "is a zip archive without the <dir>/data.pkl entry torch.save writes (entries: {})",
                    preview(&names)
                ),
            });
        };
        let prefix = &pickle_name[..pickle_name.len() - "data.pkl".len()];
        check_byte_order(path, &mut zip, prefix)?;
        let root = decode_pickle(path, &mut zip, &pickle_name, mmap.len())?;
        let is_torchscript = names.iter().any(|n| n == &format!("{prefix}constants.pkl"));
        let tensors = state_dict::extract(&root).map_err(|e| match e {
            StateDictError::NoTensors(mut detail) => {
                if is_torchscript {
                    detail.push_str(
                        "; this is a TorchScript archive (torch.jit.save): load it in Python and \
                         save model.state_dict() instead",
                    );
                }
                CheckpointError::NoTensors {
                    path: path.to_path_buf(),
                    detail,
                }
            }
            StateDictError::UnsupportedDtype { name, storage_type } => {
                CheckpointError::UnsupportedDtype {
                    path: path.to_path_buf(),
                    name,
                    dtype: storage_type,
                }
            }
            StateDictError::Malformed { name, reason } => CheckpointError::MalformedTensor {
                path: path.to_path_buf(),
                name,
                reason,
            },
        })?;
        let storages = index_storages(path, &mut zip, &names, prefix, mmap.len())?;
        let archive = Self {
            path: path.to_path_buf(),
            mmap,
            storages,
        };
        for (name, tensor) in &tensors {
            archive.check_bounds(name, tensor)?;
        }
        Ok((archive, tensors))
    }

    /// Verify at open time that `tensor`'s storage is as large as the pickle claims and its view
    /// lies inside it, so reading it later cannot go out of bounds nor allocate more than the file
    /// could hold.
    fn check_bounds(&self, name: &str, tensor: &PickledTensor) -> Result<(), CheckpointError> {
        let entry = self.storage(name, tensor)?;
        let elem_size = tensor.dtype.size_in_bytes();
        let available = entry.range.len();
        let malformed = |reason: String| CheckpointError::MalformedTensor {
            path: self.path.clone(),
            name: name.to_string(),
            reason,
        };
        let bytes = |n: Option<usize>| {
            n.and_then(|n| n.checked_mul(elem_size))
                .map_or_else(|| "more than usize::MAX".to_string(), |n| n.to_string())
        };
        let claimed = tensor.storage_numel.checked_mul(elem_size);
        if claimed.is_none_or(|c| c > available) {
            return Err(malformed(format!(
                "its storage '{}' claims {} elements ({} bytes) but holds {available} bytes",
                entry.entry_name,
                tensor.storage_numel,
                bytes(Some(tensor.storage_numel)),
            )));
        }
        let layout = &tensor.layout;
        let needed = layout.required_storage_len();
        if needed
            .and_then(|n| n.checked_mul(elem_size))
            .is_none_or(|n| n > available)
        {
            return Err(malformed(format!(
                "its view (shape {:?}, stride {:?}, offset {}) needs {} bytes but storage '{}' holds {available}",
                layout.shape,
                layout.strides,
                layout.offset,
                bytes(needed),
                entry.entry_name,
            )));
        }
        // An expanded (stride 0) view reads less storage than it fills: bound what reading it
        // would allocate by the file's own size.
        let view = layout.elem_count_checked();
        if view
            .and_then(|n| n.checked_mul(elem_size))
            .is_none_or(|n| n > self.mmap.len())
        {
            return Err(malformed(format!(
                "its view (shape {:?}, stride {:?}) would expand to {} bytes, more than the whole \
                 {}-byte file",
                layout.shape,
                layout.strides,
                bytes(view),
                self.mmap.len(),
            )));
        }
        Ok(())
    }

    fn storage(
        &self,
        name: &str,
        tensor: &PickledTensor,
    ) -> Result<&StorageEntry, CheckpointError> {
        self.storages
            .get(&tensor.storage_key)
            .ok_or_else(|| CheckpointError::CorruptZip {
                path: self.path.clone(),
                reason: format!(
                    "tensor '{name}' refers to storage 'data/{}', which is not in the archive",
                    tensor.storage_key
                ),
            })
    }

    /// The tensor's bytes in row-major order (borrowed from the mapping when the view
    /// is already row-major).
    pub fn tensor_bytes(
        &self,
        name: &str,
        tensor: &PickledTensor,
    ) -> Result<Cow<'_, [u8]>, CheckpointError> {
        let entry = self.storage(name, tensor)?;
        let storage = &self.mmap[entry.range.clone()];
        let crc_ok = *entry
            .crc_ok
            .get_or_init(|| crc32fast::hash(storage) == entry.crc32);
        if !crc_ok {
            return Err(CheckpointError::CorruptZip {
                path: self.path.clone(),
                reason: format!(
                    "checksum mismatch in '{}' (data of tensor '{name}'): the file is damaged",
                    entry.entry_name
                ),
            });
        }
        Ok(tensor.layout.gather(storage, tensor.dtype.size_in_bytes()))
    }
}

/// `torch.save` puts everything under one folder (named after the file, or
/// `archive`): the pickle is `<dir>/data.pkl`.
fn find_pickle(names: &[String]) -> Option<String> {
    names
        .iter()
        .find(|n| {
            n.strip_suffix("data.pkl")
                .is_some_and(|dir| dir.ends_with('/') && dir.matches('/').count() == 1)
        })
        .cloned()
}

/// Refuse big-endian archives: storages would need byte swapping.
fn check_byte_order<R: Read + std::io::Seek>(
    path: &Path,
    zip: &mut ZipArchive<R>,
    prefix: &str,
) -> Result<(), CheckpointError> {
    let Ok(mut entry) = zip.by_name(&format!("{prefix}byteorder")) else {
        // Archives written before torch recorded the byte order are little-endian.
        return Ok(());
    };
    // "little" or "big"; a few bytes are enough to tell, whatever the entry claims to hold.
    let mut order = String::new();
    (&mut entry)
        .take(16)
        .read_to_string(&mut order)
        .map_err(|e| CheckpointError::CorruptZip {
            path: path.to_path_buf(),
            reason: format!("cannot read '{prefix}byteorder': {e}"),
        })?;
    if order.trim() == "little" {
        Ok(())
    } else {
        Err(CheckpointError::Unsupported {
            path: path.to_path_buf(),
            what: format!(
                "byte order '{}' (only little-endian is supported)",
                order.trim()
            ),
        })
    }
}

/// The largest pickle read: real ones take a few hundred bytes per tensor, so a few MiB even for
/// the largest training checkpoints.
const MAX_PICKLE_BYTES: u64 = 64 << 20;

/// Decode the pickle entry with [`pickle::unpickle`], within [`Limits::CHECKPOINT`].
fn decode_pickle<R: Read + std::io::Seek>(
    path: &Path,
    zip: &mut ZipArchive<R>,
    entry_name: &str,
    file_len: usize,
) -> Result<pickle::Obj, CheckpointError> {
    let pickle_error = |reason: String| CheckpointError::Pickle {
        path: path.to_path_buf(),
        entry: entry_name.to_string(),
        reason,
    };
    let entry = zip
        .by_name(entry_name)
        .map_err(|e| pickle_error(e.to_string()))?;
    // A stored entry cannot be larger than the file; a compressed one could claim anything.
    let cap = MAX_PICKLE_BYTES.min(u64::try_from(file_len).unwrap_or(u64::MAX));
    if entry.size() > cap {
        return Err(pickle_error(format!(
            "it claims {} bytes, more than the {cap} this reader accepts (the {file_len}-byte file \
             or {MAX_PICKLE_BYTES}, whichever is smaller)",
            entry.size()
        )));
    }
    let mut bytes = Vec::new();
    entry
        .take(cap + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| pickle_error(e.to_string()))?;
    if bytes.len() as u64 > cap {
        return Err(pickle_error(format!(
            "it holds more than the {cap} bytes this reader accepts"
        )));
    }
    pickle::unpickle(&bytes, Limits::CHECKPOINT).map_err(|e| pickle_error(e.to_string()))
}

/// Map each `<prefix>data/<key>` entry to its byte range in the file.
fn index_storages<R: Read + std::io::Seek>(
    path: &Path,
    zip: &mut ZipArchive<R>,
    names: &[String],
    prefix: &str,
    file_len: usize,
) -> Result<HashMap<String, StorageEntry>, CheckpointError> {
    let data_prefix = format!("{prefix}data/");
    let mut storages = HashMap::new();
    for (index, name) in names.iter().enumerate() {
        let Some(key) = name.strip_prefix(&data_prefix) else {
            continue;
        };
        let corrupt = |reason: String| CheckpointError::CorruptZip {
            path: path.to_path_buf(),
            reason: format!("entry '{name}': {reason}"),
        };
        let entry = zip
            .by_index_raw(index)
            .map_err(|e| corrupt(e.to_string()))?;
        if entry.compression() != CompressionMethod::Stored {
            return Err(CheckpointError::Unsupported {
                path: path.to_path_buf(),
                what: format!(
                    "a compressed zip entry '{name}' ({}; torch.save never compresses, so the \
                     archive was repacked: re-save it with torch.save)",
                    entry.compression()
                ),
            });
        }
        let start = entry
            .data_start()
            .ok_or_else(|| corrupt("no data offset".to_string()))?;
        let range = usize::try_from(start)
            .ok()
            .zip(usize::try_from(entry.size()).ok())
            .and_then(|(s, len)| Some(s..s.checked_add(len)?))
            .filter(|r| r.end <= file_len)
            .ok_or_else(|| {
                corrupt(format!(
                    "{} bytes at offset {start} run past the end of the {file_len}-byte file",
                    entry.size()
                ))
            })?;
        storages.insert(
            key.to_string(),
            StorageEntry {
                entry_name: name.clone(),
                range,
                crc32: entry.crc32(),
                crc_ok: OnceLock::new(),
            },
        );
    }
    Ok(storages)
}

/// Up to eight names, then how many more.
fn preview(names: &[String]) -> String {
    const SHOWN: usize = 8;
    if names.is_empty() {
        return "none".to_string();
    }
    let mut out = names[..names.len().min(SHOWN)].join(", ");
    if names.len() > SHOWN {
        out.push_str(&format!(", ... and {} more", names.len() - SHOWN));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pickle_is_found_one_folder_deep() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            find_pickle(&names(&["archive/version", "archive/data.pkl"])).as_deref(),
            Some("archive/data.pkl")
        );
        assert_eq!(
            find_pickle(&names(&["data.pkl", "a/b/data.pkl", "a/xdata.pkl"])),
            None
        );
    }
}
