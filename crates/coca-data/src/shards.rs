//! WebDataset tar shards in img2dataset's layout: consecutive files sharing a key (`000123.jpg`,
//! `000123.txt`, `000123.json`) form one sample.
//!
//! Shards are read on a background thread that hands samples over through a small bounded queue, so reading
//! overlaps with whatever the consumer does and memory stays constant however large the shards are.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread::JoinHandle;

use crate::braces::expand_braces;
use crate::error::DataError;
use crate::sample::{clean_caption, ImageData, Sample};

/// File extensions taken as a sample's image, in order of preference (WebDataset's `jpg;png;jpeg;webp`).
pub const SHARD_IMAGE_KEYS: [&str; 4] = ["jpg", "png", "jpeg", "webp"];

/// The file extension of a sample's caption.
pub const SHARD_TEXT_KEY: &str = "txt";

/// Samples waiting between the reading thread and the consumer.
const QUEUE: usize = 64;

/// Tar entries are padded to this many bytes.
const BLOCK: u64 = 512;

/// Streams the samples of a list of shards, one shard after the other.
pub struct ShardSource {
    records: ShardRecords,
}

impl ShardSource {
    /// Expand a shard pattern (`shards/{00000..00099}.tar`, see [`crate::expand_braces`]) and start reading.
    /// Fails if the pattern is malformed or none of its shards exists; a missing shard among existing ones is
    /// reported as an error item when its turn comes.
    pub fn open(pattern: &str) -> Result<Self, DataError> {
        Ok(Self {
            records: ShardRecords::open(pattern)?,
        })
    }

    /// Read these shards, in order.
    pub fn from_paths(shards: Vec<PathBuf>) -> Self {
        Self {
            records: ShardRecords::from_paths(shards),
        }
    }
}

impl Iterator for ShardSource {
    type Item = Result<Sample, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.records
            .next()
            .map(|record| record.and_then(ShardRecord::into_sample))
    }
}

/// One sample's files as the shard stores them, before they are read as an image and a caption: for the
/// fields [`ShardSource`] leaves out, such as a class label (`.cls`) or metadata (`.json`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardRecord {
    /// The shard the sample came from.
    pub shard: PathBuf,
    /// The WebDataset key (`dir/000123`).
    pub key: String,
    /// `(lower-cased extension, contents)` of each file, in shard order; the first file wins when an
    /// extension repeats.
    pub files: Vec<(String, Vec<u8>)>,
}

impl ShardRecord {
    /// The contents of the file with this (lower-case) extension, such as `cls` or `txt`.
    pub fn file(&self, extension: &str) -> Option<&[u8]> {
        self.files
            .iter()
            .find(|(s, _)| s == extension)
            .map(|(_, data)| data.as_slice())
    }

    /// A name for messages about one of the sample's files: `shard.tar:000123.cls`.
    pub fn label(&self, extension: &str) -> String {
        format!("{}:{}.{extension}", self.shard.display(), self.key)
    }

    /// The sample as [`ShardSource`] yields it: the first image of [`SHARD_IMAGE_KEYS`] and the `txt`
    /// caption.
    pub fn into_sample(self) -> Result<Sample, DataError> {
        finish(self)
    }
}

/// Streams the samples of a list of shards as [`ShardRecord`]s, one shard after the other.
pub struct ShardRecords {
    rx: Receiver<Result<ShardRecord, DataError>>,
    worker: Option<JoinHandle<()>>,
}

impl ShardRecords {
    /// Expand a shard pattern and start reading, as [`ShardSource::open`].
    pub fn open(pattern: &str) -> Result<Self, DataError> {
        let shards: Vec<PathBuf> = expand_braces(pattern)
            .map_err(|detail| DataError::Pattern {
                pattern: pattern.to_string(),
                detail,
            })?
            .into_iter()
            .map(PathBuf::from)
            .collect();
        if !shards.iter().any(|s| s.exists()) {
            return Err(DataError::NoShards {
                pattern: pattern.to_string(),
                first: shards[0].display().to_string(),
            });
        }
        Ok(Self::from_paths(shards))
    }

    /// Read these shards, in order.
    pub fn from_paths(shards: Vec<PathBuf>) -> Self {
        let (tx, rx) = sync_channel(QUEUE);
        let worker = std::thread::Builder::new()
            .name("coca-data-shards".into())
            .spawn(move || {
                for shard in shards {
                    if !read_shard(&shard, &tx) {
                        return; // the consumer is gone
                    }
                }
            })
            .ok();
        Self { rx, worker }
    }
}

impl Iterator for ShardRecords {
    type Item = Result<ShardRecord, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.rx.recv() {
            Ok(item) => Some(item),
            Err(_) => {
                // The reader finished (or could not start); pass on a panic, which would be a bug.
                if let Some(Err(panic)) = self.worker.take().map(JoinHandle::join) {
                    std::panic::resume_unwind(panic);
                }
                None
            }
        }
    }
}

/// Send every sample of one shard; `false` if the consumer hung up.
fn read_shard(shard: &Path, tx: &SyncSender<Result<ShardRecord, DataError>>) -> bool {
    let send = |item| tx.send(item).is_ok();
    let file = match File::open(shard) {
        Ok(f) => f,
        Err(e) => return send(Err(DataError::io(shard, e))),
    };
    let damaged = |offset: u64, detail: String| {
        Err(DataError::Shard {
            shard: shard.to_path_buf(),
            offset,
            detail,
        })
    };
    let mut archive = tar::Archive::new(BufReader::new(file));
    let entries = match archive.entries() {
        Ok(entries) => entries,
        Err(e) => return send(damaged(0, e.to_string())),
    };
    let mut group: Option<ShardRecord> = None;
    // Where the next header should start: the end of the last entry read whole.
    let mut next_header = 0u64;
    for entry in entries {
        let mut entry = match entry {
            Ok(entry) => entry,
            Err(e) => {
                // Everything before this header was read whole, so the group in progress is complete.
                let flushed = group.take().is_none_or(|g| send(Ok(g)));
                return flushed && send(damaged(next_header, e.to_string()));
            }
        };
        let size = entry.size();
        let data_start = entry.raw_file_position();
        if !entry.header().entry_type().is_file() {
            next_header = data_start + size.div_ceil(BLOCK) * BLOCK;
            continue;
        }
        let name = match entry.path() {
            Ok(p) => p.to_string_lossy().into_owned(),
            Err(e) => return send(damaged(entry.raw_header_position(), e.to_string())),
        };
        let Some((key, suffix)) = split_key(&name) else {
            next_header = data_start + size.div_ceil(BLOCK) * BLOCK;
            continue;
        };
        if group.as_ref().is_some_and(|g| g.key != key) {
            let done = group.take().expect("checked above");
            if !send(Ok(done)) {
                return false;
            }
        }
        // Cap the up-front allocation: a corrupt header may claim any size.
        let mut data = Vec::with_capacity(size.min(1 << 24) as usize);
        let read = entry.read_to_end(&mut data);
        if read.is_err() || (data.len() as u64) < size {
            let why = match read {
                Err(e) => e.to_string(),
                Ok(_) => format!("{name}: data ends after {} of {size} bytes", data.len()),
            };
            // The sample being read is incomplete: drop it.
            return send(damaged(data_start + data.len() as u64, why));
        }
        next_header = data_start + size.div_ceil(BLOCK) * BLOCK;
        let group = group.get_or_insert_with(|| ShardRecord {
            shard: shard.to_path_buf(),
            key: key.to_string(),
            files: Vec::new(),
        });
        if !group.files.iter().any(|(s, _)| *s == suffix) {
            group.files.push((suffix, data));
        }
    }
    group.is_none_or(|g| send(Ok(g)))
}

/// Split `dir/000123.seg.png` into the key `dir/000123` and the lower-cased extension `seg.png`, as
/// WebDataset does (the key ends at the first dot of the file name). Names without one are not sample files.
fn split_key(name: &str) -> Option<(&str, String)> {
    let base_start = name.rfind('/').map_or(0, |i| i + 1);
    let dot = name[base_start..].find('.')?;
    if dot == 0 {
        return None;
    }
    let split = base_start + dot;
    Some((&name[..split], name[split + 1..].to_ascii_lowercase()))
}

/// Turn a complete group of files into a sample.
fn finish(record: ShardRecord) -> Result<Sample, DataError> {
    let ShardRecord {
        shard,
        key,
        mut files,
    } = record;
    let shard = shard.as_path();
    let label = |suffix: &str| format!("{}:{key}.{suffix}", shard.display());
    let text = match files.iter().position(|(s, _)| s == SHARD_TEXT_KEY) {
        Some(i) => {
            let (_, bytes) = files.swap_remove(i);
            match String::from_utf8(bytes) {
                Ok(t) => clean_caption(&t),
                Err(e) => {
                    return Err(DataError::Caption {
                        path: label(SHARD_TEXT_KEY).into(),
                        detail: format!("not UTF-8 ({e})"),
                    })
                }
            }
        }
        None => None,
    };
    let image = SHARD_IMAGE_KEYS
        .iter()
        .find_map(|k| files.iter().position(|(s, _)| s == k));
    let Some(i) = image else {
        let mut found: Vec<String> = files.into_iter().map(|(s, _)| s).collect();
        if text.is_some() {
            found.push(SHARD_TEXT_KEY.into());
        }
        return Err(DataError::NoImage {
            shard: shard.to_path_buf(),
            key,
            found,
        });
    };
    let (suffix, data) = files.swap_remove(i);
    Ok(Sample {
        image: ImageData::Bytes {
            name: label(&suffix),
            data,
        },
        key,
        text,
    })
}

#[cfg(test)]
mod tests {
    use super::split_key;

    #[test]
    fn keys_end_at_the_first_dot_of_the_file_name() {
        assert_eq!(split_key("000123.jpg"), Some(("000123", "jpg".into())));
        assert_eq!(
            split_key("a.b/000123.Seg.PNG"),
            Some(("a.b/000123", "seg.png".into()))
        );
        assert_eq!(split_key("dir/.hidden"), None);
        assert_eq!(split_key("README"), None);
    }
}
