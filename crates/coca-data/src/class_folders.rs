//! Labelled datasets stored as one subfolder per class (torchvision's `ImageFolder` layout), for zero-shot
//! classification benchmarks and frozen-feature probes.
//!
//! Classes are the subfolder names in sorted order, and an item's label is the index of its folder. Images
//! are found below a class folder recursively, as `ImageFolder` finds them; videos are the class folder's
//! direct entries that are videos ([`crate::video::video_kind`]: frame folders, GIFs, video files), since a
//! frame folder is one item and its images are not items of their own.

use std::path::{Path, PathBuf};

use walkdir::WalkDir;

use crate::error::DataError;
use crate::folder::is_image_path;

/// What the items of the class folders are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemKind {
    /// Image files, anywhere below the class folder.
    Images,
    /// Videos directly in the class folder: frame folders, GIFs, video files.
    Videos,
}

impl ItemKind {
    /// What a class folder must hold, for error messages.
    fn expected(self) -> &'static str {
        match self {
            ItemKind::Images => "images (jpg, jpeg, png, webp, gif, bmp, tif, tiff)",
            ItemKind::Videos => "videos (frame folders, .gif, or video files)",
        }
    }
}

/// One labelled item: an image or a video.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelledItem {
    /// The file (or, for a video, possibly a frame folder).
    pub path: PathBuf,
    /// Index into [`ClassFolders::classes`].
    pub label: usize,
}

impl LabelledItem {
    /// The item as an uncaptioned [`crate::Sample`] keyed by its path below `root` (the dataset's folder).
    pub fn into_sample(self, root: &Path) -> crate::Sample {
        let key = self
            .path
            .strip_prefix(root)
            .unwrap_or(&self.path)
            .to_string_lossy()
            .into_owned();
        crate::Sample {
            key,
            image: crate::ImageData::Path(self.path),
            text: None,
        }
    }
}

/// A class-folder dataset, listed up front.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassFolders {
    /// The folder holding the class folders.
    pub root: PathBuf,
    /// Class names. Without a given class list, the subfolder names in sorted order.
    pub classes: Vec<String>,
    /// The items, class folder by class folder (in sorted folder order), each folder's items in path order.
    pub items: Vec<LabelledItem>,
}

impl ClassFolders {
    /// Read `root/<class>/...`. Every class folder must hold at least one item. With `known` classes, every
    /// folder must be one of them and its items take that class's index (a validation folder read against the
    /// training classes; classes without a folder simply have no items).
    pub fn open(root: &Path, kind: ItemKind, known: Option<&[String]>) -> Result<Self, DataError> {
        let names = class_folder_names(root)?;
        if names.is_empty() {
            return Err(DataError::NoClassFolders {
                path: root.to_path_buf(),
                expected: kind.expected(),
            });
        }
        let classes = match known {
            Some(known) => {
                if let Some(unknown) = names.iter().find(|n| !known.contains(n)) {
                    return Err(DataError::UnknownClass {
                        path: root.to_path_buf(),
                        class: unknown.clone(),
                        known: known.to_vec(),
                    });
                }
                known.to_vec()
            }
            None => names.clone(),
        };
        let mut items = Vec::new();
        for name in &names {
            let label = classes
                .iter()
                .position(|c| c == name)
                .expect("every folder name is a class");
            let dir = root.join(name);
            let found = match kind {
                ItemKind::Images => images_below(&dir)?,
                ItemKind::Videos => videos_in(&dir)?,
            };
            if found.is_empty() {
                return Err(DataError::EmptyClass {
                    path: dir,
                    class: name.clone(),
                    expected: kind.expected(),
                });
            }
            items.extend(found.into_iter().map(|path| LabelledItem { path, label }));
        }
        Ok(Self {
            root: root.to_path_buf(),
            classes,
            items,
        })
    }
}

/// The names of the subfolders of `dir`, sorted as torchvision's `ImageFolder` sorts its classes (by their
/// bytes). Fails when `dir` is not a readable folder.
pub fn class_folder_names(dir: &Path) -> Result<Vec<String>, DataError> {
    let meta = std::fs::metadata(dir).map_err(|e| DataError::io(dir, e))?;
    if !meta.is_dir() {
        return Err(DataError::NotADirectory {
            path: dir.to_path_buf(),
        });
    }
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))? {
        let entry = entry.map_err(|e| DataError::io(dir, e))?;
        // `Path::is_dir` follows symlinks, so a linked class folder counts (as in torchvision).
        if entry.path().is_dir() {
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// Every image file below `dir`, recursively, in path order (following symlinks).
fn images_below(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let mut found = Vec::new();
    for entry in WalkDir::new(dir).follow_links(true).sort_by_file_name() {
        let entry = entry.map_err(|e| DataError::Walk {
            path: e.path().unwrap_or(dir).to_path_buf(),
            detail: e.to_string(),
        })?;
        if entry.file_type().is_file() && is_image_path(entry.path()) {
            found.push(entry.into_path());
        }
    }
    Ok(found)
}

/// The videos directly in `dir`, in path order.
fn videos_in(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| DataError::io(dir, e))?
        .map(|e| e.map(|e| e.path()).map_err(|e| DataError::io(dir, e)))
        .collect::<Result<_, _>>()?;
    found.retain(|p| crate::video::video_kind(p).is_some());
    found.sort();
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(path: &Path) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b"x").unwrap();
    }

    #[test]
    fn classes_are_sorted_and_images_found_recursively() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        touch(&root.join("b_dog/2.png"));
        touch(&root.join("b_dog/1.JPG"));
        touch(&root.join("b_dog/sub/0.webp"));
        touch(&root.join("b_dog/notes.txt"));
        touch(&root.join("a_cat/x.gif"));
        touch(&root.join("readme.md"));
        let data = ClassFolders::open(root, ItemKind::Images, None).unwrap();
        assert_eq!(data.classes, ["a_cat", "b_dog"]);
        let listed: Vec<(String, usize)> = data
            .items
            .iter()
            .map(|i| {
                let rel = i.path.strip_prefix(root).unwrap();
                (rel.to_string_lossy().into_owned(), i.label)
            })
            .collect();
        assert_eq!(
            listed,
            [
                ("a_cat/x.gif".to_string(), 0),
                ("b_dog/1.JPG".to_string(), 1),
                ("b_dog/2.png".to_string(), 1),
                ("b_dog/sub/0.webp".to_string(), 1),
            ]
        );
    }

    #[test]
    fn videos_are_the_direct_entries() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        touch(&root.join("wave/a.gif"));
        touch(&root.join("wave/b/frame_001.png"));
        touch(&root.join("wave/c.avi"));
        touch(&root.join("wave/still.png"));
        let data = ClassFolders::open(root, ItemKind::Videos, None).unwrap();
        let names: Vec<_> = data
            .items
            .iter()
            .map(|i| i.path.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["a.gif", "b", "c.avi"]);
    }

    #[test]
    fn known_classes_give_the_labels_and_unknown_or_empty_folders_fail() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        touch(&root.join("cat/1.png"));
        touch(&root.join("dog/1.png"));
        let known: Vec<String> = ["dog", "cat", "bird"].map(String::from).to_vec();
        let data = ClassFolders::open(root, ItemKind::Images, Some(&known)).unwrap();
        assert_eq!(data.classes, known);
        assert_eq!(
            data.items.iter().map(|i| i.label).collect::<Vec<_>>(),
            [1, 0]
        );
        let err = ClassFolders::open(root, ItemKind::Images, Some(&known[..1])).unwrap_err();
        assert!(
            err.to_string().contains("class folder `cat` is not one of"),
            "{err}"
        );

        std::fs::create_dir(root.join("empty")).unwrap();
        let err = ClassFolders::open(root, ItemKind::Images, None).unwrap_err();
        assert!(
            err.to_string()
                .contains("class folder `empty` has no images"),
            "{err}"
        );
        let empty = tempfile::tempdir().unwrap();
        let err = ClassFolders::open(empty.path(), ItemKind::Videos, None).unwrap_err();
        assert!(err.to_string().contains("no class folders"), "{err}");
        let err = ClassFolders::open(&root.join("cat/1.png"), ItemKind::Images, None).unwrap_err();
        assert!(matches!(err, DataError::NotADirectory { .. }), "{err}");
    }
}
