//! Output-size arithmetic of the resize step and the center crop / pad,
//! with the exact rounding torchvision and open_clip use.

use crate::config::ResizeMode;
use crate::resample::Window;

/// Size (width, height) the image is resized to before cropping.
///
/// - `Shortest`: torchvision `Resize(size)`: the short side becomes `size`,
///   the long side `int(size * long / short)` (float division, truncated).
/// - `Longest`: open_clip `ResizeKeepRatio(size, longest=1)`: both sides are
///   divided by `max(h / size, w / size)` and rounded half to even (Python's
///   `round`). open_clip fails on a side that rounds to 0; here it becomes 1.
/// - `Squash`: `size` × `size`.
pub(crate) fn resized_size(width: u32, height: u32, size: u32, mode: ResizeMode) -> (u32, u32) {
    match mode {
        ResizeMode::Shortest => {
            let (short, long) = if width <= height {
                (width, height)
            } else {
                (height, width)
            };
            // size * long is exact in f64 (< 2^53); one rounded division
            // matches Python's int / int.
            let new_long = ((u64::from(size) * u64::from(long)) as f64 / f64::from(short)) as u32;
            if width <= height {
                (size, new_long)
            } else {
                (new_long, size)
            }
        }
        ResizeMode::Longest => {
            let ratio =
                (f64::from(height) / f64::from(size)).max(f64::from(width) / f64::from(size));
            let side = |x: u32| ((f64::from(x) / ratio).round_ties_even() as u32).max(1);
            (side(width), side(height))
        }
        ResizeMode::Squash => (size, size),
    }
}

/// Where the `size` × `size` window starts along one axis of length `len`
/// after padding, and how much padding goes before the image.
///
/// torchvision / open_clip pad `(size - len) // 2` before (and the rest
/// after) when the image is too small, then crop at
/// `int(round((len - size) / 2.0))` — Python's round, halves to even.
fn axis_window(len: u32, size: u32) -> (u32, u32) {
    if len <= size {
        ((size - len) / 2, 0)
    } else {
        let offset = (f64::from(len - size) / 2.0).round_ties_even() as u32;
        (0, offset)
    }
}

/// Which part of the resized image survives the center crop, and where it
/// lands in the `size` × `size` output (the rest is padding).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CropPlan {
    /// Kept part of the resized `out_width` × `out_height` image.
    pub window: Window,
    /// Top-left corner of the kept part in the output.
    pub dst_x: usize,
    pub dst_y: usize,
}

/// Plans torchvision's `CenterCrop` / open_clip's `CenterCropOrPad` of a
/// `width` × `height` image to `size` × `size`.
pub(crate) fn crop_plan(width: u32, height: u32, size: u32) -> CropPlan {
    let (pad_x, off_x) = axis_window(width, size);
    let (pad_y, off_y) = axis_window(height, size);
    let (off_x, off_y) = (off_x as usize, off_y as usize);
    CropPlan {
        window: Window {
            out_width: width as usize,
            out_height: height as usize,
            x: off_x..off_x + width.min(size) as usize,
            y: off_y..off_y + height.min(size) as usize,
        },
        dst_x: pad_x as usize,
        dst_y: pad_y as usize,
    }
}

/// Builds the `size` × `size` output: `kept` (the plan's window, interleaved
/// with `fill.len()` channels) placed at the plan's offset over `fill`.
pub(crate) fn place<T: Copy>(kept: &[T], plan: &CropPlan, fill: &[T], size: u32) -> Vec<T> {
    let ch = fill.len();
    let s = size as usize;
    let (kw, kh) = (plan.window.x.len(), plan.window.y.len());
    if kw == s && kh == s {
        return kept.to_vec();
    }
    let mut out: Vec<T> = fill.iter().copied().cycle().take(s * s * ch).collect();
    for (y, row) in kept.chunks_exact(kw * ch).take(kh).enumerate() {
        let start = ((plan.dst_y + y) * s + plan.dst_x) * ch;
        out[start..start + kw * ch].copy_from_slice(row);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shortest_side_truncates_long_side() {
        assert_eq!(
            resized_size(640, 427, 224, ResizeMode::Shortest),
            (335, 224)
        );
        assert_eq!(
            resized_size(427, 640, 224, ResizeMode::Shortest),
            (224, 335)
        );
        assert_eq!(
            resized_size(224, 224, 224, ResizeMode::Shortest),
            (224, 224)
        );
        assert_eq!(resized_size(1, 1, 224, ResizeMode::Shortest), (224, 224));
        assert_eq!(
            resized_size(1000, 20, 224, ResizeMode::Shortest),
            (11200, 224)
        );
    }

    #[test]
    fn longest_side_rounds_half_to_even() {
        assert_eq!(resized_size(640, 427, 224, ResizeMode::Longest), (224, 149));
        // 5 x 2 -> scale 2: 2 / 2.5 = 0.8 -> 1; 3 x 1 at size 6 -> 1 * 2 = 2.
        assert_eq!(resized_size(5, 2, 2, ResizeMode::Longest), (2, 1));
        // 4 x 1 at size 2: 1 / 2 = 0.5 rounds to 0 in Python; clamped to 1.
        assert_eq!(resized_size(4, 1, 2, ResizeMode::Longest), (2, 1));
        // 6 x 5 at size 4: 5 / 1.5 = 3.33 -> 3.
        assert_eq!(resized_size(6, 5, 4, ResizeMode::Longest), (4, 3));
    }

    #[test]
    fn crop_offsets_round_half_to_even() {
        assert_eq!(axis_window(225, 224), (0, 0)); // 0.5 -> 0
        assert_eq!(axis_window(227, 224), (0, 2)); // 1.5 -> 2
        assert_eq!(axis_window(229, 224), (0, 2)); // 2.5 -> 2
        assert_eq!(axis_window(221, 224), (1, 0)); // pad 3: 1 before, 2 after
    }

    #[test]
    fn crop_and_pad_place_pixels() {
        // 3 x 1 image padded to 4 x 4: (4 - 3) // 2 = 0 columns before,
        // (4 - 1) // 2 = 1 row above; the remainder goes after.
        let plan = crop_plan(3, 1, 4);
        assert_eq!((plan.window.x.clone(), plan.window.y.clone()), (0..3, 0..1));
        let out = place(&[1u8, 2, 3], &plan, &[9], 4);
        #[rustfmt::skip]
        assert_eq!(out, vec![
            9, 9, 9, 9,
            1, 2, 3, 9,
            9, 9, 9, 9,
            9, 9, 9, 9,
        ]);
        // 7 x 2 at size 4: crop columns (7 - 4) / 2 = 1.5 -> 2, pad one row.
        let plan = crop_plan(7, 2, 4);
        assert_eq!(plan.window.x, 2..6);
        assert_eq!((plan.dst_x, plan.dst_y), (0, 1));
    }
}
