//! Where the cache is and how to reach the hub, read from the same
//! environment variables `huggingface_hub` reads.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// The public Hugging Face hub.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// Settings for finding and downloading hub files.
///
/// Build it with [`HubOptions::from_env`] in programs, or
/// [`HubOptions::from_vars`] / a struct literal in tests, so that tests do
/// not have to change the process environment.
#[derive(Clone)]
pub struct HubOptions {
    /// The hub cache directory, holding `models--{org}--{name}` folders
    /// (`$HF_HUB_CACHE`, else `$HF_HOME/hub`).
    pub cache_dir: PathBuf,
    /// Hub base URL, without a trailing slash (`$HF_ENDPOINT`).
    pub endpoint: String,
    /// Access token sent as `Authorization: Bearer` to the endpoint
    /// (`$HF_TOKEN`, else the token file `huggingface-cli login` writes).
    pub token: Option<String>,
    /// Never touch the network; use the cache only (`$HF_HUB_OFFLINE`).
    pub offline: bool,
    /// Draw a progress bar on stderr (hidden anyway when stderr is not a
    /// terminal; off with `$HF_HUB_DISABLE_PROGRESS_BARS`).
    pub progress: bool,
    /// Limit for connecting and for each wait on the server.
    pub timeout: Duration,
}

impl fmt::Debug for HubOptions {
    // Hand-written so that the token never ends up in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HubOptions")
            .field("cache_dir", &self.cache_dir)
            .field("endpoint", &self.endpoint)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("offline", &self.offline)
            .field("progress", &self.progress)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl HubOptions {
    /// Options from the process environment.
    pub fn from_env() -> Self {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// Options from a variable lookup, with `huggingface_hub`'s rules:
    ///
    /// - cache: `HF_HUB_CACHE`, else `HUGGINGFACE_HUB_CACHE`, else
    ///   `$HF_HOME/hub`, where `HF_HOME` defaults to
    ///   `$XDG_CACHE_HOME/huggingface`, then `~/.cache/huggingface`;
    /// - `HF_ENDPOINT` (default <https://huggingface.co>);
    /// - token: `HF_TOKEN`, else `HUGGING_FACE_HUB_TOKEN`, else the file
    ///   `HF_TOKEN_PATH` (default `$HF_HOME/token`);
    /// - `HF_HUB_OFFLINE` and `HF_HUB_DISABLE_PROGRESS_BARS` are true when
    ///   `1`, `ON`, `YES` or `TRUE` (any case).
    ///
    /// Empty values count as unset.
    pub fn from_vars(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let var = |name: &str| lookup(name).filter(|v| !v.is_empty());
        let home_dir = || {
            var("HOME")
                .or_else(|| var("USERPROFILE"))
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("."))
        };
        let hf_home = var("HF_HOME")
            .map(expand_tilde(&home_dir))
            .unwrap_or_else(|| {
                var("XDG_CACHE_HOME")
                    .map(expand_tilde(&home_dir))
                    .unwrap_or_else(|| home_dir().join(".cache"))
                    .join("huggingface")
            });
        let cache_dir = var("HF_HUB_CACHE")
            .or_else(|| var("HUGGINGFACE_HUB_CACHE"))
            .map(expand_tilde(&home_dir))
            .unwrap_or_else(|| hf_home.join("hub"));
        let endpoint = var("HF_ENDPOINT")
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string())
            .trim_end_matches('/')
            .to_string();
        let token = var("HF_TOKEN")
            .or_else(|| var("HUGGING_FACE_HUB_TOKEN"))
            .or_else(|| {
                let path = var("HF_TOKEN_PATH")
                    .map(expand_tilde(&home_dir))
                    .unwrap_or_else(|| hf_home.join("token"));
                std::fs::read_to_string(path).ok()
            })
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty());
        Self {
            cache_dir,
            endpoint,
            token,
            offline: var("HF_HUB_OFFLINE").is_some_and(|v| is_true(&v)),
            progress: !var("HF_HUB_DISABLE_PROGRESS_BARS").is_some_and(|v| is_true(&v)),
            timeout: Duration::from_secs(30),
        }
    }

    /// Options for a given cache directory and endpoint, online, no token,
    /// no progress bar: a starting point for tests and embedding.
    pub fn new(cache_dir: impl Into<PathBuf>, endpoint: impl Into<String>) -> Self {
        Self {
            cache_dir: cache_dir.into(),
            endpoint: endpoint.into().trim_end_matches('/').to_string(),
            token: None,
            offline: false,
            progress: false,
            timeout: Duration::from_secs(30),
        }
    }
}

/// `huggingface_hub`'s `_is_true`.
fn is_true(value: &str) -> bool {
    matches!(
        value.to_ascii_uppercase().as_str(),
        "1" | "ON" | "YES" | "TRUE"
    )
}

/// `os.path.expanduser` for a leading `~`, as Python applies to these
/// variables.
fn expand_tilde(home: &impl Fn() -> PathBuf) -> impl Fn(String) -> PathBuf + '_ {
    move |value| match value.strip_prefix('~') {
        Some("") => home(),
        Some(rest) if rest.starts_with('/') || rest.starts_with('\\') => home().join(&rest[1..]),
        _ => PathBuf::from(value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn opts(vars: &[(&str, &str)]) -> HubOptions {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        HubOptions::from_vars(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults() {
        let o = opts(&[("HOME", "/home/u")]);
        assert_eq!(o.cache_dir, PathBuf::from("/home/u/.cache/huggingface/hub"));
        assert_eq!(o.endpoint, DEFAULT_ENDPOINT);
        assert!(!o.offline);
        assert!(o.progress);
    }

    #[test]
    fn cache_precedence() {
        let o = opts(&[("HOME", "/h"), ("XDG_CACHE_HOME", "/xdg")]);
        assert_eq!(o.cache_dir, PathBuf::from("/xdg/huggingface/hub"));
        let o = opts(&[("HOME", "/h"), ("HF_HOME", "~/hf")]);
        assert_eq!(o.cache_dir, PathBuf::from("/h/hf/hub"));
        let o = opts(&[("HF_HOME", "/hf"), ("HUGGINGFACE_HUB_CACHE", "/old")]);
        assert_eq!(o.cache_dir, PathBuf::from("/old"));
        let o = opts(&[("HF_HUB_CACHE", "/new"), ("HUGGINGFACE_HUB_CACHE", "/old")]);
        assert_eq!(o.cache_dir, PathBuf::from("/new"));
    }

    #[test]
    fn flags_token_and_endpoint() {
        let o = opts(&[
            ("HF_HUB_OFFLINE", "yes"),
            ("HF_ENDPOINT", "http://127.0.0.1:9/"),
            ("HF_TOKEN", " hf_abc\n"),
            ("HF_HUB_DISABLE_PROGRESS_BARS", "1"),
        ]);
        assert!(o.offline);
        assert!(!o.progress);
        assert_eq!(o.endpoint, "http://127.0.0.1:9");
        assert_eq!(o.token.as_deref(), Some("hf_abc"));
        assert!(!format!("{o:?}").contains("hf_abc"));
        assert!(!opts(&[("HF_HUB_OFFLINE", "0")]).offline);
    }

    #[test]
    fn token_file_is_read() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), "hf_file\n").unwrap();
        let home = dir.path().to_str().unwrap();
        assert_eq!(opts(&[("HF_HOME", home)]).token.as_deref(), Some("hf_file"));
        assert_eq!(
            opts(&[("HF_HOME", home), ("HF_TOKEN", "hf_env")])
                .token
                .as_deref(),
            Some("hf_env")
        );
    }
}
