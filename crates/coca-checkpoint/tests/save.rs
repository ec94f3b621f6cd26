//! `save_safetensors` round trips exactly and never leaves a partial file.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use coca_checkpoint::{save_safetensors, Checkpoint, CheckpointError, Format};
use common::{bits, expected, fixture, ints};

fn dir_entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn metadata() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("format".to_string(), "pt".to_string()),
        ("model".to_string(), "coca_ViT-B-32".to_string()),
    ])
}

#[test]
fn round_trip_keeps_values_bit_exact() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("converted.safetensors");
    // From the torch archive, whose views are non-contiguous on disk.
    let src = Checkpoint::open(fixture("plain_f32.bin")).unwrap();
    let tensors = src.load_all(None, &Device::Cpu).unwrap();
    save_safetensors(&out, &tensors, None, &metadata()).unwrap();

    let back = Checkpoint::open(&out).unwrap();
    assert_eq!(back.format(), Format::Safetensors);
    assert_eq!(back.metadata(), &metadata());
    assert_eq!(
        back.names().collect::<Vec<_>>(),
        src.names().collect::<Vec<_>>()
    );
    for (name, e) in expected() {
        let t = back.get_stored(&name, &Device::Cpu).unwrap();
        assert_eq!(t.dims(), e.shape.as_slice(), "{name}");
        match e.values {
            Some(values) => assert_eq!(ints(&t), values, "{name}"),
            None => assert_eq!(bits(&t), e.bits_as(DType::F32), "{name}"),
        }
    }
    assert_eq!(dir_entries(dir.path()), ["converted.safetensors"]);
}

#[test]
fn float_dtype_converts_floats_only() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bf16.safetensors");
    let src = Checkpoint::open(fixture("model_f32.safetensors")).unwrap();
    let tensors: Vec<(String, Tensor)> = src
        .load_all(None, &Device::Cpu)
        .unwrap()
        .into_iter()
        .collect();
    save_safetensors(&out, tensors, Some(DType::BF16), &BTreeMap::new()).unwrap();

    let back = Checkpoint::open(&out).unwrap();
    assert!(back.metadata().is_empty());
    for (name, e) in expected() {
        let info = back.info(&name).unwrap();
        if e.is_float() {
            assert_eq!(info.dtype, DType::BF16, "{name}");
            let t = back.get_stored(&name, &Device::Cpu).unwrap();
            assert_eq!(bits(&t), e.bits_as(DType::BF16), "{name}");
        } else {
            assert_eq!(info.dtype, DType::I64, "{name}");
        }
    }
    // Byte-identical to what Python's safetensors wrote for the same tensors would be
    // too strong (key order in the header differs); the data section, however, is
    // laid out the same way: widest dtype first, then by name.
    let ours = std::fs::read(&out).unwrap();
    let theirs = std::fs::read(fixture("model_bf16.safetensors")).unwrap();
    let data = |b: &[u8]| b[8 + u64::from_le_bytes(b[..8].try_into().unwrap()) as usize..].to_vec();
    assert_eq!(data(&ours), data(&theirs));
}

#[test]
fn header_is_aligned_and_scalars_survive() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("small.safetensors");
    let scalar = Tensor::new(2.5f32, &Device::Cpu).unwrap();
    let half = Tensor::new(&[1.0f32, 2.0, 3.0], &Device::Cpu)
        .unwrap()
        .to_dtype(DType::F16)
        .unwrap();
    let map = HashMap::from([("s".to_string(), scalar), ("h".to_string(), half)]);
    save_safetensors(&out, &map, None, &BTreeMap::new()).unwrap();
    let bytes = std::fs::read(&out).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    assert_eq!((8 + header_len) % 8, 0);
    let back = Checkpoint::open(&out).unwrap();
    assert_eq!(back.info("s").unwrap().shape, Vec::<usize>::new());
    let s = back.get("s", DType::F32, &Device::Cpu).unwrap();
    assert_eq!(s.to_scalar::<f32>().unwrap(), 2.5);
    assert_eq!(back.info("h").unwrap().dtype, DType::F16);
}

#[test]
fn invalid_save_leaves_existing_file_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("model.safetensors");
    std::fs::write(&out, b"previous content").unwrap();
    let t = Tensor::zeros(2, DType::F32, &Device::Cpu).unwrap();
    let dup = vec![("a", &t), ("b", &t), ("a", &t)];
    let err = save_safetensors(&out, dup, None, &BTreeMap::new()).unwrap_err();
    assert!(
        matches!(err, CheckpointError::InvalidSave { ref name, .. } if name == "a"),
        "{err:?}"
    );
    assert!(err.to_string().contains("model.safetensors"), "{err}");
    let reserved = vec![("__metadata__", &t)];
    assert!(save_safetensors(&out, reserved, None, &BTreeMap::new()).is_err());
    assert_eq!(std::fs::read(&out).unwrap(), b"previous content");
    assert_eq!(dir_entries(dir.path()), ["model.safetensors"]);
}

#[test]
fn unwritable_destination_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("missing_dir").join("model.safetensors");
    let t = Tensor::zeros(2, DType::F32, &Device::Cpu).unwrap();
    let err = save_safetensors(&out, [("a", &t)], None, &BTreeMap::new()).unwrap_err();
    assert!(matches!(err, CheckpointError::Write { .. }), "{err:?}");
    assert!(err.to_string().contains("missing_dir"), "{err}");
    assert!(dir_entries(dir.path()).is_empty());
}

#[test]
fn bf16_bits_are_the_stored_patterns_and_other_dtypes_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bf16.safetensors");
    let values = [1.0f32, -2.5, 3.0e-3, 65504.0, -0.0, 7.0];
    let t = Tensor::new(&values, &Device::Cpu)
        .unwrap()
        .reshape((2, 3))
        .unwrap();
    let tensors = HashMap::from([
        ("w".to_string(), t.to_dtype(DType::BF16).unwrap()),
        ("f".to_string(), t.clone()),
    ]);
    save_safetensors(&out, &tensors, None, &metadata()).unwrap();
    let back = Checkpoint::open(&out).unwrap();
    let want: Vec<u16> = values
        .iter()
        .map(|&v| half::bf16::from_f32(v).to_bits())
        .collect();
    assert_eq!(back.bf16_bits("w").unwrap().as_ref(), want.as_slice());
    let err = back.bf16_bits("f").unwrap_err().to_string();
    assert!(err.contains("bf16 values were asked for"), "{err}");
}

#[test]
fn released_tensors_read_the_same_again() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("big.safetensors");
    // Several pages, so that whole pages are given back.
    let values: Vec<f32> = (0..300_000).map(|i| (i as f32).sin()).collect();
    let t = Tensor::from_vec(values.clone(), (600, 500), &Device::Cpu).unwrap();
    let tensors = HashMap::from([("w".to_string(), t)]);
    save_safetensors(&out, &tensors, None, &metadata()).unwrap();
    let ckpt = Checkpoint::open(&out).unwrap();
    let first = ckpt.get("w", DType::F32, &Device::Cpu).unwrap();
    ckpt.release("w");
    ckpt.release("no such tensor");
    let again = ckpt.get("w", DType::F32, &Device::Cpu).unwrap();
    let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(flat(&first), values);
    assert_eq!(flat(&again), values);
}
