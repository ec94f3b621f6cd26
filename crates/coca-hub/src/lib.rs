//! Pretrained CoCa weights by open_clip tag.
//!
//! `--pretrained` takes either a file or one of open_clip 3.3.0's tags
//! (`laion2b_s13b_b90k`, `mscoco_finetuned_laion2b_s13b_b90k`, for
//! `coca_ViT-B-32` and `coca_ViT-L-14`; case and `-`/`_` do not matter, as
//! in open_clip). A tag resolves to the checkpoint in the Hugging Face hub
//! cache, downloaded on first use. The cache is `huggingface_hub`'s own
//! layout (see [`cache`]), so a file fetched by Python's `open_clip` is
//! reused here and the other way round.
//!
//! Like open_clip, `open_clip_model.safetensors` is tried before
//! `open_clip_pytorch_model.bin`. Settings come from the usual variables
//! (`HF_HOME`, `HF_HUB_CACHE`, `HF_HUB_OFFLINE`, `HF_ENDPOINT`, `HF_TOKEN`),
//! see [`HubOptions::from_vars`].
//!
//! ```no_run
//! use coca_hub::{resolve_pretrained, HubOptions};
//! let weights = resolve_pretrained("coca_ViT-B-32", "laion2b_s13b_b90k", &HubOptions::from_env())?;
//! println!("{}", weights.path.display());
//! # Ok::<(), coca_hub::HubError>(())
//! ```

pub mod cache;
mod download;
mod error;
mod http;
mod options;
mod tags;

use std::path::{Path, PathBuf};

pub use download::{fetch as fetch_file, HubFile, Origin};
pub use error::{HubError, ManualDownload};
pub use options::{HubOptions, DEFAULT_ENDPOINT};
pub use tags::{
    is_known_tag, list_pretrained, lookup, models_for_tag, normalize_tag, tags_for_model,
    Pretrained, HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME,
};

/// The revision open_clip downloads (it passes none, so the hub's default).
pub const DEFAULT_REVISION: &str = "main";

/// A checkpoint file ready to load.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedWeights {
    /// The file (for hub files, the snapshot path, which may be a symlink).
    pub path: PathBuf,
    /// Where it came from.
    pub origin: Origin,
    /// The tag's entry (repo, preprocessing), or `None` for a plain path.
    pub pretrained: Option<&'static Pretrained>,
}

/// Resolve `--pretrained`: an existing path is returned as is; otherwise
/// `tag_or_path` must be a pretrained tag of `model_name`, whose checkpoint
/// is taken from the hub cache or downloaded into it.
///
/// Errors name the input and the fix: unknown tags list the model's tags,
/// a tag of other models names them, and when the file can be neither found
/// nor downloaded (offline, no network) the message says which URL to fetch
/// and where to put it.
pub fn resolve_pretrained(
    model_name: &str,
    tag_or_path: &str,
    opts: &HubOptions,
) -> Result<ResolvedWeights, HubError> {
    let path = Path::new(tag_or_path);
    if path.is_dir() {
        return Err(HubError::IsADirectory(path.to_path_buf()));
    }
    if path.exists() {
        return Ok(ResolvedWeights {
            path: path.to_path_buf(),
            origin: Origin::LocalPath,
            pretrained: None,
        });
    }
    let pretrained = match lookup(model_name, tag_or_path) {
        Ok(p) => p,
        Err(_) if looks_like_path(tag_or_path) => {
            return Err(HubError::NotFound {
                model: model_name.to_string(),
                input: tag_or_path.to_string(),
                known: tags_for_model(model_name)
                    .into_iter()
                    .map(String::from)
                    .collect(),
            })
        }
        Err(e) => return Err(e),
    };
    let (path, origin) = fetch_pretrained(pretrained, opts)?;
    Ok(ResolvedWeights {
        path,
        origin,
        pretrained: Some(pretrained),
    })
}

/// Get a tag's checkpoint: any candidate file already cached wins (no
/// network); otherwise the candidates are downloaded in open_clip's order.
fn fetch_pretrained(p: &Pretrained, opts: &HubOptions) -> Result<(PathBuf, Origin), HubError> {
    let names = p.candidate_files();
    let files: Vec<HubFile<'_>> = names
        .iter()
        .map(|filename| HubFile {
            repo_id: p.repo_id,
            filename,
            revision: DEFAULT_REVISION,
        })
        .collect();
    let Some((last, preferred)) = files.split_last() else {
        unreachable!("candidate_files always names the tag's own file");
    };
    if let Some(path) = files.iter().find_map(|f| f.cached(opts)) {
        return Ok((path, Origin::Cache));
    }
    if opts.offline {
        return Err(HubError::Offline(last.manual_download(opts)));
    }
    for file in preferred {
        match download::fetch(file, opts) {
            Ok(found) => return Ok(found),
            // No point trying the next file when the hub is unreachable or
            // refuses us; point the user at the file open_clip names.
            Err(HubError::Network { reason, .. }) => {
                return Err(HubError::Network {
                    url: last.url(&opts.endpoint),
                    reason,
                    help: last.manual_download(opts),
                })
            }
            Err(
                e @ (HubError::Unauthorized { .. }
                | HubError::RepoNotFound { .. }
                | HubError::DiskFull { .. }
                | HubError::Io { .. }),
            ) => return Err(e),
            // Like open_clip, any other failure falls back to the next file.
            Err(e) => tracing::debug!("{}: {e}; trying {}", file.filename, last.filename),
        }
    }
    download::fetch(last, opts)
}

/// Whether a `--pretrained` value that is not a tag was meant as a file, so
/// the error talks about a missing file rather than an unknown tag.
fn looks_like_path(s: &str) -> bool {
    s.contains(['/', '\\'])
        || [".bin", ".pt", ".pth", ".safetensors", ".ckpt"]
            .iter()
            .any(|ext| s.to_ascii_lowercase().ends_with(ext))
}
