//! A folder of frame images, in file-name order.

use std::path::{Path, PathBuf};

use coca_image::{DecodeLimits, DecodedImage};

use super::{sample_indices, VideoError};
use crate::is_image_path;

/// The frame files of a frame folder: the image files directly inside `dir`, sorted by file name.
pub fn frame_files(dir: &Path) -> Result<Vec<PathBuf>, VideoError> {
    let io = |source| VideoError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.is_file() && is_image_path(&path) {
            files.push(path);
        }
    }
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    Ok(files)
}

/// `n` sampled frames of the folder; only the sampled files are decoded, each within `limits`.
pub(crate) fn read(
    dir: &Path,
    n: usize,
    limits: &DecodeLimits,
) -> Result<Vec<DecodedImage>, VideoError> {
    let files = frame_files(dir)?;
    if files.is_empty() {
        return Err(VideoError::NoFrames {
            path: dir.to_path_buf(),
        });
    }
    let mut frames: Vec<DecodedImage> = Vec::with_capacity(n);
    let mut last: Option<(usize, DecodedImage)> = None;
    for index in sample_indices(files.len(), n) {
        // Indices ascend, so a repeated frame is always the previous one: decode each file once.
        let frame = match &last {
            Some((i, img)) if *i == index => img.clone(),
            _ => DecodedImage::open_limited(&files[index], limits)?,
        };
        last = Some((index, frame.clone()));
        frames.push(frame);
    }
    Ok(frames)
}
