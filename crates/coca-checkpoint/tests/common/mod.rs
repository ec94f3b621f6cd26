//! Shared helpers: fixture paths and the expected values from `expected.json`.
#![allow(dead_code)] // each test binary uses a different subset

use std::collections::BTreeMap;
use std::path::PathBuf;

use candle_core::{DType, Tensor};
use serde::Deserialize;

/// `fixtures/checkpoint/<name>`.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/checkpoint")
        .join(name)
}

/// One tensor of `expected.json` (written by scripts/parity/make_checkpoint_fixtures.py).
#[derive(Debug, Deserialize)]
pub struct Expected {
    pub shape: Vec<usize>,
    pub stored_dtype: String,
    pub f32_bits: Option<Vec<u64>>,
    pub f16_bits: Option<Vec<u64>>,
    pub bf16_bits: Option<Vec<u64>>,
    pub f16_to_f32_bits: Option<Vec<u64>>,
    pub bf16_to_f32_bits: Option<Vec<u64>>,
    pub values: Option<Vec<i64>>,
}

impl Expected {
    pub fn is_float(&self) -> bool {
        self.values.is_none()
    }

    /// Torch's bits for this tensor when stored as `dtype`.
    pub fn bits_as(&self, dtype: DType) -> &[u64] {
        let bits = match dtype {
            DType::F32 => &self.f32_bits,
            DType::F16 => &self.f16_bits,
            DType::BF16 => &self.bf16_bits,
            other => panic!("no expected bits for {other:?}"),
        };
        bits.as_deref().expect("float tensor")
    }
}

#[derive(Deserialize)]
struct Doc {
    tensors: BTreeMap<String, Expected>,
}

/// Every tensor of the fixture state dict, by name.
pub fn expected() -> BTreeMap<String, Expected> {
    let text = std::fs::read_to_string(fixture("expected.json")).expect("read expected.json");
    serde_json::from_str::<Doc>(&text)
        .expect("parse expected.json")
        .tensors
}

/// `(name, shape)` pairs as a model would build them.
pub fn expected_shapes() -> Vec<(String, Vec<usize>)> {
    expected()
        .into_iter()
        .map(|(name, e)| (name, e.shape))
        .collect()
}

/// Row-major bit patterns of a float tensor.
pub fn bits(t: &Tensor) -> Vec<u64> {
    let flat = t.flatten_all().unwrap();
    match t.dtype() {
        DType::F32 => flat
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .map(|v| v.to_bits() as u64)
            .collect(),
        DType::F16 => flat
            .to_vec1::<half::f16>()
            .unwrap()
            .iter()
            .map(|v| v.to_bits() as u64)
            .collect(),
        DType::BF16 => flat
            .to_vec1::<half::bf16>()
            .unwrap()
            .iter()
            .map(|v| v.to_bits() as u64)
            .collect(),
        other => panic!("not a float tensor: {other:?}"),
    }
}

/// Row-major values of an i64 tensor.
pub fn ints(t: &Tensor) -> Vec<i64> {
    t.flatten_all().unwrap().to_vec1::<i64>().unwrap()
}
