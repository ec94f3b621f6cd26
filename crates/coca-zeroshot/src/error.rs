//! Errors of the zero-shot crate.

use std::path::PathBuf;

/// Everything that can go wrong loading class lists and templates, building a classifier or caching it.
#[derive(Debug, thiserror::Error)]
pub enum ZeroShotError {
    /// A class list or template file could not be read.
    #[error("{}: {reason}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        reason: String,
    },
    /// A class list or template file (or a built-in list) is malformed; `origin` names the file.
    #[error("{origin}: {reason}")]
    BadList {
        /// The file or built-in list.
        origin: String,
        /// What is wrong, with the line or entry.
        reason: String,
    },
    /// A template cannot be filled with a class name.
    #[error("template {template:?}: {reason}")]
    BadTemplate {
        /// The template text as given.
        template: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A name that is neither a built-in list nor an existing file.
    #[error("unknown built-in {kind} `{name}`; built-in: {known} (or pass the path of a file)")]
    UnknownBuiltin {
        /// `class list` or `template set`.
        kind: &'static str,
        /// What the user passed.
        name: String,
        /// The built-in names, comma-separated.
        known: String,
    },
    /// A caller passed inputs that cannot be classified (empty lists, mismatched shapes, ...).
    #[error("invalid input: {0}")]
    Input(String),
    /// A prompt tokenizes to ids outside the model's vocabulary.
    #[error(
        "prompt {prompt:?}: token id {id} is outside this model's vocabulary of {vocab}; the model was not trained \
         with the CLIP tokenizer"
    )]
    Vocabulary {
        /// The filled-in template.
        prompt: String,
        /// The offending id.
        id: u32,
        /// The model's vocabulary size.
        vocab: usize,
    },
    /// The tokenizer's vocabulary failed its self-check.
    #[error(transparent)]
    Tokenizer(#[from] coca_text::TokenizerError),
    /// The model failed.
    #[error(transparent)]
    Model(#[from] coca_model::ModelError),
    /// Reading or writing a cache file failed.
    #[error(transparent)]
    Checkpoint(#[from] coca_checkpoint::CheckpointError),
    /// A tensor operation failed.
    #[error("tensor error: {0}")]
    Tensor(#[from] candle_core::Error),
}

/// Result alias of this crate.
pub type Result<T, E = ZeroShotError> = std::result::Result<T, E>;
