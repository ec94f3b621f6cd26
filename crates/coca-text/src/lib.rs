//! Text side of coca: the CLIP byte-level BPE tokenizer exactly as open_clip 3.3.0
//! uses it for CoCa (`open_clip.get_tokenizer("coca_ViT-B-32")`), plus the text
//! cleaning that runs in front of it.
//!
//! The pipeline for one string is
//!
//! 1. [`clean_text`]: [`ftfy::fix_text`] (a port of the parts of ftfy 6.3.1 that
//!    `fix_text` runs by default), [`html::unescape`] twice, whitespace collapse,
//!    lower-casing — open_clip's `clean="lower"`;
//! 2. the CLIP pre-tokenizer regex and BPE ([`Tokenizer::encode`]);
//! 3. `[SOT] + ids + [EOT]`, truncated to the context length with the last slot
//!    forced to EOT, padded with [`PAD_TOKEN`] ([`Tokenizer::tokenize`]).
//!
//! ```
//! use coca_text::{Tokenizer, DEFAULT_CONTEXT_LENGTH, EOT_TOKEN, SOT_TOKEN};
//!
//! let tok = Tokenizer::new()?;
//! let t = tok.tokenize("A photo of a CAT.", DEFAULT_CONTEXT_LENGTH);
//! assert_eq!(&t.ids[..t.n_tokens], &[SOT_TOKEN, 320, 1125, 539, 320, 2368, 269, EOT_TOKEN]);
//! assert_eq!(tok.decode_caption(&t.ids), "a photo of a cat .");
//! # Ok::<(), coca_text::TokenizerError>(())
//! ```

mod bpe;
mod clean;
pub mod ftfy;
pub mod html;
mod tokenizer;

pub use clean::{clean_text, is_python_whitespace};
pub use tokenizer::{Tokenized, Tokenizer, TokenizerError};

/// Id of `<start_of_text>`, prepended to every tokenized text.
pub const SOT_TOKEN: u32 = 49406;
/// Id of `<end_of_text>`, appended to every tokenized text (and forced into the
/// last slot when a text is truncated).
pub const EOT_TOKEN: u32 = 49407;
/// Id used to pad a tokenized text up to the context length. It is also the id
/// of the ordinary token `!`, so padding is only recognisable by position.
pub const PAD_TOKEN: u32 = 0;
/// Number of ids in the vocabulary: 512 byte tokens, 48,894 merges, 2 specials.
pub const VOCAB_SIZE: usize = 49408;
/// Context length of open_clip's CoCa text towers (`coca_ViT-B-32` and friends).
pub const DEFAULT_CONTEXT_LENGTH: usize = 76;
