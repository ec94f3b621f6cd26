//! A disk cache of classifier matrices, so the 80 000 prompts of ImageNet × OpenAI templates are embedded
//! once per checkpoint rather than on every run.
//!
//! A cache file is `<dir>/<key>.safetensors` holding one f32 tensor `classifier` (embed_dim × classes) and
//! the full key in its metadata. The key is a SHA-256 over:
//!
//! * the checkpoint's **identity**: canonical path, size and modification time (ns). Hashing the contents
//!   would cost seconds per run for a 1 GB checkpoint, and the safetensors header alone cannot tell two
//!   fine-tunes of one architecture apart (same names, shapes and offsets). A checkpoint rewritten in place
//!   gets a new mtime and therefore a new key; copying it elsewhere only costs one rebuild.
//! * the model config (its JSON) and the compute (dtype, or packing of the weights), which change the numbers;
//! * every class name and every template (in canonical `{c}` form), in order;
//! * a format version of this crate, bumped whenever the computation changes.
//!
//! Files are written atomically ([`coca_checkpoint::save_safetensors`]); a file that cannot be read, holds the
//! wrong key or a tensor of the wrong shape, or non-finite values, is reported and rebuilt.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use candle_core::{DType, Device, Tensor};
use coca_checkpoint::Checkpoint;
use coca_model::{Coca, CocaConfig};
use sha2::{Digest, Sha256};

use crate::classifier::build_classifier_with_progress;
use crate::error::{Result, ZeroShotError};
use crate::template::Template;

/// Bumped whenever the classifier computation or the file layout changes, so old files stop matching.
const FORMAT_VERSION: &str = "coca-zeroshot classifier v1";
/// Name of the tensor in a cache file.
const TENSOR_NAME: &str = "classifier";
/// Metadata entry holding the full key.
const KEY_METADATA: &str = "coca_zeroshot_key";

/// The environment variable that overrides the default cache directory.
pub const CACHE_DIR_ENV: &str = "COCA_CACHE_DIR";

/// The default directory of classifier files: `$COCA_CACHE_DIR` if set, else `$XDG_CACHE_HOME/coca/zeroshot`,
/// else `$HOME/.cache/coca/zeroshot`; `None` when none of these variables is set.
pub fn default_cache_dir() -> Option<PathBuf> {
    let var = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(dir) = var(CACHE_DIR_ENV) {
        return Some(dir);
    }
    let cache_home =
        var("XDG_CACHE_HOME").or_else(|| var("HOME").map(|home| home.join(".cache")))?;
    Some(cache_home.join("coca").join("zeroshot"))
}

/// What identifies a checkpoint file for the cache: its canonical path, size and modification time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointIdentity {
    /// The canonical (absolute, symlink-free) path.
    pub path: PathBuf,
    /// Size in bytes.
    pub size: u64,
    /// Modification time in nanoseconds since the Unix epoch (0 where the file system has none).
    pub modified_ns: u128,
}

impl CheckpointIdentity {
    /// Stat the checkpoint file.
    pub fn of(path: &Path) -> Result<Self> {
        let io = |e: std::io::Error| ZeroShotError::Io {
            path: path.to_path_buf(),
            reason: e.to_string(),
        };
        let canonical = path.canonicalize().map_err(io)?;
        let meta = std::fs::metadata(&canonical).map_err(io)?;
        let modified_ns = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        Ok(Self {
            path: canonical,
            size: meta.len(),
            modified_ns,
        })
    }
}

/// The cache key of one classifier: a SHA-256 in hex (see the module docs for what goes in).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey(String);

impl CacheKey {
    /// Hash everything the classifier depends on.
    pub fn new(
        checkpoint: &CheckpointIdentity,
        config: &CocaConfig,
        compute: &str,
        classnames: &[String],
        templates: &[Template],
    ) -> Result<Self> {
        let mut hasher = Sha256::new();
        // Length-prefixed fields, so no two different inputs can produce the same byte stream.
        let mut field = |bytes: &[u8]| {
            hasher.update((bytes.len() as u64).to_le_bytes());
            hasher.update(bytes);
        };
        field(FORMAT_VERSION.as_bytes());
        field(checkpoint.path.as_os_str().as_encoded_bytes());
        field(&checkpoint.size.to_le_bytes());
        field(&checkpoint.modified_ns.to_le_bytes());
        let config_json = serde_json::to_string(config)
            .map_err(|e| ZeroShotError::Input(format!("model config does not serialise: {e}")))?;
        field(config_json.as_bytes());
        field(compute.as_bytes());
        field(&(classnames.len() as u64).to_le_bytes());
        for name in classnames {
            field(name.as_bytes());
        }
        field(&(templates.len() as u64).to_le_bytes());
        for template in templates {
            field(template.canonical().as_bytes());
        }
        let digest = hasher.finalize();
        Ok(Self(digest.iter().map(|b| format!("{b:02x}")).collect()))
    }

    /// The key in hex (64 characters).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for CacheKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a cache lookup found.
#[derive(Debug)]
pub enum Lookup {
    /// A valid classifier.
    Hit(Tensor),
    /// No file for the key.
    Miss,
    /// A file exists but cannot be used; it will be rebuilt.
    Invalid {
        /// The file.
        path: PathBuf,
        /// Why it was rejected.
        reason: String,
    },
}

/// How [`ClassifierCache::load_or_build`] obtained the classifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Read from the cache.
    Hit(PathBuf),
    /// Built and written to the cache (no file before).
    Built(PathBuf),
    /// Built again because the cached file was unusable (the reason is kept), and overwritten.
    Rebuilt {
        /// The file.
        path: PathBuf,
        /// Why the old file was rejected.
        reason: String,
    },
    /// Built without a cache.
    Uncached,
}

/// A directory of cached classifiers.
#[derive(Debug, Clone)]
pub struct ClassifierCache {
    dir: PathBuf,
}

impl ClassifierCache {
    /// A cache in `dir` (created on the first store).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file a key is stored in.
    pub fn path(&self, key: &CacheKey) -> PathBuf {
        self.dir.join(format!("{key}.safetensors"))
    }

    /// Look a classifier up, checking that it is the expected `(embed_dim, classes)` f32 matrix of finite
    /// values stored under this key. Unreadable files come back as [`Lookup::Invalid`], not as errors.
    pub fn lookup(&self, key: &CacheKey, shape: (usize, usize), device: &Device) -> Lookup {
        let path = self.path(key);
        if !path.exists() {
            return Lookup::Miss;
        }
        match read_classifier(&path, key, shape, device) {
            Ok(tensor) => Lookup::Hit(tensor),
            Err(reason) => Lookup::Invalid { path, reason },
        }
    }

    /// Store a classifier under `key`, atomically; `description` entries go into the file's metadata for
    /// people inspecting the cache (e.g. the checkpoint path and the number of templates).
    pub fn store(
        &self,
        key: &CacheKey,
        classifier: &Tensor,
        description: &BTreeMap<String, String>,
    ) -> Result<PathBuf> {
        std::fs::create_dir_all(&self.dir).map_err(|e| ZeroShotError::Io {
            path: self.dir.clone(),
            reason: format!("cannot create the cache directory: {e}"),
        })?;
        let path = self.path(key);
        let mut metadata = description.clone();
        metadata.insert(KEY_METADATA.to_string(), key.to_string());
        let classifier = classifier.to_dtype(DType::F32)?;
        coca_checkpoint::save_safetensors(&path, [(TENSOR_NAME, &classifier)], None, &metadata)?;
        Ok(path)
    }

    /// The classifier for `classnames` × `templates` from the cache, or built with
    /// [`build_classifier_with_progress`] and stored. An unusable cache file is logged as a warning and
    /// replaced; a failure to *write* the cache is logged and does not fail the call (the classifier is
    /// still returned).
    #[allow(clippy::too_many_arguments)]
    pub fn load_or_build(
        &self,
        key: &CacheKey,
        model: &Coca,
        classnames: &[String],
        templates: &[Template],
        prompt_batch: usize,
        description: &BTreeMap<String, String>,
        progress: &mut dyn FnMut(usize),
    ) -> Result<(Tensor, CacheOutcome)> {
        let shape = (model.config().embed_dim, classnames.len());
        let rejected = match self.lookup(key, shape, model.device()) {
            Lookup::Hit(tensor) => {
                tracing::info!(
                    "zero-shot classifier from the cache: {}",
                    self.path(key).display()
                );
                return Ok((tensor, CacheOutcome::Hit(self.path(key))));
            }
            Lookup::Miss => None,
            Lookup::Invalid { path, reason } => {
                tracing::warn!(
                    "ignoring the cached classifier {}: {reason}; rebuilding it",
                    path.display()
                );
                Some(reason)
            }
        };
        let classifier =
            build_classifier_with_progress(model, classnames, templates, prompt_batch, progress)?;
        let path = self.path(key);
        match self.store(key, &classifier, description) {
            Ok(_) => tracing::info!("cached the zero-shot classifier in {}", path.display()),
            Err(e) => {
                tracing::warn!("could not cache the zero-shot classifier: {e}");
                return Ok((classifier, CacheOutcome::Uncached));
            }
        }
        let outcome = match rejected {
            None => CacheOutcome::Built(path),
            Some(reason) => CacheOutcome::Rebuilt { path, reason },
        };
        Ok((classifier, outcome))
    }
}

/// Read and check one cache file; the error is a human-readable reason.
fn read_classifier(
    path: &Path,
    key: &CacheKey,
    (dim, classes): (usize, usize),
    device: &Device,
) -> std::result::Result<Tensor, String> {
    let file = Checkpoint::open(path).map_err(|e| format!("unreadable ({e})"))?;
    match file.metadata().get(KEY_METADATA) {
        Some(stored) if stored == key.as_str() => {}
        Some(stored) => return Err(format!("it was stored under another key ({stored})")),
        None => return Err("it has no coca-zeroshot key".into()),
    }
    let info = file
        .info(TENSOR_NAME)
        .ok_or_else(|| format!("it has no `{TENSOR_NAME}` tensor"))?;
    if info.shape != [dim, classes] || info.dtype != DType::F32 {
        return Err(format!(
            "its classifier is {:?} {:?}, expected [{dim}, {classes}] F32",
            info.shape, info.dtype
        ));
    }
    let tensor = file
        .get(TENSOR_NAME, DType::F32, device)
        .map_err(|e| format!("unreadable ({e})"))?;
    let finite = tensor
        .flatten_all()
        .and_then(|t| t.to_device(&Device::Cpu))
        .and_then(|t| t.to_vec1::<f32>())
        .map_err(|e| format!("unreadable ({e})"))?
        .iter()
        .all(|x| x.is_finite());
    if !finite {
        return Err("it holds non-finite values".into());
    }
    Ok(tensor)
}
