//! Hostile images: header bombs of every format (`fixtures/adversarial/images/`, made by
//! `scripts/adversarial/make_images.py`) are refused before their pixels are allocated, a bomb inside a
//! collection is skipped and counted, a legal near-limit image decodes within a small multiple of its RGB
//! size, and `--max-image-pixels` moves the limit.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;

use common::{
    assert_fails_with, assert_refused_cleanly, coca, coca_limited, command, stderr, stdout,
    DEMO_CFG, DEMO_WEIGHTS, HOSTILE_ADDRESS_SPACE,
};

const BOMBS: &str = "fixtures/adversarial/images";
const MODEL: [&str; 4] = ["--model", DEMO_CFG, "--pretrained", DEMO_WEIGHTS];
/// A small ordinary image of the collection fixtures.
const NORMAL: &str = "fixtures/data/folder/coffee.jpg";

/// The manifest's entries: file name and the fragments its error must contain.
fn manifest() -> Vec<(String, Vec<String>)> {
    let text = std::fs::read_to_string(common::root().join(BOMBS).join("manifest.json"))
        .expect("read the image bomb manifest");
    let json: serde_json::Value = serde_json::from_str(&text).expect("manifest is JSON");
    let files = json["files"].as_array().expect("manifest lists files");
    assert!(files.len() >= 10, "expected a bomb per format");
    files
        .iter()
        .map(|f| {
            let name = f["file"].as_str().expect("file name").to_string();
            let expect = f["expect"]
                .as_array()
                .expect("expected fragments")
                .iter()
                .map(|e| e.as_str().expect("fragment").to_string())
                .collect();
            (name, expect)
        })
        .collect()
}

/// Runs `coca <sub> MODEL <before...> <file>` under the hostile-input address-space limit for every bomb and
/// checks the refusal.
fn every_bomb_refused(sub: &str, before: &[&str]) {
    for (name, expect) in manifest() {
        let path = format!("{BOMBS}/{name}");
        let mut args = vec![sub];
        args.extend(MODEL);
        args.extend(before);
        args.push(&path);
        let o = coca_limited(&args, HOSTILE_ADDRESS_SPACE);
        let mut fragments: Vec<&str> = expect.iter().map(String::as_str).collect();
        fragments.push(&name);
        assert_refused_cleanly(&o, &fragments);
        assert_eq!(
            stderr(&o).trim().lines().count(),
            1,
            "{name}: one error line expected: {}",
            stderr(&o)
        );
    }
}

#[test]
fn embed_refuses_every_header_bomb_before_allocating() {
    every_bomb_refused("embed", &["--image"]);
}

#[test]
fn caption_refuses_every_header_bomb_before_allocating() {
    every_bomb_refused("caption", &[]);
}

#[test]
fn a_bomb_in_a_collection_is_skipped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input");
    std::fs::create_dir(&input).unwrap();
    std::fs::copy(common::root().join(NORMAL), input.join("coffee.jpg")).unwrap();
    std::fs::copy(
        common::root().join(BOMBS).join("gif_screen_60000.gif"),
        input.join("bomb.gif"),
    )
    .unwrap();
    std::fs::copy(
        common::root().join(BOMBS).join("png_ihdr_100000.png"),
        input.join("bomb.png"),
    )
    .unwrap();
    let out = dir.path().join("index");
    let (input_s, out_s) = (input.to_str().unwrap(), out.to_str().unwrap());
    let mut args = vec!["embed"];
    args.extend(MODEL);
    args.extend(["--input-dir", input_s, "--output-dir", out_s, "--json"]);
    let o = coca_limited(&args, HOSTILE_ADDRESS_SPACE);
    assert!(
        o.status.success(),
        "the collection must complete; stderr: {}",
        stderr(&o)
    );
    let summary: serde_json::Value = serde_json::from_str(stdout(&o).trim()).expect("JSON summary");
    assert_eq!(summary["embedded"], 1, "{summary}");
    assert_eq!(summary["skipped"], 2, "{summary}");
    let err = stderr(&o);
    for fragment in ["bomb.gif", "bomb.png", "60000x60000", "100000x100000"] {
        assert!(err.contains(fragment), "{fragment} not named: {err}");
    }
    // A rerun (which resumes) completes too, instead of dying at the same file.
    let o = coca_limited(&args, HOSTILE_ADDRESS_SPACE);
    assert!(o.status.success(), "rerun: {}", stderr(&o));
}

#[test]
fn a_lowered_limit_refuses_an_ordinary_image_with_the_message() {
    // The image is 37x23 = 851 pixels.
    let mut args = vec!["embed", "--max-image-pixels", "851"];
    args.extend(MODEL);
    args.extend(["--image", NORMAL]);
    assert!(
        coca(&args).status.success(),
        "exactly at the limit is allowed"
    );
    let mut args = vec!["embed", "--max-image-pixels", "850"];
    args.extend(MODEL);
    args.extend(["--image", NORMAL]);
    let o = coca(&args);
    assert_fails_with(
        &o,
        &[
            NORMAL,
            "image too large",
            "37x23 is 851 pixels",
            "limit of 850 pixels",
        ],
    );
    // The flag is global: it works after the subcommand's own flags too, and on caption.
    let mut args = vec!["caption"];
    args.extend(MODEL);
    args.extend([NORMAL, "--max-image-pixels", "850"]);
    assert_fails_with(&coca(&args), &[NORMAL, "limit of 850 pixels"]);
    let o = coca(&["embed", "--max-image-pixels", "0", "--image", NORMAL]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--max-image-pixels"), "{}", stderr(&o));
}

#[test]
fn the_limit_flag_is_documented_on_every_image_command() {
    for sub in [
        "embed", "caption", "classify", "search", "probe", "eval", "train", "serve",
    ] {
        let o = coca(&[sub, "--help"]);
        let help = stdout(&o);
        assert!(help.contains("--max-image-pixels"), "{sub}: {help}");
        assert!(help.contains("PIL only warns"), "{sub}: {help}");
    }
}

/// A baseline JPEG of `side` × `side` pixels, 4:2:0, every block zero (mid grey): the standard Huffman
/// tables (which a JPEG without DHT segments uses) code each MCU of four luma and two chroma blocks in
/// exactly four bytes, so even a near-limit image is a small file.
fn grey_jpeg(side: u16) -> Vec<u8> {
    let mut out = vec![0xFF, 0xD8];
    out.extend([0xFF, 0xDB, 0, 67, 0]);
    out.extend([1u8; 64]);
    out.extend([0xFF, 0xC0, 0, 17, 8]);
    out.extend(side.to_be_bytes());
    out.extend(side.to_be_bytes());
    out.extend([3, 1, 0x22, 0, 2, 0x11, 0, 3, 0x11, 0]);
    out.extend([0xFF, 0xDA, 0, 12, 3, 1, 0x00, 2, 0x11, 3, 0x11, 0, 63, 0]);
    let mcus = usize::from(side).div_ceil(16).pow(2);
    // Luma: DC category 0 ("00") + EOB ("1010") four times; chroma: "00" + "00" twice.
    for _ in 0..mcus {
        out.extend([0x28, 0xA2, 0x8A, 0x00]);
    }
    out.extend([0xFF, 0xD9]);
    out
}

/// Runs `coca args` to completion and returns whether it succeeded, its stderr and its peak resident set
/// size in bytes (the kernel's record for that one child, read with `wait4`).
// The child is reaped by `wait4`, which std's `Child::wait` cannot replace: it does not return the usage.
#[allow(clippy::zombie_processes)]
fn peak_rss(args: &[&str], dir: &Path) -> (bool, String, u64) {
    let err_path = dir.join("stderr.txt");
    let child = command()
        .args(args)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .expect("run coca");
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: rusage is plain data, fully written by wait4 on success.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child; `status` and `usage` outlive the call.
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(waited, pid, "wait4: {}", std::io::Error::last_os_error());
    let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    let err = std::fs::read_to_string(&err_path).unwrap_or_default();
    (ok, err, usage.ru_maxrss as u64 * 1024)
}

#[test]
fn a_near_limit_image_decodes_within_one_and_a_half_times_its_rgb_size() {
    let dir = tempfile::tempdir().unwrap();
    // Near the default limit: 89,113,600 of 89,478,485 pixels. (Its buffers are all far above the 32 MiB
    // below which coca's allocator keeps freed memory for reuse, so the peak is the decoder's own.)
    let side: u16 = 9440;
    let pixels = u64::from(side).pow(2);
    let limit = coca_image::PIL_MAX_IMAGE_PIXELS;
    assert!(
        pixels <= limit && pixels * 100 > limit * 99,
        "near the limit"
    );
    let big: PathBuf = dir.path().join("near_limit.jpg");
    std::fs::write(&big, grey_jpeg(side)).unwrap();
    let small: PathBuf = dir.path().join("small.jpg");
    std::fs::write(&small, grey_jpeg(64)).unwrap();
    let limit_s = limit.to_string();
    let run = |image: &Path| {
        let mut args = vec!["embed", "--max-image-pixels", &limit_s];
        args.extend(MODEL);
        args.extend(["--image", image.to_str().unwrap()]);
        let (ok, err, rss) = peak_rss(&args, dir.path());
        assert!(ok, "{}: {err}", image.display());
        rss
    };
    let baseline = run(&small);
    let peak = run(&big);
    let rgb = pixels * 3;
    let extra = peak.saturating_sub(baseline);
    eprintln!(
        "{side}x{side} JPEG: peak RSS {peak} B, baseline {baseline} B, extra {extra} B = {:.2}x its RGB size",
        extra as f64 / rgb as f64
    );
    // 1.5x the RGB size, plus a little for allocator rounding and the file's own bytes.
    assert!(
        extra <= rgb * 3 / 2 + (16 << 20),
        "decoding took {extra} bytes beyond the baseline, more than 1.5x the {rgb}-byte RGB image"
    );
}

// Skip-and-count in `coca eval` and `coca probe`: a collection with good images plus a header bomb and a
// truncated file completes under the hostile-input memory limit, reports the two skips, and scores exactly
// as the good images alone do.

/// The header bomb and the truncated file planted among good images.
const BAD: [&str; 2] = ["bomb.gif", "truncated.png"];
/// Good images of the image fixtures, by class.
const GOOD: [(&str, [&str; 3]); 2] = [
    ("cat", ["chelsea.png", "chelsea_422.jpg", "coins.png"]),
    ("scene", ["flower.jpg", "china.jpg", "coffee.webp"]),
];
const SOURCES: &str = "fixtures/images/sources";

/// Write `file` of the bad images to `to`: the 60000x60000 GIF header bomb, or the first half of a PNG.
fn write_bad(file: &str, to: &Path) {
    match file {
        "bomb.gif" => {
            std::fs::copy(common::root().join(BOMBS).join("gif_screen_60000.gif"), to).unwrap();
        }
        "truncated.png" => {
            let png = std::fs::read(common::root().join(SOURCES).join("chelsea.png")).unwrap();
            std::fs::write(to, &png[..png.len() / 2]).unwrap();
        }
        other => panic!("no bad image {other}"),
    }
}

/// Image folders `dir/good` (the good images, one folder per class) and `dir/mixed` (the same plus one bad
/// image in each class folder, named to sort between the good ones).
fn good_and_mixed_folders(dir: &Path) -> (PathBuf, PathBuf) {
    let (good, mixed) = (dir.join("good"), dir.join("mixed"));
    for root in [&good, &mixed] {
        for (class, images) in GOOD {
            std::fs::create_dir_all(root.join(class)).unwrap();
            for image in images {
                std::fs::copy(
                    common::root().join(SOURCES).join(image),
                    root.join(class).join(image),
                )
                .unwrap();
            }
        }
    }
    for ((class, _), bad) in GOOD.iter().zip(BAD) {
        write_bad(bad, &mixed.join(class).join(bad));
    }
    (good, mixed)
}

/// Runs `coca <args> --json` under the hostile-input address-space limit; the parsed result and stderr (with
/// the warnings).
fn json_run(args: &[&str]) -> (serde_json::Value, String) {
    let mut all = args.to_vec();
    all.push("--json");
    let o = coca_limited(&all, HOSTILE_ADDRESS_SPACE);
    assert!(
        o.status.success(),
        "{args:?} must complete; stderr: {}",
        stderr(&o)
    );
    let value = serde_json::from_str(stdout(&o).trim()).expect("JSON result");
    (value, stderr(&o))
}

/// The run on the mixed data skipped exactly the two bad images, named each (with its reason) in a warning
/// and in the result.
fn assert_two_skips(mixed: &serde_json::Value, good: &serde_json::Value, err: &str) {
    assert_eq!(mixed["skipped_images"], 2, "{mixed}");
    assert_eq!(good["skipped_images"], 0, "{good}");
    let listed = mixed["skipped_items"].to_string();
    for fragment in ["bomb.gif", "60000x60000", "truncated.png"] {
        assert!(err.contains(fragment), "{fragment} not named: {err}");
        assert!(listed.contains(fragment), "{fragment} not listed: {listed}");
    }
    assert_eq!(
        err.matches("skipped ").count(),
        2,
        "each bad image is logged once: {err}"
    );
}

#[test]
fn eval_zeroshot_skips_and_counts_bad_images() {
    let dir = tempfile::tempdir().unwrap();
    let (good, mixed) = good_and_mixed_folders(dir.path());
    let run = |root: &Path| {
        let mut args = vec!["eval", "zeroshot-classification"];
        args.extend(MODEL);
        args.extend([
            "--dataset-root",
            root.to_str().unwrap(),
            "--dataset",
            "two",
            "--templates",
            "simple",
            "--no-cache",
            "--batch-size",
            "4",
        ]);
        json_run(&args)
    };
    let (with_bad, err) = run(&mixed);
    let (alone, _) = run(&good);
    assert_two_skips(&with_bad, &alone, &err);
    assert_eq!(with_bad["metrics"], alone["metrics"]);

    // Nothing readable at all is an error, not a score.
    let bad_only = dir.path().join("bad_only");
    for ((class, _), bad) in GOOD.iter().zip(BAD) {
        std::fs::create_dir_all(bad_only.join(class)).unwrap();
        write_bad(bad, &bad_only.join(class).join(bad));
    }
    // -q: the warnings naming each image are hidden, leaving the one error line.
    let mut args = vec!["-q", "eval", "zeroshot-classification"];
    args.extend(MODEL);
    let root = bad_only.to_str().unwrap();
    args.extend([
        "--dataset-root",
        root,
        "--templates",
        "simple",
        "--no-cache",
    ]);
    assert_refused_cleanly(
        &coca_limited(&args, HOSTILE_ADDRESS_SPACE),
        &[root, "none of the 2 images could be used", "bomb.gif"],
    );
}

/// CLIP_benchmark's list of images and captions for the good images, plus the bad ones when `bad` is set.
fn annotations(dir: &Path, bad: bool) -> PathBuf {
    let mut list = Vec::new();
    for (class, images) in GOOD {
        for image in images {
            list.push(serde_json::json!({
                "image": format!("{SOURCES}/{image}"),
                "caption": [format!("a photo of a {class}"), format!("{image} in a {class} picture")],
            }));
        }
    }
    if bad {
        for name in BAD {
            write_bad(name, &dir.join(name));
            // Between the good images, so batches mix good and bad.
            list.insert(
                2,
                serde_json::json!({
                    "image": dir.join(name).to_str().unwrap(),
                    "caption": [format!("an unreadable {name}")],
                }),
            );
        }
    }
    let path = dir.join(if bad { "mixed.json" } else { "good.json" });
    std::fs::write(&path, serde_json::Value::Array(list).to_string()).unwrap();
    path
}

#[test]
fn eval_retrieval_skips_bad_images_and_their_captions() {
    let dir = tempfile::tempdir().unwrap();
    let run = |bad: bool| {
        let file = annotations(dir.path(), bad);
        let mut args = vec!["eval", "retrieval"];
        args.extend(MODEL);
        args.extend([
            "--annotations",
            file.to_str().unwrap(),
            "--dataset-root",
            ".",
            "--batch-size",
            "3",
            "--recall-k",
            "1,2,5",
        ]);
        json_run(&args)
    };
    let (with_bad, err) = run(true);
    let (alone, _) = run(false);
    assert_two_skips(&with_bad, &alone, &err);
    assert_eq!(with_bad["metrics"], alone["metrics"]);
}

#[test]
fn eval_captioning_skips_bad_images_and_their_references() {
    let dir = tempfile::tempdir().unwrap();
    let run = |bad: bool| {
        let file = annotations(dir.path(), bad);
        let saved = dir.path().join(format!("captions_{bad}.json"));
        let mut args = vec!["eval", "captioning"];
        args.extend(MODEL);
        args.extend([
            "--annotations",
            file.to_str().unwrap(),
            "--dataset-root",
            ".",
            "--batch-size",
            "3",
            "--save-captions",
            saved.to_str().unwrap(),
        ]);
        let (result, err) = json_run(&args);
        let captions: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&saved).unwrap()).unwrap();
        (result, err, captions)
    };
    let (with_bad, err, captions_with_bad) = run(true);
    let (alone, _, captions_alone) = run(false);
    assert_two_skips(&with_bad, &alone, &err);
    assert_eq!(with_bad["metrics"], alone["metrics"]);
    // The same images, captions and references were scored: none of the bad images' references.
    assert_eq!(captions_with_bad, captions_alone);
    assert_eq!(captions_alone.as_array().unwrap().len(), 6);
}

#[test]
fn probe_skips_bad_images_in_both_splits_and_caches_only_the_good_ones() {
    let dir = tempfile::tempdir().unwrap();
    // Train on one set of folders, validate on another: one bad image in each split.
    let (good_train, mixed_train) = good_and_mixed_folders(&dir.path().join("train"));
    let (good_val, mixed_val) = good_and_mixed_folders(&dir.path().join("val"));
    std::fs::remove_file(mixed_train.join("scene").join("truncated.png")).unwrap();
    std::fs::remove_file(mixed_val.join("cat").join("bomb.gif")).unwrap();
    let cache = dir.path().join("cache");
    let run = |train: &Path, val: &Path| {
        let mut args = vec!["probe"];
        args.extend(MODEL);
        args.extend([
            "--train-dir",
            train.to_str().unwrap(),
            "--val-dir",
            val.to_str().unwrap(),
            "--linear",
            "--epochs",
            "20",
            "--cache-dir",
            cache.to_str().unwrap(),
        ]);
        json_run(&args)
    };
    let (with_bad, err) = run(&mixed_train, &mixed_val);
    let (alone, _) = run(&good_train, &good_val);
    assert_two_skips(&with_bad, &alone, &err);
    assert_eq!(with_bad["features"][0]["skipped_images"], 1, "{with_bad}");
    assert_eq!(with_bad["features"][1]["skipped_images"], 1, "{with_bad}");
    for key in [
        "metrics",
        "per_class_recall",
        "confusion_matrix",
        "train_samples",
        "val_samples",
    ] {
        assert_eq!(with_bad[key], alone[key], "{key}");
    }
    assert_eq!(with_bad["train_samples"], 6);
    assert_eq!(with_bad["val_samples"], 6);

    // A rerun reads the cached features of the good images only, and reports the same skips and scores.
    let (again, err) = run(&mixed_train, &mixed_val);
    assert_eq!(again["features"][0]["reused"], true, "{again}");
    assert_eq!(again["features"][1]["reused"], true, "{again}");
    assert_two_skips(&again, &alone, &err);
    for key in ["metrics", "confusion_matrix", "skipped_items"] {
        assert_eq!(again[key], with_bad[key], "{key}");
    }

    // A folder with no readable image is an error.
    let bad_only = dir.path().join("bad_only");
    for ((class, _), bad) in GOOD.iter().zip(BAD) {
        std::fs::create_dir_all(bad_only.join(class)).unwrap();
        write_bad(bad, &bad_only.join(class).join(bad));
    }
    let mut args = vec!["-q", "probe"];
    args.extend(MODEL);
    args.extend([
        "--train-dir",
        bad_only.to_str().unwrap(),
        "--linear",
        "--no-cache",
    ]);
    assert_refused_cleanly(
        &coca_limited(&args, HOSTILE_ADDRESS_SPACE),
        &["none of the 2 images could be used", "bomb.gif"],
    );
}
