//! The crate's error type; every message names the file it is about.

use std::path::PathBuf;

/// Why an embedding output could not be written, resumed or searched.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RetrievalError {
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A `.npy` file is not a 2-D little-endian float16/float32 array in C order.
    #[error("{}: not an embedding .npy file: {detail}", path.display())]
    Npy {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// A metadata Parquet file could not be written or read.
    #[error("{}: metadata: {detail}", path.display())]
    Metadata {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
    /// The output folder holds a run with other settings, so resuming it would mix two runs.
    #[error(
        "{}: this folder holds a run with other settings ({}); use a new --output-dir, or repeat the first run's \
         settings to resume it",
        path.display(),
        differences.join("; ")
    )]
    SettingsChanged {
        /// The manifest file.
        path: PathBuf,
        /// `name: was X, now Y` for each differing setting.
        differences: Vec<String>,
    },
    /// The folder has embedding partitions but no manifest (written by something else, or damaged).
    #[error(
        "{}: has embedding partitions but no coca_embed.json; refusing to add to output of another run",
        path.display()
    )]
    ForeignOutput {
        /// The output folder.
        path: PathBuf,
    },
    /// A folder to search holds no complete partition.
    #[error("{}: no embeddings found (expected metadata/metadata_N.parquet written by `coca embed --output-dir`)", path.display())]
    EmptyIndex {
        /// The folder.
        path: PathBuf,
    },
    /// The index has no embeddings of the requested kind.
    #[error("{}: has no {kind} embeddings ({}/ is missing); search the other kind", path.display(), folder)]
    MissingKind {
        /// The index folder.
        path: PathBuf,
        /// `image` or `text`.
        kind: &'static str,
        /// The missing folder, `img_emb` or `text_emb`.
        folder: &'static str,
    },
    /// Embedding widths differ between a query and the index, or between partitions.
    #[error("{}: embeddings have dimension {found}, expected {expected} (made with another model?)", path.display())]
    Dimension {
        /// The offending file.
        path: PathBuf,
        /// The dimension expected.
        expected: usize,
        /// The dimension found.
        found: usize,
    },
    /// Embedding and metadata files of one partition disagree on the number of rows.
    #[error("{}: {found} rows, but its metadata has {expected}", path.display())]
    RowCount {
        /// The embedding file.
        path: PathBuf,
        /// Rows in the metadata.
        expected: usize,
        /// Rows in the embedding file.
        found: usize,
    },
    /// A folder cannot be checked as a whole collection.
    #[error("{}: {detail}", path.display())]
    Collection {
        /// The output folder.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
}

impl RetrievalError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}

impl From<coca_fs::WriteError> for RetrievalError {
    fn from(err: coca_fs::WriteError) -> Self {
        Self::Io {
            path: err.path,
            source: err.source,
        }
    }
}
