//! Errors of the model crate.

use std::path::PathBuf;

/// Everything that can go wrong building or running a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// `--model` named no built-in config and no file.
    #[error("unknown model `{name}`; known models: {known} (or pass the path of an open_clip config JSON file)")]
    UnknownModel {
        /// What the user asked for.
        name: String,
        /// Comma-separated built-in names.
        known: String,
    },
    /// The JSON did not parse as an open_clip model config.
    #[error("{origin}: not a valid open_clip model config: {reason}")]
    BadConfig {
        /// The config name or file.
        origin: String,
        /// What serde said.
        reason: String,
    },
    /// The config parses but describes an architecture coca does not implement.
    #[error("model config {origin} is not supported by coca: {reason}")]
    Unsupported {
        /// The config name or file.
        origin: String,
        /// Which field and why.
        reason: String,
    },
    /// A config size is out of range, or the model would not fit in the memory available.
    #[error("model config {origin}: {reason}")]
    Limit {
        /// The config name or file.
        origin: String,
        /// Which field, its value and the limit, or what the model would cost.
        reason: String,
    },
    /// A file could not be read.
    #[error("{}: {reason}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        reason: String,
    },
    /// A caller passed inputs of the wrong shape or content.
    #[error("invalid input: {0}")]
    Input(String),
    /// A checkpoint problem (missing file, wrong architecture, ...).
    #[error(transparent)]
    Checkpoint(#[from] coca_checkpoint::CheckpointError),
    /// A tensor operation failed (shape bugs, out of memory, device errors).
    #[error("tensor error: {0}")]
    Tensor(#[from] candle_core::Error),
}

/// Result alias of this crate.
pub type Result<T, E = ModelError> = std::result::Result<T, E>;
