//! Mixtures of training sources: open_clip's `--train-data 'A::B' --train-data-upsampling-factors 1::4`.
//!
//! **Meaning.** Every sample of source `i` is drawn with a probability proportional to its factor `f_i`,
//! as open_clip draws the shards of source `i` with weight `f_i`. Source `i`'s expected share of a batch is
//! therefore `f_i·n_i / Σ_j f_j·n_j`, where `n_i` is its number of samples: equal factors mix the sources in
//! proportion to their sizes, and factor 4 on a source makes each of its samples 4 times as likely. `n_i`
//! is exact for folders, file lists, CSV files, class folders and indexed sources (their listed items); for
//! shards it is the first shard's item count (from its tar headers) times the number of shards, because
//! counting every shard would read every tar header of a large collection before training starts, and
//! img2dataset writes shards of equal size but for the last.
//!
//! **Draws.** Each position of the mixed stream (`slot`) picks its source with a generator keyed by
//! `(seed, rank, world size, slot)`, then takes that source's next item, so the composition of a batch is a
//! function of the seed and the batch's place in the stream only. Each source keeps its own epoch and
//! position and is ordered exactly as a loader of that source alone would order it, with its own seed
//! ([`source_seed`]); a source that runs out starts its next epoch while the others go on.

use crate::error::DataError;

use super::rng::{Purpose, Rng};

/// Parse open_clip's `--train-data-upsampling-factors` text, such as `1::4`, for `sources` sources: one
/// factor per source, separated by `::`. Fails (naming the text) on a count that differs from `sources`, a
/// factor that is not a number, a negative, infinite or NaN factor, and factors that are all 0. A factor of 0
/// leaves its source out of the batches.
pub fn parse_upsampling_factors(text: &str, sources: usize) -> Result<Vec<f64>, DataError> {
    let bad = |detail: String| DataError::Mixture {
        detail: format!("upsampling factors `{text}`: {detail}"),
    };
    let factors = text
        .split("::")
        .enumerate()
        .map(|(i, part)| {
            part.trim()
                .parse::<f64>()
                .map_err(|_| bad(format!("factor {} (`{part}`) is not a number", i + 1)))
        })
        .collect::<Result<Vec<f64>, _>>()?;
    check_factors(&factors, sources).map_err(&bad)?;
    Ok(factors)
}

/// Check mixture factors: one per source, each finite and not negative, at least one positive. A factor of
/// 0 leaves its source out of the batches (it is still opened and checked).
pub(crate) fn check_factors(factors: &[f64], sources: usize) -> Result<(), String> {
    if sources == 0 {
        return Err("no sources to mix".into());
    }
    if factors.len() != sources {
        return Err(format!(
            "{} factors for {sources} sources: give one per source, separated by `::`",
            factors.len()
        ));
    }
    if let Some((i, f)) = factors
        .iter()
        .enumerate()
        .find(|(_, f)| !f.is_finite() || **f < 0.0)
    {
        return Err(format!(
            "factor {} is {f}: factors must be finite and not negative",
            i + 1
        ));
    }
    if factors.iter().all(|&f| f == 0.0) {
        return Err("every factor is 0: at least one source must have a positive factor".into());
    }
    Ok(())
}

/// The seed of a mixture's source `index`: the run's seed for the first source, so that it is ordered,
/// augmented and (when labelled) captioned exactly as a loader of that source alone; a seed derived from it
/// for the others, so that two sources of the same size are not permuted alike.
pub fn source_seed(seed: u64, index: usize) -> u64 {
    match index {
        0 => seed,
        i => Rng::keyed(seed, Purpose::Source, &[i as u64]).next_u64(),
    }
}

/// Which source each slot of the mixed stream comes from.
#[derive(Debug, Clone)]
pub(crate) struct Mix {
    /// `f_i · n_i` of each source.
    weights: Vec<f64>,
    seed: u64,
    rank: u64,
    world_size: u64,
}

impl Mix {
    /// A mixture of sources with these `factors` and sample counts (`sizes`); the factors are checked.
    pub(crate) fn new(
        factors: &[f64],
        sizes: &[u64],
        seed: u64,
        rank: usize,
        world_size: usize,
    ) -> Self {
        // A source is never empty once checked; `max(1)` keeps a shard count estimate of 0 (a first shard
        // of non-sample files) from silencing a source whose other shards have samples.
        let weights = factors
            .iter()
            .zip(sizes)
            .map(|(&f, &n)| f * n.max(1) as f64)
            .collect();
        Self {
            weights,
            seed,
            rank: rank as u64,
            world_size: world_size as u64,
        }
    }

    /// Each source's expected share of the samples.
    pub(crate) fn shares(&self) -> Vec<f64> {
        let total: f64 = self.weights.iter().sum();
        self.weights.iter().map(|w| w / total).collect()
    }

    /// The source of `slot`.
    pub(crate) fn draw(&self, slot: u64) -> usize {
        let mut rng = Rng::keyed(
            self.seed,
            Purpose::Mixture,
            &[self.rank, self.world_size, slot],
        );
        let total: f64 = self.weights.iter().sum();
        let target = rng.uniform() * total;
        let mut below = 0.0;
        for (i, &w) in self.weights.iter().enumerate() {
            below += w;
            if w > 0.0 && target < below {
                return i;
            }
        }
        // Rounding can leave `target` at the very top: the last source that can be drawn.
        self.weights.iter().rposition(|&w| w > 0.0).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn factors_parse_and_bad_ones_are_named() {
        assert_eq!(parse_upsampling_factors("1::4", 2).unwrap(), [1.0, 4.0]);
        assert_eq!(
            parse_upsampling_factors(" 0.5 :: 0 ::2", 3).unwrap(),
            [0.5, 0.0, 2.0]
        );
        let cases = [
            ("1::4", 3, "2 factors for 3 sources"),
            ("1::x", 2, "factor 2 (`x`) is not a number"),
            (
                "1::-2",
                2,
                "factor 2 is -2: factors must be finite and not negative",
            ),
            ("NaN::1", 2, "factor 1 is NaN"),
            ("inf::1", 2, "factor 1 is inf"),
            ("0::0", 2, "every factor is 0"),
        ];
        for (text, n, needle) in cases {
            let err = parse_upsampling_factors(text, n).unwrap_err().to_string();
            assert!(
                err.contains(needle) && err.contains(&format!("`{text}`")),
                "{text}: {err}"
            );
        }
    }

    #[test]
    fn draws_follow_the_weights() {
        // Weights 1·30 and 4·10 (shares 3/7 and 4/7), and a source left out by factor 0.
        let mix = Mix::new(&[1.0, 4.0, 0.0], &[30, 10, 50], 5, 0, 1);
        let shares = mix.shares();
        assert!((shares[0] - 3.0 / 7.0).abs() < 1e-12 && shares[2] == 0.0);
        let n = 20_000u64;
        let mut counts = [0u64; 3];
        for slot in 0..n {
            counts[mix.draw(slot)] += 1;
        }
        assert_eq!(counts[2], 0);
        // Binomial standard deviation sqrt(n·p·(1-p)) ≈ 70: allow 4 of them.
        let sd = (n as f64 * shares[0] * shares[1]).sqrt();
        let expected = n as f64 * shares[0];
        assert!(
            (counts[0] as f64 - expected).abs() < 4.0 * sd,
            "{counts:?}, expected {expected} ± {sd}"
        );
        let other = Mix::new(&[1.0, 4.0, 0.0], &[30, 10, 50], 5, 1, 2);
        assert!(
            (0..64).any(|s| mix.draw(s) != other.draw(s)),
            "ranks draw alike"
        );
    }

    #[test]
    fn the_first_source_keeps_the_run_seed() {
        assert_eq!(source_seed(42, 0), 42);
        assert_ne!(source_seed(42, 1), source_seed(42, 2));
        assert_ne!(source_seed(42, 1), 42);
    }
}
