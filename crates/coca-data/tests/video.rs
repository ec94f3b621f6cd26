//! Reading videos: frame folders, animated GIFs written here with the `image` crate's encoder, and (with the
//! `ffmpeg` feature and the program installed) video files.

use std::path::Path;

use coca_data::video::{read_frames, sample_indices, video_kind, VideoError, VideoKind};
use coca_image::image::codecs::gif::{GifEncoder, Repeat};
use coca_image::image::{Delay, Frame, Rgb, RgbImage, RgbaImage};

/// A solid frame whose red channel encodes its index (frame `i` has red `20·i`).
fn frame(i: usize, size: u32) -> RgbImage {
    RgbImage::from_pixel(size, size, Rgb([(20 * i) as u8, 100, 200]))
}

fn write_gif(path: &Path, frames: usize) {
    let file = std::fs::File::create(path).unwrap();
    let mut encoder = GifEncoder::new_with_speed(file, 10);
    encoder.set_repeat(Repeat::Infinite).unwrap();
    for i in 0..frames {
        let rgba: RgbaImage = coca_image::image::DynamicImage::ImageRgb8(frame(i, 12)).to_rgba8();
        encoder
            .encode_frame(Frame::from_parts(
                rgba,
                0,
                0,
                Delay::from_numer_denom_ms(100, 1),
            ))
            .unwrap();
    }
}

/// The red value of a frame's centre pixel, as the frame index it encodes.
fn index_of(img: &coca_image::DecodedImage) -> usize {
    let rgb = img.to_rgb();
    let r = rgb.get_pixel(rgb.width() / 2, rgb.height() / 2)[0] as f64;
    (r / 20.0).round() as usize
}

#[test]
fn an_animated_gif_yields_the_sampled_frames_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let gif = dir.path().join("clip.gif");
    write_gif(&gif, 10);
    assert_eq!(video_kind(&gif), Some(VideoKind::Gif));
    let frames = read_frames(&gif, 4).unwrap();
    assert_eq!(frames.len(), 4);
    let got: Vec<usize> = frames.iter().map(index_of).collect();
    assert_eq!(got, sample_indices(10, 4));
    assert_eq!(got, vec![1, 3, 6, 8]);
    assert_eq!((frames[0].width(), frames[0].height()), (12, 12));
}

#[test]
fn a_gif_of_one_frame_is_a_video_of_one_repeated_frame() {
    let dir = tempfile::tempdir().unwrap();
    let gif = dir.path().join("still.gif");
    write_gif(&gif, 1);
    let frames = read_frames(&gif, 8).unwrap();
    assert_eq!(frames.len(), 8);
    assert!(frames.iter().all(|f| index_of(f) == 0));
}

#[test]
fn a_frame_folder_is_read_in_file_name_order() {
    let dir = tempfile::tempdir().unwrap();
    let frames_dir = dir.path().join("clip");
    std::fs::create_dir(&frames_dir).unwrap();
    // Written out of order, with a non-image file beside them.
    for i in [5usize, 0, 3, 1, 4, 2] {
        frame(i, 8)
            .save(frames_dir.join(format!("frame_{i:03}.png")))
            .unwrap();
    }
    std::fs::write(frames_dir.join("notes.txt"), "not a frame").unwrap();
    assert_eq!(video_kind(&frames_dir), Some(VideoKind::FrameFolder));
    let got: Vec<usize> = read_frames(&frames_dir, 3)
        .unwrap()
        .iter()
        .map(index_of)
        .collect();
    assert_eq!(got, vec![1, 3, 5]); // centres of [0,2), [2,4), [4,6)
}

#[test]
fn errors_name_the_video_and_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let err = read_frames(&empty, 4).unwrap_err();
    assert!(matches!(err, VideoError::NoFrames { .. }));
    assert!(err.to_string().contains("empty"), "{err}");

    let missing = dir.path().join("missing.gif");
    let err = read_frames(&missing, 4).unwrap_err();
    assert!(err.to_string().contains("no such video"), "{err}");

    let broken = dir.path().join("broken.gif");
    std::fs::write(&broken, b"GIF89a but not really").unwrap();
    let err = read_frames(&broken, 4).unwrap_err();
    assert!(err.to_string().contains("broken.gif"), "{err}");
    assert!(err.to_string().contains("unreadable video"), "{err}");

    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "x").unwrap();
    assert!(matches!(
        read_frames(&text, 4).unwrap_err(),
        VideoError::NotAVideo { .. }
    ));
    assert!(matches!(
        read_frames(&text, 0).unwrap_err(),
        VideoError::NoFramesRequested
    ));
}

#[cfg(not(feature = "ffmpeg"))]
#[test]
fn video_files_need_the_ffmpeg_feature() {
    let dir = tempfile::tempdir().unwrap();
    let mp4 = dir.path().join("clip.mp4");
    std::fs::write(&mp4, b"not decoded").unwrap();
    let err = read_frames(&mp4, 4).unwrap_err();
    assert!(matches!(err, VideoError::FfmpegDisabled { .. }));
    assert!(err.to_string().contains("--features ffmpeg"), "{err}");
}

/// With the feature, a lossless video written by ffmpeg itself from numbered frames comes back with the
/// sampled frames' contents (skipped when the ffmpeg program is not installed).
#[cfg(feature = "ffmpeg")]
#[test]
fn video_files_are_decoded_by_ffmpeg() {
    use std::process::Command;
    let have = Command::new("ffmpeg").arg("-version").output().is_ok();
    if !have {
        eprintln!("skipped: no ffmpeg program");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for i in 0..10 {
        frame(i, 16)
            .save(dir.path().join(format!("f{i:03}.png")))
            .unwrap();
    }
    let video = dir.path().join("clip.avi");
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-framerate", "10", "-i"])
        .arg(dir.path().join("f%03d.png"))
        .args(["-c:v", "ffv1"])
        .arg(&video)
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(video_kind(&video), Some(VideoKind::File));
    let frames = read_frames(&video, 4).unwrap();
    let got: Vec<usize> = frames.iter().map(index_of).collect();
    assert_eq!(got, vec![1, 3, 6, 8]);
    assert_eq!((frames[0].width(), frames[0].height()), (16, 16));
    // Asking for more frames than the video has repeats them.
    let got: Vec<usize> = read_frames(&video, 20)
        .unwrap()
        .iter()
        .map(index_of)
        .collect();
    assert_eq!(got, sample_indices(10, 20));

    let broken = dir.path().join("broken.mp4");
    std::fs::write(&broken, b"definitely not a video").unwrap();
    let err = read_frames(&broken, 4).unwrap_err();
    assert!(err.to_string().contains("broken.mp4"), "{err}");
}
