//! Sources checked once at [`super::TrainLoader::new`] and turned into one ordered item stream per epoch.
//!
//! Order is a function of `(seed, epoch, rank, world_size)` only:
//! - shards: the shard list is shuffled per epoch with a generator shared by all ranks, rank `r` reads
//!   shards `r, r + W, r + 2W, ...` of that order, and its samples pass through a seeded shuffle buffer;
//! - listed collections (folder, file list, CSV, class folders) and indexed sources: a seeded permutation of
//!   all items per epoch, shared by all ranks; rank `r` takes items `r, r + W, ...` of it, `⌊len / W⌋` each,
//!   so every rank gets the same number of items (as PyTorch's `DistributedSampler(drop_last=True)`).
//!
//! Labelled sources ([`super::labels`]) go through the same orders; their items leave here with the caption
//! of the epoch's template already filled in.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::DataError;
use crate::sample::{ImageData, Sample};
use crate::shards::{count_items, ShardRecords};
use crate::{expand_braces, open, Input};

use super::labels::{self, Entry, LabelPrompts, LabelledInput};
use super::rng::{Permutation, Purpose, Rng};
use super::state::SkipKind;

/// Where a sample's image comes from.
pub(crate) enum Payload {
    /// A file or shard member.
    Image(ImageData),
    /// An index of an indexed source (the closure gives image and caption).
    Index(u64),
}

/// One item of an epoch's stream.
pub(crate) enum Item {
    /// A sample to decode; `text` is `None` only for indexed sources, whose caption comes with the image.
    Sample {
        key: String,
        text: Option<String>,
        payload: Payload,
    },
    /// Something to count and skip.
    Skip { kind: SkipKind, message: String },
    /// Something that stops the loader: a label outside the class list.
    Fatal { input: String, detail: String },
}

/// A source's sample with its class (`None` for a captioned sample).
type Labelled = Result<(Sample, Option<usize>), DataError>;

/// A source after its checks at `new`; `labels` caption the samples of a labelled source.
pub(crate) enum Prepared {
    Shards {
        shards: Vec<PathBuf>,
        labels: Option<Arc<LabelPrompts>>,
    },
    Listed {
        entries: Arc<Vec<Entry>>,
        labels: Option<Arc<LabelPrompts>>,
    },
    Indexed {
        len: u64,
    },
}

/// How epochs are ordered and split.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Order {
    pub seed: u64,
    pub shuffle_buffer: usize,
    pub rank: usize,
    pub world_size: usize,
}

impl Order {
    fn shuffles(&self) -> bool {
        self.shuffle_buffer > 0
    }
}

/// An epoch's items, already past the first `start` of them.
pub(crate) type Items = Box<dyn Iterator<Item = Item> + Send>;

impl Prepared {
    /// Check a shard pattern: it must expand, every shard must exist and none may be empty, and there must be
    /// a shard for every rank.
    pub(crate) fn shards(
        pattern: &str,
        labels: Option<Arc<LabelPrompts>>,
        world_size: usize,
    ) -> Result<Self, DataError> {
        let bad_pattern = |detail: String| DataError::Pattern {
            pattern: pattern.to_string(),
            detail,
        };
        let shards: Vec<PathBuf> = expand_braces(pattern)
            .map_err(bad_pattern)?
            .into_iter()
            .map(PathBuf::from)
            .collect();
        let Some(first) = shards.first() else {
            return Err(bad_pattern("expands to no shard name".into()));
        };
        let missing: Vec<&PathBuf> = shards.iter().filter(|s| !s.exists()).collect();
        if missing.len() == shards.len() {
            return Err(DataError::NoShards {
                pattern: pattern.to_string(),
                first: first.display().to_string(),
            });
        }
        if let Some(first_missing) = missing.first() {
            return Err(DataError::MissingShards {
                pattern: pattern.to_string(),
                missing: missing.len(),
                total: shards.len(),
                first: first_missing.to_path_buf(),
            });
        }
        for shard in &shards {
            check_not_empty(shard)?;
        }
        if shards.len() < world_size {
            return Err(DataError::LoaderConfig {
                detail: format!(
                    "`{pattern}` has {} shards, fewer than the {world_size} ranks: every rank needs one",
                    shards.len()
                ),
            });
        }
        Ok(Self::Shards { shards, labels })
    }

    /// Read a folder, file list or CSV file whole (paths and captions only; images are read per epoch).
    pub(crate) fn listed(input: &Input, world_size: usize) -> Result<Self, DataError> {
        if let Input::Csv { path, options } = input {
            if options.caption_key.is_none() {
                return Err(DataError::LoaderConfig {
                    detail: format!(
                        "{}: training needs captions; name the caption column (--csv-caption-key)",
                        path.display()
                    ),
                });
            }
        }
        let entries: Vec<Entry> = open(input)?
            .map(|item| {
                item.map(|sample| (sample, None))
                    .map_err(|e| (classify(&e), e.to_string()))
            })
            .collect();
        Self::checked_list(&input.to_string(), entries, None, world_size)
    }

    /// A labelled source: shards are checked as for captions, class folders and CSV files are read whole and
    /// every label is checked.
    pub(crate) fn labelled(
        input: &LabelledInput,
        prompts: Arc<LabelPrompts>,
        world_size: usize,
    ) -> Result<Self, DataError> {
        if let LabelledInput::Shards(pattern) = input {
            return Self::shards(pattern, Some(prompts), world_size);
        }
        let entries = labels::list(input, &prompts)?;
        Self::checked_list(&input.to_string(), entries, Some(prompts), world_size)
    }

    /// A listed collection with at least one usable entry and one for every rank.
    fn checked_list(
        input: &str,
        entries: Vec<Entry>,
        labels: Option<Arc<LabelPrompts>>,
        world_size: usize,
    ) -> Result<Self, DataError> {
        let usable = entries
            .iter()
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|(s, label)| label.is_some() || s.text.is_some())
            })
            .count();
        if usable == 0 {
            let what = if labels.is_some() { "label" } else { "caption" };
            return Err(DataError::NoSamples {
                input: input.to_string(),
                detail: format!(
                    "none of its {} entries has an image with a {what}",
                    entries.len()
                ),
            });
        }
        check_rank_share(input, entries.len() as u64, world_size)?;
        Ok(Self::Listed {
            entries: Arc::new(entries),
            labels,
        })
    }

    /// Check an indexed source's length.
    pub(crate) fn indexed(len: u64, world_size: usize) -> Result<Self, DataError> {
        check_rank_share("indexed source", len, world_size)?;
        Ok(Self::Indexed { len })
    }

    /// How many samples the source has, for weighing it in a mixture: exact for listed and indexed sources;
    /// for shards, the items of the first shard (counted from its tar headers, contents not read) times the
    /// number of shards, since counting every shard of a large collection would read every header of it.
    pub(crate) fn size_estimate(&self) -> u64 {
        match self {
            Prepared::Shards { shards, .. } => {
                let first = shards.first().map_or(0, |s| count_items(s));
                (first as u64).saturating_mul(shards.len() as u64)
            }
            Prepared::Listed { entries, .. } => entries.len() as u64,
            Prepared::Indexed { len } => *len,
        }
    }

    /// The items of `epoch` for this rank, from position `start` on. Shard streams read (but do not decode)
    /// the items before `start`; the others jump there directly.
    pub(crate) fn epoch_items(&self, epoch: u64, start: u64, order: Order) -> Items {
        match self {
            Prepared::Shards {
                shards: all,
                labels,
            } => {
                let mut shards = all.clone();
                if order.shuffles() {
                    Rng::keyed(order.seed, Purpose::ShardOrder, &[epoch]).shuffle(&mut shards);
                }
                let mine: Vec<PathBuf> = shards
                    .into_iter()
                    .skip(order.rank)
                    .step_by(order.world_size)
                    .collect();
                let rng = Rng::keyed(
                    order.seed,
                    Purpose::Buffer,
                    &[epoch, order.rank as u64, order.world_size as u64],
                );
                let records = ShardRecords::from_paths(mine);
                let samples: Box<dyn Iterator<Item = Labelled> + Send> = match labels {
                    Some(prompts) => {
                        let prompts = Arc::clone(prompts);
                        Box::new(records.map(move |r| labels::shard_sample(r?, &prompts)))
                    }
                    None => Box::new(records.map(|r| Ok((r?.into_sample()?, None)))),
                };
                let buffered = ShuffleBuffer::new(samples, order.shuffle_buffer, rng);
                let start = usize::try_from(start).unwrap_or(usize::MAX);
                let captions = Captions::new(labels, epoch, order);
                Box::new(buffered.map(move |s| captions.item(s)).skip(start))
            }
            Prepared::Listed { entries, labels } => {
                let entries = Arc::clone(entries);
                let slots = rank_slots(entries.len() as u64, epoch, start, order);
                let captions = Captions::new(labels, epoch, order);
                Box::new(slots.map(move |i| match &entries[i as usize] {
                    Ok(sample) => captions.item(Ok(sample.clone())),
                    Err((kind, message)) => Item::Skip {
                        kind: *kind,
                        message: message.clone(),
                    },
                }))
            }
            Prepared::Indexed { len } => Box::new(rank_slots(*len, epoch, start, order).map(
                |index| Item::Sample {
                    key: index.to_string(),
                    text: None,
                    payload: Payload::Index(index),
                },
            )),
        }
    }
}

/// Items `start..` of this rank's share of a permuted (or, without shuffling, natural) `0..len`.
fn rank_slots(len: u64, epoch: u64, start: u64, order: Order) -> impl Iterator<Item = u64> + Send {
    let world = order.world_size as u64;
    let rank = order.rank as u64;
    let perm = order.shuffles().then(|| {
        Permutation::new(
            len,
            Rng::keyed(order.seed, Purpose::Permutation, &[epoch, len]),
        )
    });
    (start..len / world).map(move |i| {
        let slot = i * world + rank;
        perm.as_ref().map_or(slot, |p| p.get(slot))
    })
}

/// Every rank must get at least one item.
fn check_rank_share(input: &str, len: u64, world_size: usize) -> Result<(), DataError> {
    if len == 0 {
        return Err(DataError::NoSamples {
            input: input.to_string(),
            detail: "it has no samples".into(),
        });
    }
    if len < world_size as u64 {
        return Err(DataError::LoaderConfig {
            detail: format!("{input} has {len} samples, fewer than the {world_size} ranks"),
        });
    }
    Ok(())
}

/// A shard file of zero bytes, or whose first tar block is the end-of-archive marker, holds no samples: a
/// failed download or an interrupted writer, better reported before training starts.
fn check_not_empty(shard: &Path) -> Result<(), DataError> {
    let mut file = std::fs::File::open(shard).map_err(|e| DataError::io(shard, e))?;
    let mut block = [0u8; 512];
    let mut filled = 0;
    while filled < block.len() {
        match file.read(&mut block[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(DataError::io(shard, e)),
        }
    }
    // A short, non-zero first block is a damaged shard: reported (and counted) when it is read.
    if filled == 0 || (filled == block.len() && block.iter().all(|&b| b == 0)) {
        return Err(DataError::EmptyShard {
            shard: shard.to_path_buf(),
        });
    }
    Ok(())
}

/// Which counter a source's error item goes to.
fn classify(err: &DataError) -> SkipKind {
    match err {
        DataError::Shard { .. } | DataError::NotFound { .. } | DataError::Io { .. } => {
            SkipKind::DamagedShard
        }
        DataError::NoImage { .. } => SkipKind::CorruptImage,
        DataError::Caption { .. } => SkipKind::MissingCaption,
        _ => SkipKind::BadRecord,
    }
}

/// Turns a source's samples into stream items of one epoch, filling in the captions of labelled samples.
struct Captions {
    labels: Option<Arc<LabelPrompts>>,
    seed: u64,
    epoch: u64,
}

impl Captions {
    fn new(labels: &Option<Arc<LabelPrompts>>, epoch: u64, order: Order) -> Self {
        Self {
            labels: labels.clone(),
            seed: order.seed,
            epoch,
        }
    }

    /// A source's sample as a stream item: samples without a caption are skipped here, before any decoding.
    fn item(&self, item: Labelled) -> Item {
        match item {
            Ok((sample, Some(label))) => {
                let text = self
                    .labels
                    .as_ref()
                    .map(|prompts| prompts.caption(label, self.seed, self.epoch, &sample.key));
                Item::Sample {
                    key: sample.key,
                    text,
                    payload: Payload::Image(sample.image),
                }
            }
            Ok((
                Sample {
                    key,
                    image,
                    text: Some(text),
                },
                None,
            )) => Item::Sample {
                key,
                text: Some(text),
                payload: Payload::Image(image),
            },
            Ok((sample, None)) => Item::Skip {
                kind: SkipKind::MissingCaption,
                message: format!("{}: no caption", sample.image.name()),
            },
            Err(DataError::Label { input, detail }) => Item::Fatal { input, detail },
            Err(e) => Item::Skip {
                kind: classify(&e),
                message: e.to_string(),
            },
        }
    }
}

/// WebDataset's `shuffle(n)`: once more than `capacity` samples are held, a random one of them is passed on
/// for each new sample; at the end the rest leave in random order. Error items pass straight through.
struct ShuffleBuffer<I, T> {
    source: I,
    held: Vec<T>,
    capacity: usize,
    rng: Rng,
}

impl<I, T> ShuffleBuffer<I, T> {
    fn new(source: I, capacity: usize, rng: Rng) -> Self {
        Self {
            source,
            held: Vec::with_capacity(capacity.saturating_add(1).min(1 << 16)),
            capacity,
            rng,
        }
    }
}

impl<T, I: Iterator<Item = Result<T, DataError>>> Iterator for ShuffleBuffer<I, T> {
    type Item = Result<T, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            match self.source.next() {
                Some(Ok(sample)) if self.capacity == 0 => return Some(Ok(sample)),
                Some(Ok(sample)) => {
                    self.held.push(sample);
                    if self.held.len() > self.capacity {
                        let k = self.rng.below(self.held.len() as u64) as usize;
                        return Some(Ok(self.held.swap_remove(k)));
                    }
                }
                Some(Err(e)) => return Some(Err(e)),
                None => {
                    if self.held.is_empty() {
                        return None;
                    }
                    let k = self.rng.below(self.held.len() as u64) as usize;
                    return Some(Ok(self.held.swap_remove(k)));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(i: usize) -> Result<Sample, DataError> {
        Ok(Sample {
            key: i.to_string(),
            image: ImageData::Path(PathBuf::from(format!("{i}.jpg"))),
            text: Some("t".into()),
        })
    }

    fn keys(capacity: usize, seed: u64) -> Vec<String> {
        let rng = Rng::keyed(seed, Purpose::Buffer, &[]);
        ShuffleBuffer::new((0..50).map(sample), capacity, rng)
            .map(|s| s.unwrap().key)
            .collect()
    }

    #[test]
    fn shuffle_buffer_keeps_every_sample_once() {
        let natural: Vec<String> = (0..50).map(|i| i.to_string()).collect();
        assert_eq!(keys(0, 1), natural);
        for capacity in [1, 7, 50, 80] {
            let out = keys(capacity, 1);
            let mut sorted = out.clone();
            sorted.sort_by_key(|k| k.parse::<usize>().unwrap());
            assert_eq!(sorted, natural, "{capacity}");
            assert_ne!(out, natural, "{capacity}");
            assert_eq!(out, keys(capacity, 1));
            assert_ne!(out, keys(capacity, 2));
        }
    }

    #[test]
    fn rank_slots_split_a_permutation() {
        let order = |rank, world_size| Order {
            seed: 3,
            shuffle_buffer: 10,
            rank,
            world_size,
        };
        let mut all: Vec<u64> = (0..3)
            .flat_map(|r| rank_slots(31, 0, 0, order(r, 3)))
            .collect();
        assert_eq!(all.len(), 30); // 10 each; one item left out this epoch
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 30);
        let tail: Vec<u64> = rank_slots(31, 0, 4, order(1, 3)).collect();
        assert_eq!(
            tail,
            rank_slots(31, 0, 0, order(1, 3))
                .skip(4)
                .collect::<Vec<_>>()
        );
        assert_ne!(
            rank_slots(31, 0, 0, order(0, 1)).collect::<Vec<_>>(),
            rank_slots(31, 1, 0, order(0, 1)).collect::<Vec<_>>()
        );
    }
}
