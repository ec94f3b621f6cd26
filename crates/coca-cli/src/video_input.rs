//! Videos as model input: sampled frames, preprocessed like images, encoded by the shared image encoder.

use std::path::Path;

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};
use coca_image::PreprocessConfig;
use coca_model::nn::ops::l2_normalize;
use coca_model::Coca;

/// The `n` sampled frames of a video (frame folder, GIF, or video file with the `ffmpeg` feature),
/// preprocessed: an (n, 3, S, S) tensor.
pub fn load_video(
    path: &Path,
    frames: usize,
    pre: &PreprocessConfig,
    device: &Device,
) -> Result<Tensor> {
    let decoded = coca_data::video::read_frames_limited(path, frames, &pre.limits)?;
    let size = pre.image_size as usize;
    let mut data = Vec::with_capacity(decoded.len() * 3 * size * size);
    for frame in &decoded {
        data.extend_from_slice(&coca_image::preprocess_decoded(frame, pre));
    }
    Ok(Tensor::from_vec(
        data,
        (decoded.len(), 3, size, size),
        device,
    )?)
}

/// A video's embedding: the mean of its frames' (normalised) image embeddings, L2-normalised again — the
/// usual video CLIP recipe for video↔text retrieval. Returns (embed_dim,) f32 values.
pub fn embed_video(
    model: &Coca,
    path: &Path,
    frames: usize,
    pre: &PreprocessConfig,
) -> Result<Vec<f32>> {
    let pixels = load_video(path, frames, pre, model.device())?;
    let per_frame = model
        .encode_image(&pixels)
        .with_context(|| format!("{}: encoding its frames", path.display()))?
        .embedding;
    mean_embedding(&per_frame)
}

/// Mean over the rows of (frames, dim) embeddings, L2-normalised: (dim,) f32 values.
pub fn mean_embedding(per_frame: &Tensor) -> Result<Vec<f32>> {
    let mean = per_frame.to_dtype(DType::F32)?.mean_keepdim(0)?;
    Ok(l2_normalize(&mean)?.flatten_all()?.to_vec1::<f32>()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_embedding_is_the_normalised_mean() {
        let rows = Tensor::new(&[[1f32, 0.0], [0.0, 1.0]], &Device::Cpu).unwrap();
        let v = mean_embedding(&rows).unwrap();
        let s = 0.5f32.sqrt();
        assert!((v[0] - s).abs() < 1e-6 && (v[1] - s).abs() < 1e-6, "{v:?}");
    }
}
