//! The train/validation split of a probe's class-folder dataset (the folders themselves are read by
//! coca-data's [`coca_data::ClassFolders`], as `coca eval zeroshot-classification` reads them).

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Split item indices `0..labels.len()` into (train, validation), class by class: each class gives
/// `round(fraction · n)` items to validation, at least one when it has two or more and at most `n − 1`, chosen
/// by a seeded shuffle. Both lists come back sorted.
pub fn stratified_split(labels: &[usize], fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let classes = labels.iter().copied().max().map_or(0, |m| m + 1);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (mut train, mut val) = (Vec::new(), Vec::new());
    for class in 0..classes {
        let mut members: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == class).collect();
        members.shuffle(&mut rng);
        let n = members.len();
        let take = if n < 2 {
            0
        } else {
            ((fraction * n as f64).round() as usize).clamp(1, n - 1)
        };
        val.extend_from_slice(&members[..take]);
        train.extend_from_slice(&members[take..]);
    }
    train.sort_unstable();
    val.sort_unstable();
    (train, val)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_is_stratified_seeded_and_disjoint() {
        let labels: Vec<usize> = (0..30).map(|i| i % 3).collect();
        let (train, val) = stratified_split(&labels, 0.2, 7);
        assert_eq!(val.len(), 6);
        for c in 0..3 {
            assert_eq!(val.iter().filter(|&&i| labels[i] == c).count(), 2);
        }
        let mut all: Vec<usize> = train.iter().chain(&val).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..30).collect::<Vec<_>>());
        assert_eq!(
            stratified_split(&labels, 0.2, 7),
            (train.clone(), val.clone())
        );
        assert_ne!(stratified_split(&labels, 0.2, 8).1, val);
        // A class of one item stays in training; tiny fractions still validate each larger class.
        let (t, v) = stratified_split(&[0, 1, 1], 0.01, 0);
        assert_eq!((t.len(), v.len()), (2, 1));
    }
}
