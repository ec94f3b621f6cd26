//! `coca._coca.Model`: one loaded model, shared by any number of Python threads.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use candle_core::{DType, Tensor};
use coca_generate::{GenerationOptions, OptionNames, StrategyChoice};
use coca_image::{DecodedImage, PreprocessConfig};
use coca_model::{Coca, CocaConfig};
use coca_text::Tokenizer;
use numpy::{
    PyArray1, PyArray2, PyArray4, PyArrayMethods, PyReadonlyArray2, PyReadonlyArray3,
    PyReadonlyArray4, PyUntypedArrayMethods,
};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::errors::{check_signals, without_gil, Error, Kind, Result};
use crate::matrix;
use crate::worker::interruptible;

/// A CoCa model with its preprocessing and tokenizer. Every method releases the GIL while it computes and
/// can be called from several threads at once.
#[pyclass(frozen, module = "coca._coca")]
pub struct Model {
    /// Shared with the worker thread that runs each call (see [`interruptible`]).
    model: Arc<Coca>,
    cfg: CocaConfig,
    pre: PreprocessConfig,
    tokenizer: Tokenizer,
    name: String,
    weights: PathBuf,
}

impl Model {
    /// Load as `--model`, `--pretrained`, `--precision`, `--device`, `--allow-nonfinite-weights` do.
    pub fn load(spec: &coca_pipeline::ModelSpec<'_>) -> Result<Self> {
        let (model, pretrained) = (spec.model, spec.pretrained);
        let (coca, cfg) = spec.load()?;
        let pre = coca_pipeline::preprocess_config(&cfg)?;
        let weights = coca_pipeline::weights_path(model, pretrained)?;
        Ok(Self {
            model: Arc::new(coca),
            cfg,
            pre,
            tokenizer: Tokenizer::new()?,
            name: model.to_string(),
            weights,
        })
    }

    /// Preprocessed pixels as a numpy `(n, 3, S, S)` batch, without copying them.
    fn batch<'py>(
        &self,
        py: Python<'py>,
        flat: Vec<f32>,
        n: usize,
    ) -> PyResult<Bound<'py, PyArray4<f32>>> {
        let s = self.pre.image_size as usize;
        PyArray1::from_vec(py, flat).reshape([n, 3, s, s])
    }

    /// Embeddings of preprocessed images, `batch_size` at a time, each batch interruptible by Ctrl-C.
    fn embed_pixels(
        &self,
        py: Python<'_>,
        pixels: &Tensor,
        normalize: bool,
        batch_size: usize,
    ) -> PyResult<Vec<f32>> {
        let n = pixels.dim(0).map_err(Error::from)?;
        let mut out = Vec::new();
        for start in (0..n).step_by(batch_size.max(1)) {
            let len = batch_size.min(n - start);
            let chunk = pixels.narrow(0, start, len).map_err(Error::from)?;
            let model = Arc::clone(&self.model);
            let rows = interruptible(py, move |_| {
                let emb = if normalize {
                    model.encode_image(&chunk)?.embedding
                } else {
                    model.encode_image_pooled(&chunk)?
                };
                flat_f32(&emb)
            })?;
            out.extend(rows);
            check_signals(py)?;
        }
        Ok(out)
    }

    /// Embeddings of token ids `(n, len)`, `batch_size` at a time, each batch interruptible by Ctrl-C.
    fn embed_ids(
        &self,
        py: Python<'_>,
        ids: &Tensor,
        normalize: bool,
        batch_size: usize,
    ) -> PyResult<Vec<f32>> {
        let n = ids.dim(0).map_err(Error::from)?;
        let mut out = Vec::new();
        for start in (0..n).step_by(batch_size.max(1)) {
            let len = batch_size.min(n - start);
            let chunk = ids.narrow(0, start, len).map_err(Error::from)?;
            let model = Arc::clone(&self.model);
            let rows = interruptible(py, move |_| {
                let emb = if normalize {
                    model.encode_text(&chunk)?.embedding
                } else {
                    model.encode_text_pooled(&chunk)?
                };
                flat_f32(&emb)
            })?;
            out.extend(rows);
            check_signals(py)?;
        }
        Ok(out)
    }

    fn dim(&self) -> usize {
        self.cfg.embed_dim
    }

    /// Token ids from a numpy array, checked against the model.
    fn ids_tensor(&self, ids: &PyReadonlyArray2<'_, i64>) -> Result<Tensor> {
        let (n, len) = (ids.shape()[0], ids.shape()[1]);
        let context = self.cfg.text_cfg.context_length;
        if len == 0 || len > context {
            return Err(Error::value(format!(
                "token ids have {len} columns; this model takes 1 to {context} (its context length)"
            )));
        }
        let vocab = self.cfg.text_cfg.vocab_size as i64;
        let array = ids.as_array();
        let mut flat = Vec::with_capacity(n * len);
        for (i, row) in array.outer_iter().enumerate() {
            for &id in row {
                if !(0..vocab).contains(&id) {
                    return Err(Error::value(format!(
                        "text #{}: token id {id} is outside this model's vocabulary of {vocab}",
                        i + 1
                    )));
                }
                flat.push(id as u32);
            }
        }
        Ok(Tensor::from_vec(flat, (n, len), self.model.device())?)
    }

    /// A float32 `(n, 3, S, S)` batch from numpy, checked against the model's input size.
    fn pixels_tensor(&self, pixels: &PyReadonlyArray4<'_, f32>) -> Result<Tensor> {
        let shape = pixels.shape();
        let s = self.pre.image_size as usize;
        if shape[1] != 3 || shape[2] != s || shape[3] != s {
            return Err(Error::value(format!(
                "preprocessed images must be float32 (N, 3, {s}, {s}) for this model, got {shape:?}"
            )));
        }
        let flat: Vec<f32> = match pixels.as_slice() {
            Ok(slice) => slice.to_vec(),
            Err(_) => pixels.as_array().iter().copied().collect(),
        };
        if flat.iter().any(|v| !v.is_finite()) {
            return Err(Error::value(
                "preprocessed images contain NaN or infinite values",
            ));
        }
        Ok(Tensor::from_vec(
            flat,
            (shape[0], 3, s, s),
            self.model.device(),
        )?)
    }
}

/// A tensor's values as f32, row-major.
fn flat_f32(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
}

/// One uint8 `(H, W, 3)` array as an RGB image.
fn rgb_image(array: &PyReadonlyArray3<'_, u8>, index: usize) -> Result<DecodedImage> {
    let shape = array.shape();
    let (h, w, c) = (shape[0], shape[1], shape[2]);
    if c != 3 || h == 0 || w == 0 {
        return Err(Error::value(format!(
            "image #{}: a uint8 array must be (height, width, 3) RGB, got {shape:?}",
            index + 1
        )));
    }
    let data: Vec<u8> = match array.as_slice() {
        Ok(slice) => slice.to_vec(),
        Err(_) => array.as_array().iter().copied().collect(),
    };
    let too_big = || Error::value(format!("image #{}: {w}x{h} is too large", index + 1));
    let rgb = coca_image::image::RgbImage::from_raw(
        u32::try_from(w).map_err(|_| too_big())?,
        u32::try_from(h).map_err(|_| too_big())?,
        data,
    )
    .ok_or_else(too_big)?;
    Ok(DecodedImage::from_rgb(rgb))
}

/// The keyword arguments of open_clip's `generate` (and coca's additions) as generation options.
fn generation_options(kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<GenerationOptions> {
    let mut opts = GenerationOptions::default();
    let Some(kwargs) = kwargs else {
        return Ok(opts);
    };
    for (key, value) in kwargs.iter() {
        let key: String = key.extract()?;
        if value.is_none() {
            continue;
        }
        match key.as_str() {
            "generation_type" => {
                let s: String = value.extract()?;
                opts.strategy = Some(match s.as_str() {
                    "beam_search" => StrategyChoice::Beam,
                    "top_k" => StrategyChoice::TopK,
                    "top_p" => StrategyChoice::TopP,
                    "greedy" => StrategyChoice::Greedy,
                    other => {
                        return Err(Error::value(format!(
                            "generation_type {other:?} is not one of \"beam_search\", \"top_k\", \"top_p\", \"greedy\""
                        ))
                        .into())
                    }
                });
            }
            "seq_len" => opts.max_length = Some(value.extract()?),
            "min_seq_len" => opts.min_length = Some(value.extract()?),
            "num_beams" => opts.num_beams = Some(value.extract()?),
            "num_beam_groups" => opts.num_beam_groups = Some(value.extract()?),
            "length_penalty" => opts.length_penalty = Some(value.extract()?),
            "beam_scoring" => {
                let s: String = value.extract()?;
                opts.beam_scoring = Some(match s.as_str() {
                    "logits" => coca_generate::BeamScoring::RawLogits,
                    "log_probs" => coca_generate::BeamScoring::LogProbs,
                    other => {
                        return Err(Error::value(format!(
                            "beam_scoring {other:?} is not \"logits\" or \"log_probs\""
                        ))
                        .into())
                    }
                });
            }
            "top_k" => opts.top_k = Some(value.extract()?),
            "top_p" => opts.top_p = Some(value.extract()?),
            "temperature" => opts.temperature = Some(value.extract()?),
            "repetition_penalty" => opts.repetition_penalty = Some(value.extract()?),
            "prompt" => opts.prompt = Some(value.extract()?),
            "seed" => opts.seed = value.extract()?,
            other => {
                return Err(Error::value(format!(
                    "generate() got an unknown keyword {other:?}; it takes generation_type, seq_len, min_seq_len, \
                     num_beams, num_beam_groups, length_penalty, beam_scoring, top_k, top_p, temperature, \
                     repetition_penalty, prompt, seed"
                ))
                .into())
            }
        }
    }
    Ok(opts)
}

#[pymethods]
impl Model {
    /// The model name or config path it was loaded with.
    #[getter]
    fn name(&self) -> &str {
        &self.name
    }

    /// The checkpoint file the weights came from.
    #[getter]
    fn weights(&self) -> PathBuf {
        self.weights.clone()
    }

    /// Side of the square input images.
    #[getter]
    fn image_size(&self) -> u32 {
        self.pre.image_size
    }

    /// Token positions of the text tower.
    #[getter]
    fn context_length(&self) -> usize {
        self.cfg.text_cfg.context_length
    }

    /// Size of the vocabulary.
    #[getter]
    fn vocab_size(&self) -> usize {
        self.cfg.text_cfg.vocab_size
    }

    /// Dimension of the embeddings.
    #[getter]
    fn embed_dim(&self) -> usize {
        self.dim()
    }

    /// exp(logit_scale): the factor open_clip multiplies cosine similarities by.
    #[getter]
    fn logit_scale(&self) -> PyResult<f32> {
        let scale = || -> Result<f32> {
            Ok(self
                .model
                .logit_scale_param()
                .exp()?
                .to_dtype(DType::F32)?
                .to_scalar::<f32>()?)
        };
        Ok(scale()?)
    }

    /// Decode and preprocess image files: float32 `(N, 3, S, S)`.
    fn preprocess_paths<'py>(
        &self,
        py: Python<'py>,
        paths: Vec<PathBuf>,
    ) -> PyResult<Bound<'py, PyArray4<f32>>> {
        for path in &paths {
            if !path.is_file() {
                return Err(Error::new(
                    Kind::NotFound,
                    format!("{}: no such image file", path.display()),
                )
                .into());
            }
        }
        let flat = without_gil(py, || {
            let mut flat = Vec::new();
            for path in &paths {
                flat.extend(coca_image::preprocess_path(path, &self.pre)?);
            }
            Ok(flat)
        })?;
        self.batch(py, flat, paths.len())
    }

    /// Decode and preprocess encoded images (PNG, JPEG, ... bytes); `names` label errors.
    fn preprocess_bytes<'py>(
        &self,
        py: Python<'py>,
        images: Vec<Vec<u8>>,
        names: Vec<String>,
    ) -> PyResult<Bound<'py, PyArray4<f32>>> {
        let flat = without_gil(py, || {
            let mut flat = Vec::new();
            for (bytes, name) in images.iter().zip(&names) {
                let img = DecodedImage::decode(bytes, name)?;
                flat.extend(coca_image::preprocess_decoded(&img, &self.pre));
            }
            Ok(flat)
        })?;
        self.batch(py, flat, images.len())
    }

    /// Preprocess uint8 `(H, W, 3)` RGB arrays.
    fn preprocess_rgb<'py>(
        &self,
        py: Python<'py>,
        images: Vec<PyReadonlyArray3<'py, u8>>,
    ) -> PyResult<Bound<'py, PyArray4<f32>>> {
        let decoded = images
            .iter()
            .enumerate()
            .map(|(i, a)| rgb_image(a, i))
            .collect::<Result<Vec<_>>>()?;
        let flat = without_gil(py, || {
            let mut flat = Vec::new();
            for img in &decoded {
                flat.extend(coca_image::preprocess_decoded(img, &self.pre));
            }
            Ok(flat)
        })?;
        self.batch(py, flat, decoded.len())
    }

    /// Image embeddings `(N, embed_dim)` of a preprocessed float32 `(N, 3, S, S)` batch.
    #[pyo3(signature = (pixels, normalize=true, batch_size=32))]
    fn encode_pixels<'py>(
        &self,
        py: Python<'py>,
        pixels: PyReadonlyArray4<'py, f32>,
        normalize: bool,
        batch_size: usize,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        if batch_size == 0 {
            return Err(Error::value("batch_size must be at least 1").into());
        }
        let n = pixels.shape()[0];
        let tensor = self.pixels_tensor(&pixels)?;
        let flat = self.embed_pixels(py, &tensor, normalize, batch_size)?;
        matrix(py, flat, n)
    }

    /// Text embeddings `(N, embed_dim)` of texts, tokenized and checked as `coca embed --text` does.
    #[pyo3(signature = (texts, normalize=true, batch_size=32))]
    fn encode_texts<'py>(
        &self,
        py: Python<'py>,
        texts: Vec<String>,
        normalize: bool,
        batch_size: usize,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        if batch_size == 0 {
            return Err(Error::value("batch_size must be at least 1").into());
        }
        let ids = without_gil(py, || {
            Ok(coca_pipeline::tokenize_texts(
                &texts,
                &self.cfg,
                self.model.device(),
            )?)
        })?;
        let flat = self.embed_ids(py, &ids, normalize, batch_size)?;
        matrix(py, flat, texts.len())
    }

    /// Text embeddings `(N, embed_dim)` of token ids `(N, L)`, L at most the context length.
    #[pyo3(signature = (ids, normalize=true, batch_size=32))]
    fn encode_ids<'py>(
        &self,
        py: Python<'py>,
        ids: PyReadonlyArray2<'py, i64>,
        normalize: bool,
        batch_size: usize,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        if batch_size == 0 {
            return Err(Error::value("batch_size must be at least 1").into());
        }
        let n = ids.shape()[0];
        let tensor = self.ids_tensor(&ids)?;
        let flat = self.embed_ids(py, &tensor, normalize, batch_size)?;
        matrix(py, flat, n)
    }

    /// Captions of a preprocessed batch: a list of `(tokens, text, log_prob)`, one per image, `batch_size`
    /// images decoded together (as `coca caption --batch-size`, whose seeds per batch it shares). Keywords are
    /// open_clip's `generate` arguments.
    #[pyo3(signature = (pixels, batch_size=8, **kwargs))]
    fn generate_pixels<'py>(
        &self,
        py: Python<'py>,
        pixels: PyReadonlyArray4<'py, f32>,
        batch_size: usize,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Vec<(Vec<u32>, String, f32)>> {
        if batch_size == 0 {
            return Err(Error::value("batch_size must be at least 1").into());
        }
        let opts = generation_options(kwargs)?;
        let context = self
            .model
            .text()
            .context_length()
            .min(self.model.text_decoder().context_length());
        let cfg = opts
            .config(
                self.model.text().vocab_size(),
                context,
                &self.tokenizer,
                OptionNames::Keywords,
            )
            .map_err(Error::from)?;
        let tensor = self.pixels_tensor(&pixels)?;
        let n = pixels.shape()[0];
        let mut out = Vec::with_capacity(n);
        for start in (0..n).step_by(batch_size) {
            let len = batch_size.min(n - start);
            let chunk = tensor.narrow(0, start, len).map_err(Error::from)?;
            let (model, batch_cfg) = (Arc::clone(&self.model), cfg.for_batch(start));
            // Decoding asks the stop flag at every step, so Ctrl-C ends even one long beam search.
            let captions = interruptible(py, move |stop| {
                let encoding = model.encode_image(&chunk)?;
                Ok(coca_generate::generate_from_tokens_until(
                    &model,
                    &encoding.tokens,
                    &batch_cfg,
                    &|| stop.load(Ordering::Relaxed),
                )?)
            })?;
            out.extend(captions.into_iter().map(|c| {
                let text = c.text(&self.tokenizer);
                (c.tokens, text, c.log_prob)
            }));
            check_signals(py)?;
        }
        Ok(out)
    }

    /// open_clip's `build_zero_shot_classifier`: `(classes, embed_dim)` class embeddings, each the normalised
    /// mean of its normalised prompt embeddings (templates with `{c}` for the class name).
    #[pyo3(signature = (classnames, templates, batch_size=coca_zeroshot::DEFAULT_PROMPT_BATCH))]
    fn zero_shot_classifier<'py>(
        &self,
        py: Python<'py>,
        classnames: Vec<String>,
        templates: Vec<String>,
        batch_size: usize,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        if batch_size == 0 {
            return Err(Error::value("batch_size must be at least 1").into());
        }
        let templates: Arc<[coca_zeroshot::Template]> = templates
            .iter()
            .map(|t| coca_zeroshot::Template::parse(t))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(Error::from)?
            .into();
        let n = classnames.len();
        // Built in slices of classes, each interruptible; the result does not depend on the slicing.
        let per_call = (batch_size / templates.len().max(1)).max(1);
        let mut flat = Vec::with_capacity(n * self.dim());
        if n == 0 {
            // The library's message for an empty list.
            without_gil(py, || {
                coca_zeroshot::build_classifier(&self.model, &classnames, &templates, batch_size)?;
                Ok(())
            })?;
        }
        for chunk in classnames.chunks(per_call) {
            let (chunk, model, templates) = (
                chunk.to_vec(),
                Arc::clone(&self.model),
                Arc::clone(&templates),
            );
            let part = interruptible(py, move |_| {
                let w = coca_zeroshot::build_classifier(&model, &chunk, &templates, batch_size)?;
                flat_f32(&w.t()?.contiguous()?)
            })?;
            flat.extend(part);
            check_signals(py)?;
        }
        matrix(py, flat, n)
    }
}
