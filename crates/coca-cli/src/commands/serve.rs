//! `coca serve`: the model behind a small HTTP JSON API (axum), loaded once and shared by every request.
//!
//! Requests are parsed and checked on the async runtime, and their images decoded on tokio's blocking pool. The
//! model runs on one worker thread that merges the work queued by concurrent requests into shared batches (up to
//! `--max-batch` items, optionally waiting `--batch-wait-ms` for more), then hands each request its rows: several
//! clients get batch throughput, and a long caption never stalls `/health`. Every failure is a JSON
//! `{"error": "..."}` with a 4xx status naming the input (`images[2]: ...`), or 500 when the model itself fails.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use candle_core::{DType, Tensor};
use clap::Args;
use coca_generate::{generate, GenerationConfig, Strategy};
use coca_image::{DecodedImage, PreprocessConfig};
use coca_model::{Coca, CocaConfig};
use coca_text::Tokenizer;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::oneshot;

use crate::commands::caption::GenerationArgs;
use crate::model_args::ModelArgs;
use crate::pipeline::{preprocess_config, tokenize_texts};

const AFTER_HELP: &str = "\
Endpoints (JSON in and out; images are base64 file bytes: JPEG, PNG, WebP, GIF, BMP, TIFF):
  GET  /health   {\"status\": \"ok\", \"model\", \"embed_dim\", \"uptime_seconds\",
                  \"forward_passes\", \"items\"}
  POST /embed    {\"images\": [B64, ...], \"texts\": [TEXT, ...]} (either may be left out)
                 → {\"image_embeddings\": [[..]], \"text_embeddings\": [[..]]}, as `coca embed`
  POST /caption  {\"images\": [B64, ...]}
                 → {\"captions\": [{\"caption\", \"log_prob\", \"finished\"}, ...]}, decoded with
                 the generation flags given to `coca serve`, as `coca caption`

Concurrent requests share forward passes: one model thread merges queued work of the same
kind (up to --max-batch items; --batch-wait-ms waits for more) and gives each request its
own rows. Sampled captions (top-k, top-p) are never merged, so their random stream does not
depend on other requests.

Errors are {\"error\": \"...\"} with status 400 (bad JSON, base64 or image, empty text), 404,
413 (over --max-items or --max-body-mb) or 500. Ctrl-C or SIGTERM stops the server cleanly.

Example:
  coca serve --model coca_ViT-B-32 --pretrained laion2b_s13b_b90k --port 8080 &
  printf '{\"texts\": [\"a cat\"], \"images\": [\"%s\"]}' \"$(base64 -w0 cat.jpg)\" > req.json
  curl -s localhost:8080/embed -H 'content-type: application/json' --data-binary @req.json";

/// `coca serve`.
#[derive(Debug, Args)]
#[command(after_help = AFTER_HELP)]
pub struct ServeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub generation: GenerationArgs,
    /// Address to listen on (0.0.0.0 to accept other machines).
    #[arg(long, default_value = "127.0.0.1", value_name = "ADDR")]
    pub host: std::net::IpAddr,
    /// Port to listen on (0: any free port; the address is printed on stdout).
    #[arg(long, default_value_t = 8080, value_name = "PORT")]
    pub port: u16,
    /// Largest request body accepted, in MB.
    #[arg(long, default_value_t = 64, value_name = "MB")]
    pub max_body_mb: usize,
    /// Most images or texts in one request.
    #[arg(long, default_value_t = 256, value_name = "N")]
    pub max_items: usize,
    /// Most items the model runs in one forward pass when it merges concurrent requests (a single request
    /// larger than this still runs whole).
    #[arg(long, default_value_t = 32, value_name = "N")]
    pub max_batch: usize,
    /// After the first request of a batch arrives, wait this long for more to merge with it (0: merge only what
    /// is already queued). Trades latency for throughput under load.
    #[arg(long, default_value_t = 0, value_name = "MS")]
    pub batch_wait_ms: u64,
}

/// What every request shares.
struct Shared {
    model: Coca,
    model_cfg: CocaConfig,
    model_name: String,
    tokenizer: Tokenizer,
    generation: GenerationConfig,
    preprocess: PreprocessConfig,
    max_items: usize,
    started: Instant,
    /// The queue of the model's worker thread.
    jobs: mpsc::Sender<Job>,
    /// Forward passes the worker has run, and the items in them (`/health`).
    batches: AtomicU64,
    batched_items: AtomicU64,
}

/// What a request asks the model for, given a (count, ...) tensor of preprocessed images or token ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Task {
    EmbedImages,
    EmbedTexts,
    Caption,
}

/// The rows a task returns, one per item.
enum Rows {
    Embeddings(Vec<Vec<f32>>),
    Captions(Vec<Value>),
}

/// One request's share of the worker's queue.
struct Job {
    task: Task,
    input: Tensor,
    reply: oneshot::Sender<Result<Rows, ApiError>>,
}

impl Job {
    fn items(&self) -> usize {
        self.input.dim(0).unwrap_or(0)
    }
}

/// The model's worker: take the oldest job, merge queued jobs of the same task into its batch while they fit,
/// run the batch once, and reply to each job with its rows. Jobs of another task wait for a later batch, in order.
fn worker(shared: Arc<Shared>, queue: mpsc::Receiver<Job>, max_batch: usize, wait: Duration) {
    let mut waiting: VecDeque<Job> = VecDeque::new();
    loop {
        let first = match waiting.pop_front() {
            Some(job) => job,
            None => match queue.recv() {
                Ok(job) => job,
                // Every sender is gone: only possible once the server has shut down.
                Err(_) => return,
            },
        };
        // Sampled captions follow their batch's random stream: merging would make them depend on other requests.
        let mergeable = first.task != Task::Caption
            || !matches!(shared.generation.strategy, Strategy::Sample(_));
        let mut batch = Batch {
            task: first.task,
            items: first.items(),
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
        shared.batches.fetch_add(1, Ordering::Relaxed);
        shared
            .batched_items
            .fetch_add(batch.items as u64, Ordering::Relaxed);
        run_batch(&shared, batch.task, batch.jobs);
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
        if job.task == self.task && self.items + job.items() <= self.limit {
            self.items += job.items();
            self.jobs.push(job);
            None
        } else {
            Some(job)
        }
    }
}

/// Run one merged batch and split its rows back over the jobs (a failure goes to every job of the batch).
fn run_batch(shared: &Shared, task: Task, batch: Vec<Job>) {
    let inputs: Vec<&Tensor> = batch.iter().map(|j| &j.input).collect();
    let result = Tensor::cat(&inputs, 0)
        .map_err(internal)
        .and_then(|input| compute(shared, task, &input));
    match result {
        Ok(mut rows) => {
            for job in batch {
                let n = job.items();
                let own = match &mut rows {
                    Rows::Embeddings(all) => Rows::Embeddings(all.drain(..n).collect()),
                    Rows::Captions(all) => Rows::Captions(all.drain(..n).collect()),
                };
                // A client that went away no longer waits for its rows.
                let _ = job.reply.send(Ok(own));
            }
        }
        Err(ApiError(status, message)) => {
            for job in batch {
                let _ = job.reply.send(Err(ApiError(status, message.clone())));
            }
        }
    }
}

/// The model's answer for a batch of inputs.
fn compute(shared: &Shared, task: Task, input: &Tensor) -> Result<Rows, ApiError> {
    let model = &shared.model;
    Ok(match task {
        Task::EmbedImages => Rows::Embeddings(rows(
            &model.encode_image(input).map_err(internal)?.embedding,
        )?),
        Task::EmbedTexts => Rows::Embeddings(rows(
            &model.encode_text(input).map_err(internal)?.embedding,
        )?),
        Task::Caption => Rows::Captions(
            generate(model, input, &shared.generation)
                .map_err(internal)?
                .iter()
                .map(|c| {
                    json!({
                        "caption": c.text(&shared.tokenizer),
                        "log_prob": c.log_prob,
                        "finished": c.finished,
                    })
                })
                .collect(),
        ),
    })
}

/// Queue `input` for the worker and wait for its rows.
async fn submit(shared: &Shared, task: Task, input: Tensor) -> Result<Rows, ApiError> {
    let (reply, rows) = oneshot::channel();
    if shared.jobs.send(Job { task, input, reply }).is_err() {
        return Err(internal("the model worker has stopped"));
    }
    rows.await
        .map_err(|_| internal("the model worker dropped the request"))?
}

/// A failure to report: status and message.
struct ApiError(StatusCode, String);

impl ApiError {
    fn bad_request(message: impl Into<String>) -> Self {
        Self(StatusCode::BAD_REQUEST, message.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

/// The model failed on valid input: a server-side error, logged and reported.
fn internal(e: impl std::fmt::Display) -> ApiError {
    tracing::error!("request failed: {e}");
    ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EmbedRequest {
    #[serde(default)]
    images: Vec<String>,
    #[serde(default)]
    texts: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaptionRequest {
    images: Vec<String>,
}

/// Parse a JSON body into `T`, with serde's message (line, column, field) as the error. A body that could not be
/// read (over `--max-body-mb`: 413) keeps axum's status with a JSON message.
fn parse_body<T: serde::de::DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    let body =
        body.map_err(|r| ApiError(r.status(), format!("request body: {}", r.body_text())))?;
    serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "request body is not valid JSON for this endpoint: {e}"
        ))
    })
}

/// Decode and preprocess base64 images into one (n, 3, S, S) tensor; errors name the image's index.
fn images_tensor(shared: &Shared, images: &[String]) -> Result<Tensor, ApiError> {
    let size = shared.preprocess.image_size as usize;
    let mut pixels = Vec::with_capacity(images.len() * 3 * size * size);
    for (i, encoded) in images.iter().enumerate() {
        let name = format!("images[{i}]");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|e| ApiError::bad_request(format!("{name}: not valid base64: {e}")))?;
        let decoded = DecodedImage::decode(&bytes, &name)
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        pixels.extend(coca_image::preprocess_decoded(&decoded, &shared.preprocess));
    }
    let device = shared.model.device();
    Tensor::from_vec(pixels, (images.len(), 3, size, size), device)
        .and_then(|t| t.to_dtype(shared.model.dtype()))
        .map_err(internal)
}

fn check_count(what: &str, n: usize, max: usize) -> Result<(), ApiError> {
    if n > max {
        return Err(ApiError(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("{n} {what} in one request; the server takes at most {max} (--max-items)"),
        ));
    }
    Ok(())
}

fn rows(t: &Tensor) -> Result<Vec<Vec<f32>>, ApiError> {
    t.to_dtype(DType::F32)
        .and_then(|t| t.to_vec2::<f32>())
        .map_err(internal)
}

/// Run `work` on the blocking pool (the model's math must not occupy the async workers).
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work).await.map_err(internal)?
}

async fn health(State(shared): State<Arc<Shared>>) -> Json<Value> {
    Json(json!({
        "status": "ok",
        "model": shared.model_name,
        "embed_dim": shared.model_cfg.embed_dim,
        "uptime_seconds": shared.started.elapsed().as_secs_f64(),
        "forward_passes": shared.batches.load(Ordering::Relaxed),
        "items": shared.batched_items.load(Ordering::Relaxed),
    }))
}

async fn embed(
    State(shared): State<Arc<Shared>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let request: EmbedRequest = parse_body(body)?;
    if request.images.is_empty() && request.texts.is_empty() {
        return Err(ApiError::bad_request(
            "nothing to embed: give \"images\" (base64 file bytes) and/or \"texts\"",
        ));
    }
    check_count("images", request.images.len(), shared.max_items)?;
    check_count("texts", request.texts.len(), shared.max_items)?;
    // Check and prepare everything before queueing anything, so a bad text costs no image forward pass.
    let prepared = shared.clone();
    let (pixels, ids) = blocking(move || {
        let ids = if request.texts.is_empty() {
            None
        } else {
            let ids = tokenize_texts(&request.texts, &prepared.model_cfg, prepared.model.device())
                .map_err(|e| ApiError::bad_request(format!("texts: {e:#}")))?;
            Some(ids)
        };
        let pixels = if request.images.is_empty() {
            None
        } else {
            Some(images_tensor(&prepared, &request.images)?)
        };
        Ok((pixels, ids))
    })
    .await?;
    let image_embeddings = match pixels {
        Some(p) => embeddings(submit(&shared, Task::EmbedImages, p).await?),
        None => Vec::new(),
    };
    let text_embeddings = match ids {
        Some(ids) => embeddings(submit(&shared, Task::EmbedTexts, ids).await?),
        None => Vec::new(),
    };
    Ok(Json(json!({
        "image_embeddings": image_embeddings,
        "text_embeddings": text_embeddings,
    })))
}

fn embeddings(rows: Rows) -> Vec<Vec<f32>> {
    match rows {
        Rows::Embeddings(e) => e,
        Rows::Captions(_) => unreachable!("an embedding task returns embeddings"),
    }
}

async fn caption(
    State(shared): State<Arc<Shared>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let request: CaptionRequest = parse_body(body)?;
    if request.images.is_empty() {
        return Err(ApiError::bad_request(
            "\"images\" is empty: give at least one base64 image",
        ));
    }
    check_count("images", request.images.len(), shared.max_items)?;
    let prepared = shared.clone();
    let pixels = blocking(move || images_tensor(&prepared, &request.images)).await?;
    match submit(&shared, Task::Caption, pixels).await? {
        Rows::Captions(captions) => Ok(Json(json!({ "captions": captions }))),
        Rows::Embeddings(_) => unreachable!("a caption task returns captions"),
    }
}

/// The routes, with the body limit answered as JSON too.
fn router(shared: Arc<Shared>, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/embed", post(embed))
        .route("/caption", post(caption))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .fallback(|| async {
            ApiError(
                StatusCode::NOT_FOUND,
                "no such endpoint; see `coca serve --help` (GET /health, POST /embed, POST /caption)".into(),
            )
        })
        .with_state(shared)
}

/// Resolve when the process is asked to stop (Ctrl-C, or SIGTERM on Unix).
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("stopping: finishing requests in flight");
}

/// Run the command.
pub fn run(args: ServeArgs) -> Result<()> {
    if args.max_items == 0 || args.max_body_mb == 0 || args.max_batch == 0 {
        bail!("--max-items, --max-batch and --max-body-mb must be at least 1");
    }
    let started = Instant::now();
    let tokenizer = Tokenizer::new().context("loading the CLIP tokenizer")?;
    let (model, model_cfg) = args.model.load()?;
    let generation = args.generation.config_for(&model, &tokenizer)?;
    let preprocess = preprocess_config(&model_cfg)?;
    let (jobs, queue) = mpsc::channel();
    let shared = Arc::new(Shared {
        model,
        model_cfg,
        model_name: args.model.model.clone(),
        tokenizer,
        generation,
        preprocess,
        max_items: args.max_items,
        started,
        jobs,
        batches: AtomicU64::new(0),
        batched_items: AtomicU64::new(0),
    });
    {
        let shared = shared.clone();
        let (max_batch, wait) = (args.max_batch, Duration::from_millis(args.batch_wait_ms));
        std::thread::Builder::new()
            .name("coca-model".into())
            .spawn(move || worker(shared, queue, max_batch, wait))
            .context("starting the model's worker thread")?;
    }
    let app = router(shared, args.max_body_mb.saturating_mul(1 << 20));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let addr = SocketAddr::new(args.host, args.port);
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let local = listener.local_addr()?;
        // On stdout, so scripts (and the tests) can read the port chosen for --port 0.
        println!("coca serve: listening on http://{local}");
        tracing::info!(
            "model loaded in {:.1} s; endpoints GET /health, POST /embed, POST /caption",
            started.elapsed().as_secs_f64()
        );
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown_signal())
            .await
            .context("serving HTTP")
    })
}
