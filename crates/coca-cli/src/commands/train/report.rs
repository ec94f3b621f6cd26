//! The end of a run: the summary (JSON or a line), and for `--demo` the held-out test and its report.

use std::path::Path;

use anyhow::{Context, Result};
use coca_data::scenes::Split;
use coca_train::Trainer;
use serde_json::json;

use super::data::LoaderData;
use super::eval::{self, evaluate};
use super::hooks::RunHooks;
use super::plan::Plan;
use super::validation::validation_set;
use crate::output::write_json;

/// Test scenes of the demo's report.
const DEMO_TEST_SCENES: usize = 500;

/// Print the summary of a finished run: as JSON with `--json`, else one line, or for `--demo` the test
/// metrics and captions. `weights` is the final model file.
pub fn report(
    plan: &Plan,
    trainer: &Trainer,
    data: &LoaderData,
    hooks: &RunHooks,
    weights: &Path,
    elapsed: f64,
) -> Result<()> {
    let (args, run_dir) = (&plan.args, &plan.run_dir);
    let skipped = data.skipped();
    let mut summary = json!({
        "run_dir": run_dir.display().to_string(),
        "model": plan.model_source.to_string(),
        "steps": trainer.step(),
        "seconds": elapsed,
        "weights": weights.display().to_string(),
        "model_config": run_dir.join("model_config.json").display().to_string(),
        "skipped_samples": skipped.total(),
        "last_loss": hooks.last_step.map(|r| r.losses.total),
        "validation": hooks.last_eval.as_ref().map(|e| json!(e.metrics)),
    });
    let (sizes, shares) = data.source_weights();
    if !sizes.is_empty() {
        let samples = data.source_counts().get();
        summary["sources"] = json!(plan
            .train_parts
            .iter()
            .zip(&plan.factors)
            .zip(sizes.iter().zip(&shares).zip(&samples))
            .map(|((part, factor), ((size, share), n))| json!({
                "train_data": part.text,
                "factor": factor,
                "size": size,
                "share": share,
                "samples": n,
            }))
            .collect::<Vec<_>>());
    }
    if args.demo {
        let test =
            validation_set(plan, Split::Test, DEMO_TEST_SCENES)?.context("the demo's test set")?;
        let tokenizer = coca_text::Tokenizer::new()?;
        let eval = evaluate(&trainer.frozen_model()?, &plan.cfg, &test, &tokenizer)?;
        summary["test"] = json!(eval.metrics);
        summary["test_captions"] = json!(eval
            .samples
            .iter()
            .map(|(k, g, r)| json!({"scene": k, "generated": g, "reference": r}))
            .collect::<Vec<_>>());
        if !args.json {
            print_demo_report(&eval, run_dir, elapsed);
        }
    }
    if skipped.total() > 0 {
        eprintln!(
            "warning: {} training samples were skipped; last: {}",
            skipped.total(),
            skipped.recent.join("; ")
        );
    }
    if args.json {
        write_json(&summary, None)?;
    } else if !args.demo {
        println!(
            "trained {} steps in {:.0}s; weights {} (use with --model {} --pretrained {})",
            trainer.step(),
            elapsed,
            weights.display(),
            run_dir.join("model_config.json").display(),
            weights.display()
        );
    }
    Ok(())
}

fn print_demo_report(eval: &eval::Evaluation, run_dir: &Path, seconds: f64) {
    let pct = |k: &str| eval.metrics.get(k).copied().unwrap_or(f64::NAN) * 100.0;
    println!(
        "trained in {:.1} minutes; on {DEMO_TEST_SCENES} held-out test scenes:",
        seconds / 60.0
    );
    println!(
        "  zero-shot classification top-1 : {:5.1}%  (12 classes: colour × shape)",
        pct("zeroshot_top1")
    );
    println!(
        "  caption exact match            : {:5.1}%",
        pct("caption_exact_match")
    );
    println!(
        "  image→text retrieval R@1       : {:5.1}%",
        pct("retrieval_i2t_r1")
    );
    println!(
        "  text→image retrieval R@1       : {:5.1}%",
        pct("retrieval_t2i_r1")
    );
    println!("captions of the first test scenes (generated | reference):");
    for (key, generated, reference) in &eval.samples {
        let mark = if eval::normalise_caption(generated) == eval::normalise_caption(reference) {
            "✓"
        } else {
            "✗"
        };
        println!("  {mark} scene {key:>3}: {generated} | {reference}");
    }
    let cfg = run_dir.join("model_config.json");
    let weights = run_dir.join("model.safetensors");
    println!(
        "the model: --model {} --pretrained {}",
        cfg.display(),
        weights.display()
    );
}
