//! Command-line definitions. Names and flags follow open_clip where it has an equivalent.

use clap::{Args, Parser, Subcommand};

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
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every subcommand accepts.
#[derive(Debug, Args)]
pub struct Global {
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
    Embed(crate::commands::embed::EmbedArgs),
    /// Token ids as the model sees them (padded to the context length).
    Tokenize(crate::commands::tokenize::TokenizeArgs),
    /// Convert an open_clip checkpoint (.bin or .safetensors) to safetensors.
    Convert(crate::commands::convert::ConvertArgs),
    /// Write a checkpoint with int8 or bf16 product weights, which every command loads directly.
    Quantize(crate::commands::quantize::QuantizeArgs),
    /// Parameter counts per tower, shapes and dtypes of a model or checkpoint.
    Info(crate::commands::info::InfoArgs),
    /// Compare coca with open_clip reference outputs written by scripts/parity (a developer tool).
    Parity(crate::commands::parity::ParityArgs),
    /// Time image and text embedding (scripts/bench runs it beside open_clip).
    Bench(crate::commands::bench::BenchArgs),
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
    /// Fine-tuning with a task pooler: a new attentional pooler + linear head trained together with the image
    /// encoder (layer-wise lr decay), for images or videos, with accuracy, a confusion matrix and checkpoints.
    Finetune(crate::commands::finetune::FinetuneArgs),
    /// Benchmarks: zero-shot classification, image-text retrieval and captioning metrics (CLIP_benchmark's JSON).
    Eval(crate::commands::eval::EvalArgs),
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
