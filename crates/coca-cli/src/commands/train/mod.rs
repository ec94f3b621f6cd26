//! `coca train`: train CoCa from scratch or fine-tune it, with open_clip's flags; `--demo` trains a tiny model
//! on the built-in synthetic scenes and reports how well it learned. The flags are resolved into a [`Plan`]
//! once; the run then starts or resumes, trains, and reports.

mod data;
mod dist;
mod eval;
mod hooks;
mod plan;
mod report;
mod validation;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use coca_data::scenes::Split;
use coca_data::train::LoaderState;
use coca_dist::DistEnv;
use coca_model::CocaConfig;
use coca_train::checkpoint::latest_checkpoint;
use coca_train::{DistOptions, Start, Trainer};

use self::data::{loader_config, resume_state, train_source, DatasetType, Labels, LoaderData};
use self::dist::{DistBackend, QuietHooks, TrainDevice};
use self::hooks::{RunHooks, SourceLog};
use self::plan::Plan;
use self::report::report;
use self::validation::validation_set;
use crate::cli::Global;
use crate::pipeline::preprocess_config;

/// The run's record of its training data, in the run directory.
pub const DATA_RECORD: &str = "train_data.json";

/// The model of `--demo`: a CoCa small enough to train on two CPU cores in minutes.
pub const DEMO_MODEL_JSON: &str = include_str!("../../../../../assets/demo/coca_scenes-tiny.json");

/// open_clip's `--lr-scheduler`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LrScheduler {
    /// Warmup, then half a cosine to zero.
    Cosine,
    /// Warmup, then constant.
    Const,
    /// Warmup, constant, then a linear decay over --lr-cooldown-steps.
    ConstCooldown,
    /// Warmup, then a straight line to zero.
    Linear,
}

/// `coca train`.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  # The demo: a tiny CoCa from scratch on synthetic scenes, then its zero-shot accuracy and captions.
  coca train --demo

  # Fine-tune on WebDataset shards (img2dataset layout), open_clip's flags:
  coca train --model coca_ViT-B-32 --pretrained laion2b_s13b_b90k \\
      --train-data 'shards/{00000..00099}.tar' --batch-size 32 --steps 2000 --lr 1e-5 --warmup 200 \\
      --output runs/ft

  # Class labels as captions, mixed with alt-text shards (each labelled image 4 times as likely):
  coca train ... --train-data 'shards/{00000..00099}.tar::labels:imagenet/train' \\
      --train-data-upsampling-factors 1::4 --classnames imagenet --label-templates openai

  # Caption-only fine-tuning as open_clip's COCO recipe:
  coca train ... --coca-contrastive-loss-weight 0

  # Continue after an interruption (same flags):
  coca train ... --resume latest

  # Data parallel on 4 processes of this machine (torchrun's variables work too; see docs/training.md):
  coca launch --nproc-per-node 4 -- train ... --gather-with-grad

The run directory holds checkpoints/step_N/ (model.safetensors usable by every command with
--model RUN/model_config.json), metrics.jsonl, tensorboard/, samples/ (validation captions), and at the end
model.safetensors. `coca plot RUN` draws the curves.")]
pub struct TrainArgs {
    /// Train the built-in demo: a tiny CoCa on synthetic scenes (other flags override its settings).
    #[arg(long)]
    pub demo: bool,
    /// Model name or open_clip config JSON (required unless --demo).
    #[arg(long, value_name = "NAME|CONFIG.json")]
    pub model: Option<String>,
    /// Start from these weights (file or open_clip tag); without it, from open_clip's random initialisation.
    #[arg(long, value_name = "FILE|TAG")]
    pub pretrained: Option<String>,
    /// Training data: `synthetic`, WebDataset shards ('shards/{00000..00099}.tar'), a CSV/TSV file or a
    /// folder of images with .txt captions (--demo: synthetic). `labels:PATH` is labelled data captioned by
    /// --label-templates: class folders, a CSV/TSV file with a --csv-label-key column, or shards with .cls
    /// members. Several sources separated by `::` are mixed ('shards/{0..9}.tar::labels:imagenet/train').
    #[arg(long, value_name = "DATA")]
    pub train_data: Option<String>,
    /// One factor per --train-data source ('1::4'): each sample of source i is drawn with weight f_i, so its
    /// share is f_i·n_i / Σ f_j·n_j (n: sample counts). Default: 1 for every source.
    #[arg(long, value_name = "F1::F2...")]
    pub train_data_upsampling_factors: Option<String>,
    /// Class names of the `labels:` sources, in label order: a file (CLIP_benchmark's classnames.txt, one
    /// per line, or JSON) or a built-in list (imagenet). Class folders take one name per folder, sorted.
    #[arg(long, value_name = "NAME|FILE")]
    pub classnames: Option<String>,
    /// Templates that caption the `labels:` sources (one drawn per sample per epoch): openai, simple, or a
    /// file.
    #[arg(long, default_value = "openai", value_name = "NAME|FILE")]
    pub label_templates: String,
    /// The label column of a `labels:` CSV/TSV source: a class index or a class name.
    #[arg(long, value_name = "COLUMN")]
    pub csv_label_key: Option<String>,
    /// Validation data (same forms); the synthetic scenes validate on their own held-out split.
    #[arg(long, value_name = "DATA")]
    pub val_data: Option<String>,
    /// A labelled folder for zero-shot validation: one sub-folder per class, named by the class
    /// (underscores read as spaces); the synthetic scenes have their own.
    #[arg(long, value_name = "DIR")]
    pub val_zeroshot: Option<PathBuf>,
    /// Prompt templates of --val-zeroshot: openai, simple, or a file (default: --label-templates when
    /// training on `labels:` sources, else simple). With `labels:` sources, the class folders are named by
    /// --classnames, as in training.
    #[arg(long, value_name = "NAME|FILE")]
    pub val_zeroshot_templates: Option<String>,
    /// How to read --train-data/--val-data.
    #[arg(long, value_enum, default_value_t = DatasetType::Auto)]
    pub dataset_type: DatasetType,
    #[command(flatten)]
    pub csv: crate::csv_args::CsvArgs,
    /// Samples per micro-batch.
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Optimiser steps to train; a resumed run continues up to this (--demo: 1400).
    #[arg(long)]
    pub steps: Option<u64>,
    /// Number of synthetic training scenes (the epoch length of `synthetic`).
    #[arg(long, default_value_t = 1_000_000)]
    pub train_num_samples: u64,
    /// Peak learning rate (default 5e-4; --demo 2e-3).
    #[arg(long)]
    pub lr: Option<f64>,
    /// Linear warmup steps, below --steps (open_clip's default 10000; --demo 200).
    #[arg(long)]
    pub warmup: Option<u64>,
    /// Learning-rate curve after warmup.
    #[arg(long, value_enum, default_value_t = LrScheduler::Cosine)]
    pub lr_scheduler: LrScheduler,
    /// Final decay steps of const-cooldown.
    #[arg(long, default_value_t = 0)]
    pub lr_cooldown_steps: u64,
    /// AdamW β1.
    #[arg(long, default_value_t = 0.9)]
    pub beta1: f64,
    /// AdamW β2.
    #[arg(long, default_value_t = 0.98)]
    pub beta2: f64,
    /// AdamW ε.
    #[arg(long, default_value_t = 1e-6)]
    pub eps: f64,
    /// Weight decay, not on gains, biases, 1-d tensors and logit_scale (default 0.2; --demo 0.1).
    #[arg(long)]
    pub wd: Option<f64>,
    /// Clip the global gradient norm (default: no clipping; --demo: 1).
    #[arg(long, value_name = "NORM")]
    pub grad_clip_norm: Option<f64>,
    /// Micro-batches per step; the contrastive loss sees the negatives of all of them.
    #[arg(long, default_value_t = 1)]
    pub accum_freq: usize,
    /// λ_cap.
    #[arg(long, default_value_t = 2.0)]
    pub coca_caption_loss_weight: f64,
    /// λ_con; 0: caption-only fine-tuning (default 1; --demo 2).
    #[arg(long)]
    pub coca_contrastive_loss_weight: Option<f64>,
    /// Freeze the image tower.
    #[arg(long)]
    pub lock_image: bool,
    /// Trailing image-tower groups left trainable (the last is the poolers + ln_post + proj).
    #[arg(long, default_value_t = 0)]
    pub lock_image_unlocked_groups: usize,
    /// Freeze the unimodal text tower.
    #[arg(long)]
    pub lock_text: bool,
    /// Trailing text-tower groups left trainable (the last is text_projection).
    #[arg(long, default_value_t = 0)]
    pub lock_text_unlocked_layers: usize,
    /// Seed of the initialisation, data order and augmentation.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Decode/augment threads (default: one per core).
    #[arg(long, default_value_t = 0)]
    pub workers: usize,
    /// Samples in the shuffle buffer of shard streams.
    #[arg(long, default_value_t = 5000)]
    pub shuffle_buffer: usize,
    /// Turn off open_clip's random resized crop (--demo has none).
    #[arg(long)]
    pub no_augment: bool,
    /// Save a checkpoint every N steps, and always at the end (default 500; --demo 250).
    #[arg(long, value_name = "N")]
    pub save_every: Option<u64>,
    /// Checkpoints kept (0: all).
    #[arg(long, default_value_t = 3)]
    pub keep_checkpoints: usize,
    /// Validate every N steps, and always at the end; 0: only at the end (default 0; --demo 250).
    #[arg(long, value_name = "N")]
    pub val_every: Option<u64>,
    /// Validation samples.
    #[arg(long, default_value_t = 256)]
    pub val_samples: usize,
    /// Continue a run: `latest` (the newest checkpoint in --output; starts the run when there is none) or a
    /// checkpoint directory.
    #[arg(long, value_name = "latest|DIR")]
    pub resume: Option<String>,
    /// The run directory (--demo: runs/demo, or the first free runs/demo-N).
    #[arg(long, short, value_name = "DIR")]
    pub output: Option<PathBuf>,
    /// Device: cpu, or cuda:N with the `cuda` feature; a bare `cuda` in a distributed run means
    /// cuda:LOCAL_RANK (one GPU per rank).
    #[arg(long, default_value = "cpu", value_name = "cpu|cuda|cuda:N")]
    pub device: TrainDevice,
    /// open_clip's --precision: fp32, or amp_bf16 (bf16 mixed precision from f32 master weights, as
    /// torch.autocast; LayerNorms, softmax and losses stay f32). amp_bf16 is meant for GPUs.
    #[arg(long, value_enum, default_value_t = PrecisionArg::Fp32)]
    pub precision: PrecisionArg,
    /// Recompute each residual block in the backward instead of keeping its activations (open_clip's
    /// --grad-checkpointing): activation memory drops to one tensor per block, for about one more forward
    /// pass of compute. The gradients are the same.
    #[arg(long)]
    pub grad_checkpointing: bool,
    /// Print the final summary as JSON.
    #[arg(long)]
    pub json: bool,
    /// Distributed runs: contrastive logits only for this rank's samples against all gathered ones
    /// (open_clip's --local-loss).
    #[arg(long)]
    pub local_loss: bool,
    /// Distributed runs: gradients flow through the feature all-gather to every rank, so the step equals one
    /// over the global batch (open_clip's --gather-with-grad).
    #[arg(long)]
    pub gather_with_grad: bool,
    /// Collectives of a distributed run (WORLD_SIZE > 1, set by torchrun, Slurm or `coca launch`).
    #[arg(long, value_enum, default_value_t = DistBackend::Tcp)]
    pub dist_backend: DistBackend,
    /// Seconds a rank waits for the others, at start and inside every collective, before failing (rank 0
    /// may be writing a checkpoint or validating meanwhile). A rank that exits is noticed at once.
    #[arg(long, default_value_t = 1800, value_name = "SECONDS")]
    pub dist_timeout: u64,
}

/// `--precision` of `coca train`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PrecisionArg {
    /// f32 throughout.
    Fp32,
    /// bf16 mixed precision.
    #[value(name = "amp_bf16", alias = "amp_bfloat16")]
    AmpBf16,
}

/// Run `coca train`. With `WORLD_SIZE > 1` in the environment (torchrun, Slurm, `coca launch`) this process
/// is one rank of a data-parallel run.
pub fn run(args: TrainArgs, _global: &Global) -> Result<()> {
    let env = DistEnv::from_env()?;
    let result = run_rank(args, &env);
    if env.is_distributed() {
        result.with_context(|| format!("rank {} of {}", env.rank, env.world_size))
    } else {
        result
    }
}

fn run_rank(args: TrainArgs, env: &DistEnv) -> Result<()> {
    let plan = Plan::resolve(args, env)?;
    let args = &plan.args;
    // Only rank 0 prints and writes.
    let main = env.is_main();
    let comm = dist::connect(env, args.dist_backend, args.dist_timeout, &plan.device)?;
    let (trainer, position, resume_from) = start_or_resume(&plan, env)?;
    let mut trainer = match comm {
        Some(comm) => trainer.distributed(
            comm,
            DistOptions {
                local_loss: args.local_loss,
                gather_with_grad: args.gather_with_grad,
                ..DistOptions::default()
            },
        )?,
        None => trainer,
    };

    let pre = preprocess_config(&plan.cfg)?;
    let loader = coca_data::train::LoaderConfig {
        rank: env.rank,
        world_size: env.world_size,
        ..loader_config(
            pre,
            args.batch_size,
            plan.augment,
            args.workers,
            args.shuffle_buffer,
            args.seed,
        )
    };
    let prompts = plan.labels.as_ref().map(Labels::prompts).transpose()?;
    let sources = plan
        .train_parts
        .iter()
        .zip(&plan.factors)
        .map(|(part, &factor)| {
            let source = train_source(
                &part.spec,
                &plan.cfg,
                args.seed,
                args.train_num_samples,
                prompts.as_ref(),
            )?;
            Ok((source, factor))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut data = LoaderData::new(sources, loader, position, &plan.cfg, &plan.device)?;
    if !main {
        // The other ranks compute their share of every step; rank 0 validates, logs and saves.
        return Ok(trainer.train(&mut data, &mut QuietHooks)?);
    }
    write_model_config(&plan.run_dir, &plan.cfg)?;
    write_data_record(&plan, &data, resume_from.is_some())?;
    let val = validation_set(&plan, Split::Val, args.val_samples)?;
    let start_step = trainer.step();
    // With --resume the logs are trimmed to the checkpoint's step (to nothing when starting over).
    let mut hooks = RunHooks::new(
        &plan.run_dir,
        &plan.cfg,
        val,
        start_step,
        plan.options.steps,
        args.resume.is_some(),
        SourceLog {
            names: plan.train_parts.iter().map(|p| p.text.clone()).collect(),
            counts: data.source_counts(),
        },
    )?;
    if let Some(ckpt) = &resume_from {
        hooks.println(format!(
            "resuming from {} (step {start_step})",
            ckpt.display()
        ));
    }
    let started = Instant::now();
    let result = trainer.train(&mut data, &mut hooks);
    hooks.finish()?;
    result?;
    let elapsed = started.elapsed().as_secs_f64();
    let weights = plan.run_dir.join("model.safetensors");
    trainer.save_weights(&weights)?;
    report(&plan, &trainer, &data, &hooks, &weights, elapsed)
}

/// The trainer and the data position: a new run (from `--pretrained` or from scratch), or the checkpoint that
/// `--resume` names, which is returned too. A new run refuses a run directory that already holds checkpoints.
fn start_or_resume(plan: &Plan, env: &DistEnv) -> Result<(Trainer, LoaderState, Option<PathBuf>)> {
    let (args, run_dir) = (&plan.args, &plan.run_dir);
    if env.is_main() {
        std::fs::create_dir_all(run_dir)
            .with_context(|| format!("creating the run directory {}", run_dir.display()))?;
    }
    let resume_from = match args.resume.as_deref() {
        None => {
            if let Some(existing) = latest_checkpoint(run_dir)? {
                bail!(
                    "{} already holds a run (checkpoint {}); continue it with --resume latest or choose another --output",
                    run_dir.display(),
                    existing.display()
                );
            }
            None
        }
        // As open_clip: `latest` with no checkpoint yet starts the run, so one command line serves a job that
        // may be preempted at any point.
        Some("latest") => latest_checkpoint(run_dir)?,
        Some(dir) => Some(PathBuf::from(dir)),
    };
    let shards = plan.train_parts.iter().any(|p| p.spec.is_shards());
    let options = plan.options.clone();
    let (trainer, position) = match &resume_from {
        Some(ckpt) => {
            let (t, pos) = Trainer::resume(&plan.cfg, ckpt, run_dir, options, &plan.device)?;
            let (state, note) = resume_state(pos, env.rank, env.world_size, shards)
                .with_context(|| format!("checkpoint {}", ckpt.display()))?;
            if let (Some(note), true) = (note, env.is_main()) {
                eprintln!("note: {note}");
            }
            (t, state)
        }
        None => {
            let weights = match &args.pretrained {
                Some(p) => Some(
                    coca_hub::resolve_pretrained(
                        args.model.as_deref().unwrap_or_default(),
                        p,
                        &coca_hub::HubOptions::from_env(),
                    )?
                    .path,
                ),
                None => None,
            };
            let start = match &weights {
                Some(path) => Start::Pretrained(path),
                None => Start::Scratch,
            };
            (
                Trainer::new(&plan.cfg, start, run_dir, options, &plan.device)?,
                LoaderState::default(),
            )
        }
    };
    Ok((trainer, position, resume_from))
}

/// `RUN/train_data.json`: the sources, their factors, sizes and shares, and for `labels:` sources the class
/// names and templates their captions were drawn from (zero-shot validation uses the same ones).
/// A resumed run (`resumed`) must caption labelled data as the saved record says.
fn write_data_record(plan: &Plan, data: &LoaderData, resumed: bool) -> Result<()> {
    let (sizes, shares) = data.source_weights();
    let record = serde_json::json!({
        "train_data": plan.train_parts.iter().map(|p| p.text.as_str()).collect::<Vec<_>>(),
        "upsampling_factors": plan.factors,
        "source_sizes": sizes,
        "source_shares": shares,
        "seed": plan.args.seed,
        "labels": plan.labels.as_ref().map(Labels::record),
    });
    let path = plan.run_dir.join(DATA_RECORD);
    if resumed {
        // Other class names or templates would caption the same images otherwise than the checkpoint
        // learned, and zero-shot validation would change with them.
        if let Ok(saved) = std::fs::read(&path) {
            let saved: serde_json::Value = serde_json::from_slice(&saved)
                .with_context(|| format!("{}: not the run's data record", path.display()))?;
            if saved.get("labels") != Some(&record["labels"]) {
                bail!(
                    "{}: the run was trained with other labelled data, class names or templates; resume with \
                     the same --train-data, --classnames and --label-templates, or start a new run",
                    path.display()
                );
            }
        }
    }
    let text = serde_json::to_vec_pretty(&record)?;
    coca_fs::write_atomic(&path, |w| -> Result<()> {
        std::io::Write::write_all(w, &text)?;
        Ok(())
    })
}

/// `RUN/model_config.json`: the config every inference command accepts with `--model`.
fn write_model_config(run_dir: &Path, cfg: &CocaConfig) -> Result<()> {
    let path = run_dir.join("model_config.json");
    let text = serde_json::to_vec_pretty(cfg)?;
    coca_fs::write_atomic(&path, |w| -> Result<()> {
        std::io::Write::write_all(w, &text)?;
        Ok(())
    })
}
