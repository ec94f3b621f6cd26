//! `coca eval zeroshot-classification`: CLIP_benchmark's zero-shot classification (acc1, acc5, mean
//! per-class recall) on an image folder or WebDataset shards.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use candle_core::DType;
use clap::Args;
use coca_data::Sample;
use coca_eval::classification_metrics;
use coca_zeroshot::{lists, Template, LOGIT_MULTIPLIER};
use serde_json::json;

use super::labelled::{
    names_from_folders, LabelledDataset, Layout, CLASSNAMES_FILE, TEMPLATES_FILE,
};
use super::{load_samples, report, result_json, rows_f32, OutputArgs};
use crate::cli::Global;
use crate::commands::classify::{class_embeddings, ClassifierArgs, ListSpecs};
use crate::commands::embed::progress::Skipped;
use crate::model_args::ModelArgs;
use crate::pipeline::preprocess_config;
use crate::progress::Progress;

/// `coca eval zeroshot-classification`.
#[derive(Debug, Args)]
#[command(after_help = "\
Datasets (--dataset-root), in CLIP_benchmark's layouts:
  image folder  one subfolder of images per class (torchvision's ImageFolder); labels follow the sorted
                folder names
  WebDataset    .tar shards whose samples hold an image (jpg, png, jpeg, webp) and a .cls file with the
                class index, in the root or in root/<split>/; or --dataset-root is a .tar or a brace
                pattern such as 'data/{0..9}.tar'
--split NAME uses root/NAME (default: root/test when it holds shards, else the root itself).

Class names: --classnames FILE (one per line, or CLIP_benchmark's JSON with --dataset picking the key),
else classnames.txt in the root, else the folder names with _ read as spaces.
Templates: --templates openai|simple|FILE, else zeroshot_classification_templates.txt in the root, else
open_clip's 80 OpenAI templates.

Each image's logits are 100 x cosine similarity with the class embeddings (open_clip's prompt ensemble,
cached as for `coca classify`). acc1 and acc5 are top-k accuracies (acc5 is null below 5 classes, where
CLIP_benchmark writes NaN); mean_per_class_recall is scikit-learn's balanced accuracy of the argmax.

Examples:
  coca eval zeroshot-classification --model coca_ViT-B-32 --pretrained laion2b_s13b_b90k \\
       --dataset-root ~/data/imagenette/val --templates openai --output result.json
  coca eval zeroshot-classification --model run/model_config.json --pretrained run/model.safetensors \\
       --dataset-root ~/wds_cifar10 --dataset cifar10 --json")]
pub struct ZeroshotArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The dataset: an image folder, a folder of WebDataset shards, a .tar file or a shard pattern.
    #[arg(long, value_name = "DIR|PATTERN")]
    pub dataset_root: PathBuf,
    /// The dataset's name in the result, and the key of JSON class-name and template files.
    #[arg(long, value_name = "NAME")]
    pub dataset: Option<String>,
    /// Subfolder of the root to evaluate (e.g. test or val).
    #[arg(long, value_name = "NAME")]
    pub split: Option<String>,
    /// Class names: a file (one per line, or JSON) or `imagenet`.
    #[arg(long, value_name = "FILE|imagenet")]
    pub classnames: Option<String>,
    /// Prompt templates: `openai`, `simple` or a file with `{c}` for the class name.
    #[arg(long, value_name = "openai|simple|FILE")]
    pub templates: Option<String>,
    /// Images per forward pass.
    #[arg(long, default_value_t = 64, value_name = "N")]
    pub batch_size: usize,
    #[command(flatten)]
    pub classifier: ClassifierArgs,
    #[command(flatten)]
    pub out: OutputArgs,
}

/// Run the evaluation.
pub fn run(args: ZeroshotArgs, global: &Global) -> Result<()> {
    if args.batch_size == 0 || args.classifier.text_batch_size == 0 {
        bail!("--batch-size and --text-batch-size must be at least 1");
    }
    let dataset = LabelledDataset::discover(&args.dataset_root, args.split.as_deref())?;
    let key = args.dataset.as_deref();
    let (class_spec, classnames) = class_names(&args, &dataset)?;
    let template_spec = match (&args.templates, dataset.file(TEMPLATES_FILE)) {
        (Some(spec), _) => spec.clone(),
        (None, Some(file)) => file.display().to_string(),
        (None, None) => "openai".to_string(),
    };
    let templates: Vec<Template> = lists::resolve_templates(&template_spec, key)
        .with_context(|| format!("reading the templates `{template_spec}`"))?;
    // Image folders are listed before the model loads, so a bad dataset fails fast.
    let listed = dataset.listed()?;
    if let Some(items) = &listed {
        if items.is_empty() {
            bail!("{}: the dataset has no images", args.dataset_root.display());
        }
    }

    let (model, cfg) = args.model.load()?;
    let lists = ListSpecs {
        classes: &class_spec,
        templates: &template_spec,
    };
    let classifier = class_embeddings(
        &args.classifier,
        &args.model,
        &lists,
        (&model, &cfg),
        (&classnames, &templates),
        global.quiet,
    )?
    .to_dtype(DType::F32)?;

    let pre = preprocess_config(&cfg)?;
    let n_classes = classnames.len();
    let total = listed.as_ref().map(Vec::len);
    let items: Box<dyn Iterator<Item = Result<(Sample, usize)>>> = match listed {
        Some(items) => Box::new(items.into_iter().map(Ok)),
        None => Box::new(
            dataset
                .stream_shards(n_classes)
                .context("the dataset has neither class folders nor shards")?,
        ),
    };
    let bar = Progress::new("classifying", total.map(|n| n as u64), "images");
    let mut logits: Vec<f32> = Vec::new();
    let mut targets: Vec<usize> = Vec::new();
    let mut skipped = Skipped::default();
    // The batch's samples and their labels; only the readable ones' labels become targets.
    let mut batch: Vec<Sample> = Vec::with_capacity(args.batch_size);
    let mut labels: Vec<usize> = Vec::with_capacity(args.batch_size);
    let mut flush = |batch: &mut Vec<Sample>,
                     labels: &mut Vec<usize>,
                     logits: &mut Vec<f32>,
                     targets: &mut Vec<usize>|
     -> Result<()> {
        if let Some(loaded) = load_samples(batch, &pre, model.device(), &bar, &mut skipped)? {
            let embedding = model
                .encode_image(&loaded.pixels)?
                .embedding
                .to_dtype(DType::F32)?;
            let sim = embedding.matmul(&classifier.to_device(embedding.device())?)?;
            logits.extend(rows_f32(&(sim * f64::from(LOGIT_MULTIPLIER))?)?);
            targets.extend(loaded.kept.iter().map(|&i| labels[i]));
        }
        bar.inc(batch.len() as u64);
        batch.clear();
        labels.clear();
        Ok(())
    };
    let mut seen = 0usize;
    for item in items {
        let (sample, label) = item?;
        seen += 1;
        batch.push(sample);
        labels.push(label);
        if batch.len() == args.batch_size {
            flush(&mut batch, &mut labels, &mut logits, &mut targets)?;
        }
    }
    if !batch.is_empty() {
        flush(&mut batch, &mut labels, &mut logits, &mut targets)?;
    }
    bar.finish();
    if seen == 0 {
        bail!(
            "{}: the dataset has no samples",
            args.dataset_root.display()
        );
    }
    if targets.is_empty() {
        return Err(skipped
            .nothing_usable("images")
            .context(args.dataset_root.display().to_string()));
    }
    let m = classification_metrics(&logits, n_classes, &targets)?;
    let name = args
        .dataset
        .clone()
        .unwrap_or_else(|| default_name(&dataset));
    let metrics = json!({
        "acc1": m.acc1,
        "acc5": m.acc5,
        "mean_per_class_recall": m.mean_per_class_recall,
    });
    tracing::info!(
        "{} images, {n_classes} classes, {} skipped",
        targets.len(),
        skipped.count()
    );
    report(
        &result_json(
            &name,
            Some(&args.model),
            "zeroshot_classification",
            metrics,
            &skipped,
        ),
        &args.out,
    )
}

/// The class names and how they were given (for the classifier cache's record).
fn class_names(args: &ZeroshotArgs, dataset: &LabelledDataset) -> Result<(String, Vec<String>)> {
    let key = args.dataset.as_deref();
    let spec = match (&args.classnames, dataset.file(CLASSNAMES_FILE)) {
        (Some(spec), _) => Some(spec.clone()),
        (None, Some(file)) => Some(file.display().to_string()),
        (None, None) => None,
    };
    let names = match &spec {
        Some(spec) => lists::resolve_classnames(spec, key)
            .with_context(|| format!("reading the class names `{spec}`"))?,
        None => match &dataset.layout {
            Layout::ImageFolder { classes, .. } => names_from_folders(classes),
            Layout::Shards(_) => bail!(
                "{}: WebDataset shards carry class indices only; give the class names with --classnames or \
                 a {CLASSNAMES_FILE} in the dataset root",
                args.dataset_root.display()
            ),
        },
    };
    if let Layout::ImageFolder { classes, root } = &dataset.layout {
        if names.len() != classes.len() {
            bail!(
                "{} class names for the {} class folders of {}",
                names.len(),
                classes.len(),
                root.display()
            );
        }
    }
    let spec = spec.unwrap_or_else(|| format!("folders of {}", args.dataset_root.display()));
    Ok((spec, names))
}

/// The root folder's name (the parent folder's for a split or a shard pattern).
fn default_name(dataset: &LabelledDataset) -> String {
    let root = dataset.root.canonicalize().unwrap_or(dataset.root.clone());
    root.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "dataset".to_string())
}
