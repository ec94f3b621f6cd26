//! Decoding and preprocessing a batch of collection images on several threads.

use std::sync::atomic::{AtomicUsize, Ordering};

use coca_data::{ImageData, Sample};
use coca_image::{DecodedImage, ImageError, PreprocessConfig};

/// One image's pixels (3 × S × S, CHW) or why it could not be read.
pub type Pixels = Result<Vec<f32>, ImageError>;

/// Decode and preprocess every sample's image with `threads` workers (at least one); results come back in
/// input order, so a corrupt image only fails its own entry.
pub fn preprocess_samples(
    samples: &[&Sample],
    cfg: &PreprocessConfig,
    threads: usize,
) -> Vec<Pixels> {
    let threads = threads.clamp(1, samples.len().max(1));
    // Workers take the next index from a shared counter, so one large image does not hold up a fixed share
    // of the batch.
    let next = AtomicUsize::new(0);
    let mut slots: Vec<Option<Pixels>> = Vec::new();
    slots.resize_with(samples.len(), || None);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                let next = &next;
                scope.spawn(move || {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(sample) = samples.get(i) else {
                            return done;
                        };
                        done.push((i, preprocess(&sample.image, cfg)));
                    }
                })
            })
            .collect();
        for worker in workers {
            match worker.join() {
                Ok(done) => {
                    for (i, pixels) in done {
                        slots[i] = Some(pixels);
                    }
                }
                // Decoding reports bad input as errors; a panic is a bug and is passed on.
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
    });
    slots
        .into_iter()
        .map(|slot| slot.unwrap_or_else(|| unreachable!("every index is taken by a worker")))
        .collect()
}

fn preprocess(image: &ImageData, cfg: &PreprocessConfig) -> Pixels {
    let decoded = match image {
        ImageData::Path(path) => DecodedImage::open_limited(path, &cfg.limits)?,
        ImageData::Bytes { name, data } => DecodedImage::decode_limited(data, name, &cfg.limits)?,
    };
    Ok(coca_image::preprocess_decoded(&decoded, cfg))
}
