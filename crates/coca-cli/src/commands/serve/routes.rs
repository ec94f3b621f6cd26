//! The routes and what every request passes through first: the `Host` allow-list, the CORS policy, the API key,
//! the per-request deadline, a panic caught as a 500, and JSON errors for every status.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::Semaphore;
use tower::Service as _;

use candle_core::Tensor;
use coca_retrieval::Modality;
use coca_zeroshot::lists;

use super::batcher::{Batcher, Engine};
use super::error::ApiError;
use super::index::{thumbnail, SearchIndex, ThumbnailError};
use super::metrics::{route_label, Gauges, Metrics};
use super::request::{
    body_kind, check_count, check_texts, images_tensor, multipart_json, parse_json, read_body,
    texts_tensor, BodyKind, RequestLimits,
};
use crate::commands::classify::{class_embeddings, predictions_json, ClassifierArgs, ListSpecs};
use crate::model_args::ModelArgs;

/// Who may talk to the server, beyond the socket it listens on.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// Host names (without port) a request's `Host` header may name; empty: any.
    pub allowed_hosts: Vec<String>,
    /// Origins whose pages may call the API (`*`: any); empty: same-origin pages only.
    pub cors_origins: Vec<String>,
    /// The bearer token every route but `/health` requires, when set.
    pub api_key: Option<String>,
}

/// What every request shares.
pub struct AppState {
    /// The model.
    pub engine: Arc<Engine>,
    /// The model's worker queue.
    pub batcher: Arc<Batcher>,
    /// Per-request limits.
    pub limits: RequestLimits,
    /// Permits for decoding one image each.
    pub decode_pool: Arc<Semaphore>,
    /// Its size.
    pub decode_slots: usize,
    /// Model requests admitted (reading, decoding, queued or running) and the most allowed.
    pub admitted: AtomicUsize,
    /// The most model requests admitted at once (`--max-queue`).
    pub max_queue: usize,
    /// How long one request may take.
    pub request_timeout: Duration,
    /// Host, CORS and key checks.
    pub access: Access,
    /// When the server started.
    pub started: Instant,
    /// Request counters for `/metrics`.
    pub metrics: Metrics,
    /// How `/classify` builds and caches class embeddings, and the model's files (the cache's key).
    pub classifier: (ClassifierArgs, ModelArgs),
    /// The built-in classes' embeddings, built at their first use.
    pub imagenet: tokio::sync::OnceCell<(Arc<Vec<String>>, Tensor)>,
    /// What `/search` and `/thumbnail` need, with `--index`.
    pub search: Option<SearchState>,
}

/// The index `/search` searches and the limits on searches and thumbnails.
pub struct SearchState {
    /// The index, opened at startup.
    pub index: Arc<SearchIndex>,
    /// Permits for one search each (a search reads one partition at a time).
    pub pool: Arc<Semaphore>,
    /// Most results one search returns (`--max-results`).
    pub max_results: usize,
    /// Longest side of a thumbnail, in pixels.
    pub thumbnail_size: u32,
}

/// A model request's place among the admitted ones, given back when the request ends.
struct Admission<'a>(&'a AtomicUsize);

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl AppState {
    /// Admit one more model request, or answer 503 with `Retry-After` when `--max-queue` are in already.
    fn admit(&self) -> Result<Admission<'_>, ApiError> {
        let before = self.admitted.fetch_add(1, Ordering::AcqRel);
        let admission = Admission(&self.admitted);
        if before >= self.max_queue {
            return Err(ApiError::busy(format!(
                "the server is busy: {} requests are queued (--max-queue); retry later",
                self.max_queue
            )));
        }
        Ok(admission)
    }
}

/// The endpoints `coca serve` answers, for the 404 message.
const ENDPOINTS: &str =
    "GET /, GET /health, GET /metrics, GET /openapi.json, POST /embed, POST /caption, \
     POST /classify, POST /search and GET /thumbnail/ID (with --index)";

/// The routes.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/health", get(health))
        .route("/embed", post(embed))
        .route("/caption", post(caption))
        .route("/classify", post(classify))
        .route("/search", post(search))
        .route("/thumbnail/{id}", get(thumbnail_of))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no such endpoint; see `coca serve --help` ({ENDPOINTS})"),
            )
        })
        .method_not_allowed_fallback(|method: Method| async move {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{method} is not allowed here; see `coca serve --help` ({ENDPOINTS})"),
            )
        })
        .with_state(state)
}

/// Answer one request: check its host, origin and key, then run the route under the request deadline on its own
/// task, so a panic becomes a JSON 500 instead of a dropped connection.
pub async fn handle(state: Arc<AppState>, router: Router, request: Request) -> Response {
    let started = Instant::now();
    let route = route_label(request.uri().path());
    let response = answer(&state, router, request).await;
    state
        .metrics
        .record(route, response.status().as_u16(), started.elapsed());
    response
}

async fn answer(state: &Arc<AppState>, mut router: Router, request: Request) -> Response {
    let origin = request.headers().get(header::ORIGIN).cloned();
    let cors = match check_access(&state.access, &request) {
        Ok(cors) => cors,
        Err(e) => return e.into_response(),
    };
    if request.method() == Method::OPTIONS && origin.is_some() {
        // A CORS preflight that passed the origin check.
        let mut response = StatusCode::NO_CONTENT.into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST"),
        );
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("content-type, authorization"),
        );
        headers.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from(600));
        add_cors(&mut response, cors);
        return response;
    }
    let timeout = state.request_timeout;
    let task = tokio::spawn(async move { router.call(request).await });
    let abort = task.abort_handle();
    let mut response = match tokio::time::timeout(timeout, task).await {
        Ok(Ok(Ok(response))) => response,
        Ok(Ok(Err(never))) => match never {},
        Ok(Err(e)) if e.is_panic() => {
            ApiError::internal("the request handler panicked (a bug; please report it)")
                .into_response()
        }
        Ok(Err(e)) => ApiError::internal(e).into_response(),
        Err(_) => {
            abort.abort();
            ApiError::busy(format!(
                "the request took longer than {timeout:?} (--request-timeout) and was abandoned"
            ))
            .into_response()
        }
    };
    add_cors(&mut response, cors);
    response
}

/// The origin to name in `Access-Control-Allow-Origin`, when the request came from an allowed other origin.
type CorsOrigin = Option<HeaderValue>;

fn add_cors(response: &mut Response, cors: CorsOrigin) {
    if let Some(origin) = cors {
        let headers = response.headers_mut();
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.insert(header::VARY, HeaderValue::from_static("Origin"));
    }
}

/// The host name of a `Host` header value (`name:port`, `[v6]:port`), lowercased.
fn host_name(host: &str) -> String {
    let host = host.trim();
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(host, |(name, _)| name)
    };
    name.to_ascii_lowercase()
}

/// The `Host` allow-list (DNS rebinding), the origin policy (a page of another site may not make the server work
/// unless `--cors-origin` allows it) and the API key (`/health` stays open).
fn check_access(access: &Access, request: &Request) -> Result<CorsOrigin, ApiError> {
    let headers = request.headers();
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    if !access.allowed_hosts.is_empty() {
        let name = host_name(host);
        if !access.allowed_hosts.iter().any(|a| a == &name) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "Host {host:?} is not allowed; this server answers {} (--allowed-host adds names)",
                    access.allowed_hosts.join(", ")
                ),
            ));
        }
    }
    let cors = match headers.get(header::ORIGIN) {
        None => None,
        Some(origin) => {
            let text = origin.to_str().unwrap_or("");
            let same_origin = text
                .split_once("://")
                .is_some_and(|(_, rest)| rest.eq_ignore_ascii_case(host));
            if same_origin {
                None
            } else if access
                .cors_origins
                .iter()
                .any(|o| o == "*" || o.eq_ignore_ascii_case(text))
            {
                Some(origin.clone())
            } else {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    format!(
                        "requests from the origin {text:?} are not allowed (--cors-origin allows origins)"
                    ),
                ));
            }
        }
    };
    if let Some(key) = &access.api_key {
        // The page holds no data (it asks for the key); /health is for load balancers.
        let open =
            matches!(request.uri().path(), "/" | "/health") || request.method() == Method::OPTIONS;
        if !open && !bearer_matches(headers, key) {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "this server needs an API key: send `Authorization: Bearer KEY` (--api-key)",
            ));
        }
    }
    Ok(cors)
}

/// Whether the request carries `Authorization: Bearer <key>`, compared in constant time.
fn bearer_matches(headers: &HeaderMap, key: &str) -> bool {
    use subtle::ConstantTimeEq as _;
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    // Equal lengths are compared byte by byte in constant time; a length mismatch only reveals the length.
    given.len() == key.len() && bool::from(given.as_bytes().ct_eq(key.as_bytes()))
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let text = state.metrics.render(&Gauges {
        batches: &state.batcher.stats,
        admitted: state.admitted.load(Ordering::Relaxed),
        max_queue: state.max_queue,
        decoding: state.decode_slots - state.decode_pool.available_permits(),
        decode_slots: state.decode_slots,
    });
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        text,
    )
        .into_response()
}

async fn health(State(state): State<Arc<AppState>>) -> Json<Value> {
    let stats = &state.batcher.stats;
    Json(json!({
        "status": "ok",
        "model": state.engine.name,
        "embed_dim": state.engine.cfg.embed_dim,
        "uptime_seconds": state.started.elapsed().as_secs_f64(),
        "forward_passes": stats.passes.load(Ordering::Relaxed),
        "items": stats.items.load(Ordering::Relaxed),
        "caption_strategies": state.engine.strategies.iter().map(|(n, _)| n).collect::<Vec<_>>(),
        "index": state.search.as_ref().map(|s| json!({
            "rows": s.index.len(),
            "image_embeddings": s.index.has(Modality::Image),
            "text_embeddings": s.index.has(Modality::Text),
        })),
    }))
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
    /// A decoding strategy by name; the server's generation flags when left out.
    #[serde(default)]
    strategy: Option<String>,
}

/// Read a model request's body (after admitting it) and parse it as `T`.
async fn body<T: serde::de::DeserializeOwned>(
    state: &AppState,
    request: Request,
) -> Result<T, ApiError> {
    let kind = body_kind(request.headers())?;
    let (parts, body) = request.into_parts();
    let bytes = read_body(body, &parts.headers, &state.limits).await?;
    match kind {
        BodyKind::Json => parse_json(&bytes),
        BodyKind::Multipart(boundary) => {
            let object = multipart_json(&bytes, &boundary)?;
            drop(bytes);
            serde_json::from_value(object).map_err(|e| {
                ApiError::bad_request(format!("multipart body: not valid for this endpoint: {e}"))
            })
        }
    }
}

async fn embed(
    State(state): State<Arc<AppState>>,
    request: Request<Body>,
) -> Result<Response, ApiError> {
    let _admission = state.admit()?;
    let request: EmbedRequest = body(&state, request).await?;
    if request.images.is_empty() && request.texts.is_empty() {
        return Err(ApiError::bad_request(
            "nothing to embed: give \"images\" (base64 file bytes) and/or \"texts\"",
        ));
    }
    check_count(
        "images",
        request.images.len(),
        state.limits.max_images,
        "--max-images",
    )?;
    check_texts("texts", &request.texts, &state.limits)?;
    // Check and prepare everything before queueing anything, so a bad text costs no image forward pass.
    let ids = if request.texts.is_empty() {
        None
    } else {
        Some(texts_tensor(&state.engine, request.texts).await?)
    };
    let pixels = if request.images.is_empty() {
        None
    } else {
        Some(images_tensor(&state.engine, &state.decode_pool, request.images).await?)
    };
    let image_embeddings = match pixels {
        Some(p) => state.batcher.embed_images(p).await?,
        None => Vec::new(),
    };
    let text_embeddings = match ids {
        Some(ids) => state.batcher.embed_texts(ids).await?,
        None => Vec::new(),
    };
    Ok(Json(json!({
        "image_embeddings": image_embeddings,
        "text_embeddings": text_embeddings,
    }))
    .into_response())
}

async fn caption(
    State(state): State<Arc<AppState>>,
    request: Request<Body>,
) -> Result<Response, ApiError> {
    let _admission = state.admit()?;
    let request: CaptionRequest = body(&state, request).await?;
    let settings = state
        .engine
        .caption_settings(request.strategy.as_deref())
        .map_err(ApiError::bad_request)?;
    if request.images.is_empty() {
        return Err(ApiError::bad_request(
            "\"images\" is empty: give at least one base64 image",
        ));
    }
    check_count(
        "images",
        request.images.len(),
        state.limits.max_images,
        "--max-images",
    )?;
    let pixels = images_tensor(&state.engine, &state.decode_pool, request.images).await?;
    let captions = state.batcher.caption(pixels, settings).await?;
    Ok(Json(json!({ "captions": captions })).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClassifyRequest {
    images: Vec<String>,
    /// Class names; the built-in ImageNet classes when left out.
    #[serde(default)]
    classes: Option<Vec<String>>,
    /// Built-in prompt templates: "openai" (80) or "simple" (7).
    #[serde(default)]
    templates: Option<String>,
    #[serde(default = "default_top_k")]
    top_k: usize,
}

fn default_top_k() -> usize {
    5
}

/// Class embeddings for `classnames` with the built-in `templates`, as `coca classify` builds and caches them.
async fn classifier(
    state: &Arc<AppState>,
    classnames: Vec<String>,
    templates: &str,
) -> Result<(Arc<Vec<String>>, Tensor), ApiError> {
    let prompts = lists::builtin_templates(templates).ok_or_else(|| {
        ApiError::bad_request(format!(
            "\"templates\": {templates:?} is not a built-in template set ({})",
            lists::builtin_template_set_names().join(", ")
        ))
    })?;
    let state = state.clone();
    let spec = templates.to_string();
    tokio::task::spawn_blocking(move || {
        let engine = &state.engine;
        let (args, model_args) = &state.classifier;
        let lists = ListSpecs {
            classes: "request",
            templates: &spec,
        };
        let tensor = class_embeddings(
            args,
            model_args,
            &lists,
            (&engine.model, &engine.cfg),
            (&classnames, &prompts),
            true,
        )
        .map_err(|e| ApiError::bad_request(format!("classes: {e:#}")))?;
        Ok((Arc::new(classnames), tensor))
    })
    .await
    .map_err(ApiError::internal)?
}

async fn classify(
    State(state): State<Arc<AppState>>,
    request: Request<Body>,
) -> Result<Response, ApiError> {
    let _admission = state.admit()?;
    let request: ClassifyRequest = body(&state, request).await?;
    if request.images.is_empty() {
        return Err(ApiError::bad_request(
            "\"images\" is empty: give at least one base64 image",
        ));
    }
    if request.top_k == 0 {
        return Err(ApiError::bad_request("\"top_k\" must be at least 1"));
    }
    check_count(
        "images",
        request.images.len(),
        state.limits.max_images,
        "--max-images",
    )?;
    let templates = request.templates.as_deref().unwrap_or("openai");
    let (classnames, weights) = match request.classes {
        Some(classes) => {
            if classes.is_empty() {
                return Err(ApiError::bad_request(
                    "\"classes\" is empty: give class names, or leave it out for ImageNet's",
                ));
            }
            check_texts("classes", &classes, &state.limits)?;
            classifier(&state, classes, templates).await?
        }
        None if templates == "openai" => state
            .imagenet
            .get_or_try_init(|| async {
                let names = lists::builtin_classnames("imagenet").ok_or_else(|| {
                    ApiError::internal("the built-in ImageNet classes are missing")
                })?;
                classifier(&state, names, "openai").await
            })
            .await?
            .clone(),
        None => {
            let names = lists::builtin_classnames("imagenet")
                .ok_or_else(|| ApiError::internal("the built-in ImageNet classes are missing"))?;
            classifier(&state, names, templates).await?
        }
    };
    let pixels = images_tensor(&state.engine, &state.decode_pool, request.images).await?;
    let rows = state.batcher.embed_images(pixels).await?;
    let (n, dim) = (rows.len(), rows.first().map_or(0, Vec::len));
    let embeddings = Tensor::from_vec(rows.concat(), (n, dim), &candle_core::Device::Cpu)
        .map_err(ApiError::internal)?;
    let ranked = coca_zeroshot::classify(&embeddings, &weights, request.top_k)
        .map_err(ApiError::internal)?;
    let results: Vec<Value> = ranked
        .iter()
        .map(|preds| json!({ "top_k": predictions_json(preds, &classnames) }))
        .collect();
    Ok(Json(json!({ "results": results })).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SearchRequest {
    /// A text query.
    #[serde(default)]
    text: Option<String>,
    /// An image query (base64 file bytes).
    #[serde(default)]
    image: Option<String>,
    /// "image" or "text": which stored embeddings to compare with (default: images when the index has them).
    #[serde(default)]
    against: Option<String>,
    #[serde(default = "default_search_k")]
    top_k: usize,
}

fn default_search_k() -> usize {
    10
}

/// The search state, or 404 when the server was started without `--index`.
fn search_state(state: &AppState) -> Result<&SearchState, ApiError> {
    state.search.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "this server has no index to search: start it with --index DIR (a `coca embed --output-dir` folder)",
        )
    })
}

async fn search(
    State(state): State<Arc<AppState>>,
    request: Request<Body>,
) -> Result<Response, ApiError> {
    let search = search_state(&state)?;
    let _admission = state.admit()?;
    let request: SearchRequest = body(&state, request).await?;
    if request.top_k == 0 || request.top_k > search.max_results {
        return Err(ApiError::bad_request(format!(
            "\"top_k\" must be from 1 to {} (--max-results)",
            search.max_results
        )));
    }
    let against = match request.against.as_deref() {
        None => search.index.default_against(),
        Some("image") => Modality::Image,
        Some("text") => Modality::Text,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "\"against\": {other:?} is not \"image\" or \"text\""
            )))
        }
    };
    if !search.index.has(against) {
        return Err(ApiError::bad_request(format!(
            "\"against\": the index has no {} embeddings",
            if against == Modality::Image {
                "image"
            } else {
                "text"
            }
        )));
    }
    let query = match (request.text, request.image) {
        (Some(text), None) => {
            check_texts("text", std::slice::from_ref(&text), &state.limits)?;
            let ids = texts_tensor(&state.engine, vec![text]).await?;
            state.batcher.embed_texts(ids).await?
        }
        (None, Some(image)) => {
            let pixels = images_tensor(&state.engine, &state.decode_pool, vec![image]).await?;
            state.batcher.embed_images(pixels).await?
        }
        _ => {
            return Err(ApiError::bad_request(
                "give one query: \"text\" or \"image\" (base64 file bytes)",
            ))
        }
    };
    let query = query
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::internal("the model returned no embedding for the query"))?;
    let permit = search
        .pool
        .clone()
        .acquire_owned()
        .await
        .map_err(ApiError::internal)?;
    let index = search.index.clone();
    let k = request.top_k;
    let results = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        index.search(&query, against, k)
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(|e| ApiError::internal(format!("searching the index: {e:#}")))?;
    Ok(Json(json!({
        "against": if against == Modality::Image { "image" } else { "text" },
        "results": results,
    }))
    .into_response())
}

/// A thumbnail of an image the index lists, by its id (a result's `"id"`); nothing else can be asked for.
async fn thumbnail_of(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let search = search_state(&state)?;
    let not_found = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!(
                "no image with id {id:?} in the index (ids are numbers from 0 to {})",
                search.index.len().saturating_sub(1)
            ),
        )
    };
    let file = id
        .parse::<usize>()
        .ok()
        .and_then(|n| search.index.file(n))
        .ok_or_else(not_found)?
        .to_path_buf();
    let _admission = state.admit()?;
    let permit = state
        .decode_pool
        .clone()
        .acquire_owned()
        .await
        .map_err(ApiError::internal)?;
    let (size, max_bytes) = (search.thumbnail_size, state.limits.max_body as u64);
    let limits = state.engine.preprocess.limits;
    let made = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        thumbnail(&file, size, max_bytes, &limits)
    })
    .await
    .map_err(ApiError::internal)?;
    let jpeg = match made {
        Ok(jpeg) => jpeg,
        Err(ThumbnailError::TooLarge(max)) => {
            return Err(ApiError::too_large(format!(
                "the image of id {id} is over {max} bytes (--max-body-mb)"
            )))
        }
        Err(ThumbnailError::Unreadable(e)) => {
            // The client only named an id: the file's path stays in the server's log.
            tracing::warn!("thumbnail of id {id}: {e}");
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("the image of id {id} cannot be read or decoded"),
            ));
        }
    };
    Ok((
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("image/jpeg")),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("private, max-age=3600"),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        jpeg,
    )
        .into_response())
}

/// The web page: every asset inside it, nothing fetched from elsewhere.
async fn page() -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        ],
        include_str!("page.html"),
    )
        .into_response()
}

/// The API described in OpenAPI 3.
async fn openapi() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        include_str!("openapi.json"),
    )
        .into_response()
}
