//! The crate's error type: every message names the file (and the line or byte offset) it is about.

use std::path::PathBuf;

/// Why a run log could not be written, read or plotted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunlogError {
    /// A file or directory could not be read, written, created or renamed.
    #[error("{}: {action}: {source}", path.display())]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// What was being done ("cannot read", "cannot write", ...).
        action: &'static str,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The run directory does not exist.
    #[error("{}: run directory not found", path.display())]
    RunDirNotFound {
        /// The missing directory.
        path: PathBuf,
    },
    /// The run directory has no metrics file.
    #[error("{}: no metrics file (is this a run directory written by `coca train`?)", path.display())]
    MetricsNotFound {
        /// The missing `metrics.jsonl`.
        path: PathBuf,
    },
    /// `MetricsWriter::create` found a metrics file of an earlier run.
    #[error(
        "{}: already exists; resume the run (MetricsWriter::resume) or choose a new run directory",
        path.display()
    )]
    MetricsExist {
        /// The existing `metrics.jsonl`.
        path: PathBuf,
    },
    /// A complete line of `metrics.jsonl` is not a valid record.
    #[error("{}:{line}: malformed metrics line: {reason}", path.display())]
    MalformedLine {
        /// The metrics file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// A metric name that cannot be written (empty, or one of the reserved keys).
    #[error("invalid metric name {name:?}: {reason}")]
    InvalidName {
        /// The offending name.
        name: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// A TensorBoard event file is damaged before its last record.
    #[error("{}: corrupt event record at byte {offset}: {reason}", path.display())]
    CorruptEvents {
        /// The event file.
        path: PathBuf,
        /// Byte offset of the record.
        offset: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// The metrics file holds no record to plot.
    #[error("{}: no metrics recorded yet", path.display())]
    NothingToPlot {
        /// The metrics file.
        path: PathBuf,
    },
    /// `--metrics` names metrics that the run never recorded.
    #[error("{}: no metric named {}; recorded: {}", path.display(), missing.join(", "), available.join(", "))]
    UnknownMetrics {
        /// The metrics file.
        path: PathBuf,
        /// The requested names that were not found.
        missing: Vec<String>,
        /// Every metric name in the file.
        available: Vec<String>,
    },
    /// A plot option out of range.
    #[error("{0}")]
    InvalidOption(String),
    /// Drawing a chart failed.
    #[error("{}: cannot draw the chart: {reason}", path.display())]
    Plot {
        /// The output file being drawn.
        path: PathBuf,
        /// The drawing backend's message.
        reason: String,
    },
}

impl RunlogError {
    /// An `Io` error about `path`.
    pub(crate) fn io(
        path: impl Into<PathBuf>,
        action: &'static str,
        source: std::io::Error,
    ) -> Self {
        Self::Io {
            path: path.into(),
            action,
            source,
        }
    }
}

/// A failed all-or-nothing write of a log file or plot.
impl From<coca_fs::WriteError> for RunlogError {
    fn from(err: coca_fs::WriteError) -> Self {
        Self::io(err.path, "cannot write", err.source)
    }
}

/// The crate's result type.
pub type Result<T, E = RunlogError> = std::result::Result<T, E>;
