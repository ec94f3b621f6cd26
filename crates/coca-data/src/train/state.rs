//! What a checkpoint saves of the loader: where it is in which epoch, and what it has skipped so far.

use serde::{Deserialize, Serialize};

/// How many skip messages [`SkipCounts`] keeps.
pub const RECENT_SKIPS: usize = 8;

/// The loader's position after the batches it has returned. Saved in training checkpoints; a loader built
/// from it (same sources, same [`super::LoaderConfig`]) continues with exactly the batches the saving loader
/// would have returned next. `Default` is the start of epoch 0 (of every source, for a mixture).
///
/// A mixture ([`super::TrainLoader::mixture`]) has no epochs of its own: `epoch` stays 0,
/// `batches_in_epoch` counts every batch returned, `position` counts the draws of a source (one per stream
/// item, skips included), and `sources` holds each source's own epoch and position. A single source leaves
/// `sources` empty, so its state reads and writes as it always has.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoaderState {
    /// The current epoch, counted from 0.
    pub epoch: u64,
    /// Batches returned in this epoch.
    pub batches_in_epoch: u64,
    /// Items of this epoch's stream consumed so far, usable or skipped: where a resumed loader picks up.
    pub position: u64,
    /// Samples skipped so far (all epochs, all sources).
    #[serde(default)]
    pub skipped: SkipCounts,
    /// A mixture's sources, in the order they were given; empty for a single source.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<SourceState>,
}

impl LoaderState {
    /// Usable samples each source of a mixture has put into the batches returned so far (empty for a single
    /// source): the per-source counts for logs and metrics.
    pub fn source_samples(&self) -> Vec<u64> {
        self.sources.iter().map(|s| s.samples).collect()
    }
}

/// Where one source of a mixture is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceState {
    /// The source's current epoch, counted from 0; sources cycle independently.
    pub epoch: u64,
    /// Items of the source's current epoch consumed, usable or skipped.
    pub position: u64,
    /// Usable samples taken from the current epoch (an epoch that ends without one stops the loader).
    #[serde(default)]
    pub epoch_samples: u64,
    /// Usable samples taken from this source in all epochs.
    #[serde(default)]
    pub samples: u64,
}

/// Why a sample was skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipKind {
    /// The image could not be read or decoded (or is missing from a shard sample).
    CorruptImage,
    /// The caption is missing, blank or unreadable.
    MissingCaption,
    /// A tar shard is truncated or corrupt from some offset on.
    DamagedShard,
    /// A malformed CSV record or list line, or a folder entry that could not be listed.
    BadRecord,
}

/// Samples skipped, by reason, with the last few messages. Counts are occurrences: a corrupt image is
/// counted again in every epoch that meets it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkipCounts {
    /// Images that could not be read or decoded.
    pub corrupt_images: u64,
    /// Samples without a usable caption.
    pub missing_captions: u64,
    /// Damaged shards met (each cuts its shard short).
    pub damaged_shards: u64,
    /// Malformed records of CSV files and lists.
    pub bad_records: u64,
    /// The last [`RECENT_SKIPS`] messages, oldest first.
    pub recent: Vec<String>,
}

impl SkipCounts {
    /// All skips together.
    pub fn total(&self) -> u64 {
        self.corrupt_images + self.missing_captions + self.damaged_shards + self.bad_records
    }

    /// Count one skip.
    pub(crate) fn add(&mut self, kind: SkipKind, message: String) {
        *match kind {
            SkipKind::CorruptImage => &mut self.corrupt_images,
            SkipKind::MissingCaption => &mut self.missing_captions,
            SkipKind::DamagedShard => &mut self.damaged_shards,
            SkipKind::BadRecord => &mut self.bad_records,
        } += 1;
        if self.recent.len() == RECENT_SKIPS {
            self.recent.remove(0);
        }
        self.recent.push(message);
    }
}

impl std::fmt::Display for SkipCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} skipped ({} corrupt images, {} missing captions, {} damaged shards, {} bad records)",
            self.total(),
            self.corrupt_images,
            self.missing_captions,
            self.damaged_shards,
            self.bad_records
        )
    }
}
