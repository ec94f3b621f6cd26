//! The crate's error type: every message names the input (and the line, key or byte offset) it is about.

use std::path::PathBuf;

/// Why a collection, or one sample of it, could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    /// The folder, list, CSV file or shard does not exist.
    #[error("{}: no such file or directory", path.display())]
    NotFound {
        /// The missing path.
        path: PathBuf,
    },
    /// A file or directory exists but could not be read.
    #[error("{}: cannot read: {source}", path.display())]
    Io {
        /// What was being read.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// `--input-dir` was given something that is not a directory.
    #[error("{}: not a directory", path.display())]
    NotADirectory {
        /// The path.
        path: PathBuf,
    },
    /// An entry of a folder could not be listed (permissions, a symlink loop, ...).
    #[error("{}: cannot list: {detail}", path.display())]
    Walk {
        /// The entry (or the folder) that failed.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
    /// A caption file exists but cannot be used.
    #[error("{}: caption unreadable: {detail}", path.display())]
    Caption {
        /// The caption file.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
    /// A line of a file list is not usable.
    #[error("{}:{line}: {detail}", path.display())]
    ListLine {
        /// The list file.
        path: PathBuf,
        /// 1-based line number.
        line: u64,
        /// What went wrong.
        detail: String,
    },
    /// A CSV record is malformed or lacks the image path.
    #[error("{}: line {line}: {detail}", path.display())]
    CsvRecord {
        /// The CSV file.
        path: PathBuf,
        /// 1-based line number where the record starts.
        line: u64,
        /// What went wrong.
        detail: String,
    },
    /// The CSV header lacks a requested column.
    #[error(
        "{}: no column `{column}` (set it with {flag}); the header has: {}",
        path.display(),
        available.join(", ")
    )]
    CsvColumn {
        /// The CSV file.
        path: PathBuf,
        /// The requested column.
        column: String,
        /// The command-line flag that names this column.
        flag: &'static str,
        /// The columns the header does have.
        available: Vec<String>,
    },
    /// A CSV separator that is not a single ASCII character.
    #[error("bad CSV separator {given:?}: use one ASCII character, or \\t for tab")]
    Separator {
        /// What was given.
        given: String,
    },
    /// A shard pattern that cannot be expanded.
    #[error("bad shard pattern `{pattern}`: {detail}")]
    Pattern {
        /// The pattern.
        pattern: String,
        /// What is wrong with it.
        detail: String,
    },
    /// None of the shards a pattern names exists.
    #[error("no shard of `{pattern}` exists (first expected: {first})")]
    NoShards {
        /// The pattern.
        pattern: String,
        /// The first path the pattern expands to.
        first: String,
    },
    /// A tar shard is truncated or corrupt; samples before `offset` were used, the rest of this shard is not.
    #[error("{}: damaged tar shard at byte {offset}: {detail}; the rest of this shard is skipped", shard.display())]
    Shard {
        /// The shard.
        shard: PathBuf,
        /// Byte offset in the shard where reading failed.
        offset: u64,
        /// What went wrong.
        detail: String,
    },
    /// A sample in a shard has no image file among the recognised extensions.
    #[error("{}: sample `{key}` has no image (found: {})", shard.display(), found.join(", "))]
    NoImage {
        /// The shard.
        shard: PathBuf,
        /// The sample key.
        key: String,
        /// The extensions the sample does have.
        found: Vec<String>,
    },
    /// Some shards a pattern names do not exist (training refuses to run on part of its data).
    #[error("{missing} of the {total} shards of `{pattern}` do not exist (first: {})", first.display())]
    MissingShards {
        /// The pattern.
        pattern: String,
        /// How many are missing.
        missing: usize,
        /// How many the pattern names.
        total: usize,
        /// The first missing shard.
        first: PathBuf,
    },
    /// A shard holds no tar entries at all (a zero-byte file or just the end-of-archive marker).
    #[error("{}: empty shard (no samples in it)", shard.display())]
    EmptyShard {
        /// The shard.
        shard: PathBuf,
    },
    /// A training input that yields no usable sample (or not even one batch of them in an epoch).
    #[error("{input}: no usable training samples: {detail}")]
    NoSamples {
        /// The input, as [`crate::Input`] displays it.
        input: String,
        /// What was found instead.
        detail: String,
    },
    /// Training-loader settings that cannot work (a zero batch size, a rank outside the world size, ...).
    #[error("training data loader: {detail}")]
    LoaderConfig {
        /// What is wrong.
        detail: String,
    },
    /// A sample's class label that is not one of the class names (so the class list does not fit the data).
    #[error("{input}: {detail}")]
    Label {
        /// The labelled input, and where in it (file and line, shard member).
        input: String,
        /// Which label, and the classes it should be one of.
        detail: String,
    },
    /// Class names or templates that cannot caption labelled images (none given, a blank name, ...).
    #[error("labels as captions: {detail}")]
    LabelPrompts {
        /// What is wrong.
        detail: String,
    },
    /// A mixture of training sources that cannot work (a factor per source, none negative or NaN, ...).
    #[error("training data mixture: {detail}")]
    Mixture {
        /// What is wrong, naming the factors or sources.
        detail: String,
    },
    /// The training loader's threads stopped unexpectedly (a bug, e.g. a panic while decoding).
    #[error("training data loader stopped: {detail}")]
    LoaderStopped {
        /// What happened.
        detail: String,
    },
    /// Synthetic-scene options out of range.
    #[error("invalid scene options: {detail}")]
    SceneOptions {
        /// Which option and why.
        detail: String,
    },
    /// A class-folder dataset without class subfolders.
    #[error(
        "{}: no class folders: expected one subfolder per class holding its {expected}",
        path.display()
    )]
    NoClassFolders {
        /// The dataset folder.
        path: PathBuf,
        /// What each class folder should hold.
        expected: &'static str,
    },
    /// A class folder without a single item.
    #[error("{}: the class folder `{class}` has no {expected}", path.display())]
    EmptyClass {
        /// The class folder.
        path: PathBuf,
        /// Its name.
        class: String,
        /// What it should hold.
        expected: &'static str,
    },
    /// A class folder whose name is not among the classes it is read against.
    #[error(
        "{}: the class folder `{class}` is not one of the classes {}",
        path.display(),
        known.join(", ")
    )]
    UnknownClass {
        /// The dataset folder.
        path: PathBuf,
        /// The folder's name.
        class: String,
        /// The classes it should be one of.
        known: Vec<String>,
    },
    /// An output file or folder could not be written.
    #[error("{}: cannot write: {source}", path.display())]
    Write {
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl DataError {
    /// Map an I/O error on `path`, keeping "not found" distinct.
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        let path = path.into();
        if source.kind() == std::io::ErrorKind::NotFound {
            Self::NotFound { path }
        } else {
            Self::Io { path, source }
        }
    }
}
