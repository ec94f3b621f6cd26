//! Texts that are slow to clean or tokenize if any step is super-linear (`fixtures/adversarial/texts/`):
//! `coca tokenize` and `coca embed --text` finish each in bounded time and memory with a full, truncated row.

mod common;

use std::time::{Duration, Instant};

use common::{coca_limited, root, stderr, stdout, DEMO_CFG, DEMO_WEIGHTS, HOSTILE_ADDRESS_SPACE};
use serde::Deserialize;

/// Per run, process start and model load included. A quadratic merge loop needs several seconds for
/// the 100 kB word; the linear-time pipeline needs a small fraction of one even in the test profile.
const TIME_LIMIT: Duration = Duration::from_secs(6);

#[derive(Deserialize)]
struct Manifest {
    files: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    file: String,
    bytes: usize,
}

fn texts() -> Vec<(String, String)> {
    let dir = root().join("fixtures/adversarial/texts");
    let manifest: Manifest =
        serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    assert!(!manifest.files.is_empty());
    manifest
        .files
        .into_iter()
        .map(|case| {
            let text = std::fs::read_to_string(dir.join(&case.file)).unwrap();
            assert_eq!(text.len(), case.bytes, "{}", case.file);
            (case.file, text)
        })
        .collect()
}

/// Runs `coca` under the address-space limit; fails the test on a signal, a failure or a slow run.
fn run_bounded(what: &str, args: &[&str]) -> serde_json::Value {
    let started = Instant::now();
    let out = coca_limited(args, HOSTILE_ADDRESS_SPACE);
    let took = started.elapsed();
    assert!(
        out.status.success(),
        "{what}: {:?}; stderr: {}",
        out.status,
        stderr(&out)
    );
    assert!(took < TIME_LIMIT, "{what}: took {took:?}");
    eprintln!("{what}: {took:?}");
    serde_json::from_str(&stdout(&out)).unwrap_or_else(|e| panic!("{what}: {e}"))
}

#[test]
fn hostile_texts_tokenize_in_bounded_time() {
    for (file, text) in texts() {
        let json = run_bounded(
            &format!("tokenize {file}"),
            &["tokenize", "--json", "--model", DEMO_CFG, &text],
        );
        let row: Vec<u32> = serde_json::from_value(json["tokens"][0].clone()).unwrap();
        assert_eq!(row.len(), 76, "{file}");
        assert_eq!((row[0], row[75]), (49406, 49407), "{file}");
        assert_eq!(json["truncated"][0], true, "{file}");
    }
}

#[test]
fn hostile_texts_embed_in_bounded_time() {
    for (file, text) in texts() {
        let json = run_bounded(
            &format!("embed {file}"),
            &[
                "embed",
                "--json",
                "--model",
                DEMO_CFG,
                "--pretrained",
                DEMO_WEIGHTS,
                "--text",
                &text,
            ],
        );
        let embedding = json["text_embeddings"][0]
            .as_array()
            .expect("one embedding");
        assert!(
            !embedding.is_empty()
                && embedding
                    .iter()
                    .all(|x| x.as_f64().is_some_and(f64::is_finite)),
            "{file}: {embedding:?}"
        );
    }
}
