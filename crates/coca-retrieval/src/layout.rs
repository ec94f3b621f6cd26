//! Where things go in an output folder, as clip-retrieval lays it out:
//!
//! ```text
//! OUT/img_emb/img_emb_{N}.npy        image embeddings of partition N (rows in sample order)
//! OUT/text_emb/text_emb_{N}.npy      caption embeddings of partition N
//! OUT/metadata/metadata_{N}.parquet  image_path, caption, key of each row
//! OUT/coca_embed.json                the run's settings, to resume safely
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
    /// written by `coca_checkpoint::write_atomic`). Returns how many were removed.
    pub fn remove_stale_temporaries(&self) -> Result<usize, RetrievalError> {
        let mut removed = 0;
        let dirs = [
            self.root.clone(),
            self.root.join(IMG_DIR),
            self.root.join(TEXT_DIR),
            self.root.join(METADATA_DIR),
        ];
        for dir in dirs {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name();
                let Some(name) = name.to_str() else { continue };
                let ours = [".img_emb_", ".text_emb_", ".metadata_", ".coca_embed.json"]
                    .iter()
                    .any(|p| name.starts_with(p));
                if ours && name.contains(".tmp.") {
                    std::fs::remove_file(entry.path())
                        .map_err(|e| RetrievalError::io(entry.path(), e))?;
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }
}

fn number(partition: usize) -> String {
    format!("{partition:0PARTITION_DIGITS$}")
}
