//! `coca probe --predict PROBE INPUTS...`: classify new images or videos with a saved probe.

use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use coca_eval::classification::ranked_classes;
use coca_generate::logits::softmax;
use serde_json::json;

use super::features::{encode, encode_video};
use super::head::{ProbeHead, ProbeKind};
use super::ProbeArgs;
use crate::output::write_json;
use crate::pipeline::{load_images, preprocess_config};

/// Identifies probe files (metadata `format`).
pub const PROBE_FORMAT: &str = "coca-probe-v1";

/// What a probe file says about itself.
struct ProbeInfo {
    kind: ProbeKind,
    input_dim: usize,
    classes: Vec<String>,
    video: bool,
    frames: usize,
    model_config: Option<String>,
    /// For a head fine-tuned with its encoder (`coca finetune`): the SHA-256 and path of that encoder's
    /// weights, the only ones it fits.
    encoder: Option<(String, String)>,
}

/// Metadata entry of a fine-tuned head: the SHA-256 of the weights it was fine-tuned with.
pub const ENCODER_SHA256: &str = "encoder_sha256";
/// Metadata entry of a fine-tuned head: where those weights were written.
pub const ENCODER_PATH: &str = "encoder";

/// SHA-256 (hex) of a file's contents, read in chunks.
pub fn file_sha256(path: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let mut file =
        std::fs::File::open(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .with_context(|| format!("{}: cannot read", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

fn read_info(path: &Path) -> Result<ProbeInfo> {
    let file = coca_checkpoint::Checkpoint::open(path)?;
    let meta = file.metadata();
    let field = |name: &str| {
        meta.get(name).with_context(|| {
            format!(
                "{}: not a probe saved by `coca probe --save-probe` (no `{name}`)",
                path.display()
            )
        })
    };
    if field("format")? != PROBE_FORMAT {
        bail!(
            "{}: unknown probe format {:?}",
            path.display(),
            meta.get("format")
        );
    }
    let number = |name: &str| -> Result<usize> {
        field(name)?
            .parse()
            .with_context(|| format!("{}: bad `{name}` in the probe's metadata", path.display()))
    };
    let kind = match field("kind")?.as_str() {
        "linear_probe" => ProbeKind::Linear,
        "attentional_probe" => ProbeKind::Attentional {
            queries: number("queries")?,
            heads: number("heads")?,
        },
        other => bail!("{}: unknown probe kind `{other}`", path.display()),
    };
    Ok(ProbeInfo {
        kind,
        input_dim: number("input_dim")?,
        classes: serde_json::from_str(field("classes")?)
            .with_context(|| format!("{}: bad class list", path.display()))?,
        video: field("video")? == "true",
        frames: number("frames")?,
        model_config: meta.get("model_config").cloned(),
        encoder: meta.get(ENCODER_SHA256).map(|sha| {
            (
                sha.clone(),
                meta.get(ENCODER_PATH).cloned().unwrap_or_default(),
            )
        }),
    })
}

/// Run `--predict`.
pub fn run(args: &ProbeArgs) -> Result<()> {
    let probe_path = args.predict.as_deref().expect("called with --predict");
    if args.inputs.is_empty() {
        bail!("--predict needs inputs to classify: coca probe ... --predict PROBE IMAGE...");
    }
    if args.top_k == 0 {
        bail!("--top-k must be at least 1");
    }
    let info = read_info(probe_path)?;
    let head = ProbeHead::load(probe_path, info.kind, info.input_dim, info.classes.len())?;
    let video = info.video || args.video;
    for input in &args.inputs {
        if !input.exists() {
            bail!(
                "{}: no such {}",
                input.display(),
                if video { "video" } else { "image file" }
            );
        }
    }
    if let Some((sha, encoder)) = &info.encoder {
        let weights = args.model.weights_path()?;
        if file_sha256(&weights)? != *sha {
            bail!(
                "{}: this head was fine-tuned together with the encoder weights {encoder}, and --pretrained {} \
                 is another checkpoint (its SHA-256 differs); give --pretrained {encoder}",
                probe_path.display(),
                weights.display()
            );
        }
    }
    let (model, cfg) = args.model.load()?;
    if let Some(saved) = &info.model_config {
        if serde_json::to_string(&cfg)? != *saved {
            tracing::warn!(
                "{}: the probe was trained on another model config than {}; its predictions will not be meaningful",
                probe_path.display(),
                args.model.model
            );
        }
    }
    let pre = preprocess_config(&cfg)?;
    let mut results = Vec::new();
    for input in &args.inputs {
        let (tokens, embedding) = if video {
            encode_video(&model, input, info.frames, &pre)
                .with_context(|| format!("{}: cannot use this video", input.display()))?
        } else {
            let pixels = load_images(std::slice::from_ref(input), &pre, model.device())?;
            encode(&model, &pixels)?
        };
        let x: Tensor = match info.kind {
            ProbeKind::Linear => embedding,
            ProbeKind::Attentional { .. } => tokens,
        };
        let x = x.to_device(&Device::Cpu)?;
        let logits = head.logits(&x)?.to_vec2::<f32>()?.remove(0);
        let probs = softmax(&logits);
        // Probabilities are reported in f32, as the logits are.
        let top: Vec<serde_json::Value> = ranked_classes(&logits)
            .into_iter()
            .take(args.top_k)
            .map(|c| json!({"class": info.classes[c], "index": c, "probability": probs[c] as f32}))
            .collect();
        results.push(json!({"input": input.display().to_string(), "top_k": top}));
    }
    if args.json || args.output.is_some() {
        return write_json(&json!(results), args.output.as_deref());
    }
    for r in &results {
        println!("{}", r["input"].as_str().unwrap_or_default());
        for t in r["top_k"].as_array().into_iter().flatten() {
            println!(
                "  {:6.2}%  {}",
                100.0 * t["probability"].as_f64().unwrap_or(0.0),
                t["class"].as_str().unwrap_or_default()
            );
        }
    }
    Ok(())
}
