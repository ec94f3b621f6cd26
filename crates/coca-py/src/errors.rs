//! Rust errors as Python exceptions: the message the CLI prints, as a `coca.CocaError` subclass that is also the
//! built-in exception Python code expects (`FileNotFoundError`, `ValueError`), and panics caught at the boundary.

use std::panic::{catch_unwind, AssertUnwindSafe};

use pyo3::prelude::*;
use pyo3::sync::GILOnceCell;
use pyo3::types::PyType;

/// Which exception class an error becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A named file does not exist: `coca.CocaFileNotFoundError` (a `FileNotFoundError`).
    NotFound,
    /// A bad argument or input: `coca.CocaValueError` (a `ValueError`).
    Value,
    /// Anything else (a failing computation, a bug caught at the boundary): `coca.CocaError`.
    Other,
}

impl Kind {
    fn class_name(self) -> &'static str {
        match self {
            Kind::NotFound => "CocaFileNotFoundError",
            Kind::Value => "CocaValueError",
            Kind::Other => "CocaError",
        }
    }
}

/// An error on its way to Python.
#[derive(Debug)]
pub struct Error {
    kind: Kind,
    message: String,
}

/// Result of the module's Rust side.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// An error of `kind` with `message`.
    pub fn new(kind: Kind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// A bad argument.
    pub fn value(message: impl Into<String>) -> Self {
        Self::new(Kind::Value, message)
    }

    /// The exception class this error becomes.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The message (the CLI's, for the same input).
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl From<anyhow::Error> for Error {
    fn from(e: anyhow::Error) -> Self {
        let kind = if e.chain().any(is_missing_file) {
            Kind::NotFound
        } else if e.chain().any(is_computation) {
            Kind::Other
        } else {
            Kind::Value
        };
        // The CLI prints the whole chain of causes; so does the exception.
        Self::new(kind, format!("{e:#}"))
    }
}

macro_rules! from_error {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Self {
                anyhow::Error::from(e).into()
            }
        }
    )*};
}
from_error!(
    candle_core::Error,
    coca_model::ModelError,
    coca_generate::GenerateError,
    coca_zeroshot::ZeroShotError,
    coca_image::ImageError,
    coca_text::TokenizerError,
    coca_retrieval::RetrievalError
);

/// Whether a cause says that a named file does not exist.
fn is_missing_file(cause: &(dyn std::error::Error + 'static)) -> bool {
    if let Some(e) = cause.downcast_ref::<coca_image::ImageError>() {
        return matches!(e, coca_image::ImageError::NotFound { .. });
    }
    if let Some(e) = cause.downcast_ref::<coca_hub::HubError>() {
        return matches!(e, coca_hub::HubError::NotFound { .. });
    }
    if let Some(coca_model::ModelError::Io { reason, .. }) =
        cause.downcast_ref::<coca_model::ModelError>()
    {
        return reason == "no such file";
    }
    if let Some(coca_zeroshot::ZeroShotError::Io { reason, .. }) =
        cause.downcast_ref::<coca_zeroshot::ZeroShotError>()
    {
        return reason == "no such file";
    }
    if let Some(e) = cause.downcast_ref::<std::io::Error>() {
        return e.kind() == std::io::ErrorKind::NotFound;
    }
    false
}

/// Whether a cause is a failing tensor computation rather than a bad input.
fn is_computation(cause: &(dyn std::error::Error + 'static)) -> bool {
    cause.downcast_ref::<candle_core::Error>().is_some()
}

/// The exception classes, defined in Python (`coca/_errors.py`) because each has two bases.
static CLASSES: GILOnceCell<[Py<PyType>; 3]> = GILOnceCell::new();

fn class(py: Python<'_>, kind: Kind) -> PyResult<Bound<'_, PyType>> {
    let classes = CLASSES.get_or_try_init(py, || -> PyResult<_> {
        let module = py.import("coca._errors")?;
        let get = |k: Kind| -> PyResult<Py<PyType>> {
            Ok(module
                .getattr(k.class_name())?
                .downcast_into::<PyType>()?
                .unbind())
        };
        Ok([get(Kind::NotFound)?, get(Kind::Value)?, get(Kind::Other)?])
    })?;
    let i = match kind {
        Kind::NotFound => 0,
        Kind::Value => 1,
        Kind::Other => 2,
    };
    Ok(classes[i].bind(py).clone())
}

impl From<Error> for PyErr {
    fn from(e: Error) -> PyErr {
        Python::with_gil(|py| match class(py, e.kind) {
            Ok(ty) => PyErr::from_type(ty, e.message),
            Err(import_failed) => import_failed,
        })
    }
}

/// Run `f` with the GIL released (other Python threads run meanwhile) and any panic turned into a
/// `coca.CocaError` instead of unwinding into the interpreter.
pub fn without_gil<T, F>(py: Python<'_>, f: F) -> Result<T>
where
    F: FnOnce() -> Result<T> + Send,
    T: Send,
{
    py.allow_threads(|| caught(f))
}

/// `f()`, with a panic turned into a `coca.CocaError`.
pub(crate) fn caught<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        Err(Error::new(
            Kind::Other,
            format!("internal error (please report it): {what}"),
        ))
    })
}

/// Let a pending Ctrl-C (or another signal handler's exception) interrupt a long call between two batches.
pub fn check_signals(py: Python<'_>) -> PyResult<()> {
    py.check_signals()
}
