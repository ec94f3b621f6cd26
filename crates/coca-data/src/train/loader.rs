//! The loader itself: a producer thread walking the epochs (of one source, or of every source of a mixture
//! as the draws pick them), worker threads decoding and transforming, and the consumer side that puts
//! results back into stream order and cuts batches.
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

use super::mixture::{check_factors, source_seed, Mix};
use super::rng::{Purpose, Rng};
use super::source::{Item, Order, Payload, Prepared};
use super::state::{LoaderState, SkipCounts, SkipKind, SourceState};
use super::transform::{transform, Picture};
use super::{Batch, IndexedGet, LoaderConfig, TrainSource, PREFETCH_BATCHES};

/// Work for a decoding thread, numbered in stream order.
struct Job {
    seq: u64,
    work: Work,
}

/// `source` is the index of the source (always 0 without a mixture).
enum Work {
    Sample {
        source: usize,
        epoch: u64,
        position: u64,
        key: String,
        text: Option<String>,
        payload: Payload,
    },
    Skip {
        source: usize,
        kind: SkipKind,
        message: String,
    },
    EpochEnd {
        source: usize,
    },
    Fatal {
        input: String,
        detail: String,
    },
}

/// A finished job.
enum Done {
    Sample {
        source: usize,
        pixels: Vec<f32>,
        text: String,
        key: String,
    },
    Skip {
        source: usize,
        kind: SkipKind,
        message: String,
    },
    EpochEnd {
        source: usize,
    },
    /// A label outside the class list.
    Fatal {
        input: String,
        detail: String,
    },
    /// A worker panicked (a bug); the message says where.
    Panicked(String),
}

/// Why the loader cannot go on; kept so every later call reports it again.
#[derive(Clone)]
enum Failure {
    NoSamples { input: String, detail: String },
    Label { input: String, detail: String },
    Stopped(String),
}

impl Failure {
    fn error(&self) -> DataError {
        match self.clone() {
            Failure::NoSamples { input, detail } => DataError::NoSamples { input, detail },
            Failure::Label { input, detail } => DataError::Label { input, detail },
            Failure::Stopped(detail) => DataError::LoaderStopped { detail },
        }
    }
}

/// One source as the producer walks it.
struct Lane {
    prepared: Prepared,
    order: Order,
}

/// What a decoding thread needs of one source.
struct LaneContext {
    seed: u64,
    get: Option<IndexedGet>,
}

/// Everything a decoding thread needs.
struct WorkerContext {
    preprocess: PreprocessConfig,
    augment: bool,
    rank: u64,
    lanes: Vec<LaneContext>,
}

/// A source checked and ready to read, with its name for messages and its sample count.
struct Opened {
    lane: Lane,
    context: LaneContext,
    name: String,
}

/// Streams training batches from a [`TrainSource`] (or a mixture of them) forever, epoch after epoch. See
/// the [module docs](super) for ordering, skipping and resume semantics.
pub struct TrainLoader {
    batch_size: usize,
    image_len: usize,
    /// The sources' names, for messages.
    inputs: Vec<String>,
    /// A mixture's draws and per-source states; `None` for a single source.
    mix: Option<Mix>,
    /// The sample counts the mixture is weighed with.
    sizes: Vec<u64>,
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
    /// without its caption column, a collection without a single captioned sample, a labelled collection
    /// whose labels do not fit its class names, or a saved state of a mixture.
    pub fn new(
        source: TrainSource,
        cfg: LoaderConfig,
        state: LoaderState,
    ) -> Result<Self, DataError> {
        check_config(&cfg)?;
        if !state.sources.is_empty() {
            return Err(DataError::LoaderConfig {
                detail: format!(
                    "the saved data position is a mixture of {} sources; this run reads one",
                    state.sources.len()
                ),
            });
        }
        if let TrainSource::Indexed { len, .. } = &source {
            let per_rank = len / cfg.world_size as u64;
            if per_rank < cfg.batch_size as u64 {
                return Err(DataError::NoSamples {
                    input: format!("indexed source of {len} samples"),
                    detail: format!(
                        "{per_rank} per rank, fewer than one batch of {}",
                        cfg.batch_size
                    ),
                });
            }
        }
        let opened = open_source(source, &cfg, cfg.seed)?;
        Self::start(vec![opened], None, Vec::new(), cfg, state)
    }

    /// A loader over a mixture of sources, each with its upsampling factor (see [`super::mixture`] for what
    /// the factors mean, how sources are drawn and how each cycles through its own epochs). Batches are cut
    /// from the mixed stream: no source drops a partial batch at the end of its epoch. `state` is
    /// `LoaderState::default()` for a fresh run, or a mixture's saved state with one entry per source.
    ///
    /// Source `i` is ordered and augmented as a loader of it alone with the seed
    /// [`super::source_seed`]`(cfg.seed, i)`. Fails as [`TrainLoader::new`] does for each source, on factors
    /// that [`super::parse_upsampling_factors`] would refuse, and on a saved state of another number of
    /// sources.
    pub fn mixture(
        sources: Vec<(TrainSource, f64)>,
        cfg: LoaderConfig,
        mut state: LoaderState,
    ) -> Result<Self, DataError> {
        check_config(&cfg)?;
        let factors: Vec<f64> = sources.iter().map(|(_, f)| *f).collect();
        check_factors(&factors, sources.len()).map_err(|detail| DataError::Mixture {
            detail: format!("upsampling factors {factors:?}: {detail}"),
        })?;
        if state.sources.is_empty() && state == LoaderState::default() {
            state.sources = vec![SourceState::default(); sources.len()];
        } else if state.sources.len() != sources.len() {
            return Err(DataError::Mixture {
                detail: format!(
                    "the saved data position holds {} source(s), this mixture has {}: resume with the same \
                     sources",
                    state.sources.len(),
                    sources.len()
                ),
            });
        }
        let opened = sources
            .into_iter()
            .enumerate()
            .map(|(i, (source, _))| open_source(source, &cfg, source_seed(cfg.seed, i)))
            .collect::<Result<Vec<_>, _>>()?;
        let sizes: Vec<u64> = opened
            .iter()
            .map(|o| o.lane.prepared.size_estimate())
            .collect();
        let mix = Mix::new(&factors, &sizes, cfg.seed, cfg.rank, cfg.world_size);
        Self::start(opened, Some(mix), sizes, cfg, state)
    }

    /// Start the producer and the workers.
    fn start(
        opened: Vec<Opened>,
        mix: Option<Mix>,
        sizes: Vec<u64>,
        cfg: LoaderConfig,
        state: LoaderState,
    ) -> Result<Self, DataError> {
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
        let mut lanes = Vec::with_capacity(opened.len());
        let mut contexts = Vec::with_capacity(opened.len());
        let mut inputs = Vec::with_capacity(opened.len());
        for o in opened {
            lanes.push(o.lane);
            contexts.push(o.context);
            inputs.push(o.name);
        }
        let mut threads = Vec::with_capacity(workers + 1);
        let (draws, start) = (mix.clone(), state.clone());
        threads.push(spawn("coca-train-order", move || {
            produce(&lanes, draws.as_ref(), &start, &job_tx, &credit_rx)
        })?);
        let context = Arc::new(WorkerContext {
            preprocess: cfg.preprocess.clone(),
            augment: cfg.augment,
            rank: cfg.rank as u64,
            lanes: contexts,
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
            inputs,
            mix,
            sizes,
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
                Done::Sample {
                    source,
                    pixels,
                    text,
                    key,
                } => {
                    self.cursor.position += 1;
                    if let Some(s) = self.cursor.sources.get_mut(source) {
                        s.position += 1;
                        s.epoch_samples += 1;
                        s.samples += 1;
                    }
                    batch.pixels.extend_from_slice(&pixels);
                    batch.texts.push(text);
                    batch.keys.push(key);
                    if batch.texts.len() == self.batch_size {
                        self.cursor.batches_in_epoch += 1;
                        self.returned = self.cursor.clone();
                        return Ok(batch);
                    }
                }
                Done::Skip {
                    source,
                    kind,
                    message,
                } => {
                    self.cursor.position += 1;
                    if let Some(s) = self.cursor.sources.get_mut(source) {
                        s.position += 1;
                    }
                    self.cursor.skipped.add(kind, message);
                }
                Done::EpochEnd { source } if self.mix.is_some() => {
                    if let Err(failure) = self.end_source_epoch(source) {
                        return Err(self.fail(failure));
                    }
                }
                Done::EpochEnd { .. } => {
                    if self.cursor.batches_in_epoch == 0 {
                        let failure = Failure::NoSamples {
                            input: self.inputs[0].clone(),
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
                Done::Fatal { input, detail } => {
                    return Err(self.fail(Failure::Label { input, detail }))
                }
                Done::Panicked(message) => return Err(self.fail(Failure::Stopped(message))),
            }
        }
    }

    /// A mixture's source reached the end of its epoch: it starts the next one, unless this one gave
    /// nothing usable (then it never will).
    fn end_source_epoch(&mut self, source: usize) -> Result<(), Failure> {
        let skipped = self.cursor.skipped.to_string();
        let Some(s) = self.cursor.sources.get_mut(source) else {
            return Err(Failure::Stopped(format!(
                "an epoch end of source {source}, which the mixture does not have"
            )));
        };
        if s.epoch_samples == 0 {
            return Err(Failure::NoSamples {
                input: self.inputs[source].clone(),
                detail: format!(
                    "its epoch {} in the mixture gave no usable sample ({skipped})",
                    s.epoch
                ),
            });
        }
        s.epoch += 1;
        s.position = 0;
        s.epoch_samples = 0;
        Ok(())
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

    /// Usable samples each source of a mixture has put into the batches returned so far, in source order
    /// (empty for a single source): for the logs and `metrics.jsonl`.
    pub fn source_samples(&self) -> Vec<u64> {
        self.returned.source_samples()
    }

    /// Each source's expected share of the samples, `f_i·n_i / Σ f_j·n_j` (`[1.0]` for a single source).
    pub fn source_shares(&self) -> Vec<f64> {
        self.mix.as_ref().map_or_else(|| vec![1.0], Mix::shares)
    }

    /// The sample counts `n_i` a mixture is weighed with, in source order (empty for a single source): exact
    /// for listed and indexed sources, estimated for shards (see [`super::mixture`]).
    pub fn source_sizes(&self) -> Vec<u64> {
        self.sizes.clone()
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

/// Check a source and prepare its epochs, with `seed` ordering and augmenting it.
fn open_source(source: TrainSource, cfg: &LoaderConfig, seed: u64) -> Result<Opened, DataError> {
    let (prepared, name, get) = match source {
        TrainSource::Stream(input) => {
            let prepared = match &input {
                crate::Input::Shards(pattern) => Prepared::shards(pattern, None, cfg.world_size)?,
                other => Prepared::listed(other, cfg.world_size)?,
            };
            (prepared, input.to_string(), None)
        }
        TrainSource::Labelled { input, prompts } => {
            let prepared = Prepared::labelled(&input, prompts, cfg.world_size)?;
            (prepared, input.to_string(), None)
        }
        TrainSource::Indexed { len, get } => (
            Prepared::indexed(len, cfg.world_size)?,
            format!("indexed source of {len} samples"),
            Some(get),
        ),
    };
    let order = Order {
        seed,
        shuffle_buffer: cfg.shuffle_buffer,
        rank: cfg.rank,
        world_size: cfg.world_size,
    };
    Ok(Opened {
        lane: Lane { prepared, order },
        context: LaneContext { seed, get },
        name,
    })
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>, DataError> {
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(f)
        .map_err(|e| DataError::LoaderStopped {
            detail: format!("cannot start thread {name}: {e}"),
        })
}

/// The producer: from `state` on, every epoch's items of the single source, or for a mixture the next item
/// of each slot's drawn source, numbered, each issued against a credit. Returns when the loader is dropped.
fn produce(
    lanes: &[Lane],
    mix: Option<&Mix>,
    state: &LoaderState,
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
    let Some(mix) = mix else {
        let lane = &lanes[0];
        for epoch in state.epoch.. {
            let start = if epoch == state.epoch {
                state.position
            } else {
                0
            };
            let items = lane.prepared.epoch_items(epoch, start, lane.order);
            for (position, item) in (start..).zip(items) {
                if !issue(work(0, epoch, position, item)) {
                    return;
                }
            }
            if !issue(Work::EpochEnd { source: 0 }) {
                return;
            }
        }
        return;
    };
    // Each source's epoch and position, and its items from there.
    let mut at: Vec<(u64, u64)> = state
        .sources
        .iter()
        .map(|s| (s.epoch, s.position))
        .collect();
    let mut items: Vec<_> = lanes
        .iter()
        .zip(&at)
        .map(|(lane, &(epoch, position))| lane.prepared.epoch_items(epoch, position, lane.order))
        .collect();
    for slot in state.position.. {
        let i = mix.draw(slot);
        loop {
            let (epoch, position) = at[i];
            match items[i].next() {
                Some(item) => {
                    if !issue(work(i, epoch, position, item)) {
                        return;
                    }
                    at[i].1 += 1;
                    break;
                }
                None => {
                    if !issue(Work::EpochEnd { source: i }) {
                        return;
                    }
                    at[i] = (epoch + 1, 0);
                    items[i] = lanes[i].prepared.epoch_items(epoch + 1, 0, lanes[i].order);
                }
            }
        }
    }
}

/// The job for an item of `source` at `(epoch, position)`.
fn work(source: usize, epoch: u64, position: u64, item: Item) -> Work {
    match item {
        Item::Sample { key, text, payload } => Work::Sample {
            source,
            epoch,
            position,
            key,
            text,
            payload,
        },
        Item::Skip { kind, message } => Work::Skip {
            source,
            kind,
            message,
        },
        Item::Fatal { input, detail } => Work::Fatal { input, detail },
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
    let (source, epoch, position, key, text, payload) = match work {
        Work::Sample {
            source,
            epoch,
            position,
            key,
            text,
            payload,
        } => (source, epoch, position, key, text, payload),
        Work::Skip {
            source,
            kind,
            message,
        } => {
            return Done::Skip {
                source,
                kind,
                message,
            }
        }
        Work::EpochEnd { source } => return Done::EpochEnd { source },
        Work::Fatal { input, detail } => return Done::Fatal { input, detail },
    };
    let Some(lane) = context.lanes.get(source) else {
        return Done::Panicked(format!(
            "an item of source {source}, which the loader does not have"
        ));
    };
    let corrupt = |message: String| Done::Skip {
        source,
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
            let Some(get) = &lane.get else {
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
            source,
            kind: SkipKind::MissingCaption,
            message: format!("sample {key}: blank caption"),
        };
    };
    let mut rng = context.augment.then(|| {
        Rng::keyed(
            lane.seed,
            Purpose::Augment,
            &[epoch, context.rank, position],
        )
    });
    let pixels = transform(picture, &context.preprocess, rng.as_mut());
    Done::Sample {
        source,
        pixels,
        text,
        key,
    }
}
