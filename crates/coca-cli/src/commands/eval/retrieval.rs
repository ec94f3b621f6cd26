//! `coca eval retrieval`: CLIP_benchmark's zero-shot image↔text retrieval, recall@K with several captions
//! per image.

use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor};
use clap::Args;
use coca_data::Sample;
use coca_eval::retrieval_recall;
use serde_json::{Map, Value};

use super::references::{id_string, ReferenceArgs};
use super::{load_samples, report, result_json, rows_f32, OutputArgs};
use crate::cli::Global;
use crate::commands::embed::progress::Skipped;
use crate::model_args::ModelArgs;
use crate::pipeline::{preprocess_config, tokenize_texts};
use crate::progress::Progress;

/// `coca eval retrieval`.
#[derive(Debug, Args)]
#[command(after_help = "\
References (one of):
  --annotations FILE.json  Karpathy's dataset_coco.json / dataset_flickr30k.json (--split, default test),
                           CLIP_benchmark's [{\"image\": PATH, \"caption\": [..]}], or COCO's
                           captions_*.json; image paths start at --dataset-root (default: the JSON's folder)
  --csv FILE               open_clip's CSV/TSV (--csv-img-key, --csv-caption-key, --csv-separator); rows with
                           the same image are its captions
  --shards PATTERN         WebDataset shards; each sample's .txt holds its captions, one per line

Scores are cosine similarities of the L2-normalised embeddings (texts x images). As in CLIP_benchmark:
  image_retrieval_recall@K  text -> image: the share of captions whose image is among the K best images
  text_retrieval_recall@K   image -> text: the share of images with at least one of their captions among
                            the K best captions
Equal scores are ranked by input order.

An image that cannot be read (missing, truncated, corrupt, or over --max-image-pixels) is skipped with a
warning naming it and counted in \"skipped_images\"; its captions leave the evaluation with it (they would
have no image to retrieve), so recall is over the readable images and their captions.

Examples:
  coca eval retrieval --model coca_ViT-B-32 --pretrained laion2b_s13b_b90k \\
       --annotations dataset_flickr30k.json --dataset-root flickr30k-images --output flickr.json
  coca eval retrieval --model run/model_config.json --pretrained run/model.safetensors \\
       --csv val.csv --csv-separator , --recall-k 1,5,10 --json")]
pub struct RetrievalArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub references: ReferenceArgs,
    /// The K of recall@K (CLIP_benchmark's --recall_k).
    #[arg(long, value_delimiter = ',', default_values_t = [1, 5, 10], value_name = "K,..")]
    pub recall_k: Vec<usize>,
    /// Images per forward pass.
    #[arg(long, default_value_t = 64, value_name = "N")]
    pub batch_size: usize,
    /// Captions per text-encoder forward pass.
    #[arg(long, default_value_t = 256, value_name = "N")]
    pub text_batch_size: usize,
    #[command(flatten)]
    pub out: OutputArgs,
}

/// Run the evaluation.
pub fn run(args: RetrievalArgs, _global: &Global) -> Result<()> {
    if args.batch_size == 0 || args.text_batch_size == 0 {
        bail!("--batch-size and --text-batch-size must be at least 1");
    }
    if args.recall_k.contains(&0) {
        bail!("--recall-k values must be at least 1");
    }
    let refs = args.references.open()?;
    let (model, cfg) = args.model.load()?;
    let pre = preprocess_config(&cfg)?;
    let device = model.device().clone();

    let bar = Progress::new("embedding images", refs.len.map(|n| n as u64), "images");
    let mut image_emb: Vec<f32> = Vec::new();
    let mut texts: Vec<String> = Vec::new();
    let mut text_image: Vec<usize> = Vec::new();
    let mut skipped = Skipped::default();
    // The batch's images and their captions; an unreadable image's captions are dropped with it.
    let mut batch: Vec<Sample> = Vec::with_capacity(args.batch_size);
    let mut captions: Vec<Vec<String>> = Vec::with_capacity(args.batch_size);
    let mut images = 0usize;
    let mut flush = |batch: &mut Vec<Sample>,
                     captions: &mut Vec<Vec<String>>,
                     texts: &mut Vec<String>,
                     text_image: &mut Vec<usize>,
                     images: &mut usize|
     -> Result<()> {
        if let Some(loaded) = load_samples(batch, &pre, &device, &bar, &mut skipped)? {
            image_emb.extend(rows_f32(&model.encode_image(&loaded.pixels)?.embedding)?);
            for i in loaded.kept {
                let own = std::mem::take(&mut captions[i]);
                text_image.extend(std::iter::repeat_n(*images, own.len()));
                texts.extend(own);
                *images += 1;
            }
        }
        bar.inc(batch.len() as u64);
        batch.clear();
        captions.clear();
        Ok(())
    };
    let mut seen = 0usize;
    for item in refs.items {
        let r = item?;
        seen += 1;
        captions.push(r.captions);
        batch.push(Sample {
            key: id_string(&r.id).unwrap_or_default(),
            image: r.image,
            text: None,
        });
        if batch.len() == args.batch_size {
            flush(
                &mut batch,
                &mut captions,
                &mut texts,
                &mut text_image,
                &mut images,
            )?;
        }
    }
    if !batch.is_empty() {
        flush(
            &mut batch,
            &mut captions,
            &mut texts,
            &mut text_image,
            &mut images,
        )?;
    }
    bar.finish();
    if seen == 0 {
        bail!("the dataset {} has no images", refs.name);
    }
    if images == 0 {
        return Err(skipped
            .nothing_usable("images")
            .context(format!("the dataset {}", refs.name)));
    }

    let bar = Progress::new("embedding captions", Some(texts.len() as u64), "captions");
    let mut text_emb: Vec<f32> = Vec::with_capacity(texts.len() * cfg.embed_dim);
    for chunk in texts.chunks(args.text_batch_size) {
        let ids = tokenize_texts(chunk, &cfg, &device)?;
        text_emb.extend(rows_f32(&model.encode_text(&ids)?.embedding)?);
        bar.inc(chunk.len() as u64);
    }
    bar.finish();

    let dim = image_emb.len() / images;
    let image_t = Tensor::from_vec(image_emb, (images, dim), &Device::Cpu)?;
    let text_t = Tensor::from_vec(text_emb, (texts.len(), dim), &Device::Cpu)?;
    let scores = rows_f32(&text_t.matmul(&image_t.t()?)?.to_dtype(DType::F32)?)?;
    let recalls = retrieval_recall(&scores, images, &text_image, &args.recall_k)?;
    let mut metrics = Map::new();
    for r in recalls {
        metrics.insert(
            format!("image_retrieval_recall@{}", r.k),
            r.image_retrieval.into(),
        );
        metrics.insert(
            format!("text_retrieval_recall@{}", r.k),
            r.text_retrieval.into(),
        );
    }
    tracing::info!(
        "{images} images, {} captions, {} images skipped",
        texts.len(),
        skipped.count()
    );
    report(
        &result_json(
            &refs.name,
            Some(&args.model),
            "zeroshot_retrieval",
            Value::Object(metrics),
            &skipped,
        ),
        &args.out,
    )
}
