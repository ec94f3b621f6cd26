//! Helpers shared by the end-to-end tests of the `coca` binary.
#![allow(dead_code)] // each test binary uses a different subset

use std::path::PathBuf;
use std::process::{Command, Output};

/// The demo model's config (README's first command).
pub const DEMO_CFG: &str = "assets/demo/coca_demo-tiny.json";
/// The demo model's weights.
pub const DEMO_WEIGHTS: &str = "assets/demo/coca_demo-tiny.safetensors";

/// The repository root (tests run there, so paths in fixtures are repo-relative).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A `coca` command in the repository root, not yet run.
pub fn command() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_coca"));
    cmd.current_dir(root());
    cmd
}

/// Run `coca` with `args` in the repository root.
pub fn coca(args: &[&str]) -> Output {
    command().args(args).output().expect("run coca")
}

/// Standard output as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Standard error as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Assert failure with a one-line `error:` message containing every fragment, and no panic.
pub fn assert_fails_with(o: &Output, fragments: &[&str]) {
    let err = stderr(o);
    assert!(
        !o.status.success(),
        "expected failure, got success; stderr: {err}"
    );
    assert!(!err.contains("panicked"), "panicked: {err}");
    assert!(err.starts_with("error: "), "no error line: {err}");
    for f in fragments {
        assert!(err.contains(f), "missing {f:?} in: {err}");
    }
}
