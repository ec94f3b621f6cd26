//! End-to-end tests of the `coca` binary: outputs against open_clip, and every documented error path.

mod common;

use std::path::Path;
use std::process::Output;

use common::{assert_fails_with, coca, root, stderr, stdout, DEMO_CFG, DEMO_WEIGHTS};

fn embed(extra: &[&str]) -> Output {
    let mut args = vec!["embed", "--model", DEMO_CFG, "--pretrained", DEMO_WEIGHTS];
    args.extend_from_slice(extra);
    coca(&args)
}

fn max_abs_diff(a: &[Vec<f64>], b: &serde_json::Value) -> f64 {
    let b: Vec<Vec<f64>> = serde_json::from_value(b.clone()).unwrap();
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(&b)
        .flat_map(|(x, y)| {
            assert_eq!(x.len(), y.len());
            x.iter().zip(y).map(|(p, q)| (p - q).abs())
        })
        .fold(0.0, f64::max)
}

#[test]
fn embed_matches_open_clip_end_to_end() {
    // open_clip's own PIL preprocessing + tokenizer + model on the demo checkpoint (assets/demo/expected.json).
    let expected: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("assets/demo/expected.json")).unwrap(),
    )
    .unwrap();
    let mut args: Vec<String> = Vec::new();
    for img in expected["images"].as_array().unwrap() {
        args.push("--image".into());
        args.push(img.as_str().unwrap().into());
    }
    for t in expected["texts"].as_array().unwrap() {
        args.push("--text".into());
        args.push(t.as_str().unwrap().into());
    }
    args.push("--json".into());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = embed(&refs);
    assert!(o.status.success(), "{}", stderr(&o));
    let got: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let images: Vec<Vec<f64>> = serde_json::from_value(got["image_embeddings"].clone()).unwrap();
    let texts: Vec<Vec<f64>> = serde_json::from_value(got["text_embeddings"].clone()).unwrap();
    for row in images.iter().chain(&texts) {
        let norm: f64 = row.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "not L2-normalised: {norm}");
    }
    let img_err = max_abs_diff(&images, &expected["image_embeddings"]);
    let txt_err = max_abs_diff(&texts, &expected["text_embeddings"]);
    assert!(
        img_err < 1e-4,
        "image embeddings differ from open_clip by {img_err}"
    );
    assert!(
        txt_err < 1e-4,
        "text embeddings differ from open_clip by {txt_err}"
    );
    assert_eq!(got["similarity"].as_array().unwrap().len(), 3);
}

#[test]
fn embed_writes_json_file_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("emb.json");
    let o = embed(&["--text", "a dog", "--output", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(v["text_embeddings"].as_array().unwrap().len(), 1);
    assert_eq!(v["image_embeddings"].as_array().unwrap().len(), 0);
    let leftovers = std::fs::read_dir(dir.path()).unwrap().count();
    assert_eq!(leftovers, 1, "temporary files left behind");
}

#[test]
fn tokenize_gives_open_clip_ids() {
    let o = coca(&["tokenize", "--json", "a photo of a cat"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["context_length"], 76);
    let ids: Vec<u32> = serde_json::from_value(v["tokens"][0].clone()).unwrap();
    assert_eq!(&ids[..8], &[49406, 320, 1125, 539, 320, 2368, 49407, 0]);
    assert_eq!(ids.len(), 76);
}

#[test]
fn long_text_is_truncated_with_a_note_in_verbose_mode() {
    let long = "word ".repeat(200);
    let o = coca(&["-v", "tokenize", "--json", &long]);
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["truncated"][0], true);
    assert_eq!(v["tokens"][0][75], 49407, "eot must stay last");
    assert!(stderr(&o).contains("truncated"), "{}", stderr(&o));
    let quiet = coca(&["tokenize", &long]);
    assert!(!stderr(&quiet).contains("truncated"));
}

#[test]
fn convert_round_trips_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("demo.safetensors");
    let out_s = out.to_str().unwrap();
    let o = coca(&[
        "convert",
        "--model",
        DEMO_CFG,
        "--pretrained",
        DEMO_WEIGHTS,
        "--output",
        out_s,
        "--save-dtype",
        "fp32",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let a = embed(&["--text", "a cat", "--json"]);
    let b = coca(&[
        "embed",
        "--model",
        DEMO_CFG,
        "--pretrained",
        out_s,
        "--text",
        "a cat",
        "--json",
    ]);
    assert!(b.status.success(), "{}", stderr(&b));
    // f16 weights widened to f32 on save compute exactly what the f16 file gives after widening on load.
    assert_eq!(stdout(&a), stdout(&b));
    let again = coca(&[
        "convert",
        "--model",
        DEMO_CFG,
        "--pretrained",
        DEMO_WEIGHTS,
        "--output",
        out_s,
    ]);
    assert_fails_with(&again, &["already exists", "--force"]);
}

#[test]
fn convert_of_a_bin_checkpoint_validates_and_converts() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.safetensors");
    let fixture = "fixtures/parity/tiny_legacy";
    let o = coca(&[
        "convert",
        "--model",
        &format!("{fixture}/config.json"),
        "--pretrained",
        &format!("{fixture}/open_clip_pytorch_model.bin"),
        "--output",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let info = coca(&[
        "info",
        "--model",
        &format!("{fixture}/config.json"),
        "--pretrained",
        out.to_str().unwrap(),
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&info)).unwrap();
    assert_eq!(v["checkpoint"]["validation"], "matches the model");
}

#[test]
fn info_counts_match_open_clip() {
    // Totals measured by instantiating open_clip 3.3.0's models.
    for (model, total) in [
        ("coca_ViT-B-32", 253_560_065u64),
        ("coca_ViT-L-14", 638_450_177),
    ] {
        let o = coca(&["info", "--model", model, "--json"]);
        assert!(o.status.success(), "{}", stderr(&o));
        let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
        assert_eq!(v["parameters"]["total"], total, "{model}");
    }
}

#[test]
fn unknown_model_lists_known_ones() {
    let o = coca(&["info", "--model", "coca_ViT-Q-99"]);
    assert_fails_with(
        &o,
        &[
            "unknown model `coca_ViT-Q-99`",
            "coca_ViT-B-32",
            "coca_ViT-L-14",
        ],
    );
}

#[test]
fn unsupported_hf_text_tower_is_refused() {
    let o = coca(&["info", "--model", "coca_roberta-ViT-B-32"]);
    assert_fails_with(&o, &["roberta-base", "not supported"]);
}

#[test]
fn malformed_config_json_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("broken.json");
    std::fs::write(&cfg, "{\"embed_dim\": 16, ").unwrap();
    let o = coca(&["info", "--model", cfg.to_str().unwrap()]);
    assert_fails_with(&o, &["broken.json", "not a valid open_clip model config"]);
}

#[test]
fn missing_checkpoint_is_reported() {
    let o = embed_with_weights("nowhere/model.bin", &["--text", "x"]);
    assert_fails_with(
        &o,
        &[
            "nowhere/model.bin",
            "neither an existing file nor a known pretrained tag",
        ],
    );
    let tag = embed_with_weights("laion2b_s13b_b90k", &["--text", "x"]);
    assert_fails_with(&tag, &["laion2b_s13b_b90k", "coca_ViT-B-32"]);
}

#[test]
fn offline_tag_without_cache_says_what_to_do() {
    let home = tempfile::tempdir().unwrap();
    let o = common::command()
        .args([
            "embed",
            "--model",
            "coca_ViT-B-32",
            "--pretrained",
            "laion2B-s13B-b90k",
            "--text",
            "x",
        ])
        .env("HF_HOME", home.path())
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    assert_fails_with(
        &o,
        &[
            "HF_HUB_OFFLINE",
            "laion/CoCa-ViT-B-32-laion2B-s13B-b90k",
            "--pretrained /path/to/",
        ],
    );
}

fn embed_with_weights(weights: &str, extra: &[&str]) -> Output {
    let mut args = vec!["embed", "--model", DEMO_CFG, "--pretrained", weights];
    args.extend_from_slice(extra);
    coca(&args)
}

#[test]
fn a_file_that_is_not_a_checkpoint_is_reported() {
    let o = embed_with_weights("README.md", &["--text", "x"]);
    assert_fails_with(&o, &["README.md"]);
}

#[test]
fn checkpoint_of_another_architecture_is_reported_in_one_error() {
    let o = embed_with_weights(
        "fixtures/parity/tiny_legacy/open_clip_model.safetensors",
        &["--text", "x"],
    );
    assert_fails_with(
        &o,
        &["open_clip_model.safetensors", "missing", "visual.proj"],
    );
}

#[test]
fn corrupt_and_unsupported_images_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let corrupt = dir.path().join("broken.jpg");
    let jpeg = std::fs::read(root().join("fixtures/images/sources/rocket.jpg")).unwrap();
    std::fs::write(&corrupt, &jpeg[..jpeg.len() / 3]).unwrap();
    let o = embed(&["--image", corrupt.to_str().unwrap()]);
    assert_fails_with(&o, &["broken.jpg"]);

    let text = dir.path().join("notes.png");
    std::fs::write(&text, "this is not an image").unwrap();
    let o = embed(&["--image", text.to_str().unwrap()]);
    assert_fails_with(&o, &["notes.png"]);

    let o = embed(&["--image", "missing/cat.jpg"]);
    assert_fails_with(&o, &["missing/cat.jpg", "no such image file"]);
}

#[test]
fn empty_text_and_empty_request_are_refused() {
    assert_fails_with(&embed(&["--text", "  "]), &["text #1 is empty"]);
    assert_fails_with(
        &embed(&["--text", "ok", "--text", ""]),
        &["text #2 is empty"],
    );
    assert_fails_with(&embed(&[]), &["nothing to embed"]);
}

#[test]
fn out_of_vocabulary_model_is_explained() {
    // The parity fixtures use a 256-token vocabulary, so CLIP ids do not fit.
    let fixture = Path::new("fixtures/parity/tiny_legacy");
    let o = coca(&[
        "embed",
        "--model",
        fixture.join("config.json").to_str().unwrap(),
        "--pretrained",
        fixture
            .join("open_clip_model.safetensors")
            .to_str()
            .unwrap(),
        "--text",
        "a photo of a cat",
    ]);
    assert_fails_with(&o, &["outside this model's vocabulary of 256"]);
}

#[test]
fn parity_command_passes_on_a_fixture() {
    let o = coca(&["parity", "fixtures/parity/tiny_cascade"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("relative_norm"));
}

#[test]
fn precision_and_device_are_checked_when_the_flags_are_parsed() {
    // Before any model is read: clap refuses the value with the parser's reason.
    let embed = |flag: &str, value: &str| {
        coca(&[
            "embed",
            "--model",
            DEMO_CFG,
            "--pretrained",
            "no-such-checkpoint.safetensors",
            flag,
            value,
            "--text",
            "a cat",
        ])
    };
    let o = embed("--precision", "fp8");
    assert_fails_with(
        &o,
        &[
            "--precision",
            "unknown precision `fp8`; use fp32, fp16, bf16 or int8",
        ],
    );
    let o = embed("--device", "tpu");
    assert_fails_with(&o, &["--device", "unknown device `tpu`; use cpu or cuda:N"]);
    let o = embed("--device", "cuda:x");
    assert_fails_with(&o, &["bad device `cuda:x`"]);
    // `coca train` also takes a bare `cuda` (each rank's GPU) and refuses the rest the same way.
    let o = coca(&["train", "--demo", "--device", "tpu"]);
    assert_fails_with(&o, &["--device", "unknown device `tpu`; use cpu or cuda:N"]);
    // The spellings open_clip and dtypes use are accepted.
    for value in ["BF16", "bfloat16", "float32", "pure_fp16"] {
        let o = embed("--precision", value);
        assert!(
            !stderr(&o).contains("--precision"),
            "{value}: {}",
            stderr(&o)
        );
    }
}
