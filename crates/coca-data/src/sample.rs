//! One item of a collection.

use std::path::{Path, PathBuf};

/// Where a sample's image is: a file to read, or bytes already read (from a tar shard).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageData {
    /// An image file.
    Path(PathBuf),
    /// Encoded image bytes (JPEG, PNG, ...), with a name for messages such as `shard.tar:000123.jpg`.
    Bytes {
        /// Names the image in messages.
        name: String,
        /// The encoded image.
        data: Vec<u8>,
    },
}

impl ImageData {
    /// A name for messages: the path, or the name given to the bytes.
    pub fn name(&self) -> String {
        match self {
            ImageData::Path(p) => p.display().to_string(),
            ImageData::Bytes { name, .. } => name.clone(),
        }
    }

    /// The file path, for file-based samples.
    pub fn path(&self) -> Option<&Path> {
        match self {
            ImageData::Path(p) => Some(p),
            ImageData::Bytes { .. } => None,
        }
    }
}

/// An image with its optional caption.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// Identifies the sample within its collection: the path relative to the folder, the path as listed, or the
    /// WebDataset key (`00000123`).
    pub key: String,
    /// The image.
    pub image: ImageData,
    /// The caption, with surrounding whitespace removed; `None` when there is none or it is blank.
    pub text: Option<String>,
}

/// Trim a caption; blank captions count as absent.
pub(crate) fn clean_caption(text: &str) -> Option<String> {
    let trimmed = text.trim();
    (!trimmed.is_empty()).then(|| trimmed.to_string())
}
