//! Validation during and after training: image↔text retrieval R@1, caption exact match and zero-shot
//! accuracy on a held-out set kept in memory.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use candle_core::{Device, Tensor, D};
use coca_generate::{generate, GenerationConfig};
use coca_model::{Coca, CocaConfig};
use coca_text::Tokenizer;
use coca_zeroshot::{build_classifier, classify, Template};

use super::data::token_ids;

/// Images per forward pass during validation.
const EVAL_BATCH: usize = 64;

/// Held-out captioned images, optionally with a labelled set for zero-shot classification.
pub struct ValSet {
    /// Preprocessed images `(n, 3, H, W)`.
    pub images: Tensor,
    /// Their captions.
    pub captions: Vec<String>,
    /// Names the images in caption samples (keys or paths).
    pub keys: Vec<String>,
    /// Zero-shot task: images, class index per image, class names and prompt templates.
    pub zeroshot: Option<ZeroShotSet>,
}

/// A labelled set for zero-shot classification.
pub struct ZeroShotSet {
    /// Preprocessed images `(n, 3, H, W)`.
    pub images: Tensor,
    /// The class of each image.
    pub labels: Vec<usize>,
    /// Class names, in label order.
    pub classnames: Vec<String>,
    /// Prompt templates with `{c}`.
    pub templates: Vec<Template>,
}

/// Validation results: metrics by name, and a few (key, generated, reference) caption samples.
pub struct Evaluation {
    /// `retrieval_i2t_r1`, `retrieval_t2i_r1`, `caption_exact_match`, `zeroshot_top1` (fractions in 0..1).
    pub metrics: BTreeMap<String, f64>,
    /// The first captions, for a look.
    pub samples: Vec<(String, String, String)>,
}

/// Normalise a caption for exact-match comparison: lower case, single spaces, no trailing period.
pub fn normalise_caption(text: &str) -> String {
    let lower = text.to_lowercase();
    let words: Vec<&str> = lower.split_whitespace().collect();
    words.join(" ").trim_end_matches('.').trim().to_string()
}

fn chunks(images: &Tensor) -> Result<Vec<Tensor>> {
    let n = images.dim(0)?;
    (0..n)
        .step_by(EVAL_BATCH)
        .map(|s| Ok(images.narrow(0, s, EVAL_BATCH.min(n - s))?))
        .collect()
}

fn image_embeddings(model: &Coca, images: &Tensor) -> Result<Tensor> {
    let parts = chunks(images)?
        .iter()
        .map(|c| Ok(model.encode_image(c)?.embedding))
        .collect::<Result<Vec<_>>>()?;
    Ok(Tensor::cat(&parts, 0)?)
}

/// Fraction of rows whose best match carries the same caption (identical captions count as the same text).
fn recall_at_1(
    similarity: &Tensor,
    row_captions: &[String],
    col_captions: &[String],
) -> Result<f64> {
    let best = similarity.argmax(D::Minus1)?.to_vec1::<u32>()?;
    let hits = best
        .iter()
        .enumerate()
        .filter(|(i, &j)| row_captions[*i] == col_captions[j as usize])
        .count();
    Ok(hits as f64 / best.len().max(1) as f64)
}

/// Greedy decoding for validation captions: up to the model's whole context (start and end tokens included,
/// as a reference caption is tokenized), the end token allowed at once.
pub fn caption_generation(cfg: &CocaConfig) -> GenerationConfig {
    let mut gen = GenerationConfig::greedy(cfg.text_cfg.vocab_size);
    gen.max_tokens = cfg.text_cfg.context_length.max(2);
    gen.min_tokens_before_eos = 0;
    gen
}

/// Evaluate `model` on `set`: retrieval both ways, greedy captions against the references, and zero-shot
/// top-1 when a labelled set is given.
pub fn evaluate(
    model: &Coca,
    cfg: &CocaConfig,
    set: &ValSet,
    tokenizer: &Tokenizer,
) -> Result<Evaluation> {
    let device: &Device = model.device();
    let context = cfg.text_cfg.context_length;
    let vocab = cfg.text_cfg.vocab_size as u32;
    let mut metrics = BTreeMap::new();

    let image_emb = image_embeddings(model, &set.images)?;
    let mut text_parts = Vec::new();
    for chunk in set.captions.chunks(EVAL_BATCH) {
        let ids = token_ids(tokenizer, chunk, context, vocab, device)?;
        text_parts.push(model.encode_text(&ids)?.embedding);
    }
    let text_emb = Tensor::cat(&text_parts, 0)?;
    let sim = image_emb.matmul(&text_emb.t()?)?;
    metrics.insert(
        "retrieval_i2t_r1".into(),
        recall_at_1(&sim, &set.captions, &set.captions)?,
    );
    metrics.insert(
        "retrieval_t2i_r1".into(),
        recall_at_1(&sim.t()?.contiguous()?, &set.captions, &set.captions)?,
    );

    let gen = caption_generation(cfg);
    let mut generated = Vec::with_capacity(set.captions.len());
    for chunk in chunks(&set.images)? {
        for caption in generate(model, &chunk, &gen).context("generating validation captions")? {
            generated.push(caption.text(tokenizer));
        }
    }
    let exact = generated
        .iter()
        .zip(&set.captions)
        .filter(|(g, r)| normalise_caption(g) == normalise_caption(r))
        .count();
    metrics.insert(
        "caption_exact_match".into(),
        exact as f64 / set.captions.len().max(1) as f64,
    );
    let samples = generated
        .iter()
        .zip(&set.captions)
        .zip(&set.keys)
        .take(8)
        .map(|((g, r), k)| (k.clone(), g.clone(), r.clone()))
        .collect();

    if let Some(zs) = &set.zeroshot {
        let classifier = build_classifier(model, &zs.classnames, &zs.templates, 128)?;
        let emb = image_embeddings(model, &zs.images)?;
        let ranked = classify(&emb, &classifier, 1)?;
        let hits = ranked
            .iter()
            .zip(&zs.labels)
            .filter(|(r, &l)| r.first().map(|p| p.index) == Some(l))
            .count();
        metrics.insert(
            "zeroshot_top1".into(),
            hits as f64 / zs.labels.len().max(1) as f64,
        );
    }
    Ok(Evaluation { metrics, samples })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captions_compare_without_case_spacing_or_period() {
        assert_eq!(
            normalise_caption(" A  small red circle. "),
            "a small red circle"
        );
        assert_ne!(
            normalise_caption("a small red circle"),
            normalise_caption("a large red circle")
        );
    }

    #[test]
    fn validation_captions_may_be_as_long_as_the_longest_reference() {
        // The demo's longest scene captions fill its whole context (start and end tokens included); a shorter
        // limit would cut every one of them and cap exact match far below what the model reaches.
        let cfg = CocaConfig::from_json_str(
            super::super::DEMO_MODEL_JSON,
            &coca_model::ConfigSource::Builtin("demo".into()),
        )
        .unwrap();
        let gen = caption_generation(&cfg);
        gen.validate(cfg.text_cfg.vocab_size, cfg.text_cfg.context_length)
            .unwrap();
        let tokenizer = Tokenizer::new().unwrap();
        let longest = coca_data::scenes::all_captions(&coca_data::scenes::SceneOptions::default())
            .iter()
            .map(|c| tokenizer.tokenize(c, 77).n_tokens)
            .max()
            .unwrap();
        assert_eq!(longest, cfg.text_cfg.context_length);
        assert!(longest <= gen.max_tokens, "{longest} > {}", gen.max_tokens);
    }

    #[test]
    fn recall_counts_identical_captions_as_hits() {
        let sim = Tensor::new(
            &[[0.1f32, 0.9, 0.0], [0.0, 0.2, 0.8], [0.7, 0.1, 0.2]],
            &Device::Cpu,
        )
        .unwrap();
        let caps: Vec<String> = ["a", "a", "b"].iter().map(|s| s.to_string()).collect();
        // Row 0 picks column 1 (same caption "a"): hit; row 1 picks column 2 ("b"): miss; row 2 picks column 0: miss.
        assert!((recall_at_1(&sim, &caps, &caps).unwrap() - 1.0 / 3.0).abs() < 1e-12);
    }
}
