//! The held-out sets of a run: scenes of a split with their zero-shot task, or the first samples of
//! `--val-data` with an optional labelled folder (`--val-zeroshot`).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use coca_data::scenes::Split;
use coca_zeroshot::Template;

use super::data::{self, data_spec, DataSpec, Labels};
use super::eval::{ValSet, ZeroShotSet};
use super::plan::Plan;
use crate::pipeline::preprocess_config;

/// Prompt templates of the scenes' zero-shot task: the two sizes, so that the class embedding averages over
/// both, as a prompt ensemble does.
const SCENE_TEMPLATES: [&str; 2] = ["a small {c}", "a large {c}"];

/// `--val-zeroshot-templates` of a run without labelled training data.
const DEFAULT_ZEROSHOT_TEMPLATES: &str = "simple";

/// The held-out set: for synthetic scenes `n` scenes of `split` plus `n` labelled one-object scenes; for a
/// collection, the first `n` samples of --val-data (no zero-shot task).
pub fn validation_set(plan: &Plan, split: Split, n: usize) -> Result<Option<ValSet>> {
    let (args, cfg, device) = (&plan.args, &plan.cfg, &plan.device);
    let scenes = plan
        .train_parts
        .iter()
        .any(|p| matches!(p.spec, DataSpec::Scenes(_)));
    let spec = match &args.val_data {
        Some(text) => data_spec(text, args.dataset_type, &plan.csv, split)?,
        None if scenes => DataSpec::Scenes(split),
        None => return Ok(None),
    };
    if n == 0 {
        return Ok(None);
    }
    let pre = preprocess_config(cfg)?;
    let size = pre.image_size as usize;
    match spec {
        DataSpec::Scenes(split) => {
            let set = data::scene_set(cfg, split, args.seed)?;
            let mut pixels = Vec::with_capacity(n * 3 * size * size);
            let mut captions = Vec::with_capacity(n);
            for i in 0..n as u64 {
                let (image, caption) = set.sample(i);
                pixels.extend(coca_image::preprocess(&image, &pre));
                captions.push(caption);
            }
            let mut zs_pixels = Vec::with_capacity(n * 3 * size * size);
            let mut labels = Vec::with_capacity(n);
            for i in 0..n as u64 {
                let (image, label) = set.labelled(i);
                zs_pixels.extend(coca_image::preprocess(&image, &pre));
                labels.push(label);
            }
            let templates = SCENE_TEMPLATES
                .iter()
                .map(|t| Template::parse(t))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            Ok(Some(ValSet {
                images: Tensor::from_vec(pixels, (n, 3, size, size), device)?,
                captions,
                keys: (0..n).map(|i| i.to_string()).collect(),
                zeroshot: Some(ZeroShotSet {
                    images: Tensor::from_vec(zs_pixels, (n, 3, size, size), device)?,
                    labels,
                    classnames: set.class_names(),
                    templates,
                }),
            }))
        }
        DataSpec::Collection(input) => {
            let (pixels, captions, keys) = read_collection(&input, &pre, n)?;
            let m = captions.len();
            if m == 0 {
                bail!("validation data {input}: no readable image with a caption");
            }
            let zeroshot = match &args.val_zeroshot {
                Some(dir) => Some(zeroshot_folder(
                    dir,
                    args.val_zeroshot_templates.as_deref(),
                    plan.labels.as_ref(),
                    &pre,
                    n,
                    device,
                )?),
                None => None,
            };
            Ok(Some(ValSet {
                images: Tensor::from_vec(pixels, (m, 3, size, size), device)?,
                captions,
                keys,
                zeroshot,
            }))
        }
        DataSpec::Labelled(input) => bail!("validation data {input}: not captioned data"),
    }
}

/// The first `n` usable samples of a collection (eval preprocessing); unreadable ones are skipped with a warning.
fn read_collection(
    input: &coca_data::Input,
    pre: &coca_image::PreprocessConfig,
    n: usize,
) -> Result<(Vec<f32>, Vec<String>, Vec<String>)> {
    let (mut pixels, mut captions, mut keys) = (Vec::new(), Vec::new(), Vec::new());
    let mut skipped = 0usize;
    for item in
        coca_data::open(input).with_context(|| format!("opening the validation data {input}"))?
    {
        if captions.len() == n {
            break;
        }
        let Ok(sample) = item else {
            skipped += 1;
            continue;
        };
        let Some(text) = sample.text else {
            skipped += 1;
            continue;
        };
        let image = match &sample.image {
            coca_data::ImageData::Path(p) => coca_image::DecodedImage::open_limited(p, &pre.limits),
            coca_data::ImageData::Bytes { name, data } => {
                coca_image::DecodedImage::decode_limited(data, name, &pre.limits)
            }
        }
        .map(coca_image::DecodedImage::into_rgb);
        match image {
            Ok(img) => {
                pixels.extend(coca_image::preprocess(&img, pre));
                captions.push(text);
                keys.push(sample.key);
            }
            Err(err) => {
                skipped += 1;
                tracing::warn!("validation: skipped {}: {err}", sample.image.name());
            }
        }
    }
    if skipped > 0 {
        tracing::warn!("validation: {skipped} samples of {input} skipped");
    }
    Ok((pixels, captions, keys))
}

/// A labelled set from a folder with one sub-folder per class (at most `n` images, spread over the classes in
/// path order). A run that trains on labelled data names the classes by its class names and uses its
/// templates unless `templates` is given; otherwise the folders name the classes and `simple` templates
/// are the default.
fn zeroshot_folder(
    dir: &Path,
    templates: Option<&str>,
    labels: Option<&Labels>,
    pre: &coca_image::PreprocessConfig,
    n: usize,
    device: &Device,
) -> Result<ZeroShotSet> {
    let mut classes: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("--val-zeroshot {}: cannot read the folder", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    classes.sort();
    if classes.len() < 2 {
        bail!(
            "--val-zeroshot {}: needs at least two class sub-folders",
            dir.display()
        );
    }
    let classnames: Vec<String> = match labels {
        Some(labels) if labels.classnames.len() != classes.len() => bail!(
            "--val-zeroshot {}: {} class folders but --classnames {} has {} names (one per folder, in \
             sorted order, as in training)",
            dir.display(),
            classes.len(),
            labels.classnames_spec,
            labels.classnames.len()
        ),
        Some(labels) => labels.classnames.clone(),
        None => classes
            .iter()
            .map(|p| {
                p.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .replace('_', " ")
            })
            .collect(),
    };
    let templates = match (templates, labels) {
        (Some(spec), _) => coca_zeroshot::lists::resolve_templates(spec, None)
            .with_context(|| format!("--val-zeroshot-templates {spec}"))?,
        (None, Some(labels)) => labels.templates.clone(),
        (None, None) => coca_zeroshot::lists::resolve_templates(DEFAULT_ZEROSHOT_TEMPLATES, None)?,
    };
    let mut files = Vec::new();
    for (label, class_dir) in classes.iter().enumerate() {
        let mut images: Vec<PathBuf> = std::fs::read_dir(class_dir)
            .with_context(|| format!("{}: cannot read the folder", class_dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| coca_data::is_image_path(p))
            .collect();
        images.sort();
        files.extend(images.into_iter().map(|p| (p, label)));
    }
    let size = pre.image_size as usize;
    let (mut pixels, mut labels) = (Vec::new(), Vec::new());
    for (path, label) in files.into_iter().take(n) {
        match coca_image::preprocess_path(&path, pre) {
            Ok(p) => {
                pixels.extend(p);
                labels.push(label);
            }
            Err(err) => tracing::warn!("--val-zeroshot: skipped {}: {err}", path.display()),
        }
    }
    if labels.is_empty() {
        bail!(
            "--val-zeroshot {}: no readable image in the class folders",
            dir.display()
        );
    }
    let m = labels.len();
    Ok(ZeroShotSet {
        images: Tensor::from_vec(pixels, (m, 3, size, size), device)?,
        labels,
        classnames,
        templates,
    })
}
