//! Reading and checking request bodies: the size limit (the `Content-Length` first, then while streaming), the
//! read deadline, the content type, JSON with serde's message, per-request caps on images and texts, and image
//! decoding through a pool whose size bounds the images decoded at once.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, StatusCode};
use base64::Engine as _;
use candle_core::Tensor;
use coca_image::DecodedImage;
use http_body_util::BodyExt;
use tokio::sync::Semaphore;

use super::batcher::Engine;
use super::error::ApiError;
use crate::pipeline::tokenize_texts;

/// The limits on one request.
#[derive(Debug, Clone)]
pub struct RequestLimits {
    /// Largest body, in bytes.
    pub max_body: usize,
    /// Time to receive the whole body.
    pub body_timeout: Duration,
    /// Most images in one request.
    pub max_images: usize,
    /// Most texts (or classes) in one request.
    pub max_texts: usize,
    /// Longest text, in characters.
    pub max_text_chars: usize,
}

/// How a body is encoded.
#[derive(Debug)]
pub enum BodyKind {
    /// `application/json`.
    Json,
    /// `multipart/form-data` with this boundary.
    Multipart(String),
}

/// Longest multipart boundary RFC 2046 allows.
const MAX_BOUNDARY_LEN: usize = 70;

/// The body's encoding from its `Content-Type`: JSON or multipart form data, else 415.
pub fn body_kind(headers: &HeaderMap) -> Result<BodyKind, ApiError> {
    let value = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = value.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case("application/json") {
        return Ok(BodyKind::Json);
    }
    if essence.eq_ignore_ascii_case("multipart/form-data") {
        if let Some(boundary) = value.split(';').skip(1).find_map(|p| {
            let (k, v) = p.split_once('=')?;
            k.trim()
                .eq_ignore_ascii_case("boundary")
                .then(|| v.trim().trim_matches('"').to_string())
        }) {
            // RFC 2046 caps a boundary at 70 characters; a longer one would let a client make the part search
            // cost body length × boundary length.
            if boundary.is_empty() || boundary.len() > MAX_BOUNDARY_LEN {
                return Err(ApiError::bad_request(format!(
                    "multipart boundary of {} characters; it must have 1 to {MAX_BOUNDARY_LEN} (RFC 2046)",
                    boundary.len()
                )));
            }
            return Ok(BodyKind::Multipart(boundary));
        }
        return Err(ApiError::bad_request(
            "Content-Type multipart/form-data without a boundary",
        ));
    }
    Err(ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        format!(
            "Content-Type {:?} is not supported: send application/json or multipart/form-data",
            value
        ),
    ))
}

/// Read the whole body within the limits: a `Content-Length` over the limit is refused before reading anything,
/// a body that grows past it while streaming as soon as it does, and one not received in time with 408.
pub async fn read_body(
    body: Body,
    headers: &HeaderMap,
    limits: &RequestLimits,
) -> Result<Bytes, ApiError> {
    let max = limits.max_body;
    let over = |n: &dyn std::fmt::Display| {
        ApiError::too_large(format!(
            "request body: {n} bytes is over the limit of {max} bytes (--max-body-mb)"
        ))
    };
    if let Some(length) = headers.get(header::CONTENT_LENGTH) {
        let length: u64 = length
            .to_str()
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| ApiError::bad_request("Content-Length is not a number"))?;
        if length > max as u64 {
            return Err(over(&length));
        }
    }
    let collect = async {
        let mut body = body;
        let mut bytes = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| ApiError::bad_request(format!("request body: {e}")))?;
            if let Ok(data) = frame.into_data() {
                if bytes.len() + data.len() > max {
                    return Err(over(&format!("more than {}", bytes.len() + data.len())));
                }
                bytes.extend_from_slice(&data);
            }
        }
        Ok(Bytes::from(bytes))
    };
    tokio::time::timeout(limits.body_timeout, collect)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "request body: not received within {:?} (--body-timeout)",
                    limits.body_timeout
                ),
            )
        })?
}

/// Parse a JSON body into `T`, with serde's message (line, column, field) as the error.
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!(
            "request body is not valid JSON for this endpoint: {e}"
        ))
    })
}

/// A `multipart/form-data` body as the JSON object the endpoint takes: parts named `images` (file bytes) become
/// base64 strings of the `images` list and a part named `image` the base64 string `image`, parts named `texts`
/// or `classes` entries of those lists, and any other part a string field (`top_k` a number), so both encodings
/// reach the same checks.
pub fn multipart_json(body: &[u8], boundary: &str) -> Result<serde_json::Value, ApiError> {
    use serde_json::{Map, Value};
    let bad = |m: &str| ApiError::bad_request(format!("multipart body: {m}"));
    let delimiter = format!("--{boundary}");
    let delimiter = delimiter.as_bytes();
    let find = |hay: &[u8], needle: &[u8], from: usize| {
        hay.get(from..)
            .and_then(|h| h.windows(needle.len()).position(|w| w == needle))
            .map(|i| i + from)
    };
    let mut object = Map::new();
    let mut at = find(body, delimiter, 0).ok_or_else(|| bad("no boundary"))? + delimiter.len();
    loop {
        if body.get(at..at + 2) == Some(b"--") {
            break;
        }
        let start = at + 2; // the CRLF after the delimiter
        let next = find(body, delimiter, start).ok_or_else(|| bad("a part is not closed"))?;
        // The part ends with the CRLF before the next delimiter.
        let part = body
            .get(start..next.saturating_sub(2))
            .ok_or_else(|| bad("a part is malformed"))?;
        let split = find(part, b"\r\n\r\n", 0).ok_or_else(|| bad("a part has no headers"))?;
        let headers = String::from_utf8_lossy(&part[..split]);
        let content = &part[split + 4..];
        let name = headers
            .lines()
            .filter(|l| l.to_ascii_lowercase().starts_with("content-disposition:"))
            .flat_map(|l| l.split(';'))
            .find_map(|p| {
                p.trim()
                    .strip_prefix("name=")
                    .map(|n| n.trim_matches('"').to_string())
            })
            .ok_or_else(|| bad("a part has no name"))?;
        let value = match name.as_str() {
            "images" | "image" => {
                Value::String(base64::engine::general_purpose::STANDARD.encode(content))
            }
            _ => {
                let text = std::str::from_utf8(content)
                    .map_err(|_| bad(&format!("the part {name:?} is not UTF-8 text")))?;
                if name == "top_k" {
                    Value::from(
                        text.trim()
                            .parse::<u64>()
                            .map_err(|_| bad(&format!("\"top_k\" is not a number: {text:?}")))?,
                    )
                } else {
                    Value::String(text.to_string())
                }
            }
        };
        if matches!(name.as_str(), "images" | "texts" | "classes") {
            match object
                .entry(name)
                .or_insert_with(|| Value::Array(Vec::new()))
            {
                Value::Array(list) => list.push(value),
                _ => return Err(bad("a list field repeats as a single one")),
            }
        } else {
            object.insert(name, value);
        }
        at = next + delimiter.len();
    }
    Ok(Value::Object(object))
}

/// Refuse more than `max` items of a kind (413 naming the flag).
pub fn check_count(what: &str, n: usize, max: usize, flag: &str) -> Result<(), ApiError> {
    if n > max {
        return Err(ApiError::too_large(format!(
            "{n} {what} in one request; the server takes at most {max} ({flag})"
        )));
    }
    Ok(())
}

/// Check the count and the lengths of `texts` (named `what`, e.g. "texts" or "classes").
pub fn check_texts(what: &str, texts: &[String], limits: &RequestLimits) -> Result<(), ApiError> {
    check_count(what, texts.len(), limits.max_texts, "--max-texts")?;
    for (i, text) in texts.iter().enumerate() {
        let chars = text.chars().count();
        if chars > limits.max_text_chars {
            return Err(ApiError::too_large(format!(
                "{what}[{i}] is {chars} characters long; the server takes at most {} (--max-text-chars)",
                limits.max_text_chars
            )));
        }
    }
    Ok(())
}

/// Token ids of `texts`, tokenized on the blocking pool; an empty text is a 400 naming it.
pub async fn texts_tensor(engine: &Arc<Engine>, texts: Vec<String>) -> Result<Tensor, ApiError> {
    let engine = engine.clone();
    tokio::task::spawn_blocking(move || {
        tokenize_texts(&texts, &engine.cfg, engine.model.device())
            .map_err(|e| ApiError::bad_request(format!("texts: {e:#}")))
    })
    .await
    .map_err(ApiError::internal)?
}

/// Decode base64 images and preprocess them into one (n, 3, S, S) tensor; errors name the image's index. Each image
/// is decoded on the blocking pool while holding one of `pool`'s permits, so the pool's size bounds how many
/// images are decoded at once, whatever the number of requests.
pub async fn images_tensor(
    engine: &Arc<Engine>,
    pool: &Arc<Semaphore>,
    images: Vec<String>,
) -> Result<Tensor, ApiError> {
    let size = engine.preprocess.image_size as usize;
    let mut pixels = Vec::with_capacity(images.len() * 3 * size * size);
    let count = images.len();
    for (i, encoded) in images.into_iter().enumerate() {
        let name = format!("images[{i}]");
        let permit = pool
            .clone()
            .acquire_owned()
            .await
            .map_err(ApiError::internal)?;
        let engine = engine.clone();
        let one = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(encoded.trim())
                .map_err(|e| ApiError::bad_request(format!("{name}: not valid base64: {e}")))?;
            drop(encoded);
            let decoded = DecodedImage::decode_limited(&bytes, &name, &engine.preprocess.limits)
                .map_err(|e| ApiError::bad_request(e.to_string()))?;
            drop(bytes);
            Ok::<_, ApiError>(coca_image::preprocess_decoded(&decoded, &engine.preprocess))
        })
        .await
        .map_err(ApiError::internal)??;
        pixels.extend(one);
    }
    Tensor::from_vec(pixels, (count, 3, size, size), engine.model.device())
        .and_then(|t| t.to_dtype(engine.model.dtype()))
        .map_err(ApiError::internal)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind_of(content_type: &str) -> Result<BodyKind, ApiError> {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, content_type.parse().unwrap());
        body_kind(&headers)
    }

    #[test]
    fn multipart_boundaries_are_held_to_rfc_2046_length() {
        let ok = format!("multipart/form-data; boundary={}", "b".repeat(70));
        assert!(matches!(kind_of(&ok), Ok(BodyKind::Multipart(b)) if b.len() == 70));
        for boundary in ["\"\"".to_string(), "b".repeat(71)] {
            let err = kind_of(&format!("multipart/form-data; boundary={boundary}")).unwrap_err();
            assert_eq!(err.status, StatusCode::BAD_REQUEST);
            assert!(
                err.message.contains("1 to 70 (RFC 2046)"),
                "{}",
                err.message
            );
        }
    }
}
