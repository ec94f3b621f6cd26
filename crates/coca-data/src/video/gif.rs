//! Animated GIFs through the `image` crate's decoder.

use std::io::BufReader;
use std::path::Path;

use coca_image::image::codecs::gif::GifDecoder;
use coca_image::image::{buffer::ConvertBuffer, AnimationDecoder, RgbImage};
use coca_image::DecodedImage;

use super::{sample_indices, VideoError};

/// Every frame of the GIF at `path`, composited onto the previous ones as the format prescribes, as RGB
/// (alpha dropped, as PIL's `convert("RGB")` does).
pub fn decode_all(path: &Path) -> Result<Vec<RgbImage>, VideoError> {
    let file = std::fs::File::open(path).map_err(|source| VideoError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let bad = |e: coca_image::image::ImageError| VideoError::Decode {
        path: path.to_path_buf(),
        detail: e.to_string(),
    };
    let decoder = GifDecoder::new(BufReader::new(file)).map_err(bad)?;
    let mut frames = Vec::new();
    for frame in decoder.into_frames() {
        let rgba = frame.map_err(bad)?.into_buffer();
        frames.push(rgba.convert());
    }
    if frames.is_empty() {
        return Err(VideoError::Decode {
            path: path.to_path_buf(),
            detail: "the GIF has no frames".into(),
        });
    }
    Ok(frames)
}

/// Whether the GIF at `path` has more than one frame (only the first two are decoded).
pub fn is_animated(path: &Path) -> Result<bool, VideoError> {
    let file = std::fs::File::open(path).map_err(|source| VideoError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let decoder = GifDecoder::new(BufReader::new(file)).map_err(|e| VideoError::Decode {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })?;
    Ok(decoder.into_frames().take(2).count() > 1)
}

/// `n` sampled frames of the GIF. GIF frames depend on the ones before, so all are decoded; GIFs are small.
pub(crate) fn read(path: &Path, n: usize) -> Result<Vec<DecodedImage>, VideoError> {
    let frames = decode_all(path)?;
    Ok(sample_indices(frames.len(), n)
        .into_iter()
        .map(|i| DecodedImage::from_rgb(frames[i].clone()))
        .collect())
}
