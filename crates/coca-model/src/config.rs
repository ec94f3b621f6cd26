//! Model configuration in open_clip's JSON schema.
//!
//! The structs mirror open_clip's `CLIPVisionCfg`, `CLIPTextCfg` and `MultimodalCfg` field for field, with
//! open_clip's defaults, so any open_clip CoCa config file parses unchanged. Fields that change the architecture
//! in ways coca does not implement (timm or Hugging Face towers, custom attention blocks, non-learnable position
//! embeddings, ...) are rejected by [`CocaConfig::validate`] with a message naming the field, rather than being
//! silently ignored. Fields that open_clip itself ignores for CoCa are accepted and documented as ignored.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};

/// The built-in configs, byte-for-byte the JSON files open_clip 3.3.0 ships.
const BUILTIN_CONFIGS: &[(&str, &str)] = &[
    ("coca_ViT-B-32", include_str!("configs/coca_ViT-B-32.json")),
    ("coca_ViT-L-14", include_str!("configs/coca_ViT-L-14.json")),
    ("coca_base", include_str!("configs/coca_base.json")),
    (
        "coca_roberta-ViT-B-32",
        include_str!("configs/coca_roberta-ViT-B-32.json"),
    ),
];

/// Names of the configs built into the binary, in the order `--help` lists them.
pub fn builtin_model_names() -> Vec<&'static str> {
    BUILTIN_CONFIGS.iter().map(|(name, _)| *name).collect()
}

/// `vision_cfg.image_size` and `patch_size` may be an int or a `[height, width]` pair in open_clip.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Size2 {
    /// The same value for height and width.
    Square(usize),
    /// `[height, width]`.
    Pair([usize; 2]),
}

impl Size2 {
    /// `(height, width)`.
    pub fn hw(self) -> (usize, usize) {
        match self {
            Size2::Square(s) => (s, s),
            Size2::Pair([h, w]) => (h, w),
        }
    }
}

/// `vision_cfg.attentional_pool`: `false`, `true` (open_clip's original CoCa pooler) or a paper-style mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum AttentionalPoolSetting {
    /// `true`: one pooler of `attn_pooler_queries` queries; query 0 is the contrastive embedding and the rest
    /// the caption context (what every published CoCa checkpoint uses). `false`: no attentional pooler.
    Flag(bool),
    /// `"parallel"` or `"cascade"`: a separate 1-query contrastive pooler beside the caption pooler.
    Mode(PaperPoolMode),
}

/// The CoCa paper's split poolers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PaperPoolMode {
    /// The contrastive pooler reads the encoder tokens, like the caption pooler.
    Parallel,
    /// The contrastive pooler reads the caption pooler's output tokens (the paper's default).
    Cascade,
}

/// How the vision tower turns encoder tokens into (contrastive embedding, caption context).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VisionPooling {
    /// No attentional pooler: CLS token (or the mean, for `pool_type: "avg"`) after `ln_post`, patch tokens as context.
    Token {
        /// `true` for `pool_type: "avg"`.
        average: bool,
    },
    /// open_clip's single shared pooler (`attentional_pool: true`).
    Shared,
    /// Separate contrastive pooler (`attentional_pool: "parallel" | "cascade"`).
    Split(PaperPoolMode),
}

fn default_true() -> bool {
    true
}

/// open_clip's `CLIPVisionCfg` (ViT towers only).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VisionConfig {
    /// Number of transformer blocks.
    #[serde(default = "VisionConfig::default_layers")]
    pub layers: usize,
    /// Residual width.
    #[serde(default = "VisionConfig::default_width")]
    pub width: usize,
    /// Width of one attention head; heads = width / head_width.
    #[serde(default = "VisionConfig::default_head_width")]
    pub head_width: usize,
    /// MLP hidden width = width × mlp_ratio.
    #[serde(default = "default_mlp_ratio")]
    pub mlp_ratio: f64,
    /// Patch size of the (bias-free) patch embedding.
    #[serde(default = "VisionConfig::default_patch_size")]
    pub patch_size: Size2,
    /// Input resolution.
    #[serde(default = "VisionConfig::default_image_size")]
    pub image_size: Size2,
    /// LayerScale init; not supported by coca (no CoCa config uses it).
    #[serde(default)]
    pub ls_init_value: Option<f64>,
    /// Training-time patch dropout. Ignored: coca does not drop patches.
    #[serde(default)]
    pub patch_dropout: f64,
    /// Attentional pooling mode.
    #[serde(default = "VisionConfig::default_attentional_pool")]
    pub attentional_pool: AttentionalPoolSetting,
    /// Queries of the caption pooler.
    #[serde(default = "VisionConfig::default_attn_pooler_queries")]
    pub attn_pooler_queries: usize,
    /// Heads of the attentional pooler(s).
    #[serde(default = "VisionConfig::default_attn_pooler_heads")]
    pub attn_pooler_heads: usize,
    /// Skip `ln_pre`.
    #[serde(default)]
    pub no_ln_pre: bool,
    /// `"learnable"` (open_clip's default) or `"sin_cos_2d"`: fixed 2-D sine-cosine position embeddings (square
    /// grids, width a multiple of 4), which a from-scratch run initialises by formula and never updates.
    #[serde(default = "VisionConfig::default_pos_embed_type")]
    pub pos_embed_type: String,
    /// Apply `ln_post` after pooling (only without an attentional pooler, as in open_clip).
    #[serde(default)]
    pub final_ln_after_pool: bool,
    /// `"tok"` or `"avg"` (without an attentional pooler).
    #[serde(default = "VisionConfig::default_pool_type")]
    pub pool_type: String,
    /// Ignored: CoCa always needs the image tokens.
    #[serde(default = "default_true")]
    pub output_tokens: bool,
    /// Not supported (must be absent or null).
    #[serde(default)]
    pub timm_model_name: Option<String>,
    /// Not supported unless `"default"` or absent.
    #[serde(default)]
    pub block_type: Option<String>,
    /// Everything else open_clip knows (qk_norm, scale_* ...): accepted only while false/null.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

fn default_mlp_ratio() -> f64 {
    4.0
}

impl VisionConfig {
    fn default_layers() -> usize {
        12
    }
    fn default_width() -> usize {
        768
    }
    fn default_head_width() -> usize {
        64
    }
    fn default_patch_size() -> Size2 {
        Size2::Square(16)
    }
    fn default_image_size() -> Size2 {
        Size2::Square(224)
    }
    fn default_attentional_pool() -> AttentionalPoolSetting {
        AttentionalPoolSetting::Flag(false)
    }
    fn default_attn_pooler_queries() -> usize {
        256
    }
    fn default_attn_pooler_heads() -> usize {
        8
    }
    fn default_pos_embed_type() -> String {
        "learnable".into()
    }
    fn default_pool_type() -> String {
        "tok".into()
    }

    /// `true` for `pos_embed_type: "sin_cos_2d"`: the position embeddings are a fixed table, not trained.
    pub fn fixed_positions(&self) -> bool {
        self.pos_embed_type == "sin_cos_2d"
    }

    /// Number of attention heads of the encoder blocks.
    pub fn heads(&self) -> usize {
        self.width / self.head_width
    }

    /// Hidden width of the encoder MLPs (`int(width * mlp_ratio)` as in open_clip).
    pub fn mlp_width(&self) -> usize {
        (self.width as f64 * self.mlp_ratio) as usize
    }

    /// Patch grid `(rows, cols)`.
    pub fn grid(&self) -> (usize, usize) {
        let (h, w) = self.image_size.hw();
        let (ph, pw) = self.patch_size.hw();
        (h / ph, w / pw)
    }

    /// Pooling mode implied by `attentional_pool` and `pool_type`.
    pub fn pooling(&self) -> VisionPooling {
        match self.attentional_pool {
            AttentionalPoolSetting::Flag(false) => VisionPooling::Token {
                average: self.pool_type == "avg",
            },
            AttentionalPoolSetting::Flag(true) => VisionPooling::Shared,
            AttentionalPoolSetting::Mode(mode) => VisionPooling::Split(mode),
        }
    }
}

/// open_clip's `CLIPTextCfg` (the unimodal text tower).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TextConfig {
    /// Maximum number of input tokens (76 for CoCa: the CLS makes 77 positions).
    #[serde(default = "TextConfig::default_context_length")]
    pub context_length: usize,
    /// Token vocabulary size.
    #[serde(default = "default_vocab_size")]
    pub vocab_size: usize,
    /// Residual width.
    #[serde(default = "TextConfig::default_width")]
    pub width: usize,
    /// Attention heads.
    #[serde(default = "default_heads")]
    pub heads: usize,
    /// Number of unimodal blocks (the paper's `n_uni`).
    #[serde(default = "default_layers")]
    pub layers: usize,
    /// MLP hidden width = width × mlp_ratio.
    #[serde(default = "default_mlp_ratio")]
    pub mlp_ratio: f64,
    /// LayerScale init; not supported.
    #[serde(default)]
    pub ls_init_value: Option<f64>,
    /// Append a learned CLS token at the end (always true for CoCa).
    #[serde(default)]
    pub embed_cls: bool,
    /// Padding token id.
    #[serde(default)]
    pub pad_id: u32,
    /// Ignored (only used by `pool_type: "eos"`, which an appended CLS overrides).
    #[serde(default = "TextConfig::default_eos_id")]
    pub eos_id: u32,
    /// Must be false (CoCa's text tower is causal).
    #[serde(default)]
    pub no_causal_mask: bool,
    /// Ignored with an appended CLS (open_clip always pools the last token then).
    #[serde(default = "TextConfig::default_pool_type")]
    pub pool_type: String,
    /// `"linear"` (a bias-free matrix unless `proj_bias`) or `"none"`.
    #[serde(default = "TextConfig::default_proj_type")]
    pub proj_type: String,
    /// Give the text projection a bias (stored as an `nn.Linear`).
    #[serde(default)]
    pub proj_bias: bool,
    /// Ignored: CoCa always needs the text tokens.
    #[serde(default = "default_true")]
    pub output_tokens: bool,
    /// Hugging Face text towers are not supported.
    #[serde(default)]
    pub hf_model_name: Option<String>,
    /// Not supported unless `"default"` or absent.
    #[serde(default)]
    pub block_type: Option<String>,
    /// Everything else open_clip knows: accepted only while false/null.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

fn default_vocab_size() -> usize {
    49408
}
fn default_heads() -> usize {
    8
}
fn default_layers() -> usize {
    12
}

impl TextConfig {
    fn default_context_length() -> usize {
        77
    }
    fn default_width() -> usize {
        512
    }
    fn default_eos_id() -> u32 {
        2
    }
    fn default_pool_type() -> String {
        "argmax".into()
    }
    fn default_proj_type() -> String {
        "linear".into()
    }

    /// Hidden width of the MLPs.
    pub fn mlp_width(&self) -> usize {
        (self.width as f64 * self.mlp_ratio) as usize
    }
}

/// open_clip's `MultimodalCfg` (the captioning decoder).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MultimodalConfig {
    /// Length of the decoder's causal mask (≥ the longest decoder input).
    #[serde(default = "MultimodalConfig::default_context_length")]
    pub context_length: usize,
    /// Output vocabulary of the LM head.
    #[serde(default = "default_vocab_size")]
    pub vocab_size: usize,
    /// Residual width (must equal the text width and the image-context width).
    #[serde(default = "MultimodalConfig::default_width")]
    pub width: usize,
    /// Attention heads of self- and cross-attention.
    #[serde(default = "default_heads")]
    pub heads: usize,
    /// Number of multimodal blocks (the paper's `n_multi`).
    #[serde(default = "default_layers")]
    pub layers: usize,
    /// LayerScale init; not supported.
    #[serde(default)]
    pub ls_init_value: Option<f64>,
    /// Ignored, as in open_clip (the decoder MLP ratio is always 4).
    #[serde(default = "default_mlp_ratio")]
    pub mlp_ratio: f64,
    /// Ignored, as in open_clip.
    #[serde(default)]
    pub dim_head: Option<usize>,
    /// Ignored, as in open_clip (the pooler queries live in `vision_cfg`).
    #[serde(default)]
    pub n_queries: Option<usize>,
    /// Ignored, as in open_clip (the pooler heads live in `vision_cfg`).
    #[serde(default)]
    pub attn_pooler_heads: Option<usize>,
    /// Everything else: accepted only while false/null.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

impl MultimodalConfig {
    fn default_context_length() -> usize {
        77
    }
    fn default_width() -> usize {
        512
    }

    /// The decoder MLP width: open_clip never passes `mlp_ratio` to the decoder, so it is always 4 × width.
    pub fn mlp_width(&self) -> usize {
        self.width * 4
    }
}

/// A full CoCa config: open_clip's model-config JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CocaConfig {
    /// Size of the contrastive embedding.
    pub embed_dim: usize,
    /// Image tower.
    pub vision_cfg: VisionConfig,
    /// Unimodal text tower.
    pub text_cfg: TextConfig,
    /// Multimodal decoder.
    pub multimodal_cfg: MultimodalConfig,
    /// Use QuickGELU instead of exact GELU (false for every CoCa config).
    #[serde(default)]
    pub quick_gelu: bool,
    /// Ignored (CoCa always has separate towers).
    #[serde(default)]
    pub custom_text: bool,
    /// Everything else at the top level (e.g. `init_logit_bias`): accepted only while null/false.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

/// Where a config came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    /// A built-in name such as `coca_ViT-B-32`.
    Builtin(String),
    /// A JSON file.
    File(std::path::PathBuf),
}

impl std::fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigSource::Builtin(name) => write!(f, "{name}"),
            ConfigSource::File(path) => write!(f, "{}", path.display()),
        }
    }
}

impl CocaConfig {
    /// A built-in config by open_clip's model name (also accepting open_clip's `hf-hub:`-less spellings with `/`
    /// replaced by `-`, as open_clip does).
    pub fn builtin(name: &str) -> Result<Self> {
        let wanted = name.replace('/', "-");
        let json = BUILTIN_CONFIGS
            .iter()
            .find(|(n, _)| *n == wanted)
            .map(|(_, json)| *json)
            .ok_or_else(|| ModelError::UnknownModel {
                name: name.to_string(),
                known: builtin_model_names().join(", "),
            })?;
        let cfg = Self::from_json_str(json, &ConfigSource::Builtin(wanted.clone()))?;
        Ok(cfg)
    }

    /// Parse a config from JSON text.
    pub fn from_json_str(json: &str, source: &ConfigSource) -> Result<Self> {
        serde_json::from_str(json).map_err(|e| ModelError::BadConfig {
            origin: source.to_string(),
            reason: e.to_string(),
        })
    }

    /// Read a config JSON file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::Io {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        Self::from_json_str(&text, &ConfigSource::File(path.to_path_buf()))
    }

    /// Resolve what users pass as `--model`: a built-in name, or a path to a JSON file.
    pub fn resolve(name_or_path: &str) -> Result<(Self, ConfigSource)> {
        let path = Path::new(name_or_path);
        if name_or_path.ends_with(".json") || path.is_file() {
            if !path.exists() {
                return Err(ModelError::Io {
                    path: path.to_path_buf(),
                    reason: "no such file".into(),
                });
            }
            let cfg = Self::from_file(path)?;
            cfg.validate(&ConfigSource::File(path.to_path_buf()))?;
            return Ok((cfg, ConfigSource::File(path.to_path_buf())));
        }
        let cfg = Self::builtin(name_or_path)?;
        let source = ConfigSource::Builtin(name_or_path.replace('/', "-"));
        cfg.validate(&source)?;
        Ok((cfg, source))
    }

    /// Check that coca implements this architecture, explaining precisely what is not supported, and that
    /// every size is within [`limits`] (so that nothing downstream sizes an allocation from an absurd value).
    pub fn validate(&self, source: &ConfigSource) -> Result<()> {
        self.check_limits(source)?;
        let bad = |reason: String| {
            Err(ModelError::Unsupported {
                origin: source.to_string(),
                reason,
            })
        };
        let v = &self.vision_cfg;
        let t = &self.text_cfg;
        let m = &self.multimodal_cfg;
        if let Some(hf) = &t.hf_model_name {
            return bad(format!(
                "its text tower is the Hugging Face model `{hf}` (text_cfg.hf_model_name); coca implements \
                 open_clip's own text transformer only"
            ));
        }
        if let Some(timm) = &v.timm_model_name {
            return bad(format!(
                "its image tower is the timm model `{timm}`; coca implements open_clip's ViT only"
            ));
        }
        for (section, block_type) in [("vision_cfg", &v.block_type), ("text_cfg", &t.block_type)] {
            if let Some(bt) = block_type {
                if bt != "default" {
                    return bad(format!("{section}.block_type = {bt:?} is not supported"));
                }
            }
        }
        for (section, ls) in [
            ("vision_cfg", v.ls_init_value),
            ("text_cfg", t.ls_init_value),
            ("multimodal_cfg", m.ls_init_value),
        ] {
            if ls.is_some() {
                return bad(format!(
                    "{section}.ls_init_value (LayerScale) is not supported"
                ));
            }
        }
        for (section, other) in [
            ("", &self.other),
            ("vision_cfg.", &v.other),
            ("text_cfg.", &t.other),
            ("multimodal_cfg.", &m.other),
        ] {
            for (key, value) in other {
                if !value_is_off(value) && !IGNORED_KEYS.contains(&key.as_str()) {
                    return bad(format!("{section}{key} = {value} is not supported"));
                }
            }
        }
        match v.pos_embed_type.as_str() {
            "learnable" => {}
            "sin_cos_2d" => {
                let (gh, gw) = v.grid();
                if gh != gw || !v.width.is_multiple_of(4) {
                    return bad(format!(
                        "vision_cfg.pos_embed_type = \"sin_cos_2d\" needs a square patch grid and a width that \
                         is a multiple of 4 (grid {gh}×{gw}, width {})",
                        v.width
                    ));
                }
            }
            other => {
                return bad(format!(
                    "vision_cfg.pos_embed_type = {other:?} (\"learnable\" or \"sin_cos_2d\")"
                ))
            }
        }
        if !matches!(v.pool_type.as_str(), "tok" | "avg") {
            return bad(format!(
                "vision_cfg.pool_type = {:?} (only \"tok\" and \"avg\")",
                v.pool_type
            ));
        }
        if !t.embed_cls {
            return bad("text_cfg.embed_cls must be true for CoCa (the text embedding is an appended CLS token)".into());
        }
        if t.no_causal_mask {
            return bad("text_cfg.no_causal_mask must be false for CoCa".into());
        }
        if !matches!(t.proj_type.as_str(), "linear" | "none") {
            return bad(format!(
                "text_cfg.proj_type = {:?} is not supported",
                t.proj_type
            ));
        }
        let divides = |what: &str, width: usize, heads: usize| {
            if heads == 0 || !width.is_multiple_of(heads) {
                Err(ModelError::Unsupported {
                    origin: source.to_string(),
                    reason: format!("{what}: width {width} is not divisible by {heads} heads"),
                })
            } else {
                Ok(())
            }
        };
        if v.head_width == 0 || !v.width.is_multiple_of(v.head_width) {
            return bad(format!(
                "vision_cfg.width {} is not a multiple of head_width {}",
                v.width, v.head_width
            ));
        }
        divides("text_cfg", t.width, t.heads)?;
        divides("multimodal_cfg", m.width, m.heads)?;
        let (ih, iw) = v.image_size.hw();
        let (ph, pw) = v.patch_size.hw();
        if ph == 0 || pw == 0 || ih % ph != 0 || iw % pw != 0 {
            return bad(format!(
                "vision_cfg.image_size {ih}x{iw} is not a multiple of patch_size {ph}x{pw}"
            ));
        }
        let context_width = match v.pooling() {
            VisionPooling::Token { .. } => v.width,
            VisionPooling::Shared => {
                divides(
                    "vision_cfg.attn_pooler_heads",
                    self.embed_dim,
                    v.attn_pooler_heads,
                )?;
                if v.attn_pooler_queries < 2 {
                    return bad("vision_cfg.attn_pooler_queries must be at least 2 with attentional_pool = true (query 0 is the embedding, the rest the caption context)".into());
                }
                self.embed_dim
            }
            VisionPooling::Split(_) => {
                divides(
                    "vision_cfg.attn_pooler_heads",
                    self.embed_dim,
                    v.attn_pooler_heads,
                )?;
                if v.width != self.embed_dim {
                    return bad(format!(
                        "attentional_pool = \"parallel\"/\"cascade\" needs vision_cfg.width ({}) == embed_dim ({}): \
                         open_clip applies ln_post(embed_dim) to the encoder tokens in that mode",
                        v.width, self.embed_dim
                    ));
                }
                self.embed_dim
            }
        };
        if context_width != m.width {
            return bad(format!(
                "the decoder cross-attends to image tokens of width {context_width} but multimodal_cfg.width is {}",
                m.width
            ));
        }
        if t.width != m.width {
            return bad(format!(
                "the decoder reads the text tower's tokens of width {} but multimodal_cfg.width is {}",
                t.width, m.width
            ));
        }
        if t.context_length > m.context_length + 1 {
            return bad(format!(
                "text_cfg.context_length {} exceeds multimodal_cfg.context_length {} + 1",
                t.context_length, m.context_length
            ));
        }
        Ok(())
    }

    /// Every size field against [`limits`]; the first one out of range is named with its value.
    fn check_limits(&self, source: &ConfigSource) -> Result<()> {
        use limits::*;
        let v = &self.vision_cfg;
        let t = &self.text_cfg;
        let m = &self.multimodal_cfg;
        let (ih, iw) = v.image_size.hw();
        let (ph, pw) = v.patch_size.hw();
        let out_of_range = |reason: String| ModelError::Limit {
            origin: source.to_string(),
            reason,
        };
        for (field, ratio) in [
            ("vision_cfg.mlp_ratio", v.mlp_ratio),
            ("text_cfg.mlp_ratio", t.mlp_ratio),
        ] {
            if !(ratio.is_finite() && ratio > 0.0 && ratio <= MAX_MLP_RATIO) {
                return Err(out_of_range(format!(
                    "{field} = {ratio} is outside (0, {MAX_MLP_RATIO}]"
                )));
            }
        }
        let sizes: [(&str, usize, usize); 22] = [
            ("embed_dim", self.embed_dim, MAX_WIDTH),
            ("vision_cfg.layers", v.layers, MAX_LAYERS),
            ("vision_cfg.width", v.width, MAX_WIDTH),
            ("vision_cfg.head_width", v.head_width, MAX_WIDTH),
            ("vision_cfg.image_size (height)", ih, MAX_IMAGE_SIDE),
            ("vision_cfg.image_size (width)", iw, MAX_IMAGE_SIDE),
            ("vision_cfg.patch_size (height)", ph, MAX_IMAGE_SIDE),
            ("vision_cfg.patch_size (width)", pw, MAX_IMAGE_SIDE),
            (
                "vision_cfg.attn_pooler_queries",
                v.attn_pooler_queries,
                MAX_POOLER_QUERIES,
            ),
            (
                "vision_cfg.attn_pooler_heads",
                v.attn_pooler_heads,
                MAX_WIDTH,
            ),
            (
                "text_cfg.context_length",
                t.context_length,
                MAX_CONTEXT_LENGTH,
            ),
            ("text_cfg.vocab_size", t.vocab_size, MAX_VOCAB_SIZE),
            ("text_cfg.width", t.width, MAX_WIDTH),
            ("text_cfg.heads", t.heads, MAX_WIDTH),
            ("text_cfg.layers", t.layers, MAX_LAYERS),
            (
                "multimodal_cfg.context_length",
                m.context_length,
                MAX_CONTEXT_LENGTH,
            ),
            ("multimodal_cfg.vocab_size", m.vocab_size, MAX_VOCAB_SIZE),
            ("multimodal_cfg.width", m.width, MAX_WIDTH),
            ("multimodal_cfg.heads", m.heads, MAX_WIDTH),
            ("multimodal_cfg.layers", m.layers, MAX_LAYERS),
            ("vision_cfg.width × mlp_ratio", v.mlp_width(), MAX_MLP_WIDTH),
            ("text_cfg.width × mlp_ratio", t.mlp_width(), MAX_MLP_WIDTH),
        ];
        for (field, value, max) in sizes {
            if !(1..=max).contains(&value) {
                return Err(out_of_range(format!(
                    "{field} = {value} is outside 1..={max}"
                )));
            }
        }
        Ok(())
    }

    /// The caption context length the image tower produces.
    pub fn image_context_tokens(&self) -> usize {
        let v = &self.vision_cfg;
        match v.pooling() {
            VisionPooling::Token { .. } => {
                let (gh, gw) = v.grid();
                gh * gw
            }
            VisionPooling::Shared => v.attn_pooler_queries - 1,
            VisionPooling::Split(_) => v.attn_pooler_queries,
        }
    }
}

/// Bounds on every size in a config, checked before anything is sized from it. They are far above any
/// published model (the largest ViTs have 48 blocks of width 6144, CLIP-style text towers 77 tokens and a
/// vocabulary of 49,408; the largest LLM vocabularies are about 256k), so they only refuse values that cannot
/// be meant, such as `"layers": 1000000000`; whether a legal model fits in memory is
/// [`crate::budget`]'s question.
pub mod limits {
    /// Transformer blocks per tower.
    pub const MAX_LAYERS: usize = 256;
    /// Residual width, head width, head counts and `embed_dim`.
    pub const MAX_WIDTH: usize = 16_384;
    /// MLP hidden width over residual width (4 in every CoCa config).
    pub const MAX_MLP_RATIO: f64 = 16.0;
    /// MLP hidden width: the widest residual stream at the largest ratio.
    pub const MAX_MLP_WIDTH: usize = MAX_WIDTH * 16;
    /// Text and decoder context length in tokens; the tokenizer allocates rows this long.
    pub const MAX_CONTEXT_LENGTH: usize = 8_192;
    /// Token vocabulary size.
    pub const MAX_VOCAB_SIZE: usize = 4_194_304;
    /// Input resolution (and patch size) in pixels per side.
    pub const MAX_IMAGE_SIDE: usize = 4_096;
    /// Queries of the attentional pooler.
    pub const MAX_POOLER_QUERIES: usize = 4_096;
}

/// Keys that appear in open_clip configs, are not in coca's structs, and do not change the math of a CoCa
/// model at inference or training time. Anything else must be off (false/null/0) to be accepted.
const IGNORED_KEYS: &[&str] = &[
    "hf_tokenizer_name",
    "tokenizer_kwargs",
    "tokenizer_mode",
    "hf_proj_type",
    "hf_pooler_type",
    "hf_model_pretrained",
    "timm_model_pretrained",
    "timm_pool",
    "timm_proj",
    "timm_proj_bias",
    "timm_drop",
    "timm_drop_path",
    "act_kwargs",
    "norm_kwargs",
    "latent_dim",
    "init_logit_scale",
];

fn value_is_off(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::Null => true,
        serde_json::Value::Bool(b) => !b,
        serde_json::Value::Number(n) => n.as_f64() == Some(0.0),
        serde_json::Value::String(s) => s.is_empty() || s == "default",
        serde_json::Value::Array(a) => a.is_empty(),
        serde_json::Value::Object(o) => o.is_empty(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_b32_parses_with_open_clip_values() {
        let cfg = CocaConfig::builtin("coca_ViT-B-32").unwrap();
        assert_eq!(cfg.embed_dim, 512);
        assert_eq!(cfg.vision_cfg.heads(), 12);
        assert_eq!(cfg.vision_cfg.grid(), (7, 7));
        assert_eq!(cfg.vision_cfg.pooling(), VisionPooling::Shared);
        assert_eq!(cfg.text_cfg.context_length, 76);
        assert_eq!(cfg.image_context_tokens(), 255);
        cfg.validate(&ConfigSource::Builtin("coca_ViT-B-32".into()))
            .unwrap();
    }

    #[test]
    fn builtin_l14_and_base_validate() {
        for name in ["coca_ViT-L-14", "coca_base"] {
            let (cfg, _) = CocaConfig::resolve(name).unwrap();
            assert!(cfg.text_cfg.embed_cls);
        }
        let (base, _) = CocaConfig::resolve("coca_base").unwrap();
        assert_eq!(
            base.vision_cfg.pooling(),
            VisionPooling::Token { average: false }
        );
        assert_eq!(base.image_context_tokens(), 256);
    }

    #[test]
    fn roberta_is_refused_with_reason() {
        let err = CocaConfig::resolve("coca_roberta-ViT-B-32").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("roberta-base"), "{msg}");
        assert!(msg.contains("coca_roberta-ViT-B-32"), "{msg}");
    }

    #[test]
    fn unknown_name_lists_known_models() {
        let msg = CocaConfig::resolve("coca_ViT-H-99")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("coca_ViT-H-99"), "{msg}");
        assert!(
            msg.contains("coca_ViT-B-32") && msg.contains("coca_ViT-L-14"),
            "{msg}"
        );
    }

    #[test]
    fn unsupported_feature_is_named() {
        let mut cfg = CocaConfig::builtin("coca_ViT-B-32").unwrap();
        cfg.vision_cfg
            .other
            .insert("qk_norm".into(), serde_json::Value::Bool(true));
        let msg = cfg
            .validate(&ConfigSource::Builtin("x".into()))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("vision_cfg.qk_norm"), "{msg}");
    }

    #[test]
    fn position_embedding_types_are_checked() {
        let src = ConfigSource::Builtin("x".into());
        let mut cfg = CocaConfig::builtin("coca_ViT-B-32").unwrap();
        cfg.vision_cfg.pos_embed_type = "sin_cos_2d".into();
        cfg.validate(&src).unwrap();
        assert!(cfg.vision_cfg.fixed_positions());
        cfg.vision_cfg.image_size = Size2::Pair([224, 192]);
        let msg = cfg.validate(&src).unwrap_err().to_string();
        assert!(msg.contains("square patch grid"), "{msg}");
        cfg.vision_cfg.image_size = Size2::Square(224);
        cfg.vision_cfg.pos_embed_type = "rope".into();
        let msg = cfg.validate(&src).unwrap_err().to_string();
        assert!(msg.contains("\"rope\""), "{msg}");
    }

    #[test]
    fn paper_modes_parse() {
        let json = r#"{"embed_dim": 64,
            "vision_cfg": {"width": 64, "layers": 1, "patch_size": 8, "image_size": 16,
                           "attentional_pool": "cascade", "attn_pooler_queries": 8, "attn_pooler_heads": 4},
            "text_cfg": {"width": 64, "heads": 4, "layers": 1, "embed_cls": true, "context_length": 76},
            "multimodal_cfg": {"width": 64, "heads": 4, "layers": 1, "context_length": 76}}"#;
        let src = ConfigSource::Builtin("test".into());
        let cfg = CocaConfig::from_json_str(json, &src).unwrap();
        cfg.validate(&src).unwrap();
        assert_eq!(
            cfg.vision_cfg.pooling(),
            VisionPooling::Split(PaperPoolMode::Cascade)
        );
        assert_eq!(cfg.image_context_tokens(), 8);
    }

    #[test]
    fn malformed_json_is_reported_with_source() {
        let src = ConfigSource::File("broken.json".into());
        let msg = CocaConfig::from_json_str("{\"embed_dim\": ", &src)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("broken.json"), "{msg}");
    }
}
