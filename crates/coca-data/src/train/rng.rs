//! The loader's randomness: a small counter-free generator (SplitMix64) and keyed seeds.
//!
//! Every random choice is drawn from a generator seeded by `(seed, purpose, epoch, rank, ...)` only, never from
//! a shared generator whose state depends on how far other threads got, so any position of any epoch can be
//! replayed exactly. SplitMix64 is written out here (rather than taken from `rand`) because its output is
//! part of the checkpoint format: a dependency update must never change which samples a resumed run sees.

/// What a generator is used for; part of its seed so the streams are independent.
#[derive(Debug, Clone, Copy)]
#[repr(u64)]
pub(crate) enum Purpose {
    /// The order of shards in an epoch.
    ShardOrder = 1,
    /// The shuffle buffer of a shard stream.
    Buffer = 2,
    /// The permutation of an indexed or listed collection.
    Permutation = 3,
    /// A sample's augmentation.
    Augment = 4,
    /// The template that turns a sample's class label into its caption.
    Template = 5,
    /// Which source of a mixture the next sample comes from.
    Mixture = 6,
    /// The seed of a mixture's source after the first.
    Source = 7,
}

/// SplitMix64 (Steele, Lea and Flood 2014): tiny, fast, and statistically good for shuffling and crops.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

/// SplitMix64's output function: a bijective mix of 64 bits.
pub(crate) fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

impl Rng {
    /// A generator for `purpose`, keyed by the run's seed and further coordinates (epoch, rank, position).
    pub(crate) fn keyed(seed: u64, purpose: Purpose, keys: &[u64]) -> Self {
        let mut state = mix(seed ^ GOLDEN);
        for &k in std::iter::once(&(purpose as u64)).chain(keys) {
            state = mix(state.wrapping_add(GOLDEN) ^ mix(k.wrapping_add(GOLDEN)));
        }
        Self(state)
    }

    /// The next 64 random bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GOLDEN);
        mix(self.0)
    }

    /// Uniform in `[0, 1)`, 53 bits.
    pub(crate) fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `[lo, hi)`.
    pub(crate) fn uniform_in(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.uniform()
    }

    /// Uniform integer in `[0, n)` (`n > 0`), by Lemire's multiply-shift; the bias (below 2^-32 for any `n`
    /// a loader sees) does not matter for shuffling.
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Shuffle a slice in place (Fisher–Yates).
    pub(crate) fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

/// A stable 64-bit hash of bytes (a sample's key), for keying generators: SplitMix64's mix over 8-byte
/// words, with the length folded in so that keys differing only in trailing zero bytes differ.
pub(crate) fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut state = mix(bytes.len() as u64 ^ GOLDEN);
    for chunk in bytes.chunks(8) {
        let mut word = [0u8; 8];
        word[..chunk.len()].copy_from_slice(chunk);
        state = mix(state.wrapping_add(GOLDEN) ^ u64::from_le_bytes(word));
    }
    state
}

/// A pseudo-random permutation of `0..len` evaluated one index at a time: a 4-round Feistel network on the
/// smallest even number of bits covering `len`, with cycle walking to stay below `len`. It needs no memory
/// however large `len` is, and position `i` of the shuffled order is computed directly, so resuming at any
/// position is free.
#[derive(Debug, Clone)]
pub(crate) struct Permutation {
    len: u64,
    half_bits: u32,
    keys: [u64; 4],
}

impl Permutation {
    /// The permutation for these generator coordinates.
    pub(crate) fn new(len: u64, mut rng: Rng) -> Self {
        let bits = 64 - len.saturating_sub(1).leading_zeros();
        let half_bits = bits.div_ceil(2).max(1);
        let keys = [
            rng.next_u64(),
            rng.next_u64(),
            rng.next_u64(),
            rng.next_u64(),
        ];
        Self {
            len,
            half_bits,
            keys,
        }
    }

    /// The element at position `i` (`i < len`).
    pub(crate) fn get(&self, i: u64) -> u64 {
        debug_assert!(i < self.len);
        let mut x = i;
        // The network permutes 0..4^half_bits < 4 * len, so on average fewer than 4 rounds of walking.
        loop {
            x = self.feistel(x);
            if x < self.len {
                return x;
            }
        }
    }

    fn feistel(&self, x: u64) -> u64 {
        let mask = (1u64 << self.half_bits) - 1;
        let (mut left, mut right) = (x >> self.half_bits, x & mask);
        for &key in &self.keys {
            let f = mix(right ^ key) & mask;
            (left, right) = (right, left ^ f);
        }
        (left << self.half_bits) | right
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_streams_are_reproducible_and_distinct() {
        let a: Vec<u64> = (0..4)
            .map(|_| Rng::keyed(7, Purpose::Augment, &[1, 2]).next_u64())
            .collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]));
        let b = Rng::keyed(7, Purpose::Augment, &[2, 1]).next_u64();
        let c = Rng::keyed(7, Purpose::Buffer, &[1, 2]).next_u64();
        let d = Rng::keyed(8, Purpose::Augment, &[1, 2]).next_u64();
        assert!(a[0] != b && a[0] != c && a[0] != d && b != c);
    }

    #[test]
    fn key_hashes_are_stable_and_distinct() {
        assert_eq!(hash_bytes(b"000123"), hash_bytes(b"000123"));
        let keys: [&[u8]; 5] = [b"", b"a", b"a\0", b"000123", b"000124"];
        for (i, a) in keys.iter().enumerate() {
            for b in &keys[i + 1..] {
                assert_ne!(hash_bytes(a), hash_bytes(b), "{a:?} {b:?}");
            }
        }
    }

    #[test]
    fn draws_stay_in_range() {
        let mut rng = Rng::keyed(1, Purpose::Augment, &[]);
        for n in [1u64, 2, 3, 10, 1 << 40] {
            for _ in 0..200 {
                assert!(rng.below(n) < n);
                let u = rng.uniform_in(0.9, 1.0);
                assert!((0.9..1.0).contains(&u));
            }
        }
    }

    #[test]
    fn permutations_are_bijections() {
        for len in [1u64, 2, 3, 5, 16, 17, 1000] {
            let p = Permutation::new(len, Rng::keyed(3, Purpose::Permutation, &[len]));
            let mut seen: Vec<u64> = (0..len).map(|i| p.get(i)).collect();
            let shuffled = seen.clone();
            seen.sort_unstable();
            assert_eq!(seen, (0..len).collect::<Vec<_>>(), "{len}");
            if len >= 16 {
                assert_ne!(shuffled, seen, "{len} left in order");
            }
        }
    }
}
