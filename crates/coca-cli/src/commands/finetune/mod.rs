//! `coca finetune`: fine-tuning with a task pooler as the CoCa paper evaluates it — a new attentional pooler
//! (one query by default, the paper's choice for video action recognition) and a linear head trained together
//! with the image encoder, softmax cross-entropy, on class folders of images or videos.
//!
//! Its own command rather than a `coca probe` flag: a probe trains on cached frozen features in seconds, this
//! runs the encoder forward and backward on every step, with checkpoints and resume as `coca train` has them.
//! What it shares with the probe it takes from there: the class folders and split, the head
//! ([`crate::commands::probe::head::ProbeHead`]), the scores and the head file format, so
//! `coca probe --predict` applies a fine-tuned head (with the fine-tuned weights).
//!
//! - [`data`]: the items, checked once, decoded batch by batch;
//! - [`model`]: encoder + head, layer-wise lr decay, locks, gradient checkpointing.

mod data;
mod model;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use clap::Args;
use coca_data::{ClassFolders, ItemKind};
use coca_eval::classification_report;
use coca_model::AllAtOnce;
use coca_runlog::{MetricsWriter, Split};
use coca_train::checkpoint::{
    latest_checkpoint, list_checkpoints, prune_checkpoints, read_state, write_checkpoint_dir,
    write_state, TrainState, MODEL_FILE, OPTIMIZER_FILE,
};
use coca_train::trainer::load_trainable;
use coca_train::{AdamWConfig, Locks, Schedule, ScheduleKind, TrainError};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::json;

use crate::cli::Global;
use crate::commands::probe::head::{ProbeHead, ProbeKind};
use crate::commands::probe::predict::{file_sha256, ENCODER_PATH, ENCODER_SHA256};
use crate::commands::probe::split::stratified_split;
use crate::commands::probe::{print_scores, probe_metadata};
use crate::model_args::{resolve_config, ModelArgs, Precision};
use crate::output::write_json;
use data::Items;
use model::{EncoderTraining, Finetuner};

/// The head file inside a checkpoint directory and the run directory (a `coca probe --save-probe` file).
pub const HEAD_FILE: &str = "head.safetensors";
/// The result JSON in the run directory.
pub const RESULT_FILE: &str = "result.json";

/// `coca finetune`.
#[derive(Debug, Args)]
#[command(after_help = "\
Data: as coca probe — --train-dir holds one subfolder per class (images; with --video: frame folders, GIFs or
video files); validation from --val-dir or a stratified --val-fraction of --train-dir. Every item is decoded
once before training; an unreadable one is skipped with a warning naming it and counted in \"skipped_images\".

Learning rates: the new pooler and head train at --lr, the image tower's last block at lr·d, the block before
at lr·d², ..., the patch embedding at lr·d^(L+1) (d = --layer-decay, L blocks). --lock-image freezes the image
tower but its last --lock-image-unlocked-groups groups, as in coca train.

The run directory (--output) holds checkpoints/step_N/ (model.safetensors, head.safetensors,
optimizer.safetensors, state.json), metrics.jsonl, and at the end model.safetensors (the fine-tuned CoCa, usable by every
command), head.safetensors (the pooler and classifier) and result.json. Classify new inputs with
  coca probe --model M --pretrained RUN/model.safetensors --predict RUN/head.safetensors IMAGE...

Examples:
  coca finetune --model coca_ViT-B-32 --pretrained laion2b_s13b_b90k --train-dir digits/ --val-fraction 0.2 \\
       --epochs 5 --lr 1e-4 --layer-decay 0.65 --output runs/ft-digits --confusion runs/ft-digits/confusion
  coca finetune --model M --pretrained F --video --frames 8 --train-dir actions/train --val-dir actions/val \\
       --output runs/ft-actions --grad-checkpointing
  coca finetune ... --output runs/ft-digits --resume latest")]
pub struct FinetuneArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Training data: one subfolder per class.
    #[arg(long, value_name = "DIR")]
    pub train_dir: PathBuf,
    /// Validation data with the same class subfolders (default: a --val-fraction of --train-dir).
    #[arg(long, value_name = "DIR", conflicts_with = "val_fraction")]
    pub val_dir: Option<PathBuf>,
    /// Share of each class of --train-dir held out for validation when there is no --val-dir (default 0.2).
    #[arg(long, value_name = "F")]
    pub val_fraction: Option<f64>,
    /// Seed of the split, the head's initialisation and the shuffles.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Learned queries of the new attentional pooler (their outputs are averaged).
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub pooler_queries: usize,
    /// Heads of the new attentional pooler (default: the model's attn_pooler_heads).
    #[arg(long, value_name = "H")]
    pub pooler_heads: Option<usize>,
    /// Passes over the training items.
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub epochs: usize,
    /// Items per optimiser step (and per validation forward).
    #[arg(long, default_value_t = 32, value_name = "N")]
    pub batch_size: usize,
    /// Peak learning rate of the pooler and head (warmup, then cosine decay).
    #[arg(long, default_value_t = 1e-4, value_name = "LR")]
    pub lr: f64,
    /// Layer-wise learning-rate decay d in (0, 1]: each image-tower group below the head trains at d times
    /// the rate of the group above it.
    #[arg(long, default_value_t = 0.65, value_name = "D")]
    pub layer_decay: f64,
    /// AdamW weight decay of the weight matrices (not of gains, biases and embeddings' vectors).
    #[arg(long, default_value_t = 0.05, value_name = "WD")]
    pub wd: f64,
    /// AdamW β₂.
    #[arg(long, default_value_t = 0.999, value_name = "B2")]
    pub beta2: f64,
    /// Share of the steps spent warming up the learning rate.
    #[arg(long, default_value_t = 0.1, value_name = "F")]
    pub warmup_fraction: f64,
    /// Freeze the image tower (but its last --lock-image-unlocked-groups groups).
    #[arg(long)]
    pub lock_image: bool,
    /// Trailing image-tower groups left trainable with --lock-image (the last is the tower's own poolers,
    /// ln_post and proj; the one before it the last block).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub lock_image_unlocked_groups: usize,
    /// Recompute each residual block in the backward instead of keeping its activations: less memory, about
    /// one more forward pass of compute, the same gradients.
    #[arg(long)]
    pub grad_checkpointing: bool,
    /// Items are videos; each frame is encoded on its own and the pooler reads every spatial and temporal
    /// token (the frames' tokens concatenated).
    #[arg(long)]
    pub video: bool,
    /// Frames sampled per video (the centres of N equal segments).
    #[arg(long, default_value_t = coca_data::video::DEFAULT_FRAMES, value_name = "N")]
    pub frames: usize,
    /// The run directory: checkpoints, the fine-tuned weights and head, result.json.
    #[arg(long, short, value_name = "DIR")]
    pub output: PathBuf,
    /// Save a checkpoint every N steps (0: only at the end).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub save_every: u64,
    /// Checkpoints kept (0: all).
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub keep_checkpoints: usize,
    /// Continue a run: `latest` (the newest checkpoint in --output; starts the run when there is none) or a
    /// checkpoint directory. The data and settings must be those of the run.
    #[arg(long, value_name = "latest|DIR")]
    pub resume: Option<String>,
    /// Stop after step N with a checkpoint, without evaluating (continue later with --resume latest).
    #[arg(long, value_name = "N")]
    pub stop_after: Option<u64>,
    /// Print the result JSON on stdout instead of a summary.
    #[arg(long)]
    pub json: bool,
    /// Draw the validation confusion matrix to PATH.png and PATH.svg.
    #[arg(long, value_name = "PATH")]
    pub confusion: Option<PathBuf>,
}

/// What a checkpoint's data position records: the run must see the same items in the same batches.
fn data_position(args: &FinetuneArgs, train: &Items, classes: &[String]) -> serde_json::Value {
    json!({
        "train_items": train.len(),
        "classes": classes,
        "batch_size": args.batch_size,
        "epochs": args.epochs,
        "frames": args.video.then_some(args.frames),
        "pooler_queries": args.pooler_queries,
        "layer_decay": args.layer_decay,
        "lock_image": args.lock_image,
        "lock_image_unlocked_groups": args.lock_image_unlocked_groups,
    })
}

/// The item indices of optimiser step `step`: epoch `step / per_epoch` is a shuffle of all items seeded by
/// the run's seed and the epoch, cut into batches; a resumed run finds every batch again from the step alone.
fn batch_of(n: usize, batch_size: usize, seed: u64, step: u64) -> Vec<usize> {
    let per_epoch = n.div_ceil(batch_size) as u64;
    let epoch = step / per_epoch;
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ (epoch + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut rng);
    let k = (step % per_epoch) as usize;
    order[k * batch_size..((k + 1) * batch_size).min(n)].to_vec()
}

/// The checkpoint to continue from, per `--resume`, or `None` for a new run.
fn resume_from(args: &FinetuneArgs) -> Result<Option<PathBuf>> {
    match args.resume.as_deref() {
        None => {
            if !list_checkpoints(&args.output)?.is_empty() {
                bail!(
                    "{}: already holds a fine-tuning run; continue it with --resume latest, or give another \
                     --output",
                    args.output.display()
                );
            }
            Ok(None)
        }
        Some("latest") => Ok(latest_checkpoint(&args.output)?),
        Some(dir) => {
            let dir = PathBuf::from(dir);
            if !dir.join(coca_train::checkpoint::STATE_FILE).is_file() {
                bail!(
                    "{}: not a checkpoint directory (no {})",
                    dir.display(),
                    coca_train::checkpoint::STATE_FILE
                );
            }
            Ok(Some(dir))
        }
    }
}

/// Run the command.
pub fn run(args: FinetuneArgs, global: &Global) -> Result<()> {
    if args.video && args.frames == 0 {
        bail!("--frames must be at least 1");
    }
    if args.epochs == 0 || args.batch_size == 0 {
        bail!("--epochs and --batch-size must be at least 1");
    }
    if !(args.lr > 0.0 && args.lr.is_finite()) {
        bail!("--lr must be a positive number");
    }
    if !(0.0..1.0).contains(&args.warmup_fraction) {
        bail!("--warmup-fraction must be in [0, 1)");
    }
    if args.model.precision != Precision::Fp32 {
        bail!(
            "coca finetune trains in fp32 (f32 weights and optimiser state); leave out --precision"
        );
    }
    let started = Instant::now();
    let (cfg, _) = resolve_config(&args.model.model)?;
    let pre = crate::pipeline::preprocess_config(&cfg)?;
    let device = args.model.device.open()?;
    let frames = args.video.then_some(args.frames);
    let kind_of_items = if args.video {
        ItemKind::Videos
    } else {
        ItemKind::Images
    };

    let data = ClassFolders::open(&args.train_dir, kind_of_items, None)?;
    let (all, mut skipped) = Items::open(&data.items, frames, &pre)?;
    let (train, val) = match &args.val_dir {
        Some(val_dir) => {
            let val_data = ClassFolders::open(val_dir, kind_of_items, Some(&data.classes))?;
            let (val, s) = Items::open(&val_data.items, frames, &pre)?;
            skipped.extend(&s);
            (all, val)
        }
        None => {
            let fraction = args.val_fraction.unwrap_or(0.2);
            if !(fraction > 0.0 && fraction < 1.0) {
                bail!("--val-fraction must be between 0 and 1 (exclusive), got {fraction}");
            }
            let (t, v) = stratified_split(&all.labels(), fraction, args.seed);
            if v.is_empty() {
                bail!(
                    "{}: too few images to hold out a validation set (each class needs at least 2); add \
                     images or give --val-dir",
                    args.train_dir.display()
                );
            }
            (all.select(&t), all.select(&v))
        }
    };
    let classes = data.classes.len();
    let width = cfg.vision_cfg.width;
    let kind = ProbeKind::Attentional {
        queries: args.pooler_queries,
        heads: args
            .pooler_heads
            .unwrap_or(cfg.vision_cfg.attn_pooler_heads),
    };
    let checkpoint = resume_from(&args)?;
    let position = data_position(&args, &train, &data.classes);
    let model_config = serde_json::to_value(&cfg)?;
    // The checkpoint's record is checked before its weights are read, so a mismatch is named as such.
    let resumed = match &checkpoint {
        Some(dir) => {
            let state = read_state(dir)?;
            if state.model_config != model_config {
                bail!(
                    "{}: it was fine-tuned from another model config; resume with the same --model",
                    dir.display()
                );
            }
            if state.data != position || state.seed != args.seed {
                bail!(
                    "{}: it belongs to a run with other data or settings (recorded: {}, seed {}); resume with \
                     the same --train-dir, --val-dir/--val-fraction, --seed and training flags",
                    dir.display(),
                    state.data,
                    state.seed
                );
            }
            Some(state)
        }
        None => None,
    };
    let (trainable, head) = match &checkpoint {
        Some(dir) => (
            load_trainable(&cfg, &dir.join(MODEL_FILE), &device)?,
            ProbeHead::load(&dir.join(HEAD_FILE), kind, width, classes)?,
        ),
        None => (
            load_trainable(&cfg, &args.model.weights_path()?, &device)?,
            ProbeHead::new(kind, width, classes, None, args.seed)?,
        ),
    };
    let training = EncoderTraining {
        layer_decay: args.layer_decay,
        locks: Locks {
            image: args.lock_image,
            image_unlocked_groups: args.lock_image_unlocked_groups,
            ..Locks::default()
        },
        adamw: AdamWConfig {
            beta1: 0.9,
            beta2: args.beta2,
            eps: 1e-8,
            weight_decay: args.wd,
        },
    };
    let mut ft = Finetuner::new(&cfg, trainable, head, train.frames(), &training)?;
    let (mut step, mut last_loss) = (0u64, None);
    if let (Some(dir), Some(state)) = (&checkpoint, &resumed) {
        ft.load_optimizer(&dir.join(OPTIMIZER_FILE), state.step)?;
        step = state.step;
        last_loss = state.last_loss;
        tracing::info!("{}: resuming at step {step}", dir.display());
    }

    let per_epoch = train.len().div_ceil(args.batch_size) as u64;
    let total = per_epoch * args.epochs as u64;
    let schedule = Schedule {
        kind: ScheduleKind::Cosine,
        base_lr: args.lr,
        warmup: ((total as f64 * args.warmup_fraction).round() as u64).min(total - 1),
        total,
        cooldown_steps: 0,
    };
    let head_meta = probe_metadata(&args.model, frames, kind, width, &data.classes, &cfg)?;
    // Per-step losses and learning rates, and the validation scores, as `coca train` logs them (`coca plot`
    // draws them); a resumed run drops the lines after its checkpoint and logs those steps again.
    let mut log = if args.resume.is_some() {
        MetricsWriter::resume(&args.output, step)?
    } else {
        MetricsWriter::create(&args.output)?
    };
    let stop = args.stop_after.unwrap_or(total).min(total);
    let labels = train.labels();
    let bar = crate::progress::Progress::new("fine-tuning", Some(total), "steps");
    bar.inc(step);
    let save = |ft: &Finetuner, step: u64, last_loss: Option<f64>| -> Result<PathBuf> {
        let state = TrainState {
            step,
            data: position.clone(),
            model_config: model_config.clone(),
            seed: args.seed,
            last_loss,
        };
        save_checkpoint(&args.output, ft, &head_meta, &state, args.keep_checkpoints)
    };
    while step < stop {
        let batch = batch_of(train.len(), args.batch_size, args.seed, step);
        let pixels = train.pixels(&batch, &device)?;
        let y: Vec<u32> = batch.iter().map(|&i| labels[i] as u32).collect();
        let y = Tensor::from_vec(y, batch.len(), &Device::Cpu)?;
        let lr = schedule.lr(step);
        let loss = ft.step(&pixels, &y, lr, args.grad_checkpointing)?;
        if !loss.is_finite() {
            bail!(
                "the training loss became {loss} at step {}; lower --lr",
                step + 1
            );
        }
        step += 1;
        log.log(step, Split::Train, &[("loss", loss), ("lr", lr)])?;
        last_loss = Some(loss);
        bar.inc(1);
        tracing::debug!("step {step}: loss {loss:.6}");
        if args.save_every > 0 && step.is_multiple_of(args.save_every) && step < stop {
            save(&ft, step, last_loss)?;
        }
    }
    bar.finish();
    let latest = save(&ft, step, last_loss)?;
    if step < total {
        if !global.quiet {
            println!(
                "stopped after step {step} of {total}; checkpoint {} (continue with --resume latest)",
                latest.display()
            );
        }
        return Ok(());
    }

    // Validation.
    let val_labels = val.labels();
    let mut logits = Vec::with_capacity(val.len() * classes);
    let indices: Vec<usize> = (0..val.len()).collect();
    for chunk in indices.chunks(args.batch_size) {
        let pixels = val.pixels(chunk, &device)?;
        let l = ft.logits(&pixels, &AllAtOnce)?.detach();
        logits.extend(l.flatten_all()?.to_vec1::<f32>()?);
    }
    let eval = classification_report(&logits, classes, &val_labels)
        .context("scoring the fine-tuned model on the validation set")?;
    let mut scores = vec![
        ("acc1", eval.metrics.acc1),
        ("mean_per_class_recall", eval.metrics.mean_per_class_recall),
    ];
    scores.extend(eval.metrics.acc5.map(|a| ("acc5", a)));
    log.log(step, Split::Val, &scores)?;

    // The fine-tuned weights, then the head that names their hash.
    std::fs::create_dir_all(&args.output)
        .with_context(|| format!("{}: cannot create the run directory", args.output.display()))?;
    let weights_out = args.output.join(MODEL_FILE);
    ft.save_weights(&weights_out)?;
    let mut meta = head_meta.clone();
    meta.insert(ENCODER_SHA256.into(), file_sha256(&weights_out)?);
    meta.insert(ENCODER_PATH.into(), weights_out.display().to_string());
    let head_out = args.output.join(HEAD_FILE);
    ft.head().save(&head_out, &meta)?;
    let mut plots = Vec::new();
    if let Some(path) = &args.confusion {
        let title = format!(
            "fine-tuned on {} (top-1 {:.1}%)",
            args.train_dir.display(),
            100.0 * eval.metrics.acc1
        );
        plots = coca_runlog::plot_confusion(&eval.confusion, &data.classes, path, &title)?;
    }
    let mut metrics = json!({
        "acc1": eval.metrics.acc1,
        "mean_per_class_recall": eval.metrics.mean_per_class_recall,
    });
    if let Some(acc5) = eval.metrics.acc5 {
        metrics["acc5"] = json!(acc5);
    }
    let mut value = json!({
        "dataset": args.train_dir.display().to_string(),
        "model": args.model.model,
        "pretrained": args.model.pretrained,
        "task": if args.video { "video_finetune" } else { "finetune" },
        "metrics": metrics,
        "classes": data.classes,
        "per_class_recall": eval.per_class_recall,
        "confusion_matrix": eval.confusion,
        "train_samples": train.len(),
        "val_samples": val.len(),
        "val_dir": args.val_dir.as_ref().map(|p| p.display().to_string()),
        "val_fraction": if args.val_dir.is_none() { Some(args.val_fraction.unwrap_or(0.2)) } else { None },
        "seed": args.seed,
        "frames": frames,
        "pooler": match kind {
            ProbeKind::Attentional { queries, heads } =>
                json!({"kind": "attentional_pooler", "queries": queries, "heads": heads, "width": width}),
            ProbeKind::Linear => json!({"kind": "linear"}),
        },
        "training": {
            "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
            "layer_decay": args.layer_decay, "wd": args.wd, "steps": step, "final_loss": last_loss,
            "lock_image": args.lock_image, "lock_image_unlocked_groups": args.lock_image_unlocked_groups,
            "grad_checkpointing": args.grad_checkpointing,
            "trainable_tensors": ft.scales().len(),
            "resumed_from": checkpoint.as_ref().map(|p| p.display().to_string()),
            "seconds": started.elapsed().as_secs_f64(),
        },
        "saved": {"model": weights_out.display().to_string(), "head": head_out.display().to_string()},
        "confusion_plots": plots.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
    });
    skipped.add_to(&mut value);
    write_json(&value, Some(&args.output.join(RESULT_FILE)))?;
    if args.json {
        return write_json(&value, None);
    }
    if !global.quiet {
        println!(
            "{} on {}: {} train / {} validation items, {} classes; {step} steps in {:.1}s, final loss {:.4}",
            value["task"].as_str().unwrap_or_default(),
            args.train_dir.display(),
            train.len(),
            val.len(),
            classes,
            started.elapsed().as_secs_f64(),
            last_loss.unwrap_or(f64::NAN),
        );
        print_scores(&value, &eval);
        println!("saved {} and {}", weights_out.display(), head_out.display());
    }
    Ok(())
}

/// Write a checkpoint directory atomically (weights, head, optimiser moments, state) and prune old ones.
fn save_checkpoint(
    run: &Path,
    ft: &Finetuner,
    head_meta: &BTreeMap<String, String>,
    state: &TrainState,
    keep: usize,
) -> Result<PathBuf> {
    let path = write_checkpoint_dir(run, state.step, |dir| {
        let failed = |e: anyhow::Error| TrainError::Checkpoint {
            path: dir.to_path_buf(),
            reason: format!("{e:#}"),
        };
        ft.save_weights(&dir.join(MODEL_FILE)).map_err(failed)?;
        ft.head()
            .save(&dir.join(HEAD_FILE), head_meta)
            .map_err(failed)?;
        ft.save_optimizer(&dir.join(OPTIMIZER_FILE))
            .map_err(failed)?;
        write_state(dir, state)
    })?;
    prune_checkpoints(run, keep)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_cover_each_epoch_once_and_depend_on_the_step_alone() {
        let (n, bs) = (10, 4);
        for epoch in 0..3u64 {
            let mut seen: Vec<usize> = (0..3)
                .flat_map(|k| batch_of(n, bs, 5, epoch * 3 + k))
                .collect();
            assert_eq!(batch_of(n, bs, 5, epoch * 3 + 2).len(), 2);
            seen.sort_unstable();
            assert_eq!(seen, (0..n).collect::<Vec<_>>());
        }
        assert_eq!(batch_of(n, bs, 5, 4), batch_of(n, bs, 5, 4));
        assert_ne!(batch_of(n, bs, 5, 0), batch_of(n, bs, 5, 3));
        assert_ne!(batch_of(n, bs, 5, 0), batch_of(n, bs, 6, 0));
    }
}
