//! Where things go in an output folder, as clip-retrieval lays it out:
//!
//! ```text
//! OUT/img_emb/img_emb_{N}.npy        image embeddings of partition N (rows in sample order)
//! OUT/text_emb/text_emb_{N}.npy      caption embeddings of partition N
//! OUT/metadata/metadata_{N}.parquet  image_path, caption, key of each row
//! OUT/coca_embed.json                the run's settings, to resume safely
//! OUT/workers/worker_{I}_of_{N}.json  written by each worker that went through the whole input
//! OUT/coca_collection.json           counts, model and checkpoint, written by `coca index`
//! OUT/index/image.index              a faiss index of img_emb/ (and text.index), written by `coca index`
//! ```
//!
//! `N` is zero-padded to [`PARTITION_DIGITS`] digits so that names sort in partition order (clip-retrieval
//! pads to the digit count of the total number of partitions, which a streaming run does not know).

use std::path::{Path, PathBuf};

use crate::error::RetrievalError;

/// Image embedding folder.
pub const IMG_DIR: &str = "img_emb";
/// Text embedding folder.
pub const TEXT_DIR: &str = "text_emb";
/// Metadata folder.
pub const METADATA_DIR: &str = "metadata";
/// The run manifest's file name.
pub const MANIFEST_FILE: &str = "coca_embed.json";
/// Workers' completion reports (see [`Layout::worker_report_path`]).
pub const WORKERS_DIR: &str = "workers";
/// The collection's summary written by `coca index`.
pub const COLLECTION_FILE: &str = "coca_collection.json";
/// Approximate-search indexes.
pub const ANN_DIR: &str = "index";
/// Minimum digits of a partition number in file names.
pub const PARTITION_DIGITS: usize = 5;

/// Paths inside one output folder.
#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    /// The layout rooted at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The output folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `OUT/img_emb/img_emb_{N}.npy`.
    pub fn image_path(&self, partition: usize) -> PathBuf {
        self.root
            .join(IMG_DIR)
            .join(format!("img_emb_{}.npy", number(partition)))
    }

    /// `OUT/text_emb/text_emb_{N}.npy`.
    pub fn text_path(&self, partition: usize) -> PathBuf {
        self.root
            .join(TEXT_DIR)
            .join(format!("text_emb_{}.npy", number(partition)))
    }

    /// `OUT/metadata/metadata_{N}.parquet`.
    pub fn metadata_path(&self, partition: usize) -> PathBuf {
        self.root
            .join(METADATA_DIR)
            .join(format!("metadata_{}.parquet", number(partition)))
    }

    /// `OUT/coca_embed.json`.
    pub fn manifest_path(&self) -> PathBuf {
        self.root.join(MANIFEST_FILE)
    }

    /// Partitions whose metadata file exists (it is written last, so those are complete), in order.
    pub fn partitions(&self) -> Result<Vec<usize>, RetrievalError> {
        let dir = self.root.join(METADATA_DIR);
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(RetrievalError::io(dir, e)),
        };
        let mut found = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| RetrievalError::io(&dir, e))?;
            let name = entry.file_name();
            let number = name
                .to_str()
                .and_then(|n| n.strip_prefix("metadata_"))
                .and_then(|n| n.strip_suffix(".parquet"))
                .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|n| n.parse::<usize>().ok());
            found.extend(number);
        }
        found.sort_unstable();
        Ok(found)
    }

    /// Delete temporary files that an interrupted run left behind (`.img_emb_00003.npy.tmp.<pid>.<n>`, as
    /// written by `coca_fs::write_atomic`) for the partitions `share` owns, and the manifest's when
    /// `share` is the only writer: another worker's temporary may be a write in progress. Returns how many
    /// were removed.
    pub fn remove_stale_temporaries(&self, share: Share) -> Result<usize, RetrievalError> {
        let mut removed = 0;
        let dirs = [
            self.root.clone(),
            self.root.join(IMG_DIR),
            self.root.join(TEXT_DIR),
            self.root.join(METADATA_DIR),
            self.root.join(WORKERS_DIR),
        ];
        for dir in dirs {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name();
                let Some(name) = name.to_str() else { continue };
                if !name.contains(".tmp.") {
                    continue;
                }
                let partition = [".img_emb_", ".text_emb_", ".metadata_"]
                    .iter()
                    .find_map(|prefix| name.strip_prefix(prefix))
                    .map(|n| {
                        n.bytes()
                            .take_while(u8::is_ascii_digit)
                            .collect::<Vec<u8>>()
                    })
                    .and_then(|digits| std::str::from_utf8(&digits).ok()?.parse::<usize>().ok());
                let ours = match partition {
                    Some(p) => share.owns(p),
                    None => {
                        share.count == 1
                            && (name.starts_with(".coca_embed.json")
                                || name.starts_with(".worker_"))
                    }
                };
                if ours {
                    std::fs::remove_file(entry.path())
                        .map_err(|e| RetrievalError::io(entry.path(), e))?;
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }

    /// `OUT/workers/worker_{I}_of_{N}.json`: written by worker `I` of `N` when it has gone through the whole
    /// input.
    pub fn worker_report_path(&self, share: Share) -> PathBuf {
        self.root.join(WORKERS_DIR).join(format!(
            "worker_{}_of_{}.json",
            number(share.index),
            number(share.count)
        ))
    }

    /// `OUT/coca_collection.json`: written by `coca index` once every partition is present.
    pub fn collection_path(&self) -> PathBuf {
        self.root.join(COLLECTION_FILE)
    }

    /// `OUT/index/`: the approximate-search indexes (`image.index`, `text.index`, as clip-retrieval names
    /// them) and their build summaries (`image.json`, `text.json`).
    pub fn ann_dir(&self) -> PathBuf {
        self.root.join(ANN_DIR)
    }
}

/// Which partitions one of several workers sharing an output folder writes: worker `index` of `count` owns
/// partition `p` when `p % count == index`. Partitions are cut from the input alone, so the set of
/// partitions does not depend on `count`, and a rerun with another count resumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Share {
    /// This worker, `0..count`.
    pub index: usize,
    /// Workers in all.
    pub count: usize,
}

impl Share {
    /// One process writing everything.
    pub const ALL: Share = Share { index: 0, count: 1 };

    /// Whether this worker writes `partition`.
    pub fn owns(&self, partition: usize) -> bool {
        partition % self.count.max(1) == self.index
    }

    /// The worker of `count` that writes `partition`.
    pub fn owner(partition: usize, count: usize) -> usize {
        partition % count.max(1)
    }
}

fn number(partition: usize) -> String {
    format!("{partition:0PARTITION_DIGITS$}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_removes_only_its_own_partitions_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        std::fs::create_dir_all(dir.path().join(IMG_DIR)).unwrap();
        let leftover = |name: &str| dir.path().join(IMG_DIR).join(name);
        let names = [
            ".img_emb_00004.npy.tmp.11.0",
            ".img_emb_00001.npy.tmp.12.0",
            "img_emb_00003.npy",
        ];
        for name in names {
            std::fs::write(leftover(name), b"x").unwrap();
        }
        std::fs::write(dir.path().join(".coca_embed.json.tmp.13.0"), b"{").unwrap();
        let worker0 = Share { index: 0, count: 2 };
        assert_eq!(layout.remove_stale_temporaries(worker0).unwrap(), 1);
        assert!(!leftover(names[0]).exists());
        assert!(leftover(names[1]).exists(), "worker 1's write in flight");
        assert!(dir.path().join(".coca_embed.json.tmp.13.0").exists());
        assert_eq!(layout.remove_stale_temporaries(Share::ALL).unwrap(), 2);
        assert!(leftover(names[2]).exists(), "a final file is never touched");
    }

    #[test]
    fn partitions_go_round_robin() {
        let owners: Vec<usize> = (0..7).map(|p| Share::owner(p, 3)).collect();
        assert_eq!(owners, [0, 1, 2, 0, 1, 2, 0]);
        assert!(Share { index: 2, count: 3 }.owns(5));
        assert!(Share::ALL.owns(12345));
    }
}
