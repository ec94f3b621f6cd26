//! The bodies of coca's fuzz targets, one function per target.
//!
//! Each function feeds arbitrary bytes to one of coca's parsers of untrusted input. An `Err` is the
//! right answer to garbage and is ignored; only a panic, an abort, unbounded memory or a hang is a
//! finding. `crates/coca-cli/tests/fuzz_findings.rs` includes this file and replays every finding
//! kept under `fixtures/adversarial/fuzz/<target>/` through the same function.

use std::io::{Cursor, Write};

use candle_core::{DType, Device};
use coca_checkpoint::Checkpoint;
use coca_image::{preprocess_decoded, DecodedImage, Interpolation, PreprocessConfig, ResizeMode};
use coca_text::{Tokenizer, DEFAULT_CONTEXT_LENGTH};

/// Tensors loaded per checkpoint: enough to reach every dtype and layout path, few enough to keep one
/// execution fast.
const MAX_TENSORS_LOADED: usize = 16;

/// Storages `data/0` ... `data/15` that [`torch_zip`] puts beside the fuzzed pickle, so that pickles
/// mutated from real checkpoints still find the storages they name.
const TORCH_STORAGES: usize = 16;

/// Bytes in each of those storages (the fixture checkpoints' largest storage holds 96).
const TORCH_STORAGE_LEN: usize = 128;

/// Decodes `data` as an image file, then resizes, crops and normalises it.
pub fn image_decode(data: &[u8]) {
    let Ok(img) = DecodedImage::decode(data, "fuzz input") else {
        return;
    };
    let cfg = preprocess_config(data.len());
    let pixels = preprocess_decoded(&img, &cfg);
    assert_eq!(pixels.len(), cfg.tensor_len(), "preprocessed length");
}

/// A small preprocessing setup, varied with the input's length so that every resize mode and filter
/// runs while a given input always takes the same path.
fn preprocess_config(len: usize) -> PreprocessConfig {
    PreprocessConfig {
        image_size: 24,
        interpolation: match len / 3 % 2 {
            0 => Interpolation::Bicubic,
            _ => Interpolation::Bilinear,
        },
        resize_mode: match len % 3 {
            0 => ResizeMode::Shortest,
            1 => ResizeMode::Longest,
            _ => ResizeMode::Squash,
        },
        ..PreprocessConfig::default()
    }
}

/// Opens `data` as a checkpoint file (recognised by content, so safetensors headers and anything else)
/// and loads its first tensors.
pub fn safetensors_header(data: &[u8]) {
    open_checkpoint(data);
}

/// Opens a `torch.save` archive whose `data.pkl` is `data` and loads its first tensors.
pub fn pickle(data: &[u8]) {
    open_checkpoint(&torch_zip(data));
}

/// A `torch.save` zip archive (`archive/...`, entries stored) holding `pickle` as its `data.pkl`
/// beside [`TORCH_STORAGES`] storages of patterned bytes.
pub fn torch_zip(pickle: &[u8]) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let opts =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    let mut entry = |name: &str, bytes: &[u8]| {
        zip.start_file(name, opts)
            .and_then(|()| Ok(zip.write_all(bytes)?))
            .expect("writing a zip in memory cannot fail");
    };
    entry("archive/data.pkl", pickle);
    entry("archive/byteorder", b"little");
    for key in 0..TORCH_STORAGES {
        let bytes: Vec<u8> = (0..TORCH_STORAGE_LEN)
            .map(|i| (i * 37 + key) as u8)
            .collect();
        entry(&format!("archive/data/{key}"), &bytes);
    }
    entry("archive/version", b"3\n");
    zip.finish()
        .expect("writing a zip in memory cannot fail")
        .into_inner()
}

/// Writes `bytes` to a temporary file (checkpoints are memory-mapped from a path), opens it as
/// `coca info` and `coca convert` do, and loads up to [`MAX_TENSORS_LOADED`] tensors as stored and
/// as f32.
fn open_checkpoint(bytes: &[u8]) {
    let mut file = tempfile::Builder::new()
        .prefix("coca-fuzz-")
        .tempfile()
        .expect("create a temporary file");
    file.write_all(bytes).expect("write the temporary file");
    let Ok(ckpt) = Checkpoint::open(file.path()) else {
        return;
    };
    let _ = ckpt.num_params();
    let names: Vec<String> = ckpt
        .names()
        .take(MAX_TENSORS_LOADED)
        .map(str::to_owned)
        .collect();
    for name in names {
        let shape = ckpt.info(&name).map(|i| i.shape.clone());
        if let Ok(tensor) = ckpt.get_stored(&name, &Device::Cpu) {
            assert_eq!(Some(tensor.dims().to_vec()), shape, "shape of '{name}'");
        }
        let _ = ckpt.get(&name, DType::F32, &Device::Cpu);
    }
}

/// Tokenizes `data` (as UTF-8, invalid sequences replaced) at CoCa's context length and at a tiny one,
/// then decodes the result and the input's byte pairs read as token ids (out-of-vocabulary ids
/// included).
pub fn tokenize(data: &[u8]) {
    let tokenizer = Tokenizer::new().expect("the bundled vocabulary loads");
    let text = String::from_utf8_lossy(data);
    for context_length in [DEFAULT_CONTEXT_LENGTH, data.len() % 8] {
        let row = tokenizer.tokenize(&text, context_length);
        assert_eq!(row.ids.len(), context_length, "row length");
        assert!(row.n_tokens <= context_length, "token count");
        let _ = tokenizer.decode_caption(&row.ids);
    }
    let ids: Vec<u32> = data
        .chunks_exact(2)
        .map(|pair| u32::from(u16::from_le_bytes([pair[0], pair[1]])))
        .collect();
    let _ = tokenizer.decode(&ids);
    let _ = tokenizer.decode_caption(&ids);
}
