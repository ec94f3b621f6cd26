//! `coca index OUT`: check that every partition of a folder written by `coca embed --output-dir` (by one
//! worker or many) is there, write `coca_collection.json`, and build a faiss index of `img_emb/` and
//! `text_emb/` for approximate search, measuring its recall@10 against exact search.
//!
//! faiss runs in Python (`faiss-cpu` and `numpy` from PyPI) through the script `python/coca_faiss.py`,
//! which this binary carries: faiss is what clip-retrieval and autofaiss build, so the index is the one
//! those tools would make and read (`OUT/index/image.index`, `text.index`). `coca search` uses the same
//! script to query it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use clap::Args;
use coca_retrieval::{finalize, Collection, Finalized, Layout};
use serde::Deserialize;
use serde_json::json;

use crate::cli::Global;
use crate::output::write_json;

/// The faiss build and query script (see its docstring).
const SCRIPT: &str = include_str!("../../python/coca_faiss.py");

/// Collections up to this many rows get an HNSW graph over the full vectors by default; larger ones an
/// IVF-PQ index, whose compressed codes fit memory (what autofaiss picks under a memory budget).
const HNSW_MAX_ROWS: usize = 1_000_000;

/// `coca index`.
#[derive(Debug, Args)]
#[command(after_help = "\
Run it once every worker of `coca embed --output-dir OUT` has finished. A missing or damaged partition is
reported with the worker that owns it, and nothing is written. Otherwise coca_collection.json records the
counts, model, checkpoint and dimensions, and (unless --ann none) a faiss index is built with Python's
faiss-cpu (pip install faiss-cpu numpy) into OUT/index/, which `coca search --index OUT` then uses.

Example:
  coca index laion-emb/
  coca index laion-emb/ --ann 'IVF65536_HNSW32,PQ64' --target-recall 0.9")]
pub struct IndexArgs {
    /// The folder written by `coca embed --output-dir`.
    #[arg(value_name = "OUT")]
    pub dir: PathBuf,
    /// Approximate index to build: `auto` (HNSW32 up to 1,000,000 rows, IVF-PQ above), `none` (only check
    /// the partitions and write coca_collection.json), or a faiss index_factory string such as `HNSW32`,
    /// `IVF4096,Flat` or `IVF65536_HNSW32,PQ64`.
    #[arg(long, default_value = "auto", value_name = "FACTORY")]
    pub ann: String,
    /// The search parameter (efSearch or nprobe) is the smallest whose recall@10 against exact search
    /// reaches this.
    #[arg(long, default_value_t = 0.95, value_name = "R")]
    pub target_recall: f64,
    /// Python interpreter with faiss-cpu and numpy (default: $COCA_PYTHON, else python3).
    #[arg(long, value_name = "PATH")]
    pub python: Option<String>,
    /// Print a JSON summary.
    #[arg(long)]
    pub json: bool,
}

/// What `coca_faiss.py build` reports (also stored as `OUT/index/<kind>.json`).
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct AnnInfo {
    /// The faiss index_factory string.
    pub factory: String,
    /// Rows indexed.
    pub rows: usize,
    /// The chosen search parameter (`efSearch=64`, `nprobe=16`, or empty).
    pub index_param: String,
    /// Recall@k measured against exact search.
    pub recall: f64,
    /// k of the recall.
    pub recall_at: usize,
    /// Queries the recall was measured on (stored rows, as autofaiss measures).
    pub recall_queries: usize,
    /// Seconds to train and fill the index.
    pub build_seconds: f64,
    /// Size of the serialised index in bytes (omitted for very large ones).
    pub index_bytes: Option<u64>,
}

/// The two kinds of embeddings, named as clip-retrieval names their indexes.
const KINDS: [&str; 2] = ["image", "text"];

/// Run the command.
pub fn run(args: IndexArgs, _global: &Global) -> Result<()> {
    if !(0.0..=1.0).contains(&args.target_recall) {
        bail!("--target-recall must be between 0 and 1");
    }
    if !args.dir.is_dir() {
        bail!("{}: no such folder", args.dir.display());
    }
    let collection = match finalize(&args.dir)? {
        Finalized::Complete(c) => c,
        Finalized::Incomplete(missing) => bail!("{}: {missing}", args.dir.display()),
    };
    let layout = Layout::new(&args.dir);
    let mut built = serde_json::Map::new();
    if args.ann != "none" && collection.rows > 0 {
        std::fs::create_dir_all(layout.ann_dir())
            .with_context(|| format!("{}: cannot create", layout.ann_dir().display()))?;
        for kind in KINDS {
            let enabled = match kind {
                "image" => collection.image_embeddings,
                _ => collection.text_embeddings,
            };
            if !enabled {
                continue;
            }
            let info = build(&args, &layout, &collection, kind)?;
            if !args.json {
                println!(
                    "{kind} index: {} over {} rows in {:.1}s; recall@{} {:.3} against exact search on {} stored \
                     rows ({}), {}",
                    info.factory,
                    info.rows,
                    info.build_seconds,
                    info.recall_at,
                    info.recall,
                    info.recall_queries,
                    if info.index_param.is_empty() {
                        "no search parameter"
                    } else {
                        &info.index_param
                    },
                    index_path(&layout, kind).display()
                );
                if info.recall < args.target_recall {
                    tracing::warn!(
                        "{kind} index: recall@{} {:.3} is below --target-recall {} at the largest search \
                         parameter tried; choose another --ann",
                        info.recall_at,
                        info.recall,
                        args.target_recall
                    );
                }
            }
            built.insert(kind.into(), json!(info));
        }
    }
    if args.json {
        let value = json!({
            "dir": args.dir.display().to_string(),
            "collection": collection,
            "indexes": built,
        });
        return write_json(&value, None);
    }
    println!(
        "{}: complete: {} partitions, {} rows of {} input items, dimension {}, {}; wrote {}",
        args.dir.display(),
        collection.partitions.len(),
        collection.rows,
        collection.input_items,
        collection.dim,
        collection.dtype,
        layout.collection_path().display()
    );
    Ok(())
}

/// `OUT/index/<kind>.index`.
fn index_path(layout: &Layout, kind: &str) -> PathBuf {
    layout.ann_dir().join(format!("{kind}.index"))
}

/// `OUT/index/<kind>.json`.
fn info_path(layout: &Layout, kind: &str) -> PathBuf {
    layout.ann_dir().join(format!("{kind}.json"))
}

/// The faiss factory string for `--ann auto`.
fn auto_factory(rows: usize, dim: usize) -> String {
    if rows <= HNSW_MAX_ROWS || !dim.is_multiple_of(8) {
        return "HNSW32".into();
    }
    // About 4·√rows lists (a power of two), as autofaiss chooses; one byte per 8 dimensions.
    let lists = (4.0 * (rows as f64).sqrt()).log2().round().exp2() as usize;
    format!("IVF{lists}_HNSW32,PQ{}", dim / 8)
}

/// Build one kind's index into temporary files, then rename them into place.
fn build(
    args: &IndexArgs,
    layout: &Layout,
    collection: &Collection,
    kind: &str,
) -> Result<AnnInfo> {
    let factory = if args.ann == "auto" {
        auto_factory(collection.rows, collection.dim)
    } else {
        args.ann.clone()
    };
    let files: Vec<String> = collection
        .partitions
        .iter()
        .map(|p| {
            let path = match kind {
                "image" => layout.image_path(p.partition),
                _ => layout.text_path(p.partition),
            };
            path.display().to_string()
        })
        .collect();
    let (index, info) = (index_path(layout, kind), info_path(layout, kind));
    let temp = |p: &Path| {
        let mut name = p.as_os_str().to_owned();
        name.push(format!(".tmp.{}", std::process::id()));
        PathBuf::from(name)
    };
    let (index_tmp, info_tmp) = (temp(&index), temp(&info));
    let mut argv = vec![
        "build".to_string(),
        kind.to_string(),
        factory.clone(),
        args.target_recall.to_string(),
        index_tmp.display().to_string(),
        info_tmp.display().to_string(),
    ];
    argv.extend(files);
    let result = run_script(args.python.as_deref(), &argv, &[]);
    let output = match result {
        Ok(o) => o,
        Err(e) => {
            let _ = std::fs::remove_file(&index_tmp);
            let _ = std::fs::remove_file(&info_tmp);
            return Err(e.context(format!(
                "building the faiss index {factory:?} of {kind} embeddings"
            )));
        }
    };
    let parsed: AnnInfo = serde_json::from_slice(&output)
        .context("coca_faiss.py printed no summary of the index it built")?;
    std::fs::rename(&index_tmp, &index)
        .with_context(|| format!("{}: cannot write", index.display()))?;
    std::fs::rename(&info_tmp, &info)
        .with_context(|| format!("{}: cannot write", info.display()))?;
    Ok(parsed)
}

/// Run `coca_faiss.py` with `argv`, feeding `stdin`; its standard output, or an error with its last lines of
/// standard error (a missing faiss module says so there).
fn run_script(python: Option<&str>, argv: &[String], stdin: &[u8]) -> Result<Vec<u8>> {
    let python = python
        .map(str::to_string)
        .or_else(|| std::env::var("COCA_PYTHON").ok().filter(|p| !p.is_empty()))
        .unwrap_or_else(|| "python3".into());
    let mut child = Command::new(&python)
        .arg("-c")
        .arg(SCRIPT)
        .args(argv)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| {
            format!(
                "cannot run {python} (faiss indexes need Python 3 with `pip install faiss-cpu numpy`; --python \
                 PATH names the interpreter)"
            )
        })?;
    if let Some(mut input) = child.stdin.take() {
        // A script that exits early closes the pipe; its stderr says why.
        let _ = input.write_all(stdin);
    }
    let out = child
        .wait_with_output()
        .with_context(|| format!("waiting for {python}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(3).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        let hint = if err.contains("No module named") {
            " (install them with `pip install faiss-cpu numpy`, or name another interpreter with --python)"
        } else {
            ""
        };
        bail!(
            "{python} failed ({}): {}{hint}",
            out.status,
            tail.join(" | ")
        );
    }
    Ok(out.stdout)
}

/// A faiss index that `coca index` built, found for `coca search`.
#[derive(Debug)]
pub struct AnnIndex {
    /// `OUT/index/<kind>.index`.
    pub path: PathBuf,
    /// Its build summary.
    pub info: AnnInfo,
    /// The collection it indexes (maps faiss ids to partitions and rows).
    pub collection: Collection,
}

impl AnnIndex {
    /// The index of `kind` ("image" or "text") in `dir`, if `coca index` built one that still matches the
    /// folder's partitions (a stale one is reported and ignored).
    pub fn find(dir: &Path, kind: &str) -> Result<Option<Self>> {
        let layout = Layout::new(dir);
        let path = index_path(&layout, kind);
        if !path.is_file() {
            return Ok(None);
        }
        let info_file = info_path(&layout, kind);
        let info: AnnInfo = serde_json::from_slice(
            &std::fs::read(&info_file)
                .with_context(|| format!("{}: cannot read", info_file.display()))?,
        )
        .with_context(|| format!("{}: not a coca index summary", info_file.display()))?;
        let Some(collection) = Collection::read(&layout)? else {
            tracing::warn!(
                "{}: no coca_collection.json beside the index, so its rows cannot be located; searching exactly \
                 (run `coca index {}` again)",
                path.display(),
                dir.display()
            );
            return Ok(None);
        };
        if collection.rows != info.rows {
            tracing::warn!(
                "{}: indexes {} rows but the collection has {}; searching exactly (run `coca index {}` again)",
                path.display(),
                info.rows,
                collection.rows,
                dir.display()
            );
            return Ok(None);
        }
        Ok(Some(Self {
            path,
            info,
            collection,
        }))
    }

    /// The `k` nearest rows to `query` as (score, partition, row), best first.
    pub fn search(
        &self,
        python: Option<&str>,
        query: &[f32],
        k: usize,
    ) -> Result<Vec<(f32, usize, usize)>> {
        #[derive(Deserialize)]
        struct Found {
            ids: Vec<i64>,
            scores: Vec<f32>,
        }
        let bytes: Vec<u8> = query.iter().flat_map(|v| v.to_le_bytes()).collect();
        let argv = [
            "search".to_string(),
            self.path.display().to_string(),
            self.info.index_param.clone(),
            k.to_string(),
        ];
        let out = run_script(python, &argv, &bytes)
            .with_context(|| format!("searching {}", self.path.display()))?;
        let found: Found = serde_json::from_slice(&out)
            .with_context(|| format!("searching {}: unreadable answer", self.path.display()))?;
        let mut hits = Vec::with_capacity(found.ids.len());
        for (id, score) in found.ids.into_iter().zip(found.scores) {
            let located = u64::try_from(id)
                .ok()
                .and_then(|id| self.collection.locate(id));
            let Some((partition, row)) = located else {
                bail!(
                    "{}: returned row {id}, beyond the collection's {} rows (rebuild it with `coca index`)",
                    self.path.display(),
                    self.collection.rows
                );
            };
            hits.push((score, partition, row));
        }
        Ok(hits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_picks_hnsw_for_small_collections_and_ivf_pq_for_large_ones() {
        assert_eq!(auto_factory(100_000, 512), "HNSW32");
        assert_eq!(auto_factory(400_000_000, 512), "IVF65536_HNSW32,PQ64");
        assert_eq!(auto_factory(400_000_000, 100), "HNSW32");
    }
}
