//! `coca eval`: the benchmarks CoCa is measured on, with results in the formats the field uses —
//! CLIP_benchmark's JSON (`{"dataset", "model", "pretrained", "task", "metrics", "language"}`) and
//! pycocoevalcap's metric names.
//!
//! - [`zeroshot`]: zero-shot classification (acc1, acc5, mean per-class recall) of image folders and
//!   WebDataset shards ([`labelled`]);
//! - [`retrieval`]: image↔text recall@K with several captions per image ([`references`]);
//! - [`captioning`]: BLEU, METEOR, ROUGE-L and CIDEr-D of generated (or given) captions.
//!
//! The metric formulas live in `coca-eval`; this module reads datasets, runs the model and reports.

pub mod captioning;
pub mod labelled;
pub mod references;
pub mod retrieval;
pub mod zeroshot;

use std::path::PathBuf;

use anyhow::Result;
use candle_core::{Device, Tensor};
use clap::{Args, Subcommand};
use coca_data::Sample;
use coca_image::PreprocessConfig;
use serde_json::{json, Value};

use crate::cli::Global;
use crate::commands::embed::decode::preprocess_samples;
use crate::commands::embed::progress::Skipped;
use crate::model_args::ModelArgs;
use crate::output::write_json;
use crate::progress::Progress;

/// `coca eval`.
#[derive(Debug, Args)]
#[command(after_help = "\
Each task prints its metrics, or with --json the result object, and --output writes that object to a
file atomically. The object is CLIP_benchmark's:
  {\"dataset\": ..., \"model\": ..., \"pretrained\": ..., \"task\": ..., \"metrics\": {...}, \"language\": \"en\"}
plus \"skipped_images\" (how many images could not be read) and \"skipped_items\" (the first of them, with the
reason). An unreadable image (missing, truncated, corrupt, or over --max-image-pixels) is skipped with a
warning naming it and the metrics are computed over the other images; when no image can be read, the task
fails. See docs/evaluation.md for the dataset layouts and examples.")]
pub struct EvalArgs {
    /// The benchmark to run.
    #[command(subcommand)]
    pub task: EvalTask,
}

/// The evaluation tasks.
#[derive(Debug, Subcommand)]
pub enum EvalTask {
    /// Zero-shot classification of an image folder or WebDataset shards: acc1, acc5, mean per-class recall.
    ZeroshotClassification(zeroshot::ZeroshotArgs),
    /// Image↔text retrieval with several captions per image: recall@1/5/10 in both directions.
    Retrieval(retrieval::RetrievalArgs),
    /// Captioning: BLEU-1..4, METEOR, ROUGE-L and CIDEr-D of generated or given captions.
    Captioning(captioning::CaptioningArgs),
}

/// Where the result goes; shared by every task.
#[derive(Debug, Clone, Args)]
pub struct OutputArgs {
    /// Write the result JSON to this file (atomically), as CLIP_benchmark's --output.
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Print the result JSON on stdout instead of a summary.
    #[arg(long)]
    pub json: bool,
}

/// Run the task; `--quiet` hides the progress of embedding class prompts (zero-shot).
pub fn run(args: EvalArgs, global: &Global) -> Result<()> {
    match args.task {
        EvalTask::ZeroshotClassification(a) => zeroshot::run(a, global),
        EvalTask::Retrieval(a) => retrieval::run(a, global),
        EvalTask::Captioning(a) => captioning::run(a, global),
    }
}

/// CLIP_benchmark's result object, plus the images skipped. `model` is `None` when no model ran (scoring
/// given captions).
fn result_json(
    dataset: &str,
    model: Option<&ModelArgs>,
    task: &str,
    metrics: Value,
    skipped: &Skipped,
) -> Value {
    let mut result = json!({
        "dataset": dataset,
        "model": model.map(|m| m.model.as_str()),
        "pretrained": model.map(|m| m.pretrained.as_str()),
        "task": task,
        "metrics": metrics,
        "language": "en",
    });
    skipped.add_to(&mut result);
    result
}

/// Write the result to --output (atomically) and print it: as JSON with --json, else one metric a line.
fn report(result: &Value, out: &OutputArgs) -> Result<()> {
    if let Some(path) = &out.output {
        write_json(result, Some(path))?;
    }
    if out.json {
        return write_json(result, None);
    }
    println!(
        "{} on {} ({})",
        result["task"].as_str().unwrap_or_default(),
        result["dataset"].as_str().unwrap_or_default(),
        result["model"].as_str().unwrap_or("no model"),
    );
    if let Some(metrics) = result["metrics"].as_object() {
        let mut lines: Vec<_> = metrics.iter().collect();
        // recall@5 before recall@10: order by name, then by the number after `@` or `_`.
        lines.sort_by_key(|(name, _)| metric_order(name));
        for (name, value) in lines {
            match value.as_f64() {
                Some(v) => println!("  {name:<28} {v:.4}"),
                None => println!("  {name:<28} {value}"),
            }
        }
    }
    match result["skipped_images"].as_u64() {
        Some(n) if n > 0 => {
            println!("skipped {n} unreadable images (each named in a warning above)")
        }
        _ => {}
    }
    Ok(())
}

/// Sort key of a metric name: `text_retrieval_recall@10` → (`text_retrieval_recall@`, 10).
fn metric_order(name: &str) -> (&str, u64) {
    let split = name
        .rfind(|c: char| !c.is_ascii_digit())
        .map_or(0, |i| i + 1);
    (&name[..split], name[split..].parse().unwrap_or(0))
}

/// Decode workers: `--threads` when given (through RAYON_NUM_THREADS), else every core.
fn decode_workers() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1)
}

/// The readable images of a batch, preprocessed: a `(n, 3, S, S)` tensor and the index in the batch of each
/// of its rows.
struct Loaded {
    pixels: Tensor,
    kept: Vec<usize>,
}

/// Decode and preprocess a batch of images (on several threads). An unreadable image (missing, truncated,
/// corrupt, over the pixel limit) is skipped: logged once naming it and the reason, and counted in `skipped`,
/// so the metrics are those of the other images. `None` when no image of the batch can be read.
fn load_samples(
    samples: &[Sample],
    pre: &PreprocessConfig,
    device: &Device,
    bar: &Progress,
    skipped: &mut Skipped,
) -> Result<Option<Loaded>> {
    let refs: Vec<&Sample> = samples.iter().collect();
    let size = pre.image_size as usize;
    let mut data = Vec::with_capacity(samples.len() * 3 * size * size);
    let mut kept = Vec::with_capacity(samples.len());
    for (i, pixels) in preprocess_samples(&refs, pre, decode_workers())
        .into_iter()
        .enumerate()
    {
        match pixels {
            Ok(p) => {
                data.extend_from_slice(&p);
                kept.push(i);
            }
            // The image errors name the image.
            Err(e) => skipped.skip(bar, e.to_string()),
        }
    }
    if kept.is_empty() {
        return Ok(None);
    }
    let pixels = Tensor::from_vec(data, (kept.len(), 3, size, size), device)?;
    Ok(Some(Loaded { pixels, kept }))
}

/// `(n, d)` rows of a tensor as f32 on the CPU.
fn rows_f32(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.to_dtype(candle_core::DType::F32)?
        .to_device(&Device::Cpu)?
        .flatten_all()?
        .to_vec1()?)
}
