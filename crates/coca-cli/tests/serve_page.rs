//! `coca serve`'s page in a real browser: runs `scripts/browser/test_serve_page.py` (headless Chromium over
//! WebDriver) against this build's binary, so `cargo test --workspace` covers the page too.
//!
//! The browser is Debian's `chromium` + `chromium-driver`, which `.ci/run` installs. Without them the test says
//! that it skipped, except under CI (`CI` set), where a missing browser is a failure.

mod common;

#[test]
fn the_page_captions_classifies_and_searches_in_headless_chromium() {
    let in_ci = std::env::var_os("CI").is_some();
    let mut cmd = std::process::Command::new("python3");
    cmd.current_dir(common::root())
        .arg("scripts/browser/test_serve_page.py")
        .arg("--coca")
        .arg(env!("CARGO_BIN_EXE_coca"));
    if in_ci {
        cmd.arg("--require");
    }
    let out = match cmd.output() {
        Ok(out) => out,
        Err(e) if !in_ci => {
            println!("skipped: python3 could not be run ({e})");
            return;
        }
        Err(e) => panic!("python3 could not be run: {e}"),
    };
    let text = format!("{}{}", common::stdout(&out), common::stderr(&out));
    println!("{text}");
    assert!(out.status.success(), "the browser test failed:\n{text}");
}
