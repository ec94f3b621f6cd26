//! The native half of the `coca` Python package (`coca._coca`): models loaded by open_clip name and tag,
//! embeddings, captions and zero-shot classifiers computed by the workspace's crates with the GIL released.
//!
//! The Python half (`python/coca/__init__.py`) turns the many input kinds (paths, PIL images, numpy arrays,
//! torch tensors) into the few this module takes: image paths, encoded image bytes, uint8 RGB arrays, float32
//! pixel batches, texts and token ids. Errors become `coca.CocaError` subclasses with the CLI's messages.

pub mod collection;
pub mod errors;
pub mod model;
pub mod worker;

use numpy::{PyArray1, PyArray2, PyArrayMethods, PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::prelude::*;

use crate::errors::{Error, Result};

/// Split `flat` into `rows` rows as a numpy array, without copying the data.
pub(crate) fn matrix<'py, T: numpy::Element>(
    py: Python<'py>,
    flat: Vec<T>,
    rows: usize,
) -> PyResult<Bound<'py, PyArray2<T>>> {
    let cols = flat.len().checked_div(rows).unwrap_or(0);
    PyArray1::from_vec(py, flat).reshape([rows, cols])
}

/// open_clip's tokenizer: int64 ids `(len(texts), context_length)` padded with zeros, overlong texts truncated
/// with the end token last. `model` (a name or config path) sets the context length; otherwise 76, CoCa's (what
/// `open_clip.get_tokenizer("coca_ViT-B-32")` uses).
#[pyfunction]
#[pyo3(signature = (texts, context_length=None, model=None))]
fn tokenize<'py>(
    py: Python<'py>,
    texts: Vec<String>,
    context_length: Option<usize>,
    model: Option<String>,
) -> PyResult<Bound<'py, PyArray2<i64>>> {
    let context = match (context_length, model) {
        (Some(_), Some(_)) => {
            return Err(Error::value("give context_length or model, not both").into())
        }
        (Some(0), None) => return Err(Error::value("context_length must be at least 1").into()),
        (Some(n), None) => n,
        (None, Some(m)) => {
            coca_pipeline::resolve_config(&m)
                .map_err(Error::from)?
                .0
                .text_cfg
                .context_length
        }
        (None, None) => coca_text::DEFAULT_CONTEXT_LENGTH,
    };
    let ids = errors::without_gil(py, || {
        let tokenizer = coca_text::Tokenizer::new()?;
        Ok(tokenizer
            .tokenize_batch(&texts, context)
            .into_iter()
            .flat_map(|t| t.ids)
            .map(i64::from)
            .collect::<Vec<_>>())
    })?;
    matrix(py, ids, texts.len())
}

/// Decode token ids to text as open_clip's `decode` does (`<start_of_text>`, `<end_of_text>`, padding as `!`);
/// `caption=True` keeps the text between the start and the end token, as captions are shown.
#[pyfunction]
#[pyo3(signature = (ids, caption=false))]
fn decode(ids: Vec<u32>, caption: bool) -> PyResult<String> {
    let tokenizer = coca_text::Tokenizer::new().map_err(Error::from)?;
    Ok(if caption {
        tokenizer.decode_caption(&ids)
    } else {
        tokenizer.decode(&ids)
    })
}

/// open_clip's zero-shot probabilities: softmax over classes of 100 × cosine similarity between normalised
/// image embeddings `(N, D)` and class embeddings `(C, D)`, as `coca classify`.
#[pyfunction]
fn class_probabilities<'py>(
    py: Python<'py>,
    image_embeddings: PyReadonlyArray2<'py, f32>,
    classifier: PyReadonlyArray2<'py, f32>,
) -> PyResult<Bound<'py, PyArray2<f32>>> {
    let tensor = |a: &PyReadonlyArray2<'py, f32>| -> Result<candle_core::Tensor> {
        let shape = (a.shape()[0], a.shape()[1]);
        let flat: Vec<f32> = a.as_array().iter().copied().collect();
        Ok(candle_core::Tensor::from_vec(
            flat,
            shape,
            &candle_core::Device::Cpu,
        )?)
    };
    let (n, classes) = (image_embeddings.shape()[0], classifier.shape()[0]);
    let images = tensor(&image_embeddings)?;
    let weights = tensor(&classifier)?;
    let flat = errors::without_gil(py, || {
        let predictions =
            coca_zeroshot::classify(&images, &weights.t()?.contiguous()?, classes.max(1))?;
        let mut flat = vec![0f32; n * classes];
        for (row, preds) in flat.chunks_mut(classes.max(1)).zip(predictions) {
            for p in preds {
                row[p.index] = p.probability;
            }
        }
        Ok(flat)
    })?;
    matrix(py, flat, n)
}

/// The built-in model names (open_clip's CoCa configs).
#[pyfunction]
fn list_models() -> Vec<&'static str> {
    coca_model::config::builtin_model_names()
}

/// `(model, tag)` pairs of the pretrained checkpoints coca can fetch, as open_clip's `list_pretrained()`.
#[pyfunction]
fn list_pretrained() -> Vec<(&'static str, &'static str)> {
    coca_hub::list_pretrained()
        .iter()
        .map(|p| (p.model, p.tag))
        .collect()
}

/// A built-in class list (`imagenet`) or a class file, as `coca classify --classes`.
#[pyfunction]
#[pyo3(signature = (spec="imagenet", dataset=None))]
fn classnames(spec: &str, dataset: Option<&str>) -> PyResult<Vec<String>> {
    Ok(coca_zeroshot::lists::resolve_classnames(spec, dataset).map_err(Error::from)?)
}

/// A built-in template set (`openai`, `simple`) or a template file, as `coca classify --templates`.
#[pyfunction]
#[pyo3(signature = (spec="openai", dataset=None))]
fn templates(spec: &str, dataset: Option<&str>) -> PyResult<Vec<String>> {
    Ok(coca_zeroshot::lists::resolve_templates(spec, dataset)
        .map_err(Error::from)?
        .iter()
        .map(|t| t.as_str().to_string())
        .collect())
}

/// Load a model: `model` is an open_clip name or config path, `pretrained` a checkpoint file or tag.
#[pyfunction]
#[pyo3(signature = (model, pretrained, device="cpu", precision="fp32", allow_nonfinite_weights=false))]
fn load(
    py: Python<'_>,
    model: String,
    pretrained: String,
    device: &str,
    precision: &str,
    allow_nonfinite_weights: bool,
) -> PyResult<model::Model> {
    let bad_value = |e: anyhow::Error| PyErr::from(errors::Error::value(e.to_string()));
    let spec = coca_pipeline::ModelSpec {
        model: &model,
        pretrained: &pretrained,
        precision: precision.parse().map_err(bad_value)?,
        device: device.parse().map_err(bad_value)?,
        allow_nonfinite_weights,
    };
    Ok(errors::without_gil(py, || model::Model::load(&spec))?)
}

/// The module `coca._coca`.
#[pymodule]
fn _coca(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<model::Model>()?;
    m.add_function(wrap_pyfunction!(load, m)?)?;
    m.add_function(wrap_pyfunction!(tokenize, m)?)?;
    m.add_function(wrap_pyfunction!(decode, m)?)?;
    m.add_function(wrap_pyfunction!(list_models, m)?)?;
    m.add_function(wrap_pyfunction!(list_pretrained, m)?)?;
    m.add_function(wrap_pyfunction!(classnames, m)?)?;
    m.add_function(wrap_pyfunction!(templates, m)?)?;
    m.add_function(wrap_pyfunction!(class_probabilities, m)?)?;
    m.add_function(wrap_pyfunction!(collection::write_collection, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
