//! Model configs with absurd sizes (`fixtures/adversarial/configs/`): every command that reads one refuses it
//! with a message naming the field (or what the model would cost), under an address-space limit, without
//! allocating first and without leaving output behind.

mod common;

use std::path::PathBuf;

use common::{assert_refused_cleanly, coca_limited, root, DEMO_WEIGHTS, HOSTILE_ADDRESS_SPACE};
use serde::Deserialize;

#[derive(Deserialize)]
struct Manifest {
    files: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    file: String,
    commands: Vec<String>,
    fragments: Vec<String>,
}

fn cases() -> Vec<Case> {
    let path = root().join("fixtures/adversarial/configs/manifest.json");
    let text = std::fs::read_to_string(&path).expect("configs manifest");
    let manifest: Manifest = serde_json::from_str(&text).expect("manifest parses");
    assert!(!manifest.files.is_empty());
    manifest.files
}

/// A run directory that must not exist after a refused `train`.
fn scratch(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("coca-hostile-config-{}-{name}", std::process::id()))
}

#[test]
fn every_absurd_config_is_refused_by_every_command() {
    for case in cases() {
        let config = format!("fixtures/adversarial/configs/{}", case.file);
        let mut fragments: Vec<&str> = case.fragments.iter().map(String::as_str).collect();
        fragments.push(&case.file);
        for command in &case.commands {
            let run_dir = scratch(&case.file);
            let run_dir_arg = run_dir.to_string_lossy().into_owned();
            let args: Vec<&str> = match command.as_str() {
                "info" => vec!["info", "--model", &config],
                "tokenize" => vec!["tokenize", "--model", &config, "a photo of a cat"],
                "embed" => vec![
                    "embed",
                    "--model",
                    &config,
                    "--pretrained",
                    DEMO_WEIGHTS,
                    "--text",
                    "a photo of a cat",
                ],
                "train" => vec![
                    "train",
                    "--model",
                    &config,
                    "--train-data",
                    "synthetic",
                    "--batch-size",
                    "2",
                    "--steps",
                    "1",
                    "--output",
                    &run_dir_arg,
                ],
                other => panic!("{}: unknown command {other:?} in the manifest", case.file),
            };
            let out = coca_limited(&args, HOSTILE_ADDRESS_SPACE);
            eprintln!("{} {command}: {}", case.file, common::stderr(&out).trim());
            assert_refused_cleanly(&out, &fragments);
            assert!(
                out.stdout.is_empty(),
                "{} {command}: printed output",
                case.file
            );
            assert!(
                !run_dir.exists(),
                "{} {command}: left {} behind",
                case.file,
                run_dir.display()
            );
        }
    }
}
