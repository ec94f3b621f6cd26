//! Logit processors with transformers' semantics (the ones open_clip's `generate` uses), on one row of logits.

/// Forbid the end token while the sequence is shorter than `min_len` (`MinLengthLogitsProcessor`).
pub fn apply_min_length(scores: &mut [f32], seq_len: usize, min_len: usize, eos: u32) {
    if seq_len < min_len {
        if let Some(s) = scores.get_mut(eos as usize) {
            *s = f32::NEG_INFINITY;
        }
    }
}

/// `RepetitionPenaltyLogitsProcessor`: every token present in `history` has its score divided by `penalty` when
/// positive and multiplied when negative — once, however often it occurs.
pub fn apply_repetition_penalty(scores: &mut [f32], history: &[u32], penalty: f32) {
    if penalty == 1.0 {
        return;
    }
    let mut seen = vec![false; scores.len()];
    for &t in history {
        let t = t as usize;
        if t < scores.len() && !seen[t] {
            seen[t] = true;
            let s = scores[t];
            scores[t] = if s < 0.0 { s * penalty } else { s / penalty };
        }
    }
}

/// `TopKLogitsWarper`: everything below the `k`-th largest score becomes −∞ (ties with it survive).
pub fn apply_top_k(scores: &mut [f32], k: usize) {
    let k = k.clamp(1, scores.len().max(1));
    if k >= scores.len() {
        return;
    }
    let mut sorted = scores.to_vec();
    sorted.sort_unstable_by(|a, b| b.total_cmp(a));
    let threshold = sorted[k - 1];
    for s in scores.iter_mut() {
        if *s < threshold {
            *s = f32::NEG_INFINITY;
        }
    }
}

/// `TopPLogitsWarper`: sort ascending, drop tokens whose cumulative probability (from the least likely up) is
/// ≤ `1 − p`; the most likely token always stays. What remains is the smallest top set holding ≥ `p` of the mass.
pub fn apply_top_p(scores: &mut [f32], p: f32) {
    let probs = softmax(scores);
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let threshold = 1.0 - f64::from(p);
    let mut cumulative = 0.0f64;
    let last = order.len().saturating_sub(1);
    for (rank, &i) in order.iter().enumerate() {
        cumulative += probs[i];
        if rank < last && cumulative <= threshold {
            scores[i] = f32::NEG_INFINITY;
        }
    }
}

/// Softmax in f64 (−∞ scores get probability 0).
pub fn softmax(scores: &[f32]) -> Vec<f64> {
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        return vec![0.0; scores.len()];
    }
    let exp: Vec<f64> = scores
        .iter()
        .map(|&s| (f64::from(s) - f64::from(max)).exp())
        .collect();
    let sum: f64 = exp.iter().sum();
    exp.into_iter().map(|e| e / sum).collect()
}

/// Log-softmax in f32 (max-shifted), as `torch.log_softmax` computes it.
pub fn log_softmax(scores: &[f32]) -> Vec<f32> {
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let lse = scores.iter().map(|&s| (s - max).exp()).sum::<f32>().ln();
    scores.iter().map(|&s| s - max - lse).collect()
}

/// Index of the largest score (the first on ties).
pub fn argmax(scores: &[f32]) -> usize {
    let mut best = 0;
    for (i, &s) in scores.iter().enumerate() {
        if s > scores[best] {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_p_keeps_the_smallest_set_reaching_p() {
        // probs ≈ [0.5, 0.25, 0.15, 0.1]
        let probs = [0.5f32, 0.25, 0.15, 0.1];
        let mut s: Vec<f32> = probs.iter().map(|p| p.ln()).collect();
        apply_top_p(&mut s, 0.7);
        let kept: Vec<bool> = s.iter().map(|v| v.is_finite()).collect();
        assert_eq!(kept, vec![true, true, false, false]);
        let mut s: Vec<f32> = probs.iter().map(|p| p.ln()).collect();
        apply_top_p(&mut s, 0.8);
        let kept: Vec<bool> = s.iter().map(|v| v.is_finite()).collect();
        assert_eq!(kept, vec![true, true, true, false]);
        // A tiny p still keeps the most likely token.
        let mut s: Vec<f32> = probs.iter().map(|p| p.ln()).collect();
        apply_top_p(&mut s, 0.01);
        assert_eq!(s.iter().filter(|v| v.is_finite()).count(), 1);
        assert!(s[0].is_finite());
    }

    #[test]
    fn top_k_keeps_ties() {
        let mut s = vec![1.0f32, 3.0, 2.0, 3.0, 0.5];
        apply_top_k(&mut s, 1);
        assert_eq!(s.iter().filter(|v| v.is_finite()).count(), 2);
        let mut s = vec![1.0f32, 3.0, 2.0, 0.5];
        apply_top_k(&mut s, 2);
        assert_eq!(s[0], f32::NEG_INFINITY);
        assert_eq!(s[2], 2.0);
    }

    #[test]
    fn repetition_penalty_applies_once_per_token_with_sign_rule() {
        let mut s = vec![2.0f32, -2.0, 1.0];
        apply_repetition_penalty(&mut s, &[0, 1, 0, 0], 2.0);
        assert_eq!(s, vec![1.0, -4.0, 1.0]);
    }

    #[test]
    fn min_length_masks_eos_until_reached() {
        let mut s = vec![0.0f32; 4];
        apply_min_length(&mut s, 3, 4, 3);
        assert_eq!(s[3], f32::NEG_INFINITY);
        let mut s = vec![0.0f32; 4];
        apply_min_length(&mut s, 4, 4, 3);
        assert_eq!(s[3], 0.0);
    }

    #[test]
    fn log_softmax_normalises() {
        let l = log_softmax(&[1.0, 2.0, 3.0]);
        let total: f32 = l.iter().map(|v| v.exp()).sum();
        assert!((total - 1.0).abs() < 1e-6);
    }
}
