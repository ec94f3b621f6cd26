//! Incremental decoding with key/value caches.
//!
//! A [`DecodeSession`] drives the model's [`DecodeCache`] for a batch of rows (each row one caption being
//! written for one image, `rows_per_image` consecutive rows per image): it creates the cache (the image keys and
//! values, once per image), steps it ([`coca_model::Coca::forward_cached`]) and reorders it as rows finish or
//! beams move. What is cached and why the cached logits equal open_clip's full recomputation is
//! [`coca_model::decode`]'s business.

use candle_core::{DType, Tensor};
use coca_model::{Coca, DecodeCache};

use crate::error::Result;

/// A batch of captions being decoded one position at a time.
#[derive(Debug)]
pub struct DecodeSession<'m> {
    model: &'m Coca,
    cache: DecodeCache,
}

impl<'m> DecodeSession<'m> {
    /// Start a session for the caption context `image_tokens` (images, n, width) — [`coca_model::ImageEncoding`]'s
    /// `tokens` — with `rows_per_image` rows per image. The cross-attention keys/values are computed here, once.
    pub fn new(model: &'m Coca, image_tokens: &Tensor, rows_per_image: usize) -> Result<Self> {
        Ok(Self {
            model,
            cache: model.decode_cache(image_tokens, rows_per_image)?,
        })
    }

    /// Number of positions decoded so far.
    pub fn len(&self) -> usize {
        self.cache.len()
    }

    /// `true` before the first [`DecodeSession::extend`].
    pub fn is_empty(&self) -> bool {
        self.cache.is_empty()
    }

    /// Number of images whose rows are in the batch.
    pub fn images(&self) -> usize {
        self.cache.images()
    }

    /// Number of rows in the batch (`images() × rows_per_image`).
    pub fn rows(&self) -> usize {
        self.cache.rows()
    }

    /// The tokens of every row so far.
    pub fn history(&self) -> &[Vec<u32>] {
        self.cache.history()
    }

    /// Keep only rows `rows` (in that order) and images `images` (in that order). Row `i` of the result must belong
    /// to image `i / rows_per_image` of the result. Used when captions finish (their rows leave the batch) and to
    /// reorder beams.
    pub fn select(&mut self, rows: &[usize], images: &[usize]) -> Result<()> {
        Ok(self.cache.select(rows, images)?)
    }

    /// Feed `tokens` (one slice per row, all of the same length ≥ 1) at the next positions and return the
    /// logits that predict the token after the last of them: (rows, vocab), f32.
    pub fn extend(&mut self, tokens: &[Vec<u32>]) -> Result<Tensor> {
        let logits = self.model.forward_cached(tokens, &mut self.cache)?;
        Ok(logits.to_dtype(DType::F32)?)
    }
}
