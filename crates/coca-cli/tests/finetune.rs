//! `coca finetune` end to end on the demo model: the encoder changes where it is trainable and nowhere else,
//! the outputs (result JSON, fine-tuned weights, a head `coca probe --predict` applies), a stopped run resumes
//! to the uninterrupted weights and loss, and the errors.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Output;

use candle_core::{DType, Device, Tensor};
use coca_data::scenes::Split;
use common::{
    assert_fails_with, command, stderr, stdout, write_colour_folders, DEMO_CFG, DEMO_WEIGHTS,
};

/// `coca finetune` on the demo model with the settings of these tests (2 epochs of 6-item batches).
fn finetune(data: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["--batch-size", "6", "--epochs", "2", "--lr", "1e-3"];
    args.extend_from_slice(extra);
    finetune_with(data, out, &args)
}

/// `coca finetune` on the demo model with only `extra` besides the data and run directory.
fn finetune_with(data: &Path, out: &Path, extra: &[&str]) -> Output {
    command()
        .args([
            "-q",
            "finetune",
            "--model",
            DEMO_CFG,
            "--pretrained",
            DEMO_WEIGHTS,
        ])
        .args(["--train-dir", data.to_str().unwrap()])
        .args(["--output", out.to_str().unwrap()])
        .args(extra)
        .output()
        .expect("run coca")
}

fn ok(o: &Output) {
    assert!(o.status.success(), "failed: {}", stderr(o));
}

fn tensors(path: &Path) -> BTreeMap<String, Tensor> {
    let file = coca_checkpoint::Checkpoint::open(path).unwrap();
    file.names()
        .map(|n| {
            let t = file.get(n, DType::F32, &Device::Cpu).unwrap();
            (n.to_string(), t)
        })
        .collect()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn fine_tuning_moves_the_trainable_encoder_groups_only_and_predicts() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("colours");
    let classes = write_colour_folders(&data, 5, Split::Train);
    let before = tensors(Path::new(&common::root().join(DEMO_WEIGHTS)));

    // The whole tower trains: the patch embedding moves (at lr · d^(L+1)), the text tower does not.
    let full = tmp.path().join("full");
    ok(&finetune(&data, &full, &["--layer-decay", "0.65"]));
    let after = tensors(&full.join("model.safetensors"));
    assert!(
        max_diff(
            &before["visual.conv1.weight"],
            &after["visual.conv1.weight"]
        ) > 0.0
    );
    let last = "visual.transformer.resblocks.1.mlp.c_fc.weight";
    assert!(max_diff(&before[last], &after[last]) > 0.0);
    for (name, t) in &after {
        if !name.starts_with("visual.") {
            assert_eq!(max_diff(&before[name], t), 0.0, "{name} changed");
        }
    }
    let result = read_json(&full.join("result.json"));
    assert_eq!(result["task"], "finetune");
    assert_eq!(result["classes"].as_array().unwrap().len(), classes.len());
    let acc1 = result["metrics"]["acc1"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&acc1));
    assert_eq!(
        result["confusion_matrix"].as_array().unwrap().len(),
        classes.len()
    );
    assert_eq!(result["pooler"]["queries"], 1);
    assert!(result["training"]["final_loss"]
        .as_f64()
        .unwrap()
        .is_finite());

    // --lock-image with 2 unlocked groups: the last block and the tower's head train, block 0 and the stem
    // stay exactly as they were.
    let locked = tmp.path().join("locked");
    ok(&finetune(
        &data,
        &locked,
        &["--lock-image", "--lock-image-unlocked-groups", "2"],
    ));
    let after = tensors(&locked.join("model.safetensors"));
    assert!(max_diff(&before[last], &after[last]) > 0.0);
    for name in [
        "visual.conv1.weight",
        "visual.positional_embedding",
        "visual.transformer.resblocks.0.mlp.c_fc.weight",
        "visual.transformer.resblocks.0.attn.in_proj_weight",
    ] {
        assert_eq!(max_diff(&before[name], &after[name]), 0.0, "{name} moved");
    }

    // The saved head classifies with the fine-tuned weights through `coca probe --predict`...
    let image = data.join(&classes[0]).join("000.png");
    let weights = full.join("model.safetensors");
    let o = command()
        .args(["probe", "--model", DEMO_CFG, "--pretrained"])
        .arg(&weights)
        .arg("--predict")
        .arg(full.join("head.safetensors"))
        .args(["--top-k", "2", "--json"])
        .arg(&image)
        .output()
        .unwrap();
    ok(&o);
    let predictions: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(predictions[0]["top_k"].as_array().unwrap().len(), 2);
    // ...and refuses the weights it was not fine-tuned with.
    let o = command()
        .args(["probe", "--model", DEMO_CFG, "--pretrained", DEMO_WEIGHTS])
        .arg("--predict")
        .arg(full.join("head.safetensors"))
        .arg(&image)
        .output()
        .unwrap();
    assert_fails_with(
        &o,
        &[
            "head.safetensors",
            "fine-tuned together with the encoder weights",
            "another checkpoint",
        ],
    );
}

/// The colour of one shape is easy to tell apart even for the demo model: fine-tuning must get it far above
/// chance (1/4), and its loss must fall.
#[test]
fn fine_tuning_learns_an_easy_task() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("colours");
    write_colour_folders(&data, 16, Split::Train);
    let run = tmp.path().join("run");
    let flags = ["--batch-size", "16", "--epochs", "10", "--lr", "1e-3"];
    ok(&finetune_with(&data, &run, &flags));
    let result = read_json(&run.join("result.json"));
    let acc1 = result["metrics"]["acc1"].as_f64().unwrap();
    assert!(acc1 >= 0.75, "top-1 {acc1} (chance 0.25)");
    let losses: Vec<f64> = std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter_map(|v| v["loss"].as_f64())
        .collect();
    assert_eq!(losses.len(), 40);
    let mean = |xs: &[f64]| xs.iter().sum::<f64>() / xs.len() as f64;
    assert!(
        mean(&losses[36..]) < 0.5 * mean(&losses[..4]),
        "losses {losses:?}"
    );
}

#[test]
fn a_stopped_run_resumes_to_the_uninterrupted_weights_and_loss() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("colours");
    write_colour_folders(&data, 5, Split::Train);
    let whole = tmp.path().join("whole");
    ok(&finetune(&data, &whole, &["--grad-checkpointing"]));
    let stopped = tmp.path().join("stopped");
    ok(&finetune(
        &data,
        &stopped,
        &["--grad-checkpointing", "--stop-after", "4"],
    ));
    assert!(stopped
        .join("checkpoints/step_00000004/state.json")
        .is_file());
    assert!(
        !stopped.join("result.json").exists(),
        "a stopped run has no result"
    );
    // Starting again without --resume would mix two runs.
    assert_fails_with(
        &finetune(&data, &stopped, &["--grad-checkpointing"]),
        &["already holds a fine-tuning run", "--resume latest"],
    );
    // Another batch size is another run.
    let o = command()
        .args([
            "finetune",
            "--model",
            DEMO_CFG,
            "--pretrained",
            DEMO_WEIGHTS,
        ])
        .args(["--train-dir", data.to_str().unwrap()])
        .args(["--output", stopped.to_str().unwrap()])
        .args([
            "--batch-size",
            "4",
            "--epochs",
            "2",
            "--lr",
            "1e-3",
            "--resume",
            "latest",
        ])
        .output()
        .unwrap();
    assert_fails_with(&o, &["step_00000004", "other data or settings"]);
    let o = command()
        .args([
            "finetune",
            "--model",
            "coca_ViT-B-32",
            "--pretrained",
            DEMO_WEIGHTS,
        ])
        .args(["--train-dir", data.to_str().unwrap()])
        .args(["--output", stopped.to_str().unwrap(), "--resume", "latest"])
        .output()
        .unwrap();
    assert_fails_with(&o, &["step_00000004", "another model config"]);
    ok(&finetune(
        &data,
        &stopped,
        &["--grad-checkpointing", "--resume", "latest"],
    ));
    let (a, b) = (
        read_json(&whole.join("result.json")),
        read_json(&stopped.join("result.json")),
    );
    assert_eq!(a["training"]["steps"], b["training"]["steps"]);
    assert_eq!(a["training"]["final_loss"], b["training"]["final_loss"]);
    assert_eq!(a["metrics"], b["metrics"]);
    // Every step's loss, logged in metrics.jsonl, is the uninterrupted run's.
    let losses = |run: &Path| -> Vec<(u64, f64)> {
        std::fs::read_to_string(run.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|v| v["split"] == "train")
            .map(|v| (v["step"].as_u64().unwrap(), v["loss"].as_f64().unwrap()))
            .collect()
    };
    let reference = losses(&whole);
    assert_eq!(reference.len(), 6, "16 items in batches of 6, 2 epochs");
    assert_eq!(losses(&stopped), reference);
    let (wa, wb) = (
        tensors(&whole.join("model.safetensors")),
        tensors(&stopped.join("model.safetensors")),
    );
    for (name, t) in &wa {
        assert_eq!(max_diff(t, &wb[name]), 0.0, "{name} differs after resuming");
    }
    let (ha, hb) = (
        tensors(&whole.join("head.safetensors")),
        tensors(&stopped.join("head.safetensors")),
    );
    for (name, t) in &ha {
        assert_eq!(
            max_diff(t, &hb[name]),
            0.0,
            "head {name} differs after resuming"
        );
    }
}

#[test]
fn bad_inputs_fail_with_one_clear_message() {
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let out = tmp.path().join("run");
    assert_fails_with(
        &finetune(&empty, &out, &[]),
        &["empty", "no class folders", "one subfolder per class"],
    );
    let data = tmp.path().join("colours");
    write_colour_folders(&data, 3, Split::Train);
    assert_fails_with(
        &finetune(&data, &out, &["--layer-decay", "0"]),
        &["--layer-decay must be in (0, 1]"],
    );
    assert_fails_with(
        &finetune(&data, &out, &["--resume", tmp.path().to_str().unwrap()]),
        &["not a checkpoint directory"],
    );
    assert_fails_with(
        &finetune(&data, &out, &["--precision", "bf16"]),
        &["coca finetune trains in fp32"],
    );
    for (flags, message) in [
        (
            &["--video", "--frames", "0"][..],
            "--frames must be at least 1",
        ),
        (
            &["--epochs", "0"],
            "--epochs and --batch-size must be at least 1",
        ),
        (&["--lr", "0"], "--lr must be a positive number"),
        (
            &["--warmup-fraction", "1"],
            "--warmup-fraction must be in [0, 1)",
        ),
        (
            &["--val-fraction", "1.5"],
            "--val-fraction must be between 0 and 1",
        ),
    ] {
        assert_fails_with(&finetune_with(&data, &out, flags), &[message]);
    }
    // One image per class leaves nothing to validate on.
    let single = tmp.path().join("single");
    write_colour_folders(&single, 1, Split::Train);
    assert_fails_with(
        &finetune(&single, &out, &[]),
        &["too few images to hold out a validation set"],
    );
}
