//! `metrics.jsonl`: one JSON object per logged step, appended as training goes, trimmed back on resume.
//!
//! A line looks like `{"step":120,"time":1764210000.25,"split":"train","loss":2.31,"lr":0.0005}`: `step`,
//! `time` (Unix seconds) and `split` first, then the metrics in name order. JSON has no NaN or infinity, so a
//! non-finite value is written as `null` and read back as NaN (a NaN loss is worth seeing in the log).
//!
//! Crash safety: each line goes to the file in a single `write` call, so a kill can only tear the last
//! line; readers skip such a torn last line, and [`MetricsWriter::resume`] / [`MetricsWriter::open_append`]
//! cut it off before appending.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{Result, RunlogError};

/// File name of the metrics log inside a run directory.
pub const METRICS_FILE: &str = "metrics.jsonl";

/// Keys every line carries; metric names may not reuse them.
const RESERVED: [&str; 3] = ["step", "time", "split"];

/// Lines written between two fsyncs unless [`MetricsWriter::sync_every`] says otherwise. Each line is already
/// in the kernel when `write` returns (it survives a kill); fsync only guards against a power cut, and one per
/// line would cost more than a small training step.
const DEFAULT_SYNC_EVERY: usize = 32;

/// Which part of the run a record describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Split {
    /// Training steps (losses, learning rate, throughput).
    Train,
    /// Periodic validation (zero-shot accuracy, retrieval recall, caption match).
    Val,
}

impl Split {
    /// The name used in `metrics.jsonl` and in TensorBoard tags (`train`, `val`).
    pub fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "train" => Some(Split::Train),
            "val" => Some(Split::Val),
            _ => None,
        }
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One line of `metrics.jsonl`: the metrics of one split at one step.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Optimiser step the metrics belong to.
    pub step: u64,
    /// Wall-clock time, Unix seconds.
    pub time: f64,
    /// Train or validation.
    pub split: Split,
    /// Metric values by name (`loss`, `lr`, `zeroshot_top1`, ...).
    pub values: BTreeMap<String, f64>,
}

impl Record {
    /// An empty record stamped with the current time.
    pub fn new(step: u64, split: Split) -> Self {
        Self {
            step,
            time: unix_now(),
            split,
            values: BTreeMap::new(),
        }
    }

    /// Add (or replace) a metric value.
    pub fn with(mut self, name: &str, value: f64) -> Self {
        self.values.insert(name.to_owned(), value);
        self
    }

    /// A metric's value, if recorded.
    pub fn get(&self, name: &str) -> Option<f64> {
        self.values.get(name).copied()
    }

    /// The JSON line (with its newline) for this record.
    fn to_line(&self) -> Result<String> {
        // Fixed keys first, in this order, for people reading the file (serde_json's maps would sort them).
        let mut line = format!(
            "{{\"step\":{},\"time\":{},\"split\":\"{}\"",
            self.step,
            json_number(self.time),
            self.split
        );
        for (name, value) in &self.values {
            check_name(name)?;
            line.push(',');
            line.push_str(&serde_json::Value::from(name.as_str()).to_string());
            line.push(':');
            line.push_str(&json_number(*value).to_string());
        }
        line.push_str("}\n");
        Ok(line)
    }

    /// Parse one line (without its newline).
    fn from_line(line: &str) -> Result<Self, String> {
        let value: serde_json::Value = serde_json::from_str(line).map_err(|e| {
            // serde_json says "at line 1 column N": the line is ours to name, the column is its.
            let msg = e.to_string();
            let msg = msg.rfind(" at line ").map_or(&msg[..], |i| &msg[..i]);
            format!("{msg} at column {}", e.column())
        })?;
        let serde_json::Value::Object(obj) = value else {
            return Err("not a JSON object".into());
        };
        let step = obj
            .get("step")
            .ok_or("no \"step\"")?
            .as_u64()
            .ok_or("\"step\" is not a non-negative integer")?;
        let time = match obj.get("time") {
            None | Some(serde_json::Value::Null) => f64::NAN,
            Some(t) => t.as_f64().ok_or("\"time\" is not a number")?,
        };
        let split_name = obj
            .get("split")
            .ok_or("no \"split\"")?
            .as_str()
            .ok_or("\"split\" is not a string")?;
        let split = Split::parse(split_name).ok_or_else(|| {
            format!("unknown split {split_name:?} (expected \"train\" or \"val\")")
        })?;
        let mut values = BTreeMap::new();
        for (name, v) in obj.iter().filter(|(k, _)| !RESERVED.contains(&k.as_str())) {
            let x = match v {
                serde_json::Value::Null => f64::NAN,
                v => v
                    .as_f64()
                    .ok_or_else(|| format!("metric {name:?} is not a number"))?,
            };
            values.insert(name.clone(), x);
        }
        Ok(Self {
            step,
            time,
            split,
            values,
        })
    }
}

/// Seconds since the Unix epoch, now.
pub(crate) fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// A JSON number, or `null` for NaN and infinities (which JSON cannot represent).
fn json_number(x: f64) -> serde_json::Value {
    serde_json::Number::from_f64(x).map_or(serde_json::Value::Null, serde_json::Value::Number)
}

fn check_name(name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        "empty"
    } else if RESERVED.contains(&name) {
        "reserved for the line's own fields (step, time, split)"
    } else {
        return Ok(());
    };
    Err(RunlogError::InvalidName {
        name: name.to_owned(),
        reason,
    })
}

/// Appends records to `RUN_DIR/metrics.jsonl`.
///
/// Every record is handed to the kernel as soon as it is written (a killed process loses nothing already
/// written); the file is fsync'ed every [`sync_every`](Self::sync_every) lines, on [`sync`](Self::sync)
/// and when the writer is dropped. Call `sync` right after saving a checkpoint so the log is at least as
/// durable as the checkpoint.
///
/// ```no_run
/// use coca_runlog::{MetricsWriter, Split};
/// let mut log = MetricsWriter::create("runs/demo")?;
/// log.log(10, Split::Train, &[("loss", 2.5), ("lr", 1e-4)])?;
/// log.log(10, Split::Val, &[("zeroshot_top1", 0.42)])?;
/// # Ok::<(), coca_runlog::RunlogError>(())
/// ```
#[derive(Debug)]
pub struct MetricsWriter {
    path: PathBuf,
    file: File,
    unsynced: usize,
    sync_every: usize,
    dropped: usize,
}

impl MetricsWriter {
    /// Start the log of a new run: creates `run_dir` if needed and an empty `metrics.jsonl`. Refuses to
    /// overwrite the log of an earlier run ([`RunlogError::MetricsExist`]).
    pub fn create(run_dir: impl AsRef<Path>) -> Result<Self> {
        let path = prepare(run_dir.as_ref())?;
        let file = OpenOptions::new()
            .append(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::AlreadyExists => {
                    RunlogError::MetricsExist { path: path.clone() }
                }
                _ => RunlogError::io(&path, "cannot create", e),
            })?;
        Ok(Self::from_file(path, file, 0))
    }

    /// Append to an existing log (created if missing), keeping every line. A torn last line left by a
    /// kill is cut off first, so the next record starts on a line of its own.
    pub fn open_append(run_dir: impl AsRef<Path>) -> Result<Self> {
        let path = prepare(run_dir.as_ref())?;
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(|e| RunlogError::io(&path, "cannot open", e))?;
        let bytes = std::fs::read(&path).map_err(|e| RunlogError::io(&path, "cannot read", e))?;
        let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let tail = &bytes[complete..];
        if !tail.is_empty() {
            let tail_is_record =
                std::str::from_utf8(tail).is_ok_and(|t| Record::from_line(t.trim()).is_ok());
            if tail_is_record {
                // Whole record, only its newline was lost.
                file.write_all(b"\n")
            } else {
                file.set_len(complete as u64)
                    .and_then(|()| file.seek(SeekFrom::End(0)).map(drop))
            }
            .map_err(|e| RunlogError::io(&path, "cannot repair", e))?;
        }
        Ok(Self::from_file(path, file, 0))
    }

    /// Continue a run from the checkpoint of step `last_step`: drops every line with a step after it (those
    /// steps will be trained and logged again), and a torn last line, then appends. The trimmed file
    /// replaces the old one atomically. A missing log is created. A malformed line before the last is an
    /// error: resuming would silently lose it.
    pub fn resume(run_dir: impl AsRef<Path>, last_step: u64) -> Result<Self> {
        let path = prepare(run_dir.as_ref())?;
        let dropped = match std::fs::read(&path) {
            Ok(bytes) => {
                let lines = scan(&path, &bytes)?;
                let mut kept = Vec::with_capacity(bytes.len());
                let mut dropped = 0;
                for line in &lines {
                    match &line.record {
                        Some(r) if r.step <= last_step => {
                            kept.extend_from_slice(&bytes[line.start..line.end]);
                            kept.push(b'\n');
                        }
                        _ => dropped += 1,
                    }
                }
                if kept.len() != bytes.len() {
                    coca_fs::write_bytes_atomic(&path, &kept)?;
                }
                dropped
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(RunlogError::io(&path, "cannot read", e)),
        };
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .open(&path)
            .map_err(|e| RunlogError::io(&path, "cannot open", e))?;
        Ok(Self::from_file(path, file, dropped))
    }

    fn from_file(path: PathBuf, file: File, dropped: usize) -> Self {
        Self {
            path,
            file,
            unsynced: 0,
            sync_every: DEFAULT_SYNC_EVERY,
            dropped,
        }
    }

    /// fsync after every `n` lines (at least 1); the default is 32.
    pub fn sync_every(mut self, n: usize) -> Self {
        self.sync_every = n.max(1);
        self
    }

    /// Lines that [`resume`](Self::resume) removed (steps after the checkpoint, a torn last line).
    pub fn dropped_on_resume(&self) -> usize {
        self.dropped
    }

    /// The `metrics.jsonl` being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Append one record.
    pub fn write(&mut self, record: &Record) -> Result<()> {
        let line = record.to_line()?;
        // One write call per line: a kill can tear only this line, never interleave two.
        self.file
            .write_all(line.as_bytes())
            .map_err(|e| RunlogError::io(&self.path, "cannot write", e))?;
        self.unsynced += 1;
        if self.unsynced >= self.sync_every {
            self.sync()?;
        }
        Ok(())
    }

    /// Append a record of `values` for `step` and `split`, stamped with the current time.
    pub fn log(&mut self, step: u64, split: Split, values: &[(&str, f64)]) -> Result<()> {
        let record = values
            .iter()
            .fold(Record::new(step, split), |r, &(name, v)| r.with(name, v));
        self.write(&record)
    }

    /// Make every line written so far durable (fsync).
    pub fn sync(&mut self) -> Result<()> {
        self.file
            .sync_data()
            .map_err(|e| RunlogError::io(&self.path, "cannot sync", e))?;
        self.unsynced = 0;
        Ok(())
    }
}

impl Drop for MetricsWriter {
    fn drop(&mut self) {
        if self.unsynced > 0 {
            let _ = self.file.sync_data();
        }
    }
}

/// Create `run_dir` if needed; the metrics path inside it.
fn prepare(run_dir: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(run_dir).map_err(|e| RunlogError::io(run_dir, "cannot create", e))?;
    Ok(run_dir.join(METRICS_FILE))
}

/// A non-blank line of the file: its byte range (without the newline) and its record, `None` for a torn
/// last line.
struct Line {
    start: usize,
    end: usize,
    record: Option<Record>,
}

/// Parse every non-blank line. A malformed complete line is an error naming its line number; a last line
/// without its newline that does not parse is a write torn by a kill and comes back with `record: None`.
fn scan(path: &Path, bytes: &[u8]) -> Result<Vec<Line>> {
    let mut lines = Vec::new();
    let mut start = 0;
    let mut number = 0;
    while start < bytes.len() {
        number += 1;
        let (end, terminated) = match bytes[start..].iter().position(|&b| b == b'\n') {
            Some(i) => (start + i, true),
            None => (bytes.len(), false),
        };
        let raw = &bytes[start..end];
        let parsed = std::str::from_utf8(raw)
            .map_err(|_| "not UTF-8".to_owned())
            .map(str::trim);
        match parsed {
            Ok("") => {}
            Ok(text) => match Record::from_line(text) {
                Ok(record) => lines.push(Line {
                    start,
                    end,
                    record: Some(record),
                }),
                Err(_) if !terminated => lines.push(Line {
                    start,
                    end,
                    record: None,
                }),
                Err(reason) => return Err(malformed(path, number, reason)),
            },
            Err(_) if !terminated => lines.push(Line {
                start,
                end,
                record: None,
            }),
            Err(reason) => return Err(malformed(path, number, reason)),
        }
        start = end + 1;
    }
    Ok(lines)
}

fn malformed(path: &Path, line: usize, reason: String) -> RunlogError {
    RunlogError::MalformedLine {
        path: path.to_path_buf(),
        line,
        reason,
    }
}

/// Every record of a metrics file, in file order. A malformed line is an error naming its line number,
/// except a torn last line (no newline, incomplete JSON), which a kill mid-write leaves and which is
/// skipped. Blank lines are ignored.
pub fn read_metrics(path: impl AsRef<Path>) -> Result<Vec<Record>> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => RunlogError::MetricsNotFound {
            path: path.to_path_buf(),
        },
        _ => RunlogError::io(path, "cannot read", e),
    })?;
    Ok(scan(path, &bytes)?
        .into_iter()
        .filter_map(|l| l.record)
        .collect())
}
