//! f32 GEMM with AVX-512 register tiles for the fused ops' products, with the calling convention of
//! [`gemm::gemm`] so the fused ops switch by changing one path.
//!
//! Why a kernel of our own: candle and the fused ops run the `gemm` crate, whose default build has only AVX2/FMA
//! micro-kernels. Its AVX-512 kernels sit behind a crate-wide feature (cargo features unify, and its per-ISA
//! modules are private), and enabling it doubled batch-1 image encoding, whose 50-row activations fit its 64-row
//! tiles badly. Here only the callers that opt in get AVX-512 (the fused ops, for training and CPU inference alike);
//! candle's own matmuls keep the `gemm` crate.
//!
//! The algorithm is the usual blocked one: `k` is cut into equal slices of at most 384; for each slice and each
//! block of about 1 MiB of `B`'s columns, `B`'s block is packed into 32-column panels; for each block of 144
//! rows, `A`'s block is packed into 12-row panels; a `12 × 32` register tile (`12 × 16` for a panel of at most
//! 16 columns) then runs over every pair of panels. Packing handles every stride layout (with in-register
//! 16 × 16 transposes when `k` is the contiguous direction) and zero-pads the edges; the tile's stores are
//! masked at the right edge.
//!
//! Threads: [`Parallelism::Rayon`] splits the output into stripes of rows (or of columns, when the output is
//! wider than tall): one per thread, or up to four per thread while each stays at least 192 wide, so that rayon
//! can rebalance when a core is busy elsewhere. Products under 2²⁰ multiply-adds stay on the calling thread.
//! `k` is never split, and every output element goes through the same sequence of operations
//! whatever the stripes, so results are bit-identical for any thread count.
//!
//! Without AVX-512F (checked once at run time by `kernels::cpu`, which `COCA_AVX512=0` also turns off), or with
//! `COCA_GEMM512=0`, calls go to [`gemm::gemm`].
//!
//! Throughput against the `gemm` crate on the demo's shapes: `cargo run --release -p coca-model --example
//! gemm_bench`.

#[cfg(target_arch = "x86_64")]
mod driver;
#[cfg(target_arch = "x86_64")]
mod kernel;
#[cfg(target_arch = "x86_64")]
mod pack;
#[cfg(all(test, target_arch = "x86_64"))]
mod tests;

pub use gemm::Parallelism;

/// Whether calls run the AVX-512 kernel: the CPU has AVX-512F (see `COCA_AVX512` in the kernels' CPU detection)
/// and `COCA_GEMM512` is not `0`.
pub fn available() -> bool {
    enabled().is_some()
}

/// The token that lets calls run the AVX-512 kernel, when [`available`].
fn enabled() -> Option<super::cpu::Avx512> {
    static WANTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let wanted = *WANTED.get_or_init(|| std::env::var("COCA_GEMM512").map_or(true, |v| v != "0"));
    super::cpu::avx512().filter(|_| wanted)
}

/// `dst := alpha·dst + beta·lhs·rhs` (or `dst := beta·lhs·rhs` when `read_dst` is false) for an `m × n`
/// destination, an `m × k` `lhs` and a `k × n` `rhs`, each given by a base pointer, a column stride (`*_cs`) and
/// a row stride (`*_rs`) in elements — the argument order of [`gemm::gemm`] without its conjugation flags.
///
/// With `k = 0` the product is empty: `dst` becomes `alpha·dst` (or zero when `read_dst` is false).
///
/// # Safety
/// Every element of the three matrices, as addressed by the pointers and strides, must be valid (and `dst`'s
/// writable); `dst` must not overlap `lhs` or `rhs`, and no two of its elements may share an address.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_cs: isize,
    dst_rs: isize,
    read_dst: bool,
    lhs: *const f32,
    lhs_cs: isize,
    lhs_rs: isize,
    rhs: *const f32,
    rhs_cs: isize,
    rhs_rs: isize,
    alpha: f32,
    beta: f32,
    parallelism: Parallelism,
) {
    #[cfg(target_arch = "x86_64")]
    if let Some(cpu) = enabled() {
        let problem = driver::Problem {
            m,
            n,
            k,
            dst: driver::Dst {
                ptr: dst,
                rs: dst_rs,
                cs: dst_cs,
            },
            lhs: pack::Src {
                ptr: lhs,
                rs: lhs_rs,
                cs: lhs_cs,
            },
            rhs: pack::Src {
                ptr: rhs,
                rs: rhs_rs,
                cs: rhs_cs,
            },
            read_dst,
            alpha,
            beta,
        };
        // SAFETY: `cpu` proves AVX-512F; the operands are this function's, under its contract.
        unsafe { driver::run(cpu, &problem, threads(parallelism)) };
        return;
    }
    // SAFETY: the operands are this function's, under its contract, which is `gemm::gemm`'s.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            dst_cs,
            dst_rs,
            read_dst,
            lhs,
            lhs_cs,
            lhs_rs,
            rhs,
            rhs_cs,
            rhs_rs,
            alpha,
            beta,
            false,
            false,
            false,
            parallelism,
        )
    };
}

/// Threads a [`Parallelism`] asks for (`Rayon(0)`: all of rayon's).
#[cfg(target_arch = "x86_64")]
fn threads(parallelism: Parallelism) -> usize {
    match parallelism {
        Parallelism::None => 1,
        Parallelism::Rayon(0) => rayon::current_num_threads(),
        Parallelism::Rayon(t) => t,
    }
}
