//! The loader itself: a producer thread walking the epochs, worker threads decoding and transforming, and
//! the consumer side that puts results back into stream order and cuts batches.
//!
//! Back-pressure: the producer takes a credit before issuing each item and the consumer returns it when the
//! item leaves the reorder buffer, so at most `PREFETCH_BATCHES × batch_size + workers` items are in
//! flight (queued, being decoded, or waiting to be batched) however slow the consumer is.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use coca_image::{DecodedImage, PreprocessConfig};

use crate::error::DataError;
use crate::sample::{clean_caption, ImageData};

use super::rng::{Purpose, Rng};
use super::source::{Item, Order, Payload, Prepared};
use super::state::{LoaderState, SkipCounts, SkipKind};
use super::transform::{transform, Picture};
use super::{Batch, IndexedGet, LoaderConfig, TrainSource, PREFETCH_BATCHES};

/// Work for a decoding thread, numbered in stream order.
struct Job {
    seq: u64,
    work: Work,
}

enum Work {
    Sample {
        epoch: u64,
        position: u64,
        key: String,
        text: Option<String>,
        payload: Payload,
    },
    Skip {
        kind: SkipKind,
        message: String,
    },
    EpochEnd,
}

/// A finished job.
enum Done {
    Sample {
        pixels: Vec<f32>,
        text: String,
        key: String,
    },
    Skip {
        kind: SkipKind,
        message: String,
    },
    EpochEnd,
    /// A worker panicked (a bug); the message says where.
    Panicked(String),
}

/// Why the loader cannot go on; kept so every later call reports it again.
#[derive(Clone)]
enum Failure {
    NoSamples { input: String, detail: String },
    Stopped(String),
}

impl Failure {
    fn error(&self) -> DataError {
        match self.clone() {
            Failure::NoSamples { input, detail } => DataError::NoSamples { input, detail },
            Failure::Stopped(detail) => DataError::LoaderStopped { detail },
        }
    }
}

/// Everything a decoding thread needs.
struct WorkerContext {
    preprocess: PreprocessConfig,
    augment: bool,
    seed: u64,
    rank: u64,
    get: Option<IndexedGet>,
}

/// Streams training batches from a [`TrainSource`] forever, epoch after epoch. See the [module
/// docs](super) for ordering, skipping and resume semantics.
pub struct TrainLoader {
    batch_size: usize,
    image_len: usize,
    input: String,
    results: Receiver<(u64, Done)>,
    credits: Option<SyncSender<()>>,
    reorder: HashMap<u64, Done>,
    next_seq: u64,
    /// Where the consumer is, including a batch being assembled.
    cursor: LoaderState,
    /// Where it was after the last batch it returned.
    returned: LoaderState,
    failure: Option<Failure>,
    threads: Vec<JoinHandle<()>>,
}

impl TrainLoader {
    /// Check the source and settings and start reading at `state` (`LoaderState::default()` for a fresh
    /// run). Fails on unusable settings, an input that matches nothing, a missing or empty shard, a CSV
    /// without its caption column, or a collection without a single captioned sample.
    pub fn new(
        source: TrainSource,
        cfg: LoaderConfig,
        state: LoaderState,
    ) -> Result<Self, DataError> {
        check_config(&cfg)?;
        let (prepared, input, get) = match source {
            TrainSource::Stream(input) => {
                let prepared = match &input {
                    crate::Input::Shards(pattern) => Prepared::shards(pattern, cfg.world_size)?,
                    other => Prepared::listed(other, cfg.world_size)?,
                };
                (prepared, input.to_string(), None)
            }
            TrainSource::Indexed { len, get } => {
                let name = format!("indexed source of {len} samples");
                if len / (cfg.world_size as u64) < cfg.batch_size as u64 {
                    return Err(DataError::NoSamples {
                        input: name,
                        detail: format!(
                            "{} per rank, fewer than one batch of {}",
                            len / cfg.world_size as u64,
                            cfg.batch_size
                        ),
                    });
                }
                let prepared = Prepared::indexed(len, cfg.world_size)?;
                (prepared, name, Some(get))
            }
        };
        let workers = match cfg.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let capacity = PREFETCH_BATCHES * cfg.batch_size + workers;
        let (job_tx, job_rx) = sync_channel::<Job>(capacity);
        let (done_tx, results) = channel();
        let (credits, credit_rx) = sync_channel::<()>(capacity);
        for _ in 0..capacity {
            // The channel holds exactly `capacity` credits, so this cannot block.
            let _ = credits.send(());
        }
        let order = Order {
            seed: cfg.seed,
            shuffle_buffer: cfg.shuffle_buffer,
            rank: cfg.rank,
            world_size: cfg.world_size,
        };
        let mut threads = Vec::with_capacity(workers + 1);
        let (epoch, position) = (state.epoch, state.position);
        threads.push(spawn("coca-train-order", move || {
            produce(&prepared, order, epoch, position, &job_tx, &credit_rx)
        })?);
        let context = Arc::new(WorkerContext {
            preprocess: cfg.preprocess.clone(),
            augment: cfg.augment,
            seed: cfg.seed,
            rank: cfg.rank as u64,
            get,
        });
        let jobs = Arc::new(Mutex::new(job_rx));
        for i in 0..workers {
            let (context, jobs, done_tx) =
                (Arc::clone(&context), Arc::clone(&jobs), done_tx.clone());
            threads.push(spawn(&format!("coca-train-decode-{i}"), move || {
                decode_loop(&context, &jobs, &done_tx)
            })?);
        }
        Ok(Self {
            batch_size: cfg.batch_size,
            image_len: cfg.preprocess.tensor_len(),
            input,
            results,
            credits: Some(credits),
            reorder: HashMap::new(),
            next_seq: 0,
            cursor: state.clone(),
            returned: state,
            failure: None,
            threads,
        })
    }

    /// The next batch, crossing into the next epoch when one ends. Fails only when the loader cannot go on:
    /// an epoch without a single full batch of usable samples, or a bug in a worker thread.
    pub fn next_batch(&mut self) -> Result<Batch, DataError> {
        if let Some(failure) = &self.failure {
            return Err(failure.error());
        }
        let mut batch = Batch {
            pixels: Vec::with_capacity(self.batch_size * self.image_len),
            texts: Vec::with_capacity(self.batch_size),
            keys: Vec::with_capacity(self.batch_size),
        };
        loop {
            let done = match self.next_done() {
                Ok(done) => done,
                Err(failure) => return Err(self.fail(failure)),
            };
            match done {
                Done::Sample { pixels, text, key } => {
                    self.cursor.position += 1;
                    batch.pixels.extend_from_slice(&pixels);
                    batch.texts.push(text);
                    batch.keys.push(key);
                    if batch.texts.len() == self.batch_size {
                        self.cursor.batches_in_epoch += 1;
                        self.returned = self.cursor.clone();
                        return Ok(batch);
                    }
                }
                Done::Skip { kind, message } => {
                    self.cursor.position += 1;
                    self.cursor.skipped.add(kind, message);
                }
                Done::EpochEnd => {
                    if self.cursor.batches_in_epoch == 0 {
                        let failure = Failure::NoSamples {
                            input: self.input.clone(),
                            detail: format!(
                                "epoch {} gave {} usable samples, fewer than one batch of {} ({})",
                                self.cursor.epoch,
                                batch.len(),
                                self.batch_size,
                                self.cursor.skipped
                            ),
                        };
                        return Err(self.fail(failure));
                    }
                    // drop_last: the partial batch is discarded.
                    batch.pixels.clear();
                    batch.texts.clear();
                    batch.keys.clear();
                    self.cursor.epoch += 1;
                    self.cursor.batches_in_epoch = 0;
                    self.cursor.position = 0;
                }
                Done::Panicked(message) => return Err(self.fail(Failure::Stopped(message))),
            }
        }
    }

    /// The position after the batches returned so far: save it with a checkpoint, pass it to
    /// [`TrainLoader::new`] to resume.
    pub fn state(&self) -> LoaderState {
        self.returned.clone()
    }

    /// Samples skipped up to the last returned batch, with the last few messages.
    pub fn skipped(&self) -> SkipCounts {
        self.returned.skipped.clone()
    }

    fn fail(&mut self, failure: Failure) -> DataError {
        let err = failure.error();
        self.failure = Some(failure);
        err
    }

    /// The next finished job in stream order.
    fn next_done(&mut self) -> Result<Done, Failure> {
        loop {
            if let Some(done) = self.reorder.remove(&self.next_seq) {
                self.next_seq += 1;
                if let Some(credits) = &self.credits {
                    // Never blocks: credits in circulation never exceed the channel's capacity.
                    let _ = credits.send(());
                }
                return Ok(done);
            }
            match self.results.recv() {
                Ok((seq, done)) => {
                    self.reorder.insert(seq, done);
                }
                Err(_) => {
                    return Err(Failure::Stopped(
                        "the reading and decoding threads exited".into(),
                    ))
                }
            }
        }
    }
}

impl Drop for TrainLoader {
    fn drop(&mut self) {
        // Without credits the producer stops, which closes the job queue, which stops the workers.
        self.credits = None;
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

fn check_config(cfg: &LoaderConfig) -> Result<(), DataError> {
    let problem = if cfg.batch_size == 0 {
        Some("batch size must be at least 1".to_string())
    } else if cfg.world_size == 0 {
        Some("world size must be at least 1".to_string())
    } else if cfg.rank >= cfg.world_size {
        Some(format!(
            "rank {} outside world size {}",
            cfg.rank, cfg.world_size
        ))
    } else if cfg.preprocess.image_size == 0 {
        Some("image size must be at least 1".to_string())
    } else {
        None
    };
    match problem {
        Some(detail) => Err(DataError::LoaderConfig { detail }),
        None => Ok(()),
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>, DataError> {
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(f)
        .map_err(|e| DataError::LoaderStopped {
            detail: format!("cannot start thread {name}: {e}"),
        })
}

/// The producer: every epoch's items from `(epoch, position)` on, numbered, each issued against a credit.
/// Returns when the loader is dropped.
fn produce(
    prepared: &Prepared,
    order: Order,
    first_epoch: u64,
    first_position: u64,
    jobs: &SyncSender<Job>,
    credits: &Receiver<()>,
) {
    let mut seq = 0u64;
    let mut issue = |work: Work| -> bool {
        if credits.recv().is_err() {
            return false;
        }
        let sent = jobs.send(Job { seq, work }).is_ok();
        seq += 1;
        sent
    };
    for epoch in first_epoch.. {
        let start = if epoch == first_epoch {
            first_position
        } else {
            0
        };
        for (position, item) in (start..).zip(prepared.epoch_items(epoch, start, order)) {
            let work = match item {
                Item::Sample { key, text, payload } => Work::Sample {
                    epoch,
                    position,
                    key,
                    text,
                    payload,
                },
                Item::Skip { kind, message } => Work::Skip { kind, message },
            };
            if !issue(work) {
                return;
            }
        }
        if !issue(Work::EpochEnd) {
            return;
        }
    }
}

/// A decoding thread: takes jobs until the queue closes.
fn decode_loop(
    context: &WorkerContext,
    jobs: &Mutex<Receiver<Job>>,
    results: &Sender<(u64, Done)>,
) {
    loop {
        // A poisoned lock means another worker panicked while holding it, which cannot happen (nothing
        // in `recv` panics); stop quietly either way.
        let job = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(Job { seq, work }) = job else {
            return;
        };
        let done = catch_unwind(AssertUnwindSafe(|| run(context, work))).unwrap_or_else(|panic| {
            let what = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            Done::Panicked(format!("a decoding thread panicked: {what}"))
        });
        if results.send((seq, done)).is_err() {
            return;
        }
    }
}

/// Decode and transform one item.
fn run(context: &WorkerContext, work: Work) -> Done {
    let (epoch, position, key, text, payload) = match work {
        Work::Sample {
            epoch,
            position,
            key,
            text,
            payload,
        } => (epoch, position, key, text, payload),
        Work::Skip { kind, message } => return Done::Skip { kind, message },
        Work::EpochEnd => return Done::EpochEnd,
    };
    let corrupt = |message: String| Done::Skip {
        kind: SkipKind::CorruptImage,
        message,
    };
    let (picture, text) = match payload {
        Payload::Image(ImageData::Bytes { name, data }) => {
            match DecodedImage::decode_limited(&data, &name, &context.preprocess.limits) {
                // open_clip's WebDataset pipeline decodes shard images straight to RGB ("pilrgb").
                Ok(img) => (Picture::Rgb(img.into_rgb()), text),
                Err(e) => return corrupt(e.to_string()),
            }
        }
        Payload::Image(ImageData::Path(path)) => {
            match DecodedImage::open_limited(&path, &context.preprocess.limits) {
                Ok(img) => (Picture::Decoded(img), text),
                Err(e) => return corrupt(e.to_string()),
            }
        }
        Payload::Index(index) => {
            let Some(get) = &context.get else {
                return Done::Panicked("indexed item without an indexed source".into());
            };
            match get(index) {
                Ok((img, caption)) if img.width() > 0 && img.height() > 0 => {
                    (Picture::Rgb(img), clean_caption(&caption))
                }
                Ok((img, _)) => {
                    return corrupt(format!(
                        "sample {index}: empty {}x{} image",
                        img.width(),
                        img.height()
                    ))
                }
                Err(e) => return corrupt(format!("sample {index}: {e}")),
            }
        }
    };
    let Some(text) = text else {
        return Done::Skip {
            kind: SkipKind::MissingCaption,
            message: format!("sample {key}: blank caption"),
        };
    };
    let mut rng = context.augment.then(|| {
        Rng::keyed(
            context.seed,
            Purpose::Augment,
            &[epoch, context.rank, position],
        )
    });
    let pixels = transform(picture, &context.preprocess, rng.as_mut());
    Done::Sample { pixels, text, key }
}
