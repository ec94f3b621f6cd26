//! ROUGE-L as pycocoevalcap's `rouge.py` computes it: LCS-based F-measure with beta 1.2.

const BETA: f64 = 1.2;

/// Length of the longest common subsequence of two token sequences.
fn lcs(a: &[&str], b: &[&str]) -> usize {
    let mut prev = vec![0usize; b.len() + 1];
    let mut cur = vec![0usize; b.len() + 1];
    for x in a {
        for (j, y) in b.iter().enumerate() {
            cur[j + 1] = if x == y {
                prev[j] + 1
            } else {
                cur[j].max(prev[j + 1])
            };
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// ROUGE-L of one tokenised candidate against its tokenised references.
///
/// Precision and recall are each maximised over the references separately (not taken from the
/// single best reference), as pycocoevalcap does. Tokens are split on single spaces as there, so an
/// empty candidate counts as one empty token.
pub(crate) fn rouge_l(candidate: &str, references: &[String]) -> f64 {
    let cand: Vec<&str> = candidate.split(' ').collect();
    let mut prec_max = 0.0f64;
    let mut rec_max = 0.0f64;
    for r in references {
        let refw: Vec<&str> = r.split(' ').collect();
        let l = lcs(&refw, &cand) as f64;
        prec_max = prec_max.max(l / cand.len() as f64);
        rec_max = rec_max.max(l / refw.len() as f64);
    }
    if prec_max != 0.0 && rec_max != 0.0 {
        (1.0 + BETA * BETA) * prec_max * rec_max / (rec_max + BETA * BETA * prec_max)
    } else {
        0.0
    }
}
