//! Decoding behaviour that the parity fixtures do not cover directly.

mod common;

use coca_image::{decode_rgb, DecodedImage, PilMode, BYTES_NAME};
use common::fixtures_dir;

fn source(name: &str) -> Vec<u8> {
    std::fs::read(fixtures_dir().join("sources").join(name)).unwrap()
}

#[test]
fn unsupported_jpeg_variants_are_reported() {
    // Turn the baseline frame header (SOF0) into an arithmetic-coded one
    // (SOF9): PIL's libjpeg could decode it, this crate reports it.
    let mut bytes = source("coffee_tiny_37x23.jpg");
    let sof = bytes.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
    bytes[sof + 1] = 0xC9;
    let err = DecodedImage::decode(&bytes, "arith.jpg").unwrap_err();
    assert!(
        matches!(err, coca_image::ImageError::Unsupported { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("arithmetic"), "{err}");
}

#[test]
fn exif_orientation_is_ignored_like_pil() {
    // Stored 451 x 300 with orientation 6 ("rotate 90"): PIL and open_clip
    // keep the stored layout, and so does this crate.
    let img = decode_rgb(&source("chelsea_exif_rot6.jpg"), BYTES_NAME).unwrap();
    assert_eq!(img.dimensions(), (451, 300));
}

#[test]
fn modes_follow_pil() {
    let cases = [
        ("palette_trns.png", PilMode::P),
        ("grey16.png", PilMode::I16),
        ("grey_alpha16.png", PilMode::Rgba),
        ("rgb16.png", PilMode::Rgb),
        ("bilevel.png", PilMode::Bilevel),
        ("grey_alpha.png", PilMode::La),
        ("animated.gif", PilMode::P),
        ("grey.gif", PilMode::L),
        ("astronaut_cmyk.jpg", PilMode::Cmyk),
        ("palette.bmp", PilMode::P),
        ("small_50x40.bmp", PilMode::Rgb),
        ("gradient_alpha.webp", PilMode::Rgba),
    ];
    for (name, mode) in cases {
        let img = DecodedImage::decode(&source(name), name).unwrap();
        assert_eq!(img.mode(), mode, "{name}");
        assert_eq!(img.mode().to_string(), mode.as_str());
    }
}

#[test]
fn sixteen_bit_grey_clips_instead_of_scaling() {
    // grey16.png holds 0..600 and 40000; PIL's "I;16" -> "RGB" clips at 255.
    let rgb = decode_rgb(&source("grey16.png"), BYTES_NAME).unwrap();
    assert_eq!(rgb.get_pixel(0, 0).0, [255, 255, 255]); // a 40000 sample
    assert!(rgb.pixels().any(|p| p.0[0] < 255));
}
