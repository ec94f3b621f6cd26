//! `coca embed`: L2-normalised embeddings of images and texts, given one by one on the command line
//! (`--image`, `--text`) or as a whole collection written to an output folder ([`collection`]).

mod collection;
pub(crate) mod decode;
pub(crate) mod progress;
mod workers;

pub use collection::CollectionArgs;

use std::path::PathBuf;

use anyhow::{bail, Result};
use candle_core::{DType, Tensor};
use clap::Args;
use serde_json::json;

use crate::cli::Global;
use crate::model_args::ModelArgs;
use crate::output::write_json;
use crate::pipeline::{load_images, preprocess_config, tokenize_texts};

/// `coca embed`.
#[derive(Debug, Args)]
#[command(after_help = "\
Embeddings are printed in input order: images first, then texts. With both images and texts, the cosine
similarities and open_clip-style probabilities (softmax of logit_scale × similarity over the texts) follow.

Example:
  coca embed --model coca_ViT-B-32 --pretrained model.safetensors --image a.jpg --image b.png \\
       --text 'a diagram' --text 'a dog' --json > embeddings.json

Collections: --input-dir, --input-list, --input-csv or --input-shards with --output-dir write clip-retrieval's
layout (img_emb/, text_emb/, metadata/) in partitions, resumable after an interruption, then print a summary
(--json: as JSON). Unreadable samples are skipped, named in a warning, and counted. See docs/retrieval.md.
  coca embed --model coca_ViT-B-32 --pretrained model.safetensors \\
       --input-shards 'data/{00000..00099}.tar' --output-dir index/
  coca search --model coca_ViT-B-32 --pretrained model.safetensors --index index/ --text 'a red car'")]
pub struct EmbedArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// An image file (JPEG, PNG, WebP, GIF, BMP, TIFF); repeat for several.
    #[arg(long = "image", value_name = "PATH")]
    pub images: Vec<PathBuf>,
    /// A text to embed; repeat for several.
    #[arg(long = "text", value_name = "TEXT")]
    pub texts: Vec<String>,
    /// A video: a folder of frames, an animated GIF, or a video file (MP4, AVI, ... in builds with the `ffmpeg`
    /// feature). Its embedding is the L2-normalised mean of its --frames frames' embeddings; repeat for several.
    #[arg(long = "video", value_name = "PATH")]
    pub videos: Vec<PathBuf>,
    /// Frames sampled per video (the centre frame of each of N equal segments), for --video and for the
    /// videos of a collection.
    #[arg(long, default_value_t = coca_data::video::DEFAULT_FRAMES, value_name = "N")]
    pub frames: usize,
    /// Print one JSON object {"image_embeddings": [[..]], "text_embeddings": [[..]]} instead of a summary.
    #[arg(long)]
    pub json: bool,
    /// Write the JSON to this file (atomically) instead of stdout.
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Images per forward pass.
    #[arg(long, default_value_t = 32, value_name = "N")]
    pub batch_size: usize,
    /// Bulk embedding of a whole collection into --output-dir (see commands/embed/collection.rs).
    #[command(flatten)]
    pub collection: CollectionArgs,
}

/// The rows of `t`, one per input named in `inputs`; an error naming the first input whose embedding holds a
/// NaN or an infinity, which JSON could only write as `null`.
fn rows(t: &Tensor, inputs: impl IntoIterator<Item = String>) -> Result<Vec<Vec<f32>>> {
    let rows = t.to_dtype(DType::F32)?.to_vec2::<f32>()?;
    for (row, input) in rows.iter().zip(inputs) {
        ensure_finite(row, &input)?;
    }
    Ok(rows)
}

fn ensure_finite(embedding: &[f32], input: &str) -> Result<()> {
    if embedding.iter().all(|x| x.is_finite()) {
        return Ok(());
    }
    bail!(
        "the model produced a NaN or infinite embedding for {input} (from NaN or infinite weights, or an overflow at \
         this --precision)"
    )
}

/// Cosine similarities of normalised rows: `a[i] · b[j]`.
fn cosine_rows(a: &[Vec<f32>], b: &[Vec<f32>]) -> Vec<Vec<f32>> {
    a.iter()
        .map(|x| {
            b.iter()
                .map(|y| x.iter().zip(y).map(|(p, q)| p * q).sum())
                .collect()
        })
        .collect()
}

/// Run the command.
pub fn run(args: EmbedArgs, _global: &Global) -> Result<()> {
    if args.collection.is_requested() {
        if !args.images.is_empty() || !args.texts.is_empty() || !args.videos.is_empty() {
            bail!(
                "--image/--text/--video cannot be combined with a collection input (--input-dir, --input-list, \
                 --input-csv, --input-shards); embed single files without --output-dir"
            );
        }
        return collection::run(&args);
    }
    if args.images.is_empty() && args.texts.is_empty() && args.videos.is_empty() {
        bail!(
            "nothing to embed: pass at least one --image PATH, --video PATH or --text TEXT, or a collection with \
             --input-dir/--input-list/--input-csv/--input-shards and --output-dir"
        );
    }
    if args.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    for (i, text) in args.texts.iter().enumerate() {
        if text.trim().is_empty() {
            bail!("text #{} is empty; give some words to embed", i + 1);
        }
    }
    for path in &args.images {
        if !path.is_file() {
            bail!("{}: no such image file", path.display());
        }
    }
    if !args.videos.is_empty() && args.frames == 0 {
        bail!("--frames must be at least 1");
    }
    for path in &args.videos {
        if coca_data::video::video_kind(path).is_none() {
            bail!(
                "{}: not a video (a folder of frames, a .gif, or a video file such as .mp4)",
                path.display()
            );
        }
    }
    let (model, cfg) = args.model.load()?;
    let device = model.device().clone();

    let mut image_embeddings = Vec::new();
    let pre = preprocess_config(&cfg)?;
    for chunk in args.images.chunks(args.batch_size) {
        let pixels = load_images(chunk, &pre, &device)?;
        let names = chunk.iter().map(|p| format!("image '{}'", p.display()));
        image_embeddings.extend(rows(&model.encode_image(&pixels)?.embedding, names)?);
    }
    let mut video_embeddings = Vec::new();
    for path in &args.videos {
        let embedding = crate::video_input::embed_video(&model, path, args.frames, &pre)?;
        ensure_finite(&embedding, &format!("video '{}'", path.display()))?;
        video_embeddings.push(embedding);
    }
    let mut text_embeddings = Vec::new();
    for chunk in args.texts.chunks(args.batch_size.max(1)) {
        let ids = tokenize_texts(chunk, &cfg, &device)?;
        let names = chunk.iter().map(|t| format!("text {t:?}"));
        text_embeddings.extend(rows(&model.encode_text(&ids)?.embedding, names)?);
    }

    let scale = model
        .logit_scale_param()
        .exp()?
        .to_dtype(DType::F32)?
        .to_scalar::<f32>()?;
    let similarity: Vec<Vec<f32>> = image_embeddings
        .iter()
        .map(|img| {
            text_embeddings
                .iter()
                .map(|txt| img.iter().zip(txt).map(|(a, b)| a * b).sum())
                .collect()
        })
        .collect();

    if args.json || args.output.is_some() {
        let mut value = json!({
            "model": args.model.model,
            "image_embeddings": image_embeddings,
            "text_embeddings": text_embeddings,
        });
        if !image_embeddings.is_empty() && !text_embeddings.is_empty() {
            value["similarity"] = json!(similarity);
            value["logit_scale"] = json!(scale);
        }
        if !args.videos.is_empty() {
            value["video_embeddings"] = json!(video_embeddings);
            value["frames"] = json!(args.frames);
            if !text_embeddings.is_empty() {
                value["video_similarity"] = json!(cosine_rows(&video_embeddings, &text_embeddings));
                value["logit_scale"] = json!(scale);
            }
        }
        return write_json(&value, args.output.as_deref());
    }

    let dim = image_embeddings
        .first()
        .or(text_embeddings.first())
        .map_or(0, Vec::len);
    println!(
        "{} embeddings of dimension {dim} (L2-normalised)",
        image_embeddings.len() + text_embeddings.len() + video_embeddings.len()
    );
    let preview = |v: &[f32]| {
        let head: Vec<String> = v.iter().take(4).map(|x| format!("{x:+.4}")).collect();
        format!("[{}, ...]", head.join(", "))
    };
    for (path, e) in args.images.iter().zip(&image_embeddings) {
        println!("image {}: {}", path.display(), preview(e));
    }
    for (path, e) in args.videos.iter().zip(&video_embeddings) {
        println!(
            "video {} ({} frames): {}",
            path.display(),
            args.frames,
            preview(e)
        );
    }
    for (text, e) in args.texts.iter().zip(&text_embeddings) {
        println!("text  {text:?}: {}", preview(e));
    }
    if !video_embeddings.is_empty() && !text_embeddings.is_empty() {
        println!("\nvideo-text cosine similarity:");
        for (path, sims) in args
            .videos
            .iter()
            .zip(cosine_rows(&video_embeddings, &text_embeddings))
        {
            println!("  {}", path.display());
            for (text, s) in args.texts.iter().zip(sims) {
                println!("    {s:+.4}  {text}");
            }
        }
    }
    if !similarity.is_empty() && !text_embeddings.is_empty() {
        println!("\ncosine similarity (probability over texts at logit_scale {scale:.2}):");
        for (path, sims) in args.images.iter().zip(&similarity) {
            let max = sims.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let exps: Vec<f32> = sims.iter().map(|s| ((s - max) * scale).exp()).collect();
            let total: f32 = exps.iter().sum();
            println!("  {}", path.display());
            for ((text, s), e) in args.texts.iter().zip(sims).zip(&exps) {
                println!("    {s:+.4}  ({:5.1}%)  {text}", 100.0 * e / total);
            }
        }
    }
    Ok(())
}
