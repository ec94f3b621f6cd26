//! Incremental decoding with key/value caches.
//!
//! A [`DecodeSession`] holds, for a batch of rows (each row one caption being written for one image):
//! - per layer of the unimodal text tower and per self-attention layer of the multimodal decoder, the keys and
//!   values of every position decoded so far (rows, heads, positions, head_dim);
//! - per cross-attention layer, the image keys and values, computed once per *image* (images, heads, n, head_dim).
//!
//! Rows are grouped by image, `rows_per_image` consecutive rows each (1 for greedy/sampling, the beams of a
//! group for beam search). Cross-attention for the rows of one image is one attention call with those rows'
//! queries stacked, so the image keys/values are never copied per beam.
//!
//! Why the cached states equal open_clip's full recomputation: the text tower is causal and its CLS sits after
//! every text position, so a position's state depends only on the tokens up to it; the decoder's self-attention
//! is causal and its cross-attention is per position. The one non-causal detail is open_clip's legacy CLS/pad
//! mask: key `k ≥ 1` is hidden from every query when token `k − 1` is the pad id. Id 0 is also the BPE token `!`,
//! so a prompt or a beam may contain it; the session keeps each row's tokens and applies the same masking.

use candle_core::{DType, Device, Tensor};
use coca_model::nn::attention::KeyValue;
use coca_model::nn::ResidualAttentionBlock;
use coca_model::Coca;

use crate::error::{GenerateError, Result};

/// Keys and values of one self-attention layer for the positions decoded so far.
#[derive(Debug, Clone)]
struct LayerCache(Option<KeyValue>);

impl LayerCache {
    /// Append the new positions' keys/values and return the full set.
    fn extend(&mut self, new: KeyValue) -> Result<KeyValue> {
        let kv = match self.0.take() {
            None => new,
            Some(old) => KeyValue {
                k: Tensor::cat(&[&old.k, &new.k], 2)?,
                v: Tensor::cat(&[&old.v, &new.v], 2)?,
            },
        };
        self.0 = Some(kv.clone());
        Ok(kv)
    }

    fn select(&mut self, rows: &Tensor) -> Result<()> {
        if let Some(kv) = &self.0 {
            self.0 = Some(KeyValue {
                k: kv.k.index_select(rows, 0)?,
                v: kv.v.index_select(rows, 0)?,
            });
        }
        Ok(())
    }
}

/// A batch of captions being decoded one position at a time.
#[derive(Debug)]
pub struct DecodeSession<'m> {
    model: &'m Coca,
    rows_per_image: usize,
    text_cache: Vec<LayerCache>,
    self_cache: Vec<LayerCache>,
    cross: Vec<KeyValue>,
    history: Vec<Vec<u32>>,
    pad_id: u32,
    len: usize,
    max_len: usize,
}

fn index_tensor(idx: &[usize], device: &Device) -> Result<Tensor> {
    let idx: Vec<u32> = idx.iter().map(|&i| i as u32).collect();
    Ok(Tensor::from_vec(idx.clone(), idx.len(), device)?)
}

impl<'m> DecodeSession<'m> {
    /// Start a session for the caption context `image_tokens` (images, n, width) — [`coca_model::ImageEncoding`]'s
    /// `tokens` — with `rows_per_image` rows per image. The cross-attention keys/values are computed here, once.
    pub fn new(model: &'m Coca, image_tokens: &Tensor, rows_per_image: usize) -> Result<Self> {
        let dec = model.text_decoder();
        let width = model.text().token_embedding().dim(1)?;
        let (_, _, w) = image_tokens.dims3().map_err(|_| {
            GenerateError::Input(format!(
                "image tokens must be (images, n, width), got shape {:?}",
                image_tokens.dims()
            ))
        })?;
        if w != width {
            return Err(GenerateError::Input(format!(
                "image tokens have width {w}, the decoder expects {width}"
            )));
        }
        if rows_per_image == 0 {
            return Err(GenerateError::Input(
                "rows_per_image must be at least 1".into(),
            ));
        }
        let image_tokens = image_tokens.to_dtype(model.dtype())?;
        let cross = dec
            .layers()
            .map(|(_, cross_block)| {
                let ctx = match cross_block.ln_1_kv() {
                    Some(ln) => ln.forward(&image_tokens)?,
                    None => image_tokens.clone(),
                };
                cross_block.attn().project_kv(&ctx)
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        let n_text = model.text().transformer().blocks().len();
        let n_dec = cross.len();
        Ok(Self {
            model,
            rows_per_image,
            text_cache: vec![LayerCache(None); n_text],
            self_cache: vec![LayerCache(None); n_dec],
            cross,
            history: Vec::new(),
            pad_id: model.text().pad_id(),
            len: 0,
            max_len: model.text().context_length().min(dec.context_length()),
        })
    }

    /// Number of positions decoded so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// `true` before the first [`DecodeSession::extend`].
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of images whose rows are in the batch.
    pub fn images(&self) -> usize {
        self.cross.first().map_or(0, |kv| kv.k.dim(0).unwrap_or(0))
    }

    /// Number of rows in the batch (`images() × rows_per_image`).
    pub fn rows(&self) -> usize {
        self.images() * self.rows_per_image
    }

    /// The tokens of every row so far.
    pub fn history(&self) -> &[Vec<u32>] {
        &self.history
    }

    /// Keep only rows `rows` (in that order) and images `images` (in that order). Row `i` of the result must belong
    /// to image `i / rows_per_image` of the result. Used when captions finish (their rows leave the batch) and to
    /// reorder beams.
    pub fn select(&mut self, rows: &[usize], images: &[usize]) -> Result<()> {
        if rows.len() != images.len() * self.rows_per_image {
            return Err(GenerateError::Input(format!(
                "selected {} rows for {} images of {} rows each",
                rows.len(),
                images.len(),
                self.rows_per_image
            )));
        }
        let device = self.model.device();
        if images.len() != self.images() || images.iter().enumerate().any(|(i, &j)| i != j) {
            let idx = index_tensor(images, device)?;
            for kv in &mut self.cross {
                *kv = KeyValue {
                    k: kv.k.index_select(&idx, 0)?,
                    v: kv.v.index_select(&idx, 0)?,
                };
            }
        }
        if rows.iter().enumerate().all(|(i, &j)| i == j) && rows.len() == self.history.len() {
            return Ok(());
        }
        let idx = index_tensor(rows, device)?;
        for cache in self.text_cache.iter_mut().chain(self.self_cache.iter_mut()) {
            cache.select(&idx)?;
        }
        self.history = rows.iter().map(|&r| self.history[r].clone()).collect();
        Ok(())
    }

    /// Feed `tokens` (one slice per row, all of the same length ≥ 1) at the next positions and return the
    /// logits that predict the token after the last of them: (rows, vocab), f32.
    pub fn extend(&mut self, tokens: &[Vec<u32>]) -> Result<Tensor> {
        let rows = self.rows();
        let n = tokens.first().map_or(0, Vec::len);
        if tokens.len() != rows || n == 0 || tokens.iter().any(|t| t.len() != n) {
            return Err(GenerateError::Input(format!(
                "expected {rows} rows of equally many (≥ 1) new tokens"
            )));
        }
        if self.len + n > self.max_len {
            return Err(GenerateError::Input(format!(
                "a sequence of {} tokens exceeds the model's context length {}",
                self.len + n,
                self.max_len
            )));
        }
        if self.history.is_empty() {
            self.history = vec![Vec::new(); rows];
        }
        for (h, t) in self.history.iter_mut().zip(tokens) {
            h.extend_from_slice(t);
        }
        let model = self.model;
        let device = model.device();
        let dtype = model.dtype();
        let text = model.text();
        let width = text.token_embedding().dim(1)?;
        let flat: Vec<u32> = tokens.iter().flatten().copied().collect();
        let ids = Tensor::from_vec(flat, rows * n, device)?;
        let x = text
            .token_embedding()
            .index_select(&ids, 0)?
            .reshape((rows, n, width))?;
        let mut x = x.broadcast_add(&text.positional_embedding().narrow(0, self.len, n)?)?;

        let text_mask = self.text_mask(n, device, dtype)?;
        for (block, cache) in text.transformer().blocks().iter().zip(&mut self.text_cache) {
            x = cached_self_attention(block, cache, &x, text_mask.as_ref())?;
        }
        let causal = causal_mask(self.len, n, device, dtype)?;
        let dec = model.text_decoder();
        for (((self_block, cross_block), cache), cross) in
            dec.layers().zip(&mut self.self_cache).zip(&self.cross)
        {
            x = cached_self_attention(self_block, cache, &x, causal.as_ref())?;
            x = grouped_cross_attention(cross_block, cross, &x, self.rows_per_image)?;
        }
        self.len += n;
        let last = x.narrow(1, n - 1, 1)?.squeeze(1)?;
        Ok(dec.logits(&last)?.to_dtype(DType::F32)?)
    }

    /// The text tower's additive mask for queries at the `n` new positions over all keys so far, or `None` when
    /// it would be purely causal and there is a single query (the common step).
    fn text_mask(&self, n: usize, device: &Device, dtype: DType) -> Result<Option<Tensor>> {
        let total = self.len + n;
        let has_pad = self
            .history
            .iter()
            .any(|h| h[..total - 1].contains(&self.pad_id));
        if !has_pad {
            return causal_mask(self.len, n, device, dtype);
        }
        let rows = self.history.len();
        let mut data = vec![0f32; rows * n * total];
        for (r, h) in self.history.iter().enumerate() {
            for i in 0..n {
                let q = self.len + i;
                for k in 0..total {
                    if k > q || (k > 0 && h[k - 1] == self.pad_id) {
                        data[(r * n + i) * total + k] = f32::NEG_INFINITY;
                    }
                }
            }
        }
        Ok(Some(
            Tensor::from_vec(data, (rows, 1, n, total), device)?.to_dtype(dtype)?,
        ))
    }
}

/// The causal mask of `n` new queries after `past` cached positions, or `None` for a single query (it may see
/// everything).
fn causal_mask(past: usize, n: usize, device: &Device, dtype: DType) -> Result<Option<Tensor>> {
    if n == 1 {
        return Ok(None);
    }
    let total = past + n;
    let data: Vec<f32> = (0..n)
        .flat_map(|i| (0..total).map(move |k| if k > past + i { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    Ok(Some(
        Tensor::from_vec(data, (n, total), device)?.to_dtype(dtype)?,
    ))
}

/// A self-attention block on the new positions `x` (rows, n, width), attending to the cached positions too.
fn cached_self_attention(
    block: &ResidualAttentionBlock,
    cache: &mut LayerCache,
    x: &Tensor,
    mask: Option<&Tensor>,
) -> Result<Tensor> {
    let h = block.ln_1().forward(x)?;
    let (q, kv_new) = block.attn().project_qkv(&h)?;
    let kv = cache.extend(kv_new)?;
    let attn = block.attn().attend(&q, &kv, mask)?;
    Ok(block.mlp_residual(&(x + attn)?)?)
}

/// A cross-attention block: the rows of each image attend to that image's keys/values in one call.
fn grouped_cross_attention(
    block: &ResidualAttentionBlock,
    image_kv: &KeyValue,
    x: &Tensor,
    rows_per_image: usize,
) -> Result<Tensor> {
    let (rows, n, width) = x.dims3()?;
    let images = rows / rows_per_image;
    let h = block.ln_1().forward(x)?;
    // (rows, n, width) → (images, rows_per_image·n, width): the queries of one image's rows side by side.
    let h = h.reshape((images, rows_per_image * n, width))?;
    let q = block.attn().project_query(&h)?;
    let attn = block.attn().attend(&q, image_kv, None)?;
    let attn = attn.reshape((rows, n, width))?;
    Ok(block.mlp_residual(&(x + attn)?)?)
}
