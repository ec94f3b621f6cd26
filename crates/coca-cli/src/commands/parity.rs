//! `coca parity`: compare coca with open_clip reference outputs (see scripts/parity).

use anyhow::{bail, Result};
use coca_model::parity::{compare_dir, ParityOptions};

use crate::cli::ParityArgs;
use crate::output::write_json;

/// Run the command; fails when any check exceeds its tolerance.
pub fn run(args: ParityArgs) -> Result<()> {
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
