//! CIDEr-D as pycocoevalcap's `cider_scorer.py` computes it.
//!
//! TF-IDF vectors of 1..4-grams with document frequencies taken from the references of the evaluated
//! set itself, candidate weights clipped at the reference's, a Gaussian length penalty (sigma 6),
//! the mean over n-gram orders and references, times 10.

use super::ngrams::{count_ngrams, python_split, NgramCounts};
use std::collections::{HashMap, HashSet};

const N: usize = 4;
const SIGMA: f64 = 6.0;

/// TF-IDF weights per n-gram order, their norms, and the caption length (count of bigrams, as in
/// pycocoevalcap, where "length" is accumulated for n-gram index 1).
struct Vector<'a> {
    weights: [HashMap<&'a [&'a str], f64>; N],
    norms: [f64; N],
    length: f64,
}

fn vectorise<'a>(
    counts: &NgramCounts<'a>,
    doc_freq: &HashMap<&[&str], f64>,
    log_ref_len: f64,
) -> Vector<'a> {
    let mut weights: [HashMap<&[&str], f64>; N] = Default::default();
    let mut norms = [0.0; N];
    let mut length = 0.0;
    for (&gram, &tf) in counts {
        let df = doc_freq.get(gram).copied().unwrap_or(0.0).max(1.0).ln();
        let n = gram.len() - 1;
        let w = tf as f64 * (log_ref_len - df);
        weights[n].insert(gram, w);
        norms[n] += w * w;
        if n == 1 {
            length += tf as f64;
        }
    }
    Vector {
        weights,
        norms: norms.map(f64::sqrt),
        length,
    }
}

fn similarity(hyp: &Vector, refv: &Vector) -> [f64; N] {
    let delta = hyp.length - refv.length;
    let penalty = (-(delta * delta) / (2.0 * SIGMA * SIGMA)).exp();
    let mut val = [0.0; N];
    for (n, v) in val.iter_mut().enumerate() {
        for (gram, &w) in &hyp.weights[n] {
            let r = refv.weights[n].get(gram).copied().unwrap_or(0.0);
            *v += w.min(r) * r;
        }
        if hyp.norms[n] != 0.0 && refv.norms[n] != 0.0 {
            *v /= hyp.norms[n] * refv.norms[n];
        }
        *v *= penalty;
    }
    val
}

/// Corpus CIDEr-D (mean over images) and per-image CIDEr-D of tokenised captions.
pub(crate) fn cider_d(pairs: &[(&str, &[String])]) -> (f64, Vec<f64>) {
    let cand_words: Vec<Vec<&str>> = pairs.iter().map(|(c, _)| python_split(c)).collect();
    let ref_words: Vec<Vec<Vec<&str>>> = pairs
        .iter()
        .map(|(_, refs)| refs.iter().map(|r| python_split(r)).collect())
        .collect();
    let cand_counts: Vec<NgramCounts> = cand_words.iter().map(|w| count_ngrams(w, N)).collect();
    let ref_counts: Vec<Vec<NgramCounts>> = ref_words
        .iter()
        .map(|refs| refs.iter().map(|w| count_ngrams(w, N)).collect())
        .collect();

    // Document frequency: in how many images' reference sets an n-gram occurs.
    let mut doc_freq: HashMap<&[&str], f64> = HashMap::new();
    for refs in &ref_counts {
        let grams: HashSet<&[&str]> = refs.iter().flat_map(|c| c.keys().copied()).collect();
        for g in grams {
            *doc_freq.entry(g).or_insert(0.0) += 1.0;
        }
    }
    let log_ref_len = (pairs.len() as f64).ln();

    let scores: Vec<f64> = cand_counts
        .iter()
        .zip(&ref_counts)
        .map(|(cand, refs)| {
            let hyp = vectorise(cand, &doc_freq, log_ref_len);
            let mut sum = [0.0; N];
            for r in refs {
                let refv = vectorise(r, &doc_freq, log_ref_len);
                for (s, v) in sum.iter_mut().zip(similarity(&hyp, &refv)) {
                    *s += v;
                }
            }
            let mean = sum.iter().sum::<f64>() / N as f64;
            mean / refs.len() as f64 * 10.0
        })
        .collect();
    let corpus = if scores.is_empty() {
        0.0
    } else {
        scores.iter().sum::<f64>() / scores.len() as f64
    };
    (corpus, scores)
}
