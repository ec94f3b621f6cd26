//! Helpers shared by coca-train's integration tests: the tiny open_clip fixture as trainable variables and
//! deterministic batches.

use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};
use coca_model::weights::{trainable_from, TrainableCoca};
use coca_model::CocaConfig;
use coca_train::MicroBatch;

/// The tiny open_clip fixture's config.
pub fn tiny_config() -> CocaConfig {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/parity/tiny_legacy");
    CocaConfig::from_file(&dir.join("config.json")).unwrap()
}

/// The fixture's weights as f32 variables on the CPU.
pub fn tiny() -> TrainableCoca {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/parity/tiny_legacy");
    let cfg = tiny_config();
    let ckpt = coca_checkpoint::Checkpoint::open(dir.join("open_clip_model.safetensors")).unwrap();
    trainable_from(&cfg, DType::F32, &Device::Cpu, |name| {
        ckpt.get(name, DType::F32, &Device::Cpu)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))
    })
    .unwrap()
}

/// The variables by name, sorted.
pub fn params(model: &TrainableCoca) -> Vec<(String, Var)> {
    let mut all: Vec<(String, Var)> = model
        .vars
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    all
}

/// Deterministic images `(n, 3, 48, 48)` and captions (SOT 254, `words[i]` tokens, EOT 255, padding) — the
/// caption of sample `i` has `words[i] + 1` target tokens.
pub fn batch(words: &[usize], seed: usize) -> MicroBatch {
    let n = words.len();
    let pixels: Vec<f32> = (0..n * 3 * 48 * 48)
        .map(|i| ((i * 7919 + seed * 104_729) % 2003) as f32 / 1001.0 - 1.0)
        .collect();
    let len = 10;
    let ids: Vec<u32> = words
        .iter()
        .enumerate()
        .flat_map(|(b, &w)| {
            (0..len).map(move |i| match i {
                0 => 254,
                i if i <= w => ((i * 37 + b * 11 + seed * 5) % 250 + 1) as u32,
                i if i == w + 1 => 255,
                _ => 0,
            })
        })
        .collect();
    MicroBatch {
        images: Tensor::from_vec(pixels, (n, 3, 48, 48), &Device::Cpu).unwrap(),
        ids: Tensor::from_vec(ids, (n, len), &Device::Cpu).unwrap(),
    }
}
