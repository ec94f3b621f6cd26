//! `coca plot`: loss and validation curves of a training run, drawn from its `metrics.jsonl`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use coca_runlog::{plot_run, PlotOptions};

use crate::cli::Global;

/// `coca plot`.
#[derive(Debug, Args)]
#[command(after_help = "\
Charts, each as PNG and SVG:
  losses        every loss* metric (training: raw and smoothed; validation: points)
  validation    the other validation metrics (accuracies, recalls)
  train_<name>  every other training metric (lr, logit_scale, samples_per_s, ...)
Files are written atomically; their paths are printed.

Examples:
  coca plot runs/demo
  coca plot runs/demo --metrics loss_caption,val/zeroshot_top1 --output report/demo")]
pub struct PlotArgs {
    /// The run directory (holding metrics.jsonl, as written by `coca train`).
    #[arg(value_name = "RUN_DIR")]
    pub run_dir: PathBuf,
    /// Where to write: a directory (existing, or ending in /) or a file-name prefix (PREFIX_losses.png, ...).
    /// Default: RUN_DIR/plots/.
    #[arg(long, short, value_name = "PREFIX")]
    pub output: Option<PathBuf>,
    /// Only these metrics, comma-separated (`loss_caption` for every split, `val/loss` for one).
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    pub metrics: Option<Vec<String>>,
    /// Smoothing of training curves, TensorBoard's exponential moving average weight in [0, 1); 0: raw only.
    #[arg(long, default_value_t = 0.6, value_name = "W")]
    pub smoothing: f64,
    /// Image width in pixels.
    #[arg(long, default_value_t = 1000, value_name = "PX")]
    pub width: u32,
    /// Image height in pixels.
    #[arg(long, default_value_t = 600, value_name = "PX")]
    pub height: u32,
}

/// Draw the charts and print the files written, one per line.
pub fn run(args: PlotArgs, _global: &Global) -> Result<()> {
    let options = PlotOptions {
        output: args.output,
        metrics: args.metrics,
        smoothing: args.smoothing,
        width: args.width,
        height: args.height,
    };
    for path in plot_run(&args.run_dir, &options)? {
        println!("{}", path.display());
    }
    Ok(())
}
