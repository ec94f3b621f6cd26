//! A folder written by several workers, checked as a whole: each worker that went through the whole input
//! leaves a [`WorkerReport`] saying how many input items there are, and [`finalize`] uses it to find every
//! partition that should exist, lists the missing or damaged ones with the worker that owns them, and writes
//! the [`Collection`] summary (`coca_collection.json`) that search and index builds read.

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::RetrievalError;
use crate::layout::{Layout, Share, WORKERS_DIR};
use crate::metadata::metadata_rows;
use crate::npy::{npy_shape, EmbeddingDtype};
use crate::output::Manifest;

/// What a worker writes once it has gone through the whole input (`workers/worker_I_of_N.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerReport {
    /// This worker, `0..workers`.
    pub worker: usize,
    /// Workers sharing the folder in this worker's run.
    pub workers: usize,
    /// Items in the input (including unreadable ones): every worker reads the whole input, so each knows.
    pub input_items: usize,
    /// Partitions the input is cut into (`ceil(input_items / partition_size)`, at least 1).
    pub partitions: usize,
    /// SHA-256 of the checkpoint file, when it is a local file.
    pub checkpoint_sha256: Option<String>,
}

impl WorkerReport {
    /// Write the report atomically.
    pub fn write(&self, layout: &Layout) -> Result<(), RetrievalError> {
        let path = layout.worker_report_path(Share {
            index: self.worker,
            count: self.workers,
        });
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| RetrievalError::io(dir, e))?;
        }
        write_json(&path, self)
    }

    /// Every report in the folder (none when no worker has finished).
    pub fn read_all(layout: &Layout) -> Result<Vec<WorkerReport>, RetrievalError> {
        let dir = layout.root().join(WORKERS_DIR);
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(RetrievalError::io(dir, e)),
        };
        let mut reports = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| RetrievalError::io(&dir, e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if !(name.starts_with("worker_") && name.ends_with(".json")) {
                continue;
            }
            reports.push(read_json(&entry.path())?);
        }
        reports.sort_by_key(|r: &WorkerReport| (r.workers, r.worker));
        Ok(reports)
    }
}

/// One partition of a complete collection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartitionSummary {
    /// Partition number.
    pub partition: usize,
    /// Rows (samples embedded).
    pub rows: usize,
}

/// `coca_collection.json`: a complete collection, as [`finalize`] found it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Collection {
    /// Rows in all partitions.
    pub rows: usize,
    /// Items in the input, including the ones skipped as unreadable.
    pub input_items: usize,
    /// Every partition in order, with its rows: a row's global number (as in a faiss index built over the
    /// files in this order) is the rows of the partitions before it plus its row in the partition.
    pub partitions: Vec<PartitionSummary>,
    /// Embedding width.
    pub dim: usize,
    /// Storage type of the `.npy` files.
    pub dtype: EmbeddingDtype,
    /// Whether `img_emb/` is written.
    pub image_embeddings: bool,
    /// Whether `text_emb/` is written.
    pub text_embeddings: bool,
    /// The model (name or config path) the embeddings were made with.
    pub model: Option<String>,
    /// The checkpoint (name or path).
    pub pretrained: Option<String>,
    /// SHA-256 of the checkpoint file, when the workers had it as a local file.
    pub checkpoint_sha256: Option<String>,
    /// Workers of the last run that wrote the folder.
    pub workers: usize,
}

impl Collection {
    /// Read `coca_collection.json`, if `coca index` wrote one.
    pub fn read(layout: &Layout) -> Result<Option<Collection>, RetrievalError> {
        let path = layout.collection_path();
        if !path.is_file() {
            return Ok(None);
        }
        read_json(&path).map(Some)
    }

    /// The (partition, row) of a global row number, if it is in range.
    pub fn locate(&self, global: u64) -> Option<(usize, usize)> {
        let mut start = 0u64;
        for p in &self.partitions {
            let end = start + p.rows as u64;
            if global < end {
                return Some((p.partition, (global - start) as usize));
            }
            start = end;
        }
        None
    }
}

/// A partition that is not there or not whole, and who should write it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    /// Partition number.
    pub partition: usize,
    /// The worker that owns it, of [`Incomplete::workers`].
    pub owner: usize,
    /// What is wrong: `missing`, or the disagreement between its files.
    pub problem: String,
}

/// Why [`finalize`] could not vouch for a folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incomplete {
    /// Partitions the input is cut into.
    pub partitions: usize,
    /// Workers of the last run (owners are given for this count).
    pub workers: usize,
    /// The partitions that are not complete.
    pub missing: Vec<Missing>,
}

impl std::fmt::Display for Incomplete {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const SHOWN: usize = 20;
        let listed: Vec<String> = self
            .missing
            .iter()
            .take(SHOWN)
            .map(|m| {
                format!(
                    "partition {} ({}; worker {} of {})",
                    m.partition, m.problem, m.owner, self.workers
                )
            })
            .collect();
        let more = self.missing.len().saturating_sub(SHOWN);
        write!(
            f,
            "{} of {} partitions are not complete: {}{}; rerun those workers (same command, same \
             --num-workers and --worker-index) to write them",
            self.missing.len(),
            self.partitions,
            listed.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        )
    }
}

/// What [`finalize`] found.
#[derive(Debug)]
pub enum Finalized {
    /// Every partition is there: the summary was written to `coca_collection.json`.
    Complete(Collection),
    /// Some partitions are missing or damaged; nothing was written.
    Incomplete(Incomplete),
}

/// Check that every partition of a folder written by `coca embed` (by one worker or several) is present and
/// whole (its embedding files exist and have as many rows as its metadata), and if so write
/// `coca_collection.json`.
pub fn finalize(root: &Path) -> Result<Finalized, RetrievalError> {
    let layout = Layout::new(root);
    let manifest_path = layout.manifest_path();
    let manifest: Manifest = match std::fs::read(&manifest_path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| invalid(&manifest_path, e))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(RetrievalError::Collection {
                path: root.to_path_buf(),
                detail: "no coca_embed.json: not a folder written by `coca embed --output-dir`"
                    .into(),
            })
        }
        Err(e) => return Err(RetrievalError::io(manifest_path, e)),
    };
    let reports = WorkerReport::read_all(&layout)?;
    let Some(first) = reports.first() else {
        return Err(RetrievalError::Collection {
            path: root.to_path_buf(),
            detail:
                "no worker has gone through the whole input yet (workers/ holds no report), so the \
                     number of partitions is unknown; run the workers first"
                    .into(),
        });
    };
    if let Some(other) = reports.iter().find(|r| r.input_items != first.input_items) {
        return Err(RetrievalError::Collection {
            path: root.to_path_buf(),
            detail: format!(
                "workers saw inputs of different sizes (worker {} of {}: {} items; worker {} of {}: {} \
                 items): the input changed between runs",
                first.worker,
                first.workers,
                first.input_items,
                other.worker,
                other.workers,
                other.input_items
            ),
        });
    }
    let checkpoint_sha256 = first.checkpoint_sha256.clone();
    if let Some(other) = reports
        .iter()
        .find(|r| r.checkpoint_sha256 != checkpoint_sha256)
    {
        return Err(RetrievalError::Collection {
            path: root.to_path_buf(),
            detail: format!(
                "workers used different checkpoint files (sha256 {} and {})",
                checkpoint_sha256.as_deref().unwrap_or("unknown"),
                other.checkpoint_sha256.as_deref().unwrap_or("unknown")
            ),
        });
    }
    let workers = reports.iter().map(|r| r.workers).max().unwrap_or(1);
    let partitions = first.partitions;
    let mut summaries = Vec::with_capacity(partitions);
    let mut missing = Vec::new();
    for partition in 0..partitions {
        match partition_rows(&layout, &manifest, partition)? {
            Ok(rows) => summaries.push(PartitionSummary { partition, rows }),
            Err(problem) => missing.push(Missing {
                partition,
                owner: Share::owner(partition, workers),
                problem,
            }),
        }
    }
    if !missing.is_empty() {
        return Ok(Finalized::Incomplete(Incomplete {
            partitions,
            workers,
            missing,
        }));
    }
    let setting = |key: &str| {
        manifest
            .settings
            .get(key)
            .and_then(|v| v.as_str())
            .map(str::to_string)
    };
    let collection = Collection {
        rows: summaries.iter().map(|s| s.rows).sum(),
        input_items: first.input_items,
        partitions: summaries,
        dim: manifest.dim,
        dtype: manifest.dtype,
        image_embeddings: manifest.image_embeddings,
        text_embeddings: manifest.text_embeddings,
        model: setting("model"),
        pretrained: setting("pretrained"),
        checkpoint_sha256,
        workers,
    };
    write_json(&layout.collection_path(), &collection)?;
    Ok(Finalized::Complete(collection))
}

/// The rows of a partition, or what is wrong with it.
fn partition_rows(
    layout: &Layout,
    manifest: &Manifest,
    partition: usize,
) -> Result<Result<usize, String>, RetrievalError> {
    let meta = layout.metadata_path(partition);
    if !meta.is_file() {
        return Ok(Err("missing".into()));
    }
    let rows = metadata_rows(&meta)?;
    let mut files = Vec::new();
    if manifest.image_embeddings {
        files.push(layout.image_path(partition));
    }
    if manifest.text_embeddings {
        files.push(layout.text_path(partition));
    }
    for file in files {
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !file.is_file() {
            return Ok(Err(format!("{name} is missing")));
        }
        let (found, dim) = npy_shape(&file)?;
        if found != rows || dim != manifest.dim {
            return Ok(Err(format!(
                "{name} has shape ({found}, {dim}), expected ({rows}, {})",
                manifest.dim
            )));
        }
    }
    Ok(Ok(rows))
}

fn invalid(path: &Path, e: serde_json::Error) -> RetrievalError {
    RetrievalError::io(
        path,
        std::io::Error::new(std::io::ErrorKind::InvalidData, e),
    )
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, RetrievalError> {
    let bytes = std::fs::read(path).map_err(|e| RetrievalError::io(path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| invalid(path, e))
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), RetrievalError> {
    coca_fs::write_atomic(path, |w| -> Result<(), RetrievalError> {
        serde_json::to_writer_pretty(&mut *w, value)
            .map_err(|e| RetrievalError::io(path, e.into()))?;
        w.write_all(b"\n").map_err(|e| RetrievalError::io(path, e))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn global_rows_map_to_partitions_in_order() {
        let c = Collection {
            rows: 5,
            input_items: 6,
            partitions: [(0, 2), (1, 0), (2, 3)]
                .iter()
                .map(|&(partition, rows)| PartitionSummary { partition, rows })
                .collect(),
            dim: 4,
            dtype: EmbeddingDtype::F16,
            image_embeddings: true,
            text_embeddings: false,
            model: None,
            pretrained: None,
            checkpoint_sha256: None,
            workers: 1,
        };
        let found: Vec<_> = (0..6).map(|g| c.locate(g)).collect();
        assert_eq!(
            found,
            [
                Some((0, 0)),
                Some((0, 1)),
                Some((2, 0)),
                Some((2, 1)),
                Some((2, 2)),
                None
            ]
        );
    }
}
