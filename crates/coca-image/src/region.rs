//! Crop-then-resize of an RGB image, as torchvision's `resized_crop` does it
//! on a PIL image (`img.crop(box).resize(size, filter)`): the building block
//! of training-time augmentation such as `RandomResizedCrop`.

use image::RgbImage;

use crate::config::Interpolation;
use crate::resample::{resample_u8, View, Window};

/// Crops `region` = `(x, y, width, height)` (pixels, top-left corner first)
/// out of `img` and resizes the crop to `out` = `(width, height)` with
/// Pillow's resampling, bit for bit what `img.crop((x, y, x + width, y +
/// height)).resize(out, filter)` gives in PIL for an "RGB" image.
///
/// A region reaching past the image is clipped to it (PIL would pad with
/// black instead; augmentation never asks for that). An empty region or
/// output gives a black image of the output size.
pub fn resize_region(
    img: &RgbImage,
    region: (u32, u32, u32, u32),
    out: (u32, u32),
    interpolation: Interpolation,
) -> RgbImage {
    let (img_w, img_h) = img.dimensions();
    let (x, y, w, h) = region;
    let x0 = x.min(img_w);
    let y0 = y.min(img_h);
    let x1 = x.saturating_add(w).min(img_w);
    let y1 = y.saturating_add(h).min(img_h);
    let (crop_w, crop_h) = ((x1 - x0) as usize, (y1 - y0) as usize);
    let (out_w, out_h) = out;
    if crop_w == 0 || crop_h == 0 || out_w == 0 || out_h == 0 {
        return RgbImage::new(out_w, out_h);
    }
    // PIL's crop makes a new image; copying the rows keeps the resampler's
    // simple contiguous view and costs far less than the resampling itself.
    let stride = img_w as usize * 3;
    let mut crop = Vec::with_capacity(crop_w * crop_h * 3);
    for row in y0 as usize..y1 as usize {
        let start = row * stride + x0 as usize * 3;
        crop.extend_from_slice(&img.as_raw()[start..start + crop_w * 3]);
    }
    let src = View {
        data: crop.as_slice(),
        width: crop_w,
        height: crop_h,
        channels: 3,
    };
    let window = Window {
        out_width: out_w as usize,
        out_height: out_h as usize,
        x: 0..out_w as usize,
        y: 0..out_h as usize,
    };
    let data = resample_u8(src, &window, interpolation);
    // The resampler returns exactly out_w * out_h * 3 samples.
    RgbImage::from_raw(out_w, out_h, data).unwrap_or_else(|| RgbImage::new(out_w, out_h))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{PreprocessConfig, ResizeMode};
    use crate::preprocess::{preprocess, to_tensor};

    fn pattern(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([
                (x * 37 + y * 11) as u8,
                (x * x + 3 * y) as u8,
                (255 - (x * y) % 256) as u8,
            ])
        })
    }

    fn squash(size: u32, interpolation: Interpolation) -> PreprocessConfig {
        PreprocessConfig {
            image_size: size,
            interpolation,
            resize_mode: ResizeMode::Squash,
            ..Default::default()
        }
    }

    #[test]
    fn whole_image_region_is_the_squash_resize() {
        let img = pattern(53, 31);
        for filter in [Interpolation::Bicubic, Interpolation::Bilinear] {
            for size in [16, 31, 53, 90] {
                let cfg = squash(size, filter);
                let out = resize_region(&img, (0, 0, 53, 31), (size, size), filter);
                assert_eq!(
                    to_tensor(out.as_raw(), &cfg),
                    preprocess(&img, &cfg),
                    "{filter:?} {size}"
                );
            }
        }
    }

    #[test]
    fn region_is_cropped_before_resizing() {
        let img = pattern(40, 30);
        let region = (7, 5, 21, 17);
        let cropped = image::imageops::crop_imm(&img, 7, 5, 21, 17).to_image();
        let cfg = squash(12, Interpolation::Bicubic);
        let out = resize_region(&img, region, (12, 12), Interpolation::Bicubic);
        assert_eq!(to_tensor(out.as_raw(), &cfg), preprocess(&cropped, &cfg));
        // A crop at the output size is copied unchanged.
        let same = resize_region(&img, region, (21, 17), Interpolation::Bicubic);
        assert_eq!(same, cropped);
        // Non-square outputs.
        let wide = resize_region(&img, region, (30, 8), Interpolation::Bilinear);
        assert_eq!(wide.dimensions(), (30, 8));
    }

    #[test]
    fn regions_are_clipped_and_empty_ones_are_black() {
        let img = pattern(10, 10);
        let clipped = resize_region(&img, (6, 6, 100, 100), (4, 4), Interpolation::Bicubic);
        let inside = resize_region(&img, (6, 6, 4, 4), (4, 4), Interpolation::Bicubic);
        assert_eq!(clipped, inside);
        let empty = resize_region(&img, (10, 0, 5, 5), (3, 2), Interpolation::Bicubic);
        assert_eq!(empty, RgbImage::new(3, 2));
        assert_eq!(
            resize_region(&img, (0, 0, 10, 10), (0, 5), Interpolation::Bicubic).dimensions(),
            (0, 5)
        );
    }
}
