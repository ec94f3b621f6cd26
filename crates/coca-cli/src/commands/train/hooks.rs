//! What `coca train` does around each step: the progress bar, metrics.jsonl and TensorBoard, validation and
//! its caption samples.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use coca_model::{Coca, CocaConfig};
use coca_runlog::{EventWriter, MetricsWriter, Record, Split};
use coca_text::Tokenizer;
use coca_train::{StepReport, TrainError, TrainHooks};
use serde_json::json;

use super::data::SourceCounts;
use super::eval::{evaluate, Evaluation, ValSet};
use crate::progress::Progress;

/// The metric of a mixture's per-source sample counts: `source_samples/I` for source `I` (from 0, in
/// `--train-data` order), the samples it has put into the batches so far.
pub const SOURCE_SAMPLES: &str = "source_samples";

/// A mixture's sources as the logs name them (their `--train-data` parts), with their live sample counts.
pub struct SourceLog {
    /// The names, in source order.
    pub names: Vec<String>,
    /// The counts, updated by the loader.
    pub counts: SourceCounts,
}

/// The hooks of one run.
pub struct RunHooks {
    progress: Progress,
    metrics: MetricsWriter,
    events: EventWriter,
    val: Option<ValSet>,
    cfg: CocaConfig,
    tokenizer: Tokenizer,
    run_dir: PathBuf,
    sources: SourceLog,
    /// The last validation, for the final summary.
    pub last_eval: Option<Evaluation>,
    /// The last step's report.
    pub last_step: Option<StepReport>,
}

fn runlog(e: coca_runlog::RunlogError) -> TrainError {
    TrainError::Config(format!("run log: {e}"))
}

impl RunHooks {
    /// Hooks writing into `run_dir`; `resumed_from` drops log lines after that step (a resumed run re-trains
    /// them). A mixture's per-source sample `counts` are logged under the `sources`' names.
    pub fn new(
        run_dir: &Path,
        cfg: &CocaConfig,
        val: Option<ValSet>,
        start_step: u64,
        total_steps: u64,
        resumed: bool,
        sources: SourceLog,
    ) -> anyhow::Result<Self> {
        let tb_dir = run_dir.join("tensorboard");
        let (metrics, events) = if resumed {
            (
                MetricsWriter::resume(run_dir, start_step)?,
                EventWriter::resume(&tb_dir, start_step)?,
            )
        } else {
            (
                MetricsWriter::create(run_dir)?,
                EventWriter::create(&tb_dir)?,
            )
        };
        let progress = Progress::new("training", Some(total_steps), "steps");
        progress.set_position(start_step);
        Ok(Self {
            progress,
            metrics,
            events,
            val,
            cfg: cfg.clone(),
            tokenizer: Tokenizer::new()?,
            run_dir: run_dir.to_path_buf(),
            sources,
            last_eval: None,
            last_step: None,
        })
    }

    fn log(&mut self, record: &Record) -> Result<(), TrainError> {
        self.metrics.write(record).map_err(runlog)?;
        self.events.add_record(record).map_err(runlog)?;
        Ok(())
    }

    /// Print a line that stays (above the progress bar on a terminal).
    pub fn println(&self, line: impl AsRef<str>) {
        self.progress.println(line);
    }

    /// Close the bar and flush the logs.
    pub fn finish(&mut self) -> anyhow::Result<()> {
        self.progress.finish();
        self.metrics.sync()?;
        self.events.flush()?;
        Ok(())
    }
}

impl TrainHooks for RunHooks {
    fn on_step(&mut self, r: &StepReport) -> Result<(), TrainError> {
        self.last_step = Some(*r);
        let counts = self.sources.counts.get();
        let mut message = format!(
            "loss {:.4} (contrastive {:.4}, caption {:.4}) lr {:.2e} {:.0} samples/s",
            r.losses.total, r.losses.contrastive, r.losses.caption, r.lr, r.samples_per_s
        );
        if !counts.is_empty() {
            let by_source = self
                .sources
                .names
                .iter()
                .zip(&counts)
                .map(|(name, n)| format!("{name} {n}"))
                .collect::<Vec<_>>()
                .join(", ");
            message.push_str(&format!("; samples by source: {by_source}"));
        }
        self.progress.set_message(message);
        self.progress.set_position(r.step);
        let mut record = Record::new(r.step, Split::Train);
        for (i, n) in counts.iter().enumerate() {
            record = record.with(&format!("{SOURCE_SAMPLES}/{i}"), *n as f64);
        }
        let record = record
            .with("loss", r.losses.total)
            .with("loss_contrastive", r.losses.contrastive)
            .with("loss_caption", r.losses.caption)
            .with("lr", r.lr)
            .with("grad_norm", r.grad_norm)
            .with("logit_scale", r.logit_scale)
            .with("samples_per_s", r.samples_per_s);
        self.log(&record)
    }

    fn validate(&mut self, model: &Coca, step: u64) -> Result<BTreeMap<String, f64>, TrainError> {
        let Some(val) = &self.val else {
            return Ok(BTreeMap::new());
        };
        let eval = evaluate(model, &self.cfg, val, &self.tokenizer)
            .map_err(|e| TrainError::Data(format!("validation: {e:#}")))?;
        let mut record = Record::new(step, Split::Val);
        for (name, value) in &eval.metrics {
            record = record.with(name, *value);
        }
        self.log(&record)?;
        let line = eval
            .metrics
            .iter()
            .map(|(k, v)| format!("{k} {:.1}%", v * 100.0))
            .collect::<Vec<_>>()
            .join(", ");
        self.println(format!("step {step} validation: {line}"));
        let samples: Vec<_> = eval
            .samples
            .iter()
            .map(|(key, generated, reference)| {
                json!({"image": key, "generated": generated, "reference": reference})
            })
            .collect();
        let path = self
            .run_dir
            .join("samples")
            .join(format!("step_{step:08}.json"));
        std::fs::create_dir_all(self.run_dir.join("samples"))
            .map_err(|e| TrainError::io(&path, e))?;
        let text = serde_json::to_vec_pretty(
            &json!({"step": step, "metrics": eval.metrics, "captions": samples}),
        )
        .map_err(|e| TrainError::Config(e.to_string()))?;
        coca_fs::write_atomic(&path, |w| -> Result<(), TrainError> {
            std::io::Write::write_all(w, &text).map_err(|e| TrainError::io(&path, e))
        })?;
        let metrics = eval.metrics.clone();
        self.last_eval = Some(eval);
        Ok(metrics)
    }

    fn on_checkpoint(&mut self, step: u64, path: &Path) -> Result<(), TrainError> {
        self.metrics.sync().map_err(runlog)?;
        self.events.flush().map_err(runlog)?;
        tracing::info!("step {step}: checkpoint {}", path.display());
        Ok(())
    }
}
