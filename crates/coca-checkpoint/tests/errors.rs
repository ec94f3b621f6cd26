//! Every way a file can be wrong gives its own error, naming the file.
//! Broken inputs are derived from the fixtures inside a temporary directory.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use coca_checkpoint::{Checkpoint, CheckpointError};
use common::{expected_shapes, fixture};
use zip::write::SimpleFileOptions;

fn write_temp(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Open `path`, expect an error, and check its message names the file.
fn open_err(path: &Path) -> CheckpointError {
    let err = Checkpoint::open(path).expect_err("opening should fail");
    let msg = err.to_string();
    assert!(
        msg.contains(&path.display().to_string()),
        "message must name the file: {msg}"
    );
    assert_eq!(err.path(), path);
    err
}

/// A zip with the given (name, bytes) entries, stored uncompressed like torch.save.
fn zip_bytes(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, data) in entries {
        zip.start_file(*name, opts).unwrap();
        zip.write_all(data).unwrap();
    }
    zip.finish().unwrap().into_inner()
}

/// A safetensors file from a header and data.
fn safetensors_bytes(header: &str, data: &[u8]) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

#[test]
fn missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let err = open_err(&dir.path().join("nope.bin"));
    assert!(matches!(err, CheckpointError::NotFound { .. }), "{err:?}");
}

#[test]
fn directory_instead_of_file() {
    let dir = tempfile::tempdir().unwrap();
    let err = open_err(dir.path());
    assert!(matches!(err, CheckpointError::Io { .. }), "{err:?}");
}

#[test]
fn empty_file() {
    let dir = tempfile::tempdir().unwrap();
    let err = open_err(&write_temp(dir.path(), "empty.bin", b""));
    assert!(matches!(err, CheckpointError::Empty { .. }), "{err:?}");
}

#[test]
fn text_files_are_described() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, &[u8], &str); 3] = [
        (
            "config.bin",
            b"{\"embed_dim\": 512, \"vision_cfg\": {}}",
            "looks like JSON text",
        ),
        (
            "page.bin",
            b"<!DOCTYPE html>\n<html><head><title>Error",
            "looks like an HTML page",
        ),
        (
            "lfs.safetensors",
            b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 123\n",
            "Git LFS pointer",
        ),
    ];
    for (name, bytes, phrase) in cases {
        let err = open_err(&write_temp(dir.path(), name, bytes));
        assert!(
            matches!(err, CheckpointError::NotACheckpoint { .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains(phrase), "{name}: {err}");
    }
}

#[test]
fn legacy_torch_format() {
    let err = open_err(&fixture("legacy.bin"));
    assert!(
        matches!(err, CheckpointError::LegacyTorchFormat { .. }),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("legacy non-zip torch.save format"),
        "{err}"
    );
}

#[test]
fn truncated_zip() {
    let dir = tempfile::tempdir().unwrap();
    let full = std::fs::read(fixture("plain_f32.bin")).unwrap();
    for keep in [full.len() / 2, full.len() - 10] {
        let err = open_err(&write_temp(dir.path(), "cut.bin", &full[..keep]));
        assert!(
            matches!(err, CheckpointError::CorruptZip { .. }),
            "{keep}: {err:?}"
        );
    }
}

/// Byte range of a zip entry's data inside `bytes`.
fn entry_data_start(bytes: &[u8], name: &str) -> usize {
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
    let entry = zip.by_name(name).unwrap();
    entry.data_start().unwrap() as usize
}

#[test]
fn damaged_tensor_data_fails_its_checksum() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = std::fs::read(fixture("plain_f32.bin")).unwrap();
    // Storage 0 holds visual.proj (the first tensor pickled).
    let at = entry_data_start(&bytes, "plain_f32/data/0");
    bytes[at + 5] ^= 0x40;
    let path = write_temp(dir.path(), "flipped.bin", &bytes);
    let ckpt = Checkpoint::open(&path).unwrap();
    let err = ckpt
        .get("visual.proj", DType::F32, &Device::Cpu)
        .unwrap_err();
    assert!(matches!(err, CheckpointError::CorruptZip { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("checksum mismatch") && msg.contains("visual.proj"),
        "{msg}"
    );
    assert!(msg.contains("flipped.bin"), "{msg}");
    // Other storages are intact and still load.
    assert!(ckpt.get("logit_scale", DType::F32, &Device::Cpu).is_ok());
}

#[test]
fn zip_without_pickle() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = zip_bytes(&[("photos/cat.jpg", b"\xff\xd8\xff")]);
    let err = open_err(&write_temp(dir.path(), "photos.zip", &bytes));
    assert!(
        matches!(err, CheckpointError::NotACheckpoint { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("photos/cat.jpg"), "{err}");
}

#[test]
fn pickle_without_tensors() {
    let dir = tempfile::tempdir().unwrap();
    // pickle.dumps({'epoch': 1, 'name': 'x'}, protocol=2)
    let pickle = b"\x80\x02}q\x00(X\x05\x00\x00\x00epochq\x01K\x01X\x04\x00\x00\x00nameq\x02X\x01\x00\x00\x00xq\x03u.";
    let bytes = zip_bytes(&[("archive/data.pkl", pickle), ("archive/version", b"3\n")]);
    let err = open_err(&write_temp(dir.path(), "no_tensors.bin", &bytes));
    assert!(matches!(err, CheckpointError::NoTensors { .. }), "{err:?}");
    assert!(err.to_string().contains("'epoch', 'name'"), "{err}");
}

#[test]
fn undecodable_pickle() {
    let dir = tempfile::tempdir().unwrap();
    // Opcode 0x95 (FRAME, protocol 4) is outside what torch.save writes by default.
    let bytes = zip_bytes(&[(
        "archive/data.pkl",
        b"\x80\x04\x95\x00\x00\x00\x00\x00\x00\x00\x00.",
    )]);
    let err = open_err(&write_temp(dir.path(), "p4.bin", &bytes));
    assert!(matches!(err, CheckpointError::Pickle { .. }), "{err:?}");
    assert!(err.to_string().contains("protocol 2"), "{err}");
}

#[test]
fn storage_missing_from_archive() {
    let dir = tempfile::tempdir().unwrap();
    let src = std::fs::read(fixture("plain_f32.bin")).unwrap();
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(&src[..])).unwrap();
    let mut out = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for i in 0..zip.len() {
        let entry = zip.by_index_raw(i).unwrap();
        if entry.name().unwrap() != "plain_f32/data/3" {
            out.raw_copy_file(entry).unwrap();
        }
    }
    let bytes = out.finish().unwrap().into_inner();
    let err = open_err(&write_temp(dir.path(), "holey.bin", &bytes));
    assert!(matches!(err, CheckpointError::CorruptZip { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("'data/3', which is not in the archive"),
        "{err}"
    );
}

#[test]
fn truncated_safetensors() {
    let dir = tempfile::tempdir().unwrap();
    let full = std::fs::read(fixture("model_f32.safetensors")).unwrap();
    // Cut inside the data, and inside the header.
    for keep in [full.len() - 7, 40] {
        let err = open_err(&write_temp(dir.path(), "cut.safetensors", &full[..keep]));
        assert!(
            matches!(err, CheckpointError::CorruptSafetensors { .. }),
            "{keep}: {err:?}"
        );
    }
    let err = open_err(&write_temp(dir.path(), "cut.safetensors", &full[..40]));
    assert!(err.to_string().contains("truncated"), "{err}");
}

#[test]
fn corrupt_safetensors_header() {
    let dir = tempfile::tempdir().unwrap();
    let bad_json = safetensors_bytes("{\"a\": {\"dtype\": \"F32\",", b"");
    let err = open_err(&write_temp(dir.path(), "json.safetensors", &bad_json));
    assert!(
        matches!(err, CheckpointError::CorruptSafetensors { .. }),
        "{err:?}"
    );
    let bad_offsets = safetensors_bytes(
        r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,16]}}"#,
        &[0; 16],
    );
    let err = open_err(&write_temp(dir.path(), "offsets.safetensors", &bad_offsets));
    assert!(
        matches!(err, CheckpointError::CorruptSafetensors { .. }),
        "{err:?}"
    );
}

#[test]
fn unsupported_dtype() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = safetensors_bytes(
        r#"{"mask":{"dtype":"BOOL","shape":[2],"data_offsets":[0,2]}}"#,
        &[1, 0],
    );
    let err = open_err(&write_temp(dir.path(), "bool.safetensors", &bytes));
    assert!(
        matches!(err, CheckpointError::UnsupportedDtype { ref name, .. } if name == "mask"),
        "{err:?}"
    );
    assert!(err.to_string().contains("BOOL"), "{err}");
}

#[test]
fn unknown_tensor_name() {
    let ckpt = Checkpoint::open(fixture("model_f32.safetensors")).unwrap();
    let err = ckpt
        .get("visual.nope", DType::F32, &Device::Cpu)
        .unwrap_err();
    assert!(
        matches!(err, CheckpointError::TensorNotFound { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("model_f32.safetensors"), "{err}");
}

#[test]
fn strict_validation_reports_everything_at_once() {
    let ckpt = Checkpoint::open(fixture("plain_f32.bin")).unwrap();
    let mut expected = expected_shapes();
    // The model lacks one tensor the file has, wants two the file lacks, and
    // disagrees on two shapes.
    expected.retain(|(n, _)| n != "text.head.weight");
    expected.push(("visual.transformer.resblocks.2.weight".into(), vec![2, 4]));
    expected.push(("visual.ln_post.weight".into(), vec![4]));
    for (name, shape) in expected.iter_mut() {
        if name == "visual.proj" {
            *shape = vec![3, 4];
        }
        if name == "logit_scale" {
            *shape = vec![1];
        }
    }
    let err = ckpt.validate(&expected).unwrap_err();
    let CheckpointError::Mismatch { report, .. } = &err else {
        panic!("expected Mismatch, got {err:?}")
    };
    assert_eq!(report.missing.len(), 2);
    assert_eq!(
        report.unexpected,
        [("text.head.weight".to_string(), vec![5, 4])]
    );
    assert_eq!(report.wrong_shape.len(), 2);
    let msg = err.to_string();
    for needle in [
        "plain_f32.bin",
        "2 missing, 1 unexpected, 2 with the wrong shape",
        "visual.ln_post.weight [4]",
        "visual.transformer.resblocks.2.weight [2, 4]",
        "text.head.weight [5, 4]",
        "logit_scale expected [1], found []",
        "visual.proj expected [3, 4], found [4, 3]",
    ] {
        assert!(msg.contains(needle), "missing {needle:?} in:\n{msg}");
    }
}
