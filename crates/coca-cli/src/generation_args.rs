//! The decoding flags (`--strategy`, `--num-beams`, `--top-p`, ...), shared by `coca caption`, `coca serve`
//! and `coca eval captioning`; open_clip's `generate` defaults unless a flag changes them.

use anyhow::Result;
use clap::{Args, ValueEnum};
use coca_generate::{
    BeamScoring, GenerationConfig, GenerationOptions, OptionNames, StrategyChoice,
};
use coca_model::Coca;
use coca_text::Tokenizer;

/// Decoding strategies on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StrategyArg {
    /// The most likely token at every step.
    Greedy,
    /// Beam search (--num-beams, --num-beam-groups, --beam-scoring, --length-penalty).
    Beam,
    /// Sample among the --top-k most likely tokens (open_clip's "top_k"; default k = 1, i.e. greedy).
    TopK,
    /// Nucleus sampling: the most likely tokens holding --top-p of the probability (open_clip's "top_p").
    TopP,
}

/// Ready-made settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PresetArg {
    /// open_clip 3.3.0's `CoCa.generate` defaults.
    #[value(name = "open_clip")]
    OpenClip,
}

/// Beam scores on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ScoringArg {
    /// Summed raw logits, what open_clip does.
    Logits,
    /// Summed log-probabilities, the textbook objective.
    LogProbs,
}

/// The decoding flags, shared by `coca caption` and `coca eval captioning`.
#[derive(Debug, Clone, Args)]
pub struct GenerationArgs {
    /// Starting settings that the other flags modify.
    #[arg(long, value_enum, default_value = "open_clip")]
    pub preset: PresetArg,
    /// Decoding strategy (default: the preset's, beam search).
    #[arg(long, value_enum)]
    pub strategy: Option<StrategyArg>,
    /// Beams per image (beam search).
    #[arg(long, value_name = "N")]
    pub num_beams: Option<usize>,
    /// Beam groups; without a diversity penalty (open_clip has none) N beams in G groups equal N/G beams.
    #[arg(long, value_name = "G")]
    pub num_beam_groups: Option<usize>,
    /// How beams are scored (default: logits, as open_clip).
    #[arg(long, value_enum, value_name = "logits|log-probs")]
    pub beam_scoring: Option<ScoringArg>,
    /// Finished beams are ranked by score / length^P.
    #[arg(long, value_name = "P")]
    pub length_penalty: Option<f32>,
    /// Keep the K most likely tokens when sampling (default 1, open_clip's).
    #[arg(long, value_name = "K")]
    pub top_k: Option<usize>,
    /// Keep the most likely tokens holding this probability mass when sampling (default 0.1, open_clip's).
    #[arg(long, value_name = "P")]
    pub top_p: Option<f32>,
    /// Sampling temperature (> 0; lower is closer to greedy).
    #[arg(long, value_name = "T")]
    pub temperature: Option<f32>,
    /// Penalise tokens already in the caption (1 = none; transformers' rule).
    #[arg(long, value_name = "R")]
    pub repetition_penalty: Option<f32>,
    /// The end token is not allowed before the caption has this many tokens, start token included
    /// (open_clip's min_seq_len).
    #[arg(long, value_name = "N")]
    pub min_length: Option<usize>,
    /// Longest caption in tokens, start and end tokens included (open_clip's seq_len; at most 76).
    #[arg(long, value_name = "N")]
    pub max_length: Option<usize>,
    /// Text the captions continue (it is part of the printed caption).
    #[arg(long, value_name = "TEXT")]
    pub prompt: Option<String>,
    /// Seed for sampling (same seed and batch size → same captions).
    #[arg(long, default_value_t = 0, value_name = "S")]
    pub seed: u64,
}

impl GenerationArgs {
    /// The generation config for `model`: the preset changed by the flags, open_clip's default length capped
    /// to a shorter context, and validated.
    pub fn config_for(&self, model: &Coca, tokenizer: &Tokenizer) -> Result<GenerationConfig> {
        let context = model
            .text()
            .context_length()
            .min(model.text_decoder().context_length());
        Ok(self.options().config(
            model.text().vocab_size(),
            context,
            tokenizer,
            OptionNames::Flags,
        )?)
    }

    /// The flags as library options (open_clip's preset is the only one, so it changes nothing).
    fn options(&self) -> GenerationOptions {
        let PresetArg::OpenClip = self.preset;
        GenerationOptions {
            strategy: self.strategy.map(|s| match s {
                StrategyArg::Greedy => StrategyChoice::Greedy,
                StrategyArg::Beam => StrategyChoice::Beam,
                StrategyArg::TopK => StrategyChoice::TopK,
                StrategyArg::TopP => StrategyChoice::TopP,
            }),
            num_beams: self.num_beams,
            num_beam_groups: self.num_beam_groups,
            beam_scoring: self.beam_scoring.map(|s| match s {
                ScoringArg::Logits => BeamScoring::RawLogits,
                ScoringArg::LogProbs => BeamScoring::LogProbs,
            }),
            length_penalty: self.length_penalty,
            top_k: self.top_k,
            top_p: self.top_p,
            temperature: self.temperature,
            repetition_penalty: self.repetition_penalty,
            min_length: self.min_length,
            max_length: self.max_length,
            prompt: self.prompt.clone(),
            seed: self.seed,
        }
    }
}
