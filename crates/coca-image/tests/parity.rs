//! Parity with open_clip 3.3.0's eval preprocessing on the fixtures in
//! `fixtures/images/` (see `scripts/parity/make_image_fixtures.py`).

mod common;

use coca_image::{
    load_rgb, preprocess, preprocess_decoded, preprocess_path, preprocess_paths, resize_and_crop,
    to_tensor, DecodedImage, ImageError, PreprocessConfig,
};
use common::{fixtures_dir, fnv1a64, manifest};

/// Largest and mean absolute difference in normalised units (|Δu8| / 255 /
/// std of the channel) between two interleaved RGB images.
fn normalised_error(ours: &[u8], expected: &[u8], std: &[f32; 3]) -> (f64, f64) {
    let mut max = 0f64;
    let mut sum = 0f64;
    for (i, (&a, &b)) in ours.iter().zip(expected).enumerate() {
        let e = f64::from(a.abs_diff(b)) / 255.0 / f64::from(std[i % 3]);
        max = max.max(e);
        sum += e;
    }
    (max, sum / ours.len().max(1) as f64)
}

fn config(case: &serde_json::Value) -> PreprocessConfig {
    serde_json::from_value(case.clone()).expect("case settings deserialize into PreprocessConfig")
}

#[test]
fn decoding_matches_pil_for_every_fixture() {
    let m = manifest();
    assert!(m.images.len() >= 25, "fixture set looks incomplete");
    for entry in &m.images {
        let path = fixtures_dir().join(&entry.file);
        let img = DecodedImage::open(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            img.mode().as_str(),
            entry.pil_mode,
            "{} ({})",
            entry.file,
            entry.source
        );
        assert_eq!(
            (img.width(), img.height()),
            (entry.width, entry.height),
            "{}",
            entry.file
        );
        let rgb = load_rgb(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(rgb.as_raw(), img.to_rgb().as_raw());
        assert_eq!(
            fnv1a64(rgb.as_raw()),
            entry.rgb_fnv1a64,
            "{}: RGB pixels differ from PIL's Image.open(..).convert(\"RGB\")",
            entry.file
        );
    }
}

#[test]
fn preprocessing_matches_open_clip_bit_for_bit() {
    let m = manifest();
    let mut report = Vec::new();
    let mut failures = Vec::new();
    for entry in &m.images {
        let img =
            DecodedImage::open(fixtures_dir().join(&entry.file)).unwrap_or_else(|e| panic!("{e}"));
        for case in &entry.cases {
            let cfg = config(&m.cases[&case.case]);
            assert_eq!(
                (cfg.mean, cfg.std),
                (m.mean, m.std),
                "fixtures use the OpenAI mean/std"
            );
            let ours = resize_and_crop(&img, &cfg);
            let expected = image::open(fixtures_dir().join(&case.expected))
                .unwrap_or_else(|e| panic!("{}: {e}", case.expected))
                .into_rgb8();
            let size = cfg.image_size;
            assert_eq!(expected.dimensions(), (size, size), "{}", case.expected);
            assert_eq!(ours.len(), expected.as_raw().len(), "{}", case.expected);
            let (max, mean) = normalised_error(&ours, expected.as_raw(), &cfg.std);
            report.push(format!(
                "{:<28} {:<5} {:<18} max {max:.5} mean {mean:.6}",
                entry.file.trim_start_matches("sources/"),
                entry.pil_mode,
                case.case
            ));
            // The tolerance, then the stricter bit-exact target.
            assert!(
                max <= 0.02 && mean <= 0.002,
                "{}: max {max} mean {mean}",
                case.expected
            );
            if ours != *expected.as_raw() {
                failures.push(format!("{} (max {max:.5}, mean {mean:.6})", case.expected));
            }
        }
    }
    println!("{}", report.join("\n"));
    assert!(failures.is_empty(), "not bit-exact: {failures:#?}");
}

#[test]
fn tensor_arithmetic_matches_torch() {
    let bytes = std::fs::read(fixtures_dir().join("normalize_check.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let reference: Vec<f32> = st
        .tensor("pixel_values")
        .unwrap()
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let rgb = st.tensor("rgb").unwrap().data().to_vec();
    let cfg = PreprocessConfig {
        image_size: 96,
        ..PreprocessConfig::default()
    };
    assert_eq!(reference.len(), cfg.tensor_len());
    let same_bits = |a: &[f32]| {
        a.iter()
            .zip(&reference)
            .all(|(x, y)| x.to_bits() == y.to_bits())
    };
    assert!(same_bits(&to_tensor(&rgb, &cfg)), "ToTensor + Normalize");

    // The whole pipeline, through each entry point.
    let path = fixtures_dir().join("sources/chelsea.png");
    assert!(
        same_bits(&preprocess_path(&path, &cfg).unwrap()),
        "preprocess_path"
    );
    let decoded = DecodedImage::open(&path).unwrap();
    assert!(
        same_bits(&preprocess_decoded(&decoded, &cfg)),
        "preprocess_decoded"
    );
    assert!(
        same_bits(&preprocess(&load_rgb(&path).unwrap(), &cfg)),
        "preprocess"
    );
}

#[test]
fn rgb_entry_point_differs_from_mode_aware_path_only_for_special_modes() {
    // `preprocess` takes an already converted RGB image; for an RGB source it
    // is the same as the mode-aware path.
    let cfg = PreprocessConfig::default();
    let path = fixtures_dir().join("sources/rocket.jpg");
    let via_rgb = preprocess(&load_rgb(&path).unwrap(), &cfg);
    assert_eq!(via_rgb, preprocess_path(&path, &cfg).unwrap());
    // A palette image is resized with nearest neighbour by PIL; bicubic on
    // the RGB conversion gives different pixels.
    let path = fixtures_dir().join("sources/palette.png");
    let via_rgb = preprocess(&load_rgb(&path).unwrap(), &cfg);
    assert_ne!(via_rgb, preprocess_path(&path, &cfg).unwrap());
}

#[test]
fn batch_keeps_order_and_isolates_failures() {
    let dir = fixtures_dir().join("sources");
    let paths = vec![
        dir.join("rocket.jpg"),
        dir.join("does-not-exist.png"),
        dir.join("grey16.png"),
        dir.join("animated.gif"),
        dir.join("palette.png"),
    ];
    let cfg = PreprocessConfig {
        image_size: 64,
        ..PreprocessConfig::default()
    };
    for threads in [0, 1, 3, 8] {
        let results = preprocess_paths(&paths, &cfg, threads);
        assert_eq!(results.len(), paths.len());
        for (path, result) in paths.iter().zip(&results) {
            match preprocess_path(path, &cfg) {
                Ok(single) => assert_eq!(result.as_ref().unwrap(), &single),
                Err(_) => assert!(matches!(result, Err(ImageError::NotFound { .. }))),
            }
        }
    }
    assert!(preprocess_paths::<std::path::PathBuf>(&[], &cfg, 4).is_empty());
}
