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
    /// What a decode session was given does not fit the model: image tokens of the wrong shape, the wrong
    /// number of rows or tokens, a token outside the vocabulary, or a sequence longer than the context length.
    #[error("invalid generation input: {0}")]
    Input(String),
    /// A tensor operation failed inside the model.
    #[error("model error during generation: {0}")]
    Model(#[from] candle_core::Error),
    /// The caller's cancel check (see [`crate::generate_from_tokens_until`]) asked to stop.
    #[error("generation was cancelled")]
    Cancelled,
}

impl From<coca_model::ModelError> for GenerateError {
    /// The model's verdict on its inputs stays an input error; anything else failed inside the model.
    fn from(e: coca_model::ModelError) -> Self {
        match e {
            coca_model::ModelError::Input(m) => Self::Input(m),
            coca_model::ModelError::Tensor(e) => Self::Model(e),
            other => Self::Model(candle_core::Error::Msg(other.to_string())),
        }
    }
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, GenerateError>;
