//! What a checkpoint saves of the loader: where it is in which epoch, and what it has skipped so far.

use serde::{Deserialize, Serialize};

/// How many skip messages [`SkipCounts`] keeps.
pub const RECENT_SKIPS: usize = 8;

/// The loader's position after the batches it has returned. Saved in training checkpoints; a loader built
/// from it (same source, same [`super::LoaderConfig`]) continues with exactly the batches the saving loader
/// would have returned next. `Default` is the start of epoch 0.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoaderState {
    /// The current epoch, counted from 0.
    pub epoch: u64,
    /// Batches returned in this epoch.
    pub batches_in_epoch: u64,
    /// Items of this epoch's stream consumed so far, usable or skipped: where a resumed loader picks up.
    pub position: u64,
    /// Samples skipped so far (all epochs).
    #[serde(default)]
    pub skipped: SkipCounts,
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
