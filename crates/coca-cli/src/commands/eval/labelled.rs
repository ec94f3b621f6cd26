//! Labelled images for zero-shot classification, in CLIP_benchmark's two layouts: an image folder (one
//! subfolder per class, torchvision's `ImageFolder`) and WebDataset shards with a `.cls` label per sample.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use coca_data::{class_folder_names, ClassFolders, ItemKind, Sample, ShardRecord, ShardRecords};

/// CLIP_benchmark's class-name file in a dataset folder.
pub const CLASSNAMES_FILE: &str = "classnames.txt";
/// CLIP_benchmark's template file in a dataset folder.
pub const TEMPLATES_FILE: &str = "zeroshot_classification_templates.txt";

/// Where the labelled images are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// One subfolder per class; classes are the subfolder names in sorted order.
    ImageFolder {
        /// The folder holding the class folders.
        root: PathBuf,
        /// The class folders' names, sorted (the label of an image is the index of its folder).
        classes: Vec<String>,
    },
    /// WebDataset tar shards whose samples hold an image and a `.cls` integer label.
    Shards(Vec<PathBuf>),
}

/// A dataset found under `--dataset-root`.
#[derive(Debug, Clone)]
pub struct LabelledDataset {
    /// The folder given (where classnames.txt and the templates file are looked for).
    pub root: PathBuf,
    /// Its layout.
    pub layout: Layout,
}

impl LabelledDataset {
    /// Find the dataset: `root/<split>` when it exists (CLIP_benchmark's `test/` folder of WebDataset
    /// datasets), else `root`; shards are `*.tar` files directly in that folder, or `root` itself is a tar
    /// file or a brace pattern. `split` given explicitly must exist.
    pub fn discover(root: &Path, split: Option<&str>) -> Result<Self> {
        let text = root.to_string_lossy();
        if text.contains('{') || (root.is_file() && text.ends_with(".tar")) {
            let shards = coca_data::expand_braces(&text)
                .map_err(|e| anyhow::anyhow!("bad shard pattern `{text}`: {e}"))?;
            let base = Path::new(shards.first().map_or("", |s| s.as_str()))
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default();
            return Ok(Self {
                root: base,
                layout: Layout::Shards(shards.into_iter().map(PathBuf::from).collect()),
            });
        }
        if !root.exists() {
            bail!("{}: dataset root does not exist", root.display());
        }
        if !root.is_dir() {
            bail!(
                "{}: dataset root is not a folder, a .tar shard or a shard pattern",
                root.display()
            );
        }
        let dir = match split {
            Some(s) if root.join(s).is_dir() => root.join(s),
            Some(s) => bail!(
                "{}: unknown split `{s}`: there is no folder {} (subfolders: {})",
                root.display(),
                root.join(s).display(),
                subfolders(root)?.join(", ")
            ),
            None if root.join("test").is_dir() && has_tars(&root.join("test"))? => {
                root.join("test")
            }
            None => root.to_path_buf(),
        };
        let tars = tar_files(&dir)?;
        let layout = if !tars.is_empty() {
            Layout::Shards(tars)
        } else {
            let classes = subfolders(&dir)?;
            if classes.is_empty() {
                bail!(
                    "{}: no class folders and no .tar shards: expected one subfolder of images per class \
                     (an image folder) or WebDataset shards",
                    dir.display()
                );
            }
            Layout::ImageFolder { root: dir, classes }
        };
        Ok(Self {
            root: root.to_path_buf(),
            layout,
        })
    }

    /// A file of CLIP_benchmark's layout in the dataset root, when it exists.
    pub fn file(&self, name: &str) -> Option<PathBuf> {
        let path = self.root.join(name);
        path.is_file().then_some(path)
    }

    /// Every labelled image of an image folder, listed up front (`None` for shards, which stream). Images
    /// are found below each class folder recursively, as torchvision's `ImageFolder` finds them (coca-data's
    /// [`ClassFolders`], which `coca probe` reads too).
    pub fn listed(&self) -> Result<Option<Vec<(Sample, usize)>>> {
        let Layout::ImageFolder { root, classes } = &self.layout else {
            return Ok(None);
        };
        let data = ClassFolders::open(root, ItemKind::Images, Some(classes))?;
        let samples = data.items.into_iter().map(|item| {
            let label = item.label;
            (item.into_sample(root), label)
        });
        Ok(Some(samples.collect()))
    }

    /// The labelled images of shards, streamed; `classes` bounds the labels.
    pub fn stream_shards(
        &self,
        classes: usize,
    ) -> Option<impl Iterator<Item = Result<(Sample, usize)>>> {
        let Layout::Shards(shards) = &self.layout else {
            return None;
        };
        Some(ShardRecords::from_paths(shards.clone()).map(move |r| labelled_record(r?, classes)))
    }
}

/// A shard sample with its `.cls` label (decimal text, as CLIP_benchmark's shards store it).
fn labelled_record(record: ShardRecord, classes: usize) -> Result<(Sample, usize)> {
    let name = record.label("cls");
    let Some(bytes) = record.file("cls") else {
        bail!(
            "{}: sample `{}` has no .cls label",
            record.shard.display(),
            record.key
        );
    };
    let text = std::str::from_utf8(bytes).unwrap_or_default().trim();
    let label: usize = text
        .parse()
        .with_context(|| format!("{name}: the label {text:?} is not a class index"))?;
    if label >= classes {
        bail!("{name}: label {label} is out of range for the {classes} class names");
    }
    let sample = record.into_sample()?;
    Ok((sample, label))
}

/// Names of the subfolders of `dir`, sorted as torchvision's `ImageFolder` sorts its classes.
fn subfolders(dir: &Path) -> Result<Vec<String>> {
    Ok(class_folder_names(dir)?)
}

fn tar_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut tars = Vec::new();
    for entry in
        std::fs::read_dir(dir).with_context(|| format!("{}: cannot list", dir.display()))?
    {
        let path = entry
            .with_context(|| format!("{}: cannot list", dir.display()))?
            .path();
        if path.is_file() && path.extension().is_some_and(|e| e == "tar") {
            tars.push(path);
        }
    }
    tars.sort();
    Ok(tars)
}

fn has_tars(dir: &Path) -> Result<bool> {
    Ok(!tar_files(dir)?.is_empty())
}

/// Class names from folder names, as CLIP_benchmark reads unnamed folders: `_` becomes a space.
pub fn names_from_folders(classes: &[String]) -> Vec<String> {
    classes.iter().map(|c| c.replace('_', " ")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_folders_sorted_and_split_folders() {
        let dir = tempfile::tempdir().unwrap();
        for class in ["b_class", "a", "c"] {
            std::fs::create_dir_all(dir.path().join("test").join(class)).unwrap();
        }
        // `test/` has no tars: without --split, the root itself is the image folder (class `test`).
        let d = LabelledDataset::discover(dir.path(), None).unwrap();
        assert!(matches!(&d.layout, Layout::ImageFolder { classes, .. } if classes == &["test"]));
        let d = LabelledDataset::discover(dir.path(), Some("test")).unwrap();
        let Layout::ImageFolder { classes, .. } = &d.layout else {
            panic!("{:?}", d.layout)
        };
        assert_eq!(classes, &["a", "b_class", "c"]);
        assert_eq!(names_from_folders(classes), ["a", "b class", "c"]);
        let err = LabelledDataset::discover(dir.path(), Some("val")).unwrap_err();
        assert!(
            format!("{err:#}").contains("unknown split `val`"),
            "{err:#}"
        );
        // A class folder without images.
        let err = d.listed().unwrap_err();
        assert!(
            format!("{err:#}").contains("the class folder `a` has no images"),
            "{err:#}"
        );
    }
}
