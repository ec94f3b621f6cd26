//! Training and validation data for `coca train`: which source, and the adapter that turns loader batches into
//! model-ready micro-batches.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use coca_data::scenes::{SceneOptions, SceneSet, Split};
use coca_data::train::{
    LabelPrompts, LabelledInput, LoaderConfig, LoaderState, TrainLoader, TrainSource,
    CSV_LABEL_FLAG,
};
use coca_data::{CsvOptions, Input};
use coca_image::PreprocessConfig;
use coca_model::CocaConfig;
use coca_text::Tokenizer;
use coca_train::{MicroBatch, TrainData, TrainError};
use coca_zeroshot::Template;

/// The keyword of `--train-data` that selects the built-in synthetic scenes.
pub const SYNTHETIC: &str = "synthetic";

/// What separates the sources of a `--train-data` mixture (open_clip's syntax).
pub const SOURCE_SEPARATOR: &str = "::";

/// The prefix of a `--train-data` part whose samples are labelled images, captioned by `--label-templates`
/// filled with the `--classnames` of their label.
pub const LABELS_PREFIX: &str = "labels:";

/// How to read `--train-data` / `--val-data`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DatasetType {
    /// `synthetic`, a `.csv`/`.tsv` file, a folder, or else WebDataset shards.
    Auto,
    /// WebDataset tar shards (img2dataset layout), brace patterns allowed.
    Webdataset,
    /// A CSV/TSV file with open_clip's --csv-* columns.
    Csv,
    /// A folder of images with sibling .txt captions.
    Folder,
    /// The built-in synthetic captioned scenes.
    Synthetic,
}

/// Where samples come from, resolved from the flags.
#[derive(Debug, Clone)]
pub enum DataSpec {
    /// Synthetic scenes of one split.
    Scenes(Split),
    /// A collection on disk.
    Collection(Input),
    /// An image-classification dataset on disk, captioned by templates.
    Labelled(LabelledInput),
}

impl DataSpec {
    /// Whether the source is WebDataset shards (dealt to ranks whole).
    pub fn is_shards(&self) -> bool {
        matches!(
            self,
            DataSpec::Collection(Input::Shards(_)) | DataSpec::Labelled(LabelledInput::Shards(_))
        )
    }
}

/// One source of `--train-data`: its text as given, and what it names.
#[derive(Debug, Clone)]
pub struct TrainPart {
    /// The part of `--train-data`, `labels:` prefix included.
    pub text: String,
    /// The source.
    pub spec: DataSpec,
}

/// Resolve `--train-data` into its sources: parts separated by `::`, each any source `data_spec` reads, or
/// with the `labels:` prefix class folders, a CSV file with a `--csv-label-key` column, or shards with `.cls`
/// members.
pub fn train_parts(
    text: &str,
    kind: DatasetType,
    csv: &CsvOptions,
    label_key: Option<&str>,
) -> Result<Vec<TrainPart>> {
    text.split(SOURCE_SEPARATOR)
        .enumerate()
        .map(|(i, part)| {
            let part = part.trim();
            if part.is_empty() {
                bail!(
                    "--train-data `{text}`: source {} is empty (sources are separated by `{SOURCE_SEPARATOR}`)",
                    i + 1
                );
            }
            let spec = match part.strip_prefix(LABELS_PREFIX) {
                Some(path) => DataSpec::Labelled(labelled_input(path, kind, csv, label_key)?),
                None => data_spec(part, kind, csv, Split::Train)?,
            };
            Ok(TrainPart {
                text: part.to_string(),
                spec,
            })
        })
        .collect()
}

/// The labelled dataset a `labels:` part names: a folder is class folders, a `.csv`/`.tsv` file a CSV with a
/// label column, anything else shards (or as `--dataset-type` says).
fn labelled_input(
    path: &str,
    kind: DatasetType,
    csv: &CsvOptions,
    label_key: Option<&str>,
) -> Result<LabelledInput> {
    Ok(match data_spec(path, kind, csv, Split::Train)? {
        DataSpec::Collection(Input::Folder(dir)) => LabelledInput::ClassFolders(dir),
        DataSpec::Collection(Input::Csv { path, options }) => LabelledInput::Csv {
            label_key: label_key
                .with_context(|| {
                    format!(
                        "--train-data {LABELS_PREFIX}{}: give {CSV_LABEL_FLAG} COLUMN, the column of its labels",
                        path.display()
                    )
                })?
                .to_string(),
            path,
            img_key: options.img_key,
            separator: options.separator,
        },
        DataSpec::Collection(Input::Shards(pattern)) => LabelledInput::Shards(pattern),
        _ => bail!(
            "--train-data {LABELS_PREFIX}{path}: labelled data is class folders, a CSV/TSV file or WebDataset shards"
        ),
    })
}

/// The class names and templates that caption labelled sources, resolved once for the loader, the run's
/// record and zero-shot validation.
#[derive(Debug, Clone)]
pub struct Labels {
    /// `--classnames` as given.
    pub classnames_spec: String,
    /// The class names, in label order.
    pub classnames: Vec<String>,
    /// `--label-templates` as given.
    pub templates_spec: String,
    /// The templates.
    pub templates: Vec<Template>,
}

impl Labels {
    /// The loader's prompts: exactly the prompts zero-shot evaluation builds from these lists.
    pub fn prompts(&self) -> Result<Arc<LabelPrompts>> {
        let prompts = LabelPrompts::new(
            self.classnames.clone(),
            self.templates.clone(),
            Template::fill,
        )
        .with_context(|| {
            format!(
                "--classnames {} with --label-templates {}",
                self.classnames_spec, self.templates_spec
            )
        })?;
        Ok(Arc::new(prompts))
    }

    /// What the run records of its labels (`RUN/train_data.json`).
    pub fn record(&self) -> serde_json::Value {
        serde_json::json!({
            "classnames_source": self.classnames_spec,
            "classnames": self.classnames,
            "templates_source": self.templates_spec,
            "templates": self.templates.iter().map(Template::as_str).collect::<Vec<_>>(),
            "template_sampling": "one template per sample per epoch, uniform, keyed by (seed, epoch, sample key)",
        })
    }
}

/// Resolve `--train-data`-style text into a source.
pub fn data_spec(
    text: &str,
    kind: DatasetType,
    csv: &CsvOptions,
    split: Split,
) -> Result<DataSpec> {
    let lower = text.to_ascii_lowercase();
    let kind = match kind {
        DatasetType::Auto if lower == SYNTHETIC => DatasetType::Synthetic,
        DatasetType::Auto if lower.ends_with(".csv") || lower.ends_with(".tsv") => DatasetType::Csv,
        DatasetType::Auto if std::path::Path::new(text).is_dir() => DatasetType::Folder,
        DatasetType::Auto => DatasetType::Webdataset,
        other => other,
    };
    Ok(match kind {
        DatasetType::Synthetic => DataSpec::Scenes(split),
        DatasetType::Csv => DataSpec::Collection(Input::Csv {
            path: text.into(),
            options: csv.clone(),
        }),
        DatasetType::Folder => DataSpec::Collection(Input::Folder(text.into())),
        DatasetType::Webdataset => {
            if !text.contains('{') && !std::path::Path::new(text).exists() {
                bail!("--train-data {text}: no such file, folder or shard pattern (use `synthetic` for the built-in scenes)");
            }
            DataSpec::Collection(Input::Shards(text.to_string()))
        }
        DatasetType::Auto => unreachable!("resolved above"),
    })
}

/// The scene set of a split, with the image size of the model.
pub fn scene_set(cfg: &CocaConfig, split: Split, seed: u64) -> Result<SceneSet> {
    let (h, _) = cfg.vision_cfg.image_size.hw();
    let options = SceneOptions {
        image_size: h as u32,
        ..SceneOptions::default()
    };
    Ok(SceneSet::new(options, split, seed)?)
}

/// The loader source of a spec. Synthetic scenes are an indexed source of `len` samples; labelled data is
/// captioned with `prompts`.
pub fn train_source(
    spec: &DataSpec,
    cfg: &CocaConfig,
    seed: u64,
    len: u64,
    prompts: Option<&Arc<LabelPrompts>>,
) -> Result<TrainSource> {
    Ok(match spec {
        DataSpec::Scenes(split) => {
            let set = Arc::new(scene_set(cfg, *split, seed)?);
            TrainSource::Indexed {
                len,
                get: Arc::new(move |i| Ok(set.sample(i))),
            }
        }
        DataSpec::Collection(input) => TrainSource::Stream(input.clone()),
        DataSpec::Labelled(input) => TrainSource::Labelled {
            input: input.clone(),
            prompts: Arc::clone(
                prompts.with_context(|| format!("{input}: labelled data needs --classnames"))?,
            ),
        },
    })
}

/// Usable samples each source of a mixture has put into the batches so far, shared between the loader's
/// adapter (which updates them after every batch) and the hooks that log them.
#[derive(Debug, Clone, Default)]
pub struct SourceCounts(Arc<Vec<AtomicU64>>);

impl SourceCounts {
    /// Counters for `n` sources (none for a single source).
    fn new(n: usize) -> Self {
        Self(Arc::new((0..n).map(|_| AtomicU64::new(0)).collect()))
    }

    fn set(&self, counts: &[u64]) {
        for (c, &v) in self.0.iter().zip(counts) {
            c.store(v, Ordering::Relaxed);
        }
    }

    /// The counts, in source order (empty for a single source).
    pub fn get(&self) -> Vec<u64> {
        self.0.iter().map(|c| c.load(Ordering::Relaxed)).collect()
    }
}

/// Loader batches → token ids and pixel tensors.
pub struct LoaderData {
    loader: TrainLoader,
    counts: SourceCounts,
    tokenizer: Tokenizer,
    context: usize,
    vocab: u32,
    size: usize,
    device: Device,
}

impl LoaderData {
    /// Open the loader at `state` (the start, or a checkpoint's position): one source alone, or a mixture of
    /// sources with their upsampling factors.
    pub fn new(
        mut sources: Vec<(TrainSource, f64)>,
        loader: LoaderConfig,
        state: LoaderState,
        cfg: &CocaConfig,
        device: &Device,
    ) -> Result<Self> {
        let size = loader.preprocess.image_size as usize;
        let loader = match sources.len() {
            // A single source keeps its own loader (and checkpoints) whatever its factor.
            1 => sources
                .pop()
                .map(|(source, _)| TrainLoader::new(source, loader, state))
                .context("no training source")?,
            _ => TrainLoader::mixture(sources, loader, state),
        }
        .context("opening the training data")?;
        let counts = SourceCounts::new(loader.source_sizes().len());
        counts.set(&loader.source_samples());
        Ok(Self {
            loader,
            counts,
            tokenizer: Tokenizer::new().context("loading the CLIP tokenizer")?,
            context: cfg.text_cfg.context_length,
            vocab: cfg.text_cfg.vocab_size as u32,
            size,
            device: device.clone(),
        })
    }

    /// Samples skipped so far.
    pub fn skipped(&self) -> coca_data::train::SkipCounts {
        self.loader.skipped()
    }

    /// The per-source sample counts, updated after every batch.
    pub fn source_counts(&self) -> SourceCounts {
        self.counts.clone()
    }

    /// Each source's sample count `n_i` and expected share `f_i·n_i / Σ f_j·n_j` (empty for a single source).
    pub fn source_weights(&self) -> (Vec<u64>, Vec<f64>) {
        let sizes = self.loader.source_sizes();
        let shares = if sizes.is_empty() {
            Vec::new()
        } else {
            self.loader.source_shares()
        };
        (sizes, shares)
    }
}

/// Token ids `(n, context)` of captions, refusing ids outside the vocabulary.
pub fn token_ids(
    tokenizer: &Tokenizer,
    texts: &[String],
    context: usize,
    vocab: u32,
    device: &Device,
) -> Result<Tensor, TrainError> {
    let mut ids = Vec::with_capacity(texts.len() * context);
    for text in texts {
        let tok = tokenizer.tokenize(text, context);
        if let Some(bad) = tok.ids.iter().find(|&&id| id >= vocab) {
            return Err(TrainError::Data(format!(
                "caption {text:?} has token id {bad}, outside the model's vocabulary of {vocab}"
            )));
        }
        ids.extend_from_slice(&tok.ids);
    }
    Ok(Tensor::from_vec(ids, (texts.len(), context), device)?)
}

impl TrainData for LoaderData {
    fn next_micro_batch(&mut self) -> Result<MicroBatch, TrainError> {
        let batch = self
            .loader
            .next_batch()
            .map_err(|e| TrainError::Data(e.to_string()))?;
        self.counts.set(&self.loader.source_samples());
        let n = batch.len();
        let images = Tensor::from_vec(batch.pixels, (n, 3, self.size, self.size), &self.device)?;
        let ids = token_ids(
            &self.tokenizer,
            &batch.texts,
            self.context,
            self.vocab,
            &self.device,
        )?;
        Ok(MicroBatch { images, ids })
    }

    fn position(&self) -> serde_json::Value {
        serde_json::to_value(self.loader.state()).unwrap_or(serde_json::Value::Null)
    }
}

/// Where this rank's loader resumes, from a checkpoint's data position, and a note when the world size
/// changed.
///
/// - Same world size (or a single process resuming a single-process run): each rank continues exactly where
///   it stopped.
/// - Another world size: ranks of folders, CSV files and synthetic scenes deal slots `r, r + W, …` of the
///   same per-epoch permutation, so the saved positions say how much of the epoch every rank has consumed:
///   at least `min(position) × W_old` slots. The new ranks continue from there
///   (`⌊min(position) × W_old / W_new⌋` each): no sample of the epoch is skipped; the few items some old
///   ranks had read beyond that point (and fewer than `W_new` at the cut) are seen again. WebDataset shards
///   are dealt whole to ranks, so a position does not carry over: the saved epoch restarts from its
///   beginning.
pub fn resume_state(
    saved: serde_json::Value,
    rank: usize,
    world: usize,
    shards: bool,
) -> Result<(LoaderState, Option<String>)> {
    let (saved_world, positions) = match coca_train::distributed::rank_positions(&saved) {
        Some(found) => found,
        None => (1, vec![saved]),
    };
    let states = positions
        .into_iter()
        .map(serde_json::from_value::<LoaderState>)
        .collect::<std::result::Result<Vec<_>, _>>()
        .context("unreadable data position")?;
    if saved_world == world {
        return Ok((states[rank].clone(), None));
    }
    if let Some(mixed) = states.iter().find(|s| !s.sources.is_empty()) {
        // Every source of a mixture is dealt to ranks by its own position: re-dealing them all is not
        // supported, and restarting would repeat or skip data silently.
        bail!(
            "the data position is a mixture of {} sources written by {saved_world} rank(s), this run has {world}: \
             a mixture resumes only with the same number of ranks",
            mixed.sources.len()
        );
    }
    // The least advanced rank bounds what the whole run has consumed.
    let behind = states
        .iter()
        .min_by_key(|s| (s.epoch, s.position))
        .cloned()
        .unwrap_or_default();
    let mut skipped = coca_data::train::SkipCounts::default();
    for s in &states {
        skipped.corrupt_images += s.skipped.corrupt_images;
        skipped.missing_captions += s.skipped.missing_captions;
        skipped.damaged_shards += s.skipped.damaged_shards;
        skipped.bad_records += s.skipped.bad_records;
    }
    let (position, note) = if shards {
        (
            0,
            format!(
                "the checkpoint was written by {saved_world} rank(s), this run has {world}: shards are dealt \
                 to ranks anew, so epoch {} restarts from its beginning",
                behind.epoch
            ),
        )
    } else {
        let consumed = behind.position * saved_world as u64;
        (
            consumed / world as u64,
            format!(
                "the checkpoint was written by {saved_world} rank(s), this run has {world}: epoch {} continues \
                 after its first {consumed} samples",
                behind.epoch
            ),
        )
    };
    let state = LoaderState {
        epoch: behind.epoch,
        batches_in_epoch: if position > 0 {
            behind.batches_in_epoch.max(1)
        } else {
            0
        },
        position,
        // Skips so far are counted once, on rank 0.
        skipped: if rank == 0 {
            skipped
        } else {
            Default::default()
        },
        // A changed world size re-deals one source's stream; mixtures are refused above.
        sources: Vec::new(),
    };
    Ok((state, Some(note)))
}

/// Preprocessing of the training loader for a model.
pub fn loader_config(
    pre: PreprocessConfig,
    batch_size: usize,
    augment: bool,
    workers: usize,
    shuffle_buffer: usize,
    seed: u64,
) -> LoaderConfig {
    LoaderConfig {
        batch_size,
        preprocess: pre,
        augment,
        workers,
        shuffle_buffer,
        seed,
        ..LoaderConfig::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(epoch: u64, position: u64) -> LoaderState {
        LoaderState {
            epoch,
            batches_in_epoch: position / 2,
            position,
            ..LoaderState::default()
        }
    }

    fn saved(states: &[LoaderState]) -> serde_json::Value {
        serde_json::json!({ "world_size": states.len(), "ranks": states })
    }

    #[test]
    fn same_world_size_resumes_each_rank_exactly() {
        let two = saved(&[state(1, 10), state(1, 12)]);
        assert_eq!(
            resume_state(two.clone(), 1, 2, false).unwrap(),
            (state(1, 12), None)
        );
        assert_eq!(resume_state(two, 0, 2, true).unwrap(), (state(1, 10), None));
        let single = serde_json::to_value(state(0, 6)).unwrap();
        assert_eq!(
            resume_state(single, 0, 1, false).unwrap(),
            (state(0, 6), None)
        );
    }

    #[test]
    fn another_world_size_continues_after_what_every_rank_consumed() {
        // Two ranks at positions 10 and 12: the first 20 slots are consumed by both; 3 ranks take 6 each.
        let two = saved(&[state(1, 10), state(1, 12)]);
        let (s, note) = resume_state(two.clone(), 2, 3, false).unwrap();
        assert_eq!((s.epoch, s.position), (1, 6));
        assert!(note.unwrap().contains("after its first 20 samples"));
        // One process resuming a two-rank run, and two ranks resuming a one-process run.
        assert_eq!(
            resume_state(two.clone(), 0, 1, false).unwrap().0.position,
            20
        );
        let single = serde_json::to_value(state(0, 7)).unwrap();
        assert_eq!(resume_state(single, 1, 2, false).unwrap().0.position, 3);
        // Shards restart the epoch.
        let (s, note) = resume_state(two, 0, 4, true).unwrap();
        assert_eq!((s.epoch, s.position, s.batches_in_epoch), (1, 0, 0));
        assert!(note.unwrap().contains("epoch 1 restarts"));
    }

    #[test]
    fn a_mixture_resumes_only_with_the_same_world_size() {
        let mixed = LoaderState {
            sources: vec![coca_data::train::SourceState::default(); 2],
            ..state(0, 8)
        };
        let two = saved(&[mixed.clone(), mixed.clone()]);
        assert_eq!(resume_state(two.clone(), 1, 2, false).unwrap().0, mixed);
        let err = resume_state(two, 0, 3, false).unwrap_err().to_string();
        assert!(
            err.contains("mixture of 2 sources written by 2 rank(s), this run has 3"),
            "{err}"
        );
    }
}
