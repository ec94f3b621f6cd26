//! Frozen features of a dataset: the encoder run once, its outputs cached on disk.
//!
//! Per item, two things are kept:
//! - `tokens` (N, T, W): the image tower's tokens exactly as the model's own attentional pooler reads them
//!   ([`coca_model::vision::VisionTower::pooler_context`]), the paper's "frozen ViT output tokens"; for a video
//!   the tokens of its sampled frames, concatenated along the sequence axis (T = frames × tokens per frame);
//! - `embeddings` (N, E): the pooled contrastive embedding, L2-normalised (for a video: the mean over its
//!   frames, normalised again).
//!
//! An item that cannot be read (a missing, truncated or corrupt image, one over the pixel limit, an unreadable
//! video) is skipped: logged once naming it and the reason, and counted; the features hold the other items.
//!
//! A cache file is `<dir>/probe-<key>.safetensors` with `tokens` (stored as f16: half the disk and memory,
//! far below what a probe can notice), `embeddings` (f32), `labels` (u32) and `items` (u32, the index of each
//! row's item in the dataset, so that skipped items have no row), and in its metadata the skip messages,
//! written atomically. A rerun from the cache reports the same skips. The key is a
//! SHA-256 over a format version, the checkpoint's identity (canonical path, size, modification time: see
//! `coca_zeroshot::cache`), the model config, the precision, the frame count for videos, and every item's
//! path, label, size and modification time (each frame's for frame folders). Changing any of them, or touching
//! any image, gives a new key; a file that is unreadable or does not fit its key is rebuilt.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Instant, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use coca_checkpoint::Checkpoint;
use coca_data::LabelledItem;
use coca_image::PreprocessConfig;
use coca_model::nn::ops::l2_normalize;
use coca_model::{Coca, CocaConfig};
use sha2::{Digest, Sha256};

use crate::commands::embed::progress::Skipped;
use crate::video_input::{load_video, mean_embedding};

/// Bumped whenever the extraction or the file layout changes, so old files stop matching.
const FORMAT_VERSION: &str = "coca probe features v2";
const KEY_METADATA: &str = "coca_probe_key";
/// Metadata entry with the messages of the skipped items (a JSON list of strings).
const SKIPPED_METADATA: &str = "coca_probe_skipped";

/// Features of a list of items, in memory (f32, CPU).
#[derive(Debug, Clone)]
pub struct Features {
    /// (N, T, W) encoder tokens.
    pub tokens: Tensor,
    /// (N, E) normalised embeddings.
    pub embeddings: Tensor,
    /// Class index of each item.
    pub labels: Vec<usize>,
}

impl Features {
    /// The rows `indices` of every array.
    pub fn select(&self, indices: &[usize]) -> Result<Self> {
        let idx = Tensor::from_vec(
            indices.iter().map(|&i| i as u32).collect::<Vec<_>>(),
            indices.len(),
            &Device::Cpu,
        )?;
        Ok(Self {
            tokens: self.tokens.index_select(&idx, 0)?,
            embeddings: self.embeddings.index_select(&idx, 0)?,
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
        })
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.labels.len()
    }
}

/// What identifies the features of one dataset: everything they depend on.
#[derive(Debug, Clone)]
pub struct FeatureSpec<'a> {
    /// The checkpoint file.
    pub weights: &'a Path,
    /// The model config.
    pub config: &'a CocaConfig,
    /// What the model computes in ([`coca_pipeline::Compute::tag`]): the dtype, or the packing of the weights.
    pub compute: &'a str,
    /// Frames per video; `None` for images.
    pub frames: Option<usize>,
    /// The items.
    pub items: &'a [LabelledItem],
}

/// Modification time in ns and size of a file (0s where the file system has no time).
fn stamp(path: &Path) -> Result<(u64, u128)> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let modified = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    Ok((meta.len(), modified))
}

/// The cache key of `spec` (SHA-256, hex).
pub fn cache_key(spec: &FeatureSpec) -> Result<String> {
    let mut hasher = Sha256::new();
    // Length-prefixed fields: no two different inputs give the same byte stream.
    let mut field = |bytes: &[u8]| {
        hasher.update((bytes.len() as u64).to_le_bytes());
        hasher.update(bytes);
    };
    field(FORMAT_VERSION.as_bytes());
    let checkpoint = coca_zeroshot::cache::CheckpointIdentity::of(spec.weights)?;
    field(checkpoint.path.as_os_str().as_encoded_bytes());
    field(&checkpoint.size.to_le_bytes());
    field(&checkpoint.modified_ns.to_le_bytes());
    field(serde_json::to_string(spec.config)?.as_bytes());
    field(spec.compute.as_bytes());
    field(&(spec.frames.unwrap_or(0) as u64).to_le_bytes());
    for item in spec.items {
        let path = item
            .path
            .canonicalize()
            .unwrap_or_else(|_| item.path.clone());
        field(path.as_os_str().as_encoded_bytes());
        field(&(item.label as u64).to_le_bytes());
        let files = if path.is_dir() {
            coca_data::video::frame_files(&path)?
        } else {
            vec![path]
        };
        for file in files {
            let (size, modified) = stamp(&file)?;
            field(file.as_os_str().as_encoded_bytes());
            field(&size.to_le_bytes());
            field(&modified.to_le_bytes());
        }
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// The default cache folder: `$COCA_CACHE_DIR/probe`, else `$XDG_CACHE_HOME/coca/probe`, else
/// `$HOME/.cache/coca/probe`; `None` when none of these is set.
pub fn default_cache_dir() -> Option<PathBuf> {
    let var = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(dir) = var(coca_zeroshot::cache::CACHE_DIR_ENV) {
        return Some(dir.join("probe"));
    }
    let home = var("XDG_CACHE_HOME").or_else(|| var("HOME").map(|h| h.join(".cache")))?;
    Some(home.join("coca").join("probe"))
}

/// Where the features came from.
#[derive(Debug, Clone)]
pub struct Provenance {
    /// The cache file, when caching is on.
    pub cache: Option<PathBuf>,
    /// Whether the cache file was reused (no encoder run).
    pub reused: bool,
    /// Seconds spent extracting or loading.
    pub seconds: f64,
    /// The items that could not be read (recorded in the cache, so a reuse reports them too).
    pub skipped: Skipped,
}

/// Read the cached features of `key` for `n` items from `path`, with the record of the items skipped when
/// they were extracted, or `None` (with a warning when a file exists but is unusable).
fn read_cache(path: &Path, key: &str, n: usize) -> Option<(Features, Skipped)> {
    if !path.is_file() {
        return None;
    }
    let attempt = || -> Result<(Features, Skipped)> {
        let file = Checkpoint::open(path)?;
        if file.metadata().get(KEY_METADATA).map(String::as_str) != Some(key) {
            bail!("it was written for other inputs");
        }
        let tokens = file.get("tokens", DType::F32, &Device::Cpu)?;
        let embeddings = file.get("embeddings", DType::F32, &Device::Cpu)?;
        let labels: Vec<u32> = file.get("labels", DType::U32, &Device::Cpu)?.to_vec1()?;
        let items: Vec<u32> = file.get("items", DType::U32, &Device::Cpu)?.to_vec1()?;
        let kept = items.len();
        if tokens.dims().len() != 3
            || tokens.dim(0)? != kept
            || embeddings.dim(0)? != kept
            || labels.len() != kept
        {
            bail!("its arrays do not hold {kept} items");
        }
        // Rows are the readable items in dataset order.
        if items.windows(2).any(|w| w[0] >= w[1]) || items.last().is_some_and(|&i| i as usize >= n)
        {
            bail!("its item indices are not increasing indices of the {n} items");
        }
        let listed: Vec<String> = match file.metadata().get(SKIPPED_METADATA) {
            Some(text) => serde_json::from_str(text).context("its skip record is not a list")?,
            None => bail!("it has no skip record"),
        };
        let features = Features {
            tokens,
            embeddings,
            labels: labels.into_iter().map(|l| l as usize).collect(),
        };
        Ok((features, Skipped::from_parts(n - kept, listed)))
    };
    match attempt() {
        Ok(f) => Some(f),
        Err(e) => {
            tracing::warn!(
                "{}: cached features unusable ({e:#}); extracting again",
                path.display()
            );
            None
        }
    }
}

/// The features of `spec`'s items: from the cache in `cache_dir` when it holds them, else by running
/// `model()` (loaded only then) and writing the cache.
pub fn features(
    spec: &FeatureSpec,
    cache_dir: Option<&Path>,
    model: &mut super::LazyModel,
    batch_size: usize,
) -> Result<(Features, Provenance)> {
    let started = Instant::now();
    let key = cache_key(spec)?;
    let path = cache_dir.map(|d| d.join(format!("probe-{}.safetensors", &key[..32])));
    if let Some(path) = &path {
        if let Some((f, skipped)) = read_cache(path, &key, spec.items.len()) {
            tracing::info!("{}: reusing cached features", path.display());
            for why in skipped.listed().0 {
                tracing::warn!("skipped {why} (when the cached features were extracted)");
            }
            return Ok((
                f,
                Provenance {
                    cache: Some(path.clone()),
                    reused: true,
                    seconds: started.elapsed().as_secs_f64(),
                    skipped,
                },
            ));
        }
    }
    let model = model.get()?;
    let pre = crate::pipeline::preprocess_config(spec.config)?;
    let Extracted {
        features: f,
        items,
        skipped,
    } = extract(model, spec.items, spec.frames, &pre, batch_size)?;
    if let Some(path) = &path {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("{}: cannot create the cache folder", dir.display()))?;
        }
        let labels: Vec<u32> = f.labels.iter().map(|&l| l as u32).collect();
        let labels = Tensor::from_vec(labels, f.len(), &Device::Cpu)?;
        let items: Vec<u32> = items.iter().map(|&i| i as u32).collect();
        let items = Tensor::from_vec(items, f.len(), &Device::Cpu)?;
        let tensors = [
            ("tokens", f.tokens.to_dtype(DType::F16)?),
            ("embeddings", f.embeddings.clone()),
            ("labels", labels),
            ("items", items),
        ];
        let mut meta = BTreeMap::new();
        meta.insert(KEY_METADATA.to_string(), key.clone());
        meta.insert(
            SKIPPED_METADATA.to_string(),
            serde_json::to_string(skipped.listed().0)?,
        );
        coca_checkpoint::save_safetensors(path, tensors, None, &meta)?;
        // What training reads is what a later run will load: the f16-rounded tokens.
        let f = Features {
            tokens: f.tokens.to_dtype(DType::F16)?.to_dtype(DType::F32)?,
            ..f
        };
        return Ok((
            f,
            Provenance {
                cache: Some(path.clone()),
                reused: false,
                seconds: started.elapsed().as_secs_f64(),
                skipped,
            },
        ));
    }
    Ok((
        f,
        Provenance {
            cache: None,
            reused: false,
            seconds: started.elapsed().as_secs_f64(),
            skipped,
        },
    ))
}

/// The pooler-input tokens (B, T, W) and normalised embeddings (B, E) of preprocessed images (B, 3, S, S).
pub fn encode(model: &Coca, pixels: &Tensor) -> Result<(Tensor, Tensor)> {
    let visual = model.visual();
    let x = model.encode_image_tokens(pixels)?;
    let tokens = visual.pooler_context(&x)?;
    let embedding = l2_normalize(&visual.forward_tokens(&x)?.pooled)?;
    Ok((
        tokens.to_dtype(DType::F32)?.to_device(&Device::Cpu)?,
        embedding.to_dtype(DType::F32)?.to_device(&Device::Cpu)?,
    ))
}

/// The tokens (1, frames × T, W) and embedding (1, E) of one video.
pub fn encode_video(
    model: &Coca,
    path: &Path,
    frames: usize,
    pre: &PreprocessConfig,
) -> Result<(Tensor, Tensor)> {
    let pixels = load_video(path, frames, pre, model.device())?;
    encode_frames(model, &pixels)
}

/// The tokens (1, frames × T, W) and embedding (1, E) of one video's preprocessed frames (frames, 3, S, S).
fn encode_frames(model: &Coca, pixels: &Tensor) -> Result<(Tensor, Tensor)> {
    let (tokens, per_frame) = encode(model, pixels)?;
    let (f, t, w) = tokens.dims3()?;
    let tokens = tokens.reshape((1, f * t, w))?;
    let mean = mean_embedding(&per_frame)?;
    let e = mean.len();
    Ok((tokens, Tensor::from_vec(mean, (1, e), &Device::Cpu)?))
}

/// The features of the readable items, which those are, and the rest.
struct Extracted {
    features: Features,
    /// The index in the dataset of each feature row's item.
    items: Vec<usize>,
    skipped: Skipped,
}

/// Run the encoder over every item (images in batches, videos one by one); an item that cannot be read is
/// skipped (logged naming it and the reason, and counted), an encoder failure fails the run.
fn extract(
    model: &Coca,
    items: &[LabelledItem],
    frames: Option<usize>,
    pre: &PreprocessConfig,
    batch_size: usize,
) -> Result<Extracted> {
    let bar = crate::progress::Progress::new("encoding", Some(items.len() as u64), "items");
    let (mut tokens, mut embeddings) = (Vec::new(), Vec::new());
    let mut kept: Vec<usize> = Vec::with_capacity(items.len());
    let mut skipped = Skipped::default();
    let size = pre.image_size as usize;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    match frames {
        Some(n) => {
            for (i, item) in items.iter().enumerate() {
                bar.inc(1);
                let pixels = match load_video(&item.path, n, pre, model.device()) {
                    Ok(p) => p,
                    Err(e) => {
                        let why = format!("{}: cannot use this video: {e:#}", item.path.display());
                        skipped.skip(&bar, why);
                        continue;
                    }
                };
                let (t, e) = encode_frames(model, &pixels)?;
                tokens.push(t);
                embeddings.push(e);
                kept.push(i);
            }
        }
        None => {
            let batches = (0..items.len()).collect::<Vec<_>>();
            for chunk in batches.chunks(batch_size.max(1)) {
                let paths: Vec<&Path> = chunk.iter().map(|&i| items[i].path.as_path()).collect();
                let mut data = Vec::with_capacity(chunk.len() * 3 * size * size);
                let mut readable = Vec::with_capacity(chunk.len());
                for (&i, result) in chunk
                    .iter()
                    .zip(coca_image::preprocess_paths(&paths, pre, threads))
                {
                    match result {
                        Ok(pixels) => {
                            data.extend_from_slice(&pixels);
                            readable.push(i);
                        }
                        // The image errors start with the file's path.
                        Err(e) => skipped.skip(&bar, e.to_string()),
                    }
                }
                bar.inc(chunk.len() as u64);
                if readable.is_empty() {
                    continue;
                }
                let pixels =
                    Tensor::from_vec(data, (readable.len(), 3, size, size), model.device())?;
                let (t, e) = encode(model, &pixels)?;
                tokens.push(t);
                embeddings.push(e);
                kept.extend(readable);
            }
        }
    }
    bar.finish();
    if kept.is_empty() {
        let what = if frames.is_some() { "videos" } else { "images" };
        return Err(skipped.nothing_usable(what));
    }
    Ok(Extracted {
        features: Features {
            tokens: Tensor::cat(&tokens, 0)?,
            embeddings: Tensor::cat(&embeddings, 0)?,
            labels: kept.iter().map(|&i| items[i].label).collect(),
        },
        items: kept,
        skipped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_changes_with_the_data_the_model_and_the_frames() {
        let dir = tempfile::tempdir().unwrap();
        let weights = dir.path().join("w.safetensors");
        std::fs::write(&weights, b"weights").unwrap();
        let image = dir.path().join("a.png");
        std::fs::write(&image, b"one").unwrap();
        let config = CocaConfig::builtin("coca_ViT-B-32").unwrap();
        let items = vec![LabelledItem {
            path: image.clone(),
            label: 0,
        }];
        let spec = FeatureSpec {
            weights: &weights,
            config: &config,
            compute: "f32",
            frames: None,
            items: &items,
        };
        let key = cache_key(&spec).unwrap();
        assert_eq!(key, cache_key(&spec).unwrap(), "stable");
        assert_ne!(
            key,
            cache_key(&FeatureSpec {
                frames: Some(8),
                ..spec.clone()
            })
            .unwrap()
        );
        assert_ne!(
            key,
            cache_key(&FeatureSpec {
                compute: "int8-packed",
                ..spec.clone()
            })
            .unwrap()
        );
        let relabelled = vec![LabelledItem {
            path: image.clone(),
            label: 1,
        }];
        assert_ne!(
            key,
            cache_key(&FeatureSpec {
                items: &relabelled,
                ..spec.clone()
            })
            .unwrap()
        );
        let other = CocaConfig::builtin("coca_ViT-L-14").unwrap();
        assert_ne!(
            key,
            cache_key(&FeatureSpec {
                config: &other,
                ..spec.clone()
            })
            .unwrap()
        );
        // Rewriting an image (new size and time) invalidates.
        std::fs::write(&image, b"changed").unwrap();
        assert_ne!(key, cache_key(&spec).unwrap());
    }

    #[test]
    fn a_cache_file_is_only_read_back_for_its_own_key_with_its_skips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("probe-x.safetensors");
        let write = |items: Option<&[u32]>, skipped: Option<&str>| {
            let tokens = Tensor::ones((2, 3, 4), DType::F16, &Device::Cpu).unwrap();
            let emb = Tensor::ones((2, 5), DType::F32, &Device::Cpu).unwrap();
            let labels = Tensor::new(&[0u32, 1], &Device::Cpu).unwrap();
            let mut tensors = vec![("tokens", tokens), ("embeddings", emb), ("labels", labels)];
            if let Some(items) = items {
                tensors.push(("items", Tensor::new(items, &Device::Cpu).unwrap()));
            }
            let mut meta = BTreeMap::new();
            meta.insert(KEY_METADATA.to_string(), "k1".to_string());
            if let Some(skipped) = skipped {
                meta.insert(SKIPPED_METADATA.to_string(), skipped.to_string());
            }
            coca_checkpoint::save_safetensors(&path, tensors, None, &meta).unwrap();
        };
        // Items 0 and 2 of 3 were read; item 1 was skipped.
        write(Some(&[0, 2]), Some(r#"["b.png: truncated image"]"#));
        let (f, skipped) = read_cache(&path, "k1", 3).unwrap();
        assert_eq!(f.tokens.dims(), &[2, 3, 4]);
        assert_eq!(f.labels, vec![0, 1]);
        assert_eq!(skipped.count(), 1);
        assert_eq!(skipped.listed().0, ["b.png: truncated image"]);
        assert!(read_cache(&path, "k2", 3).is_none(), "other key");
        assert!(
            read_cache(&path, "k1", 2).is_none(),
            "fewer items than indexed"
        );
        write(Some(&[2, 0]), Some("[]"));
        assert!(read_cache(&path, "k1", 3).is_none(), "indices out of order");
        write(Some(&[0, 1]), None);
        assert!(read_cache(&path, "k1", 2).is_none(), "no skip record");
        write(None, Some("[]"));
        assert!(read_cache(&path, "k1", 2).is_none(), "no item indices");
        std::fs::write(&path, b"garbage").unwrap();
        assert!(read_cache(&path, "k1", 2).is_none(), "corrupt");
    }
}
