//! BLEU-1..4 as pycocoevalcap's `bleu_scorer.py` computes it with the "closest" reference length.

use super::ngrams::{count_ngrams, python_split};
use std::collections::HashMap;

const N: usize = 4;
/// Added to numerators so that a zero count still gives a (tiny) positive precision.
const TINY: f64 = 1e-15;
/// Added to denominators so that an empty candidate does not divide by zero.
const SMALL: f64 = 1e-9;

/// The sufficient statistics of one candidate against its references.
struct Cooked {
    test_len: usize,
    ref_len: usize,
    guess: [usize; N],
    correct: [usize; N],
}

fn cook(candidate: &str, references: &[String]) -> Cooked {
    let ref_words: Vec<Vec<&str>> = references.iter().map(|r| python_split(r)).collect();
    let mut max_ref: HashMap<&[&str], usize> = HashMap::new();
    for words in &ref_words {
        for (gram, c) in count_ngrams(words, N) {
            let e = max_ref.entry(gram).or_insert(0);
            *e = (*e).max(c);
        }
    }
    let words = python_split(candidate);
    let test_len = words.len();
    // Closest reference length; on a tie the shorter reference (Python's tuple min).
    let ref_len = ref_words
        .iter()
        .map(|w| w.len())
        .min_by_key(|&l| (l.abs_diff(test_len), l))
        .unwrap_or(0);
    let mut guess = [0; N];
    let mut correct = [0; N];
    for (k, g) in guess.iter_mut().enumerate() {
        *g = (test_len + 1).saturating_sub(k + 1);
    }
    for (gram, c) in count_ngrams(&words, N) {
        correct[gram.len() - 1] += c.min(max_ref.get(gram).copied().unwrap_or(0));
    }
    Cooked {
        test_len,
        ref_len,
        guess,
        correct,
    }
}

/// Cumulative geometric means of the n-gram precisions with the brevity penalty.
fn bleu_from(correct: &[f64; N], guess: &[f64; N], test_len: f64, ref_len: f64) -> [f64; N] {
    let mut out = [0.0; N];
    let mut product = 1.0;
    for k in 0..N {
        product *= (correct[k] + TINY) / (guess[k] + SMALL);
        out[k] = product.powf(1.0 / (k as f64 + 1.0));
    }
    let ratio = (test_len + TINY) / (ref_len + SMALL);
    if ratio < 1.0 {
        for b in &mut out {
            *b *= (1.0 - 1.0 / ratio).exp();
        }
    }
    out
}

/// Corpus BLEU-1..4 and per-image BLEU-1..4 of tokenised captions.
pub(crate) fn bleu(pairs: &[(&str, &[String])]) -> ([f64; N], Vec<[f64; N]>) {
    let mut total_correct = [0.0; N];
    let mut total_guess = [0.0; N];
    let mut total_test = 0.0;
    let mut total_ref = 0.0;
    let mut per_image = Vec::with_capacity(pairs.len());
    for (candidate, refs) in pairs {
        let c = cook(candidate, refs);
        let correct = c.correct.map(|x| x as f64);
        let guess = c.guess.map(|x| x as f64);
        for k in 0..N {
            total_correct[k] += correct[k];
            total_guess[k] += guess[k];
        }
        total_test += c.test_len as f64;
        total_ref += c.ref_len as f64;
        per_image.push(bleu_from(
            &correct,
            &guess,
            c.test_len as f64,
            c.ref_len as f64,
        ));
    }
    let corpus = bleu_from(&total_correct, &total_guess, total_test, total_ref);
    (corpus, per_image)
}
