//! `coca serve` end to end: the binary on a free port, spoken to over plain HTTP/1.1. Its answers must equal what
//! `coca embed` and `coca caption` print for the same inputs, and bad requests must get JSON errors, not a crash.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};

use base64::Engine as _;
use common::{coca, command, root, stdout, DEMO_CFG, DEMO_WEIGHTS};
use serde_json::{json, Value};

const IMAGE: &str = "fixtures/images/sources/chelsea.png";
const GENERATION: [&str; 4] = ["--strategy", "greedy", "--max-length", "8"];

/// `coca serve` on the demo model at `port`.
fn serve_args(port: &str) -> [&str; 7] {
    [
        "serve",
        "--model",
        DEMO_CFG,
        "--pretrained",
        DEMO_WEIGHTS,
        "--port",
        port,
    ]
}

/// A running server, stopped (SIGTERM, then reaped) when dropped.
struct Server {
    child: Child,
    addr: String,
}

impl Server {
    fn start(extra: &[&str]) -> Self {
        let mut child = command()
            .args(serve_args("0"))
            .args(GENERATION)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start coca serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("read the listening line");
        let addr = line
            .trim()
            .strip_prefix("coca serve: listening on http://")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        Self { child, addr }
    }

    /// One request; the status and the JSON body.
    fn request(&self, method: &str, path: &str, body: &[u8]) -> (u16, Value) {
        let mut stream = TcpStream::connect(&self.addr).expect("connect");
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n",
            self.addr,
            body.len()
        );
        stream.write_all(head.as_bytes()).unwrap();
        // A server may answer (413) before reading a body it refuses, and close: a failed write is fine then.
        let _ = stream.write_all(body);
        // Read to the end; a reset after the response (the server closed with our unread body in its buffer) is
        // an end too.
        let mut response = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            match stream.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => response.extend_from_slice(&chunk[..n]),
                Err(e) if !response.is_empty() => {
                    eprintln!("connection ended with {e} after the response");
                    break;
                }
                Err(e) => panic!("no response: {e}"),
            }
        }
        let text = String::from_utf8_lossy(&response);
        let status: u16 = text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status line in {text:?}"));
        let (_, body) = text.split_once("\r\n\r\n").expect("headers end");
        let json =
            serde_json::from_str(body).unwrap_or_else(|e| panic!("body {body:?} is not JSON: {e}"));
        (status, json)
    }

    fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.request("POST", path, body.to_string().as_bytes())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SIGTERM lets the graceful shutdown run; a kill is the fallback.
        let stopped = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        if !stopped {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

fn image_b64() -> String {
    base64::engine::general_purpose::STANDARD.encode(std::fs::read(root().join(IMAGE)).unwrap())
}

fn max_abs_diff(a: &Value, b: &Value) -> f64 {
    let (a, b) = (a.as_array().unwrap(), b.as_array().unwrap());
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .flat_map(|(x, y)| {
            let (x, y) = (x.as_array().unwrap(), y.as_array().unwrap());
            assert_eq!(x.len(), y.len());
            x.iter()
                .zip(y)
                .map(|(p, q)| (p.as_f64().unwrap() - q.as_f64().unwrap()).abs())
        })
        .fold(0.0, f64::max)
}

#[test]
fn answers_like_the_cli_and_refuses_bad_requests_with_json_errors() {
    let server = Server::start(&["--max-items", "3"]);

    let (status, health) = server.request("GET", "/health", b"");
    assert_eq!(status, 200);
    assert_eq!(health["status"], "ok");
    assert_eq!(health["embed_dim"], 16);

    // Embeddings equal `coca embed`'s for the same image and texts.
    let texts = ["a photo of a cat", "a red square"];
    let (status, served) = server.post("/embed", &json!({"images": [image_b64()], "texts": texts}));
    assert_eq!(status, 200, "{served}");
    let cli = coca(&[
        "embed",
        "--model",
        DEMO_CFG,
        "--pretrained",
        DEMO_WEIGHTS,
        "--image",
        IMAGE,
        "--text",
        texts[0],
        "--text",
        texts[1],
        "--json",
    ]);
    assert!(cli.status.success());
    let cli: Value = serde_json::from_str(&stdout(&cli)).unwrap();
    assert_eq!(served["image_embeddings"].as_array().unwrap().len(), 1);
    assert_eq!(served["text_embeddings"].as_array().unwrap().len(), 2);
    assert!(max_abs_diff(&served["image_embeddings"], &cli["image_embeddings"]) < 1e-6);
    assert!(max_abs_diff(&served["text_embeddings"], &cli["text_embeddings"]) < 1e-6);

    // Texts alone are fine too.
    let (status, only_text) = server.post("/embed", &json!({"texts": [texts[1]]}));
    assert_eq!(status, 200);
    assert!(only_text["image_embeddings"].as_array().unwrap().is_empty());

    // Captions equal `coca caption`'s with the same generation flags.
    let (status, served) = server.post("/caption", &json!({"images": [image_b64(), image_b64()]}));
    assert_eq!(status, 200, "{served}");
    let mut args = vec![
        "caption",
        "--model",
        DEMO_CFG,
        "--pretrained",
        DEMO_WEIGHTS,
        "--json",
        IMAGE,
    ];
    args.extend(GENERATION);
    let cli = coca(&args);
    assert!(cli.status.success());
    let cli: Value = serde_json::from_str(&stdout(&cli)).unwrap();
    let captions = served["captions"].as_array().unwrap();
    assert_eq!(captions.len(), 2);
    for c in captions {
        assert_eq!(c["caption"], cli["captions"][0]["caption"]);
    }

    // Bad requests: a status, one JSON error naming the problem, and the server still up.
    let bad: [(&str, Vec<u8>, u16, &str); 8] = [
        ("/embed", b"{not json".to_vec(), 400, "not valid JSON"),
        (
            "/embed",
            br#"{"image": []}"#.to_vec(),
            400,
            "unknown field `image`",
        ),
        ("/embed", b"{}".to_vec(), 400, "nothing to embed"),
        (
            "/embed",
            br#"{"texts": ["ok", "  "]}"#.to_vec(),
            400,
            "text #2 is empty",
        ),
        (
            "/embed",
            br#"{"images": ["%%%"]}"#.to_vec(),
            400,
            "images[0]: not valid base64",
        ),
        (
            "/caption",
            br#"{"images": ["aGVsbG8="]}"#.to_vec(),
            400,
            "images[0]",
        ),
        (
            "/embed",
            br#"{"texts": ["a", "b", "c", "d"]}"#.to_vec(),
            413,
            "at most 3",
        ),
        ("/nope", b"{}".to_vec(), 404, "no such endpoint"),
    ];
    for (path, body, want_status, fragment) in bad {
        let (status, answer) = server.request("POST", path, &body);
        let message = answer["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error in {answer}"));
        assert_eq!(
            status,
            want_status,
            "{path} {}: {message}",
            String::from_utf8_lossy(&body)
        );
        assert!(message.contains(fragment), "{message:?} lacks {fragment:?}");
    }
    let (status, _) = server.request("GET", "/health", b"");
    assert_eq!(status, 200, "the server survives bad requests");
}

#[test]
fn concurrent_requests_share_forward_passes_and_get_their_own_rows() {
    let server = Server::start(&["--batch-wait-ms", "1000", "--max-batch", "16"]);
    let texts = [
        "a red circle",
        "two blue squares",
        "a small green triangle",
        "a cat on a mat",
    ];
    // What `coca embed` gives for each text.
    let mut args = vec![
        "embed",
        "--model",
        DEMO_CFG,
        "--pretrained",
        DEMO_WEIGHTS,
        "--json",
    ];
    for t in texts {
        args.extend(["--text", t]);
    }
    let cli = coca(&args);
    assert!(cli.status.success());
    let cli: Value = serde_json::from_str(&stdout(&cli)).unwrap();
    let passes = |server: &Server| {
        server.request("GET", "/health", b"").1["forward_passes"]
            .as_u64()
            .unwrap()
    };
    let before = passes(&server);
    // Together: the worker waits up to a second after the first and merges the rest into its batch.
    let together: Vec<Value> = std::thread::scope(|scope| {
        let handles: Vec<_> = texts
            .iter()
            .map(|t| {
                let server = &server;
                scope.spawn(move || server.post("/embed", &json!({"texts": [t]})))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                let (status, answer) = h.join().unwrap();
                assert_eq!(status, 200, "{answer}");
                answer["text_embeddings"].clone()
            })
            .collect()
    });
    let merged = passes(&server) - before;
    assert!(
        merged < texts.len() as u64,
        "{} requests took {merged} forward passes",
        texts.len()
    );
    for (i, served) in together.iter().enumerate() {
        let own = json!([cli["text_embeddings"][i]]);
        assert!(
            max_abs_diff(served, &own) < 1e-6,
            "request {i} got other rows than its own"
        );
    }
}

#[test]
fn refuses_bodies_over_the_limit() {
    let server = Server::start(&["--max-body-mb", "1"]);
    let big = json!({"texts": ["x".repeat(2 << 20)]});
    let (status, answer) = server.post("/embed", &big);
    assert_eq!(status, 413, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("request body"),
        "{answer}"
    );
    let (status, _) = server.request("GET", "/health", b"");
    assert_eq!(status, 200);
}

#[test]
fn a_port_in_use_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let out = coca(&serve_args(&port));
    common::assert_fails_with(&out, &["cannot listen on 127.0.0.1:", &port]);
}

#[test]
fn zero_limits_are_refused() {
    for flag in ["--max-batch", "--max-items", "--max-body-mb"] {
        let mut args = serve_args("0").to_vec();
        args.extend([flag, "0"]);
        common::assert_fails_with(&coca(&args), &["must be at least 1", flag]);
    }
}
