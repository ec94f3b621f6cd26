//! TensorBoard event files: `events.out.tfevents.<unix time>.<host>` holding TFRecord-framed `Event`
//! protobufs, the first one announcing `brain.Event:2`, the others one scalar each.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::error::{Result, RunlogError};
use crate::metrics::{unix_now, Record};
use crate::proto::Event;
use crate::tfrecord::{frame, unframe, Damage};

/// The `file_version` TensorBoard expects in the first event of a file.
const FILE_VERSION: &str = "brain.Event:2";

/// What every event file's name starts with (TensorBoard looks for `*tfevents*`).
const PREFIX: &str = "events.out.tfevents.";

/// Writes scalars to a new TensorBoard event file in a directory (`RUN_DIR/tensorboard` by convention).
///
/// Records are buffered; [`flush`](Self::flush) hands them to the kernel and fsyncs (call it after each
/// logging step or checkpoint); dropping the writer flushes too. A kill can tear only the last record,
/// which TensorBoard and [`read_events`] ignore.
///
/// ```no_run
/// use coca_runlog::EventWriter;
/// let mut tb = EventWriter::create("runs/demo/tensorboard")?;
/// tb.add_scalar("train/loss", 10, 2.5, 1_764_210_000.0)?;
/// tb.flush()?;
/// # Ok::<(), coca_runlog::RunlogError>(())
/// ```
#[derive(Debug)]
pub struct EventWriter {
    path: PathBuf,
    out: BufWriter<File>,
    buf: Vec<u8>,
}

impl EventWriter {
    /// Create `dir` if needed and a new event file in it, named
    /// `events.out.tfevents.<unix seconds>.<host>` (with a numeric suffix if that name is taken).
    pub fn create(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| RunlogError::io(dir, "cannot create", e))?;
        let now = unix_now();
        let base = format!("{PREFIX}{}.{}", now as u64, hostname());
        let (path, file) = create_unique(dir, &base)?;
        let mut writer = Self {
            path,
            out: BufWriter::new(file),
            buf: Vec::new(),
        };
        writer.write_event(&Event {
            wall_time: now,
            file_version: Some(FILE_VERSION.into()),
            ..Event::default()
        })?;
        writer.flush()?;
        Ok(writer)
    }

    /// Continue a run from the checkpoint of step `last_step`: rewrites the existing event files in `dir`
    /// without the events after that step, so TensorBoard shows no ghost steps from before the restart,
    /// then starts a new file as [`create`](Self::create) does. A file is also cut at its first damaged
    /// record (a torn write, a checksum mismatch): TensorBoard stops reading there anyway, and a damaged
    /// log must not stop a run from resuming.
    pub fn resume(dir: impl AsRef<Path>, last_step: u64) -> Result<Self> {
        let dir = dir.as_ref();
        if dir.is_dir() {
            for path in event_files(dir)? {
                trim_after(&path, last_step)?;
            }
        }
        Self::create(dir)
    }

    /// The event file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Record `value` under `tag` (e.g. `train/loss`) at `step`; `wall_time` in Unix seconds.
    pub fn add_scalar(&mut self, tag: &str, step: u64, value: f32, wall_time: f64) -> Result<()> {
        self.write_event(&Event {
            wall_time,
            step: i64::try_from(step).unwrap_or(i64::MAX),
            file_version: None,
            scalars: vec![(tag.to_owned(), value)],
        })
    }

    /// Record every value of a metrics record as `<split>/<name>` (`train/loss`, `val/zeroshot_top1`), at
    /// the record's step and time.
    pub fn add_record(&mut self, record: &Record) -> Result<()> {
        for (name, value) in &record.values {
            let tag = format!("{}/{name}", record.split);
            self.add_scalar(&tag, record.step, *value as f32, record.time)?;
        }
        Ok(())
    }

    /// Hand everything written so far to the kernel and fsync it.
    pub fn flush(&mut self) -> Result<()> {
        self.out
            .flush()
            .and_then(|()| self.out.get_ref().sync_data())
            .map_err(|e| RunlogError::io(&self.path, "cannot write", e))
    }

    fn write_event(&mut self, event: &Event) -> Result<()> {
        self.buf.clear();
        frame(&event.encode(), &mut self.buf);
        self.out
            .write_all(&self.buf)
            .map_err(|e| RunlogError::io(&self.path, "cannot write", e))
    }
}

impl Drop for EventWriter {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

/// The machine's name for the file name (TensorBoard's convention), made safe for a path component.
fn hostname() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .unwrap_or_default();
    let name: String = raw
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.is_empty() {
        "localhost".into()
    } else {
        name
    }
}

/// Create `dir/base`, or `dir/base.1`, `dir/base.2`, ... if taken (two writers started in one second).
fn create_unique(dir: &Path, base: &str) -> Result<(PathBuf, File)> {
    for n in 0u32.. {
        let name = if n == 0 {
            base.to_owned()
        } else {
            format!("{base}.{n}")
        };
        let path = dir.join(name);
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(file) => return Ok((path, file)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(RunlogError::io(path, "cannot create", e)),
        }
    }
    unreachable!("u32 suffixes exhausted")
}

/// The event files in `dir`, sorted by name.
fn event_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|e| RunlogError::io(dir, "cannot list", e))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| RunlogError::io(dir, "cannot list", e))?;
        let is_events = entry.file_name().to_string_lossy().starts_with(PREFIX);
        if is_events && entry.path().is_file() {
            files.push(entry.path());
        }
    }
    files.sort();
    Ok(files)
}

/// Rewrite `path` (atomically) without events after `last_step` and without a torn tail. Events without a
/// step (the file_version header) are kept.
fn trim_after(path: &Path, last_step: u64) -> Result<()> {
    let bytes = std::fs::read(path).map_err(|e| RunlogError::io(path, "cannot read", e))?;
    let last_step = i64::try_from(last_step).unwrap_or(i64::MAX);
    let mut kept = Vec::with_capacity(bytes.len());
    // Whatever follows a damaged record is dropped with it (see `EventWriter::resume`).
    for record in unframe(&bytes).0 {
        match Event::decode(record.data) {
            Ok(event) if event.step <= last_step => {
                kept.extend_from_slice(&bytes[record.offset..record.end])
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    if kept.len() != bytes.len() {
        coca_fs::write_bytes_atomic(path, &kept)?;
    }
    Ok(())
}

/// Every event of a TensorBoard event file, checking each record's checksums. A truncated last record
/// (a write cut short) is skipped, as TensorBoard does; any other damage is an error naming the offset.
pub fn read_events(path: impl AsRef<Path>) -> Result<Vec<Event>> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| RunlogError::io(path, "cannot read", e))?;
    let corrupt = |offset: usize, reason: String| RunlogError::CorruptEvents {
        path: path.to_path_buf(),
        offset: offset as u64,
        reason,
    };
    let (records, damage) = unframe(&bytes);
    if let Some(Damage::BadCrc(offset, reason)) = damage {
        return Err(corrupt(offset, reason.into()));
    }
    records
        .into_iter()
        .map(|r| Event::decode(r.data).map_err(|reason| corrupt(r.offset, reason)))
        .collect()
}
