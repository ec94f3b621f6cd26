//! A fake Hugging Face hub on 127.0.0.1 for tests: the `resolve` API on one
//! port (HEAD answers with the hub's headers, LFS files redirect) and a
//! "CDN" on another port serving the bytes, with `Range` support and knobs
//! to cut a body short, corrupt it or refuse access.

#![allow(dead_code)] // each test binary uses a different subset

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use sha2::{Digest, Sha256};

/// The commit every fake repository is at.
pub const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// One file in the fake hub.
#[derive(Clone, Debug)]
pub struct FakeFile {
    /// The real content (its SHA-256 is announced as the LFS etag).
    pub content: Vec<u8>,
    /// Bytes actually sent instead, to simulate corruption.
    pub served: Option<Vec<u8>>,
    /// Cut the first GET's body after this many bytes (then serve fully).
    pub cut_after: Option<usize>,
    /// Whether it is an LFS file (redirect to the CDN, sha256 etag).
    pub lfs: bool,
}

impl FakeFile {
    /// An LFS file with this content.
    pub fn lfs(content: Vec<u8>) -> Self {
        Self {
            content,
            served: None,
            cut_after: None,
            lfs: true,
        }
    }

    /// SHA-256 of the content, hex.
    pub fn sha256(&self) -> String {
        hex(&Sha256::digest(&self.content))
    }
}

/// A request the fake saw.
#[derive(Clone, Debug)]
pub struct Seen {
    /// `HEAD` or `GET`.
    pub method: String,
    /// Request path.
    pub path: String,
    /// Which listener: `"hub"` or `"cdn"`.
    pub server: &'static str,
    /// Headers, lower-cased names.
    pub headers: HashMap<String, String>,
}

#[derive(Default)]
struct State {
    /// `org/name/filename` → file.
    files: HashMap<String, FakeFile>,
    /// Repos that need `Authorization: Bearer {token}`.
    tokens: HashMap<String, String>,
    seen: Vec<Seen>,
}

/// A running fake hub; stops when dropped.
pub struct FakeHub {
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    hub_port: u16,
    cdn_port: u16,
    threads: Vec<JoinHandle<()>>,
}

impl FakeHub {
    /// Start serving on two free ports.
    pub fn start() -> Self {
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let hub = TcpListener::bind("127.0.0.1:0").unwrap();
        let cdn = TcpListener::bind("127.0.0.1:0").unwrap();
        let hub_port = hub.local_addr().unwrap().port();
        let cdn_port = cdn.local_addr().unwrap().port();
        let threads = [(hub, "hub"), (cdn, "cdn")]
            .into_iter()
            .map(|(listener, name)| {
                let state = Arc::clone(&state);
                let stop = Arc::clone(&stop);
                std::thread::spawn(move || {
                    for stream in listener.incoming() {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        if let Ok(stream) = stream {
                            handle(stream, name, &state, cdn_port);
                        }
                    }
                })
            })
            .collect();
        Self {
            state,
            stop,
            hub_port,
            cdn_port,
            threads,
        }
    }

    /// The value for `HF_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.hub_port)
    }

    /// Add a file to `repo_id`.
    pub fn add(&self, repo_id: &str, filename: &str, file: FakeFile) {
        self.state
            .lock()
            .unwrap()
            .files
            .insert(format!("{repo_id}/{filename}"), file);
    }

    /// Make `repo_id` answer 401 unless this token is sent.
    pub fn require_token(&self, repo_id: &str, token: &str) {
        self.state
            .lock()
            .unwrap()
            .tokens
            .insert(repo_id.to_string(), token.to_string());
    }

    /// The requests seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    /// Stop both listeners and wait for them; later connections are refused.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for port in [self.hub_port, self.cdn_port] {
            // Wake the blocking accept so the loop sees the flag.
            let _ = TcpStream::connect(("127.0.0.1", port));
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for FakeHub {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn handle(mut stream: TcpStream, server: &'static str, state: &Mutex<State>, cdn_port: u16) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() || line.is_empty() {
        return;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let seen = Seen {
        method: method.clone(),
        path: path.clone(),
        server,
        headers: headers.clone(),
    };
    let mut st = state.lock().unwrap();
    st.seen.push(seen);
    let reply = if server == "hub" {
        hub_reply(&mut st, &method, &path, &headers, cdn_port)
    } else {
        cdn_reply(&mut st, &path, &headers)
    };
    drop(st);
    let _ = stream.write_all(&reply);
    let _ = stream.flush();
}

/// `HEAD /{org}/{name}/resolve/{rev}/{filename}`.
fn hub_reply(
    st: &mut State,
    method: &str,
    path: &str,
    headers: &HashMap<String, String>,
    cdn_port: u16,
) -> Vec<u8> {
    let Some((repo, rest)) = path
        .trim_start_matches('/')
        .split_once("/resolve/")
        .map(|(r, rest)| (r.to_string(), rest.to_string()))
    else {
        return response(404, &[], b"");
    };
    if let Some(token) = st.tokens.get(&repo) {
        if headers.get("authorization") != Some(&format!("Bearer {token}")) {
            return response(401, &[("X-Error-Code", "GatedRepo".into())], b"");
        }
    }
    let filename = rest.split_once('/').map_or("", |(_, f)| f);
    let key = format!("{repo}/{filename}");
    if !st.files.keys().any(|k| k.starts_with(&format!("{repo}/"))) {
        return response(404, &[("X-Error-Code", "RepoNotFound".into())], b"");
    }
    let Some(file) = st.files.get(&key) else {
        return response(
            404,
            &[
                ("X-Error-Code", "EntryNotFound".into()),
                ("X-Repo-Commit", COMMIT.into()),
            ],
            b"",
        );
    };
    let size = file.content.len().to_string();
    if file.lfs {
        let location = format!("http://127.0.0.1:{cdn_port}/cdn/{key}");
        response(
            302,
            &[
                ("X-Repo-Commit", COMMIT.into()),
                ("X-Linked-Etag", format!("\"{}\"", file.sha256())),
                ("X-Linked-Size", size),
                ("ETag", "W/\"not-the-blob-id\"".into()),
                ("Location", location),
            ],
            b"",
        )
    } else {
        let headers = [
            ("X-Repo-Commit", COMMIT.into()),
            ("ETag", "\"0a1b2c3d4e5f\"".into()),
        ];
        if method == "HEAD" {
            // A HEAD answer announces the length a GET would send.
            response_announcing(200, &headers, b"", file.content.len())
        } else {
            response(200, &headers, &file.content)
        }
    }
}

/// `GET /cdn/{org}/{name}/{filename}`, honouring `Range: bytes=N-`.
fn cdn_reply(st: &mut State, path: &str, headers: &HashMap<String, String>) -> Vec<u8> {
    let key = path.trim_start_matches("/cdn/");
    let Some(file) = st.files.get_mut(key) else {
        return response(404, &[], b"");
    };
    let body = file.served.clone().unwrap_or_else(|| file.content.clone());
    let total = body.len();
    let from = headers
        .get("range")
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.trim_end_matches('-').parse::<usize>().ok())
        .unwrap_or(0)
        .min(total);
    let (status, mut extra) = if from > 0 {
        (
            206,
            vec![(
                "Content-Range",
                format!("bytes {from}-{}/{total}", total - 1),
            )],
        )
    } else {
        (200, vec![])
    };
    extra.push(("Accept-Ranges", "bytes".into()));
    let mut reply = response(status, &extra, &body[from..]);
    if let Some(cut) = file.cut_after.take() {
        // Announce the full length, send only part, close.
        let header_len = reply.len() - (total - from);
        reply.truncate(header_len + cut);
    }
    reply
}

fn response(status: u16, headers: &[(&str, String)], body: &[u8]) -> Vec<u8> {
    response_announcing(status, headers, body, body.len())
}

fn response_announcing(
    status: u16,
    headers: &[(&str, String)],
    body: &[u8],
    content_length: usize,
) -> Vec<u8> {
    let reason = match status {
        200 => "OK",
        206 => "Partial Content",
        302 => "Found",
        401 => "Unauthorized",
        404 => "Not Found",
        _ => "Other",
    };
    let mut out = format!("HTTP/1.1 {status} {reason}\r\n");
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str(&format!(
        "Content-Length: {content_length}\r\nConnection: close\r\n\r\n"
    ));
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Deterministic pseudo-random bytes standing in for a checkpoint.
pub fn fake_checkpoint(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).max(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}
