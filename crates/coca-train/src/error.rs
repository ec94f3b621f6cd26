//! Training errors: each names the file, step or setting at fault.

use std::path::{Path, PathBuf};

/// What can stop a training run.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A file or directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A checkpoint is unusable for this run.
    #[error("checkpoint {path}: {reason}")]
    Checkpoint {
        /// The checkpoint file or directory.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The loss became NaN or infinite.
    #[error("the loss is {value} at step {step}; stopped without saving this state. {last_good}")]
    NonFinite {
        /// The step whose loss was not finite.
        step: u64,
        /// The value (NaN or ±inf).
        value: f64,
        /// Which checkpoint to resume from, or that there is none.
        last_good: String,
    },
    /// Invalid settings.
    #[error("{0}")]
    Config(String),
    /// The data pipeline failed.
    #[error("training data: {0}")]
    Data(String),
    /// A tensor operation failed.
    #[error(transparent)]
    Tensor(#[from] candle_core::Error),
    /// The model or a checkpoint could not be built or read.
    #[error(transparent)]
    Model(#[from] coca_model::ModelError),
    /// A checkpoint file could not be read or written.
    #[error(transparent)]
    File(#[from] coca_checkpoint::CheckpointError),
    /// A collective among the ranks of a distributed run failed.
    #[error("distributed training: {0}")]
    Dist(coca_dist::DistError),
    /// The run was interrupted before finishing.
    #[error("interrupted")]
    Interrupted,
}

// Not a `#[from]`: the message already includes the collective's error, which would otherwise be printed
// twice by error chains.
impl From<coca_dist::DistError> for TrainError {
    fn from(e: coca_dist::DistError) -> Self {
        TrainError::Dist(e)
    }
}

impl TrainError {
    /// An I/O error at `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        TrainError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// A failed all-or-nothing write is reported as the checkpoint files' errors are.
impl From<coca_fs::WriteError> for TrainError {
    fn from(err: coca_fs::WriteError) -> Self {
        Self::File(err.into())
    }
}
