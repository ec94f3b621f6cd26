//! Incremental decoding: the model's forward for a caption written one position at a time, with the keys and
//! values of earlier positions cached.
//!
//! A [`DecodeCache`] holds, for a batch of rows (each row one caption being written for one image):
//! - per layer of the unimodal text tower and per self-attention layer of the multimodal decoder, the keys and
//!   values of every position decoded so far (rows, heads, positions, head_dim);
//! - per cross-attention layer, the image keys and values, computed once per *image* (images, heads, n, head_dim);
//! - every row's tokens so far, for the text tower's legacy mask.
//!
//! Rows are grouped by image, `rows_per_image` consecutive rows each (1 for greedy/sampling, the beams of a
//! group for beam search). Cross-attention for the rows of one image is one attention call with those rows'
//! queries stacked, so the image keys/values are never copied per beam.
//!
//! Why the cached states equal the full forward's: the text tower is causal and its CLS sits after every text
//! position, so a position's state depends only on the tokens up to it; the decoder's self-attention is causal
//! and its cross-attention is per position. The one non-causal detail is open_clip's legacy CLS/pad mask: key
//! `k ≥ 1` is hidden from every query when token `k − 1` is the pad id. Id 0 is also the BPE token `!`, so a
//! prompt or a beam may contain it; the cached forward applies the same mask ([`crate::text::legacy_cls_mask`],
//! the one builder of both paths).

use candle_core::{Device, Tensor};

use crate::coca::Coca;
use crate::error::{ModelError, Result};
use crate::nn::attention::KeyValue;
use crate::nn::LayerCache;

/// What a batch of captions being decoded has computed so far; created by [`Coca::decode_cache`], advanced by
/// [`Coca::forward_cached`], reordered by [`DecodeCache::select`].
#[derive(Debug, Clone)]
pub struct DecodeCache {
    rows_per_image: usize,
    images: usize,
    text: Vec<LayerCache>,
    decoder: Vec<LayerCache>,
    image_kv: Vec<KeyValue>,
    history: Vec<Vec<u32>>,
    len: usize,
    max_len: usize,
    device: Device,
}

fn index_tensor(idx: &[usize], device: &Device) -> Result<Tensor> {
    let idx: Vec<u32> = idx.iter().map(|&i| i as u32).collect();
    let n = idx.len();
    Ok(Tensor::from_vec(idx, n, device)?)
}

impl DecodeCache {
    /// Number of positions decoded so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// `true` before the first [`Coca::forward_cached`].
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The most positions a row can reach: the shorter context length of the text tower and the decoder.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Number of images whose rows are in the batch.
    pub fn images(&self) -> usize {
        self.images
    }

    /// Consecutive rows per image.
    pub fn rows_per_image(&self) -> usize {
        self.rows_per_image
    }

    /// Number of rows in the batch (`images() × rows_per_image()`).
    pub fn rows(&self) -> usize {
        self.images * self.rows_per_image
    }

    /// The tokens of every row so far.
    pub fn history(&self) -> &[Vec<u32>] {
        &self.history
    }

    /// Keep only rows `rows` (in that order) and images `images` (in that order). Row `i` of the result must belong
    /// to image `i / rows_per_image` of the result. Used when captions finish (their rows leave the batch) and to
    /// reorder beams.
    pub fn select(&mut self, rows: &[usize], images: &[usize]) -> Result<()> {
        let per = self.rows_per_image;
        if rows.len() != images.len() * per {
            return Err(ModelError::Input(format!(
                "selected {} rows for {} images of {per} rows each",
                rows.len(),
                images.len(),
            )));
        }
        if let Some(&i) = images.iter().find(|&&i| i >= self.images) {
            return Err(ModelError::Input(format!(
                "selected image {i} of a batch of {}",
                self.images
            )));
        }
        if let Some((i, &r)) = rows
            .iter()
            .enumerate()
            .find(|&(i, &r)| r / per != images[i / per])
        {
            return Err(ModelError::Input(format!(
                "selected row {r} (of image {}) as row {i}, which must be of image {}",
                r / per,
                images[i / per]
            )));
        }
        if images.len() != self.images || images.iter().enumerate().any(|(i, &j)| i != j) {
            let idx = index_tensor(images, &self.device)?;
            for kv in &mut self.image_kv {
                *kv = kv.index_select(&idx)?;
            }
            self.images = images.len();
        }
        if rows.iter().enumerate().all(|(i, &j)| i == j) && rows.len() == self.history.len() {
            return Ok(());
        }
        let idx = index_tensor(rows, &self.device)?;
        for cache in self.text.iter_mut().chain(self.decoder.iter_mut()) {
            cache.select(&idx)?;
        }
        self.history = rows.iter().map(|&r| self.history[r].clone()).collect();
        Ok(())
    }
}

impl Coca {
    /// Start decoding captions for the caption context `image_tokens` (images, n, width) —
    /// [`crate::ImageEncoding`]'s `tokens` — with `rows_per_image` rows per image. The cross-attention keys and
    /// values are computed here, once.
    pub fn decode_cache(
        &self,
        image_tokens: &Tensor,
        rows_per_image: usize,
    ) -> Result<DecodeCache> {
        let width = self.text().width();
        let (images, _, w) = image_tokens.dims3().map_err(|_| {
            ModelError::Input(format!(
                "image tokens must be (images, n, width), got shape {:?}",
                image_tokens.dims()
            ))
        })?;
        if w != width {
            return Err(ModelError::Input(format!(
                "image tokens have width {w}, the decoder expects {width}"
            )));
        }
        if rows_per_image == 0 {
            return Err(ModelError::Input(
                "rows_per_image must be at least 1".into(),
            ));
        }
        let image_tokens = image_tokens.to_dtype(self.dtype())?;
        let decoder = self.text_decoder();
        Ok(DecodeCache {
            rows_per_image,
            images,
            text: vec![LayerCache::default(); self.text().depth()],
            decoder: vec![LayerCache::default(); decoder.depth()],
            image_kv: decoder.image_key_values(&image_tokens)?,
            history: vec![Vec::new(); images * rows_per_image],
            len: 0,
            max_len: self.text().context_length().min(decoder.context_length()),
            device: self.device().clone(),
        })
    }

    /// Feed `tokens` (one slice per row of `cache`, all of the same length ≥ 1) at the next positions and return
    /// the logits that predict the token after the last of them: (rows, vocab), in the model's dtype. Equal to the
    /// teacher-forced logits of [`Coca::forward`] at those positions.
    pub fn forward_cached(&self, tokens: &[Vec<u32>], cache: &mut DecodeCache) -> Result<Tensor> {
        let device = self.device().clone();
        crate::nn::ops::on_kernel_threads(&device, || self.forward_cached_here(tokens, cache))
    }

    /// [`Coca::forward_cached`] on the calling thread.
    fn forward_cached_here(&self, tokens: &[Vec<u32>], cache: &mut DecodeCache) -> Result<Tensor> {
        let rows = cache.rows();
        let n = tokens.first().map_or(0, Vec::len);
        if tokens.len() != rows || n == 0 || tokens.iter().any(|t| t.len() != n) {
            return Err(ModelError::Input(format!(
                "expected {rows} rows of equally many (≥ 1) new tokens"
            )));
        }
        let past = cache.len;
        if past + n > cache.max_len {
            return Err(ModelError::Input(format!(
                "a sequence of {} tokens exceeds the model's context length {}",
                past + n,
                cache.max_len
            )));
        }
        let vocab = self.text().vocab_size();
        if let Some(&t) = tokens.iter().flatten().find(|&&t| t as usize >= vocab) {
            return Err(ModelError::Input(format!(
                "token id {t} is outside the vocabulary of {vocab}"
            )));
        }
        for (h, t) in cache.history.iter_mut().zip(tokens) {
            h.extend_from_slice(t);
        }
        let flat: Vec<u32> = tokens.iter().flatten().copied().collect();
        let ids = Tensor::from_vec(flat, rows * n, &cache.device)?;
        let x = self
            .text()
            .forward_cached(&ids, &cache.history, past, n, &mut cache.text)?;
        let decoder = self.text_decoder();
        let x = decoder.forward_cached(
            &x,
            past,
            &mut cache.decoder,
            &cache.image_kv,
            cache.rows_per_image,
        )?;
        cache.len += n;
        let last = x.narrow(1, n - 1, 1)?.squeeze(1)?;
        Ok(decoder.logits(&last)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{batch, tiny};

    /// The tiny model and the caption context of two images.
    fn model_and_image_tokens() -> (Coca, Tensor) {
        let model = tiny().model;
        let (images, _) = batch(2, 0);
        let tokens = model.encode_image(&images).unwrap().tokens;
        (model, tokens)
    }

    fn message<T: std::fmt::Debug>(r: Result<T>) -> String {
        match r.unwrap_err() {
            ModelError::Input(m) => m,
            other => panic!("not an input error: {other}"),
        }
    }

    #[test]
    fn decode_cache_refuses_image_tokens_that_do_not_fit() {
        let (model, tokens) = model_and_image_tokens();
        let bad = Tensor::zeros((2, 5), candle_core::DType::F32, &Device::Cpu).unwrap();
        assert!(message(model.decode_cache(&bad, 1))
            .contains("image tokens must be (images, n, width)"));
        let narrow = Tensor::zeros((2, 5, 7), candle_core::DType::F32, &Device::Cpu).unwrap();
        assert_eq!(
            message(model.decode_cache(&narrow, 1)),
            "image tokens have width 7, the decoder expects 32"
        );
        assert_eq!(
            message(model.decode_cache(&tokens, 0)),
            "rows_per_image must be at least 1"
        );
    }

    #[test]
    fn forward_cached_refuses_tokens_that_do_not_fit() {
        let (model, tokens) = model_and_image_tokens();
        let mut cache = model.decode_cache(&tokens, 2).unwrap();
        assert_eq!(cache.rows(), 4);
        let rows = |t: Vec<u32>| vec![t; 4];
        assert_eq!(
            message(model.forward_cached(&rows(vec![254])[..3], &mut cache)),
            "expected 4 rows of equally many (≥ 1) new tokens"
        );
        let mut ragged = rows(vec![254, 1]);
        ragged[2].pop();
        assert_eq!(
            message(model.forward_cached(&ragged, &mut cache)),
            "expected 4 rows of equally many (≥ 1) new tokens"
        );
        assert_eq!(
            message(model.forward_cached(&rows(vec![256]), &mut cache)),
            "token id 256 is outside the vocabulary of 256"
        );
        assert_eq!(
            message(model.forward_cached(&rows(vec![1; 77]), &mut cache)),
            "a sequence of 77 tokens exceeds the model's context length 76"
        );
        // Nothing was taken in by the refused calls.
        assert!(cache.is_empty() && cache.history().iter().all(Vec::is_empty));
        model
            .forward_cached(&rows(vec![254, 3]), &mut cache)
            .unwrap();
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn select_refuses_rows_and_images_that_are_not_in_the_batch() {
        let (model, tokens) = model_and_image_tokens();
        let mut cache = model.decode_cache(&tokens, 2).unwrap();
        assert_eq!(
            message(cache.select(&[0, 1, 2], &[0, 1])),
            "selected 3 rows for 2 images of 2 rows each"
        );
        assert_eq!(
            message(cache.select(&[0, 1], &[2])),
            "selected image 2 of a batch of 2"
        );
        assert_eq!(
            message(cache.select(&[2, 1], &[1])),
            "selected row 1 (of image 0) as row 1, which must be of image 1"
        );
        // Before any step, then after one: image 1's beams swapped, image 0 gone.
        cache.select(&[3, 2], &[1]).unwrap();
        model
            .forward_cached(&[vec![254], vec![7]], &mut cache)
            .unwrap();
        assert_eq!(cache.history(), &[vec![254], vec![7]]);
        cache.select(&[1, 1], &[0]).unwrap();
        assert_eq!(cache.history(), &[vec![7], vec![7]]);
        assert_eq!((cache.images(), cache.rows()), (1, 2));
    }
}
