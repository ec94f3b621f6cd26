//! Which parameters train, and which of those get weight decay.

use coca_model::CocaConfig;
use serde::{Deserialize, Serialize};

/// open_clip's weight-decay exclusion: no decay on tensors with fewer than two dimensions, on anything whose
/// name contains `bn`, `ln` or `bias`, and on `logit_scale`.
pub fn excluded_from_decay(name: &str, shape: &[usize]) -> bool {
    shape.len() < 2
        || name.contains("bn")
        || name.contains("ln")
        || name.contains("bias")
        || name.contains("logit_scale")
}

/// Frozen parts of the model (`--lock-image`, `--lock-text`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Locks {
    /// Freeze the image tower (`visual.*`).
    pub image: bool,
    /// Trailing groups of the image tower left trainable when it is locked.
    pub image_unlocked_groups: usize,
    /// Freeze the unimodal text tower (`text.*`; the multimodal decoder stays trainable).
    pub text: bool,
    /// Trailing groups of the text tower left trainable when it is locked.
    pub text_unlocked_layers: usize,
}

/// The lock group of an image-tower parameter, counted from the front: the stem (patch embedding, class and
/// position embeddings, `ln_pre`) is 0, block `i` is `i + 1`, and the head — attentional poolers, `ln_post`
/// and `proj` — is last.
///
/// open_clip 3.3.0's CoCa has no `lock_image_tower`; this follows its `VisionTransformer.lock` grouping, except
/// that the poolers, which that method never unlocks, join `ln_post` and `proj` in the head group, so
/// `--lock-image --lock-image-unlocked-groups 1` trains exactly the parts that turn tokens into CoCa's outputs.
pub fn image_group(cfg: &CocaConfig, name: &str) -> usize {
    let layers = cfg.vision_cfg.layers;
    if let Some(block) = block_index(name, "visual.transformer.resblocks.") {
        return block + 1;
    }
    let stem = ["conv1", "class_embedding", "positional_embedding", "ln_pre"];
    if stem
        .iter()
        .any(|s| name.starts_with(&format!("visual.{s}")))
    {
        0
    } else {
        layers + 1
    }
}

/// The lock group of a text-tower parameter, as open_clip's `lock_text_tower`: embeddings (token, position,
/// CLS) are 0, block `i` is `i + 1` with `ln_final` joining the last block, `text_projection` is last.
fn text_group(cfg: &CocaConfig, name: &str) -> usize {
    let layers = cfg.text_cfg.layers;
    if let Some(block) = block_index(name, "text.transformer.resblocks.") {
        return block + 1;
    }
    if name.starts_with("text.ln_final") {
        layers
    } else if name.starts_with("text.text_projection") {
        layers + 1
    } else {
        0
    }
}

fn block_index(name: &str, prefix: &str) -> Option<usize> {
    name.strip_prefix(prefix)?.split('.').next()?.parse().ok()
}

impl Locks {
    /// Whether `name` is updated by the optimiser. Fixed sine-cosine position embeddings never are (open_clip
    /// makes them a parameter with `requires_grad=False`).
    pub fn trainable(&self, cfg: &CocaConfig, name: &str) -> bool {
        if name == "visual.positional_embedding" && cfg.vision_cfg.fixed_positions() {
            return false;
        }
        if self.image && name.starts_with("visual.") {
            let groups = cfg.vision_cfg.layers + 2;
            return image_group(cfg, name) + self.image_unlocked_groups >= groups;
        }
        if self.text && name.starts_with("text.") {
            let groups = cfg.text_cfg.layers + 2;
            return text_group(cfg, name) + self.text_unlocked_layers >= groups;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> CocaConfig {
        CocaConfig::builtin("coca_ViT-B-32").unwrap()
    }

    #[test]
    fn decay_follows_open_clip_rule() {
        assert!(excluded_from_decay("logit_scale", &[]));
        assert!(excluded_from_decay("visual.ln_pre.weight", &[768]));
        assert!(excluded_from_decay("visual.class_embedding", &[768]));
        assert!(excluded_from_decay(
            "text.transformer.resblocks.0.attn.in_proj_bias",
            &[1536]
        ));
        assert!(!excluded_from_decay(
            "text.token_embedding.weight",
            &[49408, 512]
        ));
        assert!(!excluded_from_decay(
            "visual.positional_embedding",
            &[50, 768]
        ));
        assert!(!excluded_from_decay("visual.attn_pool.query", &[256, 512]));
    }

    #[test]
    fn locked_image_tower_keeps_trailing_groups() {
        let cfg = cfg();
        let none = Locks {
            image: true,
            ..Default::default()
        };
        assert!(!none.trainable(&cfg, "visual.proj"));
        assert!(!none.trainable(&cfg, "visual.attn_pool.query"));
        assert!(none.trainable(&cfg, "text.token_embedding.weight"));
        assert!(none.trainable(&cfg, "logit_scale"));
        let head = Locks {
            image_unlocked_groups: 1,
            ..none
        };
        assert!(head.trainable(&cfg, "visual.proj"));
        assert!(head.trainable(&cfg, "visual.attn_pool.attn.in_proj_weight"));
        assert!(head.trainable(&cfg, "visual.ln_post.bias"));
        assert!(!head.trainable(&cfg, "visual.transformer.resblocks.11.mlp.c_fc.weight"));
        let two = Locks {
            image_unlocked_groups: 2,
            ..none
        };
        assert!(two.trainable(&cfg, "visual.transformer.resblocks.11.mlp.c_fc.weight"));
        assert!(!two.trainable(&cfg, "visual.transformer.resblocks.10.mlp.c_fc.weight"));
        let all = Locks {
            image_unlocked_groups: 100,
            ..none
        };
        assert!(all.trainable(&cfg, "visual.conv1.weight"));
    }

    #[test]
    fn locked_text_tower_matches_open_clip_groups() {
        let cfg = cfg();
        let one = Locks {
            text: true,
            text_unlocked_layers: 1,
            ..Default::default()
        };
        assert!(one.trainable(&cfg, "text.text_projection"));
        assert!(!one.trainable(&cfg, "text.ln_final.weight"));
        assert!(one.trainable(&cfg, "text_decoder.text_projection"));
        let two = Locks {
            text_unlocked_layers: 2,
            ..one
        };
        assert!(two.trainable(&cfg, "text.ln_final.weight"));
        assert!(two.trainable(&cfg, "text.transformer.resblocks.11.attn.in_proj_weight"));
        assert!(!two.trainable(&cfg, "text.transformer.resblocks.10.attn.in_proj_weight"));
        assert!(!two.trainable(&cfg, "text.cls_emb"));
    }
}
