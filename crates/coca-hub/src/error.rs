//! Errors of pretrained-weight resolution and download.

use std::fmt;
use std::path::PathBuf;

/// Everything that can go wrong turning `--pretrained TAG|PATH` into a file.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// The model has pretrained weights, but not under this tag.
    #[error(
        "unknown pretrained tag `{tag}` for model `{model}`; known tags: {}",
        known.join(", ")
    )]
    UnknownTag {
        /// The model name as given.
        model: String,
        /// The tag as given (before normalisation).
        tag: String,
        /// The tags this model does have.
        known: Vec<String>,
    },
    /// The tag exists, but for other models only.
    #[error(
        "pretrained tag `{tag}` is not available for model `{model}`; it exists for: {}",
        models.join(", ")
    )]
    TagForOtherModel {
        /// The model name as given.
        model: String,
        /// The tag as given.
        tag: String,
        /// The models that have this tag.
        models: Vec<String>,
    },
    /// Neither an existing file nor a tag any model knows.
    #[error(
        "`{input}` is neither an existing file nor a known pretrained tag for model `{model}`{}",
        tags_hint(known)
    )]
    NotFound {
        /// The model name as given.
        model: String,
        /// The `--pretrained` value as given.
        input: String,
        /// Tags this model does have (empty when it has none).
        known: Vec<String>,
    },
    /// The path exists but is a directory.
    #[error("pretrained path {} is a directory; pass the weights file inside it", .0.display())]
    IsADirectory(PathBuf),
    /// Offline mode is on and the file is not cached.
    #[error("offline mode is on (HF_HUB_OFFLINE) and the weights are not in the cache.\n{0}")]
    Offline(Box<ManualDownload>),
    /// The hub could not be reached (DNS, connection, TLS, timeout, cut
    /// connection) and the file is not cached.
    #[error("cannot download {url}: {reason}.\n{help}")]
    Network {
        /// The URL being fetched.
        url: String,
        /// What the HTTP client reported.
        reason: String,
        /// How to get the file by hand.
        help: Box<ManualDownload>,
    },
    /// 401 or 403: a private or gated repository, or a bad token.
    #[error(
        "access to {repo_id} was refused (HTTP {status}){}",
        if *token_sent {
            ": the token in HF_TOKEN was not accepted; check it, and for a gated repository \
             accept its terms on the model page"
        } else {
            ": the repository may be private or gated; set HF_TOKEN to a Hugging Face access token \
             that can read it"
        }
    )]
    Unauthorized {
        /// The repository.
        repo_id: String,
        /// The HTTP status (401 or 403).
        status: u16,
        /// Whether a token was sent.
        token_sent: bool,
    },
    /// 404 for the repository itself.
    #[error("repository {repo_id} was not found on {endpoint}")]
    RepoNotFound {
        /// The repository.
        repo_id: String,
        /// The hub endpoint asked.
        endpoint: String,
    },
    /// 404 for the file (the repository exists).
    #[error("file {filename} was not found in repository {repo_id} (revision {revision})")]
    EntryNotFound {
        /// The repository.
        repo_id: String,
        /// The file inside it.
        filename: String,
        /// The revision asked for.
        revision: String,
    },
    /// Any other unexpected HTTP status.
    #[error("unexpected HTTP {status} from {url}{}", message_suffix(message))]
    HttpStatus {
        /// The URL that answered.
        url: String,
        /// The status code.
        status: u16,
        /// The hub's `X-Error-Message`, if any.
        message: Option<String>,
    },
    /// The server's answer lacks what the cache needs (commit, etag, size),
    /// or has values that are unsafe as file names.
    #[error("unexpected answer from {url}: {problem} (is HF_ENDPOINT a Hugging Face hub?)")]
    BadMetadata {
        /// The URL asked.
        url: String,
        /// What is missing or wrong.
        problem: String,
    },
    /// The downloaded bytes do not hash to the expected SHA-256; the
    /// partial file has been deleted.
    #[error(
        "checksum mismatch for {filename} from {repo_id}: expected SHA-256 {expected}, got {actual}; \
         the corrupt download was deleted, try again"
    )]
    ChecksumMismatch {
        /// The repository.
        repo_id: String,
        /// The file.
        filename: String,
        /// The SHA-256 the hub announced.
        expected: String,
        /// The SHA-256 of what arrived.
        actual: String,
    },
    /// The download is longer than announced; the partial file has been
    /// deleted.
    #[error(
        "size mismatch for {filename} from {repo_id}: expected {expected} bytes, got {actual}; \
         the download was deleted, try again"
    )]
    SizeMismatch {
        /// The repository.
        repo_id: String,
        /// The file.
        filename: String,
        /// The size the hub announced.
        expected: u64,
        /// The size that arrived.
        actual: u64,
    },
    /// The disk filled up while writing; the partial file is kept so that
    /// the next attempt resumes.
    #[error(
        "disk full while writing {} ({needed} bytes needed in all); free some space and run again \
         to resume, or set HF_HOME / HF_HUB_CACHE to a larger disk",
        path.display()
    )]
    DiskFull {
        /// The file being written.
        path: PathBuf,
        /// The full size of the download.
        needed: u64,
    },
    /// Any other file-system error in the cache.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done ("cannot create", "cannot read", ...).
        action: &'static str,
        /// The path concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl HubError {
    /// An [`HubError::Io`].
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        Self::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

fn tags_hint(known: &[String]) -> String {
    if known.is_empty() {
        " (this model has no pretrained tags; pass a weights file)".to_string()
    } else {
        format!("; known tags: {}", known.join(", "))
    }
}

fn message_suffix(message: &Option<String>) -> String {
    message
        .as_deref()
        .map(|m| format!(": {m}"))
        .unwrap_or_default()
}

/// Instructions for getting a file into place by hand, shown when it cannot
/// be downloaded automatically.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManualDownload {
    /// Hub repository, e.g. `laion/CoCa-ViT-B-32-laion2B-s13B-b90k`.
    pub repo_id: String,
    /// File inside it, e.g. `open_clip_pytorch_model.bin`.
    pub filename: String,
    /// Direct download URL.
    pub url: String,
    /// The hub cache directory this process uses.
    pub cache_dir: PathBuf,
}

impl fmt::Display for ManualDownload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Get {file} from {repo} on a machine with network access, either:\n  \
             - `huggingface-cli download {repo} {file}` (or `hf download ...`), which fills the \
             Hugging Face cache, then copy its models--{folder} folder into {cache} on this \
             machine; or\n  \
             - with a browser or curl from {url}, then pass `--pretrained /path/to/{file}`.",
            file = self.filename,
            repo = self.repo_id,
            folder = self.repo_id.replace('/', "--"),
            cache = self.cache_dir.display(),
            url = self.url,
        )
    }
}
