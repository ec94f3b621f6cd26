//! `coca classify` end to end: rankings against open_clip (fixtures/zeroshot), the cache, and the errors.

mod common;

use std::path::Path;
use std::process::Output;

use common::{assert_fails_with, command, root, stderr, DEMO_CFG, DEMO_WEIGHTS};

/// Run `coca classify` on the demo model with `args`, caching into `cache` (or with COCA_CACHE_DIR unset
/// and HOME pointing into a temp dir, so no test ever touches the real user cache).
fn classify(args: &[&str], env_cache: Option<&Path>, home: &Path) -> Output {
    let mut cmd = command();
    cmd.args([
        "classify",
        "--model",
        DEMO_CFG,
        "--pretrained",
        DEMO_WEIGHTS,
    ])
    .args(args)
    .env_remove("XDG_CACHE_HOME")
    .env_remove("COCA_CACHE_DIR")
    .env_remove("COCA_LOG")
    .env("HOME", home);
    if let Some(dir) = env_cache {
        cmd.env("COCA_CACHE_DIR", dir);
    }
    cmd.output().expect("run coca")
}

fn assert_ok(o: &Output) {
    assert!(o.status.success(), "failed: {}", stderr(o));
}

#[derive(serde::Deserialize)]
struct Fixture {
    classnames: Vec<String>,
    templates: Vec<String>,
    images: Vec<String>,
    top5: Vec<Vec<usize>>,
    top5_probabilities: Vec<Vec<f32>>,
}

fn fixture() -> Fixture {
    let text =
        std::fs::read_to_string(root().join("fixtures/zeroshot/demo_classifier.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The fixture's classes (one per line) and templates (a JSON list) as files in `dir`.
fn write_lists(dir: &Path, f: &Fixture) -> (String, String) {
    let classes = dir.join("classnames.txt");
    std::fs::write(&classes, f.classnames.join("\n") + "\n").unwrap();
    let templates = dir.join("templates.json");
    std::fs::write(&templates, serde_json::to_string(&f.templates).unwrap()).unwrap();
    (
        classes.to_str().unwrap().to_string(),
        templates.to_str().unwrap().to_string(),
    )
}

fn check_against_open_clip(json: &serde_json::Value, f: &Fixture) {
    let results = json.as_array().expect("a JSON list");
    assert_eq!(results.len(), f.images.len());
    for (i, result) in results.iter().enumerate() {
        assert_eq!(result["image"], f.images[i].as_str());
        let top = result["top_k"].as_array().unwrap();
        assert_eq!(top.len(), 5);
        for (rank, entry) in top.iter().enumerate() {
            let index = entry["index"].as_u64().unwrap() as usize;
            assert_eq!(index, f.top5[i][rank], "{}: rank {rank}", f.images[i]);
            assert_eq!(entry["class"], f.classnames[index].as_str());
            let p = entry["probability"].as_f64().unwrap() as f32;
            assert!((p - f.top5_probabilities[i][rank]).abs() <= 1e-3, "{p}");
        }
    }
}

#[test]
fn json_top5_matches_open_clip_and_the_cache_is_reused() {
    let f = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let (classes, templates) = write_lists(tmp.path(), &f);
    let cache = tmp.path().join("cache");
    let mut args = vec!["--classes", &classes, "--templates", &templates, "--json"];
    args.extend(f.images.iter().map(String::as_str));

    let first = classify(&args, Some(&cache), tmp.path());
    assert_ok(&first);
    let json: serde_json::Value = serde_json::from_slice(&first.stdout).unwrap();
    check_against_open_clip(&json, &f);
    let files: Vec<_> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "one cache file: {files:?}");
    assert!(files[0].extension().is_some_and(|e| e == "safetensors"));

    // Second run: read from the cache (-v logs it), same output.
    let mut verbose = args.clone();
    verbose.push("-v");
    let second = classify(&verbose, Some(&cache), tmp.path());
    assert_ok(&second);
    assert!(
        stderr(&second).contains("from the cache"),
        "{}",
        stderr(&second)
    );
    assert_eq!(first.stdout, second.stdout);

    // A corrupt cache file is reported, rebuilt, and gives the same answer.
    std::fs::write(&files[0], b"garbage").unwrap();
    let third = classify(&args, Some(&cache), tmp.path());
    assert_ok(&third);
    assert!(
        stderr(&third).contains("ignoring the cached classifier"),
        "{}",
        stderr(&third)
    );
    assert_eq!(first.stdout, third.stdout);
    assert!(std::fs::read(&files[0]).unwrap().len() > 100, "rewritten");
}

#[test]
fn cache_dir_flag_default_location_and_no_cache() {
    let f = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let (classes, templates) = write_lists(tmp.path(), &f);
    let image = f.images[0].as_str();
    let base = ["--classes", &classes, "--templates", &templates, "-q"];

    // --cache-dir wins over COCA_CACHE_DIR.
    let flag_dir = tmp.path().join("flag");
    let env_dir = tmp.path().join("env");
    let mut args = base.to_vec();
    args.extend(["--cache-dir", flag_dir.to_str().unwrap(), image]);
    assert_ok(&classify(&args, Some(&env_dir), tmp.path()));
    assert_eq!(std::fs::read_dir(&flag_dir).unwrap().count(), 1);
    assert!(!env_dir.exists());

    // Without either: $HOME/.cache/coca/zeroshot.
    let mut args = base.to_vec();
    args.push(image);
    assert_ok(&classify(&args, None, tmp.path()));
    let default_dir = tmp.path().join(".cache/coca/zeroshot");
    assert_eq!(std::fs::read_dir(&default_dir).unwrap().count(), 1);

    // --no-cache writes nothing.
    let home = tempfile::tempdir().unwrap();
    let mut args = base.to_vec();
    args.extend(["--no-cache", image]);
    let out = classify(&args, None, home.path());
    assert_ok(&out);
    assert!(!home.path().join(".cache").exists());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with(image), "{text}");
    assert!(
        text.contains(&format!("%  {}  (#", f.classnames[f.top5[0][0]])),
        "{text}"
    );
}

#[test]
fn builtin_imagenet_classes_with_simple_templates() {
    let tmp = tempfile::tempdir().unwrap();
    let out = classify(
        &[
            "--templates",
            "simple",
            "--top-k",
            "3",
            "--json",
            "--no-cache",
            "fixtures/images/sources/chelsea.png",
        ],
        None,
        tmp.path(),
    );
    assert_ok(&out);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let top = json[0]["top_k"].as_array().unwrap();
    assert_eq!(top.len(), 3);
    for entry in top {
        let index = entry["index"].as_u64().unwrap();
        assert!(index < 1000);
        assert!(entry["class"].as_str().is_some_and(|c| !c.is_empty()));
    }
}

#[test]
fn input_errors_name_the_problem() {
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path().join("empty.txt");
    std::fs::write(&empty, "\n").unwrap();
    let no_placeholder = tmp.path().join("t.txt");
    std::fs::write(&no_placeholder, "a photo of a {c}.\na photo.\n").unwrap();
    let image = "fixtures/images/sources/chelsea.png";
    let home = tmp.path();

    let out = classify(&["--classes", empty.to_str().unwrap(), image], None, home);
    assert_fails_with(&out, &["empty.txt", "lists nothing"]);
    let out = classify(
        &["--templates", no_placeholder.to_str().unwrap(), image],
        None,
        home,
    );
    assert_fails_with(&out, &["t.txt", "template #2", "no `{c}` placeholder"]);
    let out = classify(&["--classes", "imagenet22k", image], None, home);
    assert_fails_with(
        &out,
        &["unknown built-in class list `imagenet22k`", "imagenet"],
    );
    let out = classify(&["--templates", "fancy", image], None, home);
    assert_fails_with(
        &out,
        &["unknown built-in template set `fancy`", "openai, simple"],
    );
    let out = classify(&["missing.jpg"], None, home);
    assert_fails_with(&out, &["missing.jpg: no such image file"]);
    let out = classify(&["--top-k", "0", image], None, home);
    assert_fails_with(&out, &["--top-k must be at least 1"]);
    // Nothing was cached by the failures.
    assert!(!home.join(".cache").exists());
}
