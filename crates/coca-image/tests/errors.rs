//! Every failure is an `ImageError` naming its input, never a panic.

mod common;

use std::path::Path;

use coca_image::{
    decode_rgb, load_rgb, preprocess_path, DecodedImage, ImageError, PreprocessConfig, BYTES_NAME,
};
use common::fixtures_dir;

fn source(name: &str) -> Vec<u8> {
    std::fs::read(fixtures_dir().join("sources").join(name)).unwrap()
}

/// Writes `bytes` to a temporary file and loads it, returning the error.
fn load_error(file_name: &str, bytes: &[u8]) -> (ImageError, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(file_name);
    std::fs::write(&path, bytes).unwrap();
    let err = match load_rgb(&path) {
        Ok(img) => panic!(
            "{file_name}: decoded a {:?} image instead of failing",
            img.dimensions()
        ),
        Err(err) => err,
    };
    let shown = path.display().to_string();
    assert!(
        err.to_string().starts_with(&shown),
        "message must name the path: {err}"
    );
    assert_eq!(err.name(), shown);
    // The preprocessing entry point reports the same error.
    let again = preprocess_path(&path, &PreprocessConfig::default()).unwrap_err();
    assert_eq!(again.to_string(), err.to_string());
    (err, shown)
}

#[test]
fn missing_file() {
    let path = Path::new("/definitely/not/here/cat.jpg");
    let err = load_rgb(path).unwrap_err();
    assert!(matches!(err, ImageError::NotFound { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "/definitely/not/here/cat.jpg: no such file"
    );
}

#[test]
fn unreadable_path_is_an_io_error() {
    // A directory exists but cannot be read as a file.
    let dir = tempfile::tempdir().unwrap();
    let err = load_rgb(dir.path()).unwrap_err();
    assert!(matches!(err, ImageError::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("cannot read file"), "{err}");
}

#[test]
fn empty_file() {
    let (err, _) = load_error("empty.png", b"");
    assert!(matches!(err, ImageError::Empty { .. }), "{err:?}");
}

#[test]
fn text_file_is_not_an_image() {
    let (err, _) = load_error("notes.jpg", b"this is plain text, not a JPEG\n");
    assert!(matches!(err, ImageError::Unsupported { .. }), "{err:?}");
    assert!(
        err.to_string().contains("not a recognised image file"),
        "{err}"
    );
}

#[test]
fn corrupt_bytes_after_a_valid_signature() {
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend((0..200u32).map(|i| (i * 97 % 251) as u8));
    let (err, _) = load_error("garbage.png", &png);
    assert!(
        matches!(
            err,
            ImageError::Corrupt { .. } | ImageError::Truncated { .. }
        ),
        "{err:?}"
    );

    let mut jpeg = vec![0xFF, 0xD8, 0xFF, 0xDB, 0x00, 0x02];
    jpeg.extend((0..200u32).map(|i| (i * 31 % 256) as u8));
    let (err, _) = load_error("garbage.jpg", &jpeg);
    assert!(
        matches!(
            err,
            ImageError::Corrupt { .. } | ImageError::Truncated { .. }
        ),
        "{err:?}"
    );

    let gif = b"GIF89a\x10\x00\x10\x00\x80\x00\x00garbage";
    let (err, _) = load_error("garbage.gif", gif);
    assert!(
        matches!(
            err,
            ImageError::Corrupt { .. } | ImageError::Truncated { .. }
        ),
        "{err:?}"
    );
}

#[test]
fn truncated_jpeg() {
    for name in ["rocket.jpg", "coffee_progressive.jpg"] {
        let bytes = source(name);
        let (err, _) = load_error(name, &bytes[..bytes.len() / 2]);
        assert!(
            matches!(err, ImageError::Truncated { .. }),
            "{name}: {err:?}"
        );
        // Only the end-of-image marker missing: PIL still calls it truncated.
        let (err, _) = load_error(name, &bytes[..bytes.len() - 2]);
        assert!(
            matches!(err, ImageError::Truncated { .. }),
            "{name}: {err:?}"
        );
    }
}

#[test]
fn truncated_png_and_gif() {
    // Cut inside the (first) image's data, where PIL reports truncation.
    for (name, keep) in [("chelsea.png", 80_000), ("animated.gif", 2_000)] {
        let bytes = source(name);
        let (err, _) = load_error(name, &bytes[..keep]);
        assert!(
            matches!(err, ImageError::Truncated { .. }),
            "{name}: {err:?}"
        );
    }
}

#[test]
fn zero_size_images() {
    // PNG whose IHDR declares 0 x 5.
    let mut png = source("tiny_1x1.png");
    png[16..20].copy_from_slice(&0u32.to_be_bytes());
    png[20..24].copy_from_slice(&5u32.to_be_bytes());
    let (err, _) = load_error("zero.png", &png);
    assert!(
        matches!(
            err,
            ImageError::ZeroSize {
                width: 0,
                height: 5,
                ..
            }
        ),
        "{err:?}"
    );

    // JPEG whose frame header declares width 0.
    let mut jpeg = source("coffee_tiny_37x23.jpg");
    let sof = jpeg.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
    jpeg[sof + 7..sof + 9].copy_from_slice(&[0, 0]);
    let (err, _) = load_error("zero.jpg", &jpeg);
    assert!(
        matches!(
            err,
            ImageError::ZeroSize {
                width: 0,
                height: 23,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string().ends_with("image has zero size (0x23)"),
        "{err}"
    );
}

#[test]
fn bytes_are_named_in_errors() {
    let err = decode_rgb(b"", BYTES_NAME).unwrap_err();
    assert_eq!(err.to_string(), "<bytes>: empty file, not an image");
    let err = decode_rgb(b"GIF89a", "upload #3").unwrap_err();
    assert!(err.to_string().starts_with("upload #3: "), "{err}");
    // And decoding from memory gives the same pixels as from a file.
    let bytes = source("rocket.jpg");
    let from_bytes = decode_rgb(&bytes, BYTES_NAME).unwrap();
    let from_file = load_rgb(fixtures_dir().join("sources/rocket.jpg")).unwrap();
    assert_eq!(from_bytes, from_file);
    assert_eq!(
        DecodedImage::decode(&bytes, "x").unwrap().mode(),
        coca_image::PilMode::Rgb
    );
}

/// Small deterministic xorshift generator for the damage patterns.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn damaged_files_never_panic() {
    // Flipped bytes, cut files and spliced segments must produce either an
    // image or an error, whatever the format.
    let cfg = PreprocessConfig {
        image_size: 16,
        ..PreprocessConfig::default()
    };
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for (name, rounds) in [
        ("coffee_tiny_37x23.jpg", 300),
        ("grey16.png", 40),
        ("grey.gif", 40),
        ("palette_4bit.png", 40),
        ("coffee_progressive.jpg", 12),
        ("chelsea_422.jpg", 12),
        ("astronaut_cmyk.jpg", 8),
    ] {
        let original = source(name);
        for round in 0..rounds {
            let mut bytes = original.clone();
            match round % 3 {
                0 => {
                    for _ in 0..1 + rng.below(8) {
                        let i = rng.below(bytes.len());
                        bytes[i] ^= 1 << rng.below(8);
                    }
                }
                1 => {
                    let i = rng.below(bytes.len());
                    bytes[i] = [0x00, 0xFF, 0xD9, 0xC4][rng.below(4)];
                }
                _ => bytes.truncate(rng.below(bytes.len())),
            }
            if let Ok(img) = DecodedImage::decode(&bytes, name) {
                assert_eq!(
                    coca_image::preprocess_decoded(&img, &cfg).len(),
                    cfg.tensor_len()
                );
            }
        }
    }
}
