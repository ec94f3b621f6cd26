//! open_clip's table of pretrained CoCa weights (`open_clip/pretrained.py`
//! in open_clip 3.3.0: `_coca_VITB32`, `_coca_VITL14`), and its tag rules.

use coca_image::{Interpolation, PreprocessConfig, ResizeMode, OPENAI_MEAN, OPENAI_STD};

use crate::error::HubError;

/// open_clip's `HF_WEIGHTS_NAME`: the file an `hf_hub` entry ending in `/`
/// refers to.
pub const HF_WEIGHTS_NAME: &str = "open_clip_pytorch_model.bin";
/// open_clip's `HF_SAFE_WEIGHTS_NAME`, tried before [`HF_WEIGHTS_NAME`].
pub const HF_SAFE_WEIGHTS_NAME: &str = "open_clip_model.safetensors";

/// One pretrained checkpoint: where it lives and how its images were
/// preprocessed in training.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pretrained {
    /// open_clip model name, e.g. `coca_ViT-B-32`.
    pub model: &'static str,
    /// Normalised tag, e.g. `laion2b_s13b_b90k`.
    pub tag: &'static str,
    /// Hugging Face hub repository.
    pub repo_id: &'static str,
    /// File in the repository that open_clip names.
    pub filename: &'static str,
    /// Per-channel normalisation mean.
    pub mean: [f32; 3],
    /// Per-channel normalisation std.
    pub std: [f32; 3],
    /// Resize filter.
    pub interpolation: Interpolation,
    /// Resize strategy.
    pub resize_mode: ResizeMode,
}

impl Pretrained {
    /// The files to look for, in open_clip's order: the safetensors
    /// alternative first (`_get_safe_alternatives`), then the named file.
    pub fn candidate_files(&self) -> Vec<String> {
        let mut files: Vec<String> = safetensors_alternative(self.filename).into_iter().collect();
        files.push(self.filename.to_string());
        files
    }

    /// The eval preprocessing this checkpoint expects at `image_size`
    /// pixels (the size comes from the model config, not the tag).
    pub fn preprocess_config(&self, image_size: u32) -> PreprocessConfig {
        PreprocessConfig {
            image_size,
            mean: self.mean,
            std: self.std,
            interpolation: self.interpolation,
            resize_mode: self.resize_mode,
            ..PreprocessConfig::default()
        }
    }
}

/// open_clip's `_pcfg` defaults (OpenAI mean/std, bicubic, shortest side),
/// which every CoCa entry uses unchanged.
const fn openai_cfg(model: &'static str, tag: &'static str, repo_id: &'static str) -> Pretrained {
    Pretrained {
        model,
        tag,
        repo_id,
        filename: HF_WEIGHTS_NAME,
        mean: OPENAI_MEAN,
        std: OPENAI_STD,
        interpolation: Interpolation::Bicubic,
        resize_mode: ResizeMode::Shortest,
    }
}

const PRETRAINED: &[Pretrained] = &[
    openai_cfg(
        "coca_ViT-B-32",
        "laion2b_s13b_b90k",
        "laion/CoCa-ViT-B-32-laion2B-s13B-b90k",
    ),
    openai_cfg(
        "coca_ViT-B-32",
        "mscoco_finetuned_laion2b_s13b_b90k",
        "laion/mscoco_finetuned_CoCa-ViT-B-32-laion2B-s13B-b90k",
    ),
    openai_cfg(
        "coca_ViT-L-14",
        "laion2b_s13b_b90k",
        "laion/CoCa-ViT-L-14-laion2B-s13B-b90k",
    ),
    openai_cfg(
        "coca_ViT-L-14",
        "mscoco_finetuned_laion2b_s13b_b90k",
        "laion/mscoco_finetuned_CoCa-ViT-L-14-laion2B-s13B-b90k",
    ),
];

/// Every known (model, tag) pair, in open_clip's order.
pub fn list_pretrained() -> &'static [Pretrained] {
    PRETRAINED
}

/// open_clip's `_clean_tag`: lower case, `-` → `_`.
pub fn normalize_tag(tag: &str) -> String {
    tag.to_lowercase().replace('-', "_")
}

/// Tags of `model` (exact, case-sensitive model name, as in open_clip).
pub fn tags_for_model(model: &str) -> Vec<&'static str> {
    PRETRAINED
        .iter()
        .filter(|p| p.model == model)
        .map(|p| p.tag)
        .collect()
}

/// Models that have `tag` (normalised first).
pub fn models_for_tag(tag: &str) -> Vec<&'static str> {
    let tag = normalize_tag(tag);
    PRETRAINED
        .iter()
        .filter(|p| p.tag == tag)
        .map(|p| p.model)
        .collect()
}

/// Whether `tag` names weights of any model; lets callers tell a mistyped
/// path from a tag.
pub fn is_known_tag(tag: &str) -> bool {
    !models_for_tag(tag).is_empty()
}

/// Find the entry for `model` and `tag`, with a message listing the
/// alternatives when there is none.
pub fn lookup(model: &str, tag: &str) -> Result<&'static Pretrained, HubError> {
    let clean = normalize_tag(tag);
    if let Some(p) = PRETRAINED
        .iter()
        .find(|p| p.model == model && p.tag == clean)
    {
        return Ok(p);
    }
    let known = tags_for_model(model);
    let models = models_for_tag(&clean);
    if !known.is_empty() || models.is_empty() {
        Err(HubError::UnknownTag {
            model: model.to_string(),
            tag: tag.to_string(),
            known: known.into_iter().map(String::from).collect(),
        })
    } else {
        Err(HubError::TagForOtherModel {
            model: model.to_string(),
            tag: tag.to_string(),
            models: models.into_iter().map(String::from).collect(),
        })
    }
}

/// open_clip's `_get_safe_alternatives`: `open_clip_pytorch_model.bin` →
/// `open_clip_model.safetensors`, other `*.bin` / `*.pth` → `*.safetensors`.
fn safetensors_alternative(filename: &str) -> Option<String> {
    if filename == HF_WEIGHTS_NAME {
        return Some(HF_SAFE_WEIGHTS_NAME.to_string());
    }
    filename
        .strip_suffix(".bin")
        .or_else(|| filename.strip_suffix(".pth"))
        .map(|stem| format!("{stem}.safetensors"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation_matches_open_clip() {
        assert_eq!(
            normalize_tag("mscoco_finetuned_laion2B-s13B-b90k"),
            "mscoco_finetuned_laion2b_s13b_b90k"
        );
        let p = lookup("coca_ViT-L-14", "LAION2B-S13B-B90K").unwrap();
        assert_eq!(p.repo_id, "laion/CoCa-ViT-L-14-laion2B-s13B-b90k");
    }

    #[test]
    fn candidates_try_safetensors_first() {
        let p = lookup("coca_ViT-B-32", "laion2b_s13b_b90k").unwrap();
        assert_eq!(
            p.candidate_files(),
            ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
        );
        assert_eq!(
            safetensors_alternative("weights.pth").as_deref(),
            Some("weights.safetensors")
        );
        assert_eq!(safetensors_alternative("weights.pt"), None);
    }

    #[test]
    fn bad_tag_lists_the_model_tags() {
        let msg = lookup("coca_ViT-B-32", "openai").unwrap_err().to_string();
        assert!(msg.contains("`openai`"), "{msg}");
        assert!(
            msg.contains("laion2b_s13b_b90k, mscoco_finetuned_laion2b_s13b_b90k"),
            "{msg}"
        );
    }

    #[test]
    fn tag_of_other_model_names_them() {
        let err = lookup("coca_base", "laion2b_s13b_b90k").unwrap_err();
        assert!(matches!(err, HubError::TagForOtherModel { .. }));
        let msg = err.to_string();
        assert!(msg.contains("coca_ViT-B-32, coca_ViT-L-14"), "{msg}");
    }

    #[test]
    fn preprocessing_is_openai_bicubic_shortest() {
        let p = lookup("coca_ViT-L-14", "mscoco_finetuned_laion2b_s13b_b90k").unwrap();
        assert_eq!(p.preprocess_config(224), PreprocessConfig::default());
    }
}
