//! `coca train` as several processes on this machine (the TCP backend): two ranks train like one process
//! with the doubled batch, rank 0 alone writes, the checkpoint resumes on another world size, `coca launch`
//! starts ranks, and a killed rank makes the other fail with a clear error instead of hanging.

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use common::{coca, command, stderr};

/// A CoCa small enough to train in a test (CLIP vocabulary, 32-px images, 12-token context).
const MICRO: &str = "fixtures/train/scenes_micro.json";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn train_args(out: &Path, batch: usize, steps: u64) -> Vec<String> {
    [
        "-q",
        "train",
        "--model",
        MICRO,
        "--train-data",
        "synthetic",
        "--no-augment",
        "--workers",
        "1",
        "--batch-size",
        &batch.to_string(),
        "--steps",
        &steps.to_string(),
        "--warmup",
        "1",
        "--lr",
        "1e-3",
        "--save-every",
        "2",
        "--keep-checkpoints",
        "0",
        "--val-samples",
        "0",
        "--seed",
        "3",
        "--output",
        out.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Start rank `rank` of `world` with torchrun's variables.
fn spawn_rank(args: &[String], rank: usize, world: usize, port: u16) -> Child {
    command()
        .args(args)
        .env("RANK", rank.to_string())
        .env("WORLD_SIZE", world.to_string())
        .env("LOCAL_RANK", rank.to_string())
        .env("MASTER_ADDR", "127.0.0.1")
        .env("MASTER_PORT", port.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start coca")
}

fn wait(child: Child) -> Output {
    child.wait_with_output().expect("wait for coca")
}

/// (step, total loss, contrastive loss) from a run's metrics.jsonl.
fn losses(run: &Path) -> Vec<(u64, f64, f64)> {
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    text.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["split"] == "train")
        .map(|v| {
            (
                v["step"].as_u64().unwrap(),
                v["loss"].as_f64().unwrap(),
                v["loss_contrastive"].as_f64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn two_ranks_train_like_one_process_with_the_doubled_batch_and_resume_on_one() {
    let tmp = tempfile::tempdir().unwrap();
    let (single, ddp) = (tmp.path().join("single"), tmp.path().join("ddp"));

    let o = coca(
        &train_args(&single, 8, 4)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    assert!(o.status.success(), "{}", stderr(&o));

    let port = free_port();
    let mut args = train_args(&ddp, 4, 4);
    args.push("--gather-with-grad".into());
    let ranks: Vec<Child> = (0..2).map(|r| spawn_rank(&args, r, 2, port)).collect();
    let outputs: Vec<Output> = ranks.into_iter().map(wait).collect();
    for (r, o) in outputs.iter().enumerate() {
        assert!(o.status.success(), "rank {r}: {}", stderr(o));
    }
    // Rank 0 wrote the run; rank 1 printed nothing.
    assert!(ddp
        .join("checkpoints/step_00000004/model.safetensors")
        .exists());
    assert!(ddp.join("model.safetensors").exists());
    assert!(outputs[1].stdout.is_empty() && outputs[1].stderr.is_empty());

    // Rank r of 2 takes samples r, r + 2, ... of the epoch's permutation: the two ranks' first batches of 4
    // are exactly the single process's first batch of 8. The contrastive loss over the gathered features is
    // that batch's; the caption loss is the mean of the two ranks' token means, which differs from the
    // batch's token mean by the ranks' different caption lengths (at most 2.4e-3 relative here), and so later steps drift
    // as little.
    let (a, b) = (losses(&ddp), losses(&single));
    assert_eq!(a.len(), 4);
    let (first_ddp, first_single) = (a[0], b[0]);
    assert!(
        (first_ddp.2 - first_single.2).abs() < 1e-5 * first_single.2,
        "step 1 contrastive: {} vs {}",
        first_ddp.2,
        first_single.2
    );
    for ((step, d, _), (_, s, _)) in a.iter().zip(&b) {
        assert!(
            (d - s).abs() < 1e-2 * s,
            "step {step}: loss {d} (2 ranks) vs {s} (1 process)"
        );
    }

    // The 2-rank checkpoint of step 2 continues on one process.
    let resumed = tmp.path().join("resumed");
    std::fs::create_dir_all(resumed.join("checkpoints")).unwrap();
    let o = coca(
        &train_args(&resumed, 8, 3)
            .iter()
            .map(String::as_str)
            .chain([
                "--resume",
                ddp.join("checkpoints/step_00000002").to_str().unwrap(),
            ])
            .collect::<Vec<_>>(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("written by 2 rank(s), this run has 1"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        losses(&resumed).iter().map(|l| l.0).collect::<Vec<_>>(),
        [3]
    );
}

#[test]
fn launch_starts_the_ranks() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("launched");
    let port = free_port().to_string();
    let mut args: Vec<String> = [
        "launch",
        "--nproc-per-node",
        "2",
        "--master-port",
        &port,
        "--",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(train_args(&run, 2, 2));
    args.push("--local-loss".into());
    let o = coca(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "{}", stderr(&o));
    let state = std::fs::read_to_string(run.join("checkpoints/step_00000002/state.json")).unwrap();
    let state: serde_json::Value = serde_json::from_str(&state).unwrap();
    assert_eq!(state["data"]["world_size"], 2);
    assert_eq!(state["data"]["ranks"].as_array().unwrap().len(), 2);
}

#[test]
fn a_killed_rank_makes_the_other_fail_with_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("killed");
    let port = free_port();
    let args = train_args(&run, 4, 100_000);
    let rank0 = spawn_rank(&args, 0, 2, port);
    let mut rank1 = spawn_rank(&args, 1, 2, port);
    // Rank 0 writes the model config once both ranks have met; then let them train a moment.
    let started = Instant::now();
    while !run.join("model_config.json").exists() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the ranks never started"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(1));
    rank1.kill().unwrap();
    let _ = rank1.wait();
    let killed_at = Instant::now();
    let o = wait(rank0);
    assert!(
        killed_at.elapsed() < Duration::from_secs(60),
        "rank 0 took {:?} to notice",
        killed_at.elapsed()
    );
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("rank 0 of 2") && err.contains("rank 1") && err.contains("exited or crashed"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn nccl_needs_the_nccl_build() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let o = coca(&[
        "train",
        "--demo",
        "--dist-backend",
        "nccl",
        "--output",
        out.to_str().unwrap(),
    ]);
    if cfg!(feature = "nccl") {
        return;
    }
    common::assert_fails_with(
        &o,
        &["--dist-backend nccl needs coca built with `--features nccl`"],
    );
}
