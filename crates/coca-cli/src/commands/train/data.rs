//! Training and validation data for `coca train`: which source, and the adapter that turns loader batches into
//! model-ready micro-batches.

use std::sync::Arc;

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use coca_data::scenes::{SceneOptions, SceneSet, Split};
use coca_data::train::{LoaderConfig, LoaderState, TrainLoader, TrainSource};
use coca_data::{CsvOptions, Input};
use coca_image::PreprocessConfig;
use coca_model::CocaConfig;
use coca_text::Tokenizer;
use coca_train::{MicroBatch, TrainData, TrainError};

/// The keyword of `--train-data` that selects the built-in synthetic scenes.
pub const SYNTHETIC: &str = "synthetic";

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

/// The loader source of a spec. Synthetic scenes are an indexed source of `len` samples.
pub fn train_source(spec: &DataSpec, cfg: &CocaConfig, seed: u64, len: u64) -> Result<TrainSource> {
    Ok(match spec {
        DataSpec::Scenes(split) => {
            let set = Arc::new(scene_set(cfg, *split, seed)?);
            TrainSource::Indexed {
                len,
                get: Arc::new(move |i| Ok(set.sample(i))),
            }
        }
        DataSpec::Collection(input) => TrainSource::Stream(input.clone()),
    })
}

/// Loader batches → token ids and pixel tensors.
pub struct LoaderData {
    loader: TrainLoader,
    tokenizer: Tokenizer,
    context: usize,
    vocab: u32,
    size: usize,
    device: Device,
}

impl LoaderData {
    /// Open the loader at `state` (the start, or a checkpoint's position).
    pub fn new(
        source: TrainSource,
        loader: LoaderConfig,
        state: LoaderState,
        cfg: &CocaConfig,
        device: &Device,
    ) -> Result<Self> {
        let size = loader.preprocess.image_size as usize;
        Ok(Self {
            loader: TrainLoader::new(source, loader, state).context("opening the training data")?,
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
        // A changed world size re-deals one source's stream; mixtures are refused by `TrainLoader::mixture`.
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
}
