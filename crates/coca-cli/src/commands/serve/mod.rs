//! `coca serve`: the model behind a small HTTP JSON API, loaded once and shared by every request.
//!
//! - [`conn`]: connections (hyper HTTP/1.1): header and idle timeouts, the connection cap, the graceful shutdown.
//! - [`routes`]: the routes, and the host, origin, key and deadline checks every request passes first.
//! - [`request`]: reading bodies within their limits, parsing, per-request caps, the image decode pool.
//! - [`batcher`]: the model's worker thread, merging concurrent requests into shared forward passes.
//! - [`error`]: every failure as a JSON `{"error": "..."}`.
//! - [`index`]: `--index`: search over an embedding folder and thumbnails of the images it lists.
//! - [`metrics`]: `/metrics` in Prometheus' text format.

mod batcher;
mod conn;
mod error;
mod index;
mod metrics;
mod request;
mod routes;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum as _};
use coca_generate::GenerationConfig;
use coca_text::Tokenizer;
use tokio::sync::Semaphore;

use crate::cli::seconds;
use crate::cli::Global;
use crate::commands::classify::ClassifierArgs;
use crate::generation_args::{GenerationArgs, StrategyArg};
use crate::model_args::ModelArgs;
use crate::pipeline::preprocess_config;

const AFTER_HELP: &str = "\
Endpoints (JSON in and out; images are base64 file bytes: JPEG, PNG, WebP, GIF, BMP, TIFF):
  GET  /health   {\"status\": \"ok\", \"model\", \"embed_dim\", \"uptime_seconds\",
                  \"forward_passes\", \"items\"}  (open even with --api-key)
  GET  /metrics  Prometheus text: requests and errors by route and status, latency
                 histograms, forward-pass sizes, queue depth, decode-pool use
  POST /embed    {\"images\": [B64, ...], \"texts\": [TEXT, ...]} (either may be left out)
                 → {\"image_embeddings\": [[..]], \"text_embeddings\": [[..]]}, as `coca embed`
  POST /caption  {\"images\": [B64, ...], \"strategy\": \"greedy\"|\"beam\"|\"top-k\"|\"top-p\"}
                 → {\"captions\": [{\"caption\", \"log_prob\", \"finished\"}, ...]}, decoded with
                 the generation flags given to `coca serve`, as `coca caption`; a \"strategy\"
                 changes just the strategy (the other strategies' flags are dropped)
  POST /classify {\"images\": [B64, ...], \"classes\": [NAME, ...], \"templates\": \"openai\"|\"simple\",
                  \"top_k\": K}  (classes left out: ImageNet's 1000)
                 → {\"results\": [{\"top_k\": [{\"class\", \"index\", \"probability\"}]}]},
                 as `coca classify`, class embeddings cached as it caches them
  POST /search   {\"text\": TEXT} or {\"image\": B64}, \"top_k\": K, \"against\": \"image\"|\"text\"
                 (with --index) → {\"against\", \"results\": [{\"rank\", \"id\", \"score\", \"caption\",
                 \"key\", \"thumbnail\"}]}, the exact search of `coca search`
  GET  /thumbnail/ID  a JPEG of the image the index lists as result ID (at most --thumbnail-size
                 pixels a side); only ids of the index, never paths
  GET  /openapi.json  this API in OpenAPI 3

Concurrent requests share forward passes: one model thread merges queued work of the same
kind (up to --max-batch items; --batch-wait-ms waits for more) and gives each request its
own rows. Sampled captions (top-k, top-p) are never merged, so their random stream does not
depend on other requests.

Limits: a client has --header-timeout to send a request's headers and --body-timeout for its
body; an idle connection is closed after --idle-timeout; a request is abandoned after
--request-timeout. At --max-connections the longest-idle connection is closed to make room
(a 503 when every connection is busy). At most --max-queue model requests are admitted at
once (more get 503 with Retry-After). Images are decoded a few at a time: as many as
--decode-memory-mb holds at the largest image size accepted.

Safety: bound to a loopback address, requests must name a local Host (localhost, 127.0.0.1,
[::1]; --allowed-host adds names), which stops DNS rebinding; on other addresses only
--allowed-host names are checked, when given. Pages of other origins may not call the API
unless --cors-origin allows them. With --api-key every route but /health needs
`Authorization: Bearer KEY`.

Errors are {\"error\": \"...\"} with status 400 (bad JSON, base64 or image, empty text), 401
(key), 403 (host or origin), 404, 405, 408 (body too slow), 413 (over a limit), 415 (not
JSON), 500, or 503 (busy or too slow; with Retry-After). Ctrl-C or SIGTERM stops the server:
requests in flight finish (up to --shutdown-timeout), then it exits.

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
    /// How /classify builds and caches class embeddings.
    #[command(flatten)]
    pub classifier: ClassifierArgs,
    /// Address to listen on (0.0.0.0 to accept other machines).
    #[arg(long, default_value = "127.0.0.1", value_name = "ADDR")]
    pub host: IpAddr,
    /// Port to listen on (0: any free port; the address is printed on stdout).
    #[arg(long, default_value_t = 8080, value_name = "PORT")]
    pub port: u16,
    /// A host name requests may address in their Host header (repeatable); see "Safety" below.
    #[arg(long = "allowed-host", value_name = "NAME")]
    pub allowed_hosts: Vec<String>,
    /// An origin whose web pages may call the API, e.g. `https://example.org`, or `*` for any (repeatable).
    #[arg(long = "cors-origin", value_name = "ORIGIN")]
    pub cors_origins: Vec<String>,
    /// Require `Authorization: Bearer KEY` on every route but /health.
    #[arg(long, value_name = "KEY")]
    pub api_key: Option<String>,
    /// Largest request body accepted, in MB (checked from Content-Length, then while reading).
    #[arg(long, default_value_t = 32, value_name = "MB")]
    pub max_body_mb: usize,
    /// Most images in one request.
    #[arg(long, default_value_t = 16, value_name = "N")]
    pub max_images: usize,
    /// Most texts in one request.
    #[arg(long, default_value_t = 256, value_name = "N")]
    pub max_texts: usize,
    /// Longest text accepted, in characters (texts are truncated to the model's context anyway).
    #[arg(long, default_value_t = 2000, value_name = "N")]
    pub max_text_chars: usize,
    /// Most items the model runs in one forward pass when it merges concurrent requests (a single request
    /// larger than this still runs whole).
    #[arg(long, default_value_t = 32, value_name = "N")]
    pub max_batch: usize,
    /// After the first request of a batch arrives, wait this long for more to merge with it (0: merge only what
    /// is already queued). Trades latency for throughput under load.
    #[arg(long, default_value_t = 0, value_name = "MS")]
    pub batch_wait_ms: u64,
    /// Most model requests admitted at once (reading, decoding, queued or running); more are answered 503 with
    /// Retry-After.
    #[arg(long, default_value_t = 64, value_name = "N")]
    pub max_queue: usize,
    /// Memory for decoding images, in MB: images are decoded as many at once as fit when each is as large as
    /// allowed (at least one).
    #[arg(long, default_value_t = 3072, value_name = "MB")]
    pub decode_memory_mb: u64,
    /// Most connections open at once.
    #[arg(long, default_value_t = 256, value_name = "N")]
    pub max_connections: usize,
    /// Seconds a client has to send a request's headers.
    #[arg(long, default_value = "10", value_name = "SECONDS", value_parser = seconds)]
    pub header_timeout: Duration,
    /// Seconds a client has to send a request's body.
    #[arg(long, default_value = "30", value_name = "SECONDS", value_parser = seconds)]
    pub body_timeout: Duration,
    /// Seconds an idle keep-alive connection stays open (0: one request per connection).
    #[arg(long, default_value = "5", value_name = "SECONDS", value_parser = seconds)]
    pub idle_timeout: Duration,
    /// Seconds one request may take in all before it is abandoned with a 503.
    #[arg(long, default_value = "120", value_name = "SECONDS", value_parser = seconds)]
    pub request_timeout: Duration,
    /// An embedding folder written by `coca embed --output-dir` (opened once, at startup) for /search and
    /// /thumbnail; relative image paths in it are resolved against the current directory.
    #[arg(long, value_name = "DIR")]
    pub index: Option<PathBuf>,
    /// Most results one /search returns.
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub max_results: usize,
    /// Most searches run at once (each reads the index one partition at a time).
    #[arg(long, default_value_t = 2, value_name = "N")]
    pub max_searches: usize,
    /// Longest side of a /thumbnail image, in pixels (images are only scaled down).
    #[arg(long, default_value_t = 256, value_name = "PX")]
    pub thumbnail_size: u32,
    /// Seconds requests in flight may take to finish after Ctrl-C or SIGTERM.
    #[arg(long, default_value = "10", value_name = "SECONDS", value_parser = seconds)]
    pub shutdown_timeout: Duration,
}

/// Memory one image in flight may take: decoding peaks at 1.5× its RGB size (a CMYK JPEG at 2×, see
/// docs/security.md), and resizing then reads the decoded image while it fills intermediate rows.
const DECODE_BYTES_PER_PIXEL: u64 = 8;

/// How many images `budget_mb` lets decode at once: each may be as large as `max_pixels` allows, at least one.
fn decode_slots(budget_mb: u64, max_pixels: u64) -> usize {
    let per_image = max_pixels.saturating_mul(DECODE_BYTES_PER_PIXEL).max(1);
    (budget_mb.saturating_mul(1 << 20) / per_image).max(1) as usize
}

/// The Host names a server bound to a loopback address answers by default.
const LOOPBACK_HOSTS: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

impl ServeArgs {
    /// Refuse zero limits and zero timeouts (the idle timeout may be zero), naming the flag.
    fn check(&self) -> Result<()> {
        let counts = [
            ("--max-images", self.max_images as u64),
            ("--max-texts", self.max_texts as u64),
            ("--max-text-chars", self.max_text_chars as u64),
            ("--max-batch", self.max_batch as u64),
            ("--text-batch-size", self.classifier.text_batch_size as u64),
            ("--max-body-mb", self.max_body_mb as u64),
            ("--max-queue", self.max_queue as u64),
            ("--max-connections", self.max_connections as u64),
            ("--decode-memory-mb", self.decode_memory_mb),
            ("--max-results", self.max_results as u64),
            ("--max-searches", self.max_searches as u64),
            ("--thumbnail-size", u64::from(self.thumbnail_size)),
        ];
        for (flag, value) in counts {
            if value == 0 {
                bail!("{flag} must be at least 1");
            }
        }
        let times = [
            ("--header-timeout", self.header_timeout),
            ("--body-timeout", self.body_timeout),
            ("--request-timeout", self.request_timeout),
            ("--shutdown-timeout", self.shutdown_timeout),
        ];
        for (flag, value) in times {
            if value.is_zero() {
                bail!("{flag} must be more than 0 seconds");
            }
        }
        if self.api_key.as_deref().is_some_and(str::is_empty) {
            bail!("--api-key must not be empty");
        }
        Ok(())
    }

    /// The Host allow-list: loopback names plus --allowed-host on a loopback address, else --allowed-host alone.
    fn allowed_hosts(&self) -> Vec<String> {
        let mut hosts: Vec<String> = self
            .allowed_hosts
            .iter()
            .map(|h| h.trim_matches(['[', ']']).to_ascii_lowercase())
            .collect();
        if self.host.is_loopback() {
            hosts.extend(LOOPBACK_HOSTS.map(String::from));
        }
        hosts
    }
}

/// The caption settings requests may choose: the server's generation flags first, then, for each strategy, those
/// flags with the strategy changed (and the flags of other strategies dropped); with its name, a strategy's place
/// in the list. A strategy the flags cannot be adapted to is left out, with a warning.
fn caption_settings(
    flags: &GenerationArgs,
    model: &coca_model::Coca,
    tokenizer: &Tokenizer,
) -> Result<(Vec<GenerationConfig>, batcher::StrategyNames)> {
    let mut configs = vec![flags.config_for(model, tokenizer)?];
    let mut names = Vec::new();
    for &strategy in StrategyArg::value_variants() {
        let Some(name) = strategy
            .to_possible_value()
            .map(|v| v.get_name().to_string())
        else {
            continue;
        };
        if flags.strategy.unwrap_or(StrategyArg::Beam) == strategy {
            names.push((name, 0));
            continue;
        }
        let mut changed = flags.clone();
        changed.strategy = Some(strategy);
        if strategy != StrategyArg::Beam {
            changed.num_beams = None;
            changed.num_beam_groups = None;
            changed.beam_scoring = None;
            changed.length_penalty = None;
        }
        if matches!(strategy, StrategyArg::Beam | StrategyArg::Greedy) {
            changed.top_k = None;
            changed.top_p = None;
            changed.temperature = None;
        }
        match changed.config_for(model, tokenizer) {
            Ok(config) => {
                names.push((name, configs.len()));
                configs.push(config);
            }
            Err(e) => tracing::warn!("captions with strategy {name} are not offered: {e:#}"),
        }
    }
    Ok((configs, names))
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
pub fn run(args: ServeArgs, _global: &Global) -> Result<()> {
    args.check()?;
    let started = Instant::now();
    // The index first: a wrong folder is reported before the model is loaded.
    let search = match &args.index {
        Some(dir) => {
            let index = index::SearchIndex::open(dir)
                .with_context(|| format!("--index {}", dir.display()))?;
            tracing::info!("index {}: {} rows", dir.display(), index.len());
            Some(routes::SearchState {
                index: Arc::new(index),
                pool: Arc::new(Semaphore::new(args.max_searches)),
                max_results: args.max_results,
                thumbnail_size: args.thumbnail_size,
            })
        }
        None => None,
    };
    let tokenizer = Tokenizer::new().context("loading the CLIP tokenizer")?;
    let (model, cfg) = args.model.load()?;
    let (generation, strategies) = caption_settings(&args.generation, &model, &tokenizer)?;
    let preprocess = preprocess_config(&cfg)?;
    let engine = Arc::new(batcher::Engine {
        model,
        cfg,
        name: args.model.model.clone(),
        tokenizer,
        generation,
        strategies,
        preprocess,
    });
    let batcher = Arc::new(batcher::Batcher::start(
        engine.clone(),
        args.max_batch,
        Duration::from_millis(args.batch_wait_ms),
    )?);
    let decode_slots = decode_slots(args.decode_memory_mb, engine.preprocess.limits.max_pixels);
    let state = Arc::new(routes::AppState {
        engine,
        batcher: batcher.clone(),
        limits: request::RequestLimits {
            max_body: args.max_body_mb.saturating_mul(1 << 20),
            body_timeout: args.body_timeout,
            max_images: args.max_images,
            max_texts: args.max_texts,
            max_text_chars: args.max_text_chars,
        },
        decode_pool: Arc::new(Semaphore::new(decode_slots)),
        decode_slots,
        admitted: AtomicUsize::new(0),
        max_queue: args.max_queue,
        request_timeout: args.request_timeout,
        access: routes::Access {
            allowed_hosts: args.allowed_hosts(),
            cors_origins: args.cors_origins.clone(),
            api_key: args.api_key.clone(),
        },
        started,
        metrics: metrics::Metrics::default(),
        classifier: (args.classifier.clone(), args.model.clone()),
        imagenet: tokio::sync::OnceCell::new(),
        search,
    });
    let limits = conn::ConnLimits {
        header_timeout: args.header_timeout,
        idle_timeout: args.idle_timeout,
        max_connections: args.max_connections,
        shutdown_timeout: args.shutdown_timeout,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let stopped = runtime.block_on(async {
        let addr = SocketAddr::new(args.host, args.port);
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let local = listener.local_addr()?;
        // On stdout, so scripts (and the tests) can read the port chosen for --port 0.
        println!("coca serve: listening on http://{local}");
        tracing::info!(
            "model loaded in {:.1} s; {decode_slots} images decoded at once",
            started.elapsed().as_secs_f64()
        );
        let router = routes::router(state.clone());
        let stopped = conn::serve(listener, router, state, limits, shutdown_signal()).await;
        anyhow::Ok(stopped)
    })?;
    let stopping = Instant::now();
    // Blocking work of abandoned requests (an image decode) is not waited for.
    runtime.shutdown_timeout(Duration::from_secs(1));
    batcher.join();
    tracing::info!(
        "stopped ({} connections cut at the deadline; worker joined in {:.2} s)",
        stopped.cut,
        stopping.elapsed().as_secs_f64()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_decode_budget_bounds_the_images_decoded_at_once() {
        let max = coca_image::PIL_MAX_IMAGE_PIXELS;
        let per_image_mb = (max * DECODE_BYTES_PER_PIXEL).div_ceil(1 << 20);
        assert_eq!(decode_slots(1, max), 1, "at least one");
        assert_eq!(decode_slots(per_image_mb * 3 + 1, max), 3);
        assert_eq!(decode_slots(3072, 1 << 20), 384);
    }
}
