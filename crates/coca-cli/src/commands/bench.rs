//! `coca bench`: throughput measurements that scripts/bench compares with open_clip in the same run.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Result};
use candle_core::{DType, Tensor};
use clap::Args;
use serde_json::json;

use crate::cli::Global;
use crate::model_args::ModelArgs;
use crate::output::write_json;
use crate::pipeline::tokenize_texts;

/// `coca bench`.
#[derive(Debug, Args)]
#[command(after_help = "\
Reports median seconds per batch, items per second, load time and peak RSS as JSON.
scripts/bench/bench_embed.py runs this next to open_clip in one run and prints the ratios.")]
pub struct BenchArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Batch size to time; repeat for several.
    #[arg(long = "batch-size", default_values_t = [1, 8], value_name = "N")]
    pub batch_sizes: Vec<usize>,
    /// Timed iterations per measurement (the median is reported).
    #[arg(long, default_value_t = 10)]
    pub iters: usize,
    /// Untimed warm-up iterations.
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// Print compact JSON (one line).
    #[arg(long)]
    pub json: bool,
    /// Time a training step (forward, CoCa loss λ_cap 2 + λ_con 1, backward, AdamW update) instead of
    /// embedding throughput; scripts/bench/bench_train.py compares it with open_clip. `--precision bf16` times
    /// coca train's amp_bf16 (f32 weights, bf16 compute).
    #[arg(long)]
    pub train: bool,
    /// With --train: a safetensors file holding `image` (batch, 3, H, W) and `text` (batch, len) to train on
    /// (default: seeded random inputs of each --batch-size).
    #[arg(long, value_name = "FILE", requires = "train")]
    pub train_inputs: Option<PathBuf>,
    /// With --train: recompute each residual block in the backward (coca train --grad-checkpointing).
    #[arg(long, requires = "train")]
    pub grad_checkpointing: bool,
}

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
pub fn run(args: BenchArgs, _global: &Global) -> Result<()> {
    if args.batch_sizes.is_empty() || args.batch_sizes.contains(&0) {
        bail!("--batch-size must be given at least once and be positive");
    }
    if args.iters == 0 {
        bail!("--iters must be at least 1");
    }
    if args.train {
        return train::run(&args);
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
                .encode_image_tokens(&pixels)?
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
        "precision": args.model.precision.name(),
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

/// `coca bench --train`: the time of one optimisation step, split into its phases.
mod train {
    use std::collections::HashMap;
    use std::path::Path;
    use std::time::Instant;

    use anyhow::{bail, Context, Result};
    use candle_core::{DType, Device, Tensor, Var};
    use coca_model::weights::{mixed_precision_view, trainable_from, TrainableCoca};
    use coca_model::{CocaConfig, CocaLossConfig};
    use coca_train::step::{clamp_logit_scale, step_gradients};
    use coca_train::{AdamW, AdamWConfig, MicroBatch};
    use serde_json::json;

    use super::{peak_rss_mib, BenchArgs};
    use crate::model_args::{resolve_config, Precision};
    use crate::output::write_json;

    /// open_clip's AdamW defaults for CoCa training (`--lr 5e-4 --beta1 0.9 --beta2 0.98 --eps 1e-6 --wd 0.2`).
    const LR: f64 = 5e-4;

    /// The optimiser of `coca train`, decaying every parameter as the open_clip side of
    /// scripts/bench/bench_train.py does.
    fn optimizer(params: &[(String, Var)]) -> Result<AdamW> {
        let cfg = AdamWConfig {
            beta1: 0.9,
            beta2: 0.98,
            eps: 1e-6,
            weight_decay: 0.2,
        };
        AdamW::new(
            cfg,
            params
                .iter()
                .map(|(n, v)| (n.clone(), v.clone(), true))
                .collect(),
        )
        .map_err(Into::into)
    }

    /// Median seconds of each phase of the step.
    #[derive(Default)]
    struct Phases {
        /// Forward, loss and backward (one call in coca-train).
        gradients: Vec<f64>,
        optimizer: Vec<f64>,
        total: Vec<f64>,
        losses: Vec<f32>,
        /// Device memory in use after each step (CUDA only): a leak shows as growth across steps.
        device_memory_mib: Vec<f64>,
    }

    /// MiB in use on a CUDA device (all processes), `None` elsewhere.
    fn device_memory_used_mib(device: &Device) -> Option<f64> {
        #[cfg(feature = "cuda")]
        if let Device::Cuda(cuda) = device {
            let (free, total) = cuda.cuda_stream().context().mem_get_info().ok()?;
            return Some((total - free) as f64 / (1024.0 * 1024.0));
        }
        let _ = device;
        None
    }

    fn median(v: &[f64]) -> f64 {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    }

    /// How the timed steps compute.
    struct StepMode<'a> {
        /// bf16 mixed precision (the model's config, to build the bf16 view); `None`: fp32.
        amp_bf16: Option<&'a CocaConfig>,
        grad_checkpointing: bool,
    }

    /// One step of `coca train` (forward + loss + backward through coca-train's `step_gradients`, then AdamW
    /// and the logit-scale clamp). The forward and backward run as one call there, so the split reported is
    /// gradients vs optimiser.
    fn step(
        model: &TrainableCoca,
        params: &[(String, Var)],
        opt: &mut AdamW,
        batch: &MicroBatch,
        mode: &StepMode,
        phases: &mut Phases,
    ) -> Result<()> {
        let t0 = Instant::now();
        // As `coca train --precision amp_bf16`: bf16 casts of the f32 weights, rebuilt every step.
        let view;
        let (net, batch) = match mode.amp_bf16 {
            Some(cfg) => {
                view = mixed_precision_view(cfg, &model.vars, DType::BF16)?;
                let half = MicroBatch {
                    images: batch.images.to_dtype(DType::BF16)?,
                    ids: batch.ids.clone(),
                };
                (&view, half)
            }
            None => (&model.model, batch.clone()),
        };
        let (losses, grads) = step_gradients(
            net,
            params,
            std::slice::from_ref(&batch),
            &CocaLossConfig::default(),
            mode.grad_checkpointing,
        )?;
        let t2 = Instant::now();
        opt.step(&grads, LR)?;
        if let Some((_, scale)) = params.iter().find(|(n, _)| n == "logit_scale") {
            clamp_logit_scale(scale)?;
        }
        // GPU work is queued asynchronously: the step ends when the device has done it.
        let device = batch.images.device();
        device.synchronize()?;
        let t3 = Instant::now();
        phases
            .device_memory_mib
            .extend(device_memory_used_mib(device));
        phases.gradients.push((t2 - t0).as_secs_f64());
        phases.optimizer.push((t3 - t2).as_secs_f64());
        phases.total.push((t3 - t0).as_secs_f64());
        phases.losses.push(losses.total as f32);
        Ok(())
    }

    /// `image` (f32) and `text` (integer ids) from a safetensors file.
    fn read_inputs(path: &Path, device: &Device) -> Result<(Tensor, Tensor)> {
        let mut tensors: HashMap<String, Tensor> = candle_core::safetensors::load(path, device)
            .with_context(|| format!("reading training inputs {}", path.display()))?;
        let (Some(images), Some(text)) = (tensors.remove("image"), tensors.remove("text")) else {
            bail!("{} must hold tensors `image` and `text`", path.display());
        };
        Ok((images.to_dtype(DType::F32)?, text.to_dtype(DType::U32)?))
    }

    /// Seeded random inputs: N(0, 1) pixels and captions of varied length (sot, words, eot, padding).
    fn random_inputs(cfg: &CocaConfig, batch: usize, device: &Device) -> Result<(Tensor, Tensor)> {
        let (h, w) = cfg.vision_cfg.image_size.hw();
        // One fixed xorshift sequence for pixels and ids, so every run trains on the same batch.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        // Uniform in [-1.7, 1.7): roughly the range of normalised pixels.
        let pixels: Vec<f32> = (0..batch * 3 * h * w)
            .map(|_| (next() >> 40) as f32 / (1u64 << 24) as f32 * 3.4 - 1.7)
            .collect();
        let images = Tensor::from_vec(pixels, (batch, 3, h, w), device)?;
        let len = cfg.text_cfg.context_length;
        let vocab = cfg.text_cfg.vocab_size as u64;
        let mut ids = vec![0u32; batch * len];
        for row in ids.chunks_mut(len) {
            let words = 4 + (next() % (len as u64 - 5)) as usize;
            row[0] = (vocab - 2) as u32;
            for id in &mut row[1..=words] {
                *id = 1 + (next() % (vocab - 3)) as u32;
            }
            row[words + 1] = (vocab - 1) as u32;
        }
        Ok((images, Tensor::from_vec(ids, (batch, len), device)?))
    }

    /// Run `coca bench --train`.
    pub fn run(args: &BenchArgs) -> Result<()> {
        let (cfg, _) = resolve_config(&args.model.model)?;
        let mode = StepMode {
            amp_bf16: match args.model.precision {
                Precision::Fp32 => None,
                Precision::Bf16 => Some(&cfg),
                other => bail!(
                    "--train times fp32 or bf16 mixed-precision (`bf16`, as coca train's amp_bf16) \
                     training, not `{other}`"
                ),
            },
            grad_checkpointing: args.grad_checkpointing,
        };
        let device = args.model.device.open()?;
        let started = Instant::now();
        let weights = args.model.weights_path()?;
        let ckpt = coca_checkpoint::Checkpoint::open(&weights)?;
        coca_model::load::validate_checkpoint(&cfg, &ckpt)?;
        let load_seconds = started.elapsed().as_secs_f64();

        let inputs: Vec<(Tensor, Tensor)> = match &args.train_inputs {
            Some(path) => vec![read_inputs(path, &device)?],
            None => args
                .batch_sizes
                .iter()
                .map(|&b| random_inputs(&cfg, b, &device))
                .collect::<Result<_>>()?,
        };
        let mut results = serde_json::Map::new();
        for (images, text) in &inputs {
            // A fresh model and optimiser per batch size, all starting from the checkpoint's weights.
            let model = trainable_from(&cfg, DType::F32, &device, |name| {
                ckpt.get(name, DType::F32, &device)
                    .map_err(|e| candle_core::Error::Msg(e.to_string()))
            })?;
            let params: Vec<(String, Var)> = {
                let data = model
                    .vars
                    .data()
                    .lock()
                    .map_err(|_| anyhow::anyhow!("variable map poisoned"))?;
                let mut all: Vec<_> = data.iter().map(|(n, v)| (n.clone(), v.clone())).collect();
                all.sort_by(|a, b| a.0.cmp(&b.0));
                all
            };
            let mut opt = optimizer(&params)?;
            let batch = MicroBatch {
                images: images.clone(),
                ids: text.clone(),
            };
            let mut phases = Phases::default();
            for _ in 0..args.warmup {
                step(&model, &params, &mut opt, &batch, &mode, &mut phases)?;
            }
            let first_loss = phases.losses.first().copied();
            let mut phases_timed = Phases::default();
            for _ in 0..args.iters {
                step(&model, &params, &mut opt, &batch, &mode, &mut phases_timed)?;
            }
            let batch = images.dim(0)?;
            let secs = median(&phases_timed.total);
            results.insert(
                batch.to_string(),
                json!({
                    "seconds": secs,
                    "min_seconds": phases_timed.total.iter().copied().fold(f64::INFINITY, f64::min),
                    "samples_per_second": batch as f64 / secs,
                    "gradients_seconds": median(&phases_timed.gradients),
                    "optimizer_seconds": median(&phases_timed.optimizer),
                    "first_loss": first_loss.or(phases_timed.losses.first().copied()),
                    "losses": phases_timed.losses,
                    "device_memory_mib": phases.device_memory_mib.iter().chain(&phases_timed.device_memory_mib).collect::<Vec<_>>(),
                }),
            );
        }
        let report = json!({
            "implementation": "coca",
            "model": args.model.model,
            "threads": std::env::var("RAYON_NUM_THREADS").ok(),
            "precision": if mode.amp_bf16.is_some() { "amp_bf16" } else { "fp32" },
            "grad_checkpointing": args.grad_checkpointing,
            "load_seconds": load_seconds,
            "train_step": results,
            "peak_rss_mib": peak_rss_mib(),
        });
        if args.json {
            return write_json(&report, None);
        }
        println!("{}", serde_json::to_string_pretty(&report)?);
        Ok(())
    }
}
