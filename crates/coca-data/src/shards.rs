//! WebDataset tar shards in img2dataset's layout: consecutive files sharing a key (`000123.jpg`,
//! `000123.txt`, `000123.json`) form one sample.
//!
//! Shards are read on a background thread that hands samples over through a small bounded queue, so reading
//! overlaps with whatever the consumer does and memory stays constant however large the shards are.
//!
//! [`ShardCursor`] can also pass over items without reading their data: a shard whose items are all passed
//! over is only walked header by header (seeking over each file's contents), which finds the same items,
//! damaged ones included, that reading it would.

use std::fs::File;
use std::io::{self, BufReader, Read};
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
        Ok(Self::from_paths(expand_shards(pattern)?))
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

/// The shards of a pattern (see [`ShardSource::open`]): fails if the pattern is malformed or none of its
/// shards exists.
fn expand_shards(pattern: &str) -> Result<Vec<PathBuf>, DataError> {
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
    Ok(shards)
}

/// Streams the samples of a list of shards like [`ShardSource`] (the same items, in the same order), and
/// passes over items with [`ShardCursor::skip_items`] without reading the data of what it passes over: a
/// shard is read only from the moment [`Iterator::next`] asks for one of its items; before that, and for
/// shards passed over entirely, only its tar headers are read.
///
/// For a worker that embeds some stretches of a large collection and must only count the rest (see
/// `coca embed --num-workers`), or a run resuming after the stretches it already embedded.
pub struct ShardCursor {
    shards: std::vec::IntoIter<PathBuf>,
    current: Current,
}

/// Where a [`ShardCursor`] is inside its current shard.
enum Current {
    /// Between shards.
    Between,
    /// In a shard whose items were counted from its headers: `left` of its `total` items are still ahead.
    Counted {
        shard: PathBuf,
        total: usize,
        left: usize,
    },
    /// In a shard being read, `taken` of its items already handed out.
    Reading {
        shard: PathBuf,
        records: ShardRecords,
        taken: usize,
    },
}

impl ShardCursor {
    /// Expand a shard pattern, as [`ShardSource::open`]; nothing is read yet.
    pub fn open(pattern: &str) -> Result<Self, DataError> {
        Ok(Self::from_paths(expand_shards(pattern)?))
    }

    /// These shards, in order.
    pub fn from_paths(shards: Vec<PathBuf>) -> Self {
        Self {
            shards: shards.into_iter(),
            current: Current::Between,
        }
    }

    /// Pass over the next `n` items (fewer at the end of the input) as `n` calls of `next` would, reading
    /// tar headers only; returns how many there were.
    pub fn skip_items(&mut self, n: usize) -> usize {
        let mut skipped = 0;
        while skipped < n {
            match std::mem::replace(&mut self.current, Current::Between) {
                Current::Between => match self.shards.next() {
                    Some(shard) => {
                        let total = count_items(&shard);
                        self.current = Current::Counted {
                            shard,
                            total,
                            left: total,
                        };
                    }
                    None => break,
                },
                // Stop reading: the rest of this shard is counted from its headers instead.
                Current::Reading { shard, taken, .. } => {
                    let total = count_items(&shard);
                    self.current = Current::Counted {
                        shard,
                        total,
                        left: total.saturating_sub(taken),
                    };
                }
                Current::Counted { shard, total, left } => {
                    let step = left.min(n - skipped);
                    skipped += step;
                    if step < left {
                        self.current = Current::Counted {
                            shard,
                            total,
                            left: left - step,
                        };
                    }
                }
            }
        }
        skipped
    }
}

impl Iterator for ShardCursor {
    type Item = Result<Sample, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            match std::mem::replace(&mut self.current, Current::Between) {
                Current::Between => {
                    let shard = self.shards.next()?;
                    let records = ShardRecords::from_paths(vec![shard.clone()]);
                    self.current = Current::Reading {
                        shard,
                        records,
                        taken: 0,
                    };
                }
                Current::Counted { left: 0, .. } => {}
                // Read the shard from its start, dropping the items already passed over.
                Current::Counted { shard, total, left } => {
                    let taken = total - left;
                    let mut records = ShardRecords::from_paths(vec![shard.clone()]);
                    records.by_ref().take(taken).for_each(drop);
                    self.current = Current::Reading {
                        shard,
                        records,
                        taken,
                    };
                }
                Current::Reading {
                    shard,
                    mut records,
                    taken,
                } => {
                    if let Some(record) = records.next() {
                        self.current = Current::Reading {
                            shard,
                            records,
                            taken: taken + 1,
                        };
                        return Some(record.and_then(ShardRecord::into_sample));
                    }
                }
            }
        }
    }
}

/// How many items reading `shard` yields (samples, and at most one error where it is damaged or unreadable),
/// from its headers alone.
pub(crate) fn count_items(shard: &Path) -> usize {
    let mut items = 0;
    walk_shard(shard, false, &mut |_| {
        items += 1;
        true
    });
    items
}

/// Send every sample of one shard; `false` if the consumer hung up.
fn read_shard(shard: &Path, tx: &SyncSender<Result<ShardRecord, DataError>>) -> bool {
    walk_shard(shard, true, &mut |item| tx.send(item).is_ok())
}

/// Hand every sample of one shard (or, with `read_data` false, a record without contents per sample) to
/// `emit`, then an error item if the shard is damaged; `false` if `emit` asked to stop.
///
/// Without `read_data`, the walk seeks over each file's contents, and the shard's length stands in for the
/// reads that would find it cut short, so both walks find the same items.
fn walk_shard(
    shard: &Path,
    read_data: bool,
    emit: &mut dyn FnMut(Result<ShardRecord, DataError>) -> bool,
) -> bool {
    let file = match File::open(shard) {
        Ok(f) => f,
        Err(e) => return emit(Err(DataError::io(shard, e))),
    };
    if read_data {
        let mut archive = tar::Archive::new(BufReader::new(file));
        let entries = archive.entries();
        walk_entries(shard, entries, None, emit)
    } else {
        let length = match file.metadata() {
            Ok(m) => m.len(),
            Err(e) => return emit(Err(DataError::io(shard, e))),
        };
        // Unbuffered: a buffer would be refilled after every seek, reading the contents it is meant to skip.
        let mut archive = tar::Archive::new(file);
        let entries = archive.entries_with_seek();
        walk_entries(shard, entries, Some(length), emit)
    }
}

/// [`walk_shard`] over the shard's tar entries; `length` is the shard's size when contents are skipped.
fn walk_entries<R: Read>(
    shard: &Path,
    entries: io::Result<tar::Entries<'_, R>>,
    length: Option<u64>,
    send: &mut dyn FnMut(Result<ShardRecord, DataError>) -> bool,
) -> bool {
    let damaged = |offset: u64, detail: String| {
        Err(DataError::Shard {
            shard: shard.to_path_buf(),
            offset,
            detail,
        })
    };
    let entries = match entries {
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
            next_header = padded_end(data_start, size);
            continue;
        }
        let name = match entry.path() {
            Ok(p) => p.to_string_lossy().into_owned(),
            Err(e) => return send(damaged(entry.raw_header_position(), e.to_string())),
        };
        let Some((key, suffix)) = split_key(&name) else {
            next_header = padded_end(data_start, size);
            continue;
        };
        if group.as_ref().is_some_and(|g| g.key != key) {
            let done = group.take().expect("checked above");
            if !send(Ok(done)) {
                return false;
            }
        }
        let data = match length {
            Some(length) => {
                let present = length.saturating_sub(data_start);
                if present < size {
                    let why = format!("{name}: data ends after {present} of {size} bytes");
                    return send(damaged(length, why));
                }
                Vec::new()
            }
            None => {
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
                data
            }
        };
        next_header = padded_end(data_start, size);
        let group = group.get_or_insert_with(|| ShardRecord {
            shard: shard.to_path_buf(),
            key: key.to_string(),
            files: Vec::new(),
        });
        if !group.files.iter().any(|(s, _)| *s == suffix) {
            group.files.push((suffix, data));
        }
    }
    let flushed = group.is_none_or(|g| send(Ok(g)));
    // Reading skips the padding after the last entry by reading it, and fails where the file ends first;
    // seeking past the end succeeds, so the skipping walk checks it here.
    match length {
        Some(length) if next_header > length => {
            let why = "unexpected EOF during skip".to_string();
            flushed && send(damaged(length, why))
        }
        _ => flushed,
    }
}

/// Where the next header starts after contents of `size` bytes at `data_start` (saturating: a corrupt header
/// may claim any size).
fn padded_end(data_start: u64, size: u64) -> u64 {
    data_start.saturating_add(size.div_ceil(BLOCK).saturating_mul(BLOCK))
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
    use super::*;

    /// A tar of these files, as a list of (header offset, bytes) pieces ending with the two end blocks.
    fn tar_of(files: &[(&str, usize)]) -> (Vec<u8>, Vec<u64>) {
        let mut builder = tar::Builder::new(Vec::new());
        let mut headers = Vec::new();
        let mut at = 0u64;
        for (i, (name, size)) in files.iter().enumerate() {
            let mut header = tar::Header::new_gnu();
            header.set_size(*size as u64);
            header.set_mode(0o644);
            let data = vec![i as u8; *size];
            builder.append_data(&mut header, name, &data[..]).unwrap();
            headers.push(at);
            at = padded_end(at + BLOCK, *size as u64);
        }
        (builder.into_inner().unwrap(), headers)
    }

    /// An item as a comparable string: the key and caption of a sample, the message of an error.
    fn describe(item: Result<Sample, DataError>) -> String {
        match item {
            Ok(s) => format!("{} {:?} {}", s.key, s.text, s.image.name()),
            Err(e) => e.to_string(),
        }
    }

    /// Shards whole and damaged in each way a walk can notice, and the items reading them yields.
    fn shards(dir: &Path) -> Vec<PathBuf> {
        let files = [
            ("000.jpg", 700),
            ("000.txt", 3),
            ("README", 10),
            ("001.jpg", 600),
            ("001.txt", 4),
            ("002.jpg", 900),
            ("002.txt", 1),
        ];
        let (whole, headers) = tar_of(&files);
        let body = whole.len() - 2 * BLOCK as usize;
        let mut variants: Vec<(&str, Vec<u8>)> = vec![
            ("whole", whole.clone()),
            ("no-end-blocks", whole[..body].to_vec()),
            (
                "cut-in-data",
                whole[..headers[5] as usize + 512 + 100].to_vec(),
            ),
            ("cut-in-padding", whole[..body - 500].to_vec()),
            ("cut-in-header", whole[..headers[3] as usize + 100].to_vec()),
            ("empty", Vec::new()),
        ];
        let mut bad_sum = whole.clone();
        bad_sum[headers[3] as usize] ^= 1;
        variants.push(("bad-checksum", bad_sum));
        // A folder entry claiming contents past the end of the file.
        let mut folder = tar::Header::new_gnu();
        folder.set_entry_type(tar::EntryType::Directory);
        folder.set_path("dir/").unwrap();
        folder.set_size(1 << 20);
        folder.set_cksum();
        let mut short_folder = whole[..body].to_vec();
        short_folder.extend_from_slice(folder.as_bytes());
        variants.push(("folder-past-end", short_folder));
        let mut paths: Vec<PathBuf> = variants
            .into_iter()
            .map(|(name, bytes)| {
                let path = dir.join(format!("{name}.tar"));
                std::fs::write(&path, bytes).unwrap();
                path
            })
            .collect();
        paths.push(dir.join("missing.tar"));
        paths
    }

    #[test]
    fn counting_from_headers_finds_the_items_reading_finds() {
        let dir = tempfile::tempdir().unwrap();
        for shard in shards(dir.path()) {
            let read: Vec<String> = ShardSource::from_paths(vec![shard.clone()])
                .map(describe)
                .collect();
            assert_eq!(
                count_items(&shard),
                read.len(),
                "{}: {read:?}",
                shard.display()
            );
        }
    }

    #[test]
    fn a_cursor_yields_what_it_does_not_skip() {
        let dir = tempfile::tempdir().unwrap();
        let shards = shards(dir.path());
        let all: Vec<String> = ShardSource::from_paths(shards.clone())
            .map(describe)
            .collect();
        for first in [0, 1, 4] {
            for skip in 0..=all.len() + 1 {
                let mut cursor = ShardCursor::from_paths(shards.clone());
                let mut got: Vec<String> = cursor.by_ref().take(first).map(describe).collect();
                let skipped = cursor.skip_items(skip);
                assert_eq!(skipped, skip.min(all.len() - first));
                got.extend(cursor.map(describe));
                let mut want = all[..first].to_vec();
                want.extend_from_slice(&all[(first + skip).min(all.len())..]);
                assert_eq!(got, want, "next {first} times, then skip {skip}");
            }
        }
    }

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
