//! Writing partitions: each file atomically, metadata last, so a partition whose metadata exists is complete
//! and an interrupted run can resume from the first incomplete partition.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::RetrievalError;
use crate::layout::{Layout, Share, IMG_DIR, METADATA_DIR, TEXT_DIR};
use crate::metadata::{write_metadata, MetadataRow};
use crate::npy::{write_npy, EmbeddingDtype};

/// Version of the output layout this crate writes.
pub const FORMAT_VERSION: u32 = 1;

/// The settings of a run, stored as `coca_embed.json`. A run resumes an output folder only if its manifest
/// is identical, so partitions made with different models, inputs or partition sizes never mix.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`FORMAT_VERSION`] of the writer.
    pub format: u32,
    /// Samples of the input per partition (partition N holds input items `N*size .. (N+1)*size`, minus the
    /// ones skipped).
    pub partition_size: usize,
    /// Embedding width.
    pub dim: usize,
    /// Storage type of the `.npy` files.
    pub dtype: EmbeddingDtype,
    /// Whether `img_emb/` is written.
    pub image_embeddings: bool,
    /// Whether `text_emb/` is written.
    pub text_embeddings: bool,
    /// The caller's settings that determine the output (model, checkpoint, input, ...).
    pub settings: BTreeMap<String, serde_json::Value>,
}

impl Manifest {
    /// `name: was X, now Y` for every field that differs.
    pub fn differences(&self, now: &Manifest) -> Vec<String> {
        let (Ok(serde_json::Value::Object(old)), Ok(serde_json::Value::Object(new))) =
            (serde_json::to_value(self), serde_json::to_value(now))
        else {
            return vec!["unreadable manifest".into()];
        };
        let flatten = |map: serde_json::Map<String, serde_json::Value>| {
            let mut flat = BTreeMap::new();
            for (k, v) in map {
                match v {
                    serde_json::Value::Object(inner) if k == "settings" => {
                        flat.extend(inner);
                    }
                    other => {
                        flat.insert(k, other);
                    }
                }
            }
            flat
        };
        let (old, new) = (flatten(old), flatten(new));
        let keys: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
        keys.into_iter()
            .filter(|k| old.get(*k) != new.get(*k))
            .map(|k| {
                let show =
                    |v: Option<&serde_json::Value>| v.map_or("unset".into(), |v| v.to_string());
                format!("{k}: was {}, now {}", show(old.get(k)), show(new.get(k)))
            })
            .collect()
    }
}

/// The rows of one partition being collected.
#[derive(Debug, Clone, Default)]
pub struct PartitionData {
    /// Image embeddings, row-major (empty when images are not embedded).
    pub image: Vec<f32>,
    /// Text embeddings, row-major (empty when texts are not embedded).
    pub text: Vec<f32>,
    /// One metadata row per embedding row.
    pub rows: Vec<MetadataRow>,
}

impl PartitionData {
    /// Append one sample.
    pub fn push(&mut self, image: Option<&[f32]>, text: Option<&[f32]>, row: MetadataRow) {
        self.image.extend_from_slice(image.unwrap_or_default());
        self.text.extend_from_slice(text.unwrap_or_default());
        self.rows.push(row);
    }

    /// Number of samples collected.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether no sample was collected.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

/// An output folder being written (or resumed).
#[derive(Debug)]
pub struct EmbeddingOutput {
    layout: Layout,
    manifest: Manifest,
    complete: BTreeSet<usize>,
}

impl EmbeddingOutput {
    /// Prepare `root` for a run with `manifest`: a new folder is created and the manifest written; a folder
    /// with the same manifest is resumed (its complete partitions are kept, leftovers of an interrupted write
    /// removed); a folder with another manifest, or with partitions and no manifest, is refused.
    pub fn create_or_resume(root: &Path, manifest: Manifest) -> Result<Self, RetrievalError> {
        Self::create_or_resume_share(root, manifest, Share::ALL)
    }

    /// [`EmbeddingOutput::create_or_resume`] for one of several workers writing the same folder at the same
    /// time: only the leftovers of the partitions `share` owns are removed, since another worker's
    /// temporary files may be writes in progress.
    pub fn create_or_resume_share(
        root: &Path,
        manifest: Manifest,
        share: Share,
    ) -> Result<Self, RetrievalError> {
        let layout = Layout::new(root);
        let mut dirs = vec![root.join(METADATA_DIR)];
        if manifest.image_embeddings {
            dirs.push(root.join(IMG_DIR));
        }
        if manifest.text_embeddings {
            dirs.push(root.join(TEXT_DIR));
        }
        for dir in &dirs {
            std::fs::create_dir_all(dir).map_err(|e| RetrievalError::io(dir, e))?;
        }
        let manifest_path = layout.manifest_path();
        let check = |bytes: &[u8]| -> Result<(), RetrievalError> {
            let old: Manifest = serde_json::from_slice(bytes).map_err(|e| RetrievalError::Io {
                path: manifest_path.clone(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            })?;
            let differences = old.differences(&manifest);
            if differences.is_empty() {
                Ok(())
            } else {
                Err(RetrievalError::SettingsChanged {
                    path: manifest_path.clone(),
                    differences,
                })
            }
        };
        match std::fs::read(&manifest_path) {
            Ok(bytes) => check(&bytes)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if !layout.partitions()?.is_empty() {
                    // A worker started at the same time may have written the manifest and a partition since.
                    if let Ok(bytes) = std::fs::read(&manifest_path) {
                        check(&bytes)?;
                        return Self::opened(layout, manifest, share);
                    }
                    return Err(RetrievalError::ForeignOutput {
                        path: root.to_path_buf(),
                    });
                }
                coca_fs::write_atomic(&manifest_path, |w| -> Result<(), RetrievalError> {
                    serde_json::to_writer_pretty(&mut *w, &manifest)
                        .map_err(|e| RetrievalError::io(&manifest_path, e.into()))?;
                    w.write_all(b"\n")
                        .map_err(|e| RetrievalError::io(&manifest_path, e))
                })?;
            }
            Err(e) => return Err(RetrievalError::io(manifest_path, e)),
        }
        Self::opened(layout, manifest, share)
    }

    /// The folder once its manifest is in place: leftovers removed, complete partitions found.
    fn opened(layout: Layout, manifest: Manifest, share: Share) -> Result<Self, RetrievalError> {
        layout.remove_stale_temporaries(share)?;
        let complete = layout
            .partitions()?
            .into_iter()
            .filter(|&p| {
                (!manifest.image_embeddings || layout.image_path(p).is_file())
                    && (!manifest.text_embeddings || layout.text_path(p).is_file())
            })
            .collect();
        Ok(Self {
            layout,
            manifest,
            complete,
        })
    }

    /// The folder's paths.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The run's manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Whether partition `p` was already written completely.
    pub fn is_complete(&self, partition: usize) -> bool {
        self.complete.contains(&partition)
    }

    /// The partitions written completely so far.
    pub fn complete(&self) -> &BTreeSet<usize> {
        &self.complete
    }

    /// Rows in a written partition (from its metadata footer).
    pub fn rows_in(&self, partition: usize) -> Result<usize, RetrievalError> {
        crate::metadata::metadata_rows(&self.layout.metadata_path(partition))
    }

    /// Write partition `p`: the embedding files first, then the metadata that marks it complete. Each file is
    /// written to a temporary name and renamed, so an interruption leaves no partial file under a final name.
    pub fn write_partition(
        &mut self,
        partition: usize,
        data: &PartitionData,
    ) -> Result<(), RetrievalError> {
        let m = &self.manifest;
        let n = data.rows.len();
        let expect = |enabled: bool| if enabled { n * m.dim } else { 0 };
        assert_eq!(data.image.len(), expect(m.image_embeddings), "image rows");
        assert_eq!(data.text.len(), expect(m.text_embeddings), "text rows");
        let write = |path: &Path, values: &[f32]| {
            coca_fs::write_atomic(path, |w| -> Result<(), RetrievalError> {
                write_npy(w, values, n, m.dim, m.dtype).map_err(|e| RetrievalError::io(path, e))
            })
        };
        if m.image_embeddings {
            write(&self.layout.image_path(partition), &data.image)?;
        }
        if m.text_embeddings {
            write(&self.layout.text_path(partition), &data.text)?;
        }
        let meta = self.layout.metadata_path(partition);
        coca_fs::write_atomic(&meta, |w| write_metadata(w, &data.rows, &meta))?;
        self.complete.insert(partition);
        Ok(())
    }
}
