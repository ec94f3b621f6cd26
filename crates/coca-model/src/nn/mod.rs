//! Transformer building blocks with open_clip's parameter names and semantics.

pub mod attention;
pub mod block;
pub mod chunked_lm_head;
pub mod fused;
pub mod layers;
pub mod ops;
pub mod thin_matmul;

pub use attention::{AttentionMask, MultiheadAttention};
pub use block::{BlockRunner, Direct, ResidualAttentionBlock, Transformer};
pub use layers::{Activation, LayerNorm, Linear, Mlp};
