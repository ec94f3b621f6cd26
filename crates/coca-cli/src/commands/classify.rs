//! `coca classify`: zero-shot classification of images into named classes, as open_clip's zero-shot
//! evaluation does (prompt ensembles, softmax of 100 × cosine similarity).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::Tensor;
use clap::Args;
use coca_zeroshot::{
    build_classifier_with_progress, classify, lists, CacheKey, CacheOutcome, CheckpointIdentity,
    ClassifierCache, Prediction, Template,
};
use serde_json::json;

use crate::cli::Global;
use crate::model_args::ModelArgs;
use crate::output::write_json;
use crate::pipeline::{load_images, preprocess_config};
use crate::progress::Progress;

/// `coca classify`.
#[derive(Debug, Args)]
#[command(after_help = "\
Each class is embedded as open_clip's build_zero_shot_classifier does: every template is
filled with the class name, the prompts are embedded and L2-normalised, averaged per class
and normalised again. An image's class probabilities are softmax(100 x cosine similarity)
over all classes: the fixed scale of open_clip's zero-shot evaluation and CLIP_benchmark,
not the model's learned logit_scale.

Class and template files, in CLIP_benchmark's formats (.json files are JSON, others text):
  text  one entry per line, as classnames.txt and zeroshot_classification_templates.txt;
        lines are stripped, blank lines at the end ignored
  JSON  a list of strings, or {\"dataset\": [...]} as en_classnames.json (--dataset picks
        the key; an object with one key needs none)
Templates mark the class name with {c} (or {}); {{ and }} are literal braces. Built-in names
win over files of the same name: write ./openai for a file called openai.

The class embeddings (1000 classes x 80 templates = 80,000 prompts by default) are cached in
--cache-dir, else $COCA_CACHE_DIR, else $XDG_CACHE_HOME/coca/zeroshot, else
~/.cache/coca/zeroshot, keyed by the checkpoint's path, size and modification time, the
model config, the precision, the classes and the templates.

Examples:
  coca classify --model coca_ViT-B-32 --pretrained model.safetensors cat.jpg dog.png
  coca classify --model coca_ViT-B-32 --pretrained model.safetensors \\
       --classes classnames.txt --templates simple --top-k 3 --json photos/*.jpg")]
pub struct ClassifyArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Class names: `imagenet` (open_clip's 1000 ImageNet classes) or a file (see below).
    #[arg(long, default_value = "imagenet", value_name = "imagenet|FILE")]
    pub classes: String,
    /// Prompt templates: `openai` (open_clip's 80), `simple` (its 7) or a file with `{c}` for the class name.
    #[arg(long, default_value = "openai", value_name = "openai|simple|FILE")]
    pub templates: String,
    /// The dataset key to read from `{dataset: [...]}` JSON class or template files.
    #[arg(long, value_name = "NAME")]
    pub dataset: Option<String>,
    /// How many of the most probable classes to print per image.
    #[arg(long, default_value_t = 5, value_name = "K")]
    pub top_k: usize,
    /// Images per forward pass.
    #[arg(long, default_value_t = 32, value_name = "N")]
    pub batch_size: usize,
    /// Print a JSON list, one {"image", "top_k": [{"class", "index", "probability"}]} object per image.
    #[arg(long)]
    pub json: bool,
    /// Write the JSON to this file (atomically) instead of stdout.
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub classifier: ClassifierArgs,
    /// The images (JPEG, PNG, WebP, GIF, BMP, TIFF).
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<PathBuf>,
}

/// How class embeddings are built and cached, shared by `coca classify` and
/// `coca eval zeroshot-classification`.
#[derive(Debug, Clone, Args)]
pub struct ClassifierArgs {
    /// Prompts per text-encoder forward pass while building the class embeddings.
    #[arg(long, default_value_t = coca_zeroshot::DEFAULT_PROMPT_BATCH, value_name = "N")]
    pub text_batch_size: usize,
    /// Directory of cached class embeddings (overrides COCA_CACHE_DIR and the default).
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Neither read nor write cached class embeddings.
    #[arg(long, conflicts_with = "cache_dir")]
    pub no_cache: bool,
}

/// Run the command; `--quiet` hides the progress of embedding the class prompts.
pub fn run(args: ClassifyArgs, global: &Global) -> Result<()> {
    if args.top_k == 0 {
        bail!("--top-k must be at least 1");
    }
    if args.batch_size == 0 || args.classifier.text_batch_size == 0 {
        bail!("--batch-size and --text-batch-size must be at least 1");
    }
    for path in &args.images {
        if !path.is_file() {
            bail!("{}: no such image file", path.display());
        }
    }
    let dataset = args.dataset.as_deref();
    let classnames = lists::resolve_classnames(&args.classes, dataset)
        .with_context(|| format!("reading the classes `{}`", args.classes))?;
    let templates = lists::resolve_templates(&args.templates, dataset)
        .with_context(|| format!("reading the templates `{}`", args.templates))?;
    let top_k = args.top_k.min(classnames.len());
    if top_k < args.top_k {
        tracing::info!(
            "--top-k {} is more than the {} classes; showing all",
            args.top_k,
            classnames.len()
        );
    }

    let (model, cfg) = args.model.load()?;
    let lists = ListSpecs {
        classes: &args.classes,
        templates: &args.templates,
    };
    let classifier = class_embeddings(
        &args.classifier,
        &args.model,
        &lists,
        (&model, &cfg),
        (&classnames, &templates),
        global.quiet,
    )?;

    let pre = preprocess_config(&cfg)?;
    let mut ranked = Vec::with_capacity(args.images.len());
    for chunk in args.images.chunks(args.batch_size) {
        let pixels = load_images(chunk, &pre, model.device())?;
        let embeddings = model.encode_image(&pixels)?.embedding;
        ranked.extend(classify(&embeddings, &classifier, top_k)?);
    }

    if args.json || args.output.is_some() {
        let value: Vec<_> = args
            .images
            .iter()
            .zip(&ranked)
            .map(|(path, preds)| image_json(path, preds, &classnames))
            .collect();
        return write_json(&json!(value), args.output.as_deref());
    }
    for (i, (path, preds)) in args.images.iter().zip(&ranked).enumerate() {
        if i > 0 {
            println!();
        }
        println!("{}", path.display());
        for p in preds {
            println!(
                "  {:6.2}%  {}  (#{})",
                100.0 * p.probability,
                classnames[p.index],
                p.index
            );
        }
    }
    Ok(())
}

fn image_json(path: &Path, preds: &[Prediction], classnames: &[String]) -> serde_json::Value {
    json!({ "image": path.display().to_string(), "top_k": predictions_json(preds, classnames) })
}

/// Ranked classes as JSON, `[{"class", "index", "probability"}]` (also `coca serve`'s `/classify`).
pub fn predictions_json(preds: &[Prediction], classnames: &[String]) -> serde_json::Value {
    preds
        .iter()
        .map(|p| {
            json!({
                "class": classnames[p.index],
                "index": p.index,
                "probability": p.probability,
            })
        })
        .collect()
}

/// How the user named the classes and templates (recorded beside cached classifiers).
pub struct ListSpecs<'a> {
    /// `--classes` (or the class-name source of an evaluation dataset).
    pub classes: &'a str,
    /// `--templates`.
    pub templates: &'a str,
}

/// The classifier from the cache, or built (with a progress bar) and cached.
pub fn class_embeddings(
    args: &ClassifierArgs,
    model_args: &ModelArgs,
    lists: &ListSpecs<'_>,
    (model, cfg): (&coca_model::Coca, &coca_model::CocaConfig),
    (classnames, templates): (&[String], &[Template]),
    quiet: bool,
) -> Result<Tensor> {
    let total = classnames.len() * templates.len();
    // Created on the first report, so a cache hit shows (and leaves) no bar at all.
    let mut bar: Option<Progress> = None;
    let mut progress = |done: usize| {
        if !quiet {
            bar.get_or_insert_with(|| {
                Progress::new("embedding class prompts", Some(total as u64), "prompts")
            })
            .set_position(done as u64)
        }
    };
    let cache_dir = if args.no_cache {
        None
    } else {
        args.cache_dir
            .clone()
            .or_else(coca_zeroshot::cache::default_cache_dir)
    };
    let Some(dir) = cache_dir else {
        if !args.no_cache {
            tracing::warn!(
                "no cache directory (set COCA_CACHE_DIR or HOME); class embeddings are not cached"
            );
        }
        let classifier = build_classifier_with_progress(
            model,
            classnames,
            templates,
            args.text_batch_size,
            &mut progress,
        )?;
        if let Some(bar) = &bar {
            bar.finish();
        }
        return Ok(classifier);
    };
    let cache = ClassifierCache::new(dir);
    let identity = CheckpointIdentity::of(&model_args.weights_path()?)?;
    let compute = model_args.precision.compute(model_args.device)?;
    let key = CacheKey::new(&identity, cfg, &compute.tag(), classnames, templates)?;
    let description = BTreeMap::from([
        (
            "checkpoint".to_string(),
            identity.path.display().to_string(),
        ),
        ("model".to_string(), model_args.model.clone()),
        ("classes".to_string(), lists.classes.to_string()),
        ("templates".to_string(), lists.templates.to_string()),
        ("precision".to_string(), model_args.precision.to_string()),
    ]);
    let (classifier, outcome) = cache.load_or_build(
        &key,
        model,
        classnames,
        templates,
        args.text_batch_size,
        &description,
        &mut progress,
    )?;
    if let Some(bar) = &bar {
        bar.finish();
    }
    match outcome {
        CacheOutcome::Hit(path) => tracing::debug!("class embeddings from {}", path.display()),
        CacheOutcome::Built(path) | CacheOutcome::Rebuilt { path, .. } => {
            tracing::debug!("class embeddings cached in {}", path.display())
        }
        CacheOutcome::Uncached => {}
    }
    Ok(classifier)
}
