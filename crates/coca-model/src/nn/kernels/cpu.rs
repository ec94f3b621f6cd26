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
//! has AVX-512. It turns AMX off too. `COCA_AMX=0` turns off AMX alone, so that the AVX-512 low-precision kernels
//! can be run and measured on a CPU with AMX.
//!
//! The low-precision kernels take narrower tokens: [`Avx512Vnni`] (`vpdpbusd`), [`Avx512Bf16`] (`vdpbf16ps`) and
//! [`Amx`] (AMX tiles with int8 and bf16 products). AMX also needs the kernel's permission for this process (Linux
//! `arch_prctl(ARCH_REQ_XCOMP_PERM)`), which [`amx`] asks for once; without it the token is not made.

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

/// Proof that this CPU runs AVX-512F, AVX-512BW and AVX512-VNNI (`vpdpbusd`). Only [`avx512_vnni`] makes one.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Avx512Vnni(());

/// Proof that this CPU runs AVX-512F, AVX-512BW and AVX512-BF16 (`vdpbf16ps`). Only [`avx512_bf16`] makes one.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Avx512Bf16(());

/// Proof that this CPU runs AMX-TILE, AMX-INT8 and AMX-BF16 and that the kernel lets this process use the tile
/// registers. Only [`amx`] makes one.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Amx(());

/// An AVX512-VNNI token when the CPU has it (with AVX-512F/BW) and `COCA_AVX512` is not `0`.
pub(crate) fn avx512_vnni() -> Option<Avx512Vnni> {
    static VNNI: OnceLock<Option<Avx512Vnni>> = OnceLock::new();
    *VNNI.get_or_init(|| {
        avx512()?;
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vnni")
        {
            return Some(Avx512Vnni(()));
        }
        None
    })
}

/// An AVX512-BF16 token when the CPU has it (with AVX-512F/BW) and `COCA_AVX512` is not `0`.
pub(crate) fn avx512_bf16() -> Option<Avx512Bf16> {
    static BF16: OnceLock<Option<Avx512Bf16>> = OnceLock::new();
    *BF16.get_or_init(|| {
        avx512()?;
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512bf16")
        {
            return Some(Avx512Bf16(()));
        }
        None
    })
}

/// An AMX token when the CPU has AMX-TILE, AMX-INT8 and AMX-BF16, `COCA_AVX512` and `COCA_AMX` are not `0`, and
/// Linux granted this process the tile data state (asked once).
pub(crate) fn amx() -> Option<Amx> {
    static AMX: OnceLock<Option<Amx>> = OnceLock::new();
    *AMX.get_or_init(|| {
        avx512()?;
        if std::env::var("COCA_AMX").is_ok_and(|v| v == "0") {
            return None;
        }
        (cpu_lists_amx() && request_amx_permission()).then_some(Amx(()))
    })
}

/// CPUID leaf 7, sub-leaf 0, EDX bits 22 (AMX-BF16), 24 (AMX-TILE) and 25 (AMX-INT8). The standard library's
/// detection of these features is not stable yet.
fn cpu_lists_amx() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        // Leaf 7 is defined when the maximum basic leaf is at least 7.
        if std::arch::x86_64::__cpuid(0).eax < 7 {
            return false;
        }
        let edx = std::arch::x86_64::__cpuid_count(7, 0).edx;
        const AMX: u32 = (1 << 22) | (1 << 24) | (1 << 25);
        edx & AMX == AMX
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Ask Linux for the AMX tile data state (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`); `true` when
/// granted. Without this the first tile instruction kills the process with SIGILL.
fn request_amx_permission() -> bool {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    {
        const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
        const XFEATURE_XTILEDATA: libc::c_long = 18;
        // SAFETY: arch_prctl with this code only changes which extended states this process may use; it reads and
        // writes no memory of ours.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_arch_prctl,
                ARCH_REQ_XCOMP_PERM,
                XFEATURE_XTILEDATA,
            )
        };
        rc == 0
    }
    #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
    false
}
