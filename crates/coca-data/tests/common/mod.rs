//! Helpers shared by the loader tests: small images, tar shards, loader settings, and the exact-resume check.

#![allow(dead_code)] // each test file uses its own subset

use std::io::Cursor;
use std::path::Path;
use std::sync::Arc;

use coca_data::train::IndexedGet;
use coca_data::{Batch, LoaderConfig, LoaderState, TrainLoader, TrainSource};
use coca_image::image::{ImageFormat, Rgb, RgbImage};
use coca_image::PreprocessConfig;

/// A deterministic image that differs per `seed`, with a size that varies too.
pub fn picture(seed: u64) -> RgbImage {
    let (w, h) = (18 + (seed % 7) as u32, 14 + (seed % 5) as u32);
    RgbImage::from_fn(w, h, |x, y| {
        let v = seed as u32 * 31 + x * 7 + y * 13;
        Rgb([v as u8, (v * 3 + x * y) as u8, (255 - v % 256) as u8])
    })
}

pub fn png(img: &RgbImage) -> Vec<u8> {
    let mut out = Vec::new();
    img.write_to(&mut Cursor::new(&mut out), ImageFormat::Png)
        .unwrap();
    out
}

/// A tar shard of (name, bytes) entries.
pub fn write_shard(path: &Path, files: &[(String, Vec<u8>)]) {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut header = tar::Header::new_ustar();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder
            .append_data(&mut header, name, data.as_slice())
            .unwrap();
    }
    std::fs::write(path, builder.into_inner().unwrap()).unwrap();
}

/// Shard `s` holds samples `s*per .. (s+1)*per`, keyed `000123`, captioned `caption 123`.
pub fn write_shards(dir: &Path, shards: usize, per: usize) -> String {
    for s in 0..shards {
        let files: Vec<(String, Vec<u8>)> = (s * per..(s + 1) * per)
            .flat_map(|i| {
                [
                    (format!("{i:06}.png"), png(&picture(i as u64))),
                    (format!("{i:06}.txt"), format!("caption {i}").into_bytes()),
                ]
            })
            .collect();
        write_shard(&dir.join(format!("{s:03}.tar")), &files);
    }
    format!("{}/{{000..{:03}}}.tar", dir.display(), shards - 1)
}

pub fn cfg(batch_size: usize, seed: u64) -> LoaderConfig {
    LoaderConfig {
        batch_size,
        preprocess: PreprocessConfig {
            image_size: 12,
            ..Default::default()
        },
        augment: true,
        workers: 3,
        shuffle_buffer: 7,
        seed,
        rank: 0,
        world_size: 1,
    }
}

pub fn indexed(len: u64) -> TrainSource {
    let get: IndexedGet = Arc::new(|i| Ok((picture(i), format!("scene {i}"))));
    TrainSource::Indexed { len, get }
}

pub fn take(loader: &mut TrainLoader, n: usize) -> Vec<Batch> {
    (0..n).map(|_| loader.next_batch().unwrap()).collect()
}

pub fn keys(batches: &[Batch]) -> Vec<String> {
    batches.iter().flat_map(|b| b.keys.clone()).collect()
}

/// Take `k` batches, save the state (through JSON, as a checkpoint would), and check that a loader resumed
/// from it returns the same next `m` batches as the original, pixels included.
pub fn assert_resumes_exactly(source: TrainSource, cfg: LoaderConfig, k: usize, m: usize) {
    assert_reopens_exactly(
        |state| TrainLoader::new(source.clone(), cfg.clone(), state).unwrap(),
        k,
        m,
    );
}

/// [`assert_resumes_exactly`] for a loader that `open` builds at a state.
pub fn assert_reopens_exactly(open: impl Fn(LoaderState) -> TrainLoader, k: usize, m: usize) {
    let mut original = open(LoaderState::default());
    take(&mut original, k);
    let saved = serde_json::to_string(&original.state()).unwrap();
    let expected = take(&mut original, m);
    let state: LoaderState = serde_json::from_str(&saved).unwrap();
    let mut resumed = open(state);
    let got = take(&mut resumed, m);
    for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
        assert_eq!(g.keys, e.keys, "batch {i} after resuming");
        assert_eq!(g.texts, e.texts, "batch {i}");
        assert!(g.pixels == e.pixels, "batch {i}: pixels differ");
    }
    assert_eq!(resumed.state(), original.state());
}
