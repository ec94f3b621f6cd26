//! Cache blocking and the split of the output over threads.

use std::cell::RefCell;

use rayon::prelude::*;

use super::kernel::{self, Tile, Update, MR, NR};
use super::pack::{self, Src};
use crate::nn::kernels::cpu::Avx512;

/// Deepest packed slice of `k`: a `MR × KC` panel of `A` (18 KiB) stays in L1 while the tile sweeps `B`'s block.
/// `k` is cut into equal slices no deeper than this, so no slice is left with a handful of steps to amortise its
/// pass over the destination.
const KC: usize = 384;
/// Rows of `A` packed at a time (a multiple of `MR`).
const MC: usize = 12 * MR;
/// Bytes of one packed block of `B`, kept in L2 while every row panel of `A` passes over it.
const B_BLOCK_BYTES: usize = 1 << 20;
/// Rows (or columns) of the output below which a stripe spends a noticeable share of its time re-packing the
/// operand that spans the other side (about 10 / width of it, at one multiply-add per lane per cycle).
const MIN_STRIPE: usize = 192;
/// Most stripes per thread.
const STRIPES_PER_THREAD: usize = 4;
/// Below this many multiply-adds a product runs on the calling thread: splitting costs more than it saves.
const MIN_PARALLEL_FMAS: usize = 1 << 20;

/// The writable destination: element (i, j) at `ptr + i·rs + j·cs`.
#[derive(Clone, Copy, Debug)]
pub(super) struct Dst {
    pub ptr: *mut f32,
    pub rs: isize,
    pub cs: isize,
}

/// One call's operands and update rule (see [`super::gemm`]).
#[derive(Debug)]
pub(super) struct Problem {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub dst: Dst,
    pub lhs: Src,
    pub rhs: Src,
    pub read_dst: bool,
    pub alpha: f32,
    pub beta: f32,
}

// SAFETY: the operands are only read, and the threads of `run` write disjoint stripes of `dst`; the caller of
// `super::gemm` guarantees the pointers stay valid for the call.
unsafe impl Sync for Problem {}

/// Packing buffers, one pair per thread and reused across calls (the attention node makes thousands of small
/// products per step).
#[derive(Default)]
struct Buffers {
    a: Vec<f32>,
    b: Vec<f32>,
}

thread_local! {
    static BUFFERS: RefCell<Buffers> = RefCell::new(Buffers::default());
}

/// A 64-byte aligned pointer to at least `len` values inside `buf`, growing it when needed.
fn aligned(buf: &mut Vec<f32>, len: usize) -> *mut f32 {
    const LANES: usize = 16;
    if buf.len() < len + LANES {
        buf.resize(len + LANES, 0.0);
    }
    let offset = buf.as_ptr().align_offset(64).min(LANES);
    buf[offset..].as_mut_ptr()
}

/// Compute the whole product on `threads` threads (the `Avx512` token proves the CPU runs the kernel).
///
/// # Safety
/// The problem must satisfy the contract of [`super::gemm`]: every element its pointers and strides address is
/// valid (`dst`'s writable), and `dst` overlaps neither operand nor itself.
pub(super) unsafe fn run(_: Avx512, p: &Problem, threads: usize) {
    let (m, n) = (p.m, p.n);
    if m == 0 || n == 0 {
        return;
    }
    if p.k == 0 {
        // SAFETY: `dst` is valid and writable (this function's contract).
        unsafe { scale_dst(p) };
        return;
    }
    // Split the longer side of the output: each extra stripe re-packs the operand that spans the other side.
    let split_rows = m >= n;
    let (len, unit) = if split_rows { (m, MR) } else { (n, NR) };
    let units = len.div_ceil(unit);
    let fmas = m.saturating_mul(n).saturating_mul(p.k);
    let stripes = if fmas < MIN_PARALLEL_FMAS || threads <= 1 {
        1
    } else {
        // Several stripes per thread let rayon rebalance when a core is busy with other work, as long as each
        // stripe is wide enough to amortise re-packing the other operand. A whole number per thread: with 3
        // stripes on 2 threads one thread would do two while the other idles for one.
        let per_thread = (len / MIN_STRIPE / threads).clamp(1, STRIPES_PER_THREAD);
        per_thread * threads
    }
    .min(units);
    let stripe = |s: usize| {
        let lo = (units * s / stripes * unit).min(len);
        let hi = (units * (s + 1) / stripes * unit).min(len);
        lo..hi
    };
    let work = |s: usize| {
        let range = stripe(s);
        let (rows, cols) = if split_rows {
            (range, 0..n)
        } else {
            (0..m, range)
        };
        // SAFETY: the `Avx512` token proves AVX-512F; the stripes are disjoint and inside the output, so each
        // thread writes its own part of `dst`; the pointers' validity is this function's contract.
        unsafe { block(p, rows, cols) }
    };
    if stripes == 1 {
        work(0);
    } else {
        (0..stripes).into_par_iter().for_each(work);
    }
}

/// `dst = alpha·dst` (or 0 when `dst` is not read): the product of an empty `k`.
///
/// # Safety
/// Every element of the `m × n` destination, as its pointer and strides address it, must be valid and writable.
unsafe fn scale_dst(p: &Problem) {
    for i in 0..p.m {
        for j in 0..p.n {
            // SAFETY: (i, j) is an element of the destination, valid and writable (this function's contract).
            unsafe {
                let c = p
                    .dst
                    .ptr
                    .offset(i as isize * p.dst.rs + j as isize * p.dst.cs);
                *c = if p.read_dst && p.alpha != 0.0 {
                    p.alpha * *c
                } else {
                    0.0
                };
            }
        }
    }
}

/// The output rows `rows` × columns `cols`, on the calling thread.
///
/// # Safety
/// The CPU must have AVX-512F; `p` must satisfy the contract of [`super::gemm`]; `rows` and `cols` must lie inside
/// the output, and no other thread may access that part of `dst` during the call.
#[target_feature(enable = "avx512f")]
unsafe fn block(p: &Problem, rows: std::ops::Range<usize>, cols: std::ops::Range<usize>) {
    BUFFERS.with(|cell| {
        // A product nested inside another on the same thread cannot happen (nothing here yields to rayon), but
        // fresh buffers keep it correct if it ever does.
        let mut fresh = Buffers::default();
        let mut borrowed = cell.try_borrow_mut();
        let bufs = match borrowed.as_deref_mut() {
            Ok(b) => b,
            Err(_) => &mut fresh,
        };
        // Equal slices of k (a function of k alone, so every thread cuts the same way), and as many B columns
        // per block as fit its budget.
        let slice = p.k.div_ceil(p.k.div_ceil(KC));
        let block_cols = (B_BLOCK_BYTES / (4 * slice * NR)).max(1) * NR;
        let a_buf = aligned(&mut bufs.a, MC * slice);
        let b_buf = aligned(&mut bufs.b, block_cols * slice);
        for jc in cols.clone().step_by(block_cols) {
            let nc = block_cols.min(cols.end - jc);
            for pc in (0..p.k).step_by(slice) {
                let kc = slice.min(p.k - pc);
                let update = if pc == 0 {
                    Update {
                        read: p.read_dst,
                        alpha: p.alpha,
                        beta: p.beta,
                    }
                } else {
                    Update {
                        read: true,
                        alpha: 1.0,
                        beta: p.beta,
                    }
                };
                // SAFETY: the `kc × nc` block at (pc, jc) lies inside `rhs` (pc + kc ≤ k, jc + nc ≤ cols.end ≤ n);
                // `b_buf` holds `block_cols · slice` values, at least the `ceil(nc / NR) · NR · kc` packed ones
                // (`block_cols` is a multiple of NR no smaller than nc, and kc ≤ slice); AVX-512F is this
                // function's precondition.
                unsafe { pack::pack_b(b_buf, offset(p.rhs, pc, jc), kc, nc) };
                for ic in rows.clone().step_by(MC) {
                    let mc = MC.min(rows.end - ic);
                    // SAFETY: the `mc × kc` block at (ic, pc) lies inside `lhs` (ic + mc ≤ rows.end ≤ m,
                    // pc + kc ≤ k); `a_buf` holds `MC · slice` values, at least the `ceil(mc / MR) · MR · kc` packed
                    // ones (MC is a multiple of MR and mc ≤ MC); AVX-512F as above.
                    unsafe { pack::pack_a(a_buf, offset(p.lhs, ic, pc), mc, kc) };
                    for ir in (0..mc).step_by(MR) {
                        for jr in (0..nc).step_by(NR) {
                            // SAFETY: row panel `ir / MR` of `a_buf` starts at `ir · kc` and holds `kc · MR`
                            // values, column panel `jr / NR` of `b_buf` starts at `jr · kc` and holds `kc · NR`
                            // (both packed just above); the tile at (ic + ir, jc + jr), at most MR × NR, lies
                            // inside this call's part of `dst`, which no other thread touches and which aliases
                            // neither buffer; AVX-512F as above.
                            unsafe {
                                let tile = Tile {
                                    ptr: p.dst.ptr.offset(
                                        (ic + ir) as isize * p.dst.rs
                                            + (jc + jr) as isize * p.dst.cs,
                                    ),
                                    rs: p.dst.rs,
                                    cs: p.dst.cs,
                                    rows: MR.min(mc - ir),
                                    cols: NR.min(nc - jr),
                                };
                                let (a_panel, b_panel) = (a_buf.add(ir * kc), b_buf.add(jr * kc));
                                kernel::tile(kc, a_panel, b_panel, tile, update);
                            }
                        }
                    }
                }
            }
        }
    });
}

/// The view of `src` starting at element (i, j).
///
/// # Safety
/// (i, j) must lie inside the matrix.
unsafe fn offset(src: Src, i: usize, j: usize) -> Src {
    Src {
        // SAFETY: (i, j) lies inside the matrix (this function's contract).
        ptr: unsafe { src.at(i, j) },
        ..src
    }
}
