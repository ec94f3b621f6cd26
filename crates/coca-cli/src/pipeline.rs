//! From user inputs (paths, strings) to model-ready tensors: [`coca_pipeline::inputs`], shared with the Python
//! package.

pub use coca_pipeline::{load_images, preprocess_config, set_decode_limits, tokenize_texts};
