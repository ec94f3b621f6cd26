//! `coca bench --train`: the training step it times, in fp32, bf16 mixed precision and with grad checkpointing.

mod common;
use common::{assert_fails_with, coca, root, stderr, stdout};

/// The first-step loss of `coca bench --train` on the tiny open_clip fixture with `extra` arguments.
fn first_loss(extra: &[&str]) -> f64 {
    let dir = root().join("fixtures/parity/tiny_legacy");
    let config = dir.join("config.json");
    let weights = dir.join("open_clip_model.safetensors");
    let mut args = vec![
        "bench",
        "--train",
        "--model",
        config.to_str().unwrap(),
        "--pretrained",
        weights.to_str().unwrap(),
        "--batch-size",
        "2",
        "--iters",
        "1",
        "--warmup",
        "1",
        "--json",
    ];
    args.extend(extra);
    let o = coca(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let report: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let step = &report["train_step"]["2"];
    assert!(step["samples_per_second"].as_f64().unwrap() > 0.0);
    step["first_loss"].as_f64().unwrap()
}

#[test]
fn train_bench_times_fp32_amp_and_checkpointed_steps_of_the_same_batch() {
    let fp32 = first_loss(&[]);
    // Recomputing blocks changes nothing in the numbers, bf16 compute changes them a little.
    assert_eq!(first_loss(&["--grad-checkpointing"]), fp32);
    let amp = first_loss(&["--precision", "bf16"]);
    assert_ne!(amp, fp32);
    assert!(((amp - fp32) / fp32).abs() < 2e-2, "{amp} vs {fp32}");
    let o = coca(&[
        "bench",
        "--train",
        "--model",
        root()
            .join("fixtures/parity/tiny_legacy/config.json")
            .to_str()
            .unwrap(),
        "--pretrained",
        root()
            .join("fixtures/parity/tiny_legacy/open_clip_model.safetensors")
            .to_str()
            .unwrap(),
        "--precision",
        "fp16",
    ]);
    assert_fails_with(&o, &["--train times fp32 or bf16", "fp16"]);
}
