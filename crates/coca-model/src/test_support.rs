//! The tiny open_clip fixture model and batches for the crate's unit tests.

use std::path::Path;

use candle_core::{DType, Device, Tensor};

use crate::config::CocaConfig;
use crate::nn::kernels::cpu::Avx512;
use crate::weights::{trainable_from, TrainableCoca};

/// The tiny open_clip fixture (`fixtures/parity/tiny_legacy`) as trainable variables.
pub(crate) fn tiny() -> TrainableCoca {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/parity/tiny_legacy");
    let cfg = CocaConfig::from_file(&dir.join("config.json")).unwrap();
    let ckpt = coca_checkpoint::Checkpoint::open(dir.join("open_clip_model.safetensors")).unwrap();
    trainable_from(&cfg, DType::F32, &Device::Cpu, |name| {
        ckpt.get(name, DType::F32, &Device::Cpu)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))
    })
    .unwrap()
}

/// Images and padded captions (SOT 254 … EOT 255, then padding 0) for `batch` samples, varied by `seed`.
pub(crate) fn batch(batch: usize, seed: usize) -> (Tensor, Tensor) {
    let images = Tensor::randn(0f32, 1.0, (batch, 3, 48, 48), &Device::Cpu).unwrap();
    let len = 9;
    let ids: Vec<u32> = (0..batch)
        .flat_map(|b| {
            let words = 1 + (b + seed) % 6;
            (0..len).map(move |i| match i {
                0 => 254,
                i if i <= words => ((i * 37 + b * 11 + seed * 5) % 250 + 1) as u32,
                i if i == words + 1 => 255,
                _ => 0,
            })
        })
        .collect();
    let ids = Tensor::from_vec(ids, (batch, len), &Device::Cpu).unwrap();
    (images, ids)
}

/// Report the calling test as skipped because of `reason`. libtest has no run-time skip, so a test that returns
/// early counts as passed: this writes `SKIPPED: <test>: <reason>` to stderr and, when `COCA_SKIP_LOG` names a
/// file, appends the line to it (`.ci/run` lists that file after the tests). The test's name is its thread's,
/// which libtest sets.
pub(crate) fn skip(reason: &str) {
    let line = format!(
        "SKIPPED: {}: {reason}",
        std::thread::current().name().unwrap_or("unnamed test")
    );
    eprintln!("{line}");
    if let Some(path) = std::env::var_os("COCA_SKIP_LOG") {
        use std::io::Write;
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("COCA_SKIP_LOG {}: {e}", Path::new(&path).display()));
        // One write per line: appends from parallel tests do not interleave.
        log.write_all(format!("{line}\n").as_bytes())
            .unwrap_or_else(|e| panic!("COCA_SKIP_LOG {}: {e}", Path::new(&path).display()));
    }
}

/// The AVX-512 token for a test of an AVX-512 kernel, or `None` after reporting the test [skipped](skip).
pub(crate) fn avx512_or_skip() -> Option<Avx512> {
    let cpu = crate::nn::kernels::cpu::avx512();
    if cpu.is_none() {
        skip("this CPU has no AVX-512F (or COCA_AVX512=0 is set)");
    }
    cpu
}
