//! The training data loader: batches of augmented, normalised images with their captions, in an order that
//! depends only on the seed and the epoch, so a run resumed from a checkpoint sees exactly the batches the
//! interrupted run would have seen.
//!
//! ```text
//! source ──▶ epoch order (shard shuffle + shuffle buffer, or a permutation) ──▶ positions 0, 1, 2, ...
//!        ──▶ `workers` threads: decode + transform (randomness keyed by seed, epoch, rank, position)
//!        ──▶ back into stream order ──▶ batches of `batch_size` (the last partial batch of an epoch is dropped)
//! ```
//!
//! **Epochs.** An epoch is one pass over this rank's share of the source. Shards are shuffled per epoch (the
//! same order on every rank) and dealt round-robin: rank `r` of `W` reads shards `r, r + W, ...`, so ranks
//! see disjoint data that together covers every shard; shard sizes may differ, so ranks may get different
//! sample counts. Folders, file lists, CSV files and [`TrainSource::Indexed`] are permuted whole per epoch
//! and dealt the same way, `⌊len / W⌋` items per rank. A last partial batch is dropped, as open_clip's
//! training loaders do (`drop_last=True`, WebDataset `partial=False`). With `shuffle_buffer = 0` nothing is
//! shuffled: shards and items come in their natural order.
//!
//! **Skips.** A sample with an unreadable image, a missing or blank caption, a malformed record, or the rest
//! of a damaged shard is counted in [`SkipCounts`] (with its message) and replaced by the next sample; it is
//! never fatal. Only an epoch that yields not even one full batch stops the loader with an error.
//!
//! **Resume.** [`LoaderState::position`] counts the stream items of the epoch consumed up to the last
//! returned batch, skips included. A loader built from that state fast-forwards to the position without
//! decoding anything (shards are read, their images are not decoded) and continues identically: same
//! samples, same order, same crops, bit-identical pixels. Neither the number of workers nor thread
//! scheduling affects the batches. Positions do not depend on the batch size, so a run resumed with another
//! batch size still continues the same sample stream. The state is tied to the source, seed, rank and world
//! size it was saved with.
//!
//! **Memory.** At most `PREFETCH_BATCHES × batch_size + workers` items are in flight, plus the shuffle
//! buffer's `shuffle_buffer` encoded samples (about 5000 × the average JPEG size with the default) for
//! shards; folders, lists and CSV files are listed whole (paths and captions) at start. In a mixture the
//! items in flight are shared by all sources, and each shard source has its own shuffle buffer.
//!
//! **Labels as captions.** [`TrainSource::Labelled`] reads an image-classification dataset (class folders,
//! a CSV label column, shards with `.cls` labels) and captions each sample with a template filled with its
//! class name, one template per sample per epoch, chosen from `(seed, epoch, sample key)`: see [`labels`].
//!
//! **Mixtures.** [`TrainLoader::mixture`] draws every position of the stream from one of several sources
//! (alt-text and labelled alike) with probability proportional to its upsampling factor times its size
//! ([`mixture`]). Each source keeps its own epoch and position in [`LoaderState::sources`], so a resumed
//! mixture continues with exactly the batches the uninterrupted one would have given, and
//! [`TrainLoader::source_samples`] counts what each source contributed.
//!
//! **Transforms.** `augment = true` is open_clip's train transform: `RandomResizedCrop(size, scale=(0.9,
//! 1.0), ratio=(3/4, 4/3))` with the config's interpolation, then `ToTensor` + `Normalize`. The crop follows
//! torchvision's sampling algorithm and Pillow's resampling exactly, but draws its random numbers from this
//! crate's generator, so crops are distributed like torchvision's without being the very same ones. The
//! crop is taken from the RGB image (open_clip crops first, then converts; this differs only for palette,
//! alpha and 16-bit files read from folders/CSV). `augment = false` is the eval transform, bit-identical to
//! [`coca_image::preprocess`] (shard images are converted to RGB first, as open_clip's WebDataset pipeline
//! does with `"pilrgb"`; files from folders/lists/CSV are resized in their own PIL mode, as its `CsvDataset`
//! does).

pub mod labels;
mod loader;
pub mod mixture;
mod rng;
mod source;
mod state;
mod transform;

use std::sync::Arc;

use coca_image::image::RgbImage;
use coca_image::PreprocessConfig;

pub use labels::{LabelPrompts, LabelledInput, CSV_LABEL_FLAG, SHARD_LABEL_KEY};
pub use loader::TrainLoader;
pub use mixture::{parse_upsampling_factors, source_seed};
pub use state::{LoaderState, SkipCounts, SkipKind, SourceState, RECENT_SKIPS};
pub use transform::{CROP_RATIO, CROP_SCALE};

/// Batches prepared ahead of the one being consumed.
pub const PREFETCH_BATCHES: usize = 2;

/// Default shuffle buffer: open_clip's `_SAMPLE_SHUFFLE_SIZE`.
pub const DEFAULT_SHUFFLE_BUFFER: usize = 5000;

/// How the loader batches, transforms, shuffles and splits.
#[derive(Debug, Clone, PartialEq)]
pub struct LoaderConfig {
    /// Samples per batch.
    pub batch_size: usize,
    /// The model's image size, mean/std and interpolation.
    pub preprocess: PreprocessConfig,
    /// open_clip's train transform (random resized crop); `false` gives the eval transform.
    pub augment: bool,
    /// Decode/transform threads; 0 = one per available CPU.
    pub workers: usize,
    /// Samples held for shuffling a shard stream (WebDataset's `shuffle(n)`); 0 = no shuffling at all.
    pub shuffle_buffer: usize,
    /// Seeds every random choice (orders, buffers, crops).
    pub seed: u64,
    /// This process's rank among `world_size` data-parallel processes.
    pub rank: usize,
    /// Number of data-parallel processes sharing the data.
    pub world_size: usize,
}

impl Default for LoaderConfig {
    /// Batches of 32 CoCa-sized augmented images, all CPUs, open_clip's shuffle buffer, seed 0, one process.
    fn default() -> Self {
        Self {
            batch_size: 32,
            preprocess: PreprocessConfig::default(),
            augment: true,
            workers: 0,
            shuffle_buffer: DEFAULT_SHUFFLE_BUFFER,
            seed: 0,
            rank: 0,
            world_size: 1,
        }
    }
}

/// Image and caption for an index of an indexed source; an `Err` is counted as a corrupt image and skipped.
pub type IndexedGet = Arc<dyn Fn(u64) -> Result<(RgbImage, String), String> + Send + Sync>;

/// What to train on.
#[derive(Clone)]
pub enum TrainSource {
    /// A collection read by [`crate::open`]: shards (shard order shuffled per epoch, then a shuffle buffer), or a
    /// folder, file list or CSV file (listed whole at start — paths and captions only — and permuted per
    /// epoch).
    Stream(crate::Input),
    /// An image-classification dataset whose captions are its class names filled into templates (see
    /// [`labels`]): shards are read as [`TrainSource::Stream`] shards, class folders and CSV files are
    /// listed whole as the other collections.
    Labelled {
        /// Where the labelled images are.
        input: LabelledInput,
        /// The class names and templates.
        prompts: Arc<LabelPrompts>,
    },
    /// `len` samples produced on demand by `get` (e.g. synthetic scenes), permuted per epoch.
    Indexed {
        /// Number of samples.
        len: u64,
        /// Produces sample `i` (`0 <= i < len`); called from the worker threads.
        get: IndexedGet,
    },
}

impl std::fmt::Debug for TrainSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TrainSource::Stream(input) => f.debug_tuple("Stream").field(input).finish(),
            TrainSource::Labelled { input, prompts } => f
                .debug_struct("Labelled")
                .field("input", input)
                .field("prompts", prompts)
                .finish(),
            TrainSource::Indexed { len, .. } => {
                f.debug_struct("Indexed").field("len", len).finish()
            }
        }
    }
}

/// One batch, in stream order.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// `B × 3 × H × W` floats: each image's CHW tensor, one after the other.
    pub pixels: Vec<f32>,
    /// The captions, trimmed.
    pub texts: Vec<String>,
    /// The samples' keys: shard keys, relative paths, CSV paths, or the index of an indexed source.
    pub keys: Vec<String>,
}

impl Batch {
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.texts.len()
    }

    /// Whether the batch is empty (never, for batches from [`TrainLoader::next_batch`]).
    pub fn is_empty(&self) -> bool {
        self.texts.is_empty()
    }
}
