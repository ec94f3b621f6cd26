//! End-to-end tests of `coca caption`: captions against open_clip from image files, and the error paths.

mod common;

use serde_json::Value;

use common::{coca, root, stderr, DEMO_CFG, DEMO_WEIGHTS};

const DEMO: [&str; 4] = ["--model", DEMO_CFG, "--pretrained", DEMO_WEIGHTS];

/// `coca caption` with the demo model on the reference images, JSON with tokens; returns the token rows.
fn caption_tokens(extra: &[&str]) -> Vec<Vec<u64>> {
    let expected = reference();
    let images: Vec<String> = expected["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    let mut args: Vec<&str> = vec!["caption"];
    args.extend(DEMO);
    args.extend(extra);
    args.extend(["--json", "--tokens"]);
    args.extend(images.iter().map(String::as_str));
    let out = coca(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["captions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            assert!(c["caption"].as_str().is_some_and(|s| !s.is_empty()));
            assert!(c["log_prob"].as_f64().unwrap() < 0.0);
            c["tokens"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_u64().unwrap())
                .collect()
        })
        .collect()
}

fn reference() -> Value {
    let path = root().join("fixtures/generation/demo_end_to_end.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn rows(v: &Value) -> Vec<Vec<u64>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let mut r: Vec<u64> = r
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_u64().unwrap())
                .collect();
            // open_clip pads a batch's rows to one length with 0.
            while r.len() > 1 && r.last() == Some(&0) {
                r.pop();
            }
            r
        })
        .collect()
}

#[test]
fn default_call_equals_open_clip_generate_from_image_files() {
    assert_eq!(caption_tokens(&[]), rows(&reference()["default_call"]));
}

#[test]
fn greedy_and_prompted_greedy_equal_open_clip() {
    let refs = reference();
    let greedy = caption_tokens(&[
        "--strategy",
        "greedy",
        "--max-length",
        "12",
        "--min-length",
        "4",
    ]);
    assert_eq!(greedy, rows(&refs["greedy_seq_len_12_min_4"]));
    // top-k with k = 1 is greedy, whatever the seed.
    let top1 = caption_tokens(&[
        "--strategy",
        "top-k",
        "--top-k",
        "1",
        "--seed",
        "9",
        "--max-length",
        "12",
        "--min-length",
        "4",
    ]);
    assert_eq!(top1, greedy);
    let prompted = caption_tokens(&[
        "--strategy",
        "greedy",
        "--prompt",
        "a photo of",
        "--max-length",
        "12",
        "--min-length",
        "4",
    ]);
    assert_eq!(
        prompted,
        rows(&refs["greedy_prompt_a_photo_of_seq_len_12_min_4"])
    );
}

#[test]
fn sampling_repeats_with_its_seed() {
    let args = [
        "--strategy",
        "top-p",
        "--top-p",
        "0.9",
        "--temperature",
        "1.5",
        "--seed",
        "5",
    ];
    assert_eq!(caption_tokens(&args), caption_tokens(&args));
}

#[test]
fn bench_mode_reports_timings() {
    let mut args = vec!["caption"];
    args.extend(DEMO);
    args.extend([
        "--bench",
        "--bench-iters",
        "1",
        "--strategy",
        "greedy",
        "--max-length",
        "6",
        "--min-length",
        "5",
        "fixtures/images/sources/chelsea.png",
    ]);
    let out = coca(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["time_to_first_caption_s"].as_f64().unwrap() > 0.0);
    assert!(v["median_run_s"].as_f64().unwrap() > 0.0);
    assert_eq!(v["new_tokens_first_run"], 5);
}

#[test]
fn bad_inputs_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("notes.jpg");
    std::fs::write(&fake, "not an image").unwrap();
    let fake = fake.to_str().unwrap();
    let mut args = vec!["caption"];
    args.extend(DEMO);
    args.push(fake);
    let out = coca(&args);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("notes.jpg"), "{}", stderr(&out));

    let mut args = vec!["caption"];
    args.extend(DEMO);
    args.extend(["missing.png"]);
    let out = coca(&args);
    assert!(
        stderr(&out).contains("missing.png: no such image file"),
        "{}",
        stderr(&out)
    );

    let mut args = vec!["caption"];
    args.extend(DEMO);
    args.extend([
        "--strategy",
        "beam",
        "--top-k",
        "3",
        "fixtures/images/sources/chelsea.png",
    ]);
    let out = coca(&args);
    assert!(stderr(&out).contains("--top-k"), "{}", stderr(&out));

    let mut args = vec!["caption"];
    args.extend(DEMO);
    args.extend([
        "--max-length",
        "5",
        "--min-length",
        "5",
        "fixtures/images/sources/chelsea.png",
    ]);
    let out = coca(&args);
    assert!(
        stderr(&out).contains("min_tokens_before_eos"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("panicked"));
}

#[test]
fn help_teaches_with_examples() {
    let out = coca(&["caption", "--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    for f in [
        "--preset",
        "--num-beam-groups",
        "--top-p",
        "--prompt",
        "Examples:",
        "seq_len",
    ] {
        assert!(help.contains(f), "missing {f} in help");
    }
}
