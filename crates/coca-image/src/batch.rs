//! Preprocessing many files on several threads.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::config::PreprocessConfig;
use crate::error::ImageError;
use crate::preprocess_path;

/// Loads and preprocesses every path, using `threads` worker threads (0
/// means one per available CPU). Results come back in input order, one per
/// path, so a missing or corrupt file only fails its own entry.
pub fn preprocess_paths<P: AsRef<Path> + Sync>(
    paths: &[P],
    cfg: &PreprocessConfig,
    threads: usize,
) -> Vec<Result<Vec<f32>, ImageError>> {
    let threads = match threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
    .clamp(1, paths.len().max(1));
    // Workers pull the next index from a shared counter, so one slow image
    // does not hold up a fixed share of the batch.
    let next = AtomicUsize::new(0);
    let work = || {
        let mut done = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(path) = paths.get(i) else {
                return done;
            };
            done.push((i, preprocess_path(path, cfg)));
        }
    };
    let mut slots: Vec<Option<Result<Vec<f32>, ImageError>>> = Vec::new();
    slots.resize_with(paths.len(), || None);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads).map(|_| scope.spawn(work)).collect();
        for worker in workers {
            match worker.join() {
                Ok(done) => {
                    for (i, result) in done {
                        slots[i] = Some(result);
                    }
                }
                // Preprocessing does not panic on bad input; a panic is a
                // bug and is passed on unchanged.
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
    });
    slots
        .into_iter()
        .map(|slot| slot.unwrap_or_else(|| unreachable!("every index is claimed by a worker")))
        .collect()
}
