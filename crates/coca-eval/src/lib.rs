//! Evaluation for coca.
//!
//! [`caption_metrics`] computes the captioning metrics of pycocoevalcap 1.2 (BLEU-1..4, METEOR,
//! ROUGE-L, CIDEr-D) in Rust, with [`ptb`] reproducing its Stanford PTB tokenisation, so numbers
//! agree with the COCO caption evaluation without Python or (except for METEOR) Java.
//!
//! [`classification`] (acc1, acc5, mean per-class recall) and [`retrieval`] (image↔text recall@K with
//! several captions per image) compute CLIP_benchmark's zero-shot metrics from logits or similarity
//! matrices.
//!
//! ```
//! use coca_eval::caption_metrics::CaptionMetrics;
//!
//! let images = vec![(
//!     "A dog runs on the beach.",
//!     vec!["A dog running on a beach.", "A brown dog runs along the sand."],
//! )];
//! let scores = CaptionMetrics::new().compute(&images).unwrap();
//! assert!(scores.bleu[0] > 0.5 && scores.meteor.is_none());
//! ```

pub mod caption_metrics;
pub mod classification;
mod metric_error;
pub mod ptb;
mod ranking;
pub mod retrieval;

pub use caption_metrics::{CaptionMetrics, EvalError, ImageScores, MeteorJar, Scores};
pub use classification::{
    classification_metrics, classification_report, ClassificationMetrics, ClassificationReport,
};
pub use metric_error::MetricError;
pub use ptb::{tokenize_captions, tokenize_ptb};
pub use retrieval::{retrieval_recall, RecallAtK};
