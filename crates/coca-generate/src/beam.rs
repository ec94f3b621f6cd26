//! Beam search with the rules of transformers' `BeamSearchScorer`/`BeamHypotheses` (early_stopping=False), as
//! open_clip 3.3.0's `_generate_beamsearch` drives it.
//!
//! Groups: open_clip splits its beams into groups but applies no diversity penalty, so each group is the same
//! search from the same start and contributes the same hypotheses; only one group's beams are computed.
//! Scores are f32 sums exactly as in torch, so rankings (and therefore captions) agree.

use candle_core::Tensor;
use coca_model::Coca;

use crate::caption::Caption;
use crate::config::{BeamConfig, BeamScoring, GenerationConfig};
use crate::error::{GenerateError, Result};
use crate::logits;
use crate::sampling::token_log_prob;
use crate::session::DecodeSession;

/// Score transformers gives every beam but the first of a group at the start, so that the beams diverge.
const INITIAL_OTHER_BEAM_SCORE: f32 = -1e9;

/// A finished (or, at the end, unfinished) hypothesis.
#[derive(Debug, Clone)]
struct Hypothesis {
    score: f64,
    tokens: Vec<u32>,
    log_prob: f32,
}

/// The n-best list of one image (`BeamHypotheses`).
#[derive(Debug)]
struct Hypotheses {
    beams: Vec<Hypothesis>,
    worst_score: f64,
    capacity: usize,
    length_penalty: f64,
}

impl Hypotheses {
    fn new(capacity: usize, length_penalty: f32) -> Self {
        Self {
            beams: Vec::new(),
            worst_score: 1e9,
            capacity,
            length_penalty: f64::from(length_penalty),
        }
    }

    fn add(&mut self, tokens: Vec<u32>, sum: f32, generated_len: usize, log_prob: f32) {
        let score = f64::from(sum) / (generated_len as f64).powf(self.length_penalty);
        if self.beams.len() < self.capacity || score > self.worst_score {
            self.beams.push(Hypothesis {
                score,
                tokens,
                log_prob,
            });
            if self.beams.len() > self.capacity {
                // Drop the worst (first index among equal scores, as Python's sort of (score, index) does).
                let mut order: Vec<usize> = (0..self.beams.len()).collect();
                order.sort_by(|&a, &b| {
                    self.beams[a]
                        .score
                        .total_cmp(&self.beams[b].score)
                        .then(a.cmp(&b))
                });
                self.worst_score = self.beams[order[1]].score;
                self.beams.remove(order[0]);
            } else {
                self.worst_score = self.worst_score.min(score);
            }
        }
    }

    fn is_done(&self, best_sum: f32, cur_len: usize) -> bool {
        self.beams.len() >= self.capacity
            && self.worst_score >= f64::from(best_sum) / (cur_len as f64).powf(self.length_penalty)
    }

    /// The best hypothesis; among equal scores the last added (Python's stable sort, then `pop()`).
    fn best(self) -> Option<Hypothesis> {
        let mut best: Option<Hypothesis> = None;
        for h in self.beams {
            if best.as_ref().is_none_or(|b| h.score >= b.score) {
                best = Some(h);
            }
        }
        best
    }
}

/// One live beam.
#[derive(Debug, Clone)]
struct Beam {
    tokens: Vec<u32>,
    score: f32,
    log_prob: f32,
}

/// A candidate continuation: (score, beam within the image, token).
type Candidate = (f32, usize, usize);

/// The `2·beams` best candidates over all beams of one image, best first; ties go to the lower flat index
/// (beam · vocab + token).
fn top_candidates(processed: &[Vec<f32>], beams: &[Beam], count: usize) -> Vec<Candidate> {
    let mut top: Vec<Candidate> = Vec::with_capacity(count + 1);
    for (j, (scores, beam)) in processed.iter().zip(beams).enumerate() {
        for (v, &s) in scores.iter().enumerate() {
            let total = s + beam.score;
            if total.is_nan() || (top.len() == count && total <= top[count - 1].0) {
                continue;
            }
            let pos = top.partition_point(|c| c.0 >= total);
            top.insert(pos, (total, j, v));
            top.truncate(count);
        }
    }
    top
}

/// Beam search for every image of `image_tokens` (images, n, width).
pub(crate) fn run(
    model: &Coca,
    image_tokens: &Tensor,
    cfg: &GenerationConfig,
    bc: BeamConfig,
    cancel: &dyn Fn() -> bool,
) -> Result<Vec<Caption>> {
    let images = image_tokens.dim(0)?;
    let g = bc.beams_per_group();
    let eos = cfg.special.eos;
    let mut start = vec![cfg.special.sot];
    start.extend_from_slice(&cfg.prompt);
    let prompt_len = start.len();

    let mut hyps: Vec<Hypotheses> = (0..images)
        .map(|_| Hypotheses::new(g, bc.length_penalty))
        .collect();
    // Live beams of the images still searching, `g` per image, in session row order.
    let mut beams: Vec<Beam> = (0..images * g)
        .map(|r| Beam {
            tokens: start.clone(),
            score: if r % g == 0 {
                0.0
            } else {
                INITIAL_OTHER_BEAM_SCORE
            },
            log_prob: 0.0,
        })
        .collect();
    let mut active: Vec<usize> = (0..images).collect();
    let mut done = vec![false; images];
    let mut session = DecodeSession::new(model, image_tokens, g)?;
    let mut logits_t = session.extend(&vec![start.clone(); images * g])?;
    let mut len = prompt_len;
    loop {
        if cancel() {
            return Err(GenerateError::Cancelled);
        }
        let raw = logits_t.to_vec2::<f32>()?;
        let mut next_beams = Vec::with_capacity(beams.len());
        let mut next_rows = Vec::with_capacity(beams.len());
        let mut kept_images = Vec::with_capacity(active.len());
        for (ai, &img) in active.iter().enumerate() {
            let rows = ai * g..(ai + 1) * g;
            let image_beams = &beams[rows.clone()];
            let processed: Vec<Vec<f32>> = rows
                .clone()
                .map(|r| {
                    let mut s = match bc.scoring {
                        BeamScoring::RawLogits => raw[r].clone(),
                        BeamScoring::LogProbs => logits::log_softmax(&raw[r]),
                    };
                    logits::apply_min_length(&mut s, len, cfg.min_tokens_before_eos, eos);
                    logits::apply_repetition_penalty(
                        &mut s,
                        &beams[r].tokens,
                        cfg.repetition_penalty,
                    );
                    s
                })
                .collect();
            let candidates = top_candidates(&processed, image_beams, 2 * g);
            let mut chosen = 0;
            for (rank, &(score, j, v)) in candidates.iter().enumerate() {
                let parent = &image_beams[j];
                let log_prob = parent.log_prob + token_log_prob(&raw[rows.start + j], v);
                if v as u32 == eos {
                    if rank >= g {
                        continue;
                    }
                    hyps[img].add(parent.tokens.clone(), score, len + 1, log_prob);
                } else {
                    let mut tokens = parent.tokens.clone();
                    tokens.push(v as u32);
                    next_beams.push(Beam {
                        tokens,
                        score,
                        log_prob,
                    });
                    next_rows.push(rows.start + j);
                    chosen += 1;
                }
                if chosen == g {
                    break;
                }
            }
            if chosen < g {
                return Err(GenerateError::Config(format!(
                    "beam search found only {chosen} of {g} continuations (is the vocabulary too small?)"
                )));
            }
            let best = candidates.first().map_or(f32::NEG_INFINITY, |c| c.0);
            if hyps[img].is_done(best, len + 1) {
                done[img] = true;
                next_beams.truncate(next_beams.len() - g);
                next_rows.truncate(next_rows.len() - g);
            } else {
                kept_images.push(ai);
            }
        }
        len += 1;
        let still: Vec<usize> = kept_images.iter().map(|&ai| active[ai]).collect();
        beams = next_beams;
        active = still;
        if active.is_empty() || len >= cfg.max_tokens {
            break;
        }
        session.select(&next_rows, &kept_images)?;
        let next: Vec<Vec<u32>> = beams.iter().map(|b| vec![b.tokens[len - 1]]).collect();
        logits_t = session.extend(&next)?;
    }
    // Images cut at the length limit: their live beams become hypotheses too.
    for (ai, &img) in active.iter().enumerate() {
        for b in &beams[ai * g..(ai + 1) * g] {
            hyps[img].add(b.tokens.clone(), b.score, b.tokens.len(), b.log_prob);
        }
    }
    hyps.into_iter()
        .enumerate()
        .map(|(img, h)| {
            let best = h.best().ok_or_else(|| {
                GenerateError::Config(format!(
                    "beam search produced no hypothesis for image {img}"
                ))
            })?;
            let mut tokens = best.tokens;
            // transformers' finalize appends the end token to every hypothesis shorter than the limit (those
            // that ended with it; the others are exactly at the limit).
            let finished = tokens.len() < cfg.max_tokens;
            if finished {
                tokens.push(eos);
            }
            Ok(Caption {
                tokens,
                prompt_len,
                log_prob: best.log_prob,
                beam_score: Some(best.score as f32),
                finished,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hypotheses_keep_the_best_and_track_the_worst() {
        let mut h = Hypotheses::new(2, 1.0);
        h.add(vec![1], -4.0, 2, 0.0); // -2
        h.add(vec![2], -3.0, 3, 0.0); // -1
        assert_eq!(h.worst_score, -2.0);
        h.add(vec![3], -1.0, 2, 0.0); // -0.5 evicts -2
        assert_eq!(h.beams.len(), 2);
        assert_eq!(h.worst_score, -1.0);
        // Done when even the best live candidate can't beat the worst kept one.
        assert!(h.is_done(-4.0, 3));
        assert!(!h.is_done(-2.0, 3));
        assert_eq!(h.best().unwrap().tokens, vec![3]);
    }

    #[test]
    fn candidates_are_sorted_with_beam_scores_added() {
        let beams = vec![
            Beam {
                tokens: vec![],
                score: 0.0,
                log_prob: 0.0,
            },
            Beam {
                tokens: vec![],
                score: -10.0,
                log_prob: 0.0,
            },
        ];
        let processed = vec![vec![1.0, 3.0, 2.0], vec![20.0, 0.0, 0.0]];
        let top = top_candidates(&processed, &beams, 3);
        assert_eq!(top, vec![(10.0, 1, 0), (3.0, 0, 1), (2.0, 0, 2)]);
    }
}
