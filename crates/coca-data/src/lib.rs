//! Streaming readers for image/text collections: the inputs of bulk embedding, evaluation and training.
//!
//! Every source yields `Result<`[`Sample`]`, `[`DataError`]`>` one sample at a time, in a deterministic order,
//! holding at most one sample (or, for tar shards, a small bounded queue of samples) in memory. A bad sample —
//! an unreadable caption, a malformed CSV row, a damaged tar shard — is an `Err` item that the caller counts
//! and skips; it never stops the iteration. Only problems that make the whole input unusable (a missing
//! folder, a CSV without the requested column, a malformed shard pattern) fail [`open`].
//!
//! | source | [`Input`] | samples |
//! | --- | --- | --- |
//! | a folder, recursively | [`Input::Folder`] | every `jpg/jpeg/png/webp/gif/bmp/tif/tiff` file, by path order; a sibling `.txt` with the same stem is the caption |
//! | a file list | [`Input::List`] | one image path per line (relative paths as given, from the working directory); sibling `.txt` captions as for folders |
//! | CSV/TSV | [`Input::Csv`] | one row per sample, with open_clip's `--csv-img-key` / `--csv-caption-key` / `--csv-separator` |
//! | WebDataset tar shards | [`Input::Shards`] | img2dataset layout (`key.jpg` + `key.txt`), brace-expanded shard patterns |
//!
//! [`ShardRecords`] reads the same shards but yields every file of a sample ([`ShardRecord`]), for fields such
//! as CLIP_benchmark's `.cls` class labels.
//!
//! [`class_folders`] lists labelled datasets stored as one subfolder per class (images or videos), for
//! classification benchmarks and probes.
//!
//! [`scenes`] generates synthetic captioned scenes (coloured shapes and their relations) by index, for training
//! from scratch and for tests.
//!
//! [`train`] turns any of these (or an indexed generator such as the scenes) into shuffled, augmented,
//! resumable training batches ([`TrainLoader`]); labelled datasets train with their class names filled into
//! prompt templates as captions ([`train::labels`]), and several sources mix with upsampling factors
//! ([`train::mixture`]).
//!
//! [`video`] reads videos (frame folders, animated GIFs, video files through FFmpeg) as sampled frames.
//!
//! Images are not decoded here: a [`Sample`] carries the image's path or bytes, so decoding can run on a
//! thread pool and a corrupt image is reported by whoever decodes it.
//!
//! ```no_run
//! use coca_data::{open, Input};
//! let input = Input::Shards("shards/{00000..00009}.tar".into());
//! for item in open(&input)? {
//!     match item {
//!         Ok(sample) => println!("{} {:?}", sample.key, sample.text),
//!         Err(err) => eprintln!("skipped: {err}"),
//!     }
//! }
//! # Ok::<(), coca_data::DataError>(())
//! ```

mod braces;
mod caption;
pub mod class_folders;
mod csv_source;
mod error;
mod folder;
mod list;
mod sample;
pub mod scenes;
mod shards;
pub mod train;
pub mod video;

use std::path::PathBuf;

pub use braces::expand_braces;
pub use class_folders::{class_folder_names, ClassFolders, ItemKind, LabelledItem};
pub use csv_source::{parse_separator, CsvOptions, CsvSource};
pub use error::DataError;
pub use folder::{is_image_path, FolderSource, IMAGE_EXTENSIONS};
pub use list::ListSource;
pub use sample::{ImageData, Sample};
pub use shards::{
    ShardCursor, ShardRecord, ShardRecords, ShardSource, SHARD_IMAGE_KEYS, SHARD_TEXT_KEY,
};
pub use train::{
    Batch, LabelPrompts, LabelledInput, LoaderConfig, LoaderState, SkipCounts, TrainLoader,
    TrainSource,
};

/// A collection to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Every image under a folder, recursively.
    Folder(PathBuf),
    /// A text file with one image path per line.
    List(PathBuf),
    /// A CSV/TSV file with an image-path column and an optional caption column.
    Csv {
        /// The CSV file.
        path: PathBuf,
        /// Column names and separator.
        options: CsvOptions,
    },
    /// WebDataset tar shards: a path or a brace pattern such as `shards/{00000..00099}.tar`.
    Shards(String),
}

impl std::fmt::Display for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Input::Folder(p) => write!(f, "folder {}", p.display()),
            Input::List(p) => write!(f, "file list {}", p.display()),
            Input::Csv { path, .. } => write!(f, "CSV {}", path.display()),
            Input::Shards(pattern) => write!(f, "shards {pattern}"),
        }
    }
}

/// The items of a source: one `Result` per sample, in order.
pub type Samples = Box<dyn Iterator<Item = Result<Sample, DataError>> + Send>;

/// Open a collection. Fails only when the input as a whole cannot be read; per-sample problems come out of
/// the iterator as `Err` items.
pub fn open(input: &Input) -> Result<Samples, DataError> {
    Ok(match input {
        Input::Folder(dir) => Box::new(FolderSource::new(dir)?),
        Input::List(path) => Box::new(ListSource::open(path)?),
        Input::Csv { path, options } => Box::new(CsvSource::open(path, options)?),
        Input::Shards(pattern) => Box::new(ShardSource::open(pattern)?),
    })
}
