//! Which frames of a video to look at.

/// The frame indices to sample from a video of `total` frames: the centre of each of `n` equal segments,
/// `⌊(i + ½)·total / n⌋` for `i = 0..n` — the rule of common video CLIP evaluations (uniform "segment"
/// sampling, as in TSN's test-time sampling). Indices are ascending; a video shorter than `n` frames repeats
/// frames. Empty when `total` or `n` is 0.
pub fn sample_indices(total: usize, n: usize) -> Vec<usize> {
    if total == 0 {
        return Vec::new();
    }
    (0..n)
        .map(|i| {
            // Integer arithmetic: ⌊(2i + 1)·total / 2n⌋, exact for any size.
            let index = ((2 * i + 1) as u128 * total as u128) / (2 * n as u128);
            (index as usize).min(total - 1)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::sample_indices;

    #[test]
    fn centres_of_equal_segments() {
        // 80 frames in 8 segments of 10: centres 5, 15, ..., 75.
        assert_eq!(sample_indices(80, 8), vec![5, 15, 25, 35, 45, 55, 65, 75]);
        // 10 frames in 4 segments of 2.5: centres 1.25, 3.75, 6.25, 8.75.
        assert_eq!(sample_indices(10, 4), vec![1, 3, 6, 8]);
        assert_eq!(sample_indices(7, 1), vec![3]);
    }

    #[test]
    fn short_videos_repeat_frames_and_empty_ones_give_none() {
        assert_eq!(sample_indices(1, 4), vec![0, 0, 0, 0]);
        assert_eq!(sample_indices(3, 6), vec![0, 0, 1, 1, 2, 2]);
        assert!(sample_indices(0, 8).is_empty());
        assert!(sample_indices(5, 0).is_empty());
    }

    #[test]
    fn indices_are_ascending_in_range_and_exactly_n() {
        for total in 1..60 {
            for n in 1..20 {
                let idx = sample_indices(total, n);
                assert_eq!(idx.len(), n);
                assert!(idx.windows(2).all(|w| w[0] <= w[1]));
                assert!(idx.iter().all(|&i| i < total));
                if n <= total {
                    // No repeats when there are enough frames.
                    assert!(idx.windows(2).all(|w| w[0] < w[1]), "{total} {n}");
                }
            }
        }
    }
}
