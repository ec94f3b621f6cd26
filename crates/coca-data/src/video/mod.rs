//! Videos as sequences of frames, for video↔text retrieval and action recognition with an image model.
//!
//! A video is any of
//! - a **folder of frames**: every image file in it (see [`crate::IMAGE_EXTENSIONS`]), sorted by file name
//!   (so `frame_00001.png`, `frame_00002.png`, … as `ffmpeg -i clip.mp4 frame_%05d.png` writes them);
//! - an **animated GIF**: its frames composited as a browser shows them (the `image` crate's GIF decoder); a
//!   GIF of one frame is a video of one frame;
//! - a **video file** ([`VIDEO_EXTENSIONS`]: MP4, AVI, MKV, MOV, WebM, …), decoded by the `ffmpeg` program in
//!   builds with this crate's `ffmpeg` feature (see [`ffmpeg`]).
//!
//! [`read_frames`] returns `n` frames sampled as common video CLIP evaluations do ([`sample_indices`]: the
//! centre frame of each of `n` equal segments), ready for the image preprocessing.
//!
//! ```no_run
//! use coca_data::video::read_frames;
//! let frames = read_frames("clip.gif".as_ref(), 8)?;
//! assert_eq!(frames.len(), 8);
//! # Ok::<(), coca_data::video::VideoError>(())
//! ```

mod error;
pub mod ffmpeg;
mod frames_dir;
mod gif;
mod sampling;

use std::path::Path;

use coca_image::{DecodeLimits, DecodedImage};

pub use error::VideoError;
pub use frames_dir::frame_files;
pub use gif::is_animated as is_animated_gif;
pub use sampling::sample_indices;

/// File extensions read as video files through FFmpeg (compared case-insensitively). GIFs are not listed:
/// they are decoded without FFmpeg.
pub const VIDEO_EXTENSIONS: [&str; 11] = [
    "mp4", "m4v", "avi", "mkv", "mov", "webm", "mpg", "mpeg", "wmv", "flv", "ogv",
];

/// The default number of frames sampled per video (`--frames`).
pub const DEFAULT_FRAMES: usize = 8;

/// What kind of video a path holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoKind {
    /// A folder of frame images.
    FrameFolder,
    /// An (animated) GIF.
    Gif,
    /// A video file for FFmpeg.
    File,
}

/// Whether `path` has one of [`VIDEO_EXTENSIONS`].
pub fn is_video_file(path: &Path) -> bool {
    has_extension(path, &VIDEO_EXTENSIONS)
}

fn has_extension(path: &Path, known: &[&str]) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|ext| known.iter().any(|k| ext.eq_ignore_ascii_case(k)))
}

/// The kind of video at `path`, or `None` when it is none of them (a still image, a text file, nothing).
pub fn video_kind(path: &Path) -> Option<VideoKind> {
    if path.is_dir() {
        Some(VideoKind::FrameFolder)
    } else if has_extension(path, &["gif"]) {
        Some(VideoKind::Gif)
    } else if is_video_file(path) {
        Some(VideoKind::File)
    } else {
        None
    }
}

/// Read `n` frames of the video at `path`, sampled by [`sample_indices`] (a video shorter than `n` frames
/// repeats frames). Frames of a frame folder keep their decoded mode, so they preprocess exactly as the same
/// files given as images; GIF and video-file frames are RGB. Images are read within the default
/// [`DecodeLimits`].
pub fn read_frames(path: &Path, n: usize) -> Result<Vec<DecodedImage>, VideoError> {
    read_frames_limited(path, n, &DecodeLimits::default())
}

/// [`read_frames`] with a caller's decoding budget: frame images, a GIF's screen and each of its frames, and
/// a video file's frame size claiming more pixels than `limits` allow are refused before their pixels are
/// allocated.
pub fn read_frames_limited(
    path: &Path,
    n: usize,
    limits: &DecodeLimits,
) -> Result<Vec<DecodedImage>, VideoError> {
    if n == 0 {
        return Err(VideoError::NoFramesRequested);
    }
    if !path.exists() {
        return Err(VideoError::NotFound {
            path: path.to_path_buf(),
        });
    }
    match video_kind(path) {
        Some(VideoKind::FrameFolder) => frames_dir::read(path, n, limits),
        Some(VideoKind::Gif) => gif::read(path, n, limits),
        Some(VideoKind::File) => ffmpeg::read(path, n, limits),
        None => Err(VideoError::NotAVideo {
            path: path.to_path_buf(),
        }),
    }
}
