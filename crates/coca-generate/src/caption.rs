//! The result of generation for one image.

use coca_text::Tokenizer;
use serde::Serialize;

/// One generated caption.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Caption {
    /// The whole sequence: start token, prompt, generated tokens, and the end token when one was produced — the
    /// row open_clip's `generate` returns, without its trailing padding.
    pub tokens: Vec<u32>,
    /// How many leading tokens were given (start token + prompt) rather than generated.
    pub prompt_len: usize,
    /// Sum over the generated tokens of the model's log-probability (log-softmax of the raw logits, before any
    /// processor), i.e. `log p(generated | image, prompt)`.
    pub log_prob: f32,
    /// Beam search only: the hypothesis score that ranked it (processed score sum / length^length_penalty).
    pub beam_score: Option<f32>,
    /// `true` when the caption ended itself (end token, or the pad id where that ends a caption); `false` when it
    /// was cut at the length limit (greedy/sampling force the end token there, which still counts as ended).
    pub finished: bool,
}

impl Caption {
    /// The generated part of [`Caption::tokens`].
    pub fn generated(&self) -> &[u32] {
        &self.tokens[self.prompt_len.min(self.tokens.len())..]
    }

    /// Readable text (prompt included), via [`Tokenizer::decode_caption`]: open_clip README's recipe.
    pub fn text(&self, tokenizer: &Tokenizer) -> String {
        tokenizer.decode_caption(&self.tokens)
    }
}
