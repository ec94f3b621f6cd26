//! The one place that asks which vector instructions this CPU runs, and the tokens that prove the answer.
//!
//! A kernel compiled with `#[target_feature]` is undefined behaviour on a CPU without those instructions. Each such
//! kernel sits behind a safe wrapper that takes one of the zero-sized tokens below by value, and a token can only be
//! made by [`simd`] after run-time detection; so no safe code can reach AVX-512 or AVX2 instructions on a CPU that
//! lacks them, and the `unsafe` calls inside the wrappers rest on the token alone.
//!
//! A `#[target_feature]` function whose only precondition is the feature is a safe `fn`: the compiler still asks
//! for `unsafe` to call it from code compiled without the feature, and that call's `SAFETY` comment names the
//! token. The others are `unsafe fn`s whose `# Safety` sections add their pointer and length contracts.
//!
//! `COCA_AVX512=0` makes every kernel behave as on a CPU without AVX-512 (the AVX2 kernels, or the portable ones,
//! run instead, and the AVX-512-only tests report themselves skipped): a way to run those paths on a machine that
//! has AVX-512.

use std::sync::OnceLock;

/// Proof that this CPU runs AVX-512F and FMA instructions. Only [`simd`] makes one.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Avx512(());

/// Proof that this CPU runs AVX2 and FMA instructions. Only [`simd`] makes one.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Avx2Fma(());

/// The widest instruction set the kernels may use on this CPU.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Simd {
    /// AVX-512F and FMA (every CPU with AVX-512F also has AVX2).
    Avx512(Avx512),
    /// AVX2 and FMA, without AVX-512F (or with `COCA_AVX512=0`).
    Avx2(Avx2Fma),
    /// Neither: the kernels' scalar code.
    Portable,
}

impl Simd {
    /// A short name for test messages.
    #[cfg(test)]
    pub(crate) fn name(self) -> &'static str {
        match self {
            Simd::Avx512(_) => "avx512",
            Simd::Avx2(_) => "avx2",
            Simd::Portable => "portable",
        }
    }

    /// Every instruction set this CPU runs, widest first, the portable code last: what the kernels' tests compare.
    #[cfg(test)]
    pub(crate) fn all() -> Vec<Simd> {
        let mut out = Vec::new();
        if let Simd::Avx512(cpu) = simd() {
            out.push(Simd::Avx512(cpu));
        }
        out.extend(avx2_fma().map(Simd::Avx2));
        out.push(Simd::Portable);
        out
    }
}

/// The widest instruction set this CPU offers, detected once per process (and `COCA_AVX512=0` honoured).
pub(crate) fn simd() -> Simd {
    static SIMD: OnceLock<Simd> = OnceLock::new();
    *SIMD.get_or_init(|| {
        let allowed = std::env::var("COCA_AVX512").map_or(true, |v| v != "0");
        #[cfg(target_arch = "x86_64")]
        if allowed
            && std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("fma")
        {
            return Simd::Avx512(Avx512(()));
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = allowed;
        avx2_fma().map_or(Simd::Portable, Simd::Avx2)
    })
}

/// An AVX2 + FMA token when the CPU has both (whether or not it also has AVX-512F).
fn avx2_fma() -> Option<Avx2Fma> {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        return Some(Avx2Fma(()));
    }
    None
}

/// An AVX-512 token when this CPU has AVX-512F and FMA and `COCA_AVX512` is not `0`.
pub(crate) fn avx512() -> Option<Avx512> {
    match simd() {
        Simd::Avx512(cpu) => Some(cpu),
        Simd::Avx2(_) | Simd::Portable => None,
    }
}
