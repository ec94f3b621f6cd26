//! The threads that run the package's long calls. A call hands its work to an idle worker thread and waits for
//! the result with the GIL released, looking for Ctrl-C meanwhile. Workers are kept for the next call, so
//! that a call pays neither a thread start nor a fresh thread's first use of its memory: the kernels' packing
//! buffers are thread-local and stay allocated, warm, on the thread that ran the last call.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use pyo3::prelude::*;

use crate::errors::{caught, Error, Kind, Result};

/// Work for a worker; it calls the function it receives once its result is computed, to become idle again
/// before it hands the result over (so that the caller's next call finds it idle).
type Job = Box<dyn FnOnce(&dyn Fn()) + Send>;

/// The idle workers, the one that finished last on top, and the process they belong to: a child forked from
/// this process has none of its threads.
struct Pool {
    pid: u32,
    idle: Vec<Sender<Job>>,
}

static POOL: Mutex<Pool> = Mutex::new(Pool {
    pid: 0,
    idle: Vec::new(),
});

fn pool() -> std::sync::MutexGuard<'static, Pool> {
    // The lock is never held across anything that can panic; a poisoned pool is still consistent.
    POOL.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Run `job` on an idle worker, or on a new one when all are busy (threads calling at once each get one, so
/// there are as many workers as calls that ever ran at the same time).
fn submit(job: Job) -> Result<()> {
    let idle = {
        let mut pool = pool();
        let pid = std::process::id();
        if pool.pid != pid {
            pool.pid = pid;
            pool.idle.clear();
        }
        pool.idle.pop()
    };
    let worker = match idle {
        Some(worker) => worker,
        None => spawn()?,
    };
    // A worker's loop ends only with the process, so its channel stays open.
    worker.send(job).map_err(|_| {
        Error::new(
            Kind::Other,
            "internal error (please report it): a worker thread has ended",
        )
    })
}

/// A new worker thread: it runs the jobs it receives, one after another, for the life of the process.
fn spawn() -> Result<Sender<Job>> {
    let (tx, rx) = mpsc::channel::<Job>();
    let this = tx.clone();
    std::thread::Builder::new()
        .name("coca-worker".into())
        .spawn(move || {
            let release = || pool().idle.push(this.clone());
            for job in rx {
                job(&release);
            }
        })
        .map_err(|e| Error::new(Kind::Other, format!("cannot start a worker thread: {e}")))?;
    Ok(tx)
}

/// How often a call waiting for its worker looks for a pending Ctrl-C; the result itself wakes it at once.
const SIGNAL_POLL: Duration = Duration::from_millis(100);

/// Run `f` on a worker thread while the calling thread waits with the GIL released and, every 0.1 s, runs
/// Python's signal handlers (which do something only on the main thread). When one raises (Ctrl-C:
/// `KeyboardInterrupt`), the exception is raised at once and the flag `f` receives is set: a decoding loop that
/// watches it stops at its next step; other work finishes in the background, its result is dropped, and the
/// worker becomes idle again. This is how a single long batch, which Rust cannot pause, still gives Ctrl-C back
/// within ~0.1 s.
pub fn interruptible<T, F>(py: Python<'_>, f: F) -> PyResult<T>
where
    F: FnOnce(&AtomicBool) -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let (tx, mut rx) = mpsc::sync_channel(1);
    submit(Box::new(move |release: &dyn Fn()| {
        let result = caught(|| f(&flag));
        release();
        // The receiver is gone when the caller was interrupted; the result is not wanted then.
        let _ = tx.send(result);
    }))?;
    loop {
        let (back, received) = py.allow_threads(move || {
            let received = rx.recv_timeout(SIGNAL_POLL);
            (rx, received)
        });
        rx = back;
        match received {
            Ok(result) => return Ok(result?),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if let Err(interrupt) = py.check_signals() {
                    stop.store(true, Ordering::Relaxed);
                    return Err(interrupt);
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(Error::new(
                    Kind::Other,
                    "internal error (please report it): a worker thread ended without a result",
                )
                .into())
            }
        }
    }
}
