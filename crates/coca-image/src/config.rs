//! Preprocessing settings, mirroring open_clip's `PreprocessCfg`.

use serde::{Deserialize, Deserializer};

use crate::limits::DecodeLimits;

/// open_clip's `OPENAI_DATASET_MEAN`, used by every CoCa checkpoint. The
/// Python doubles are rounded to f32 the way `torch.tensor(.., float32)`
/// does (via f64), which can differ from parsing the decimals as f32.
pub const OPENAI_MEAN: [f32; 3] = [
    0.481_454_66_f64 as f32,
    0.457_827_5_f64 as f32,
    0.408_210_73_f64 as f32,
];
/// open_clip's `OPENAI_DATASET_STD`, rounded like [`OPENAI_MEAN`].
pub const OPENAI_STD: [f32; 3] = [
    0.268_629_54_f64 as f32,
    0.261_302_58_f64 as f32,
    0.275_777_11_f64 as f32,
];

/// Resampling filter for the resize step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Interpolation {
    /// Pillow's bicubic (Keys, a = -0.5), antialiased when downscaling.
    /// open_clip's `"random"` (a training-only option) also maps here, as
    /// its eval transform does.
    #[default]
    #[serde(alias = "random")]
    Bicubic,
    /// Pillow's bilinear (triangle) filter, antialiased when downscaling.
    Bilinear,
}

/// How the image is brought to the square model input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResizeMode {
    /// Scale the shorter side to the input size (the longer side is
    /// truncated to an integer, like torchvision), then center-crop.
    #[default]
    Shortest,
    /// Scale the longer side to the input size (both sides rounded half to
    /// even, like open_clip's `ResizeKeepRatio`), then center-pad with black
    /// (open_clip's default `fill_color` 0).
    Longest,
    /// Scale both sides to the input size, ignoring the aspect ratio.
    Squash,
}

/// Eval-time preprocessing parameters. Deserializes from open_clip's
/// `preprocess_cfg` / pretrained-config keys (`size` or `image_size`,
/// `mean`, `std`, `interpolation`, `resize_mode`); missing keys take the
/// CoCa defaults and unknown keys (`mode`, `fill_color`, ...) are ignored.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct PreprocessConfig {
    /// Side of the square model input, in pixels.
    #[serde(alias = "size", deserialize_with = "square_size")]
    pub image_size: u32,
    /// Per-channel (RGB) mean subtracted after scaling to [0, 1].
    pub mean: [f32; 3],
    /// Per-channel (RGB) standard deviation divided by after the mean.
    pub std: [f32; 3],
    /// Resampling filter.
    pub interpolation: Interpolation,
    /// Resize strategy.
    pub resize_mode: ResizeMode,
    /// The decoding budget images are checked against before their pixels
    /// are allocated (not part of open_clip's config: it comes from the
    /// caller, e.g. coca's `--max-image-pixels`).
    #[serde(skip)]
    pub limits: DecodeLimits,
}

impl Default for PreprocessConfig {
    /// CoCa's settings: 224 px, OpenAI mean/std, bicubic, shortest side.
    fn default() -> Self {
        Self {
            image_size: 224,
            mean: OPENAI_MEAN,
            std: OPENAI_STD,
            interpolation: Interpolation::Bicubic,
            resize_mode: ResizeMode::Shortest,
            limits: DecodeLimits::default(),
        }
    }
}

impl PreprocessConfig {
    /// Number of `f32` values [`crate::preprocess`] returns: 3 × size².
    pub fn tensor_len(&self) -> usize {
        3 * self.image_size as usize * self.image_size as usize
    }
}

/// Accepts `224` or a square `[224, 224]` (open_clip allows either).
fn square_size<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        One(u32),
        Pair([u32; 2]),
    }
    let size = match Size::deserialize(deserializer)? {
        Size::One(s) => s,
        Size::Pair([h, w]) if h == w => h,
        Size::Pair([h, w]) => {
            return Err(serde::de::Error::custom(format!(
                "only square image sizes are supported, got [{h}, {w}]"
            )))
        }
    };
    if size == 0 {
        return Err(serde::de::Error::custom("image size must be positive"));
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_coca() {
        let cfg = PreprocessConfig::default();
        assert_eq!(cfg.image_size, 224);
        assert_eq!(cfg.interpolation, Interpolation::Bicubic);
        assert_eq!(cfg.resize_mode, ResizeMode::Shortest);
        assert_eq!(cfg.tensor_len(), 3 * 224 * 224);
        // Same f32 values torch gets from the Python doubles.
        assert_eq!(cfg.mean[0], 0.48145466f64 as f32);
        assert_eq!(cfg.std[2], 0.27577711f64 as f32);
    }

    #[test]
    fn reads_open_clip_preprocess_cfg() {
        let json = r#"{"size": [256, 256], "mode": "RGB", "mean": [0.5, 0.5, 0.5],
                       "std": [0.5, 0.5, 0.5], "interpolation": "bilinear",
                       "resize_mode": "squash", "fill_color": 0}"#;
        let cfg: PreprocessConfig = serde_json::from_str(json).unwrap();
        assert_eq!(cfg.image_size, 256);
        assert_eq!(cfg.mean, [0.5; 3]);
        assert_eq!(cfg.interpolation, Interpolation::Bilinear);
        assert_eq!(cfg.resize_mode, ResizeMode::Squash);

        let cfg: PreprocessConfig = serde_json::from_str(r#"{"image_size": 64}"#).unwrap();
        assert_eq!(
            cfg,
            PreprocessConfig {
                image_size: 64,
                ..Default::default()
            }
        );
        let cfg: PreprocessConfig = serde_json::from_str(r#"{"interpolation": "random"}"#).unwrap();
        assert_eq!(cfg.interpolation, Interpolation::Bicubic);
    }

    #[test]
    fn rejects_what_it_cannot_do() {
        for bad in [
            r#"{"size": [224, 256]}"#,
            r#"{"size": 0}"#,
            r#"{"interpolation": "lanczos"}"#,
            r#"{"resize_mode": "crop"}"#,
            r#"{"mean": [0.5, 0.5]}"#,
        ] {
            assert!(
                serde_json::from_str::<PreprocessConfig>(bad).is_err(),
                "{bad}"
            );
        }
    }
}
