//! `coca bench`: throughput measurements that scripts/bench compares with open_clip in the same run.

use std::time::Instant;

use anyhow::{bail, Result};
use candle_core::{DType, Tensor};
use serde_json::json;

use crate::cli::BenchArgs;
use crate::output::write_json;
use crate::pipeline::tokenize_texts;

/// Peak resident set size of this process in MiB (Linux `VmHWM`), if available.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Median wall time in seconds of `iters` runs of `f` after `warmup` untimed runs.
fn time_median(warmup: usize, iters: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    for _ in 0..warmup {
        f()?;
    }
    let mut times = Vec::with_capacity(iters);
    for _ in 0..iters {
        let t = Instant::now();
        f()?;
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// Captions of realistic length for the text benchmark.
const CAPTIONS: &[&str] = &[
    "a photo of a cat sitting on a wooden table next to a window",
    "two people riding bicycles down a busy city street at night",
    "a bowl of fresh fruit with apples, bananas and oranges",
    "an aerial view of a coastline with turquoise water and white sand",
    "a small red boat tied to a dock on a calm lake",
    "a black and white dog catching a frisbee in a park",
    "a plate of spaghetti with tomato sauce and basil leaves",
    "a snowy mountain peak under a clear blue sky",
];

/// Run the command.
pub fn run(args: BenchArgs) -> Result<()> {
    if args.batch_sizes.is_empty() || args.batch_sizes.contains(&0) {
        bail!("--batch-size must be given at least once and be positive");
    }
    if args.iters == 0 {
        bail!("--iters must be at least 1");
    }
    let started = Instant::now();
    let (model, cfg) = args.model.load()?;
    let load_seconds = started.elapsed().as_secs_f64();
    let device = model.device().clone();
    let (h, w) = cfg.vision_cfg.image_size.hw();

    let mut image = serde_json::Map::new();
    let mut text = serde_json::Map::new();
    let mut stages = serde_json::Map::new();
    for &b in &args.batch_sizes {
        let pixels = Tensor::randn(0f32, 1.0, (b, 3, h, w), &device)?.to_dtype(model.dtype())?;
        let secs = time_median(args.warmup, args.iters, || {
            model
                .encode_image(&pixels)?
                .embedding
                .to_dtype(DType::F32)?
                .sum_all()?
                .to_scalar::<f32>()?;
            Ok(())
        })?;
        let encoder = time_median(args.warmup, args.iters, || {
            model
                .visual()
                .encode_tokens(&pixels)?
                .sum_all()?
                .to_dtype(DType::F32)?
                .to_scalar::<f32>()?;
            Ok(())
        })?;
        image.insert(
            b.to_string(),
            json!({"seconds": secs, "items_per_second": b as f64 / secs}),
        );
        stages.insert(
            format!("image_b{b}"),
            json!({"vit_encoder_seconds": encoder, "pooler_and_projection_seconds": (secs - encoder).max(0.0)}),
        );

        let texts: Vec<String> = (0..b)
            .map(|i| CAPTIONS[i % CAPTIONS.len()].to_string())
            .collect();
        let ids = tokenize_texts(&texts, &cfg, &device)?;
        let secs = time_median(args.warmup, args.iters, || {
            model
                .encode_text(&ids)?
                .embedding
                .to_dtype(DType::F32)?
                .sum_all()?
                .to_scalar::<f32>()?;
            Ok(())
        })?;
        text.insert(
            b.to_string(),
            json!({"seconds": secs, "items_per_second": b as f64 / secs}),
        );
    }
    let report = json!({
        "implementation": "coca",
        "model": args.model.model,
        "precision": args.model.precision,
        "threads": std::env::var("RAYON_NUM_THREADS").ok(),
        "load_seconds": load_seconds,
        "encode_image": image,
        "encode_text": text,
        "stages": stages,
        "peak_rss_mib": peak_rss_mib(),
    });
    if args.json {
        return write_json(&report, None);
    }
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
