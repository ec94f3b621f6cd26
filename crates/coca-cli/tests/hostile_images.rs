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
