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

/// Address-space ceiling for runs on hostile input: far above what the tiny fixture models need, far
/// below what an unbounded allocation would reach, so a run that tries to allocate without bound fails
/// inside the limit instead of taking the machine's memory.
pub const HOSTILE_ADDRESS_SPACE: u64 = 3 << 30;

/// Run `coca` with `args` under an address-space limit of `bytes` (`setrlimit(RLIMIT_AS)` in the child),
/// so a test can prove that a hostile input is refused with bounded memory: a run that would allocate past
/// the limit gets a failed allocation, which Rust turns into an abort (exit by `SIGABRT`), and
/// [`assert_refused_cleanly`] reports that as the failure it is.
pub fn coca_limited(args: &[&str], bytes: u64) -> Output {
    use std::os::unix::process::CommandExt;
    let mut cmd = command();
    cmd.args(args);
    // SAFETY: the closure runs in the forked child before exec and only calls setrlimit, which is
    // async-signal-safe; it touches no memory shared with the parent.
    unsafe {
        cmd.pre_exec(move || {
            let limit = libc::rlimit {
                rlim_cur: bytes as libc::rlim_t,
                rlim_max: bytes as libc::rlim_t,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.output().expect("run coca under an address-space limit")
}

/// Assert that a run on hostile input was refused the way coca promises: a non-zero exit code (not a
/// signal such as `SIGABRT` from a failed allocation or `SIGSEGV` from a stack overflow), no panic, one
/// `error:` line that contains every fragment.
pub fn assert_refused_cleanly(o: &Output, fragments: &[&str]) {
    use std::os::unix::process::ExitStatusExt;
    assert!(
        o.status.signal().is_none(),
        "killed by signal {:?} (abort, stack overflow or out of memory); stderr: {}",
        o.status.signal(),
        stderr(o)
    );
    assert_fails_with(o, fragments);
}

/// A tar shard of (name, bytes) entries (WebDataset's layout when names are `key.ext`); returns the data
/// offset of each entry.
pub fn write_shard(path: &std::path::Path, files: &[(&str, &[u8])]) -> Vec<u64> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut offsets = Vec::new();
    let mut pos = 0u64;
    for (name, data) in files {
        let mut header = tar::Header::new_ustar();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append_data(&mut header, name, *data).unwrap();
        offsets.push(pos + 512);
        pos += 512 + (data.len() as u64).div_ceil(512) * 512;
    }
    std::fs::write(path, builder.into_inner().unwrap()).unwrap();
    offsets
}

/// `per_class` one-object scenes of each colour (one shape, so the colour is the class) in
/// `dir/<colour>/<i>.png`; returns the class names, sorted as `coca probe` orders them.
pub fn write_colour_folders(
    dir: &std::path::Path,
    per_class: usize,
    split: coca_data::scenes::Split,
) -> Vec<String> {
    let options = coca_data::scenes::SceneOptions {
        image_size: 32,
        min_objects: 1,
        max_objects: 1,
        shapes: vec![coca_data::scenes::Shape::Circle],
        ..coca_data::scenes::SceneOptions::default()
    };
    let set = coca_data::scenes::SceneSet::new(options, split, 5).unwrap();
    let names: Vec<String> = set
        .class_names()
        .iter()
        .map(|n| n.split(' ').next().unwrap().to_string())
        .collect();
    let mut counts = vec![0usize; names.len()];
    let mut index = 0u64;
    while counts.iter().any(|&c| c < per_class) {
        let (image, class) = set.labelled(index);
        index += 1;
        if counts[class] >= per_class {
            continue;
        }
        let folder = dir.join(&names[class]);
        std::fs::create_dir_all(&folder).unwrap();
        image
            .save(folder.join(format!("{:03}.png", counts[class])))
            .unwrap();
        counts[class] += 1;
    }
    let mut sorted = names;
    sorted.sort();
    sorted
}
