//! `coca probe`: frozen-feature evaluation as the CoCa paper does it — a new attentional pooler (or a plain
//! linear classifier) trained on the frozen encoder's outputs, for images and for videos.
//!
//! 1. the class folders, read by coca-data's [`ClassFolders`] (as `coca eval` reads them), and [`split`]: the
//!    train/validation split;
//! 2. [`features`]: the encoder run once per dataset, its tokens and embeddings cached on disk;
//! 3. [`head`] + [`fit`](mod@fit): the probe trained on the cached features (seconds, not minutes);
//! 4. the scores — top-1, top-5, mean per-class recall, confusion matrix — from `coca_eval`'s
//!    [`classification_report`], the definitions zero-shot evaluation uses; [`predict`]: a saved probe applied
//!    to new images or videos.

mod features;
mod fit;
pub(crate) mod head;
pub(crate) mod predict;
pub(crate) mod split;

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use coca_data::{ClassFolders, ItemKind, LabelledItem};
use coca_eval::{classification_report, ClassificationReport};
use coca_model::{Coca, CocaConfig};
use serde_json::json;

use crate::cli::Global;
use crate::commands::embed::progress::Skipped;
use crate::model_args::{resolve_config, ModelArgs};
use crate::output::write_json;
use features::{FeatureSpec, Features, Provenance};
use fit::{fit, FitOptions};
use head::{standardisation, ProbeHead, ProbeKind};
use split::stratified_split;

/// Without --epochs, a run trains at least this many epochs...
const DEFAULT_MIN_EPOCHS: usize = 10;
/// ...and at least this many optimiser steps.
const DEFAULT_MIN_STEPS: usize = 300;

/// `coca probe`.
#[derive(Debug, Args)]
#[command(after_help = "\
Data: --train-dir holds one subfolder per class (images; with --video: frame folders, GIFs or video files).
Validation comes from --val-dir (same layout) or from a stratified --val-fraction of --train-dir (seeded).
An item that cannot be read (a missing, truncated or corrupt image, one over --max-image-pixels, an unreadable
video) is skipped with a warning naming it, and counted in \"skipped_images\" of the result; the probe is
trained and scored on the other items. When no item of a folder can be read, the run fails.

The encoder runs once per dataset and its outputs are cached (--cache-dir, else $COCA_CACHE_DIR/probe, else
~/.cache/coca/probe), keyed by model, checkpoint, precision, frame count and every file's size and time; later
runs with other probe settings train in seconds (and report the same skipped items).

Examples:
  coca probe --model coca_ViT-B-32 --pretrained laion2b_s13b_b90k --train-dir digits/ --val-fraction 0.2 \\
       --pooler-queries 1 --output probe.json --confusion confusion.png --save-probe digits.probe.safetensors
  coca probe --model coca_ViT-B-32 --pretrained laion2b_s13b_b90k --train-dir digits/ --linear
  coca probe --model coca_ViT-B-32 --pretrained laion2b_s13b_b90k --predict digits.probe.safetensors a.png b.png
  coca probe --model M --pretrained F --video --frames 8 --train-dir actions/train --val-dir actions/val")]
pub struct ProbeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Training data: one subfolder per class.
    #[arg(long, value_name = "DIR", required_unless_present = "predict")]
    pub train_dir: Option<PathBuf>,
    /// Validation data with the same class subfolders (default: a --val-fraction of --train-dir).
    #[arg(long, value_name = "DIR", conflicts_with = "val_fraction")]
    pub val_dir: Option<PathBuf>,
    /// Share of each class of --train-dir held out for validation when there is no --val-dir (default 0.2).
    #[arg(long, value_name = "F")]
    pub val_fraction: Option<f64>,
    /// Seed of the split, the probe's initialisation and the shuffles.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// A plain linear probe (logistic regression) on the pooled, normalised embedding, instead of a new
    /// attentional pooler on the encoder tokens.
    #[arg(long)]
    pub linear: bool,
    /// Learned queries of the new attentional pooler (their outputs are averaged).
    #[arg(long, default_value_t = 1, value_name = "N", conflicts_with = "linear")]
    pub pooler_queries: usize,
    /// Heads of the new attentional pooler (default: the model's attn_pooler_heads).
    #[arg(long, value_name = "H", conflicts_with = "linear")]
    pub pooler_heads: Option<usize>,
    /// Passes over the training features (default: at least 10, and enough for 300 optimiser steps, so small
    /// datasets still train to convergence).
    #[arg(long, value_name = "N")]
    pub epochs: Option<usize>,
    /// Items per optimiser step.
    #[arg(long, default_value_t = 64, value_name = "N")]
    pub batch_size: usize,
    /// Peak learning rate (default: 1e-3 for the pooler, 1e-2 for --linear), warmup then cosine decay.
    #[arg(long, value_name = "LR")]
    pub lr: Option<f64>,
    /// AdamW weight decay of the weight matrices.
    #[arg(long, default_value_t = 0.01, value_name = "WD")]
    pub wd: f64,
    /// Share of the steps spent warming up the learning rate.
    #[arg(long, default_value_t = 0.05, value_name = "F")]
    pub warmup_fraction: f64,
    /// Items are videos (frame folders, GIFs, or video files with the `ffmpeg` feature); the pooler reads
    /// every spatial and temporal token (the frames' tokens concatenated).
    #[arg(long)]
    pub video: bool,
    /// Frames sampled per video (the centres of N equal segments).
    #[arg(long, default_value_t = coca_data::video::DEFAULT_FRAMES, value_name = "N")]
    pub frames: usize,
    /// Images per encoder forward pass while extracting features.
    #[arg(long, default_value_t = 32, value_name = "N")]
    pub embed_batch_size: usize,
    /// Folder of cached features (overrides COCA_CACHE_DIR and the default).
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Neither read nor write cached features.
    #[arg(long, conflicts_with = "cache_dir")]
    pub no_cache: bool,
    /// Write the result JSON here (atomically).
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Print the result JSON on stdout instead of a summary.
    #[arg(long)]
    pub json: bool,
    /// Draw the validation confusion matrix to PATH.png and PATH.svg.
    #[arg(long, value_name = "PATH")]
    pub confusion: Option<PathBuf>,
    /// Save the trained probe (safetensors with its classes and settings) for --predict.
    #[arg(long, value_name = "FILE")]
    pub save_probe: Option<PathBuf>,
    /// Classify INPUTS with a probe saved by --save-probe (same --model and --pretrained).
    #[arg(long, value_name = "PROBE")]
    pub predict: Option<PathBuf>,
    /// With --predict: how many classes to report per input.
    #[arg(long, default_value_t = 5, value_name = "K")]
    pub top_k: usize,
    /// With --predict: images (or with --video: videos) to classify.
    #[arg(value_name = "INPUTS")]
    pub inputs: Vec<PathBuf>,
}

/// The model, loaded on first use: a run whose features are all cached never loads it.
pub struct LazyModel {
    args: ModelArgs,
    model: Option<Coca>,
}

impl LazyModel {
    /// Load (once) and return the model.
    pub fn get(&mut self) -> Result<&Coca> {
        if self.model.is_none() {
            self.model = Some(self.args.load()?.0);
        }
        Ok(self.model.as_ref().expect("loaded above"))
    }
}

/// Run the command.
pub fn run(args: ProbeArgs, global: &Global) -> Result<()> {
    if args.video && args.frames == 0 {
        bail!("--frames must be at least 1");
    }
    if args.predict.is_some() {
        return predict::run(&args);
    }
    if !args.inputs.is_empty() {
        bail!("INPUTS are only used with --predict PROBE; to train, give --train-dir");
    }
    train(&args, global.quiet)
}

fn cache_dir(args: &ProbeArgs) -> Option<PathBuf> {
    if args.no_cache {
        None
    } else {
        args.cache_dir.clone().or_else(features::default_cache_dir)
    }
}

/// Train and evaluate a probe.
fn train(args: &ProbeArgs, quiet: bool) -> Result<()> {
    let train_dir = args.train_dir.as_deref().expect("clap requires it");
    let (cfg, _) = resolve_config(&args.model.model)?;
    let compute = args.model.precision.compute(args.model.device)?.tag();
    let frames = args.video.then_some(args.frames);
    let weights = args.model.weights_path()?;
    let cache = cache_dir(args);
    let mut model = LazyModel {
        args: args.model.clone(),
        model: None,
    };
    let kind_of_items = if args.video {
        ItemKind::Videos
    } else {
        ItemKind::Images
    };
    let data = ClassFolders::open(train_dir, kind_of_items, None)?;
    let features_of = |items: &[LabelledItem], model: &mut LazyModel| {
        let spec = FeatureSpec {
            weights: &weights,
            config: &cfg,
            compute: &compute,
            frames,
            items,
        };
        features::features(&spec, cache.as_deref(), model, args.embed_batch_size)
    };
    let (train, val, provenance): (Features, Features, Vec<Provenance>) = match &args.val_dir {
        Some(val_dir) => {
            let val_data = ClassFolders::open(val_dir, kind_of_items, Some(&data.classes))?;
            let (train, p1) = features_of(&data.items, &mut model)?;
            let (val, p2) = features_of(&val_data.items, &mut model)?;
            (train, val, vec![p1, p2])
        }
        None => {
            let fraction = args.val_fraction.unwrap_or(0.2);
            if !(fraction > 0.0 && fraction < 1.0) {
                bail!("--val-fraction must be between 0 and 1 (exclusive), got {fraction}");
            }
            let (all, p) = features_of(&data.items, &mut model)?;
            let (t, v) = stratified_split(&all.labels, fraction, args.seed);
            if v.is_empty() {
                bail!(
                    "{}: too few images to hold out a validation set (each class needs at least 2); add \
                     images or give --val-dir",
                    train_dir.display()
                );
            }
            (all.select(&t)?, all.select(&v)?, vec![p])
        }
    };

    let classes = data.classes.len();
    let kind = if args.linear {
        ProbeKind::Linear
    } else {
        ProbeKind::Attentional {
            queries: args.pooler_queries,
            heads: args
                .pooler_heads
                .unwrap_or(cfg.vision_cfg.attn_pooler_heads),
        }
    };
    let (train_x, val_x) = match kind {
        ProbeKind::Linear => (&train.embeddings, &val.embeddings),
        ProbeKind::Attentional { .. } => (&train.tokens, &val.tokens),
    };
    let input_dim = *train_x.dims().last().expect("features have a width");
    let standardise = match kind {
        ProbeKind::Linear => Some(standardisation(train_x)?),
        ProbeKind::Attentional { .. } => None,
    };
    let head = ProbeHead::new(kind, input_dim, classes, standardise, args.seed)?;
    let steps_per_epoch = train.len().div_ceil(args.batch_size.max(1)).max(1);
    let opts = FitOptions {
        epochs: args
            .epochs
            .unwrap_or_else(|| DEFAULT_MIN_EPOCHS.max(DEFAULT_MIN_STEPS.div_ceil(steps_per_epoch))),
        batch_size: args.batch_size,
        lr: args.lr.unwrap_or(if args.linear { 1e-2 } else { 1e-3 }),
        weight_decay: args.wd,
        warmup_fraction: args.warmup_fraction,
        seed: args.seed,
    };
    if !(opts.lr > 0.0 && opts.lr.is_finite()) {
        bail!("--lr must be a positive number");
    }
    let report = fit(&head, train_x, &train.labels, &opts)?;
    let logits: Vec<f32> = fit::predict(&head, val_x, 256)?.concat();
    let eval = classification_report(&logits, classes, &val.labels)
        .context("scoring the probe on the validation set")?;

    if let Some(path) = &args.save_probe {
        head.save(
            path,
            &probe_metadata(
                &args.model,
                args.video.then_some(args.frames),
                kind,
                input_dim,
                &data.classes,
                &cfg,
            )?,
        )?;
    }
    let mut written = Vec::new();
    if let Some(path) = &args.confusion {
        let title = format!(
            "{} on {} (top-1 {:.1}%)",
            kind.task().replace('_', " "),
            train_dir.display(),
            100.0 * eval.metrics.acc1
        );
        written = coca_runlog::plot_confusion(&eval.confusion, &data.classes, path, &title)?;
    }

    let mut skipped = Skipped::default();
    for p in &provenance {
        skipped.extend(&p.skipped);
    }
    let mut metrics = json!({
        "acc1": eval.metrics.acc1,
        "mean_per_class_recall": eval.metrics.mean_per_class_recall,
    });
    if let Some(acc5) = eval.metrics.acc5 {
        metrics["acc5"] = json!(acc5);
    }
    let probe = match kind {
        ProbeKind::Attentional { queries, heads } => json!({
            "kind": "attentional_pooler", "queries": queries, "heads": heads, "input": "tokens",
            "tokens_per_item": train.tokens.dim(1)?, "width": input_dim,
        }),
        ProbeKind::Linear => json!({"kind": "linear", "input": "embedding", "width": input_dim}),
    };
    let mut value = json!({
        "dataset": train_dir.display().to_string(),
        "model": args.model.model,
        "pretrained": args.model.pretrained,
        "task": if args.video { format!("video_{}", kind.task()) } else { kind.task().to_string() },
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
        "probe": probe,
        "training": {
            "epochs": opts.epochs, "batch_size": opts.batch_size, "lr": opts.lr, "wd": opts.weight_decay,
            "steps": report.steps, "final_loss": report.final_loss, "seconds": report.seconds,
        },
        "features": provenance.iter().map(|p| json!({
            "cache": p.cache.as_ref().map(|c| c.display().to_string()),
            "reused": p.reused,
            "seconds": p.seconds,
            "skipped_images": p.skipped.count(),
        })).collect::<Vec<_>>(),
        "confusion_plots": written.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
        "saved_probe": args.save_probe.as_ref().map(|p| p.display().to_string()),
    });
    skipped.add_to(&mut value);
    if let Some(path) = &args.output {
        write_json(&value, Some(path))?;
    }
    if args.json {
        return write_json(&value, None);
    }
    if !quiet {
        print_summary(&value, &eval, &data.classes);
    }
    Ok(())
}

fn print_summary(value: &serde_json::Value, report: &ClassificationReport, classes: &[String]) {
    let cached = value["features"]
        .as_array()
        .map(|a| a.iter().all(|p| p["reused"] == true))
        .unwrap_or(false);
    println!(
        "{} on {}: {} train / {} validation items, {} classes; features {}, probe trained in {:.2}s",
        value["task"].as_str().unwrap_or_default(),
        value["dataset"].as_str().unwrap_or_default(),
        value["train_samples"],
        value["val_samples"],
        classes.len(),
        if cached { "from the cache" } else { "extracted" },
        value["training"]["seconds"].as_f64().unwrap_or(0.0),
    );
    print_scores(value, report);
}

/// The scores of a classification result, and the count of skipped items (`coca probe`, `coca finetune`).
pub(crate) fn print_scores(value: &serde_json::Value, report: &ClassificationReport) {
    let eval = &report.metrics;
    print!("top-1 {:.2}%", 100.0 * eval.acc1);
    if let Some(acc5) = eval.acc5 {
        print!("  top-5 {:.2}%", 100.0 * acc5);
    }
    println!(
        "  mean per-class recall {:.2}%",
        100.0 * eval.mean_per_class_recall
    );
    match value["skipped_images"].as_u64() {
        Some(n) if n > 0 => {
            println!("skipped {n} unreadable items (each named in a warning above)")
        }
        _ => {}
    }
}

/// What a saved probe records besides its tensors, so --predict can rebuild it and check the model.
pub(crate) fn probe_metadata(
    args: &ModelArgs,
    video: Option<usize>,
    kind: ProbeKind,
    input_dim: usize,
    classes: &[String],
    cfg: &CocaConfig,
) -> Result<BTreeMap<String, String>> {
    let mut m = BTreeMap::new();
    m.insert("format".into(), predict::PROBE_FORMAT.into());
    m.insert("kind".into(), kind.task().into());
    if let ProbeKind::Attentional { queries, heads } = kind {
        m.insert("queries".into(), queries.to_string());
        m.insert("heads".into(), heads.to_string());
    }
    m.insert("input_dim".into(), input_dim.to_string());
    m.insert("classes".into(), serde_json::to_string(classes)?);
    m.insert("model".into(), args.model.clone());
    m.insert("pretrained".into(), args.pretrained.clone());
    m.insert(
        "model_config".into(),
        serde_json::to_string(cfg).context("model config")?,
    );
    m.insert("video".into(), video.is_some().to_string());
    m.insert(
        "frames".into(),
        video
            .unwrap_or(coca_data::video::DEFAULT_FRAMES)
            .to_string(),
    );
    Ok(m)
}
