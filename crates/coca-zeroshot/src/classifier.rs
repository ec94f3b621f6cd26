//! Building the zero-shot classifier (open_clip's prompt ensemble) and classifying image embeddings with it.

use candle_core::{DType, Device, Tensor};
use coca_model::Coca;
use coca_text::Tokenizer;

use crate::error::{Result, ZeroShotError};
use crate::template::Template;

/// The fixed multiplier of the cosine similarities before the softmax: open_clip's zero-shot evaluation
/// (`open_clip_train/zero_shot.py`) and CLIP_benchmark both compute `logits = 100 · image @ classifier`,
/// whatever the model's learned `logit_scale`.
pub const LOGIT_MULTIPLIER: f32 = 100.0;

/// Default number of prompts per text-encoder forward pass.
pub const DEFAULT_PROMPT_BATCH: usize = 128;

/// One ranked class of one image.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Prediction {
    /// Index of the class in the class list (a column of the classifier).
    pub index: usize,
    /// Softmax over all classes of `LOGIT_MULTIPLIER · cosine similarity`.
    pub probability: f32,
    /// Cosine similarity between the image and the class embedding.
    pub similarity: f32,
}

/// open_clip's `build_zero_shot_classifier` without a progress report; see [`build_classifier_with_progress`].
pub fn build_classifier(
    model: &Coca,
    classnames: &[String],
    templates: &[Template],
    prompt_batch: usize,
) -> Result<Tensor> {
    build_classifier_with_progress(model, classnames, templates, prompt_batch, &mut |_| {})
}

/// The zero-shot classifier, `(embed_dim, classes)` in f32 on the model's device, computed as open_clip's
/// `build_zero_shot_classifier` does: every template is filled with each class name (templates in the inner
/// loop), tokenized with the CLIP tokenizer at the model's context length, embedded and L2-normalised by the
/// text tower; the embeddings of one class are averaged over its templates and the mean is L2-normalised
/// again. Column `i` belongs to `classnames[i]`.
///
/// Prompts go through the text tower `prompt_batch` at a time, regardless of class boundaries (the result does
/// not depend on the batching); `progress` is called after each batch with the number of prompts done so far
/// (out of `classnames.len() · templates.len()`). The average is accumulated in f64.
///
/// # Errors
///
/// Empty class or template lists, a zero batch size, a prompt with ids beyond the model's vocabulary, or a
/// failing text tower.
pub fn build_classifier_with_progress(
    model: &Coca,
    classnames: &[String],
    templates: &[Template],
    prompt_batch: usize,
    progress: &mut dyn FnMut(usize),
) -> Result<Tensor> {
    if classnames.is_empty() {
        return Err(ZeroShotError::Input(
            "no class names to classify into".into(),
        ));
    }
    if templates.is_empty() {
        return Err(ZeroShotError::Input("no prompt templates".into()));
    }
    if prompt_batch == 0 {
        return Err(ZeroShotError::Input(
            "the prompt batch size must be at least 1".into(),
        ));
    }
    let tokenizer = Tokenizer::new()?;
    let text_cfg = &model.config().text_cfg;
    let context = text_cfg.context_length;
    let vocab = text_cfg.vocab_size;
    let device = model.device();
    let dim = model.config().embed_dim;
    let n_templates = templates.len();
    let total = classnames.len() * n_templates;

    // sums[class * dim + j]: running sum of the class's normalised prompt embeddings.
    let mut sums = vec![0f64; classnames.len() * dim];
    let mut done = 0;
    while done < total {
        let end = (done + prompt_batch).min(total);
        let mut ids = Vec::with_capacity((end - done) * context);
        for p in done..end {
            let prompt = templates[p % n_templates].fill(&classnames[p / n_templates]);
            let tokens = tokenizer.tokenize(&prompt, context);
            if tokens.truncated {
                tracing::debug!(
                    "prompt {prompt:?} truncated to {context} tokens, as open_clip does"
                );
            }
            if let Some(&id) = tokens.ids.iter().find(|&&id| id as usize >= vocab) {
                return Err(ZeroShotError::Vocabulary { prompt, id, vocab });
            }
            ids.extend_from_slice(&tokens.ids);
        }
        let ids = Tensor::from_vec(ids, (end - done, context), device)?;
        let embeddings = model
            .encode_text(&ids)?
            .embedding
            .to_dtype(DType::F32)?
            .to_vec2::<f32>()?;
        for (p, row) in (done..end).zip(&embeddings) {
            let class = p / n_templates;
            for (sum, &x) in sums[class * dim..(class + 1) * dim].iter_mut().zip(row) {
                *sum += f64::from(x);
            }
        }
        done = end;
        progress(done);
    }

    let mut weights = vec![0f32; dim * classnames.len()];
    for (class, sum) in sums.chunks(dim).enumerate() {
        let mean: Vec<f64> = sum.iter().map(|s| s / n_templates as f64).collect();
        let norm = mean.iter().map(|x| x * x).sum::<f64>().sqrt();
        if norm == 0.0 || !norm.is_finite() {
            return Err(ZeroShotError::Input(format!(
                "the prompt embeddings of class {:?} average to a zero or non-finite vector",
                classnames[class]
            )));
        }
        // Transposed layout: the classifier is (embed_dim, classes), as open_clip's.
        for (j, x) in mean.iter().enumerate() {
            weights[j * classnames.len() + class] = (x / norm) as f32;
        }
    }
    Ok(Tensor::from_vec(weights, (dim, classnames.len()), device)?)
}

/// Rank the classes for each image: cosine similarities `image_embeddings @ classifier` (both L2-normalised,
/// `(images, embed_dim)` and `(embed_dim, classes)`), probabilities `softmax(LOGIT_MULTIPLIER · similarity)`
/// over all classes, and the `top_k` most probable classes of each image, best first (ties by class index).
/// `top_k` larger than the number of classes returns every class.
pub fn classify(
    image_embeddings: &Tensor,
    classifier: &Tensor,
    top_k: usize,
) -> Result<Vec<Vec<Prediction>>> {
    let (_, dim) = image_embeddings.dims2().map_err(|_| {
        ZeroShotError::Input(format!(
            "image embeddings must be (images, embed_dim), got {:?}",
            image_embeddings.dims()
        ))
    })?;
    let (classifier_dim, _) = classifier.dims2().map_err(|_| {
        ZeroShotError::Input(format!(
            "the classifier must be (embed_dim, classes), got {:?}",
            classifier.dims()
        ))
    })?;
    if dim != classifier_dim {
        return Err(ZeroShotError::Input(format!(
            "image embeddings have dimension {dim} but the classifier was built for {classifier_dim}"
        )));
    }
    let images = image_embeddings.to_dtype(DType::F32)?;
    let classifier = classifier
        .to_dtype(DType::F32)?
        .to_device(images.device())?;
    let similarity = images
        .matmul(&classifier)?
        .to_device(&Device::Cpu)?
        .to_vec2::<f32>()?;
    Ok(similarity.iter().map(|row| rank(row, top_k)).collect())
}

/// Softmax of `LOGIT_MULTIPLIER · similarity` (in f64, shifted by the maximum) and the `top_k` best classes.
fn rank(similarity: &[f32], top_k: usize) -> Vec<Prediction> {
    let logits: Vec<f64> = similarity
        .iter()
        .map(|&s| f64::from(LOGIT_MULTIPLIER * s))
        .collect();
    let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let exps: Vec<f64> = logits.iter().map(|l| (l - max).exp()).collect();
    let total: f64 = exps.iter().sum();
    let mut order: Vec<usize> = (0..similarity.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
    order
        .into_iter()
        .take(top_k)
        .map(|index| Prediction {
            index,
            probability: (exps[index] / total) as f32,
            similarity: similarity[index],
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_by_similarity_with_softmax_at_100() {
        let images = Tensor::new(&[[1f32, 0.0], [0.0, 1.0]], &Device::Cpu).unwrap();
        // Three classes: columns (1,0), (0.6,0.8), (0,1).
        let classifier = Tensor::new(&[[1f32, 0.6, 0.0], [0.0, 0.8, 1.0]], &Device::Cpu).unwrap();
        let out = classify(&images, &classifier, 2).unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(
            out[0].iter().map(|p| p.index).collect::<Vec<_>>(),
            vec![0, 1]
        );
        assert_eq!(
            out[1].iter().map(|p| p.index).collect::<Vec<_>>(),
            vec![2, 1]
        );
        // softmax(100 * [1, 0.6, 0]) at class 0, computed by hand.
        let expected = 1.0 / (1.0 + (-40f64).exp() + (-100f64).exp());
        assert!((f64::from(out[0][0].probability) - expected).abs() < 1e-7);
        assert!((out[1][1].similarity - 0.8).abs() < 1e-7);
    }

    #[test]
    fn top_k_beyond_the_class_count_returns_all_and_probabilities_sum_to_one() {
        let images = Tensor::new(&[[0.6f32, 0.8]], &Device::Cpu).unwrap();
        let classifier = Tensor::new(&[[1f32, 0.0], [0.0, 1.0]], &Device::Cpu).unwrap();
        let out = classify(&images, &classifier, 10).unwrap();
        assert_eq!(out[0].len(), 2);
        let sum: f32 = out[0].iter().map(|p| p.probability).sum();
        assert!((sum - 1.0).abs() < 1e-6);
        assert_eq!(out[0][0].index, 1);
    }

    #[test]
    fn ties_keep_class_order() {
        let images = Tensor::new(&[[1f32, 0.0]], &Device::Cpu).unwrap();
        let classifier = Tensor::new(&[[0.5f32, 0.5, 0.5], [0.0, 0.0, 0.0]], &Device::Cpu).unwrap();
        let out = classify(&images, &classifier, 3).unwrap();
        assert_eq!(
            out[0].iter().map(|p| p.index).collect::<Vec<_>>(),
            vec![0, 1, 2]
        );
    }

    #[test]
    fn refuses_mismatched_dimensions() {
        let images = Tensor::zeros((1, 3), DType::F32, &Device::Cpu).unwrap();
        let classifier = Tensor::zeros((2, 5), DType::F32, &Device::Cpu).unwrap();
        let err = classify(&images, &classifier, 1).unwrap_err().to_string();
        assert!(
            err.contains("dimension 3") && err.contains("built for 2"),
            "{err}"
        );
    }
}
