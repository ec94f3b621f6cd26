//! `--precision int8|bf16` on the CPU and `coca quantize`, on the tiny demo model: embeddings close to f32,
//! captions, quantised files that load to the same bits as packing at load, and clear refusals (a quantised
//! file for another config, int8 on a GPU, corrupted quantised files).

mod common;

use std::path::{Path, PathBuf};

use common::{
    assert_fails_with, assert_refused_cleanly, coca, coca_limited, stdout, DEMO_CFG, DEMO_WEIGHTS,
    HOSTILE_ADDRESS_SPACE,
};
use serde_json::{json, Map, Value};

const IMAGE: &str = "fixtures/images/sources/chelsea.png";
const OTHER_CFG: &str = "fixtures/parity/tiny_legacy/config.json";

/// `coca embed --json` of the test image and two texts with `extra` arguments: (image rows, text rows).
fn embed(pretrained: &str, extra: &[&str]) -> (Vec<Vec<f64>>, Vec<Vec<f64>>) {
    let mut args = vec![
        "embed",
        "--model",
        DEMO_CFG,
        "--pretrained",
        pretrained,
        "--image",
        IMAGE,
        "--text",
        "a photo of a cat",
        "--text",
        "a rocket",
        "--json",
    ];
    args.extend_from_slice(extra);
    let o = coca(&args);
    assert!(o.status.success(), "{}", common::stderr(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).expect("embed --json");
    let rows = |key: &str| -> Vec<Vec<f64>> {
        v[key]
            .as_array()
            .expect(key)
            .iter()
            .map(|r| {
                r.as_array()
                    .expect("a row")
                    .iter()
                    .map(|x| x.as_f64().expect("a number"))
                    .collect()
            })
            .collect()
    };
    (rows("image_embeddings"), rows("text_embeddings"))
}

/// The smallest cosine between matching rows (the rows are L2-normalised).
fn worst_cosine(a: &[Vec<f64>], b: &[Vec<f64>]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| x.iter().zip(y).map(|(p, q)| p * q).sum::<f64>())
        .fold(f64::INFINITY, f64::min)
}

fn quantize(precision: &str, out: &Path) {
    let o = coca(&[
        "quantize",
        "--model",
        DEMO_CFG,
        "--pretrained",
        DEMO_WEIGHTS,
        "--precision",
        precision,
        "--output",
        out.to_str().expect("utf-8 path"),
    ]);
    assert!(o.status.success(), "{}", common::stderr(&o));
}

#[test]
fn int8_and_bf16_embeddings_are_close_to_f32() {
    let (image, text) = embed(DEMO_WEIGHTS, &[]);
    // The goals for the full models: 0.995 (int8) and 0.9995 (bf16).
    for (precision, bound) in [("int8", 0.995), ("bf16", 0.9995)] {
        let (pi, pt) = embed(DEMO_WEIGHTS, &["--precision", precision]);
        let (ci, ct) = (worst_cosine(&image, &pi), worst_cosine(&text, &pt));
        eprintln!("{precision}: image cosine {ci:.6}, text cosine {ct:.6}");
        assert!(ci >= bound && ct >= bound, "{precision}: {ci} {ct}");
        assert!(
            ci < 1.0 || ct < 1.0,
            "{precision}: outputs equal to f32, nothing was packed"
        );
    }
}

#[test]
fn captions_run_in_int8_and_bf16() {
    for precision in ["int8", "bf16"] {
        let o = coca(&[
            "caption",
            "--model",
            DEMO_CFG,
            "--pretrained",
            DEMO_WEIGHTS,
            "--precision",
            precision,
            "--max-length",
            "8",
            "--tokens",
            IMAGE,
        ]);
        assert!(o.status.success(), "{precision}: {}", common::stderr(&o));
        assert!(!stdout(&o).trim().is_empty(), "{precision}: no caption");
    }
}

#[test]
fn a_quantised_file_gives_the_bits_of_packing_at_load() {
    let dir = tempfile::tempdir().expect("tempdir");
    for precision in ["int8", "bf16"] {
        let q = dir.path().join(format!("{precision}.safetensors"));
        quantize(precision, &q);
        let from_file = embed(q.to_str().expect("utf-8"), &[]);
        let at_load = embed(DEMO_WEIGHTS, &["--precision", precision]);
        assert_eq!(from_file, at_load, "{precision}");
        // The file's own precision, named explicitly, is accepted; another one is not.
        let named = embed(q.to_str().expect("utf-8"), &["--precision", precision]);
        assert_eq!(named, at_load, "{precision}");
        let other = if precision == "int8" { "bf16" } else { "int8" };
        let o = coca(&[
            "embed",
            "--model",
            DEMO_CFG,
            "--pretrained",
            q.to_str().expect("utf-8"),
            "--precision",
            other,
            "--text",
            "a cat",
        ]);
        assert_fails_with(&o, &[&format!("runs in {precision} only")]);
    }
}

#[test]
fn a_quantised_file_for_another_config_is_refused_naming_both() {
    let dir = tempfile::tempdir().expect("tempdir");
    let q = dir.path().join("q.safetensors");
    quantize("int8", &q);
    let o = coca(&[
        "embed",
        "--model",
        OTHER_CFG,
        "--pretrained",
        q.to_str().expect("utf-8"),
        "--text",
        "a cat",
    ]);
    assert_fails_with(
        &o,
        &["different model config", "embed_dim: file 16, --model 32"],
    );
}

#[test]
fn int8_on_a_gpu_is_refused_before_the_device_opens() {
    let o = coca(&[
        "embed",
        "--model",
        DEMO_CFG,
        "--pretrained",
        DEMO_WEIGHTS,
        "--precision",
        "int8",
        "--device",
        "cuda:0",
        "--text",
        "a cat",
    ]);
    assert_fails_with(&o, &["int8 runs on the CPU only", "cuda:0"]);
}

/// A parsed safetensors file: metadata and (name → (dtype, shape, bytes)).
struct Tensors {
    metadata: Map<String, Value>,
    tensors: Vec<(String, String, Vec<u64>, Vec<u8>)>,
}

impl Tensors {
    fn read(path: &Path) -> Self {
        let bytes = std::fs::read(path).expect("read");
        let len = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
        let header: Map<String, Value> =
            serde_json::from_slice(&bytes[8..8 + len]).expect("header");
        let data = &bytes[8 + len..];
        let mut metadata = Map::new();
        let mut tensors = Vec::new();
        for (name, v) in header {
            if name == "__metadata__" {
                metadata = v.as_object().expect("metadata").clone();
                continue;
            }
            let offsets: Vec<usize> = v["data_offsets"]
                .as_array()
                .expect("offsets")
                .iter()
                .map(|o| o.as_u64().expect("offset") as usize)
                .collect();
            let shape = v["shape"]
                .as_array()
                .expect("shape")
                .iter()
                .map(|d| d.as_u64().expect("dim"))
                .collect();
            let dtype = v["dtype"].as_str().expect("dtype").to_string();
            tensors.push((name, dtype, shape, data[offsets[0]..offsets[1]].to_vec()));
        }
        Self { metadata, tensors }
    }

    fn write(&self, path: &Path) {
        let mut header = Map::new();
        header.insert("__metadata__".into(), Value::Object(self.metadata.clone()));
        let mut offset = 0;
        let mut data = Vec::new();
        for (name, dtype, shape, bytes) in &self.tensors {
            header.insert(
                name.clone(),
                json!({"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + bytes.len()]}),
            );
            offset += bytes.len();
            data.extend_from_slice(bytes);
        }
        let mut h = Value::Object(header).to_string().into_bytes();
        while !(8 + h.len()).is_multiple_of(8) {
            h.push(b' ');
        }
        let mut out = (h.len() as u64).to_le_bytes().to_vec();
        out.extend(h);
        out.extend(data);
        std::fs::write(path, out).expect("write");
    }

    fn tensor(&mut self, name: &str) -> &mut (String, String, Vec<u64>, Vec<u8>) {
        self.tensors
            .iter_mut()
            .find(|t| t.0 == name)
            .unwrap_or_else(|| panic!("no tensor {name}"))
    }
}

#[test]
fn corrupted_quantised_files_are_refused_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let q = dir.path().join("q.safetensors");
    quantize("int8", &q);
    type Corrupt = fn(&mut Tensors);
    let cases: [(&str, Corrupt, &[&str]); 6] = [
        (
            "scale count",
            |t| {
                let s = t.tensor("visual.transformer.resblocks.0.mlp.c_fc.weight_scale");
                s.2[0] -= 1;
                s.3.truncate(s.3.len() - 4);
            },
            &["c_fc.weight_scale", "must be F32 of shape"],
        ),
        (
            "int8 shape",
            |t| {
                let w = t.tensor("visual.transformer.resblocks.0.mlp.c_fc.weight");
                w.2.reverse();
            },
            &["c_fc.weight", "expected (256, 64) (out, in)"],
        ),
        (
            "missing config",
            |t| {
                t.metadata.remove("coca.quantized.config");
            },
            &["metadata has no coca.quantized.config"],
        ),
        (
            "format version",
            |t| {
                t.metadata
                    .insert("coca.quantized.format".into(), json!("99"));
            },
            &["format version 99"],
        ),
        (
            "an f32 product",
            |t| {
                let w = t.tensor("visual.transformer.resblocks.0.mlp.c_fc.weight");
                w.1 = "F32".into();
                w.3 = vec![0; w.3.len() * 4];
                t.tensors
                    .retain(|x| x.0 != "visual.transformer.resblocks.0.mlp.c_fc.weight_scale");
            },
            &["c_fc.weight", "not stored as I8"],
        ),
        (
            "a packed embedding table in an int8 file",
            |t| {
                let w = t.tensor("text.token_embedding.weight");
                w.1 = "BF16".into();
                w.3 = w.3.chunks_exact(4).flat_map(|f| [f[2], f[3]]).collect();
            },
            &[
                "text.token_embedding.weight",
                "int8 files store every embedding table as F32",
            ],
        ),
    ];
    for (what, corrupt, fragments) in cases {
        let mut t = Tensors::read(&q);
        corrupt(&mut t);
        let bad: PathBuf = dir
            .path()
            .join(format!("{}.safetensors", what.replace(' ', "_")));
        t.write(&bad);
        let o = coca_limited(
            &[
                "embed",
                "--model",
                DEMO_CFG,
                "--pretrained",
                bad.to_str().expect("utf-8"),
                "--text",
                "a cat",
            ],
            HOSTILE_ADDRESS_SPACE,
        );
        eprintln!("{what}: {}", common::stderr(&o).trim());
        assert_refused_cleanly(&o, fragments);
    }
}
