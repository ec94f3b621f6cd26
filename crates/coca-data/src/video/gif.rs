//! Animated GIFs: frame sizes from the `gif` crate (no pixels decoded), frames composited by the `image`
//! crate's decoder.

use std::io::BufReader;
use std::path::Path;

use coca_image::image::codecs::gif::GifDecoder;
use coca_image::image::{buffer::ConvertBuffer, AnimationDecoder, ImageDecoder, RgbImage};
use coca_image::{DecodeLimits, DecodedImage};

use super::{sample_indices, VideoError};

fn open(path: &Path) -> Result<BufReader<std::fs::File>, VideoError> {
    std::fs::File::open(path)
        .map(BufReader::new)
        .map_err(|source| VideoError::Io {
            path: path.to_path_buf(),
            source,
        })
}

fn bad(path: &Path, detail: impl ToString) -> VideoError {
    VideoError::Decode {
        path: path.to_path_buf(),
        detail: detail.to_string(),
    }
}

/// A width and height as a GIF header states them.
type Size = (u16, u16);

/// The logical screen size and every frame's size, read from the headers without decoding any pixels.
fn sizes(path: &Path) -> Result<(Size, Vec<Size>), VideoError> {
    let mut options = gif::DecodeOptions::new();
    options.skip_frame_decoding(true);
    let mut decoder = options.read_info(open(path)?).map_err(|e| bad(path, e))?;
    let screen = (decoder.width(), decoder.height());
    let mut frames = Vec::new();
    while let Some(frame) = decoder.next_frame_info().map_err(|e| bad(path, e))? {
        frames.push((frame.width, frame.height));
    }
    Ok((screen, frames))
}

/// The sampled frames (`indices`, ascending) of the GIF at `path`, composited onto the previous ones as the
/// format prescribes, as RGB (alpha dropped, as PIL's `convert("RGB")` does). The screen and every frame are
/// checked against `limits` before any pixel is decoded, and only the sampled frames are kept.
fn decode_sampled(
    path: &Path,
    n: usize,
    limits: &DecodeLimits,
) -> Result<Vec<RgbImage>, VideoError> {
    let name = path.display().to_string();
    let ((w, h), frame_sizes) = sizes(path)?;
    limits.check(&name, w.into(), h.into())?;
    for &(fw, fh) in &frame_sizes {
        limits.check(&name, fw.into(), fh.into())?;
    }
    if frame_sizes.is_empty() {
        return Err(bad(path, "the GIF has no frames"));
    }
    let indices = sample_indices(frame_sizes.len(), n);
    let mut decoder = GifDecoder::new(open(path)?).map_err(|e| bad(path, e))?;
    decoder
        .set_limits(limits.image_crate_limits())
        .map_err(|e| bad(path, e))?;
    let last = indices.iter().copied().max().unwrap_or(0);
    let mut kept: Vec<(usize, RgbImage)> = Vec::new();
    for (i, frame) in decoder.into_frames().enumerate().take(last + 1) {
        let frame = frame.map_err(|e| bad(path, e))?;
        if indices.contains(&i) {
            kept.push((i, frame.into_buffer().convert()));
        }
    }
    indices
        .iter()
        .map(|i| {
            kept.iter()
                .find(|(k, _)| k == i)
                .map(|(_, img)| img.clone())
                .ok_or_else(|| bad(path, format!("frame {i} could not be decoded")))
        })
        .collect()
}

/// Whether the GIF at `path` has more than one frame (read from the headers; no pixels are decoded).
pub fn is_animated(path: &Path) -> Result<bool, VideoError> {
    Ok(sizes(path)?.1.len() > 1)
}

/// `n` sampled frames of the GIF, within `limits`. GIF frames depend on the ones before, so all frames up to
/// the last sampled one are decoded, but only the sampled ones are kept.
pub(crate) fn read(
    path: &Path,
    n: usize,
    limits: &DecodeLimits,
) -> Result<Vec<DecodedImage>, VideoError> {
    Ok(decode_sampled(path, n, limits)?
        .into_iter()
        .map(DecodedImage::from_rgb)
        .collect())
}
