//! Why a video could not be read; every message names the video.

use std::path::PathBuf;

/// Why a video could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VideoError {
    /// Zero frames were asked for.
    #[error("the number of frames to sample must be at least 1")]
    NoFramesRequested,
    /// Nothing exists at the path.
    #[error("{}: no such video file or frame folder", path.display())]
    NotFound {
        /// The path.
        path: PathBuf,
    },
    /// The path is neither a frame folder, a GIF nor a file with a video extension.
    #[error(
        "{}: not a video (expected a folder of frames, a .gif, or a video file: {})",
        path.display(),
        super::VIDEO_EXTENSIONS.join(", ")
    )]
    NotAVideo {
        /// The path.
        path: PathBuf,
    },
    /// A frame folder holds no image files.
    #[error("{}: frame folder holds no images (jpg, png, webp, gif, bmp, tif)", path.display())]
    NoFrames {
        /// The folder.
        path: PathBuf,
    },
    /// A file or folder could not be read.
    #[error("{}: cannot read: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A frame image of a folder could not be decoded.
    #[error(transparent)]
    Frame(#[from] coca_image::ImageError),
    /// The video's data is damaged or in a form the decoder does not support.
    #[error("{}: unreadable video: {detail}", path.display())]
    Decode {
        /// The video.
        path: PathBuf,
        /// What the decoder said.
        detail: String,
    },
    /// A video file was given to a build without the `ffmpeg` feature.
    #[error(
        "{}: reading video files needs FFmpeg; this coca was built without the `ffmpeg` feature (rebuild with \
         `--features ffmpeg` and install Debian's `ffmpeg` package), or extract the frames into a folder \
         (`ffmpeg -i VIDEO frames/%05d.png`) and pass the folder",
        path.display()
    )]
    FfmpegDisabled {
        /// The video file.
        path: PathBuf,
    },
    /// The `ffmpeg` or `ffprobe` program could not be run.
    #[error(
        "{}: cannot run `{program}` ({source}); install Debian's `ffmpeg` package (it provides ffmpeg and \
         ffprobe) or put them on PATH",
        path.display()
    )]
    FfmpegMissing {
        /// The video being read.
        path: PathBuf,
        /// `ffmpeg` or `ffprobe`.
        program: String,
        /// Why it could not be started.
        #[source]
        source: std::io::Error,
    },
}
