//! Seeing a training run: metrics as JSONL, TensorBoard event files, and loss/accuracy plots.
//!
//! A run directory gets
//! - `metrics.jsonl`, one JSON object per logged step and split ([`MetricsWriter`], [`read_metrics`]);
//! - `tensorboard/events.out.tfevents.<time>.<host>`, the same scalars for TensorBoard ([`EventWriter`]);
//! - `plots/*.png` and `plots/*.svg`, drawn from the metrics by [`plot_run`] (`coca plot RUN_DIR`).
//!
//! [`plot_confusion`] draws a classifier's confusion matrix the same way (`coca probe --confusion`).
//!
//! Both logs survive a kill: only the last line or record can be torn, and readers skip it. When a run
//! resumes from the checkpoint of step `s`, [`MetricsWriter::resume`] and [`EventWriter::resume`] drop what
//! was logged after `s`, so the steps trained again appear once.
//!
//! ```no_run
//! use coca_runlog::{EventWriter, MetricsWriter, Record, Split};
//! let mut metrics = MetricsWriter::create("runs/demo")?;
//! let mut tb = EventWriter::create("runs/demo/tensorboard")?;
//! let record = Record::new(100, Split::Train).with("loss", 2.31).with("lr", 5e-4);
//! metrics.write(&record)?;
//! tb.add_record(&record)?;
//! tb.flush()?;
//! # Ok::<(), coca_runlog::RunlogError>(())
//! ```

mod error;
mod events;
mod metrics;
mod plot;
mod proto;
mod tfrecord;

pub use error::{Result, RunlogError};
pub use events::{read_events, EventWriter};
pub use metrics::{read_metrics, MetricsWriter, Record, Split, METRICS_FILE};
pub use plot::{plot_confusion, plot_run, PlotOptions};
pub use proto::Event;
