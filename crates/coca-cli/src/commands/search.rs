//! `coca search`: the stored samples most similar to a text or an image, by cosine similarity over an
//! embedding folder written by `coca embed --output-dir` (or by clip-retrieval): through the faiss index
//! `coca index` built when there is one, else (or with `--exact`) by comparing with every row.

use std::path::PathBuf;

use anyhow::{bail, Result};
use candle_core::DType;
use clap::{Args, ValueEnum};
use coca_retrieval::{Index, Modality};
use serde_json::json;

use crate::cli::Global;
use crate::commands::index::AnnIndex;
use crate::model_args::ModelArgs;
use crate::output::write_json;
use crate::pipeline::{load_images, preprocess_config, tokenize_texts};

/// Which stored embeddings to compare the query with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Against {
    /// The image embeddings (img_emb/).
    Image,
    /// The caption embeddings (text_emb/).
    Text,
}

/// `coca search`.
#[derive(Debug, Args)]
#[command(after_help = "\
The query is embedded with the model given (use the one that built the index). When `coca index OUT` has
built a faiss index (OUT/index/image.index, text.index), it is searched, with Python's faiss-cpu, and a note
on stderr says so with the recall measured at build time; otherwise, or with --exact, the query is compared
with every stored embedding, one partition in memory at a time.

Examples:
  coca embed --model coca_ViT-B-32 --pretrained model.safetensors --input-dir photos/ --output-dir index/
  coca search --model coca_ViT-B-32 --pretrained model.safetensors --index index/ --text 'a dog on a beach'
  coca search --model coca_ViT-B-32 --pretrained model.safetensors --index index/ --image query.jpg --top-k 5")]
pub struct SearchArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The folder written by `coca embed --output-dir`.
    #[arg(long, value_name = "OUT")]
    pub index: PathBuf,
    /// Find the samples that best match this text.
    #[arg(
        long,
        value_name = "QUERY",
        required_unless_present_any = ["image", "video"],
        conflicts_with_all = ["image", "video"]
    )]
    pub text: Option<String>,
    /// Find the samples most similar to this image.
    #[arg(long, value_name = "PATH", conflicts_with = "video")]
    pub image: Option<PathBuf>,
    /// Find the samples most similar to this video (frame folder, GIF, or video file with the `ffmpeg`
    /// feature): the normalised mean of its frames' embeddings.
    #[arg(long, value_name = "PATH")]
    pub video: Option<PathBuf>,
    /// Frames sampled from --video (the centre frame of each of N equal segments).
    #[arg(long, default_value_t = coca_data::video::DEFAULT_FRAMES, value_name = "N")]
    pub frames: usize,
    /// How many results.
    #[arg(long, default_value_t = 10, value_name = "K")]
    pub top_k: usize,
    /// Compare with the stored image embeddings (default when the index has them) or caption embeddings.
    #[arg(long, value_enum)]
    pub against: Option<Against>,
    /// Print JSON {"query": .., "against": .., "method": .., "results": [{"rank", "score", "image_path", ..}]}.
    #[arg(long)]
    pub json: bool,
    /// Compare with every stored row even when `coca index` built a faiss index.
    #[arg(long)]
    pub exact: bool,
    /// Python interpreter with faiss-cpu and numpy, for a faiss index (default: $COCA_PYTHON, else python3).
    #[arg(long, value_name = "PATH")]
    pub python: Option<String>,
}

/// Run the command.
pub fn run(args: SearchArgs, _global: &Global) -> Result<()> {
    if args.top_k == 0 {
        bail!("--top-k must be at least 1");
    }
    let index = Index::open(&args.index)?;
    let against = match args.against {
        Some(Against::Image) => Modality::Image,
        Some(Against::Text) => Modality::Text,
        None if index.has(Modality::Image) => Modality::Image,
        None => Modality::Text,
    };
    if let Some(image) = &args.image {
        if !image.is_file() {
            bail!("{}: no such image file", image.display());
        }
    }
    if let Some(video) = &args.video {
        if coca_data::video::video_kind(video).is_none() {
            bail!(
                "{}: not a video (a folder of frames, a .gif, or a video file such as .mp4)",
                video.display()
            );
        }
    }
    warn_if_other_model(&index, &args.model);

    let (model, cfg) = args.model.load()?;
    let device = model.device().clone();
    let query = match (&args.text, &args.image) {
        (None, None) if args.video.is_some() => {
            let path = args.video.as_deref().expect("checked by the guard");
            let pre = preprocess_config(&cfg)?;
            let v = crate::video_input::embed_video(&model, path, args.frames, &pre)?;
            let n = v.len();
            candle_core::Tensor::from_vec(v, (1, n), &device)?
        }
        (Some(text), _) => {
            let ids = tokenize_texts(std::slice::from_ref(text), &cfg, &device)?;
            model.encode_text(&ids)?.embedding
        }
        (None, Some(path)) => {
            let pixels = load_images(
                std::slice::from_ref(path),
                &preprocess_config(&cfg)?,
                &device,
            )?;
            model.encode_image(&pixels)?.embedding
        }
        (None, None) => bail!("give a query: --text QUERY, --image PATH or --video PATH"),
    };
    let query: Vec<f32> = query.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    let against_name = match against {
        Modality::Image => "image",
        Modality::Text => "text",
    };
    let ann = if args.exact {
        None
    } else {
        AnnIndex::find(&args.index, against_name)?
    };
    let (hits, method) = match &ann {
        Some(ann) => {
            eprintln!(
                "note: searching the faiss index {} ({}{}; recall@{} {:.3} against exact search when built); \
                 --exact compares with every row",
                ann.path.display(),
                ann.info.factory,
                if ann.info.index_param.is_empty() {
                    String::new()
                } else {
                    format!(", {}", ann.info.index_param)
                },
                ann.info.recall_at,
                ann.info.recall
            );
            let found = ann.search(args.python.as_deref(), &query, args.top_k)?;
            (index.hits(found)?, "faiss")
        }
        None => (index.search(&query, against, args.top_k)?, "exact"),
    };

    let (query_kind, query_value) = match (&args.text, &args.image) {
        (Some(t), _) => ("text", t.clone()),
        (None, Some(p)) => ("image", p.display().to_string()),
        (None, None) => (
            "video",
            args.video
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
        ),
    };
    if args.json {
        let results: Vec<serde_json::Value> = hits
            .iter()
            .enumerate()
            .map(|(i, hit)| {
                let mut v = json!(hit);
                v["rank"] = json!(i + 1);
                v
            })
            .collect();
        let value = json!({
            "index": args.index.display().to_string(),
            "query": {query_kind: query_value},
            "against": against_name,
            "method": method,
            "results": results,
        });
        return write_json(&value, None);
    }
    println!(
        "top {} by cosine similarity of {query_kind} {query_value:?} with the {against_name} embeddings of {}:",
        hits.len(),
        args.index.display()
    );
    for (i, hit) in hits.iter().enumerate() {
        let path = hit.metadata.image_path.as_deref().unwrap_or("-");
        let path = match hit.metadata.frames {
            Some(n) if hit.metadata.video => format!("{path} (video, {n} frames)"),
            _ => path.to_string(),
        };
        match &hit.metadata.caption {
            Some(caption) => println!("{:>4}  {:+.4}  {path}  {caption:?}", i + 1, hit.score),
            None => println!("{:>4}  {:+.4}  {path}", i + 1, hit.score),
        }
    }
    Ok(())
}

/// Scores across models mean nothing: say so when the index records another model or checkpoint.
fn warn_if_other_model(index: &Index, model: &ModelArgs) {
    let Some(manifest) = index.manifest() else {
        return;
    };
    let same = |key: &str, given: &str| {
        let Some(recorded) = manifest.settings.get(key).and_then(|v| v.as_str()) else {
            return true;
        };
        let canonical = std::fs::canonicalize(given)
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| given.to_string());
        recorded == canonical || recorded == given
    };
    for (key, given) in [("model", &model.model), ("pretrained", &model.pretrained)] {
        if !same(key, given) {
            tracing::warn!(
                "{}: the index was built with {key} {}, not {given}; its scores will not be meaningful",
                index.root().display(),
                manifest.settings[key]
            );
        }
    }
}
