//! User-facing generation settings — `coca caption`'s flags, the Python package's open_clip keywords — turned into
//! a validated [`GenerationConfig`]: open_clip's default call changed by whatever the user set.

use coca_text::Tokenizer;

use crate::config::{BeamConfig, BeamScoring, GenerationConfig, SamplingConfig, Strategy};
use crate::error::{GenerateError, Result};

/// The decoding strategy a user asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StrategyChoice {
    /// The most likely token at every step.
    Greedy,
    /// Beam search (open_clip's `"beam_search"`, its default).
    Beam,
    /// Sampling among the `top_k` most likely tokens (open_clip's `"top_k"`; default k = 1, i.e. greedy).
    TopK,
    /// Nucleus sampling (open_clip's `"top_p"`; default p = 0.1).
    TopP,
}

/// How error messages name the settings: as `coca caption`'s flags or as open_clip's `generate` keywords.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptionNames {
    /// `--num-beams`, `--strategy top-k`, `--max-length`, ...
    Flags,
    /// `num_beams`, `generation_type="top_k"`, `seq_len`, ...
    Keywords,
}

impl OptionNames {
    /// The user's name of a setting, given by its keyword spelling.
    fn of(self, keyword: &'static str) -> &'static str {
        const FLAGS: [(&str, &str); 11] = [
            ("generation_type", "--strategy"),
            ("num_beams", "--num-beams"),
            ("num_beam_groups", "--num-beam-groups"),
            ("beam_scoring", "--beam-scoring"),
            ("length_penalty", "--length-penalty"),
            ("top_k", "--top-k"),
            ("top_p", "--top-p"),
            ("temperature", "--temperature"),
            ("prompt", "--prompt"),
            ("sampling", "--strategy top-k or top-p"),
            ("generation_type=\"beam_search\"", "--strategy beam"),
        ];
        match self {
            Self::Keywords if keyword == "sampling" => {
                "generation_type=\"top_k\" or generation_type=\"top_p\""
            }
            Self::Keywords => keyword,
            Self::Flags => FLAGS
                .iter()
                .find(|(k, _)| *k == keyword)
                .map_or(keyword, |(_, f)| f),
        }
    }

    /// What a failed validation adds, pointing at the settings.
    fn hint(self) -> &'static str {
        match self {
            Self::Flags => "check the length, beam and sampling flags",
            Self::Keywords => "check the length, beam and sampling arguments",
        }
    }
}

/// Generation settings as a user gives them: `None` keeps open_clip 3.3.0's default.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GenerationOptions {
    /// Decoding strategy (default: beam search).
    pub strategy: Option<StrategyChoice>,
    /// Beams per image (beam search; default 6, or the given number in one group).
    pub num_beams: Option<usize>,
    /// Beam groups (default 3 with the default beams, else 1).
    pub num_beam_groups: Option<usize>,
    /// How beams are scored (default: raw logits, as open_clip).
    pub beam_scoring: Option<BeamScoring>,
    /// Finished beams are ranked by score / length^P (default 1).
    pub length_penalty: Option<f32>,
    /// Keep the K most likely tokens when sampling (default 1 for top-k sampling).
    pub top_k: Option<usize>,
    /// Keep the most likely tokens holding this probability mass (default 0.1 for nucleus sampling).
    pub top_p: Option<f32>,
    /// Sampling temperature (default 1).
    pub temperature: Option<f32>,
    /// Penalty on repeated tokens (default 1 = none).
    pub repetition_penalty: Option<f32>,
    /// open_clip's `min_seq_len`: the end token is not allowed before this many tokens (default 5).
    pub min_length: Option<usize>,
    /// open_clip's `seq_len`: the longest caption in tokens, start and end included (default 30, capped to a
    /// shorter context).
    pub max_length: Option<usize>,
    /// Text the captions continue.
    pub prompt: Option<String>,
    /// Seed of the sampling RNG.
    pub seed: u64,
}

impl GenerationOptions {
    /// The validated config for a model with `vocab_size` tokens and `context_length` decoder positions; errors
    /// name the settings as `names` says.
    pub fn config(
        &self,
        vocab_size: usize,
        context_length: usize,
        tokenizer: &Tokenizer,
        names: OptionNames,
    ) -> Result<GenerationConfig> {
        let mut cfg = self.build(vocab_size, tokenizer, names)?;
        if self.max_length.is_none() {
            // open_clip's default seq_len (30) assumes a 76-token model; a shorter context caps it.
            cfg.max_tokens = cfg.max_tokens.min(context_length);
            cfg.min_tokens_before_eos = cfg.min_tokens_before_eos.min(cfg.max_tokens);
        }
        cfg.validate(vocab_size, context_length).map_err(|e| {
            GenerateError::Config(format!("{} ({})", config_message(e), names.hint()))
        })?;
        Ok(cfg)
    }

    /// open_clip's preset changed by the options (unvalidated).
    fn build(
        &self,
        vocab_size: usize,
        tokenizer: &Tokenizer,
        names: OptionNames,
    ) -> Result<GenerationConfig> {
        let n = |k| names.of(k);
        let bad = |msg: String| Err(GenerateError::Options(msg));
        let mut cfg = GenerationConfig::open_clip(vocab_size);
        let preset_beam = match cfg.strategy {
            Strategy::Beam(b) => b,
            _ => BeamConfig {
                num_beams: 6,
                num_beam_groups: 3,
                length_penalty: 1.0,
                scoring: BeamScoring::RawLogits,
            },
        };
        let beam_set = self.num_beams.is_some()
            || self.num_beam_groups.is_some()
            || self.beam_scoring.is_some()
            || self.length_penalty.is_some();
        let sampling_set =
            self.top_k.is_some() || self.top_p.is_some() || self.temperature.is_some();
        let sampling_names = format!("{}/{}/{}", n("top_k"), n("top_p"), n("temperature"));
        let strategy = self.strategy.unwrap_or(StrategyChoice::Beam);
        match strategy {
            StrategyChoice::Beam => {
                if sampling_set {
                    return bad(format!(
                        "{sampling_names} apply to {}, not beam search",
                        n("sampling")
                    ));
                }
                let num_beams = self.num_beams.unwrap_or(preset_beam.num_beams);
                let groups = self.num_beam_groups.unwrap_or(if self.num_beams.is_some() {
                    1
                } else {
                    preset_beam.num_beam_groups
                });
                cfg.strategy = Strategy::Beam(BeamConfig {
                    num_beams,
                    num_beam_groups: groups,
                    length_penalty: self.length_penalty.unwrap_or(preset_beam.length_penalty),
                    scoring: self.beam_scoring.unwrap_or(preset_beam.scoring),
                });
            }
            StrategyChoice::Greedy | StrategyChoice::TopK | StrategyChoice::TopP => {
                if beam_set {
                    return bad(format!(
                        "{}/{}/{}/{} apply to {}",
                        n("num_beams"),
                        n("num_beam_groups"),
                        n("beam_scoring"),
                        n("length_penalty"),
                        n("generation_type=\"beam_search\"")
                    ));
                }
                cfg.strategy = match strategy {
                    StrategyChoice::Greedy if sampling_set => {
                        return bad(format!(
                            "greedy decoding takes no {sampling_names}; use {}",
                            n("sampling")
                        ))
                    }
                    StrategyChoice::Greedy => Strategy::Greedy,
                    StrategyChoice::TopK => Strategy::Sample(SamplingConfig {
                        top_k: Some(self.top_k.unwrap_or(1)),
                        top_p: self.top_p,
                        temperature: self.temperature.unwrap_or(1.0),
                    }),
                    _ => Strategy::Sample(SamplingConfig {
                        top_k: self.top_k,
                        top_p: Some(self.top_p.unwrap_or(0.1)),
                        temperature: self.temperature.unwrap_or(1.0),
                    }),
                };
            }
        }
        if let Some(r) = self.repetition_penalty {
            cfg.repetition_penalty = r;
        }
        if let Some(len) = self.max_length {
            cfg.max_tokens = len;
        }
        if let Some(len) = self.min_length {
            cfg.min_tokens_before_eos = len;
        }
        if let Some(prompt) = &self.prompt {
            cfg.prompt = tokenizer.encode(prompt);
            if cfg.prompt.is_empty() {
                return bad(format!(
                    "{} {prompt:?} has no tokens; give some words or leave it out",
                    n("prompt")
                ));
            }
        }
        cfg.seed = self.seed;
        Ok(cfg)
    }
}

/// The message of a config error without the variant's own prefix, so the hint can follow it.
fn config_message(e: GenerateError) -> String {
    match e {
        GenerateError::Config(msg) => msg,
        other => other.to_string(),
    }
}

impl GenerationConfig {
    /// The config for the batch whose first image is `first_index` of a run: distinct, reproducible random
    /// streams per batch (the same seed and batch size give the same captions).
    pub fn for_batch(&self, first_index: usize) -> GenerationConfig {
        let mut batch = self.clone();
        batch.seed = self.seed.wrapping_add(first_index as u64);
        batch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(opts: &GenerationOptions, names: OptionNames) -> String {
        let tok = Tokenizer::new().unwrap();
        opts.config(49408, 76, &tok, names).unwrap_err().to_string()
    }

    #[test]
    fn defaults_are_open_clips_call() {
        let tok = Tokenizer::new().unwrap();
        let cfg = GenerationOptions::default()
            .config(49408, 76, &tok, OptionNames::Flags)
            .unwrap();
        assert_eq!(cfg, GenerationConfig::open_clip(49408));
        let short = GenerationOptions::default()
            .config(49408, 20, &tok, OptionNames::Flags)
            .unwrap();
        assert_eq!((short.max_tokens, short.min_tokens_before_eos), (20, 5));
    }

    #[test]
    fn conflicting_settings_are_named_as_the_user_wrote_them() {
        let sampling_with_beams = GenerationOptions {
            top_p: Some(0.5),
            ..Default::default()
        };
        assert!(err(&sampling_with_beams, OptionNames::Flags).contains(
            "--top-k/--top-p/--temperature apply to --strategy top-k or top-p, not beam search"
        ));
        assert!(err(&sampling_with_beams, OptionNames::Keywords).contains(
            "top_k/top_p/temperature apply to generation_type=\"top_k\" or generation_type=\"top_p\""
        ));
        let beams_with_greedy = GenerationOptions {
            strategy: Some(StrategyChoice::Greedy),
            num_beams: Some(4),
            ..Default::default()
        };
        assert!(err(&beams_with_greedy, OptionNames::Keywords)
            .contains("num_beams/num_beam_groups/beam_scoring/length_penalty apply to generation_type=\"beam_search\""));
        let greedy_sampling = GenerationOptions {
            strategy: Some(StrategyChoice::Greedy),
            temperature: Some(0.5),
            ..Default::default()
        };
        assert!(err(&greedy_sampling, OptionNames::Flags)
            .contains("greedy decoding takes no --top-k/--top-p/--temperature"));
        let empty_prompt = GenerationOptions {
            prompt: Some("  ".into()),
            ..Default::default()
        };
        assert!(err(&empty_prompt, OptionNames::Keywords).contains("prompt \"  \" has no tokens"));
        let too_long = GenerationOptions {
            max_length: Some(100),
            ..Default::default()
        };
        let msg = err(&too_long, OptionNames::Keywords);
        assert!(
            msg.contains("max_tokens must be between 2")
                && msg.ends_with("(check the length, beam and sampling arguments)"),
            "{msg}"
        );
    }

    #[test]
    fn batches_get_their_own_seeds() {
        let cfg = GenerationConfig::open_clip(49408);
        assert_eq!(cfg.for_batch(8).seed, 8);
    }
}
