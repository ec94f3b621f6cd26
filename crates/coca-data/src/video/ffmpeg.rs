//! Video files through the `ffmpeg` program (cargo feature `ffmpeg`, off by default).
//!
//! coca runs `ffprobe` once to learn the frame size and count, then `ffmpeg` with a `select` filter that
//! passes exactly the sampled frames, piped out as raw RGB (`-f rawvideo -pix_fmt rgb24`). Shelling out,
//! rather than linking FFmpeg's libraries through a binding crate, keeps the build free of C headers,
//! `pkg-config` and `libclang` (binding crates generate their bindings at build time), so it builds offline
//! and on any machine; the one run-time requirement is the `ffmpeg` Debian package (which provides both
//! programs). `COCA_FFMPEG` / `COCA_FFPROBE` name other executables.
//!
//! Frames are decoded as stored (`-noautorotate`: a phone video's rotation flag is ignored, as PIL ignores
//! EXIF orientation) at their coded size; the image preprocessing then resizes them like any image.

use std::path::Path;

use coca_image::{DecodeLimits, DecodedImage};

use super::VideoError;

/// `n` sampled frames of the video file at `path`.
#[cfg(not(feature = "ffmpeg"))]
pub(crate) fn read(
    path: &Path,
    _n: usize,
    _limits: &DecodeLimits,
) -> Result<Vec<DecodedImage>, VideoError> {
    Err(VideoError::FfmpegDisabled {
        path: path.to_path_buf(),
    })
}

/// `n` sampled frames of the video file at `path`; a frame size above `limits` is refused before any frame
/// buffer is allocated.
#[cfg(feature = "ffmpeg")]
pub(crate) fn read(
    path: &Path,
    n: usize,
    limits: &DecodeLimits,
) -> Result<Vec<DecodedImage>, VideoError> {
    enabled::read(path, n, limits)
}

/// Whether this build reads video files (the `ffmpeg` feature).
pub const ENABLED: bool = cfg!(feature = "ffmpeg");

#[cfg(feature = "ffmpeg")]
mod enabled {
    use std::io::Read;
    use std::path::Path;
    use std::process::{Command, Stdio};

    use coca_image::image::RgbImage;
    use coca_image::{DecodeLimits, DecodedImage};

    use super::super::{sample_indices, VideoError};

    /// The executable for `program`: `$COCA_FFMPEG` / `$COCA_FFPROBE` when set, else the name on PATH.
    fn executable(program: &str) -> String {
        std::env::var(format!("COCA_{}", program.to_ascii_uppercase()))
            .ok()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| program.to_string())
    }

    /// Width, height and frame count of the first video stream.
    struct Probe {
        width: u32,
        height: u32,
        frames: usize,
    }

    fn spawn_error(path: &Path, program: &str, source: std::io::Error) -> VideoError {
        VideoError::FfmpegMissing {
            path: path.to_path_buf(),
            program: program.to_string(),
            source,
        }
    }

    fn decode_error(path: &Path, detail: impl Into<String>) -> VideoError {
        VideoError::Decode {
            path: path.to_path_buf(),
            detail: detail.into(),
        }
    }

    /// Ask ffprobe for the stream's size and its number of packets (one per frame for video streams;
    /// counting packets does not decode, so it is fast).
    fn probe(path: &Path) -> Result<Probe, VideoError> {
        let program = executable("ffprobe");
        let out = Command::new(&program)
            .args(["-v", "error", "-select_streams", "v:0", "-count_packets"])
            .args(["-show_entries", "stream=width,height,nb_read_packets"])
            .args(["-of", "default=noprint_wrappers=1"])
            .arg(path)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| spawn_error(path, &program, e))?;
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if !out.status.success() {
            return Err(decode_error(path, stderr));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix('='))
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        match (field("width"), field("height"), field("nb_read_packets")) {
            (Some(w), Some(h), Some(frames)) if w > 0 && h > 0 => Ok(Probe {
                width: w as u32,
                height: h as u32,
                frames: frames as usize,
            }),
            _ if text.trim().is_empty() => Err(decode_error(path, "no video stream")),
            _ => Err(decode_error(
                path,
                format!("ffprobe reported no frame size or count: {}", text.trim()),
            )),
        }
    }

    pub(super) fn read(
        path: &Path,
        n: usize,
        limits: &DecodeLimits,
    ) -> Result<Vec<DecodedImage>, VideoError> {
        let info = probe(path)?;
        limits.check(
            &path.display().to_string(),
            info.width.into(),
            info.height.into(),
        )?;
        if info.frames == 0 {
            return Err(decode_error(path, "the video has no frames"));
        }
        let wanted = sample_indices(info.frames, n);
        let mut unique = wanted.clone();
        unique.dedup();
        // `select` passes only the sampled frames, so only they are converted and piped.
        let expr: Vec<String> = unique.iter().map(|i| format!("eq(n\\,{i})")).collect();
        let program = executable("ffmpeg");
        let mut child = Command::new(&program)
            .args(["-v", "error", "-nostdin", "-noautorotate", "-i"])
            .arg(path)
            .args(["-map", "0:v:0", "-vf"])
            .arg(format!("select={}", expr.join("+")))
            .args([
                "-fps_mode",
                "passthrough",
                "-f",
                "rawvideo",
                "-pix_fmt",
                "rgb24",
                "-",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| spawn_error(path, &program, e))?;
        // Drain stderr on its own thread so a chatty decoder can never block on a full pipe.
        let mut stderr = child.stderr.take().expect("stderr is piped");
        let errors = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        let mut stdout = child.stdout.take().expect("stdout is piped");
        let frame_len = info.width as usize * info.height as usize * 3;
        let mut decoded: Vec<RgbImage> = Vec::with_capacity(unique.len());
        while decoded.len() < unique.len() {
            let mut buf = vec![0u8; frame_len];
            match stdout.read_exact(&mut buf) {
                Ok(()) => decoded.push(
                    RgbImage::from_raw(info.width, info.height, buf)
                        .expect("buffer sized for the frame"),
                ),
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                Err(e) => {
                    return Err(VideoError::Io {
                        path: path.to_path_buf(),
                        source: e,
                    })
                }
            }
        }
        drop(stdout);
        let status = child.wait().map_err(|e| VideoError::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
        let messages = errors.join().unwrap_or_default().trim().to_string();
        if decoded.is_empty() {
            let detail = if messages.is_empty() {
                format!("ffmpeg decoded no frames ({status})")
            } else {
                messages
            };
            return Err(decode_error(path, detail));
        }
        // Packet counts can exceed the decodable frames (a truncated file): missing indices reuse the last
        // frame decoded, as a shorter video would.
        let mut frames = Vec::with_capacity(n);
        let mut slot = 0;
        for (k, &index) in wanted.iter().enumerate() {
            if k > 0 && index != wanted[k - 1] {
                slot += 1;
            }
            let img = &decoded[slot.min(decoded.len() - 1)];
            frames.push(DecodedImage::from_rgb(img.clone()));
        }
        Ok(frames)
    }
}
