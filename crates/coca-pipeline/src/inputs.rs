//! From user inputs (image paths, texts) to model-ready tensors, with errors that name the input.

use std::path::PathBuf;
use std::sync::OnceLock;

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use coca_image::{DecodeLimits, PreprocessConfig};
use coca_model::CocaConfig;
use coca_text::Tokenizer;

/// The decoding budget of this process (the CLI's `--max-image-pixels`), set once at start-up.
static DECODE_LIMITS: OnceLock<DecodeLimits> = OnceLock::new();

/// Sets the decoding budget every image this process reads is checked against (`--max-image-pixels`, a
/// global flag); the first call wins.
pub fn set_decode_limits(limits: DecodeLimits) {
    let _ = DECODE_LIMITS.set(limits);
}

/// The eval preprocessing open_clip uses for this config (OpenAI mean/std, bicubic, shortest-side resize),
/// with this process's decoding budget, which every image path then receives through it.
pub fn preprocess_config(cfg: &CocaConfig) -> Result<PreprocessConfig> {
    let (h, w) = cfg.vision_cfg.image_size.hw();
    if h != w {
        bail!("non-square image_size {h}x{w} is not supported by the preprocessing");
    }
    Ok(PreprocessConfig {
        image_size: h as u32,
        limits: DECODE_LIMITS.get().copied().unwrap_or_default(),
        ..PreprocessConfig::default()
    })
}

/// Decode and preprocess images into a (n, 3, S, S) tensor. The first unreadable image aborts with its path.
pub fn load_images(paths: &[PathBuf], cfg: &PreprocessConfig, device: &Device) -> Result<Tensor> {
    let size = cfg.image_size as usize;
    let mut data = Vec::with_capacity(paths.len() * 3 * size * size);
    for path in paths {
        let pixels = coca_image::preprocess_path(path, cfg)?;
        data.extend_from_slice(&pixels);
    }
    Ok(Tensor::from_vec(
        data,
        (paths.len(), 3, size, size),
        device,
    )?)
}

/// Tokenize texts for a model: empty texts are refused, overlong ones truncated as open_clip does (noted at
/// `-v`), and ids beyond the model's vocabulary rejected with an explanation.
pub fn tokenize_texts(texts: &[String], cfg: &CocaConfig, device: &Device) -> Result<Tensor> {
    let tokenizer = Tokenizer::new().context("loading the CLIP tokenizer")?;
    let context = cfg.text_cfg.context_length;
    let vocab = cfg.text_cfg.vocab_size as u32;
    let mut ids = Vec::with_capacity(texts.len() * context);
    for (i, text) in texts.iter().enumerate() {
        if text.trim().is_empty() {
            bail!("text #{} is empty; give some words to embed", i + 1);
        }
        let tok = tokenizer.tokenize(text, context);
        if tok.truncated {
            tracing::info!(
                "text #{} is {} tokens long; truncated to the context length {context} as open_clip does",
                i + 1,
                tok.n_tokens
            );
        }
        if let Some(bad) = tok.ids.iter().find(|&&id| id >= vocab) {
            bail!(
                "text #{}: token id {bad} is outside this model's vocabulary of {vocab}; the model was not trained \
                 with the CLIP tokenizer",
                i + 1
            );
        }
        ids.extend_from_slice(&tok.ids);
    }
    Ok(Tensor::from_vec(ids, (texts.len(), context), device)?)
}
