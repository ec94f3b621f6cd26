//! Shared helpers for the fixture-based tests.

// Each test binary compiles this module and uses only part of it.
#![allow(dead_code)]

use std::path::PathBuf;

use serde::Deserialize;

/// `fixtures/images/` at the repository root.
pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/images")
}

/// `fixtures/images/manifest.json`, written by
/// `scripts/parity/make_image_fixtures.py`.
#[derive(Debug, Deserialize)]
pub struct Manifest {
    pub mean: [f32; 3],
    pub std: [f32; 3],
    /// Case name -> open_clip preprocess settings (`size`, `resize_mode`,
    /// `interpolation`), which `PreprocessConfig` deserializes directly.
    pub cases: std::collections::BTreeMap<String, serde_json::Value>,
    pub images: Vec<Entry>,
}

/// One source image and the cases computed for it.
#[derive(Debug, Deserialize)]
pub struct Entry {
    pub file: String,
    pub source: String,
    pub pil_mode: String,
    pub width: u32,
    pub height: u32,
    pub rgb_fnv1a64: String,
    pub cases: Vec<CaseRef>,
}

/// A preprocessing case and the file holding open_clip's 8-bit result.
#[derive(Debug, Deserialize)]
pub struct CaseRef {
    pub case: String,
    pub expected: String,
}

pub fn manifest() -> Manifest {
    let path = fixtures_dir().join("manifest.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// FNV-1a, 64-bit, as the fixture script computes it.
pub fn fnv1a64(data: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}
