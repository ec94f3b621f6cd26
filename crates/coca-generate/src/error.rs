//! Errors of caption generation.

use thiserror::Error;

/// Why a generation request failed.
#[derive(Debug, Error)]
pub enum GenerateError {
    /// The configuration is inconsistent (the message names the setting and the problem).
    #[error("invalid generation config: {0}")]
    Config(String),
    /// User settings contradict each other (the message names them as the user wrote them).
    #[error("{0}")]
    Options(String),
    /// The images or their encoding have the wrong shape for this model.
    #[error("invalid image input: {0}")]
    Input(String),
    /// A tensor operation failed inside the model.
    #[error("model error during generation: {0}")]
    Model(#[from] candle_core::Error),
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, GenerateError>;
