//! `coca serve`: the model behind a small HTTP JSON API (axum), loaded once and shared by every request.
//!
//! Requests are parsed and checked on the async runtime; the model runs on tokio's blocking pool, so a long
//! caption never stalls `/health`. Every failure is a JSON `{"error": "..."}` with a 4xx status naming the
//! input (`images[2]: ...`), or 500 when the model itself fails.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

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
use coca_generate::{generate, GenerationConfig};
use coca_image::{DecodedImage, PreprocessConfig};
use coca_model::{Coca, CocaConfig};
use coca_text::Tokenizer;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::commands::caption::GenerationArgs;
use crate::model_args::ModelArgs;
use crate::pipeline::{preprocess_config, tokenize_texts};

const AFTER_HELP: &str = "\
Endpoints (JSON in, JSON out; images are base64-encoded file bytes: JPEG, PNG, WebP, GIF, BMP, TIFF):
  GET  /health    {\"status\": \"ok\", \"model\": NAME, \"embed_dim\": N, \"uptime_seconds\": S}
  POST /embed     {\"images\": [B64, ...], \"texts\": [TEXT, ...]}  (either may be left out, not both)
                  → {\"image_embeddings\": [[..]], \"text_embeddings\": [[..]]}, L2-normalised, as `coca embed`
  POST /caption   {\"images\": [B64, ...]}
                  → {\"captions\": [{\"caption\", \"log_prob\", \"finished\"}, ...]}, decoded with the generation
                  flags given to `coca serve` (default: open_clip's beam search), as `coca caption`

Errors come back as {\"error\": \"...\"} with status 400 (bad JSON, base64 or image, empty text), 413 (body
over --max-body-mb) or 500. The server stops cleanly on Ctrl-C or SIGTERM.

Example:
  coca serve --model coca_ViT-B-32 --pretrained laion2b_s13b_b90k --port 8080 &
  printf '{\"texts\": [\"a photo of a cat\"], \"images\": [\"%s\"]}' \"$(base64 -w0 cat.jpg)\" > request.json
  curl -s localhost:8080/embed -H 'content-type: application/json' --data-binary @request.json";

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
    blocking(move || {
        let image_embeddings = if request.images.is_empty() {
            Vec::new()
        } else {
            let pixels = images_tensor(&shared, &request.images)?;
            rows(
                &shared
                    .model
                    .encode_image(&pixels)
                    .map_err(internal)?
                    .embedding,
            )?
        };
        let text_embeddings = if request.texts.is_empty() {
            Vec::new()
        } else {
            let ids = tokenize_texts(&request.texts, &shared.model_cfg, shared.model.device())
                .map_err(|e| ApiError::bad_request(format!("texts: {e:#}")))?;
            rows(&shared.model.encode_text(&ids).map_err(internal)?.embedding)?
        };
        Ok(Json(json!({
            "image_embeddings": image_embeddings,
            "text_embeddings": text_embeddings,
        })))
    })
    .await
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
    blocking(move || {
        let pixels = images_tensor(&shared, &request.images)?;
        let captions = generate(&shared.model, &pixels, &shared.generation).map_err(internal)?;
        let captions: Vec<Value> = captions
            .iter()
            .map(|c| {
                json!({
                    "caption": c.text(&shared.tokenizer),
                    "log_prob": c.log_prob,
                    "finished": c.finished,
                })
            })
            .collect();
        Ok(Json(json!({ "captions": captions })))
    })
    .await
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
    if args.max_items == 0 || args.max_body_mb == 0 {
        bail!("--max-items and --max-body-mb must be at least 1");
    }
    let started = Instant::now();
    let tokenizer = Tokenizer::new().context("loading the CLIP tokenizer")?;
    let (model, model_cfg) = args.model.load()?;
    let generation = args.generation.config_for(&model, &tokenizer)?;
    let preprocess = preprocess_config(&model_cfg)?;
    let shared = Arc::new(Shared {
        model,
        model_cfg,
        model_name: args.model.model.clone(),
        tokenizer,
        generation,
        preprocess,
        max_items: args.max_items,
        started,
    });
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
