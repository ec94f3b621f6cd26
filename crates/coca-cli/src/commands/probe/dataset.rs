//! Labelled data for probes: a folder with one subfolder per class, and the train/validation split.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// One labelled item: an image, or a video (frame folder, GIF, video file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// The file or frame folder.
    pub path: PathBuf,
    /// Index into the class list.
    pub label: usize,
}

/// A class-folder dataset.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// Class names: the subfolder names, sorted.
    pub classes: Vec<String>,
    /// Items, class by class, each class's items sorted by name.
    pub items: Vec<Item>,
}

/// Whether an entry of a class folder is an item: an image file, or (for videos) a frame folder, a GIF or a
/// video file.
fn is_item(path: &Path, video: bool) -> bool {
    if video {
        coca_data::video::video_kind(path).is_some()
    } else {
        path.is_file() && coca_data::is_image_path(path)
    }
}

impl Dataset {
    /// Read `root/<class>/<item>`; every class folder must hold at least one item. With `classes`, the folder's
    /// classes must be among them and take their indices (a validation folder read against the training
    /// classes).
    pub fn open(root: &Path, video: bool, classes: Option<&[String]>) -> Result<Self> {
        let read = |dir: &Path| -> Result<Vec<PathBuf>> {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
                .with_context(|| format!("{}: cannot read the folder", dir.display()))?
                .map(|e| e.map(|e| e.path()))
                .collect::<std::io::Result<_>>()
                .with_context(|| format!("{}: cannot list the folder", dir.display()))?;
            entries.sort();
            Ok(entries)
        };
        if !root.is_dir() {
            bail!(
                "{}: no such folder (expected one subfolder per class)",
                root.display()
            );
        }
        let class_dirs: Vec<PathBuf> = read(root)?.into_iter().filter(|p| p.is_dir()).collect();
        if class_dirs.is_empty() {
            bail!(
                "{}: no class subfolders (expected {}/<class name>/<{}>)",
                root.display(),
                root.display(),
                if video { "video" } else { "image" }
            );
        }
        let names: Vec<String> = class_dirs
            .iter()
            .map(|d| {
                d.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        let class_list: Vec<String> = match classes {
            Some(known) => {
                if let Some(unknown) = names.iter().find(|n| !known.contains(n)) {
                    bail!(
                        "{}: class folder `{unknown}` is not a class of the training folder ({})",
                        root.display(),
                        known.join(", ")
                    );
                }
                known.to_vec()
            }
            None => names.clone(),
        };
        let mut items = Vec::new();
        for (dir, name) in class_dirs.iter().zip(&names) {
            let label = class_list
                .iter()
                .position(|c| c == name)
                .expect("checked above");
            let found: Vec<PathBuf> = read(dir)?
                .into_iter()
                .filter(|p| is_item(p, video))
                .collect();
            if found.is_empty() {
                bail!(
                    "{}: class folder `{name}` holds no {}",
                    dir.display(),
                    if video {
                        "videos (frame folders, .gif, or video files)"
                    } else {
                        "images (jpg, png, webp, gif, bmp, tif)"
                    }
                );
            }
            items.extend(found.into_iter().map(|path| Item { path, label }));
        }
        Ok(Self {
            classes: class_list,
            items,
        })
    }
}

/// Split item indices `0..labels.len()` into (train, validation), class by class: each class gives
/// `round(fraction · n)` items to validation, at least one when it has two or more and at most `n − 1`, chosen
/// by a seeded shuffle. Both lists come back sorted.
pub fn stratified_split(labels: &[usize], fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let classes = labels.iter().copied().max().map_or(0, |m| m + 1);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (mut train, mut val) = (Vec::new(), Vec::new());
    for class in 0..classes {
        let mut members: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == class).collect();
        members.shuffle(&mut rng);
        let n = members.len();
        let take = if n < 2 {
            0
        } else {
            ((fraction * n as f64).round() as usize).clamp(1, n - 1)
        };
        val.extend_from_slice(&members[..take]);
        train.extend_from_slice(&members[take..]);
    }
    train.sort_unstable();
    val.sort_unstable();
    (train, val)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_is_stratified_seeded_and_disjoint() {
        let labels: Vec<usize> = (0..30).map(|i| i % 3).collect();
        let (train, val) = stratified_split(&labels, 0.2, 7);
        assert_eq!(val.len(), 6);
        for c in 0..3 {
            assert_eq!(val.iter().filter(|&&i| labels[i] == c).count(), 2);
        }
        let mut all: Vec<usize> = train.iter().chain(&val).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..30).collect::<Vec<_>>());
        assert_eq!(
            stratified_split(&labels, 0.2, 7),
            (train.clone(), val.clone())
        );
        assert_ne!(stratified_split(&labels, 0.2, 8).1, val);
        // A class of one item stays in training; tiny fractions still validate each larger class.
        let (t, v) = stratified_split(&[0, 1, 1], 0.01, 0);
        assert_eq!((t.len(), v.len()), (2, 1));
    }

    #[test]
    fn class_folders_are_read_and_empty_ones_refused() {
        let dir = tempfile::tempdir().unwrap();
        for (class, files) in [("b_dog", 2), ("a_cat", 1)] {
            let d = dir.path().join(class);
            std::fs::create_dir(&d).unwrap();
            for i in 0..files {
                std::fs::write(d.join(format!("{i}.png")), b"x").unwrap();
            }
            std::fs::write(d.join("notes.txt"), b"x").unwrap();
        }
        let data = Dataset::open(dir.path(), false, None).unwrap();
        assert_eq!(data.classes, vec!["a_cat", "b_dog"]);
        assert_eq!(
            data.items.iter().map(|i| i.label).collect::<Vec<_>>(),
            vec![0, 1, 1]
        );
        // Read against other classes, the folder's classes take their indices.
        let known = vec!["b_dog".to_string(), "a_cat".to_string(), "c".to_string()];
        let val = Dataset::open(dir.path(), false, Some(&known)).unwrap();
        assert_eq!(
            val.items.iter().map(|i| i.label).collect::<Vec<_>>(),
            vec![1, 0, 0]
        );
        let err = Dataset::open(dir.path(), false, Some(&known[..1])).unwrap_err();
        assert!(err.to_string().contains("`a_cat` is not a class"), "{err}");

        std::fs::create_dir(dir.path().join("c_empty")).unwrap();
        let err = Dataset::open(dir.path(), false, None).unwrap_err();
        assert!(
            err.to_string().contains("`c_empty` holds no images"),
            "{err}"
        );
    }
}
