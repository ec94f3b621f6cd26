//! The few HTTP requests the hub protocol needs, on a blocking `ureq`
//! agent. Redirects are followed by hand: the metadata request must stop at
//! the hub's redirect to its CDN (that response carries the headers we
//! need), and the token must not travel to another host.

use std::time::Duration;

use ureq::http::{Response, Uri};
use ureq::Body;

use crate::options::HubOptions;

/// Redirect hops allowed before giving up.
const MAX_REDIRECTS: usize = 10;

/// Response headers of the hub's file API.
pub(crate) const X_REPO_COMMIT: &str = "x-repo-commit";
pub(crate) const X_LINKED_ETAG: &str = "x-linked-etag";
pub(crate) const X_LINKED_SIZE: &str = "x-linked-size";
pub(crate) const X_ERROR_CODE: &str = "x-error-code";
pub(crate) const X_ERROR_MESSAGE: &str = "x-error-message";

/// A blocking client bound to one hub endpoint and token.
pub(crate) struct Client {
    agent: ureq::Agent,
    endpoint_origin: Option<String>,
    token: Option<String>,
}

/// A response and the URL that produced it (after redirects).
pub(crate) struct Answer {
    pub response: Response<Body>,
    pub url: String,
}

impl Answer {
    /// A header's value as text, if present and valid.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.response.headers().get(name)?.to_str().ok()
    }

    /// The status code.
    pub fn status(&self) -> u16 {
        self.response.status().as_u16()
    }
}

impl Client {
    /// A client for `opts.endpoint`, with its timeouts and token.
    pub fn new(opts: &HubOptions) -> Self {
        let timeout = Some(opts.timeout);
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_connect(timeout)
            .timeout_recv_response(timeout)
            // A stalled body read gets a longer grace than the handshake.
            .timeout_per_read(Some(opts.timeout.max(Duration::from_secs(60))))
            .user_agent(concat!("coca-hub/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Self {
            agent,
            endpoint_origin: origin(&opts.endpoint),
            token: opts.token.clone(),
        }
    }

    /// Whether requests to the endpoint carry a token.
    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// `HEAD url`, following only same-host redirects (renamed repos),
    /// and stopping at one to another host (the CDN), like
    /// `huggingface_hub`'s `get_hf_file_metadata`.
    pub fn head(&self, url: &str) -> Result<Answer, ureq::Error> {
        self.follow(url, Method::Head, true)
    }

    /// `GET url` (from byte `from` when resuming), following all redirects.
    pub fn get(&self, url: &str, from: u64) -> Result<Answer, ureq::Error> {
        self.follow(url, Method::Get { from }, false)
    }

    fn follow(
        &self,
        url: &str,
        method: Method,
        same_host_only: bool,
    ) -> Result<Answer, ureq::Error> {
        let mut url = url.to_string();
        for _ in 0..=MAX_REDIRECTS {
            let response = self.send(&url, method)?;
            let location = response
                .headers()
                .get("location")
                .and_then(|v| v.to_str().ok())
                .filter(|_| response.status().is_redirection());
            let Some(location) = location else {
                return Ok(Answer { response, url });
            };
            let next = resolve_location(&url, location);
            if same_host_only && origin(&next) != origin(&url) {
                return Ok(Answer { response, url });
            }
            url = next;
        }
        Err(ureq::Error::TooManyRedirects)
    }

    fn send(&self, url: &str, method: Method) -> Result<Response<Body>, ureq::Error> {
        let mut req = match method {
            Method::Head => self.agent.head(url),
            Method::Get { from: 0 } => self.agent.get(url),
            Method::Get { from } => self
                .agent
                .get(url)
                .header("Range", format!("bytes={from}-")),
        };
        // The size check needs the size on the wire to be the file size.
        req = req.header("Accept-Encoding", "identity");
        if let Some(token) = &self.token {
            // Only the hub gets the token; CDN URLs are pre-signed.
            if origin(url).is_some() && origin(url) == self.endpoint_origin {
                req = req.header("Authorization", format!("Bearer {token}"));
            }
        }
        req.call()
    }
}

/// The two requests the protocol uses.
#[derive(Debug, Clone, Copy)]
enum Method {
    Head,
    /// `from` > 0 adds `Range: bytes={from}-`.
    Get {
        from: u64,
    },
}

/// `scheme://authority` of an absolute URL.
fn origin(url: &str) -> Option<String> {
    let uri: Uri = url.parse().ok()?;
    Some(format!("{}://{}", uri.scheme_str()?, uri.authority()?))
}

/// Resolve a `Location` header against the URL that sent it.
pub(crate) fn resolve_location(base: &str, location: &str) -> String {
    if location.contains("://") {
        return location.to_string();
    }
    let Some(base_origin) = origin(base) else {
        return location.to_string();
    };
    if location.starts_with('/') {
        return format!("{base_origin}{location}");
    }
    // A path relative to the base's directory.
    let path = &base[base_origin.len()..];
    let path = path.split(['?', '#']).next().unwrap_or("");
    let dir = path.rsplit_once('/').map_or("", |(d, _)| d);
    format!("{base_origin}{dir}/{location}")
}

/// Percent-encode a file path for a URL, keeping `/` separators.
pub(crate) fn encode_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_targets() {
        let base = "https://huggingface.co/org/m/resolve/main/f.bin";
        assert_eq!(
            resolve_location(base, "/api/x"),
            "https://huggingface.co/api/x"
        );
        assert_eq!(
            resolve_location(base, "https://cdn.example/abc?x=1"),
            "https://cdn.example/abc?x=1"
        );
        assert_eq!(
            resolve_location(base, "g.bin"),
            "https://huggingface.co/org/m/resolve/main/g.bin"
        );
        assert_eq!(
            origin("http://127.0.0.1:8080/x").as_deref(),
            Some("http://127.0.0.1:8080")
        );
    }

    #[test]
    fn path_encoding() {
        assert_eq!(encode_path("a b/c+d.bin"), "a%20b/c%2Bd.bin");
        assert_eq!(
            encode_path("open_clip_pytorch_model.bin"),
            "open_clip_pytorch_model.bin"
        );
    }
}
