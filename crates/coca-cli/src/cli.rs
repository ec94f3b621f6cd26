//! Command-line definitions. Names and flags follow open_clip where it has an equivalent.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::model_args::ModelArgs;

const ABOUT: &str = "CoCa (Contrastive Captioners) in Rust: open_clip-compatible embeddings, captions and training.";

const AFTER_HELP: &str = "\
Examples:
  coca embed --model coca_ViT-B-32 --pretrained open_clip_pytorch_model.bin \\
       --image cat.jpg --text 'a photo of a cat' --text 'a photo of a dog'
  coca tokenize --model coca_ViT-B-32 'a photo of a cat'
  coca convert --model coca_ViT-B-32 --pretrained open_clip_pytorch_model.bin --output model.safetensors
  coca info --model coca_ViT-L-14

Models: coca_ViT-B-32, coca_ViT-L-14, coca_base, or the path of an open_clip config JSON.
Set COCA_LOG=debug (or -vv) for detailed logs.";

/// The `coca` command line.
#[derive(Debug, Parser)]
#[command(name = "coca", version, about = ABOUT, after_help = AFTER_HELP)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every subcommand accepts.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// More log output on stderr (-v: info, -vv: debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only print errors on stderr.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// CPU threads for tensor math (default: all cores).
    #[arg(long, global = true, value_name = "N")]
    pub threads: Option<usize>,
    /// Refuse images claiming more than N pixels (width x height), checked from their headers before any
    /// pixel is allocated. The default is PIL's Image.MAX_IMAGE_PIXELS; PIL only warns between 1x and 2x
    /// that and refuses beyond 2x.
    #[arg(long, global = true, value_name = "N", default_value_t = coca_image::PIL_MAX_IMAGE_PIXELS,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_image_pixels: u64,
    /// When stderr is not a terminal (a log file, a pipe, CI), long commands print a progress line (count,
    /// rate, time left, losses) at most every SECONDS; on a terminal they draw a bar instead.
    #[arg(long, global = true, value_name = "SECONDS", default_value = "30", value_parser = seconds)]
    pub progress_interval: std::time::Duration,
}

/// A duration flag in (fractional) seconds.
pub fn seconds(text: &str) -> Result<std::time::Duration, String> {
    let s: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    std::time::Duration::try_from_secs_f64(s)
        .map_err(|_| format!("{text:?} is not a duration in seconds"))
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// L2-normalised image and text embeddings (and their similarities).
    Embed(EmbedArgs),
    /// Token ids as the model sees them (padded to the context length).
    Tokenize(TokenizeArgs),
    /// Convert an open_clip checkpoint (.bin or .safetensors) to safetensors.
    Convert(ConvertArgs),
    /// Write a checkpoint with int8 or bf16 product weights, which every command loads directly.
    Quantize(crate::commands::quantize::QuantizeArgs),
    /// Parameter counts per tower, shapes and dtypes of a model or checkpoint.
    Info(InfoArgs),
    /// Compare coca with open_clip reference outputs written by scripts/parity (a developer tool).
    Parity(ParityArgs),
    /// Time image and text embedding (scripts/bench runs it beside open_clip).
    Bench(BenchArgs),
    /// Zero-shot classification: the most probable classes (ImageNet or your own) of each image.
    Classify(crate::commands::classify::ClassifyArgs),
    /// Captions for images (open_clip-compatible greedy, sampling and beam search, with a key/value cache).
    Caption(crate::commands::caption::CaptionArgs),
    /// An HTTP JSON server for embeddings and captions (GET /health, POST /embed, POST /caption).
    Serve(crate::commands::serve::ServeArgs),
    /// Exact search of an embedding folder written by `coca embed --output-dir` with a text or an image.
    Search(crate::commands::search::SearchArgs),
    /// Check that every partition of an embedding folder (written by one or many workers) is there, and build
    /// a faiss index of it for `coca search`.
    Index(crate::commands::index::IndexArgs),
    /// Train CoCa from scratch or fine-tune it (open_clip's flags); `--demo` trains a tiny model on synthetic scenes.
    Train(crate::commands::train::TrainArgs),
    /// Loss and validation curves of a training run (metrics.jsonl) as PNG and SVG.
    Plot(crate::commands::plot::PlotArgs),
    /// Start the ranks of a data-parallel run on this machine, as torchrun does (`coca launch --nproc-per-node 4 -- train ...`).
    Launch(crate::commands::launch::LaunchArgs),
    /// Frozen-feature probes: a new attentional pooler or a linear classifier trained on the frozen encoder's
    /// cached outputs (images or videos), with accuracy and a confusion matrix.
    Probe(crate::commands::probe::ProbeArgs),
    /// Benchmarks: zero-shot classification, image-text retrieval and captioning metrics (CLIP_benchmark's JSON).
    Eval(crate::commands::eval::EvalArgs),
}

/// `coca embed`.
#[derive(Debug, Args)]
#[command(after_help = "\
Embeddings are printed in input order: images first, then texts. With both images and texts, the cosine
similarities and open_clip-style probabilities (softmax of logit_scale × similarity over the texts) follow.

Example:
  coca embed --model coca_ViT-B-32 --pretrained model.safetensors --image a.jpg --image b.png \\
       --text 'a diagram' --text 'a dog' --json > embeddings.json

Collections: --input-dir, --input-list, --input-csv or --input-shards with --output-dir write clip-retrieval's
layout (img_emb/, text_emb/, metadata/) in partitions, resumable after an interruption, then print a summary
(--json: as JSON). Unreadable samples are skipped, named in a warning, and counted. See docs/retrieval.md.
  coca embed --model coca_ViT-B-32 --pretrained model.safetensors \\
       --input-shards 'data/{00000..00099}.tar' --output-dir index/
  coca search --model coca_ViT-B-32 --pretrained model.safetensors --index index/ --text 'a red car'")]
pub struct EmbedArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// An image file (JPEG, PNG, WebP, GIF, BMP, TIFF); repeat for several.
    #[arg(long = "image", value_name = "PATH")]
    pub images: Vec<PathBuf>,
    /// A text to embed; repeat for several.
    #[arg(long = "text", value_name = "TEXT")]
    pub texts: Vec<String>,
    /// A video: a folder of frames, an animated GIF, or a video file (MP4, AVI, ... in builds with the `ffmpeg`
    /// feature). Its embedding is the L2-normalised mean of its --frames frames' embeddings; repeat for several.
    #[arg(long = "video", value_name = "PATH")]
    pub videos: Vec<PathBuf>,
    /// Frames sampled per video (the centre frame of each of N equal segments), for --video and for the
    /// videos of a collection.
    #[arg(long, default_value_t = coca_data::video::DEFAULT_FRAMES, value_name = "N")]
    pub frames: usize,
    /// Print one JSON object {"image_embeddings": [[..]], "text_embeddings": [[..]]} instead of a summary.
    #[arg(long)]
    pub json: bool,
    /// Write the JSON to this file (atomically) instead of stdout.
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Images per forward pass.
    #[arg(long, default_value_t = 32, value_name = "N")]
    pub batch_size: usize,
    /// Bulk embedding of a whole collection into --output-dir (see commands/embed/collection.rs).
    #[command(flatten)]
    pub collection: crate::commands::embed::CollectionArgs,
}

/// `coca tokenize`.
#[derive(Debug, Args)]
pub struct TokenizeArgs {
    /// Model name or config JSON (gives the context length; default coca_ViT-B-32).
    #[arg(long, default_value = "coca_ViT-B-32", value_name = "NAME|CONFIG.json")]
    pub model: String,
    /// Print JSON {"context_length": N, "tokens": [[..]], "truncated": [..]}.
    #[arg(long)]
    pub json: bool,
    /// The texts.
    #[arg(required = true, value_name = "TEXT")]
    pub texts: Vec<String>,
}

/// `coca convert`.
#[derive(Debug, Args)]
#[command(after_help = "\
The checkpoint is validated strictly against the model first; the output is written to a temporary file
and renamed, so an interrupted conversion never leaves a partial file behind.")]
pub struct ConvertArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Where to write the safetensors file.
    #[arg(long, short, value_name = "FILE.safetensors")]
    pub output: PathBuf,
    /// Storage dtype of the output (default: keep each tensor's dtype).
    #[arg(long = "save-dtype", value_name = "f32|f16|bf16")]
    pub save_dtype: Option<coca_pipeline::Precision>,
    /// Replace an existing output file.
    #[arg(long)]
    pub force: bool,
}

/// `coca info`.
#[derive(Debug, Args)]
pub struct InfoArgs {
    /// Model name or config JSON.
    #[arg(long, value_name = "NAME|CONFIG.json")]
    pub model: String,
    /// A checkpoint to inspect and validate against the model.
    #[arg(long, value_name = "FILE")]
    pub pretrained: Option<PathBuf>,
    /// List every parameter with its shape.
    #[arg(long)]
    pub shapes: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `coca parity`.
#[derive(Debug, Args)]
pub struct ParityArgs {
    /// Directories written by scripts/parity (config.json, weights, io.safetensors).
    #[arg(required = true, value_name = "DIR")]
    pub dirs: Vec<PathBuf>,
    /// Skip the gradient comparison.
    #[arg(long)]
    pub no_grads: bool,
    /// Load the PyTorch .bin weights instead of the safetensors file.
    #[arg(long)]
    pub bin: bool,
    /// Print every check, not only the worst per metric.
    #[arg(long)]
    pub all: bool,
    /// Device to check: cpu, or cuda:N in builds with the `cuda` feature (the GPU parity check).
    #[arg(long, default_value = "cpu", value_name = "cpu|cuda:N")]
    pub device: coca_pipeline::DeviceSpec,
    /// Inference precision: fp32 (gradients too), or bf16/fp16 held to a half-precision tolerance.
    #[arg(long, default_value = "fp32", value_name = "fp32|bf16|fp16")]
    pub precision: coca_pipeline::Precision,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_take_fractions_and_refuse_the_rest() {
        assert_eq!(seconds("0.25"), Ok(std::time::Duration::from_millis(250)));
        assert!(seconds("-1").is_err());
        assert!(seconds("soon").unwrap_err().contains("soon"));
    }
}
