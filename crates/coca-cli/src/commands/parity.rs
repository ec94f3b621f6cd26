//! `coca parity`: compare coca with open_clip reference outputs (see scripts/parity).

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use coca_model::parity::{compare_dir, ParityOptions};

use crate::cli::Global;
use crate::output::write_json;

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

/// Run the command; fails when any check exceeds its tolerance.
pub fn run(args: ParityArgs, _global: &Global) -> Result<()> {
    let compute = args.precision.compute(args.device)?;
    if compute.packed.is_some() {
        bail!(
            "coca parity holds open_clip's own precisions to open_clip; `--precision {}` on {} packs weights \
             that open_clip has no counterpart for",
            args.precision,
            args.device
        );
    }
    let opts = ParityOptions {
        gradients: !args.no_grads,
        use_pytorch_bin: args.bin,
        device: args.device.open()?,
        dtype: compute.dtype,
    };
    let mut reports = Vec::new();
    for dir in &args.dirs {
        let started = std::time::Instant::now();
        let report = compare_dir(dir, &opts)?;
        tracing::info!(
            "{}: compared in {:.1}s",
            dir.display(),
            started.elapsed().as_secs_f64()
        );
        reports.push(report);
    }
    if args.json {
        write_json(&serde_json::to_value(&reports)?, None)?;
    } else {
        for report in &reports {
            println!("{}: {} checks", report.dir.display(), report.checks.len());
            let shown: Vec<_> = if args.all {
                report.checks.iter().collect()
            } else {
                report.worst()
            };
            for c in shown {
                println!(
                    "  {:<4} {:<14} {:<55} {:.3e}  (tolerance {:.0e})",
                    if c.passed() { "ok" } else { "FAIL" },
                    c.metric,
                    c.name,
                    c.error,
                    c.tolerance
                );
            }
            for c in report.failures() {
                println!("  FAIL {} {:.3e} > {:.0e}", c.name, c.error, c.tolerance);
            }
        }
    }
    let failed: usize = reports.iter().map(|r| r.failures().len()).sum();
    if failed > 0 {
        bail!("{failed} parity checks exceeded their tolerance");
    }
    Ok(())
}
