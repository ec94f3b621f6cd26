//! `coca embed --input-dir|--input-list|--input-csv|--input-shards ... --output-dir OUT`: embeddings of a
//! whole collection, written in clip-retrieval's layout (see `coca_retrieval`), resumable after an
//! interruption.
//!
//! Videos in a collection (video files and animated GIFs in a folder, list or CSV; frame folders named by a
//! list or CSV) get one embedding each, the L2-normalised mean of their `--frames` sampled frames' embeddings
//! (as `coca embed --video`), and the metadata marks them (`video`, `frames`), so `coca search` finds them by
//! text like images.
//!
//! The input is cut into partitions of `--partition-size` input items: partition N covers items
//! `N*size .. (N+1)*size` of the source, in the source's stable order. Items that cannot be used (an
//! unreadable image, a malformed CSV row, a damaged shard) are reported and left out, so a partition can
//! hold fewer rows than its size. Because the cut depends only on the input, a restarted run skips the
//! partitions already written and computes the others exactly as an uninterrupted run would; batches never
//! cross a partition boundary, so even the batch composition is the same. Partitions a run does not embed
//! (complete ones, other workers') are only counted: for tar shards, from the headers of the shards they
//! fill alone, whose contents are not read.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use clap::{Args, ValueEnum};
use coca_data::video::VideoKind;
use coca_data::{DataError, FolderSource, Input, Sample, Samples, ShardCursor};
use coca_image::PreprocessConfig;
use coca_model::{Coca, CocaConfig};
use coca_retrieval::{
    EmbeddingDtype, EmbeddingOutput, Manifest, MetadataRow, PartitionData, WorkerReport,
    FORMAT_VERSION,
};
use coca_text::Tokenizer;
use serde_json::json;

use super::decode::preprocess_samples;
use super::progress::Progress;
use super::workers;
use super::EmbedArgs;
use crate::model_args::resolve_config;
use crate::output::write_json;
use crate::pipeline::preprocess_config;
use crate::video_input::embed_video;

/// How far `--embeddings auto` looks for a first readable sample to decide whether captions exist.
const AUTO_LOOKAHEAD: usize = 10_000;

/// Which embeddings a collection run computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Kinds {
    /// Images, plus captions if the first readable sample has one.
    Auto,
    /// Images only (captions are still recorded in the metadata).
    Image,
    /// Captions only; samples without one are skipped, images are not decoded.
    Text,
    /// Images and captions; samples without a caption are skipped.
    Both,
}

/// Storage type of the `.npy` files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StoreDtype {
    /// float16, as clip-retrieval stores embeddings (half the size; scores change by ~1e-3 at most).
    F16,
    /// float32, exactly what the model computed.
    F32,
}

impl From<StoreDtype> for EmbeddingDtype {
    fn from(d: StoreDtype) -> Self {
        match d {
            StoreDtype::F16 => EmbeddingDtype::F16,
            StoreDtype::F32 => EmbeddingDtype::F32,
        }
    }
}

/// Flags of collection runs (`coca embed --input-* --output-dir OUT`).
#[derive(Debug, Args)]
#[command(next_help_heading = "Collections (bulk embedding into --output-dir)")]
pub struct CollectionArgs {
    /// Embed every image and video under this folder, recursively (jpg, jpeg, png, webp, gif, bmp, tif, tiff;
    /// mp4, avi, mkv, mov, webm, ... with the `ffmpeg` feature); a sibling .txt file with the same stem is the
    /// caption. Video files and animated GIFs get one embedding each, the mean of --frames frames; subfolders
    /// are walked, never read as one video of frames (list a frame folder in --input-list for that).
    #[arg(long, value_name = "DIR")]
    pub input_dir: Option<PathBuf>,
    /// Embed the images listed in this file, one path per line (sibling .txt captions as for --input-dir); a
    /// line may also name a video file, an animated GIF or a folder of frames, embedded as one video.
    #[arg(long, value_name = "FILE")]
    pub input_list: Option<PathBuf>,
    /// Embed the images of a CSV/TSV file, read like open_clip's --train-data CSV (see --csv-*).
    #[arg(long, value_name = "FILE")]
    pub input_csv: Option<PathBuf>,
    #[command(flatten)]
    pub csv: crate::csv_args::CsvArgs,
    /// Embed WebDataset tar shards in img2dataset's layout (key.jpg + key.txt); brace patterns such as
    /// 'shards/{00000..00099}.tar' are expanded as WebDataset does.
    #[arg(long, value_name = "PATTERN")]
    pub input_shards: Option<String>,
    /// Write clip-retrieval's layout here: img_emb/img_emb_N.npy, text_emb/text_emb_N.npy,
    /// metadata/metadata_N.parquet (image_path, caption, key, video, frames). Rerunning with the same settings
    /// resumes.
    #[arg(long, value_name = "OUT")]
    pub output_dir: Option<PathBuf>,
    /// Input items per output partition; each partition is written atomically once complete.
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    pub partition_size: usize,
    /// Which embeddings to compute.
    #[arg(long, value_enum, default_value_t = Kinds::Auto)]
    pub embeddings: Kinds,
    /// Storage type of the .npy files.
    #[arg(long, value_enum, default_value_t = StoreDtype::F16)]
    pub emb_dtype: StoreDtype,
    /// Threads decoding and preprocessing images (default: one per core).
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,
    /// Processes (on this machine or others) sharing --output-dir: worker I writes the partitions P with
    /// P % N == I. Default: from SLURM_ARRAY_TASK_COUNT, WORLD_SIZE or SLURM_NTASKS; needed with
    /// JOB_COMPLETION_INDEX (Kubernetes indexed Jobs: the Job's completions). See docs/retrieval.md.
    #[arg(long, value_name = "N")]
    pub num_workers: Option<usize>,
    /// This process's worker number, 0..N (default: SLURM_ARRAY_TASK_ID − SLURM_ARRAY_TASK_MIN,
    /// JOB_COMPLETION_INDEX, RANK or SLURM_PROCID).
    #[arg(long, value_name = "I")]
    pub worker_index: Option<usize>,
}

impl CollectionArgs {
    /// Whether any collection flag that selects this mode was given.
    pub fn is_requested(&self) -> bool {
        self.given_inputs() > 0 || self.output_dir.is_some()
    }

    fn given_inputs(&self) -> usize {
        [
            self.input_dir.is_some(),
            self.input_list.is_some(),
            self.input_csv.is_some(),
            self.input_shards.is_some(),
        ]
        .into_iter()
        .filter(|&g| g)
        .count()
    }

    /// The one collection input.
    fn input(&self) -> Result<Input> {
        match self.given_inputs() {
            0 => bail!(
                "--output-dir needs a collection to embed: --input-dir DIR, --input-list FILE, --input-csv FILE \
                 or --input-shards PATTERN"
            ),
            1 => {}
            _ => bail!(
                "give one collection input (--input-dir, --input-list, --input-csv or --input-shards), not several"
            ),
        }
        if let Some(dir) = &self.input_dir {
            return Ok(Input::Folder(dir.clone()));
        }
        if let Some(list) = &self.input_list {
            return Ok(Input::List(list.clone()));
        }
        if let Some(pattern) = &self.input_shards {
            return Ok(Input::Shards(pattern.clone()));
        }
        let path = self.input_csv.clone().expect("one input is given");
        let options = self.csv.options()?;
        Ok(Input::Csv { path, options })
    }
}

/// The items of the collection, which the run either embeds or passes over (another worker's partitions,
/// partitions already complete).
enum Source {
    /// Tar shards: a shard whose items are all passed over is not read, only walked header by header.
    Shards(ShardCursor),
    /// Folders, lists and CSV files, whose items are paths: passing over them reads no image.
    Other(Samples),
}

impl Source {
    /// Pass over the next `n` items; how many there were.
    fn skip_items(&mut self, n: usize) -> usize {
        match self {
            Source::Shards(shards) => shards.skip_items(n),
            Source::Other(items) => items.take(n).count(),
        }
    }
}

impl Iterator for Source {
    type Item = Result<Sample, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Source::Shards(shards) => shards.next(),
            Source::Other(items) => items.next(),
        }
    }
}

/// A source with the first readable sample looked at in advance (for `--embeddings auto`).
struct Lookahead {
    buffered: VecDeque<Result<Sample, DataError>>,
    rest: Source,
}

impl Lookahead {
    /// Whether the first readable sample (within [`AUTO_LOOKAHEAD`] items) has a caption.
    fn first_has_caption(&mut self) -> bool {
        if let Some(found) = self.buffered.iter().find_map(|item| item.as_ref().ok()) {
            return found.text.is_some();
        }
        while self.buffered.len() < AUTO_LOOKAHEAD {
            let Some(item) = self.rest.next() else {
                return false;
            };
            let has = item.as_ref().ok().map(|s| s.text.is_some());
            self.buffered.push_back(item);
            if let Some(has) = has {
                return has;
            }
        }
        false
    }

    /// Pass over the next `n` items; how many there were.
    fn skip_items(&mut self, n: usize) -> usize {
        let buffered = n.min(self.buffered.len());
        self.buffered.drain(..buffered);
        buffered + self.rest.skip_items(n - buffered)
    }
}

impl Iterator for Lookahead {
    type Item = Result<Sample, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.buffered.pop_front().or_else(|| self.rest.next())
    }
}

/// A path as it should be recorded in the manifest: absolute when it exists, so a resumed run started from
/// another directory still matches.
fn stable(path: &Path) -> String {
    std::fs::canonicalize(path)
        .unwrap_or_else(|_| path.to_path_buf())
        .display()
        .to_string()
}

/// The settings that determine the output; a resumed run must repeat them.
fn settings(args: &EmbedArgs, input: &Input) -> BTreeMap<String, serde_json::Value> {
    let existing = |s: &str| {
        let p = Path::new(s);
        if p.exists() {
            stable(p)
        } else {
            s.to_string()
        }
    };
    let mut m = BTreeMap::new();
    m.insert("model".into(), json!(existing(&args.model.model)));
    m.insert("pretrained".into(), json!(existing(&args.model.pretrained)));
    m.insert("precision".into(), json!(args.model.precision.name()));
    let (kind, path) = match input {
        Input::Folder(p) => ("folder", stable(p)),
        Input::List(p) => ("list", stable(p)),
        Input::Csv { path, options } => {
            m.insert("csv_img_key".into(), json!(options.img_key));
            m.insert("csv_caption_key".into(), json!(options.caption_key));
            m.insert(
                "csv_separator".into(),
                json!(char::from(options.separator).to_string()),
            );
            ("csv", stable(path))
        }
        Input::Shards(pattern) => ("shards", pattern.clone()),
    };
    m.insert("input".into(), json!(kind));
    m.insert("input_path".into(), json!(path));
    // Videos' embeddings depend on how many frames are averaged.
    m.insert("frames".into(), json!(args.frames));
    m
}

/// The image-side embedding of one sample.
struct Visual {
    /// The L2-normalised embedding (for a video, the normalised mean of its frames').
    embedding: Vec<f32>,
    /// For a video, how many frames were averaged.
    frames: Option<u32>,
}

/// The video a sample names, when it is one: a video file ([`coca_data::video::VIDEO_EXTENSIONS`]), an
/// animated GIF (a GIF of one frame stays an image, as before videos were read), or a folder of frames — which
/// only a file list or CSV can name, since `--input-dir` walks into folders.
fn video_path(sample: &Sample) -> Option<&Path> {
    let path = sample.image.path()?;
    let video = match coca_data::video::video_kind(path)? {
        VideoKind::FrameFolder | VideoKind::File => true,
        // An unreadable GIF is left to the image decoder, which reports it.
        VideoKind::Gif => coca_data::video::is_animated_gif(path).unwrap_or(false),
    };
    video.then_some(path)
}

/// The model and everything needed to turn samples into embeddings.
struct Embedder {
    model: Coca,
    device: Device,
    pre: PreprocessConfig,
    tokenizer: Tokenizer,
    context: usize,
    vocab: u32,
    workers: usize,
    image: bool,
    text: bool,
    /// Embedding width.
    dim: usize,
    /// Frames sampled per video (`--frames`).
    frames: usize,
}

impl Embedder {
    fn load(args: &EmbedArgs, image: bool, text: bool, progress: &Progress) -> Result<Self> {
        let (model, cfg): (Coca, CocaConfig) = progress.suspend(|| args.model.load())?;
        let workers = args
            .collection
            .workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        Ok(Self {
            device: model.device().clone(),
            pre: preprocess_config(&cfg)?,
            tokenizer: Tokenizer::new().context("loading the CLIP tokenizer")?,
            context: cfg.text_cfg.context_length,
            vocab: cfg.text_cfg.vocab_size as u32,
            dim: cfg.embed_dim,
            frames: args.frames,
            model,
            workers: workers.max(1),
            image,
            text,
        })
    }

    /// Embed one batch into `data`; unusable samples are reported to `progress` and left out.
    fn embed(
        &self,
        batch: Vec<Sample>,
        data: &mut PartitionData,
        progress: &mut Progress,
    ) -> Result<()> {
        let mut kept: Vec<Sample> = Vec::with_capacity(batch.len());
        for sample in batch {
            if self.text && sample.text.is_none() {
                progress.skip(format!(
                    "{}: no caption (embedding captions needs one per sample; --embeddings image embeds the \
                     images alone)",
                    sample.image.name()
                ));
            } else {
                kept.push(sample);
            }
        }
        let visual = if self.image {
            self.embed_visual(&kept, progress)?
        } else {
            Vec::new()
        };
        // Drop the samples whose image or video could not be read (already reported).
        let (kept, visual): (Vec<Sample>, Vec<Option<Visual>>) = if self.image {
            kept.into_iter()
                .zip(visual)
                .filter(|(_, v)| v.is_some())
                .unzip()
        } else {
            let n = kept.len();
            (kept, (0..n).map(|_| None).collect())
        };
        let n = kept.len();
        if n == 0 {
            return Ok(());
        }
        let text_rows = if self.text {
            let ids = self.tokenize(&kept)?;
            flat(&self.model.encode_text(&ids)?.embedding)?
        } else {
            Vec::new()
        };
        let dim = self.dim;
        for (i, (sample, visual)) in kept.into_iter().zip(visual).enumerate() {
            let image_path = match sample.image.path() {
                Some(p) => p.display().to_string(),
                // clip-retrieval records a shard sample's key as its image_path.
                None => sample.key.clone(),
            };
            let frames = match &visual {
                Some(Visual { frames, .. }) => *frames,
                None => None,
            };
            data.push(
                visual.as_ref().map(|v| &v.embedding[..]),
                self.text.then(|| &text_rows[i * dim..(i + 1) * dim]),
                MetadataRow {
                    image_path: Some(image_path),
                    caption: sample.text,
                    key: Some(sample.key),
                    video: frames.is_some(),
                    frames,
                },
            );
        }
        Ok(())
    }

    /// The image-side embedding of each sample, in order: images are decoded on the worker threads and
    /// encoded as one batch; videos (video files, animated GIFs, frame folders named by a list or CSV) one by
    /// one as the mean of their `--frames` sampled frames. `None` marks a sample that could not be read,
    /// reported to `progress`.
    fn embed_visual(
        &self,
        samples: &[Sample],
        progress: &mut Progress,
    ) -> Result<Vec<Option<Visual>>> {
        let videos: Vec<Option<&Path>> = samples.iter().map(video_path).collect();
        let images: Vec<&Sample> = samples
            .iter()
            .zip(&videos)
            .filter(|(_, v)| v.is_none())
            .map(|(s, _)| s)
            .collect();
        let mut pixels = Vec::new();
        let mut readable = Vec::with_capacity(images.len());
        for result in preprocess_samples(&images, &self.pre, self.workers) {
            match result {
                Ok(p) => {
                    pixels.extend_from_slice(&p);
                    readable.push(true);
                }
                Err(e) => {
                    progress.skip(e.to_string());
                    readable.push(false);
                }
            }
        }
        let n_ok = readable.iter().filter(|&&r| r).count();
        let image_rows = if n_ok > 0 {
            let s = self.pre.image_size as usize;
            let batch = Tensor::from_vec(pixels, (n_ok, 3, s, s), &self.device)?;
            flat(&self.model.encode_image(&batch)?.embedding)?
        } else {
            Vec::new()
        };
        let dim = self.dim;
        let (mut next_image, mut next_row) = (0usize, 0usize);
        let mut out = Vec::with_capacity(samples.len());
        for video in videos {
            if let Some(path) = video {
                match embed_video(&self.model, path, self.frames, &self.pre) {
                    Ok(embedding) => out.push(Some(Visual {
                        embedding,
                        frames: Some(self.frames as u32),
                    })),
                    Err(e) => {
                        progress.skip(format!("{}: cannot use this video: {e:#}", path.display()));
                        out.push(None);
                    }
                }
                continue;
            }
            let ok = readable[next_image];
            next_image += 1;
            if ok {
                out.push(Some(Visual {
                    embedding: image_rows[next_row * dim..(next_row + 1) * dim].to_vec(),
                    frames: None,
                }));
                next_row += 1;
            } else {
                out.push(None);
            }
        }
        Ok(out)
    }

    /// Token ids (n, context) of the samples' captions, truncated as open_clip does.
    fn tokenize(&self, samples: &[Sample]) -> Result<Tensor> {
        let mut ids = Vec::with_capacity(samples.len() * self.context);
        for sample in samples {
            let caption = sample.text.as_deref().unwrap_or_default();
            let tok = self.tokenizer.tokenize(caption, self.context);
            if let Some(bad) = tok.ids.iter().find(|&&id| id >= self.vocab) {
                bail!(
                    "{}: token id {bad} is outside this model's vocabulary of {}; the model was not trained with \
                     the CLIP tokenizer",
                    sample.key,
                    self.vocab
                );
            }
            ids.extend_from_slice(&tok.ids);
        }
        Ok(Tensor::from_vec(
            ids,
            (samples.len(), self.context),
            &self.device,
        )?)
    }
}

/// The model, loaded on first use: a run whose partitions are all complete does not load it at all.
fn loaded<'a>(
    slot: &'a mut Option<Embedder>,
    args: &EmbedArgs,
    image: bool,
    text: bool,
    progress: &Progress,
) -> Result<&'a Embedder> {
    if slot.is_none() {
        *slot = Some(Embedder::load(args, image, text, progress)?);
    }
    Ok(slot.as_ref().expect("loaded above"))
}

/// A (batch, dim) embedding tensor as row-major f32 values.
fn flat(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
}

/// What a run did, for the summary.
#[derive(Default)]
struct Tally {
    /// Items of the whole input (all workers'), including unreadable ones.
    input_items: usize,
    /// Partitions the input is cut into.
    partitions: usize,
    /// Partitions of this worker.
    partitions_owned: usize,
    embedded: usize,
    partitions_written: usize,
    partitions_reused: usize,
    rows_reused: usize,
}

/// Run a collection embedding.
pub fn run(args: &EmbedArgs) -> Result<()> {
    let c = &args.collection;
    let input = c.input()?;
    let Some(out_dir) = c.output_dir.as_deref() else {
        bail!("{input}: pass --output-dir OUT to say where the embeddings go");
    };
    if args.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    if c.partition_size == 0 {
        bail!("--partition-size must be at least 1");
    }
    let started = Instant::now();
    if args.frames == 0 {
        bail!("--frames must be at least 1");
    }
    let assignment = workers::resolve(c.num_workers, c.worker_index, |name| {
        std::env::var(name).ok()
    })?;
    let share = assignment.share;
    let cannot_read = || format!("cannot read {input}");
    let source = match &input {
        // Video files in a folder are embedded too (coca_data::open walks images only, for training).
        Input::Folder(dir) => Source::Other(Box::new(
            FolderSource::new(dir)
                .with_context(cannot_read)?
                .including_videos(),
        )),
        Input::Shards(pattern) => {
            Source::Shards(ShardCursor::open(pattern).with_context(cannot_read)?)
        }
        _ => Source::Other(coca_data::open(&input).with_context(cannot_read)?),
    };
    let mut source = Lookahead {
        buffered: VecDeque::new(),
        rest: source,
    };
    let (image, text) = match c.embeddings {
        Kinds::Auto => (true, source.first_has_caption()),
        Kinds::Image => (true, false),
        Kinds::Text => (false, true),
        Kinds::Both => (true, true),
    };
    let (cfg, _) = resolve_config(&args.model.model)?;
    let manifest = Manifest {
        format: FORMAT_VERSION,
        partition_size: c.partition_size,
        dim: cfg.embed_dim,
        dtype: c.emb_dtype.into(),
        image_embeddings: image,
        text_embeddings: text,
        settings: settings(args, &input),
    };
    let mut output = EmbeddingOutput::create_or_resume_share(out_dir, manifest, share)?;
    if share.count > 1 {
        tracing::info!(
            "worker {} of {} (from {}): writing the partitions P with P % {} == {}",
            share.index,
            share.count,
            assignment.source,
            share.count,
            share.index
        );
    }
    let owned_complete = output.complete().iter().filter(|&&p| share.owns(p)).count();
    if owned_complete > 0 {
        tracing::info!(
            "{}: resuming; {owned_complete} partition(s) of this worker already complete",
            out_dir.display()
        );
    }

    let mut progress = Progress::new();
    let mut embedder: Option<Embedder> = None;
    let mut tally = Tally::default();
    for partition in 0.. {
        if !share.owns(partition) {
            // Another worker's: only counted, never decoded (nor read, for shards it fills alone).
            let seen = source.skip_items(c.partition_size);
            tally.input_items += seen;
            if seen < c.partition_size {
                tally.partitions = partition + usize::from(seen > 0);
                break;
            }
            continue;
        }
        tally.partitions_owned += 1;
        if output.is_complete(partition) {
            let seen = source.skip_items(c.partition_size);
            progress.advance(seen);
            tally.input_items += seen;
            if seen == 0 {
                tally.partitions_owned -= 1;
                tally.partitions = partition;
                break;
            }
            tally.partitions_reused += 1;
            tally.rows_reused += output.rows_in(partition)?;
            if seen < c.partition_size {
                tally.partitions = partition + 1;
                break;
            }
            continue;
        }
        let mut data = PartitionData::default();
        let mut batch = Vec::with_capacity(args.batch_size);
        let mut seen = 0;
        for item in source.by_ref().take(c.partition_size) {
            seen += 1;
            match item {
                Ok(sample) => batch.push(sample),
                Err(e) => progress.skip(e.to_string()),
            }
            if batch.len() == args.batch_size {
                let model = loaded(&mut embedder, args, image, text, &progress)?;
                model.embed(std::mem::take(&mut batch), &mut data, &mut progress)?;
                progress.advance(args.batch_size);
            }
        }
        if !batch.is_empty() {
            let n = batch.len();
            let model = loaded(&mut embedder, args, image, text, &progress)?;
            model.embed(batch, &mut data, &mut progress)?;
            progress.advance(n);
        }
        tally.input_items += seen;
        if seen == 0 {
            tally.partitions_owned -= 1;
            tally.partitions = partition;
            break;
        }
        tally.embedded += data.len();
        output.write_partition(partition, &data)?;
        tally.partitions_written += 1;
        if seen < c.partition_size {
            tally.partitions = partition + 1;
            break;
        }
    }
    progress.finish();
    WorkerReport {
        worker: share.index,
        workers: share.count,
        input_items: tally.input_items,
        partitions: tally.partitions,
        checkpoint_sha256: checkpoint_sha256(&args.model.pretrained)?,
    }
    .write(output.layout())?;
    summarize(args, out_dir, &output, &tally, share, &progress, started)
}

/// SHA-256 of the checkpoint when it is a local file, so that `coca index` can tell whether every worker
/// used the same weights (the path may differ between machines).
fn checkpoint_sha256(pretrained: &str) -> Result<Option<String>> {
    use sha2::{Digest, Sha256};
    let path = Path::new(pretrained);
    if !path.is_file() {
        return Ok(None);
    }
    let mut file = std::fs::File::open(path)
        .with_context(|| format!("{}: cannot read the checkpoint", path.display()))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher)
        .with_context(|| format!("{}: cannot read the checkpoint", path.display()))?;
    let digest = hasher.finalize();
    Ok(Some(digest.iter().map(|b| format!("{b:02x}")).collect()))
}

/// Print the summary (text or JSON) and fail if nothing at all could be embedded.
fn summarize(
    args: &EmbedArgs,
    out_dir: &Path,
    output: &EmbeddingOutput,
    tally: &Tally,
    share: coca_retrieval::Share,
    progress: &Progress,
    started: Instant,
) -> Result<()> {
    let m = output.manifest();
    let seconds = started.elapsed().as_secs_f64();
    let skipped = progress.skipped();
    let kinds = match (m.image_embeddings, m.text_embeddings) {
        (true, true) => "images and captions",
        (true, false) => "images",
        _ => "captions",
    };
    if args.json || args.output.is_some() {
        let (listed, cut) = progress.listed();
        let value = json!({
            "output_dir": out_dir.display().to_string(),
            "embedded": tally.embedded,
            "skipped": skipped,
            "skipped_items": listed,
            "skipped_items_truncated": cut,
            "partitions_written": tally.partitions_written,
            "partitions_reused": tally.partitions_reused,
            "rows_reused": tally.rows_reused,
            "partitions": output.complete().len(),
            "worker": share.index,
            "num_workers": share.count,
            "partitions_owned": tally.partitions_owned,
            "input_partitions": tally.partitions,
            "input_items": tally.input_items,
            "image_embeddings": m.image_embeddings,
            "text_embeddings": m.text_embeddings,
            "dim": m.dim,
            "dtype": m.dtype.to_string(),
            "seconds": seconds,
        });
        write_json(&value, args.output.as_deref())?;
    } else {
        println!(
            "embedded {} samples ({kinds}, dimension {}, {}) into {} in {:.1}s",
            tally.embedded,
            m.dim,
            m.dtype,
            out_dir.display(),
            seconds
        );
        println!(
            "partitions: {} written, {} already complete ({} rows kept)",
            tally.partitions_written, tally.partitions_reused, tally.rows_reused
        );
        if share.count > 1 {
            println!(
                "worker {} of {}: {} of the input's {} partitions are this worker's; `coca index {}` checks \
                 them all once every worker is done",
                share.index,
                share.count,
                tally.partitions_owned,
                tally.partitions,
                out_dir.display()
            );
        }
        if skipped > 0 {
            println!("skipped {skipped} unreadable (each named in a warning above)");
        } else {
            println!("skipped 0 unreadable");
        }
    }
    if tally.embedded == 0 && tally.rows_reused == 0 && skipped > 0 {
        return Err(anyhow!(
            "no sample of the collection could be embedded ({skipped} skipped)"
        ));
    }
    Ok(())
}
