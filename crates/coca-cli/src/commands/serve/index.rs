//! `--index DIR`: search over a folder written by `coca embed --output-dir`, through the same
//! [`coca_retrieval::Index`] that `coca search` uses, and thumbnails of the images it lists.
//!
//! Every result is named by its id, its place in the index (partitions in order, rows in order). A thumbnail is
//! asked for by that id, and the file it shows is the one the index's metadata records for the id: no client
//! ever names a path, so no request can reach a file the index does not list. Files are decoded and re-encoded,
//! so even a listed file that is not an image gives nothing but an error.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use coca_image::image::codecs::jpeg::JpegEncoder;
use coca_image::{resize_region, DecodeLimits, DecodedImage, Interpolation};
use coca_retrieval::{read_metadata, Hit, Index, Layout, Modality};
use serde_json::{json, Value};

/// One row of the index, as results and thumbnails need it.
struct Entry {
    caption: Option<String>,
    key: Option<String>,
    /// The image file the metadata records (relative paths resolved at startup); `None` for rows without one
    /// (videos, shard samples recorded by their key).
    file: Option<PathBuf>,
}

/// An embedding folder opened once at startup, with its metadata in memory.
pub struct SearchIndex {
    index: Index,
    entries: Vec<Entry>,
    /// The id of each partition's first row.
    offsets: BTreeMap<usize, usize>,
}

impl SearchIndex {
    /// Open `dir` and read the metadata of every partition. Relative image paths are resolved against the
    /// current directory, where `coca embed` recorded them from.
    pub fn open(dir: &Path) -> Result<Self> {
        let index = Index::open(dir)?;
        let layout = Layout::new(dir);
        let cwd = std::env::current_dir().context("reading the current directory")?;
        let mut entries = Vec::new();
        let mut offsets = BTreeMap::new();
        for &partition in index.partitions() {
            offsets.insert(partition, entries.len());
            for row in read_metadata(&layout.metadata_path(partition))? {
                let file = match &row.image_path {
                    Some(p) if !row.video => Some(cwd.join(p)),
                    _ => None,
                };
                entries.push(Entry {
                    caption: row.caption,
                    key: row.key,
                    file,
                });
            }
        }
        Ok(Self {
            index,
            entries,
            offsets,
        })
    }

    /// Rows in the index.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the index holds embeddings of this kind.
    pub fn has(&self, kind: Modality) -> bool {
        self.index.has(kind)
    }

    /// What a query is compared with when the request does not say: the images when the index has them.
    pub fn default_against(&self) -> Modality {
        if self.has(Modality::Image) {
            Modality::Image
        } else {
            Modality::Text
        }
    }

    /// The `k` rows most similar to `query`, best first, as `{"rank", "id", "score", "caption", "key",
    /// "thumbnail"}` (the thumbnail's URL, or null when the row has no image file).
    pub fn search(&self, query: &[f32], against: Modality, k: usize) -> Result<Vec<Value>> {
        let hits = self.index.search(query, against, k)?;
        Ok(hits
            .iter()
            .enumerate()
            .map(|(i, hit)| self.result(i + 1, hit))
            .collect())
    }

    fn result(&self, rank: usize, hit: &Hit) -> Value {
        let id = self.offsets.get(&hit.partition).map(|o| o + hit.row);
        let entry = id.and_then(|id| self.entries.get(id));
        json!({
            "rank": rank,
            "id": id,
            "score": hit.score,
            "caption": entry.and_then(|e| e.caption.as_deref()),
            "key": entry.and_then(|e| e.key.as_deref()),
            "thumbnail": entry
                .filter(|e| e.file.is_some())
                .and(id)
                .map(|id| format!("/thumbnail/{id}")),
        })
    }

    /// The image file of row `id`, when the index lists one.
    pub fn file(&self, id: usize) -> Option<&Path> {
        self.entries.get(id)?.file.as_deref()
    }
}

/// Why a thumbnail could not be made.
#[derive(Debug)]
pub enum ThumbnailError {
    /// The file is larger than the limit (bytes).
    TooLarge(u64),
    /// The file cannot be read or decoded.
    Unreadable(String),
}

/// A JPEG of the image at `path`, scaled down (never up) to fit a `size` × `size` square, reading at most
/// `max_bytes` of the file and decoding it within `limits`.
pub fn thumbnail(
    path: &Path,
    size: u32,
    max_bytes: u64,
    limits: &DecodeLimits,
) -> Result<Vec<u8>, ThumbnailError> {
    let unreadable = |e: &dyn std::fmt::Display| ThumbnailError::Unreadable(e.to_string());
    let file = std::fs::File::open(path).map_err(|e| unreadable(&e))?;
    let mut bytes = Vec::new();
    // One byte past the limit tells a file over it from one at it, without reading the rest.
    file.take(max_bytes + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| unreadable(&e))?;
    if bytes.len() as u64 > max_bytes {
        return Err(ThumbnailError::TooLarge(max_bytes));
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let decoded =
        DecodedImage::decode_limited(&bytes, &name, limits).map_err(|e| unreadable(&e))?;
    drop(bytes);
    let rgb = decoded.to_rgb();
    drop(decoded);
    let (w, h) = rgb.dimensions();
    let scale = (f64::from(size) / f64::from(w.max(h).max(1))).min(1.0);
    let out = (
        ((f64::from(w) * scale).round() as u32).max(1),
        ((f64::from(h) * scale).round() as u32).max(1),
    );
    let small = resize_region(&rgb, (0, 0, w, h), out, Interpolation::Bilinear);
    let mut jpeg = Vec::new();
    JpegEncoder::new_with_quality(&mut jpeg, 85)
        .encode_image(&small)
        .map_err(|e| unreadable(&e))?;
    Ok(jpeg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbnails_fit_the_square_and_keep_the_aspect() {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
        let jpeg = thumbnail(
            &root.join("fixtures/images/sources/chelsea.png"),
            64,
            1 << 24,
            &DecodeLimits::default(),
        )
        .expect("a thumbnail");
        let small = coca_image::decode_rgb(&jpeg, "thumbnail").expect("a JPEG");
        let (w, h) = small.dimensions();
        assert_eq!(w.max(h), 64);
        assert!(w != h, "chelsea.png is not square: {w}x{h}");
    }

    #[test]
    fn thumbnails_refuse_files_over_the_limit_and_non_images() {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
        let image = root.join("fixtures/images/sources/chelsea.png");
        assert!(matches!(
            thumbnail(&image, 64, 100, &DecodeLimits::default()),
            Err(ThumbnailError::TooLarge(100))
        ));
        assert!(matches!(
            thumbnail(
                &root.join("Cargo.toml"),
                64,
                1 << 24,
                &DecodeLimits::default()
            ),
            Err(ThumbnailError::Unreadable(_))
        ));
    }
}
