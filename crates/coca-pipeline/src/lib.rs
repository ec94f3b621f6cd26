//! From what a user names and gives — a model name or config file, a checkpoint file or pretrained tag, image
//! files, texts — to a loaded model and model-ready tensors, with errors that name the input. The `coca` CLI and
//! the Python package (`crates/coca-py`) share it, so both load, decode and tokenize identically.

pub mod inputs;
pub mod model;

pub use inputs::{load_images, preprocess_config, set_decode_limits, tokenize_texts};
pub use model::{
    name_list, resolve_config, weights_path, Compute, DeviceSpec, ModelSpec, Precision,
};
