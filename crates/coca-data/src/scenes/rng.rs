//! A tiny counter-based random source: every scene draws from its own generator, seeded from
//! `(seed, split, index)` alone, so any scene can be produced on its own, in any order, on any thread.

/// SplitMix64's output mixer: a bijection on `u64` with good avalanche, used both to derive seeds and as the
/// generator's output function.
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Combine two words into one well-mixed seed (order matters).
pub(crate) fn combine(a: u64, b: u64) -> u64 {
    mix64(mix64(a) ^ b.wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(17))
}

/// SplitMix64 (Steele, Lea and Flood, 2014): 64 bits of state, period 2^64, plenty for a few dozen draws
/// per scene.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator starting from `seed`.
    pub(crate) fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The next 64 random bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix64(self.state)
    }

    /// Uniform in `[0, 1)` with 53 bits of precision.
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `[lo, hi)` (or `lo` when the interval is empty).
    pub(crate) fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        if hi <= lo {
            lo
        } else {
            lo + (hi - lo) * self.unit()
        }
    }

    /// Uniform in `0..n`; `n` must be positive. The modulo bias is below 2^-40 for the small `n` used here.
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// A fair coin.
    pub(crate) fn coin(&mut self) -> bool {
        self.next_u64() >> 63 == 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_are_reproducible_and_in_range() {
        let mut a = SplitMix64::new(7);
        let mut b = SplitMix64::new(7);
        for _ in 0..1000 {
            let x = a.unit();
            assert_eq!(x, b.unit());
            assert!((0.0..1.0).contains(&x));
            assert!(a.below(5) < 5);
            b.below(5);
        }
        assert_ne!(combine(1, 2), combine(2, 1));
    }

    #[test]
    fn unit_is_roughly_uniform() {
        let mut rng = SplitMix64::new(42);
        let n = 20_000;
        let mean = (0..n).map(|_| rng.unit()).sum::<f64>() / n as f64;
        assert!((mean - 0.5).abs() < 0.01, "mean {mean}");
    }
}
