//! Initial values for training from scratch, following open_clip's initialisation tensor by tensor.
//!
//! open_clip initialises each tower differently: the text tower with its own scaled normals, the vision tower
//! with PyTorch's module defaults (its `init_parameters` is a no-op), attention pooler queries with a unit
//! normal. Two places are left as open_clip *intends* rather than as it *does*: the multimodal decoder's
//! `init_parameters` is never called in open_clip 3.3.0 (it references a missing attribute), which leaves its
//! LM head `torch.empty` (arbitrary memory); coca applies that method's scaled normals to the decoder blocks
//! and the LM head, so a from-scratch run never starts from garbage.

use candle_core::{Device, Result, Tensor};
use coca_model::weights::ParameterSpec;
use coca_model::CocaConfig;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal, Uniform};

/// How one tensor is drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum InitRule {
    /// Every element equal to the value (LayerNorm gains, biases, the temperature).
    Constant(f64),
    /// Normal with mean 0 and this standard deviation.
    Normal(f64),
    /// Uniform on `[-bound, bound]` (PyTorch's Linear/Conv default and Xavier-uniform).
    Uniform(f64),
    /// The fixed 2-D sine-cosine table of `pos_embed_type: "sin_cos_2d"` for a `(1 + grid², width)` shape.
    SinCos2d,
}

/// Standard deviations of open_clip's scaled-normal scheme for a transformer of `width` × `layers`.
struct Scaled {
    attn: f64,
    proj: f64,
    fc: f64,
    head: f64,
}

impl Scaled {
    fn new(width: usize, layers: usize) -> Self {
        let w = width as f64;
        Self {
            attn: w.powf(-0.5),
            proj: w.powf(-0.5) * (2.0 * layers.max(1) as f64).powf(-0.5),
            fc: (2.0 * w).powf(-0.5),
            head: w.powf(-0.5),
        }
    }
}

/// PyTorch's default for Linear/Conv weights and biases (Kaiming-uniform with a = √5): `1/√fan_in`.
fn torch_default(fan_in: usize) -> InitRule {
    InitRule::Uniform(1.0 / (fan_in.max(1) as f64).sqrt())
}

/// Xavier-uniform for a `(fan_out, fan_in)` matrix, as PyTorch's MultiheadAttention projections.
fn xavier(shape: &[usize]) -> InitRule {
    let (out, inp) = (shape[0] as f64, shape.get(1).copied().unwrap_or(1) as f64);
    InitRule::Uniform((6.0 / (out + inp)).sqrt())
}

/// Fan-in of a weight: every dimension but the first.
fn fan_in(shape: &[usize]) -> usize {
    shape.iter().skip(1).product::<usize>().max(1)
}

/// The rule for one parameter of a CoCa model, by its open_clip name; `None` for a name this function does not
/// know (so a new parameter can never silently start from an arbitrary value).
pub fn init_rule(cfg: &CocaConfig, name: &str, shape: &[usize]) -> Option<InitRule> {
    let parts: Vec<&str> = name.split('.').collect();
    let leaf = *parts.last()?;
    let module = parts.len().checked_sub(2).map(|i| parts[i]).unwrap_or("");
    if name == "logit_scale" {
        return Some(InitRule::Constant((1.0f64 / 0.07).ln()));
    }
    if module.starts_with("ln") {
        return Some(InitRule::Constant(if leaf == "weight" { 1.0 } else { 0.0 }));
    }
    // Scaled normals of the text tower (applied by open_clip) and of the decoder (intended by open_clip).
    let scaled = match parts[0] {
        "text" => Some(Scaled::new(cfg.text_cfg.width, cfg.text_cfg.layers)),
        "text_decoder" => Some(Scaled::new(
            cfg.multimodal_cfg.width,
            cfg.multimodal_cfg.layers,
        )),
        _ => None,
    };
    match (parts[0], leaf) {
        ("text", "weight") if module == "token_embedding" => return Some(InitRule::Normal(0.02)),
        ("text", "positional_embedding") | ("text", "cls_emb") => {
            return Some(InitRule::Normal(0.01))
        }
        ("text" | "text_decoder", "text_projection") => {
            return Some(InitRule::Normal(scaled.as_ref()?.head))
        }
        ("visual", "positional_embedding") if cfg.vision_cfg.fixed_positions() => {
            return Some(InitRule::SinCos2d)
        }
        ("visual", "class_embedding" | "positional_embedding" | "proj") => {
            return Some(InitRule::Normal((cfg.vision_cfg.width as f64).powf(-0.5)))
        }
        ("visual", "weight") if module == "conv1" => return Some(torch_default(fan_in(shape))),
        _ => {}
    }
    if leaf == "query" {
        return Some(InitRule::Normal(1.0));
    }
    if leaf == "in_proj_bias" || (module == "out_proj" && leaf == "bias") {
        return Some(InitRule::Constant(0.0));
    }
    if let Some(s) = &scaled {
        match (module, leaf) {
            (_, "in_proj_weight") => return Some(InitRule::Normal(s.attn)),
            ("out_proj" | "c_proj", "weight") => return Some(InitRule::Normal(s.proj)),
            ("c_fc", "weight") => return Some(InitRule::Normal(s.fc)),
            _ => {}
        }
    }
    match leaf {
        "in_proj_weight" | "q_proj_weight" | "k_proj_weight" | "v_proj_weight" => {
            Some(xavier(shape))
        }
        "weight" => Some(torch_default(fan_in(shape))),
        // A Linear's bias shares its weight's fan-in, which is not in the bias's own shape.
        "bias" => {
            let in_features = match module {
                "c_fc" => mlp_or_attn_width(cfg, parts[0]),
                "c_proj" => {
                    (mlp_or_attn_width(cfg, parts[0]) as f64 * mlp_ratio(cfg, parts[0])) as usize
                }
                _ => return None,
            };
            Some(torch_default(in_features))
        }
        _ => None,
    }
}

fn mlp_or_attn_width(cfg: &CocaConfig, tower: &str) -> usize {
    match tower {
        "visual" => cfg.vision_cfg.width,
        "text" => cfg.text_cfg.width,
        _ => cfg.multimodal_cfg.width,
    }
}

fn mlp_ratio(cfg: &CocaConfig, tower: &str) -> f64 {
    match tower {
        "visual" => cfg.vision_cfg.mlp_ratio,
        "text" => cfg.text_cfg.mlp_ratio,
        _ => cfg.multimodal_cfg.mlp_ratio,
    }
}

/// Draw every parameter of `specs` (from `coca_model::weights::parameter_specs`) with a seeded generator.
/// Each tensor gets its own stream derived from the seed and its name, so adding a parameter does not change
/// the others. Errors name a parameter the scheme does not cover.
pub fn initial_parameters(
    cfg: &CocaConfig,
    specs: &[ParameterSpec],
    seed: u64,
) -> std::result::Result<Vec<(String, Tensor)>, String> {
    specs
        .iter()
        .map(|(name, shape)| {
            let rule = init_rule(cfg, name, shape)
                .ok_or_else(|| format!("no initialisation rule for parameter `{name}`"))?;
            let tensor = draw(rule, shape, seed ^ name_hash(name)).map_err(|e| e.to_string())?;
            Ok((name.clone(), tensor))
        })
        .collect()
}

/// FNV-1a: a stable per-name stream id.
fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// One tensor drawn by `rule`.
pub fn draw(rule: InitRule, shape: &[usize], seed: u64) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let values: Vec<f32> = match rule {
        InitRule::Constant(v) => vec![v as f32; n],
        InitRule::Normal(std) => {
            let normal =
                Normal::new(0.0f64, std).map_err(|e| candle_core::Error::Msg(e.to_string()))?;
            (0..n).map(|_| normal.sample(&mut rng) as f32).collect()
        }
        InitRule::Uniform(bound) => {
            let uniform = Uniform::new_inclusive(-bound, bound)
                .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
            (0..n).map(|_| rng.sample(uniform) as f32).collect()
        }
        InitRule::SinCos2d => {
            let (rows, width) = match shape {
                [rows, width] => (*rows, *width),
                _ => candle_core::bail!("sin-cos position table: expected 2 dims, got {shape:?}"),
            };
            let grid = ((rows.saturating_sub(1)) as f64).sqrt().round() as usize;
            if grid * grid + 1 != rows || !width.is_multiple_of(4) {
                candle_core::bail!(
                    "sin-cos position table: shape {shape:?} is not (1 + grid², 4k)"
                );
            }
            coca_model::vision::sincos_2d_positional_embedding(width, grid)
        }
    };
    Tensor::from_vec(values, shape, &Device::Cpu)
}

#[cfg(test)]
mod tests {
    use super::*;
    use coca_model::weights::parameter_specs;

    #[test]
    fn every_parameter_of_the_builtin_models_has_a_rule() {
        for name in coca_model::config::builtin_model_names() {
            let cfg = CocaConfig::builtin(name).unwrap();
            for (param, shape) in parameter_specs(&cfg).unwrap() {
                assert!(init_rule(&cfg, &param, &shape).is_some(), "{name}: {param}");
            }
        }
    }

    #[test]
    fn rules_follow_open_clip() {
        let cfg = CocaConfig::builtin("coca_ViT-B-32").unwrap();
        let rule = |n: &str, s: &[usize]| init_rule(&cfg, n, s).unwrap();
        assert_eq!(
            rule("logit_scale", &[]),
            InitRule::Constant((1.0f64 / 0.07).ln())
        );
        assert_eq!(
            rule("text.token_embedding.weight", &[49408, 512]),
            InitRule::Normal(0.02)
        );
        assert_eq!(
            rule("visual.ln_post.weight", &[768]),
            InitRule::Constant(1.0)
        );
        assert_eq!(rule("visual.ln_post.bias", &[768]), InitRule::Constant(0.0));
        assert_eq!(
            rule("visual.attn_pool.query", &[256, 512]),
            InitRule::Normal(1.0)
        );
        // Text tower: attn_std = 512^-0.5, proj_std = 512^-0.5 * (2*12)^-0.5.
        let t = "text.transformer.resblocks.3.";
        assert_eq!(
            rule(&format!("{t}attn.in_proj_weight"), &[1536, 512]),
            InitRule::Normal(512f64.powf(-0.5))
        );
        let proj = 512f64.powf(-0.5) * 24f64.powf(-0.5);
        assert_eq!(
            rule(&format!("{t}mlp.c_proj.weight"), &[512, 2048]),
            InitRule::Normal(proj)
        );
        // Vision blocks keep PyTorch's module defaults.
        let v = "visual.transformer.resblocks.0.";
        assert_eq!(
            rule(&format!("{v}attn.in_proj_weight"), &[2304, 768]),
            InitRule::Uniform((6.0f64 / (2304.0 + 768.0)).sqrt())
        );
        assert_eq!(
            rule(&format!("{v}mlp.c_fc.bias"), &[3072]),
            InitRule::Uniform(1.0 / 768f64.sqrt())
        );
        assert_eq!(
            rule(&format!("{v}mlp.c_proj.bias"), &[768]),
            InitRule::Uniform(1.0 / 3072f64.sqrt())
        );
        assert_eq!(
            rule(&format!("{v}attn.out_proj.bias"), &[768]),
            InitRule::Constant(0.0)
        );
        // The decoder's LM head gets the scaled normal open_clip intends.
        assert_eq!(
            rule("text_decoder.text_projection", &[512, 49408]),
            InitRule::Normal(512f64.powf(-0.5))
        );
        assert!(init_rule(&cfg, "visual.something_new", &[3]).is_none());
    }

    #[test]
    fn sin_cos_positions_are_the_fixed_table_and_never_trained() {
        let mut cfg = CocaConfig::builtin("coca_ViT-B-32").unwrap();
        cfg.vision_cfg.pos_embed_type = "sin_cos_2d".into();
        let shape = [50, 768];
        let rule = init_rule(&cfg, "visual.positional_embedding", &shape).unwrap();
        assert_eq!(rule, InitRule::SinCos2d);
        let table = draw(rule, &shape, 1).unwrap();
        let want = coca_model::vision::sincos_2d_positional_embedding(768, 7);
        assert_eq!(table.flatten_all().unwrap().to_vec1::<f32>().unwrap(), want);
        assert!(draw(InitRule::SinCos2d, &[51, 768], 1).is_err());
        let locks = crate::params::Locks::default();
        assert!(!locks.trainable(&cfg, "visual.positional_embedding"));
        assert!(locks.trainable(&cfg, "visual.class_embedding"));
        cfg.vision_cfg.pos_embed_type = "learnable".into();
        assert!(locks.trainable(&cfg, "visual.positional_embedding"));
    }

    #[test]
    fn draws_are_seeded_and_have_the_requested_spread() {
        let a = draw(InitRule::Normal(0.5), &[100, 100], 7).unwrap();
        let b = draw(InitRule::Normal(0.5), &[100, 100], 7).unwrap();
        let c = draw(InitRule::Normal(0.5), &[100, 100], 8).unwrap();
        let v = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(v(&a), v(&b));
        assert_ne!(v(&a), v(&c));
        let xs = v(&a);
        let std = (xs.iter().map(|x| (x * x) as f64).sum::<f64>() / xs.len() as f64).sqrt();
        assert!((std - 0.5).abs() < 0.01, "{std}");
        let u = v(&draw(InitRule::Uniform(0.1), &[1000], 1).unwrap());
        assert!(u.iter().all(|x| x.abs() <= 0.1) && u.iter().any(|x| x.abs() > 0.09));
    }
}
