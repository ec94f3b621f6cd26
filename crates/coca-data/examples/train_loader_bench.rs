//! Throughput of the training loader on real photos, and the cost of resuming (fast-forwarding) mid-epoch.
//!
//! ```text
//! cargo run --release -p coca-data --example train_loader_bench [SAMPLES] [WORKERS]
//! ```
//!
//! Builds tar shards of `SAMPLES` (default 10,000) samples from the fixture photos in a temporary folder
//! (300–640 px JPEGs, about 90 KB each), then measures batches/s at 64 and 224 px with and without
//! augmentation, and the time a loader resumed at the end of the data takes to reach its next batch.

use std::path::Path;
use std::time::Instant;

use coca_data::{Input, LoaderConfig, LoaderState, TrainLoader, TrainSource};
use coca_image::PreprocessConfig;

const PHOTOS: [&str; 7] = [
    "astronaut_420.jpg",
    "camera_grey.jpg",
    "chelsea_422.jpg",
    "china.jpg",
    "coffee_progressive.jpg",
    "flower.jpg",
    "rocket.jpg",
];
const PER_SHARD: usize = 1000;
const BATCH: usize = 32;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let samples: usize = args.next().map_or(Ok(10_000), |s| s.parse())?;
    let workers: usize = args.next().map_or(Ok(2), |s| s.parse())?;
    let sources = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/images/sources");
    let photos: Vec<Vec<u8>> = PHOTOS
        .iter()
        .map(|p| std::fs::read(sources.join(p)))
        .collect::<Result<_, _>>()?;
    let dir = tempfile::tempdir()?;
    let shards = samples.div_ceil(PER_SHARD);
    let mut bytes = 0usize;
    for s in 0..shards {
        let mut builder = tar::Builder::new(Vec::new());
        for i in s * PER_SHARD..((s + 1) * PER_SHARD).min(samples) {
            let photo = &photos[i % photos.len()];
            let caption = format!("photo number {i}");
            for (name, data) in [
                (format!("{i:08}.jpg"), photo.as_slice()),
                (format!("{i:08}.txt"), caption.as_bytes()),
            ] {
                let mut header = tar::Header::new_ustar();
                header.set_size(data.len() as u64);
                header.set_mode(0o644);
                header.set_cksum();
                builder.append_data(&mut header, name, data)?;
            }
            bytes += photo.len();
        }
        std::fs::write(
            dir.path().join(format!("{s:05}.tar")),
            builder.into_inner()?,
        )?;
    }
    let pattern = format!("{}/{{00000..{:05}}}.tar", dir.path().display(), shards - 1);
    println!(
        "{samples} samples in {shards} shards ({:.0} MB of JPEG), batch {BATCH}, {workers} workers",
        bytes as f64 / 1e6
    );
    let source = TrainSource::Stream(Input::Shards(pattern));
    let cfg = |size, augment| LoaderConfig {
        batch_size: BATCH,
        preprocess: PreprocessConfig {
            image_size: size,
            ..Default::default()
        },
        augment,
        workers,
        shuffle_buffer: 1000,
        seed: 0,
        rank: 0,
        world_size: 1,
    };
    for size in [64, 224] {
        for augment in [true, false] {
            let mut loader =
                TrainLoader::new(source.clone(), cfg(size, augment), LoaderState::default())?;
            loader.next_batch()?; // fills the shuffle buffer and the prefetch queue
            let n = 40;
            let start = Instant::now();
            for _ in 0..n {
                loader.next_batch()?;
            }
            let secs = start.elapsed().as_secs_f64();
            println!(
                "{size:>3} px, augment {augment:<5}: {:6.2} batches/s = {:6.1} images/s",
                n as f64 / secs,
                (n * BATCH) as f64 / secs
            );
        }
    }
    // Resume just before the end of epoch 0: everything before is read (not decoded) again.
    let position = (samples - BATCH) as u64;
    let state = LoaderState {
        epoch: 0,
        batches_in_epoch: position / BATCH as u64,
        position,
        ..Default::default()
    };
    for (label, state) in [
        ("fresh start", LoaderState::default()),
        ("resume at end", state),
    ] {
        let start = Instant::now();
        let mut loader = TrainLoader::new(source.clone(), cfg(64, true), state)?;
        loader.next_batch()?;
        println!(
            "{label:<13}: first batch after {:.3} s",
            start.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
