//! What to generate and how: [`GenerationConfig`], [`Strategy`] and the open_clip preset.

use serde::Serialize;

use crate::error::{GenerateError, Result};

/// The special ids generation needs. CLIP's vocabulary has them at its end (start 49406, end 49407) and pads with
/// 0, which is also the BPE token `!`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SpecialTokens {
    /// Start-of-text id: every sequence begins with it.
    pub sot: u32,
    /// End-of-text id: generating it ends a caption.
    pub eos: u32,
    /// Padding id. In open_clip's sampling path a row whose last token is this id is finished, and the text tower
    /// hides the key that follows it (the legacy CLS mask), whatever the strategy.
    pub pad: u32,
}

impl SpecialTokens {
    /// CLIP's layout for a vocabulary of `vocab_size`: start = vocab − 2, end = vocab − 1, pad = 0 (this is what
    /// open_clip's defaults 49406/49407/0 are for the 49,408-token vocabulary).
    pub fn for_vocab(vocab_size: usize) -> Self {
        let v = u32::try_from(vocab_size).unwrap_or(u32::MAX);
        Self {
            sot: v.saturating_sub(2),
            eos: v.saturating_sub(1),
            pad: 0,
        }
    }
}

/// How beam candidates are scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BeamScoring {
    /// Sum of the (processed) raw logits of the chosen tokens. This is what open_clip 3.3.0's beam search does: it
    /// feeds raw logits to transformers' beam scorer without a log-softmax. Needed to reproduce its captions.
    RawLogits,
    /// Sum of log-probabilities (log-softmax of the logits, then the processors), as in transformers' own beam
    /// search: the textbook objective.
    LogProbs,
}

/// Beam-search settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct BeamConfig {
    /// Total number of beams per image (open_clip: 6).
    pub num_beams: usize,
    /// Groups the beams are split into (open_clip: 3). Without a diversity penalty — open_clip has none — every
    /// group runs the same search from the same start, so the result equals a search with
    /// `num_beams / num_beam_groups` beams, which is what is computed.
    pub num_beam_groups: usize,
    /// Finished hypotheses are ranked by `score / length^length_penalty`, the length counting the start token
    /// and the end token (open_clip and transformers: 1.0).
    pub length_penalty: f32,
    /// How candidates are scored.
    pub scoring: BeamScoring,
}

impl BeamConfig {
    /// Beams actually searched per image: one group's worth.
    pub fn beams_per_group(&self) -> usize {
        self.num_beams / self.num_beam_groups.max(1)
    }
}

/// Sampling settings (top-k, nucleus and temperature combine).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SamplingConfig {
    /// Keep only the `k` most likely tokens (ties with the k-th included), as transformers' `TopKLogitsWarper`.
    pub top_k: Option<usize>,
    /// Keep the most likely tokens whose probabilities sum to at least `p` (the most likely one always), as
    /// transformers' `TopPLogitsWarper`; computed before the temperature, in open_clip's order.
    pub top_p: Option<f32>,
    /// Divide the filtered logits by this before the softmax (> 0; → 0 approaches greedy).
    pub temperature: f32,
}

/// The decoding strategy.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Strategy {
    /// Always the most likely token (open_clip: `generation_type="top_k", top_k=1`).
    Greedy,
    /// Draw from the filtered distribution with a seeded RNG (open_clip: `"top_k"` / `"top_p"`).
    Sample(SamplingConfig),
    /// Beam search with transformers' `BeamSearchScorer` rules (open_clip: `"beam_search"`).
    Beam(BeamConfig),
}

/// Everything [`crate::generate`] needs besides the model and the images.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GenerationConfig {
    /// The decoding strategy.
    pub strategy: Strategy,
    /// Longest sequence, counted in tokens *including* the start token, the prompt and the end token
    /// (open_clip's `seq_len`). In greedy/sampling the token at this position is forced to be the end token, as
    /// open_clip does; beam search simply stops there.
    pub max_tokens: usize,
    /// The end token is forbidden while the sequence (start token and prompt included) is shorter than this
    /// (open_clip's `min_seq_len`, transformers' `MinLengthLogitsProcessor`). Must be below `max_tokens`.
    pub min_tokens_before_eos: usize,
    /// Penalty on tokens already in the sequence (transformers' `RepetitionPenaltyLogitsProcessor`; 1 = none).
    pub repetition_penalty: f32,
    /// Token ids to continue after the start token (no start/end token, no padding).
    pub prompt: Vec<u32>,
    /// Start, end and padding ids.
    pub special: SpecialTokens,
    /// Seed of the sampling RNG (ignored by greedy and beam search).
    pub seed: u64,
    /// Greedy/sampling only: a row whose last token is the pad id is finished (open_clip's sampling path does
    /// this, so a generated id 0 — the token `!` — ends the caption). Beam search never does.
    pub pad_ends_caption: bool,
}

impl GenerationConfig {
    /// open_clip 3.3.0's `CoCa.generate(image)` defaults: beam search, 6 beams in 3 groups, raw-logit scores,
    /// length penalty 1, `seq_len=30`, `min_seq_len=5`, no repetition penalty, for a vocabulary of `vocab_size`.
    pub fn open_clip(vocab_size: usize) -> Self {
        Self {
            strategy: Strategy::Beam(BeamConfig {
                num_beams: 6,
                num_beam_groups: 3,
                length_penalty: 1.0,
                scoring: BeamScoring::RawLogits,
            }),
            max_tokens: 30,
            min_tokens_before_eos: 5,
            repetition_penalty: 1.0,
            prompt: Vec::new(),
            special: SpecialTokens::for_vocab(vocab_size),
            seed: 0,
            pad_ends_caption: true,
        }
    }

    /// Greedy decoding with open_clip's length defaults (30 / 5).
    pub fn greedy(vocab_size: usize) -> Self {
        Self {
            strategy: Strategy::Greedy,
            ..Self::open_clip(vocab_size)
        }
    }

    /// Check the settings against each other and against a model with `vocab_size` tokens and room for
    /// `context_length` positions.
    pub fn validate(&self, vocab_size: usize, context_length: usize) -> Result<()> {
        let bad = |msg: String| Err(GenerateError::Config(msg));
        let v = vocab_size as u64;
        for (name, id) in [
            ("start id", self.special.sot),
            ("end id", self.special.eos),
            ("pad id", self.special.pad),
        ] {
            if u64::from(id) >= v {
                return bad(format!(
                    "{name} {id} is outside the vocabulary of {vocab_size} tokens"
                ));
            }
        }
        if let Some(id) = self.prompt.iter().find(|&&id| u64::from(id) >= v) {
            return bad(format!(
                "prompt id {id} is outside the vocabulary of {vocab_size} tokens"
            ));
        }
        if self.max_tokens < 2 || self.max_tokens > context_length {
            return bad(format!(
                "max_tokens must be between 2 and the model's context length {context_length}, got {}",
                self.max_tokens
            ));
        }
        if self.min_tokens_before_eos >= self.max_tokens {
            return bad(format!(
                "min_tokens_before_eos ({}) must be smaller than max_tokens ({})",
                self.min_tokens_before_eos, self.max_tokens
            ));
        }
        if 1 + self.prompt.len() >= self.max_tokens {
            return bad(format!(
                "the start token and a {}-token prompt leave no room below max_tokens ({})",
                self.prompt.len(),
                self.max_tokens
            ));
        }
        if !(self.repetition_penalty.is_finite() && self.repetition_penalty > 0.0) {
            return bad(format!(
                "repetition_penalty must be a positive number, got {}",
                self.repetition_penalty
            ));
        }
        match self.strategy {
            Strategy::Greedy => {}
            Strategy::Sample(s) => {
                if !(s.temperature.is_finite() && s.temperature > 0.0) {
                    return bad(format!("temperature must be > 0, got {}", s.temperature));
                }
                if s.top_k == Some(0) {
                    return bad("top_k must be at least 1".into());
                }
                if let Some(p) = s.top_p {
                    if !(p > 0.0 && p <= 1.0) {
                        return bad(format!("top_p must be in (0, 1], got {p}"));
                    }
                }
            }
            Strategy::Beam(b) => {
                if b.num_beams < 2 {
                    return bad(format!(
                        "beam search needs at least 2 beams, got {} (use greedy for 1)",
                        b.num_beams
                    ));
                }
                if b.num_beam_groups == 0 || b.num_beams % b.num_beam_groups != 0 {
                    return bad(format!(
                        "num_beams ({}) must be a multiple of num_beam_groups ({})",
                        b.num_beams, b.num_beam_groups
                    ));
                }
                if b.beams_per_group() < 1 || 2 * b.beams_per_group() > vocab_size {
                    return bad(format!(
                        "{} beams per group need a vocabulary of at least {} tokens",
                        b.beams_per_group(),
                        2 * b.beams_per_group()
                    ));
                }
                if !b.length_penalty.is_finite() {
                    return bad("length_penalty must be finite".into());
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_vocabulary_gives_open_clip_ids() {
        let s = SpecialTokens::for_vocab(49408);
        assert_eq!((s.sot, s.eos, s.pad), (49406, 49407, 0));
    }

    #[test]
    fn open_clip_preset_is_valid_and_rejects_bad_lengths() {
        let mut cfg = GenerationConfig::open_clip(49408);
        cfg.validate(49408, 76).unwrap();
        cfg.min_tokens_before_eos = 30;
        let err = cfg.validate(49408, 76).unwrap_err().to_string();
        assert!(err.contains("min_tokens_before_eos"), "{err}");
        let mut cfg = GenerationConfig::open_clip(49408);
        cfg.max_tokens = 77;
        assert!(cfg.validate(49408, 76).is_err());
    }

    #[test]
    fn beams_must_divide_into_groups() {
        let mut cfg = GenerationConfig::open_clip(49408);
        cfg.strategy = Strategy::Beam(BeamConfig {
            num_beams: 6,
            num_beam_groups: 4,
            length_penalty: 1.0,
            scoring: BeamScoring::RawLogits,
        });
        let err = cfg.validate(49408, 76).unwrap_err().to_string();
        assert!(err.contains("multiple of num_beam_groups"), "{err}");
    }
}
