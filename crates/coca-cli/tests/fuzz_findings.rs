//! Every input a fuzz target ever found (scripts/fuzz.sh keeps them under
//! `fixtures/adversarial/fuzz/<target>/`) is replayed twice: by the `coca` command that reads such input,
//! under an address-space limit (no signal; success, or one clean `error:` line naming the file), and
//! through the target's own function in `fuzz/src/lib.rs` (no panic).

mod common;

// The fuzz crate is outside the workspace (it needs coverage flags and libFuzzer); its target bodies
// only use crates this one depends on, so the replay runs exactly the code the fuzzer ran.
#[path = "../../../fuzz/src/lib.rs"]
mod harness;

use std::os::unix::process::ExitStatusExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::Output;

use common::{
    assert_refused_cleanly, coca_limited, root, stderr, DEMO_CFG, DEMO_WEIGHTS,
    HOSTILE_ADDRESS_SPACE,
};

/// The findings kept for `target`, sorted; prints a note when there are none.
fn findings(target: &str) -> Vec<PathBuf> {
    let dir = root().join("fixtures/adversarial/fuzz").join(target);
    let mut files: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .map(|e| e.expect("list the findings").path())
            .filter(|p| p.is_file())
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("cannot list {}: {e}", dir.display()),
    };
    files.sort();
    if files.is_empty() {
        println!(
            "skipped: no fuzz findings for {target} in {}",
            dir.display()
        );
    }
    files
}

/// A run on a finding must end without a signal or panic: either it succeeds (the input was valid after
/// all) or it is refused with one `error:` line that names `named`.
fn assert_handled(o: &Output, input: &Path, named: &str) {
    let err = stderr(o);
    assert!(
        o.status.signal().is_none() && !err.contains("panicked"),
        "{}: coca was killed by signal {:?} or panicked; stderr: {err}",
        input.display(),
        o.status.signal()
    );
    if !o.status.success() {
        assert_refused_cleanly(o, &[named]);
    }
}

/// Runs `target_fn` on the bytes of `input` and fails the test, naming the input, if it panics.
fn assert_no_panic(target_fn: fn(&[u8]), input: &Path, bytes: &[u8]) {
    if catch_unwind(AssertUnwindSafe(|| target_fn(bytes))).is_err() {
        panic!("{} still panics its fuzz target", input.display());
    }
}

fn coca_on(args: &[&str]) -> Output {
    coca_limited(args, HOSTILE_ADDRESS_SPACE)
}

#[test]
fn image_decode_findings() {
    for input in findings("image_decode") {
        let path = input.to_str().expect("finding paths are UTF-8");
        let o = coca_on(&[
            "embed",
            "--model",
            DEMO_CFG,
            "--pretrained",
            DEMO_WEIGHTS,
            "--image",
            path,
        ]);
        assert_handled(&o, &input, path);
        let bytes = std::fs::read(&input).expect("read the finding");
        assert_no_panic(harness::image_decode, &input, &bytes);
    }
}

#[test]
fn safetensors_header_findings() {
    for input in findings("safetensors_header") {
        let path = input.to_str().expect("finding paths are UTF-8");
        let o = coca_on(&["info", "--model", DEMO_CFG, "--pretrained", path]);
        assert_handled(&o, &input, path);
        let bytes = std::fs::read(&input).expect("read the finding");
        assert_no_panic(harness::safetensors_header, &input, &bytes);
    }
}

#[test]
fn pickle_findings() {
    let dir = tempfile::tempdir().expect("create a temporary directory");
    for input in findings("pickle") {
        // The finding is the pickle alone; coca reads it inside the archive the target built around it.
        let pickle = std::fs::read(&input).expect("read the finding");
        let archive = dir.path().join("finding.bin");
        std::fs::write(&archive, harness::torch_zip(&pickle)).expect("write the archive");
        let path = archive.to_str().expect("temporary paths are UTF-8");
        let o = coca_on(&["info", "--model", DEMO_CFG, "--pretrained", path]);
        assert_handled(&o, &input, path);
        assert_no_panic(harness::pickle, &input, &pickle);
    }
}

#[test]
fn tokenize_findings() {
    for input in findings("tokenize") {
        let bytes = std::fs::read(&input).expect("read the finding");
        let text = String::from_utf8_lossy(&bytes);
        if text.contains('\0') {
            println!(
                "skipped the command for {}: a NUL byte cannot be passed as an argument",
                input.display()
            );
        } else {
            let o = coca_on(&["tokenize", "--", &text]);
            assert_handled(&o, &input, "");
            assert!(
                o.status.success(),
                "{}: tokenize failed: {}",
                input.display(),
                stderr(&o)
            );
        }
        assert_no_panic(harness::tokenize, &input, &bytes);
    }
}
