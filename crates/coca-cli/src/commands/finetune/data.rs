//! The items of a fine-tuning run, decoded batch by batch (memory stays one batch of pixels, whatever the
//! dataset's size).
//!
//! [`Items::open`] decodes every item once up front, so an unreadable one is skipped with a warning naming it
//! (as `coca probe` skips it) before training starts, and the run trains on a fixed list; an item that becomes
//! unreadable during the run fails it.

use std::path::Path;

use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use coca_data::LabelledItem;
use coca_image::PreprocessConfig;

use crate::commands::embed::progress::Skipped;
use crate::video_input::load_video;

/// Images per decoding call of the up-front check.
const CHECK_CHUNK: usize = 64;

/// Readable items and how to decode them.
pub struct Items {
    items: Vec<LabelledItem>,
    /// Frames per video; `None` for images.
    frames: Option<usize>,
    pre: PreprocessConfig,
    threads: usize,
}

impl Items {
    /// Decode every item of `items` once, keeping the readable ones (in order) and recording the others.
    pub fn open(
        items: &[LabelledItem],
        frames: Option<usize>,
        pre: &PreprocessConfig,
    ) -> Result<(Self, Skipped)> {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let bar = crate::progress::Progress::new("checking", Some(items.len() as u64), "items");
        let mut kept = Vec::with_capacity(items.len());
        let mut skipped = Skipped::default();
        match frames {
            Some(n) => {
                for item in items {
                    bar.inc(1);
                    match load_video(&item.path, n, pre, &Device::Cpu) {
                        Ok(_) => kept.push(item.clone()),
                        Err(e) => skipped.skip(
                            &bar,
                            format!("{}: cannot use this video: {e:#}", item.path.display()),
                        ),
                    }
                }
            }
            None => {
                for chunk in items.chunks(CHECK_CHUNK) {
                    let paths: Vec<&Path> = chunk.iter().map(|i| i.path.as_path()).collect();
                    for (item, result) in chunk
                        .iter()
                        .zip(coca_image::preprocess_paths(&paths, pre, threads))
                    {
                        match result {
                            Ok(_) => kept.push(item.clone()),
                            // The image errors start with the file's path.
                            Err(e) => skipped.skip(&bar, e.to_string()),
                        }
                    }
                    bar.inc(chunk.len() as u64);
                }
            }
        }
        bar.finish();
        if kept.is_empty() {
            let what = if frames.is_some() { "videos" } else { "images" };
            return Err(skipped.nothing_usable(what));
        }
        Ok((
            Self {
                items: kept,
                frames,
                pre: pre.clone(),
                threads,
            },
            skipped,
        ))
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Class index of each item.
    pub fn labels(&self) -> Vec<usize> {
        self.items.iter().map(|i| i.label).collect()
    }

    /// The items at `indices`, as a new list.
    pub fn select(&self, indices: &[usize]) -> Self {
        Self {
            items: indices.iter().map(|&i| self.items[i].clone()).collect(),
            frames: self.frames,
            pre: self.pre.clone(),
            threads: self.threads,
        }
    }

    /// Frames per item (1 for images).
    pub fn frames(&self) -> usize {
        self.frames.unwrap_or(1)
    }

    /// Preprocessed pixels of the items at `indices` on `device`: (items × frames, 3, S, S), each item's
    /// frames consecutive.
    pub fn pixels(&self, indices: &[usize], device: &Device) -> Result<Tensor> {
        let size = self.pre.image_size as usize;
        match self.frames {
            Some(n) => {
                let videos = indices
                    .iter()
                    .map(|&i| {
                        let path = &self.items[i].path;
                        load_video(path, n, &self.pre, device)
                            .with_context(|| format!("{}: cannot use this video", path.display()))
                    })
                    .collect::<Result<Vec<_>>>()?;
                Ok(Tensor::cat(&videos, 0)?)
            }
            None => {
                let paths: Vec<&Path> = indices
                    .iter()
                    .map(|&i| self.items[i].path.as_path())
                    .collect();
                let mut data = Vec::with_capacity(paths.len() * 3 * size * size);
                for pixels in coca_image::preprocess_paths(&paths, &self.pre, self.threads) {
                    data.extend_from_slice(&pixels?);
                }
                Ok(Tensor::from_vec(
                    data,
                    (paths.len(), 3, size, size),
                    device,
                )?)
            }
        }
    }
}
