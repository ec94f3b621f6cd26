//! The crate's error type.

use std::path::PathBuf;

use crate::validate::ValidationReport;

/// Everything that can go wrong while reading, validating or writing a checkpoint.
///
/// Every variant carries the path of the file involved, and every message names it.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The file does not exist.
    #[error("checkpoint file '{path}' does not exist")]
    NotFound {
        /// The file that was asked for.
        path: PathBuf,
    },

    /// The file exists but could not be opened, read or memory-mapped.
    #[error("cannot read checkpoint '{path}': {source}")]
    Io {
        /// The file being read.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },

    /// The file has zero bytes (typically an interrupted download or copy).
    #[error("checkpoint file '{path}' is empty (0 bytes); the download or copy that produced it probably failed")]
    Empty {
        /// The empty file.
        path: PathBuf,
    },

    /// Neither a PyTorch zip archive nor a safetensors file.
    #[error("'{path}' is not a checkpoint: expected a PyTorch zip archive (torch.save) or a safetensors file, but it {looks_like}")]
    NotACheckpoint {
        /// The file that was inspected.
        path: PathBuf,
        /// A human description of what the first bytes look like.
        looks_like: String,
    },

    /// A file written by `torch.save(..., _use_new_zipfile_serialization=False)`
    /// or by PyTorch < 1.6.
    #[error("'{path}' uses the legacy non-zip torch.save format (PyTorch < 1.6 or _use_new_zipfile_serialization=False), which is not supported; re-save it in Python with torch.save(torch.load(old_path), new_path) or convert it to safetensors")]
    LegacyTorchFormat {
        /// The legacy file.
        path: PathBuf,
    },

    /// A valid file using a feature this crate deliberately does not implement.
    #[error("'{path}' uses {what}, which is not supported")]
    Unsupported {
        /// The file.
        path: PathBuf,
        /// The unsupported feature.
        what: String,
    },

    /// A zip archive that cannot be read as a PyTorch checkpoint: truncated,
    /// damaged, or not written by `torch.save`.
    #[error("'{path}' is a corrupt or truncated PyTorch zip checkpoint: {reason}")]
    CorruptZip {
        /// The archive.
        path: PathBuf,
        /// What exactly is wrong.
        reason: String,
    },

    /// A safetensors file whose header or data is damaged or incomplete.
    #[error("'{path}' is a corrupt or truncated safetensors file: {reason}")]
    CorruptSafetensors {
        /// The file.
        path: PathBuf,
        /// What exactly is wrong.
        reason: String,
    },

    /// The pickle inside a PyTorch archive could not be decoded.
    #[error("cannot decode the pickled object '{entry}' in '{path}': {reason}")]
    Pickle {
        /// The archive.
        path: PathBuf,
        /// The zip entry holding the pickle (e.g. `archive/data.pkl`).
        entry: String,
        /// The decoder's complaint.
        reason: String,
    },

    /// The file is a well-formed checkpoint container, but holds no tensors
    /// where a state dict was expected.
    #[error("'{path}' contains no tensors: {detail}")]
    NoTensors {
        /// The file.
        path: PathBuf,
        /// What was found instead.
        detail: String,
    },

    /// A tensor is stored with an element type this crate cannot represent.
    #[error("tensor '{name}' in '{path}' has unsupported element type {dtype}")]
    UnsupportedDtype {
        /// The file.
        path: PathBuf,
        /// The tensor's name.
        name: String,
        /// The type as the file spells it (e.g. `BoolStorage`, `F8_E5M2`).
        dtype: String,
    },

    /// The tensor layout in a PyTorch archive is inconsistent (e.g. a view that
    /// reaches past the end of its storage).
    #[error("tensor '{name}' in '{path}' is malformed: {reason}")]
    MalformedTensor {
        /// The file.
        path: PathBuf,
        /// The tensor's name.
        name: String,
        /// What is inconsistent.
        reason: String,
    },

    /// A lookup asked for a name the checkpoint does not hold.
    #[error("tensor '{name}' not found in '{path}'")]
    TensorNotFound {
        /// The file.
        path: PathBuf,
        /// The missing name.
        name: String,
    },

    /// Strict validation failed: lists every missing, unexpected and mis-shaped tensor.
    #[error("checkpoint '{path}' does not match the expected tensors: {report}")]
    Mismatch {
        /// The file.
        path: PathBuf,
        /// The full list of differences.
        report: ValidationReport,
    },

    /// candle refused to build, convert or move a tensor.
    #[error("cannot materialize tensor '{name}' from '{path}': {source}")]
    Tensor {
        /// The file.
        path: PathBuf,
        /// The tensor's name.
        name: String,
        /// candle's error (boxed: it is large, and this path is rare).
        source: Box<candle_core::Error>,
    },

    /// The tensors handed to a save function cannot be written as asked.
    #[error("cannot save tensor '{name}' to '{path}': {reason}")]
    InvalidSave {
        /// The destination file.
        path: PathBuf,
        /// The offending tensor.
        name: String,
        /// Why it cannot be saved.
        reason: String,
    },

    /// Writing a file failed; the destination was left untouched.
    #[error("failed to write '{path}' (the file was left untouched): {source}")]
    Write {
        /// The destination file.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
}

impl CheckpointError {
    /// The file this error is about.
    pub fn path(&self) -> &std::path::Path {
        match self {
            Self::NotFound { path }
            | Self::Io { path, .. }
            | Self::Empty { path }
            | Self::NotACheckpoint { path, .. }
            | Self::LegacyTorchFormat { path }
            | Self::Unsupported { path, .. }
            | Self::CorruptZip { path, .. }
            | Self::CorruptSafetensors { path, .. }
            | Self::Pickle { path, .. }
            | Self::NoTensors { path, .. }
            | Self::UnsupportedDtype { path, .. }
            | Self::MalformedTensor { path, .. }
            | Self::TensorNotFound { path, .. }
            | Self::Mismatch { path, .. }
            | Self::Tensor { path, .. }
            | Self::InvalidSave { path, .. }
            | Self::Write { path, .. } => path,
        }
    }
}

/// A failed all-or-nothing write, as this crate reports it.
impl From<coca_fs::WriteError> for CheckpointError {
    fn from(err: coca_fs::WriteError) -> Self {
        Self::Write {
            path: err.path,
            source: err.source,
        }
    }
}

/// Lets closures passed to [`coca_fs::write_atomic`] that work in `std::io::Result`
/// use `?` on this crate's functions (e.g. to stream a checkpoint into the writer).
impl From<CheckpointError> for std::io::Error {
    fn from(err: CheckpointError) -> Self {
        // Keep the original kind (e.g. `StorageFull`) but the full message, which names the file.
        let kind = match &err {
            CheckpointError::Io { source, .. } | CheckpointError::Write { source, .. } => {
                source.kind()
            }
            CheckpointError::NotFound { .. } => std::io::ErrorKind::NotFound,
            _ => std::io::ErrorKind::Other,
        };
        std::io::Error::new(kind, err)
    }
}
