//! `coca probe` end to end on the demo model: a probe on frozen features beats chance clearly on an easy
//! synthetic task (the colour of one shape), the JSON schema, the cache, the saved probe, and the errors.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use coca_data::scenes::Split;
use common::{assert_fails_with, command, stderr, write_colour_folders, DEMO_CFG, DEMO_WEIGHTS};

fn probe(args: &[&str], cache: &Path) -> Output {
    command()
        .args([
            "-q",
            "probe",
            "--model",
            DEMO_CFG,
            "--pretrained",
            DEMO_WEIGHTS,
        ])
        .args(["--cache-dir", cache.to_str().unwrap()])
        .args(args)
        .output()
        .expect("run coca")
}

fn ok(o: &Output) {
    assert!(o.status.success(), "failed: {}", stderr(o));
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn probes_beat_chance_cache_their_features_and_predict() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("colours");
    let classes = write_colour_folders(&data, 16, Split::Train);
    let cache = tmp.path().join("cache");
    let out = tmp.path().join("pooler.json");
    let saved = tmp.path().join("pooler.probe.safetensors");
    let confusion = tmp.path().join("plots/confusion");
    let data_s = data.to_str().unwrap();
    let o = probe(
        &[
            "--train-dir",
            data_s,
            "--val-fraction",
            "0.25",
            "--pooler-queries",
            "1",
            "--pooler-heads",
            "4",
            "--output",
            out.to_str().unwrap(),
            "--confusion",
            confusion.to_str().unwrap(),
            "--save-probe",
            saved.to_str().unwrap(),
        ],
        &cache,
    );
    ok(&o);
    let v = read_json(&out);
    assert_eq!(v["task"], "attentional_probe");
    assert_eq!(v["model"], DEMO_CFG);
    assert_eq!(v["dataset"], data_s);
    assert_eq!(v["classes"], serde_json::json!(classes));
    assert_eq!(v["train_samples"], 48);
    assert_eq!(v["val_samples"], 16);
    assert_eq!(v["probe"]["queries"], 1);
    assert_eq!(v["probe"]["heads"], 4);
    // 4 classes: no top-5; chance is 25%.
    let acc1 = v["metrics"]["acc1"].as_f64().unwrap();
    assert!(acc1 >= 0.75, "attentional probe top-1 {acc1}");
    assert!(v["metrics"]["acc5"].is_null());
    assert!(v["metrics"]["mean_per_class_recall"].as_f64().unwrap() >= 0.7);
    let matrix = v["confusion_matrix"].as_array().unwrap();
    assert_eq!(matrix.len(), 4);
    let total: u64 = matrix
        .iter()
        .flat_map(|r| r.as_array().unwrap())
        .map(|c| c.as_u64().unwrap())
        .sum();
    assert_eq!(total, 16);
    assert_eq!(v["features"][0]["reused"], false);
    for ext in ["png", "svg"] {
        assert!(tmp.path().join(format!("plots/confusion.{ext}")).is_file());
    }
    assert!(saved.is_file());

    // A linear probe on the same data reuses the cached features (the model is not even loaded).
    let o = probe(
        &[
            "--train-dir",
            data_s,
            "--val-fraction",
            "0.25",
            "--linear",
            "--json",
        ],
        &cache,
    );
    ok(&o);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["task"], "linear_probe");
    assert_eq!(v["features"][0]["reused"], true);
    let acc1 = v["metrics"]["acc1"].as_f64().unwrap();
    assert!(acc1 >= 0.6, "linear probe top-1 {acc1}");

    // Rewriting an image invalidates the cache.
    let first = data.join(&classes[0]).join("000.png");
    let bytes = std::fs::read(&first).unwrap();
    std::fs::write(&first, &bytes).unwrap();
    std::fs::write(&first, bytes).unwrap();
    let o = probe(
        &["--train-dir", data_s, "--linear", "--json", "--epochs", "1"],
        &cache,
    );
    ok(&o);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["features"][0]["reused"], false);

    // The saved probe classifies new images.
    let held_out = tmp.path().join("held_out");
    write_colour_folders(&held_out, 1, Split::Test);
    let images: Vec<PathBuf> = classes
        .iter()
        .map(|c| held_out.join(c).join("000.png"))
        .collect();
    let mut cmd = command();
    cmd.args(["probe", "--model", DEMO_CFG, "--pretrained", DEMO_WEIGHTS])
        .args([
            "--predict",
            saved.to_str().unwrap(),
            "--json",
            "--top-k",
            "2",
        ])
        .args(&images);
    let o = cmd.output().unwrap();
    ok(&o);
    let results: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let results = results.as_array().unwrap();
    assert_eq!(results.len(), 4);
    let mut right = 0;
    for (result, class) in results.iter().zip(&classes) {
        let top = result["top_k"].as_array().unwrap();
        assert_eq!(top.len(), 2);
        assert!(top[0]["probability"].as_f64().unwrap() >= top[1]["probability"].as_f64().unwrap());
        right += usize::from(top[0]["class"] == class.as_str());
    }
    assert!(right >= 3, "{right} of 4 held-out images right");
}

#[test]
fn errors_name_the_problem() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let data = tmp.path().join("data");
    write_colour_folders(&data, 2, Split::Train);
    std::fs::create_dir(data.join("empty")).unwrap();
    let o = probe(&["--train-dir", data.to_str().unwrap()], &cache);
    assert_fails_with(&o, &["class folder `empty` has no images"]);
    std::fs::remove_dir(data.join("empty")).unwrap();

    // An unreadable image is not an error: it is skipped and counted, naming it and the reason.
    std::fs::write(data.join("red/broken.png"), b"not a png").unwrap();
    let o = probe(
        &["--train-dir", data.to_str().unwrap(), "--linear", "--json"],
        &cache,
    );
    ok(&o);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["skipped_images"], 1, "{v}");
    let listed = v["skipped_items"][0].as_str().unwrap();
    assert!(
        listed.contains("broken.png") && listed.contains("unsupported image format"),
        "{listed}"
    );
    assert_eq!(
        v["train_samples"].as_u64().unwrap() + v["val_samples"].as_u64().unwrap(),
        8
    );

    let o = probe(
        &["--train-dir", tmp.path().join("nowhere").to_str().unwrap()],
        &cache,
    );
    assert_fails_with(&o, &["nowhere", "no such file or directory"]);

    let o = probe(
        &[
            "--train-dir",
            data.to_str().unwrap(),
            "--val-fraction",
            "1.5",
        ],
        &cache,
    );
    assert_fails_with(&o, &["--val-fraction must be between 0 and 1"]);
}
