//! open_clip's eval transform (`image_transform(size, is_train=False)`):
//! resize (mode-aware, like PIL), center crop or pad, convert to RGB,
//! `ToTensor` and `Normalize`.

use image::RgbImage;

use crate::config::PreprocessConfig;
use crate::decoded::{muldiv255, samples_to_rgb, DecodedImage, PilMode, Samples};
use crate::geometry::{crop_plan, place, resized_size};
use crate::resample::{resample_nearest, resample_u16, resample_u8, View, Window};

/// Runs the full eval transform on an RGB image: returns `3 × S × S` values
/// in CHW order (channel-major), normalised with the config's mean and std.
pub fn preprocess(img: &RgbImage, cfg: &PreprocessConfig) -> Vec<f32> {
    let (w, h) = img.dimensions();
    let src = View {
        data: img.as_raw().as_slice(),
        width: w as usize,
        height: h as usize,
        channels: 3,
    };
    let rgb = resize_crop_u8(src, PilMode::Rgb, &[0, 0, 0], cfg);
    to_tensor(&rgb, cfg)
}

/// Runs the full eval transform on a decoded image, resizing in its
/// original PIL mode as open_clip does (open_clip converts to RGB only
/// after the resize and crop).
pub fn preprocess_decoded(img: &DecodedImage, cfg: &PreprocessConfig) -> Vec<f32> {
    to_tensor(&resize_and_crop(img, cfg), cfg)
}

/// The resize + crop part of the transform, converted to RGB: the 8-bit
/// `S × S` image open_clip hands to `ToTensor`, as interleaved RGB bytes.
pub fn resize_and_crop(img: &DecodedImage, cfg: &PreprocessConfig) -> Vec<u8> {
    let (width, height) = (img.width() as usize, img.height() as usize);
    let mode = img.mode();
    match img.samples() {
        Samples::U8(data) => {
            let src = View {
                data,
                width,
                height,
                channels: mode.channels(),
            };
            resize_crop_u8(src, mode, &img.zero_fill(), cfg)
        }
        Samples::U16(data) => {
            let src = View {
                data,
                width,
                height,
                channels: 1,
            };
            let cropped = resize_crop(src, &[0], cfg, |src, win| {
                resample_u16(src, win, cfg.interpolation)
            });
            // PIL's "I;16" -> "RGB" clips at 255 rather than scaling.
            cropped
                .iter()
                .flat_map(|&v| [v.min(255) as u8; 3])
                .collect()
        }
    }
}

/// Resize + crop of 8-bit samples of `mode`, returned as RGB bytes.
fn resize_crop_u8(src: View<u8>, mode: PilMode, fill: &[u8], cfg: &PreprocessConfig) -> Vec<u8> {
    let cropped = resize_crop(src, fill, cfg, |src, win| match mode {
        // PIL's resize always uses nearest neighbour for these modes.
        PilMode::P | PilMode::Bilevel => resample_nearest(src, win, fill),
        PilMode::La | PilMode::Rgba => {
            let premultiplied = premultiply(src.data, src.channels);
            let view = View {
                data: &premultiplied,
                ..src
            };
            let mut out = resample_u8(view, win, cfg.interpolation);
            unpremultiply(&mut out, src.channels);
            out
        }
        _ => resample_u8(src, win, cfg.interpolation),
    });
    samples_to_rgb(mode, &cropped)
}

/// Resizes (through `resize`, which computes only the requested window of
/// the resized image) and center-crops / pads to `size` × `size`, keeping
/// the storage mode. An empty image or size yields only `fill`.
fn resize_crop<T: Copy>(
    src: View<T>,
    fill: &[T],
    cfg: &PreprocessConfig,
    resize: impl FnOnce(View<T>, &Window) -> Vec<T>,
) -> Vec<T> {
    let size = cfg.image_size;
    let (w, h) = (src.width as u32, src.height as u32);
    if w == 0 || h == 0 || size == 0 {
        let n = size as usize * size as usize;
        return fill.iter().copied().cycle().take(n * fill.len()).collect();
    }
    let (tw, th) = resized_size(w, h, size, cfg.resize_mode);
    let plan = crop_plan(tw, th, size);
    let kept = if (tw, th) == (w, h) {
        // torchvision returns the image untouched when the size matches
        // (so RGBA images skip the premultiplication round trip too).
        select(src, &plan.window)
    } else {
        resize(src, &plan.window)
    };
    place(&kept, &plan, fill, size)
}

/// Copies the window's samples out of an image that is not resized.
fn select<T: Copy>(src: View<T>, win: &Window) -> Vec<T> {
    let ch = src.channels;
    let mut out = Vec::with_capacity(win.x.len() * win.y.len() * ch);
    for y in win.y.clone() {
        let row = &src.data[(y * src.width + win.x.start) * ch..(y * src.width + win.x.end) * ch];
        out.extend_from_slice(row);
    }
    out
}

/// PIL resizes "RGBA" / "LA" through premultiplied "RGBa" / "La"
/// (`rgbA2rgba`): each colour sample becomes `MULDIV255(c, alpha)`.
fn premultiply(data: &[u8], channels: usize) -> Vec<u8> {
    let mut out = data.to_vec();
    for px in out.chunks_exact_mut(channels) {
        if let Some((&mut alpha, colour)) = px.split_last_mut() {
            for c in colour {
                *c = muldiv255(u32::from(*c), u32::from(alpha)) as u8;
            }
        }
    }
    out
}

/// Undoes [`premultiply`] as PIL's `rgba2rgbA` does: integer division by
/// alpha with clipping, leaving samples with alpha 0 or 255 unchanged.
fn unpremultiply(data: &mut [u8], channels: usize) {
    for px in data.chunks_exact_mut(channels) {
        let Some((&mut alpha, colour)) = px.split_last_mut() else {
            continue;
        };
        if alpha == 0 || alpha == 255 {
            continue;
        }
        for c in colour {
            *c = (255 * u32::from(*c) / u32::from(alpha)).min(255) as u8;
        }
    }
}

/// `ToTensor` + `Normalize`: HWC bytes -> CHW floats, computed in f32 with
/// the same operations as torch ((x / 255 - mean) / std, true division).
pub fn to_tensor(rgb: &[u8], cfg: &PreprocessConfig) -> Vec<f32> {
    let plane = rgb.len() / 3;
    let mut out = vec![0.0f32; rgb.len()];
    for (i, px) in rgb.chunks_exact(3).enumerate() {
        for c in 0..3 {
            out[c * plane + i] = (f32::from(px[c]) / 255.0 - cfg.mean[c]) / cfg.std[c];
        }
    }
    out
}
