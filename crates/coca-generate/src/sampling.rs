//! Greedy decoding and sampling with open_clip's sampling-path rules, finished rows leaving the batch.

use candle_core::Tensor;
use coca_model::Coca;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::caption::Caption;
use crate::config::{GenerationConfig, SamplingConfig};
use crate::error::{GenerateError, Result};
use crate::logits;
use crate::session::DecodeSession;

/// One image's caption in progress.
struct Row {
    tokens: Vec<u32>,
    log_prob: f32,
    rng: ChaCha8Rng,
}

/// Greedy (`sampling == None`) or sampled captions for every image of `image_tokens` (images, n, width).
///
/// open_clip's rules (`CoCa.generate` with `"top_k"`/`"top_p"`): a row whose last token is the end id (or the
/// pad id, with `pad_ends_caption`) is finished; the processors see the whole row (start token and prompt
/// included); when the sequence is one short of `max_tokens` the end token is forced.
pub(crate) fn run(
    model: &Coca,
    image_tokens: &Tensor,
    cfg: &GenerationConfig,
    sampling: Option<SamplingConfig>,
    cancel: &dyn Fn() -> bool,
) -> Result<Vec<Caption>> {
    let images = image_tokens.dim(0)?;
    let mut start = vec![cfg.special.sot];
    start.extend_from_slice(&cfg.prompt);
    let prompt_len = start.len();
    let mut rows: Vec<Row> = (0..images)
        .map(|i| {
            let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
            rng.set_stream(i as u64);
            Row {
                tokens: start.clone(),
                log_prob: 0.0,
                rng,
            }
        })
        .collect();
    let ends = |t: u32| t == cfg.special.eos || (cfg.pad_ends_caption && t == cfg.special.pad);
    let mut session = DecodeSession::new(model, image_tokens, 1)?;
    let mut logits_t = session.extend(&vec![start.clone(); images])?;
    // `active[i]` = the image whose caption is session row i.
    let mut active: Vec<usize> = (0..images).collect();
    if ends(start[start.len() - 1]) {
        active.clear();
    }
    let mut len = start.len();
    while !active.is_empty() {
        if cancel() {
            return Err(GenerateError::Cancelled);
        }
        let scores = logits_t.to_vec2::<f32>()?;
        let mut keep = Vec::with_capacity(active.len());
        for (r, &img) in active.iter().enumerate() {
            let row = &mut rows[img];
            let raw = &scores[r];
            let mut s = raw.clone();
            logits::apply_repetition_penalty(&mut s, &row.tokens, cfg.repetition_penalty);
            logits::apply_min_length(&mut s, len, cfg.min_tokens_before_eos, cfg.special.eos);
            let token = if len + 1 == cfg.max_tokens {
                cfg.special.eos
            } else {
                match sampling {
                    None => logits::argmax(&s) as u32,
                    Some(sc) => draw(&mut s, sc, &mut row.rng) as u32,
                }
            };
            row.log_prob += token_log_prob(raw, token as usize);
            row.tokens.push(token);
            if !ends(token) {
                keep.push(r);
            }
        }
        len += 1;
        if keep.is_empty() || len >= cfg.max_tokens {
            break;
        }
        session.select(&keep, &keep)?;
        active = keep.iter().map(|&r| active[r]).collect();
        let next: Vec<Vec<u32>> = active
            .iter()
            .map(|&img| vec![rows[img].tokens[len - 1]])
            .collect();
        logits_t = session.extend(&next)?;
    }
    Ok(rows
        .into_iter()
        .map(|row| {
            let last = row.tokens[row.tokens.len() - 1];
            Caption {
                finished: ends(last),
                tokens: row.tokens,
                prompt_len,
                log_prob: row.log_prob,
                beam_score: None,
            }
        })
        .collect())
}

/// `log softmax(raw)[token]`, without materialising the whole log-softmax.
pub(crate) fn token_log_prob(raw: &[f32], token: usize) -> f32 {
    let max = raw.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let lse = raw.iter().map(|&s| (s - max).exp()).sum::<f32>().ln();
    raw[token] - max - lse
}

/// Filter (top-k, then top-p, both before the temperature as in open_clip), then draw from
/// `softmax(scores / temperature)`.
fn draw(scores: &mut [f32], sc: SamplingConfig, rng: &mut ChaCha8Rng) -> usize {
    if let Some(k) = sc.top_k {
        logits::apply_top_k(scores, k);
    }
    if let Some(p) = sc.top_p {
        logits::apply_top_p(scores, p);
    }
    for s in scores.iter_mut() {
        *s /= sc.temperature;
    }
    let probs = logits::softmax(scores);
    let u: f64 = rng.random();
    let mut cumulative = 0.0;
    let mut last_possible = logits::argmax(scores);
    for (i, &p) in probs.iter().enumerate() {
        if p > 0.0 {
            cumulative += p;
            last_possible = i;
            if u < cumulative {
                return i;
            }
        }
    }
    // Rounding left the cumulative sum just under u: the last token with mass.
    last_possible
}
