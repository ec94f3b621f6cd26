//! `coca serve` end to end: the binary on a free port, spoken to over plain HTTP/1.1. Its answers must equal what
//! `coca embed` and `coca caption` print for the same inputs, and bad requests must get JSON errors, not a crash.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

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
        let answer = self.send(method, path, "Content-Type: application/json\r\n", body);
        (answer.status, answer.json)
    }

    /// One request with extra header lines (each ending in CRLF); the whole answer.
    fn send(&self, method: &str, path: &str, headers: &str, body: &[u8]) -> Answer {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
            self.addr,
            body.len()
        );
        let mut raw = head.into_bytes();
        raw.extend_from_slice(body);
        self.exchange(&raw)
    }

    /// Send `raw` bytes on a new connection and read the answer to the end.
    fn exchange(&self, raw: &[u8]) -> Answer {
        let mut stream = TcpStream::connect(&self.addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        // A server may answer (413) before reading a body it refuses, and close: a failed write is fine then.
        let _ = stream.write_all(raw);
        Answer::read(&mut stream)
    }

    fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.request("POST", path, body.to_string().as_bytes())
    }

    fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect(&self.addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        stream
    }

    /// SIGTERM; the time until the process exited, and whether it exited successfully.
    fn terminate(&mut self, within: Duration) -> (Duration, bool) {
        let start = Instant::now();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (start.elapsed(), status.success());
            }
            assert!(
                start.elapsed() < within,
                "the server did not stop within {within:?} of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A response: status, header block (lowercased) and JSON body.
struct Answer {
    status: u16,
    head: String,
    json: Value,
}

impl Answer {
    /// Read a response to the end of the stream; a reset after the response (the server closed with our unread
    /// body in its buffer) is an end too.
    fn read(stream: &mut TcpStream) -> Self {
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
        Self::parse(&response)
    }

    fn parse(response: &[u8]) -> Self {
        let text = String::from_utf8_lossy(response);
        let status: u16 = text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status line in {text:?}"));
        let (head, body) = text.split_once("\r\n\r\n").expect("headers end");
        let json = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(body).unwrap_or_else(|e| panic!("body {body:?} is not JSON: {e}"))
        };
        Self {
            status,
            head: head.to_ascii_lowercase(),
            json,
        }
    }

    fn error(&self) -> &str {
        self.json["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error in {}", self.json))
    }
}

/// Whether the server closed `stream` (end of stream or reset) within `within`.
fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    stream.set_read_timeout(Some(within)).unwrap();
    let mut byte = [0u8; 1];
    loop {
        match stream.read(&mut byte) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false
            }
            Err(_) => return true,
        }
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
    let server = Server::start(&["--max-texts", "3"]);

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
    for flag in [
        "--max-batch",
        "--max-images",
        "--max-texts",
        "--max-text-chars",
        "--max-body-mb",
        "--max-queue",
        "--max-connections",
        "--decode-memory-mb",
    ] {
        let mut args = serve_args("0").to_vec();
        args.extend([flag, "0"]);
        common::assert_fails_with(&coca(&args), &["must be at least 1", flag]);
    }
}

#[test]
fn zero_timeouts_and_an_empty_key_are_refused() {
    for flag in [
        "--header-timeout",
        "--body-timeout",
        "--request-timeout",
        "--shutdown-timeout",
    ] {
        let mut args = serve_args("0").to_vec();
        args.extend([flag, "0"]);
        common::assert_fails_with(&coca(&args), &["must be more than 0 seconds", flag]);
    }
    let mut args = serve_args("0").to_vec();
    args.extend(["--api-key", ""]);
    common::assert_fails_with(&coca(&args), &["--api-key must not be empty"]);
    let mut args = serve_args("0").to_vec();
    args.extend(["--idle-timeout", "soon"]);
    let out = coca(&args);
    assert!(!out.status.success());
    assert!(common::stderr(&out).contains("\"soon\" is not a number of seconds"));
}

#[test]
fn a_half_sent_request_is_closed_after_the_header_timeout() {
    let server = Server::start(&["--header-timeout", "0.5", "--idle-timeout", "30"]);
    let mut stream = server.connect();
    stream.write_all(b"GET /health HTTP/1.1\r\nHo").unwrap();
    let start = Instant::now();
    assert!(
        closed_within(&mut stream, Duration::from_secs(10)),
        "a half-sent request was kept open"
    );
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(400),
        "closed after {waited:?}"
    );
}

#[test]
fn an_idle_keep_alive_connection_is_closed() {
    let server = Server::start(&["--idle-timeout", "0.5"]);
    let mut stream = server.connect();
    let request = format!("GET /health HTTP/1.1\r\nHost: {}\r\n\r\n", server.addr);
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = [0u8; 4096];
    let n = stream.read(&mut answer).unwrap();
    assert!(String::from_utf8_lossy(&answer[..n]).starts_with("HTTP/1.1 200"));
    let start = Instant::now();
    assert!(closed_within(&mut stream, Duration::from_secs(10)));
    assert!(start.elapsed() >= Duration::from_millis(300));
}

#[test]
fn sigterm_completes_while_slow_clients_are_connected() {
    let mut server = Server::start(&[
        "--header-timeout",
        "60",
        "--body-timeout",
        "60",
        "--shutdown-timeout",
        "1",
    ]);
    // One client stuck in its headers, one in its body.
    let mut headers = server.connect();
    headers
        .write_all(b"POST /embed HTTP/1.1\r\nHost: ")
        .unwrap();
    let mut body = server.connect();
    let head = format!(
        "POST /embed HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"te",
        server.addr
    );
    body.write_all(head.as_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let (took, clean) = server.terminate(Duration::from_secs(10));
    assert!(clean, "the server did not exit cleanly");
    assert!(took < Duration::from_secs(5), "stopping took {took:?}");
}

#[test]
fn sigterm_closes_connections_without_a_request_in_flight_at_once() {
    // The shutdown deadline and the header timeout are long: only closing at once makes this quick.
    let mut server = Server::start(&["--header-timeout", "60", "--shutdown-timeout", "30"]);
    let mut half_sent: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut s = server.connect();
            s.write_all(b"POST /embed HTTP/1.1\r\nHost: ").unwrap();
            s
        })
        .collect();
    let mut idle = server.connect();
    std::thread::sleep(Duration::from_millis(300));
    let (took, clean) = server.terminate(Duration::from_secs(20));
    assert!(clean, "the server did not exit cleanly");
    assert!(took < Duration::from_secs(3), "stopping took {took:?}");
    for s in half_sent.iter_mut().chain([&mut idle]) {
        assert!(closed_within(s, Duration::from_secs(1)));
    }
}

#[test]
fn health_answers_with_many_idle_connections_open() {
    let server = Server::start(&["--max-connections", "8", "--idle-timeout", "60"]);
    let mut idle: Vec<TcpStream> = (0..40).map(|_| server.connect()).collect();
    std::thread::sleep(Duration::from_millis(200));
    let start = Instant::now();
    let (status, health) = server.request("GET", "/health", b"");
    assert_eq!(status, 200, "{health}");
    assert!(start.elapsed() < Duration::from_secs(5));
    // Room was made by closing the longest-idle connections.
    assert!(closed_within(&mut idle[0], Duration::from_secs(5)));
}

#[test]
fn a_full_queue_answers_503_with_retry_after() {
    let server = Server::start(&["--max-queue", "1", "--body-timeout", "30"]);
    // Admitted, then stuck sending its body: it holds the only place.
    let mut slow = server.connect();
    let head = format!(
        "POST /embed HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{",
        server.addr
    );
    slow.write_all(head.as_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let answer = server.send(
        "POST",
        "/embed",
        "Content-Type: application/json\r\n",
        br#"{"texts": ["a cat"]}"#,
    );
    assert_eq!(answer.status, 503, "{}", answer.json);
    assert!(answer.head.contains("retry-after: 1"), "{}", answer.head);
    assert!(answer.error().contains("--max-queue"));
    // /health is not queued.
    assert_eq!(server.request("GET", "/health", b"").0, 200);
    drop(slow);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(server.post("/embed", &json!({"texts": ["a cat"]})).0, 200);
}

#[test]
fn a_slow_body_gets_408() {
    let server = Server::start(&["--body-timeout", "0.5"]);
    let mut stream = server.connect();
    let head = format!(
        "POST /embed HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{",
        server.addr
    );
    stream.write_all(head.as_bytes()).unwrap();
    let answer = Answer::read(&mut stream);
    assert_eq!(answer.status, 408);
    assert!(answer.error().contains("--body-timeout"));
}

#[test]
fn a_request_over_its_deadline_gets_503() {
    // The worker waits 3 s for more work to merge: longer than the request may take.
    let server = Server::start(&["--batch-wait-ms", "3000", "--request-timeout", "0.5"]);
    let answer = server.send(
        "POST",
        "/embed",
        "Content-Type: application/json\r\n",
        br#"{"texts": ["a cat"]}"#,
    );
    assert_eq!(answer.status, 503, "{}", answer.json);
    assert!(answer.error().contains("--request-timeout"));
}

#[test]
fn body_limits_hold_before_and_while_reading() {
    let server = Server::start(&["--max-body-mb", "1"]);
    // A Content-Length over the limit is refused before any body is sent.
    let mut stream = server.connect();
    let head = format!(
        "POST /embed HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: 100000000\r\n\r\n",
        server.addr
    );
    stream.write_all(head.as_bytes()).unwrap();
    let answer = Answer::read(&mut stream);
    assert_eq!(answer.status, 413);
    assert!(
        answer.error().contains("100000000 bytes"),
        "{}",
        answer.error()
    );
    // A chunked body is cut off once it passes the limit.
    let mut stream = server.connect();
    let head = format!(
        "POST /embed HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
        server.addr
    );
    stream.write_all(head.as_bytes()).unwrap();
    let chunk = format!("{:x}\r\n{}\r\n", 1 << 16, "x".repeat(1 << 16));
    for _ in 0..17 {
        if stream.write_all(chunk.as_bytes()).is_err() {
            break;
        }
    }
    let answer = Answer::read(&mut stream);
    assert_eq!(answer.status, 413);
    assert!(answer.error().contains("--max-body-mb"));
}

#[test]
fn per_request_caps_name_their_flag() {
    let server = Server::start(&[
        "--max-images",
        "1",
        "--max-texts",
        "2",
        "--max-text-chars",
        "10",
    ]);
    let image = image_b64();
    let cases = [
        ("/embed", json!({"images": [image, image]}), "--max-images"),
        (
            "/caption",
            json!({"images": [image, image]}),
            "--max-images",
        ),
        ("/embed", json!({"texts": ["a", "b", "c"]}), "--max-texts"),
        (
            "/embed",
            json!({"texts": ["a", "a very long text"]}),
            "texts[1] is 16 characters long",
        ),
    ];
    for (path, body, fragment) in cases {
        let (status, answer) = server.post(path, &body);
        assert_eq!(status, 413, "{answer}");
        let message = answer["error"].as_str().unwrap();
        assert!(message.contains(fragment), "{message:?} lacks {fragment:?}");
    }
}

#[test]
fn every_status_is_a_json_error() {
    let server = Server::start(&[]);
    let json_type = "Content-Type: application/json\r\n";
    // 405: a GET of a POST route.
    let answer = server.send("GET", "/embed", "", b"");
    assert_eq!(answer.status, 405);
    assert!(answer.error().contains("GET is not allowed"));
    // 415: a cross-site "simple" request (text/plain) is not executed.
    let answer = server.send(
        "POST",
        "/embed",
        "Content-Type: text/plain\r\n",
        br#"{"texts": ["a"]}"#,
    );
    assert_eq!(answer.status, 415);
    assert!(answer.error().contains("text/plain"));
    // 404.
    let answer = server.send("GET", "/nope", "", b"");
    assert_eq!(answer.status, 404);
    assert!(answer.error().contains("no such endpoint"));
    // 403: a Host that is not this machine (DNS rebinding).
    let answer = server
        .exchange(b"GET /health HTTP/1.1\r\nHost: evil.example:8080\r\nConnection: close\r\n\r\n");
    assert_eq!(answer.status, 403);
    assert!(answer
        .error()
        .contains("\"evil.example:8080\" is not allowed"));
    let answer =
        server.exchange(b"GET /health HTTP/1.1\r\nHost: localhost:1\r\nConnection: close\r\n\r\n");
    assert_eq!(answer.status, 200);
    // 403: a page of another origin, with CORS off.
    let answer = server.send(
        "POST",
        "/embed",
        &format!("{json_type}Origin: https://evil.example\r\n"),
        br#"{"texts": ["a"]}"#,
    );
    assert_eq!(answer.status, 403);
    assert!(answer.error().contains("--cors-origin"));
    assert!(!answer.head.contains("access-control-allow-origin"));
    // The server's own page (same origin) may.
    let own = format!("{json_type}Origin: http://{}\r\n", server.addr);
    let answer = server.send("POST", "/embed", &own, br#"{"texts": ["a"]}"#);
    assert_eq!(answer.status, 200, "{}", answer.json);
}

#[test]
fn allowed_hosts_cors_origins_and_the_api_key() {
    let server = Server::start(&[
        "--allowed-host",
        "coca.example",
        "--cors-origin",
        "https://app.example",
        "--api-key",
        "s3cret",
    ]);
    let json_type = "Content-Type: application/json\r\n";
    let body = br#"{"texts": ["a"]}"#;
    // /health stays open; other routes need the key.
    let answer =
        server.exchange(b"GET /health HTTP/1.1\r\nHost: coca.example\r\nConnection: close\r\n\r\n");
    assert_eq!(answer.status, 200);
    let answer = server.send("POST", "/embed", json_type, body);
    assert_eq!(answer.status, 401);
    assert!(answer.error().contains("Authorization: Bearer"));
    let answer = server.send(
        "POST",
        "/embed",
        &format!("{json_type}Authorization: Bearer s3creT\r\n"),
        body,
    );
    assert_eq!(answer.status, 401);
    let keyed = format!("{json_type}Authorization: Bearer s3cret\r\n");
    assert_eq!(server.send("POST", "/embed", &keyed, body).status, 200);
    // An allowed origin gets its CORS headers, on the preflight and the request.
    let origin = "Origin: https://app.example\r\n";
    let answer = server.send(
        "OPTIONS",
        "/embed",
        &format!("{origin}Access-Control-Request-Method: POST\r\n"),
        b"",
    );
    assert_eq!(answer.status, 204);
    assert!(answer
        .head
        .contains("access-control-allow-origin: https://app.example"));
    let answer = server.send("POST", "/embed", &format!("{keyed}{origin}"), body);
    assert_eq!(answer.status, 200);
    assert!(answer
        .head
        .contains("access-control-allow-origin: https://app.example"));
}

#[test]
fn classify_multipart_metrics_openapi_and_the_page() {
    let server = Server::start(&["--no-cache"]);
    let classes = ["a cat", "a red square", "a diagram"];
    // /classify ranks the typed classes as `coca classify` does.
    let (status, served) = server.post(
        "/classify",
        &json!({"images": [image_b64()], "classes": classes, "top_k": 3}),
    );
    assert_eq!(status, 200, "{served}");
    let dir = tempfile::tempdir().unwrap();
    let class_file = dir.path().join("classes.txt");
    std::fs::write(&class_file, classes.join("\n")).unwrap();
    let cli = coca(&[
        "classify",
        "--model",
        DEMO_CFG,
        "--pretrained",
        DEMO_WEIGHTS,
        "--classes",
        class_file.to_str().unwrap(),
        "--top-k",
        "3",
        "--no-cache",
        "--json",
        IMAGE,
    ]);
    assert!(cli.status.success(), "{}", common::stderr(&cli));
    let cli: Value = serde_json::from_str(&stdout(&cli)).unwrap();
    let top = served["results"][0]["top_k"].as_array().unwrap();
    assert_eq!(top.len(), 3);
    for (s, c) in top.iter().zip(cli[0]["top_k"].as_array().unwrap()) {
        assert_eq!(s["class"], c["class"]);
        assert!(
            (s["probability"].as_f64().unwrap() - c["probability"].as_f64().unwrap()).abs() < 1e-5
        );
    }
    // Bad classify requests.
    for (body, fragment) in [
        (
            json!({"images": [image_b64()], "classes": []}),
            "\"classes\" is empty",
        ),
        (
            json!({"images": [image_b64()], "classes": ["a"], "templates": "/etc/passwd"}),
            "not a built-in template set",
        ),
        (
            json!({"images": [image_b64()], "top_k": 0}),
            "\"top_k\" must be at least 1",
        ),
    ] {
        let (status, answer) = server.post("/classify", &body);
        assert_eq!(status, 400, "{answer}");
        assert!(
            answer["error"].as_str().unwrap().contains(fragment),
            "{answer}"
        );
    }

    // A multipart upload gets the same answer as base64 JSON.
    let photo = std::fs::read(root().join(IMAGE)).unwrap();
    let boundary = "XyZboundary";
    let mut form = Vec::new();
    form.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"images\"; filename=\"c.png\"\r\n\
             Content-Type: image/png\r\n\r\n"
        )
        .as_bytes(),
    );
    form.extend_from_slice(&photo);
    form.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let answer = server.send(
        "POST",
        "/caption",
        &format!("Content-Type: multipart/form-data; boundary={boundary}\r\n"),
        &form,
    );
    assert_eq!(answer.status, 200, "{}", answer.json);
    let (_, json_answer) = server.post("/caption", &json!({"images": [image_b64()]}));
    assert_eq!(answer.json["captions"], json_answer["captions"]);
    let answer = server.send(
        "POST",
        "/caption",
        &format!("Content-Type: multipart/form-data; boundary={boundary}\r\n"),
        b"--XyZboundary\r\nno headers end",
    );
    assert_eq!(answer.status, 400);
    assert!(
        answer.error().contains("multipart body"),
        "{}",
        answer.error()
    );

    // /metrics counts what happened, in Prometheus' text format.
    let mut stream = server.connect();
    stream
        .write_all(
            format!(
                "GET /metrics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
                server.addr
            )
            .as_bytes(),
        )
        .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    for want in [
        "coca_requests_total{route=\"/classify\",status=\"200\"} 1",
        "coca_errors_total{route=\"/classify\",status=\"400\"} 3",
        "coca_request_duration_seconds_count{route=\"/caption\"}",
        "coca_batch_items_bucket{le=\"+Inf\"}",
        "coca_queue_jobs 0",
        "coca_decode_slots_in_use 0",
    ] {
        assert!(text.contains(want), "/metrics lacks {want:?}:\n{text}");
    }

    // /openapi.json names every POST route; the page is HTML from the binary.
    let (status, openapi) = server.request("GET", "/openapi.json", b"");
    assert_eq!(status, 200);
    for path in [
        "/embed",
        "/caption",
        "/classify",
        "/search",
        "/thumbnail/{id}",
        "/health",
        "/metrics",
    ] {
        assert!(openapi["paths"][path].is_object(), "openapi lacks {path}");
    }
    let mut stream = server.connect();
    stream
        .write_all(
            format!(
                "GET / HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
                server.addr
            )
            .as_bytes(),
        )
        .unwrap();
    let mut page = String::new();
    stream.read_to_string(&mut page).unwrap();
    assert!(page.starts_with("HTTP/1.1 200"));
    assert!(page.contains("text/html") && page.contains("<label id=\"drop\" for=\"files\">"));
    assert!(
        !page.contains("https://"),
        "the page loads nothing from elsewhere"
    );
}

/// `coca embed --output-dir` of the fixture collection (5 images with captions), in a temporary folder.
fn fixture_index() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("index");
    let out = out.to_str().unwrap().to_string();
    let o = coca(&[
        "embed",
        "--model",
        DEMO_CFG,
        "--pretrained",
        DEMO_WEIGHTS,
        "--input-dir",
        "fixtures/data/folder",
        "--output-dir",
        &out,
        "--json",
    ]);
    assert!(o.status.success(), "{}", common::stderr(&o));
    (dir, out)
}

impl Server {
    /// GET `path`; the status, the header block (lowercased) and the raw body.
    fn get_raw(&self, path: &str) -> (u16, String, Vec<u8>) {
        let mut stream = self.connect();
        stream
            .write_all(
                format!(
                    "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
                    self.addr
                )
                .as_bytes(),
            )
            .unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).unwrap();
        let split = response
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("headers end");
        let head = String::from_utf8_lossy(&response[..split]).to_ascii_lowercase();
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap();
        (status, head, response[split + 4..].to_vec())
    }
}

#[test]
fn search_finds_what_coca_search_finds_and_thumbnails_go_by_index_id_only() {
    let (_dir, index) = fixture_index();
    let server = Server::start(&["--index", &index, "--thumbnail-size", "32"]);
    let (status, health) = server.request("GET", "/health", b"");
    assert_eq!(status, 200);
    assert_eq!(health["index"]["rows"], 5, "{health}");

    // Text → image: the same ranking and scores as `coca search`.
    let query = "a tiny photo of coffee";
    let (status, served) = server.post("/search", &json!({"text": query, "top_k": 5}));
    assert_eq!(status, 200, "{served}");
    assert_eq!(served["against"], "image");
    let cli = coca(&[
        "search",
        "--model",
        DEMO_CFG,
        "--pretrained",
        DEMO_WEIGHTS,
        "--index",
        &index,
        "--text",
        query,
        "--top-k",
        "5",
        "--json",
    ]);
    assert!(cli.status.success(), "{}", common::stderr(&cli));
    let cli: Value = serde_json::from_str(&stdout(&cli)).unwrap();
    let (served, cli) = (
        served["results"].as_array().unwrap(),
        cli["results"].as_array().unwrap(),
    );
    assert_eq!(served.len(), 5);
    for (s, c) in served.iter().zip(cli) {
        assert_eq!(s["caption"], c["caption"]);
        assert!((s["score"].as_f64().unwrap() - c["score"].as_f64().unwrap()).abs() < 1e-5);
        assert!(
            s.get("image_path").is_none(),
            "results name ids, not server paths"
        );
    }

    // Image → image, as JSON and as a multipart upload: the image finds itself first.
    let coffee = std::fs::read(root().join("fixtures/data/folder/coffee.jpg")).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD.encode(&coffee);
    let (status, by_image) = server.post("/search", &json!({"image": b64, "top_k": 2}));
    assert_eq!(status, 200, "{by_image}");
    let first = &by_image["results"][0];
    assert_eq!(first["caption"], "a tiny photo of coffee");
    assert!(first["score"].as_f64().unwrap() > 0.999, "{first}");
    let boundary = "SearchBoundary";
    let mut form = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"q.jpg\"\r\n\
         Content-Type: image/jpeg\r\n\r\n"
    )
    .into_bytes();
    form.extend_from_slice(&coffee);
    form.extend_from_slice(
        format!(
            "\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"top_k\"\r\n\r\n2\r\n--{boundary}--\r\n"
        )
        .as_bytes(),
    );
    let answer = server.send(
        "POST",
        "/search",
        &format!("Content-Type: multipart/form-data; boundary={boundary}\r\n"),
        &form,
    );
    assert_eq!(answer.status, 200, "{}", answer.json);
    assert_eq!(answer.json["results"], by_image["results"]);

    // The thumbnail of a result: a JPEG scaled down to --thumbnail-size.
    let url = first["thumbnail"].as_str().unwrap();
    assert_eq!(url, format!("/thumbnail/{}", first["id"]));
    let (status, head, jpeg) = server.get_raw(url);
    assert_eq!(status, 200, "{head}");
    assert!(head.contains("content-type: image/jpeg"), "{head}");
    let small = coca_image::decode_rgb(&jpeg, "thumbnail").expect("a JPEG");
    assert!(small.width().max(small.height()) <= 32);

    // Anything but an id of the index is a 404 JSON error: no path reaches the file system.
    for path in [
        "/thumbnail/5",
        "/thumbnail/-1",
        "/thumbnail/0x1",
        "/thumbnail/99999999999999999999999",
        "/thumbnail/..%2F..%2FCargo.toml",
        "/thumbnail/%2e%2e",
        "/thumbnail/fixtures%2Fdata%2Ffolder%2Fcoffee.jpg",
    ] {
        let (status, head, body) = server.get_raw(path);
        assert_eq!(status, 404, "{path}: {head}");
        let error: Value = serde_json::from_slice(&body).unwrap();
        assert!(
            error["error"]
                .as_str()
                .unwrap()
                .contains("no image with id"),
            "{path}: {error}"
        );
    }
    let (status, _, body) = server.get_raw("/thumbnail/../../Cargo.toml");
    assert_eq!(status, 404);
    assert!(serde_json::from_slice::<Value>(&body).unwrap()["error"].is_string());

    // Bad searches.
    for (body, fragment) in [
        (json!({"top_k": 3}), "give one query"),
        (json!({"text": "a", "image": b64}), "give one query"),
        (
            json!({"text": "a", "top_k": 0}),
            "\"top_k\" must be from 1 to 100",
        ),
        (json!({"text": "a", "top_k": 101}), "(--max-results)"),
        (
            json!({"text": "a", "against": "audio"}),
            "\"against\": \"audio\" is not",
        ),
        (json!({"text": ""}), "text"),
        (json!({"image": "not base64!"}), "not valid base64"),
    ] {
        let (status, answer) = server.post("/search", &body);
        assert_eq!(status, 400, "{body}: {answer}");
        assert!(
            answer["error"].as_str().unwrap().contains(fragment),
            "{body}: {answer}"
        );
    }
    let (status, by_text) = server.post(
        "/search",
        &json!({"text": "a small bitmap", "against": "text", "top_k": 1}),
    );
    assert_eq!(status, 200, "{by_text}");
    assert_eq!(by_text["against"], "text");
    assert_eq!(by_text["results"][0]["caption"], "a small bitmap");
}

#[test]
fn without_an_index_search_and_thumbnails_are_404_and_a_bad_index_is_refused() {
    let server = Server::start(&[]);
    let (status, answer) = server.post("/search", &json!({"text": "a cat"}));
    assert_eq!(status, 404);
    assert!(
        answer["error"].as_str().unwrap().contains("--index DIR"),
        "{answer}"
    );
    let (status, _, body) = server.get_raw("/thumbnail/0");
    assert_eq!(status, 404);
    assert!(String::from_utf8_lossy(&body).contains("--index DIR"));
    let (_, health) = server.request("GET", "/health", b"");
    assert!(health["index"].is_null(), "{health}");

    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nothing-here");
    let mut args = serve_args("0").to_vec();
    args.extend(["--index", missing.to_str().unwrap()]);
    common::assert_fails_with(&coca(&args), &["--index", "nothing-here"]);
}

#[test]
fn each_caption_request_may_choose_its_strategy() {
    let server = Server::start(&[]);
    let (_, health) = server.request("GET", "/health", b"");
    assert_eq!(
        health["caption_strategies"],
        json!(["greedy", "beam", "top-k", "top-p"])
    );
    let cli = |strategy: &str| {
        let o = coca(&[
            "caption",
            "--model",
            DEMO_CFG,
            "--pretrained",
            DEMO_WEIGHTS,
            "--strategy",
            strategy,
            "--max-length",
            "8",
            "--json",
            IMAGE,
        ]);
        assert!(o.status.success(), "{}", common::stderr(&o));
        let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
        v["captions"][0]["caption"].clone()
    };
    let (greedy, beam) = (cli("greedy"), cli("beam"));
    assert_ne!(
        greedy, beam,
        "the demo model decodes differently with beams"
    );
    // Concurrent requests with different settings are not merged into one pass: each gets its own strategy.
    let answers: Vec<(Option<&str>, (u16, Value))> = std::thread::scope(|s| {
        let handles: Vec<_> = [None, Some("beam"), Some("greedy"), Some("beam")]
            .into_iter()
            .map(|strategy| {
                let server = &server;
                s.spawn(move || {
                    let mut body = json!({"images": [image_b64()]});
                    if let Some(name) = strategy {
                        body["strategy"] = json!(name);
                    }
                    (strategy, server.post("/caption", &body))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (strategy, (status, answer)) in answers {
        assert_eq!(status, 200, "{answer}");
        let want = if strategy == Some("beam") {
            &beam
        } else {
            &greedy
        };
        assert_eq!(&answer["captions"][0]["caption"], want, "{strategy:?}");
    }
    let (status, answer) = server.post(
        "/caption",
        &json!({"images": [image_b64()], "strategy": "Beam Search"}),
    );
    assert_eq!(status, 400);
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("\"strategy\": \"Beam Search\" is not one of greedy, beam, top-k, top-p"),
        "{answer}"
    );
}
