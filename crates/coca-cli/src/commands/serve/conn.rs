//! Connections: HTTP/1.1 through hyper with a header read timeout and an idle keep-alive timeout, a cap on open
//! connections (at the cap the longest-idle connection makes room, or the newcomer gets a 503 when all are busy),
//! and a graceful shutdown that lets requests in flight finish until a deadline, then closes what is left.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;

use super::routes::{handle, AppState};

/// The connection limits.
#[derive(Debug, Clone)]
pub struct ConnLimits {
    /// Time for a client to send a request's headers (from the first wait for them).
    pub header_timeout: Duration,
    /// How long a connection may sit idle between requests (zero: one request per connection).
    pub idle_timeout: Duration,
    /// Most connections open at once.
    pub max_connections: usize,
    /// After the stop signal, how long requests in flight may take before their connections are closed.
    pub shutdown_timeout: Duration,
}

/// One open connection, as the accept loop sees it.
struct ConnState {
    /// Requests being answered on it.
    busy: AtomicUsize,
    /// Milliseconds since the server's start at its last request's start or end.
    last_active_ms: AtomicU64,
    /// Asked to close (to make room, or idle too long).
    closing: AtomicBool,
    close: Notify,
}

/// The open connections.
struct Registry {
    epoch: Instant,
    next_id: AtomicU64,
    open: Mutex<HashMap<u64, Arc<ConnState>>>,
}

impl Registry {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<ConnState>>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Connections that are not yet closing.
    fn active(&self) -> usize {
        self.lock()
            .values()
            .filter(|c| !c.closing.load(Ordering::Acquire))
            .count()
    }

    /// Ask the longest-idle connection without a request in flight to close; false when every connection is busy.
    fn evict_idle(&self) -> bool {
        let open = self.lock();
        let victim = open
            .values()
            .filter(|c| !c.closing.load(Ordering::Acquire) && c.busy.load(Ordering::Acquire) == 0)
            .min_by_key(|c| c.last_active_ms.load(Ordering::Acquire));
        match victim {
            Some(c) => {
                c.closing.store(true, Ordering::Release);
                c.close.notify_one();
                true
            }
            None => false,
        }
    }
}

/// Marks a connection busy while one of its requests is answered.
struct Busy {
    conn: Arc<ConnState>,
    registry: Arc<Registry>,
}

impl Busy {
    fn new(conn: Arc<ConnState>, registry: Arc<Registry>) -> Self {
        conn.busy.fetch_add(1, Ordering::AcqRel);
        conn.last_active_ms
            .store(registry.now_ms(), Ordering::Release);
        Self { conn, registry }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.conn
            .last_active_ms
            .store(self.registry.now_ms(), Ordering::Release);
        self.conn.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What the shutdown did.
#[derive(Debug)]
pub struct Stopped {
    /// Connections still open at the deadline, closed without finishing.
    pub cut: usize,
}

/// Serve `router` on `listener` until `stop` resolves, then drain (see the module's description).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    state: Arc<AppState>,
    limits: ConnLimits,
    stop: impl Future<Output = ()>,
) -> Stopped {
    let registry = Arc::new(Registry {
        epoch: Instant::now(),
        next_id: AtomicU64::new(0),
        open: Mutex::new(HashMap::new()),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of file descriptors, most likely: give connections time to close.
                        tracing::warn!("accepting a connection failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if registry.active() >= limits.max_connections && !registry.evict_idle() {
                    tasks.spawn(refuse(stream, limits.max_connections));
                    continue;
                }
                let id = registry.next_id.fetch_add(1, Ordering::Relaxed);
                let conn = Arc::new(ConnState {
                    busy: AtomicUsize::new(0),
                    last_active_ms: AtomicU64::new(registry.now_ms()),
                    closing: AtomicBool::new(false),
                    close: Notify::new(),
                });
                registry.lock().insert(id, conn.clone());
                tasks.spawn(connection(
                    stream,
                    router.clone(),
                    state.clone(),
                    limits.clone(),
                    conn,
                    registry.clone(),
                    stop_rx.clone(),
                    id,
                ));
            }
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(limits.shutdown_timeout, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    let cut = if drained.is_err() { tasks.len() } else { 0 };
    if cut > 0 {
        tracing::warn!(
            "{cut} connections still busy after {:?} (--shutdown-timeout): closed",
            limits.shutdown_timeout
        );
        tasks.shutdown().await;
    }
    Stopped { cut }
}

/// All connections are busy: say so and close.
async fn refuse(mut stream: TcpStream, max: usize) {
    let body = serde_json::json!({
        "error": format!("the server is busy: {max} connections are open (--max-connections); retry later")
    })
    .to_string();
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream.write_all(response.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// Serve one connection until the client closes it, it idles out, it is asked to make room, or the server stops.
#[allow(clippy::too_many_arguments)]
async fn connection(
    stream: TcpStream,
    router: Router,
    state: Arc<AppState>,
    limits: ConnLimits,
    conn: Arc<ConnState>,
    registry: Arc<Registry>,
    mut stop: watch::Receiver<bool>,
    id: u64,
) {
    let _ = stream.set_nodelay(true);
    let service = {
        let (conn, registry) = (conn.clone(), registry.clone());
        hyper::service::service_fn(move |request: Request<Incoming>| {
            let busy = Busy::new(conn.clone(), registry.clone());
            let (state, router) = (state.clone(), router.clone());
            async move {
                let response = handle(state, router, request.map(axum::body::Body::new)).await;
                drop(busy);
                Ok::<_, std::convert::Infallible>(response)
            }
        })
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(!limits.idle_timeout.is_zero());
    let http = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(http);
    let mut closing = false;
    loop {
        // A busy connection is looked at again an idle timeout later; an idle one when its time is up.
        let idle_in = if conn.busy.load(Ordering::Acquire) > 0 {
            limits.idle_timeout
        } else {
            let idle_at = conn.last_active_ms.load(Ordering::Acquire)
                + limits.idle_timeout.as_millis() as u64;
            Duration::from_millis(idle_at.saturating_sub(registry.now_ms()))
        };
        tokio::select! {
            result = http.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!("connection ended: {e}");
                }
                break;
            }
            () = conn.close.notified(), if !closing => {
                http.as_mut().graceful_shutdown();
                closing = true;
            }
            _ = stop.changed(), if !closing => {
                // A connection with no request being answered (idle, or still sending headers) has nothing in
                // flight: close it now, instead of waiting for its header timeout.
                if conn.busy.load(Ordering::Acquire) == 0 {
                    break;
                }
                http.as_mut().graceful_shutdown();
                closing = true;
            }
            () = tokio::time::sleep(idle_in), if !closing && !limits.idle_timeout.is_zero() => {
                let idle = conn.busy.load(Ordering::Acquire) == 0
                    && registry.now_ms() >= conn.last_active_ms.load(Ordering::Acquire)
                        + limits.idle_timeout.as_millis() as u64;
                if idle {
                    http.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
        }
    }
    registry.lock().remove(&id);
}
