//! Every image under a folder, recursively, in a stable order.

use std::path::{Path, PathBuf};

use walkdir::WalkDir;

use crate::caption::sibling_caption;
use crate::error::DataError;
use crate::sample::{ImageData, Sample};

/// File extensions read as images (compared case-insensitively).
pub const IMAGE_EXTENSIONS: [&str; 8] = ["jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff"];

/// Whether `path` has one of [`IMAGE_EXTENSIONS`].
pub fn is_image_path(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|ext| {
            IMAGE_EXTENSIONS
                .iter()
                .any(|known| ext.eq_ignore_ascii_case(known))
        })
}

/// Walks a folder (following symlinks, entries sorted by name so every run sees the same order) and yields
/// each image with the caption of its sibling `.txt` file; [`FolderSource::including_videos`] adds video files.
pub struct FolderSource {
    root: PathBuf,
    walk: walkdir::IntoIter,
    videos: bool,
}

impl FolderSource {
    /// Start walking `dir`; fails if it does not exist or is not a directory.
    pub fn new(dir: impl AsRef<Path>) -> Result<Self, DataError> {
        let root = dir.as_ref().to_path_buf();
        let meta = std::fs::metadata(&root).map_err(|e| DataError::io(&root, e))?;
        if !meta.is_dir() {
            return Err(DataError::NotADirectory { path: root });
        }
        let walk = WalkDir::new(&root)
            .follow_links(true)
            .sort_by_file_name()
            .into_iter();
        Ok(Self {
            root,
            walk,
            videos: false,
        })
    }

    /// Also yield video files ([`crate::video::VIDEO_EXTENSIONS`]: MP4, AVI, ...) as samples, for callers that
    /// embed videos (GIFs are yielded either way, being images too). Subfolders stay folders to walk: a folder
    /// of frames inside a collection is read as its images, not as one video, since nothing tells a folder of
    /// frames from a folder of photos.
    pub fn including_videos(mut self) -> Self {
        self.videos = true;
        self
    }

    fn wanted(&self, path: &Path) -> bool {
        is_image_path(path) || (self.videos && crate::video::is_video_file(path))
    }

    fn sample(&self, path: PathBuf) -> Result<Sample, DataError> {
        let text = sibling_caption(&path)?;
        let key = path
            .strip_prefix(&self.root)
            .unwrap_or(&path)
            .to_string_lossy()
            .into_owned();
        Ok(Sample {
            key,
            image: ImageData::Path(path),
            text,
        })
    }
}

impl Iterator for FolderSource {
    type Item = Result<Sample, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            match self.walk.next()? {
                Ok(entry) => {
                    if entry.file_type().is_file() && self.wanted(entry.path()) {
                        return Some(self.sample(entry.into_path()));
                    }
                }
                Err(e) => {
                    let path = e.path().unwrap_or(&self.root).to_path_buf();
                    return Some(Err(DataError::Walk {
                        path,
                        detail: e.to_string(),
                    }));
                }
            }
        }
    }
}
