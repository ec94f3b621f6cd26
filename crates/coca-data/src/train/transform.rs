//! The per-sample image transforms: open_clip's train transform (`RandomResizedCrop` then `ToTensor` +
//! `Normalize`) and its eval transform (coca-image's exact preprocessing).
//!
//! `RandomResizedCrop` follows torchvision's algorithm: up to ten attempts drawing an area fraction uniformly
//! from `scale` and an aspect ratio log-uniformly from `ratio`, the sides rounded half to even; the first crop
//! that fits is placed uniformly at random; if none fits, a center crop of the whole image with its aspect
//! ratio clamped to `ratio`. The crop is resized with Pillow's exact resampling. The random numbers come from
//! this crate's generator in f64, where torch draws f32 from its own generator, so the crops are not those
//! torchvision would pick for the same seed — equally distributed, not identical.

use coca_image::image::RgbImage;
use coca_image::PreprocessConfig;
use coca_image::{preprocess, preprocess_decoded, resize_region, to_tensor, DecodedImage};

use super::rng::Rng;

/// open_clip's training crop scale (`AugmentationCfg.scale` default for CoCa: `(0.9, 1.0)`).
pub const CROP_SCALE: (f64, f64) = (0.9, 1.0);

/// torchvision's default aspect-ratio range of `RandomResizedCrop`.
pub const CROP_RATIO: (f64, f64) = (3.0 / 4.0, 4.0 / 3.0);

/// A decoded image as the source gave it.
pub(crate) enum Picture {
    /// Decoded from a file, in its PIL mode: the eval transform resizes in that mode, as open_clip's
    /// `CsvDataset` (plain `Image.open`) does.
    Decoded(DecodedImage),
    /// Already RGB: shard images (open_clip's WebDataset pipeline decodes with `"pilrgb"`) and indexed sources.
    Rgb(RgbImage),
}

impl Picture {
    fn into_rgb(self) -> RgbImage {
        match self {
            Picture::Decoded(img) => img.to_rgb(),
            Picture::Rgb(img) => img,
        }
    }
}

/// torchvision's `RandomResizedCrop.get_params` for a `width` × `height` image: the crop as `(x, y, w, h)`.
pub(crate) fn random_resized_crop(
    width: u32,
    height: u32,
    scale: (f64, f64),
    ratio: (f64, f64),
    rng: &mut Rng,
) -> (u32, u32, u32, u32) {
    let (fw, fh) = (f64::from(width), f64::from(height));
    let area = fw * fh;
    let (log_lo, log_hi) = (ratio.0.ln(), ratio.1.ln());
    for _ in 0..10 {
        let target = area * rng.uniform_in(scale.0, scale.1);
        let aspect = rng.uniform_in(log_lo, log_hi).exp();
        let w = (target * aspect).sqrt().round_ties_even();
        let h = (target / aspect).sqrt().round_ties_even();
        if w > 0.0 && w <= fw && h > 0.0 && h <= fh {
            let (w, h) = (w as u32, h as u32);
            // torch.randint(0, n + 1): uniform over the n + 1 possible offsets.
            let y = rng.below(u64::from(height - h) + 1) as u32;
            let x = rng.below(u64::from(width - w) + 1) as u32;
            return (x, y, w, h);
        }
    }
    // Fallback: the whole image, cut to the nearest allowed aspect ratio, centered.
    let in_ratio = fw / fh;
    let (w, h) = if in_ratio < ratio.0 {
        (width, ((fw / ratio.0).round_ties_even() as u32).min(height))
    } else if in_ratio > ratio.1 {
        (((fh * ratio.1).round_ties_even() as u32).min(width), height)
    } else {
        (width, height)
    };
    ((width - w) / 2, (height - h) / 2, w, h)
}

/// Runs the eval transform (`rng` = `None`) or the train transform on one image: `3 × S × S` floats, CHW.
/// The train transform always fills the square (`RandomResizedCrop` ignores `resize_mode`, as in open_clip).
pub(crate) fn transform(
    picture: Picture,
    cfg: &PreprocessConfig,
    rng: Option<&mut Rng>,
) -> Vec<f32> {
    match (picture, rng) {
        (Picture::Decoded(img), None) => preprocess_decoded(&img, cfg),
        (Picture::Rgb(img), None) => preprocess(&img, cfg),
        (picture, Some(rng)) => {
            // open_clip crops before converting to RGB; converting first differs only for palette, alpha and
            // 16-bit files read from folders/CSV (shards are RGB already, as in open_clip's pipeline).
            let img = picture.into_rgb();
            let (w, h) = img.dimensions();
            let region = random_resized_crop(w, h, CROP_SCALE, CROP_RATIO, rng);
            let size = cfg.image_size;
            let out = resize_region(&img, region, (size, size), cfg.interpolation);
            to_tensor(out.as_raw(), cfg)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::rng::Purpose;

    #[test]
    fn crops_stay_inside_and_keep_most_of_the_area() {
        for (w, h) in [
            (224u32, 224u32),
            (640, 427),
            (37, 23),
            (1000, 20),
            (1, 1),
            (3, 200),
        ] {
            for i in 0..200 {
                let mut rng = Rng::keyed(5, Purpose::Augment, &[u64::from(w), i]);
                let (x, y, cw, ch) = random_resized_crop(w, h, CROP_SCALE, CROP_RATIO, &mut rng);
                assert!(
                    cw > 0 && ch > 0 && x + cw <= w && y + ch <= h,
                    "{w}x{h}: {x},{y} {cw}x{ch}"
                );
            }
        }
        // A square image: area within 0.9..1.0 (up to rounding), aspect within 3/4..4/3.
        let mut rng = Rng::keyed(9, Purpose::Augment, &[]);
        for _ in 0..500 {
            let (_, _, cw, ch) = random_resized_crop(200, 200, CROP_SCALE, CROP_RATIO, &mut rng);
            let frac = f64::from(cw * ch) / 40000.0;
            assert!((0.88..=1.0).contains(&frac), "{cw}x{ch}");
            let aspect = f64::from(cw) / f64::from(ch);
            assert!((0.74..=1.35).contains(&aspect), "{cw}x{ch}");
        }
    }

    #[test]
    fn extreme_aspect_ratios_fall_back_to_a_clamped_center_crop() {
        let mut rng = Rng::keyed(1, Purpose::Augment, &[]);
        // 1000 x 20 can hold no crop of 90% area with aspect <= 4/3: center crop 27 x 20.
        assert_eq!(
            random_resized_crop(1000, 20, CROP_SCALE, CROP_RATIO, &mut rng),
            (486, 0, 27, 20)
        );
        assert_eq!(
            random_resized_crop(20, 1000, CROP_SCALE, CROP_RATIO, &mut rng),
            (0, 486, 20, 27)
        );
    }
}
