//! Where one entry lands when a row of scores is sorted best first.

/// The position of `row[target]` in `row` sorted by descending score, equal scores in index order
/// (a stable sort, and the first-maximum rule of `argmax`): the number of entries that score higher,
/// plus the equal ones before it. Rank 0 is the best; "in the top k" is `rank < k`.
///
/// Comparisons only, no sort: O(row length). The caller rejects NaN scores first.
pub(crate) fn rank_in_row(row: &[f32], target: usize) -> usize {
    let t = row[target];
    row.iter()
        .enumerate()
        .filter(|&(j, &s)| s > t || (s == t && j < target))
        .count()
}

/// The index of the highest score, the first one among equals (`argmax`). `None` for an empty row.
pub(crate) fn argmax(row: &[f32]) -> Option<usize> {
    let mut best: Option<usize> = None;
    for (j, &s) in row.iter().enumerate() {
        if best.is_none_or(|b| s > row[b]) {
            best = Some(j);
        }
    }
    best
}

/// Fraction of `ranks` below `k`: recall@k / top-k accuracy. `ranks` must not be empty.
pub(crate) fn fraction_below(ranks: &[usize], k: usize) -> f64 {
    ranks.iter().filter(|&&r| r < k).count() as f64 / ranks.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_count_better_scores_and_earlier_ties() {
        let row = [0.5, 0.9, 0.5, -1.0, 0.7];
        assert_eq!(rank_in_row(&row, 1), 0);
        assert_eq!(rank_in_row(&row, 4), 1);
        // The two 0.5s: index 0 first, then index 2.
        assert_eq!(rank_in_row(&row, 0), 2);
        assert_eq!(rank_in_row(&row, 2), 3);
        assert_eq!(rank_in_row(&row, 3), 4);
    }

    #[test]
    fn argmax_takes_the_first_maximum() {
        assert_eq!(argmax(&[0.1, 0.3, 0.3, 0.2]), Some(1));
        assert_eq!(argmax(&[-2.0]), Some(0));
        assert_eq!(argmax(&[]), None);
    }

    #[test]
    fn fractions_below_k() {
        assert_eq!(fraction_below(&[0, 1, 2, 5], 1), 0.25);
        assert_eq!(fraction_below(&[0, 1, 2, 5], 3), 0.75);
        assert_eq!(fraction_below(&[0, 1, 2, 5], 100), 1.0);
    }
}
