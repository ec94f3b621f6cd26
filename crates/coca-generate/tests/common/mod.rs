//! Shared helpers: the committed tiny fixture models and their open_clip generation references.

#![allow(dead_code)]

use std::path::PathBuf;

use candle_core::{Device, Tensor};
use coca_model::Coca;
use serde_json::Value;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub const MODELS: [&str; 4] = [
    "tiny_legacy",
    "tiny_parallel",
    "tiny_cascade",
    "tiny_clspool",
];

/// The model and its first `n` fixture images (n, 3, H, W).
pub fn model_and_images(name: &str) -> (Coca, Tensor) {
    let dir = repo().join("fixtures/parity").join(name);
    let model = coca_model::parity::fixture_model(&dir).expect("fixture model");
    let io = candle_core::safetensors::load(dir.join("io.safetensors"), &Device::Cpu)
        .expect("fixture io");
    let images = io["image"]
        .to_dtype(candle_core::DType::F32)
        .expect("f32 images");
    (model, images)
}

/// open_clip's references for `name` (written by scripts/parity/make_generation_fixtures.py).
pub fn references(name: &str) -> Value {
    let path = repo()
        .join("fixtures/generation")
        .join(format!("{name}.json"));
    serde_json::from_str(&std::fs::read_to_string(&path).expect("fixture json")).expect("json")
}
