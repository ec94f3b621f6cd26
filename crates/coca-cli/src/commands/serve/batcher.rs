//! The model's worker thread: it merges the work queued by concurrent requests into shared forward passes and
//! answers each request with its own rows, typed by what was asked (embeddings or captions).
//!
//! The queue's only sender lives in [`Batcher`]; [`Batcher::close`] drops it, the worker finishes the jobs it
//! holds and ends, and [`Batcher::join`] waits for it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use candle_core::{DType, Tensor};
use coca_generate::{generate, GenerationConfig, Strategy};
use coca_image::PreprocessConfig;
use coca_model::{Coca, CocaConfig};
use coca_text::Tokenizer;
use serde::Serialize;
use tokio::sync::oneshot;

/// The loaded model and what running it needs; shared by the worker and the request handlers (read only).
pub struct Engine {
    /// The model.
    pub model: Coca,
    /// Its configuration.
    pub cfg: CocaConfig,
    /// The name it was loaded by (`--model`).
    pub name: String,
    /// The CLIP tokenizer, for caption text.
    pub tokenizer: Tokenizer,
    /// How captions may be decoded: first the generation flags of `coca serve`, then one config per strategy a
    /// request may name (see [`Engine::caption_settings`]).
    pub generation: Vec<GenerationConfig>,
    /// The strategies a request may name, each with its config's place in `generation`.
    pub strategies: StrategyNames,
    /// How images are preprocessed for this model.
    pub preprocess: PreprocessConfig,
}

/// Strategy names, each with the place of its config in [`Engine::generation`].
pub type StrategyNames = Vec<(String, usize)>;

impl Engine {
    /// The place in `generation` of the settings a caption request asks for: the server's flags when it names
    /// no strategy, else that strategy's; an unknown name is an error listing the known ones.
    pub fn caption_settings(&self, strategy: Option<&str>) -> Result<usize, String> {
        let Some(name) = strategy else { return Ok(0) };
        self.strategies
            .iter()
            .find(|(n, _)| n == name)
            .map(|&(_, i)| i)
            .ok_or_else(|| {
                let known: Vec<&str> = self.strategies.iter().map(|(n, _)| n.as_str()).collect();
                format!(
                    "\"strategy\": {name:?} is not one of {} (or leave it out for the server's)",
                    known.join(", ")
                )
            })
    }
}

/// One generated caption, as `coca caption --json` reports it.
#[derive(Debug, Clone, Serialize)]
pub struct CaptionRow {
    /// The decoded text.
    pub caption: String,
    /// Sum of the log-probabilities of its tokens.
    pub log_prob: f32,
    /// Whether generation ended with the end-of-text token (not the length limit).
    pub finished: bool,
}

/// What a job asks the model for, given a (count, ...) tensor of preprocessed images or token ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Task {
    EmbedImages,
    EmbedTexts,
    /// Captions decoded with `Engine::generation[i]`: only jobs with the same settings share a pass.
    Caption(usize),
}

/// Where a job's rows go: the channel's type is the task's answer type.
enum Reply {
    Embeddings(oneshot::Sender<Result<Vec<Vec<f32>>, String>>),
    Captions(oneshot::Sender<Result<Vec<CaptionRow>, String>>),
}

impl Reply {
    /// Whether the request that waits for this reply went away (its answer is no longer wanted).
    fn is_closed(&self) -> bool {
        match self {
            Self::Embeddings(tx) => tx.is_closed(),
            Self::Captions(tx) => tx.is_closed(),
        }
    }

    fn fail(self, message: String) {
        // A client that went away no longer waits for its answer.
        let _ = match self {
            Self::Embeddings(tx) => tx.send(Err(message)).map_err(drop),
            Self::Captions(tx) => tx.send(Err(message)).map_err(drop),
        };
    }
}

/// One request's share of the worker's queue.
struct Job {
    task: Task,
    input: Tensor,
    /// Rows of `input`: the images or texts this job adds to a forward pass.
    items: usize,
    reply: Reply,
}

/// The rows of one forward pass.
enum Rows {
    Embeddings(Vec<Vec<f32>>),
    Captions(Vec<CaptionRow>),
}

/// Why a job got no rows.
#[derive(Debug)]
pub enum SubmitError {
    /// The worker has stopped (the server is shutting down).
    Stopped,
    /// The model failed on this batch.
    Model(String),
}

impl std::fmt::Display for SubmitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Stopped => {
                f.write_str("the model worker has stopped (the server is shutting down)")
            }
            Self::Model(m) => f.write_str(m),
        }
    }
}

/// Counters of the worker, read by `/health` and `/metrics`.
#[derive(Default)]
pub struct BatchStats {
    /// Forward passes run.
    pub passes: AtomicU64,
    /// Items in them.
    pub items: AtomicU64,
    /// Jobs queued and not yet started.
    pub queued: AtomicUsize,
    /// Forward passes by their item count: `[count ≤ 1, ≤ 2, ≤ 4, ...]` (powers of two, the last open-ended).
    pub sizes: [AtomicU64; BATCH_SIZE_BUCKETS],
}

/// Buckets of [`BatchStats::sizes`]: 1, 2, 4, ..., 512, and more.
pub const BATCH_SIZE_BUCKETS: usize = 11;

impl BatchStats {
    fn record(&self, items: usize) {
        self.passes.fetch_add(1, Ordering::Relaxed);
        self.items.fetch_add(items as u64, Ordering::Relaxed);
        let bucket = (items.max(1).next_power_of_two().trailing_zeros() as usize)
            .min(BATCH_SIZE_BUCKETS - 1);
        self.sizes[bucket].fetch_add(1, Ordering::Relaxed);
    }
}

/// The handle requests queue work through.
pub struct Batcher {
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    worker: Mutex<Option<JoinHandle<()>>>,
    /// The worker's counters.
    pub stats: Arc<BatchStats>,
}

impl Batcher {
    /// Start the worker thread: up to `max_batch` items per merged forward pass, waiting up to `wait` after a
    /// batch's first job for more.
    pub fn start(engine: Arc<Engine>, max_batch: usize, wait: Duration) -> Result<Self> {
        let (jobs, queue) = mpsc::channel();
        let stats = Arc::new(BatchStats::default());
        let worker_stats = stats.clone();
        let worker = std::thread::Builder::new()
            .name("coca-model".into())
            .spawn(move || worker(&engine, &worker_stats, queue, max_batch, wait))
            .context("starting the model's worker thread")?;
        Ok(Self {
            jobs: Mutex::new(Some(jobs)),
            worker: Mutex::new(Some(worker)),
            stats,
        })
    }

    /// Image embeddings for a (n, 3, S, S) tensor, one row per image.
    pub async fn embed_images(&self, pixels: Tensor) -> Result<Vec<Vec<f32>>, SubmitError> {
        let (tx, rx) = oneshot::channel();
        self.submit(Task::EmbedImages, pixels, Reply::Embeddings(tx))?;
        answer(rx).await
    }

    /// Text embeddings for a (n, context) tensor of token ids, one row per text.
    pub async fn embed_texts(&self, ids: Tensor) -> Result<Vec<Vec<f32>>, SubmitError> {
        let (tx, rx) = oneshot::channel();
        self.submit(Task::EmbedTexts, ids, Reply::Embeddings(tx))?;
        answer(rx).await
    }

    /// Captions for a (n, 3, S, S) tensor, one per image, decoded with the engine's settings number `settings`
    /// (from [`Engine::caption_settings`]).
    pub async fn caption(
        &self,
        pixels: Tensor,
        settings: usize,
    ) -> Result<Vec<CaptionRow>, SubmitError> {
        let (tx, rx) = oneshot::channel();
        self.submit(Task::Caption(settings), pixels, Reply::Captions(tx))?;
        answer(rx).await
    }

    fn submit(&self, task: Task, input: Tensor, reply: Reply) -> Result<(), SubmitError> {
        let items = input
            .dim(0)
            .map_err(|e| SubmitError::Model(e.to_string()))?;
        let jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        let sender = jobs.as_ref().ok_or(SubmitError::Stopped)?;
        self.stats.queued.fetch_add(1, Ordering::Relaxed);
        let job = Job {
            task,
            input,
            items,
            reply,
        };
        sender.send(job).map_err(|_| {
            self.stats.queued.fetch_sub(1, Ordering::Relaxed);
            SubmitError::Stopped
        })
    }

    /// Close the queue: the worker answers the jobs it already holds, then ends.
    pub fn close(&self) {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner()).take();
    }

    /// Close the queue and wait for the worker thread to end.
    pub fn join(&self) {
        self.close();
        let worker = self.worker.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(worker) = worker {
            if worker.join().is_err() {
                tracing::error!("the model worker thread panicked");
            }
        }
    }
}

impl Drop for Batcher {
    fn drop(&mut self) {
        self.join();
    }
}

async fn answer<T>(rx: oneshot::Receiver<Result<T, String>>) -> Result<T, SubmitError> {
    match rx.await {
        Ok(rows) => rows.map_err(SubmitError::Model),
        Err(_) => Err(SubmitError::Stopped),
    }
}

/// Take the oldest job, merge queued jobs of the same task into its batch while they fit, run the batch once, and
/// reply to each job with its rows. Jobs of another task wait for a later batch, in order. Ends when the queue is
/// closed and empty.
fn worker(
    engine: &Engine,
    stats: &BatchStats,
    queue: mpsc::Receiver<Job>,
    max_batch: usize,
    wait: Duration,
) {
    let mut waiting: VecDeque<Job> = VecDeque::new();
    loop {
        let first = match waiting.pop_front() {
            Some(job) => job,
            None => match queue.recv() {
                Ok(job) => job,
                Err(_) => return,
            },
        };
        // Sampled captions follow their batch's random stream: merging would make them depend on other requests.
        let mergeable = match first.task {
            Task::Caption(i) => !matches!(
                engine.generation.get(i).map(|g| g.strategy),
                Some(Strategy::Sample(_))
            ),
            _ => true,
        };
        let mut batch = Batch {
            task: first.task,
            items: first.items,
            jobs: vec![first],
            limit: if mergeable { max_batch } else { 0 },
        };
        for job in std::mem::take(&mut waiting) {
            if let Some(job) = batch.offer(job) {
                waiting.push_back(job);
            }
        }
        let deadline = Instant::now() + wait;
        while batch.items < batch.limit {
            let left = deadline.saturating_duration_since(Instant::now());
            let next = if left.is_zero() {
                queue.try_recv().ok()
            } else {
                queue.recv_timeout(left).ok()
            };
            let Some(job) = next else { break };
            if let Some(job) = batch.offer(job) {
                waiting.push_back(job);
            }
        }
        stats.queued.fetch_sub(batch.jobs.len(), Ordering::Relaxed);
        // Requests that timed out or whose client left while queued cost no forward pass.
        let jobs: Vec<Job> = batch
            .jobs
            .into_iter()
            .filter(|j| !j.reply.is_closed())
            .collect();
        if jobs.is_empty() {
            continue;
        }
        stats.record(jobs.iter().map(|job| job.items).sum());
        run_batch(engine, batch.task, jobs);
    }
}

/// The jobs of one forward pass.
struct Batch {
    task: Task,
    items: usize,
    jobs: Vec<Job>,
    /// Most items merged jobs may bring the batch to (0: no merging).
    limit: usize,
}

impl Batch {
    /// Take `job` into the batch when it is the same task and fits; otherwise hand it back.
    fn offer(&mut self, job: Job) -> Option<Job> {
        if job.task == self.task && self.items + job.items <= self.limit {
            self.items += job.items;
            self.jobs.push(job);
            None
        } else {
            Some(job)
        }
    }
}

/// Run one merged batch and split its rows back over the jobs (a failure goes to every job of the batch).
fn run_batch(engine: &Engine, task: Task, batch: Vec<Job>) {
    let inputs: Vec<&Tensor> = batch.iter().map(|j| &j.input).collect();
    let result = Tensor::cat(&inputs, 0)
        .map_err(|e| e.to_string())
        .and_then(|input| compute(engine, task, &input));
    let mut rows = match result {
        Ok(rows) => rows,
        Err(message) => {
            tracing::error!("a forward pass failed: {message}");
            for job in batch {
                job.reply.fail(message.clone());
            }
            return;
        }
    };
    for job in batch {
        let n = job.items;
        // Each task's rows match its reply's type; the send fails only when the client went away.
        let _ = match (&mut rows, job.reply) {
            (Rows::Embeddings(all), Reply::Embeddings(tx)) => {
                tx.send(Ok(all.drain(..n).collect())).map_err(drop)
            }
            (Rows::Captions(all), Reply::Captions(tx)) => {
                tx.send(Ok(all.drain(..n).collect())).map_err(drop)
            }
            (_, reply) => {
                reply.fail("internal error: a job's rows do not match its task".into());
                Ok(())
            }
        };
    }
}

/// The model's answer for a batch of inputs.
fn compute(engine: &Engine, task: Task, input: &Tensor) -> Result<Rows, String> {
    let model = &engine.model;
    let rows = |t: &Tensor| {
        t.to_dtype(DType::F32)
            .and_then(|t| t.to_vec2::<f32>())
            .map_err(|e| e.to_string())
    };
    Ok(match task {
        Task::EmbedImages => Rows::Embeddings(rows(
            &model
                .encode_image(input)
                .map_err(|e| e.to_string())?
                .embedding,
        )?),
        Task::EmbedTexts => Rows::Embeddings(rows(
            &model
                .encode_text(input)
                .map_err(|e| e.to_string())?
                .embedding,
        )?),
        Task::Caption(i) => Rows::Captions(
            generate(
                model,
                input,
                engine
                    .generation
                    .get(i)
                    .ok_or("internal error: no such caption settings")?,
            )
            .map_err(|e| e.to_string())?
            .iter()
            .map(|c| CaptionRow {
                caption: c.text(&engine.tokenizer),
                log_prob: c.log_prob,
                finished: c.finished,
            })
            .collect(),
        ),
    })
}
