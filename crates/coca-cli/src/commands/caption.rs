//! `coca caption`: captions for images with a key/value-cached decoder (greedy, sampling, beam search).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use coca_generate::{generate, Caption};
use coca_text::Tokenizer;
use serde_json::json;

use crate::cli::Global;
use crate::commands::bench::peak_rss_mib;
use crate::generation_args::GenerationArgs;
use crate::model_args::ModelArgs;
use crate::output::write_json;
use crate::pipeline::{load_images, preprocess_config};

const AFTER_HELP: &str = "\
Without options this is open_clip 3.3.0's default `model.generate(image)`: beam search with 6 beams in 3
groups, beams scored by summed raw logits (as open_clip does), at most 30 tokens, the end token allowed from
the 5th — and it gives the same captions. Any flag changes just that setting.

Lengths count tokens like open_clip's seq_len / min_seq_len: the start token and the end token included.

Examples:
  # open_clip's default call
  coca caption --model coca_ViT-B-32 --pretrained model.safetensors cat.jpg dog.png
  # greedy, longer captions, JSON with token ids and log-probabilities
  coca caption --model coca_ViT-B-32 --pretrained model.safetensors --strategy greedy \\
       --max-length 40 --json --tokens photos/*.jpg
  # nucleus sampling, reproducible
  coca caption --model coca_ViT-B-32 --pretrained model.safetensors --strategy top-p --top-p 0.9 \\
       --temperature 0.8 --seed 7 cat.jpg
  # continue a prompt
  coca caption --model coca_ViT-B-32 --pretrained model.safetensors --strategy greedy \\
       --prompt 'a painting of' cat.jpg
  # time it (scripts/bench/bench_caption.py compares with open_clip)
  coca caption --model coca_ViT-B-32 --pretrained model.safetensors --bench --bench-iters 5 cat.jpg";

/// `coca caption`.
#[derive(Debug, Args)]
#[command(after_help = AFTER_HELP)]
pub struct CaptionArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub generation: GenerationArgs,
    /// Images decoded together.
    #[arg(long, default_value_t = 8, value_name = "N")]
    pub batch_size: usize,
    /// Print one JSON object {"captions": [{"image", "caption", "log_prob", ...}]} instead of lines.
    #[arg(long)]
    pub json: bool,
    /// Also show the token ids of each caption.
    #[arg(long)]
    pub tokens: bool,
    /// Write the output to this file (atomically) instead of stdout (JSON).
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Time the captioning instead of printing captions: JSON with load time, time to the first caption,
    /// median seconds per run, and peak RSS.
    #[arg(long)]
    pub bench: bool,
    /// Timed runs for --bench (after the first, which gives time to first caption).
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub bench_iters: usize,
    /// Image files (JPEG, PNG, WebP, GIF, BMP, TIFF).
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<PathBuf>,
}

/// One image's output.
fn caption_json(
    path: &std::path::Path,
    c: &Caption,
    text: &str,
    with_tokens: bool,
) -> serde_json::Value {
    let mut v = json!({
        "image": path.display().to_string(),
        "caption": text,
        "log_prob": c.log_prob,
        "finished": c.finished,
    });
    if let Some(s) = c.beam_score {
        v["beam_score"] = json!(s);
    }
    if with_tokens {
        v["tokens"] = json!(c.tokens);
    }
    v
}

/// Run the command.
pub fn run(args: CaptionArgs, _global: &Global) -> Result<()> {
    let started = Instant::now();
    if args.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    if args.bench && args.bench_iters == 0 {
        bail!("--bench-iters must be at least 1");
    }
    for path in &args.images {
        if !path.is_file() {
            bail!("{}: no such image file", path.display());
        }
    }
    let tokenizer = Tokenizer::new().context("loading the CLIP tokenizer")?;
    let (model, model_cfg) = args.model.load()?;
    let load_s = started.elapsed().as_secs_f64();
    let gen_cfg = args.generation.config_for(&model, &tokenizer)?;
    let pre = preprocess_config(&model_cfg)?;
    let device = model.device().clone();

    // Caption everything once; `first` records when the first batch's captions exist.
    let run_once = |first: &mut Option<f64>| -> Result<Vec<Caption>> {
        let mut out = Vec::with_capacity(args.images.len());
        for (b, chunk) in args.images.chunks(args.batch_size).enumerate() {
            let pixels = load_images(chunk, &pre, &device)?;
            let cfg = gen_cfg.for_batch(b * args.batch_size);
            out.extend(generate(&model, &pixels, &cfg)?);
            if first.is_none() {
                *first = Some(started.elapsed().as_secs_f64());
            }
        }
        Ok(out)
    };

    let mut first = None;
    let t = Instant::now();
    let captions = run_once(&mut first)?;
    let first_run_s = t.elapsed().as_secs_f64();
    if args.bench {
        let mut times = Vec::with_capacity(args.bench_iters);
        for _ in 0..args.bench_iters {
            let t = Instant::now();
            run_once(&mut None)?;
            times.push(t.elapsed().as_secs_f64());
        }
        times.sort_by(f64::total_cmp);
        let new_tokens: usize = captions.iter().map(|c| c.generated().len()).sum();
        let report = json!({
            "images": args.images.len(),
            "batch_size": args.batch_size,
            "config": gen_cfg,
            "load_s": load_s,
            "time_to_first_caption_s": first,
            "first_run_s": first_run_s,
            "median_run_s": times[times.len() / 2],
            "runs_s": times,
            "new_tokens_first_run": new_tokens,
            "tokens_first_run": captions.iter().map(|c| &c.tokens).collect::<Vec<_>>(),
            "peak_rss_mib": peak_rss_mib(),
        });
        return write_json(&report, args.output.as_deref());
    }

    let texts: Vec<String> = captions.iter().map(|c| c.text(&tokenizer)).collect();
    if args.json || args.output.is_some() {
        let items: Vec<_> = args
            .images
            .iter()
            .zip(&captions)
            .zip(&texts)
            .map(|((p, c), t)| caption_json(p, c, t, args.tokens))
            .collect();
        return write_json(
            &json!({ "model": args.model.model, "config": gen_cfg, "captions": items }),
            args.output.as_deref(),
        );
    }
    for ((path, c), text) in args.images.iter().zip(&captions).zip(&texts) {
        if args.tokens {
            println!("{}\t{text}\t{:?}", path.display(), c.tokens);
        } else {
            println!("{}\t{text}", path.display());
        }
    }
    Ok(())
}
