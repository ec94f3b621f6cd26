//! Zero-shot image classification with CoCa, as open_clip 3.3.0 and CLIP_benchmark do it.
//!
//! - [`lists`]: class names and prompt templates: the built-in ImageNet class names and OpenAI / "simple"
//!   templates (open_clip's `zero_shot_metadata.py`, exported by `scripts/zeroshot/export_builtin_lists.py`),
//!   and files in CLIP_benchmark's text and JSON formats;
//! - [`template`]: the `{c}` template syntax;
//! - [`classifier`]: open_clip's prompt ensemble ([`build_classifier`]) and ranking ([`classify`]:
//!   softmax of 100 × cosine similarity);
//! - [`cache`]: classifier matrices cached on disk as safetensors, keyed by checkpoint, config, classes and
//!   templates.
//!
//! ```no_run
//! use coca_model::load::{load_model, LoadOptions};
//! use coca_model::CocaConfig;
//! use coca_zeroshot::{build_classifier, classify, lists};
//!
//! let (cfg, _) = CocaConfig::resolve("coca_ViT-B-32")?;
//! let model = load_model(&cfg, "model.safetensors".as_ref(), &LoadOptions::default())?;
//! let classes = lists::resolve_classnames("imagenet", None)?;
//! let templates = lists::resolve_templates("openai", None)?;
//! let classifier = build_classifier(&model, &classes, &templates, 256)?;
//! # let pixels: candle_core::Tensor = todo!();
//! let image = model.encode_image(&pixels)?;
//! for ranked in classify(&image.embedding, &classifier, 5)? {
//!     println!("{} ({:.1}%)", classes[ranked[0].index], 100.0 * ranked[0].probability);
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod cache;
pub mod classifier;
pub mod error;
pub mod lists;
pub mod template;

pub use cache::{CacheKey, CacheOutcome, CheckpointIdentity, ClassifierCache};
pub use classifier::{
    build_classifier, build_classifier_with_progress, classify, Prediction, DEFAULT_PROMPT_BATCH,
    LOGIT_MULTIPLIER,
};
pub use error::{Result, ZeroShotError};
pub use template::Template;
