//! Copying operand blocks into the panel layouts the register tile reads: `A` in panels of [`MR`] rows and `B` in
//! panels of [`NR`] columns, each stored p-major (all of a panel's values for one `k` index side by side) and
//! zero-padded at the ragged edge, so the tile never needs bounds checks.
//!
//! An operand whose contiguous direction is `k` (a row-major `A`, or a `B` that is a transposed row-major matrix,
//! as in `x·Wᵀ`) is transposed 16 × 16 at a time in registers; the other contiguous direction is a plain copy.

use std::arch::x86_64::*;

use super::kernel::{lanes, transpose16, MR, NR};

/// A strided read-only matrix: element (i, j) at `ptr + i·rs + j·cs`.
#[derive(Clone, Copy, Debug)]
pub(super) struct Src {
    pub ptr: *const f32,
    pub rs: isize,
    pub cs: isize,
}

impl Src {
    /// Address of element (i, j).
    ///
    /// # Safety
    /// (i, j) must lie inside the matrix.
    #[inline(always)]
    pub unsafe fn at(self, i: usize, j: usize) -> *const f32 {
        // SAFETY: (i, j) lies inside the matrix (this function's contract), so the offset stays inside the
        // allocation that holds it.
        unsafe { self.ptr.offset(i as isize * self.rs + j as isize * self.cs) }
    }
}

/// Pack the `mc × kc` block of `a` into `ceil(mc / MR)` panels of `kc × MR` values in `dst`.
///
/// # Safety
/// The CPU must have AVX-512F; the block must lie inside `a`'s matrix; `dst` must hold
/// `ceil(mc / MR) · MR · kc` writable values that do not overlap `a`.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn pack_a(dst: *mut f32, a: Src, mc: usize, kc: usize) {
    for (panel, r0) in (0..mc).step_by(MR).enumerate() {
        let rows = MR.min(mc - r0);
        // SAFETY: the panel's `kc · MR` values start here, inside `dst` (this function's contract).
        let out = unsafe { dst.add(panel * MR * kc) };
        if a.cs == 1 {
            // Rows are contiguous in k: transpose 16 k-values of the panel's rows at a time.
            let mut block = [_mm512_setzero_ps(); 16];
            for p0 in (0..kc).step_by(16) {
                let width = 16.min(kc - p0);
                for (i, v) in block.iter_mut().enumerate() {
                    *v = if i < rows {
                        // SAFETY: row r0 + i < mc and columns p0 .. p0 + width ≤ kc lie inside the block; the
                        // masked load touches only those `width` lanes.
                        unsafe { _mm512_maskz_loadu_ps(lanes(width), a.at(r0 + i, p0)) }
                    } else {
                        _mm512_setzero_ps()
                    };
                }
                transpose16(&mut block);
                for (q, v) in block.iter().enumerate().take(width) {
                    // SAFETY: the MR values of k index p0 + q < kc lie inside this panel of `dst`.
                    unsafe { _mm512_mask_storeu_ps(out.add((p0 + q) * MR), lanes(MR), *v) };
                }
            }
        } else if a.rs == 1 {
            // Columns are contiguous: each k index is one short copy.
            for p in 0..kc {
                // SAFETY: rows r0 .. r0 + rows ≤ mc of column p < kc lie inside the block, and the masked load
                // touches only those lanes; the MR values of k index p lie inside this panel of `dst`.
                unsafe {
                    let v = _mm512_maskz_loadu_ps(lanes(rows), a.at(r0, p));
                    _mm512_mask_storeu_ps(out.add(p * MR), lanes(MR), v);
                }
            }
        } else {
            for p in 0..kc {
                for i in 0..MR {
                    // SAFETY: element (r0 + i, p) is read only when r0 + i < mc, inside the block; index
                    // p · MR + i < kc · MR lies inside this panel of `dst`.
                    unsafe { *out.add(p * MR + i) = if i < rows { *a.at(r0 + i, p) } else { 0.0 } };
                }
            }
        }
    }
}

/// Pack the `kc × nc` block of `b` into `ceil(nc / NR)` panels of `kc × NR` values in `dst`.
///
/// # Safety
/// The CPU must have AVX-512F; the block must lie inside `b`'s matrix; `dst` must hold
/// `ceil(nc / NR) · NR · kc` writable values that do not overlap `b`.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn pack_b(dst: *mut f32, b: Src, kc: usize, nc: usize) {
    for (panel, c0) in (0..nc).step_by(NR).enumerate() {
        let cols = NR.min(nc - c0);
        // SAFETY: the panel's `kc · NR` values start here, inside `dst` (this function's contract).
        let out = unsafe { dst.add(panel * NR * kc) };
        if b.cs == 1 {
            // Rows are contiguous in n: each k index is two vector copies.
            for p in 0..kc {
                for h in 0..NR / 16 {
                    let width = cols.saturating_sub(16 * h).min(16);
                    // SAFETY: columns c0 + 16h .. + width ≤ nc of row p < kc lie inside the block, and the masked
                    // load touches only those lanes; the 16 values at p · NR + 16h lie inside this panel of `dst`.
                    unsafe {
                        let v = if width > 0 {
                            _mm512_maskz_loadu_ps(lanes(width), b.at(p, c0 + 16 * h))
                        } else {
                            _mm512_setzero_ps()
                        };
                        _mm512_storeu_ps(out.add(p * NR + 16 * h), v);
                    }
                }
            }
        } else if b.rs == 1 {
            // Columns are contiguous in k (a transposed row-major matrix): transpose 16 columns at a time.
            let mut block = [_mm512_setzero_ps(); 16];
            for h in 0..NR / 16 {
                let width = cols.saturating_sub(16 * h).min(16);
                for p0 in (0..kc).step_by(16) {
                    let depth = 16.min(kc - p0);
                    for (j, v) in block.iter_mut().enumerate() {
                        *v = if j < width {
                            // SAFETY: column c0 + 16h + j < nc and rows p0 .. p0 + depth ≤ kc lie inside the
                            // block; the masked load touches only those `depth` lanes.
                            unsafe {
                                _mm512_maskz_loadu_ps(lanes(depth), b.at(p0, c0 + 16 * h + j))
                            }
                        } else {
                            _mm512_setzero_ps()
                        };
                    }
                    transpose16(&mut block);
                    for (q, v) in block.iter().enumerate().take(depth) {
                        // SAFETY: the 16 values at (p0 + q) · NR + 16h, with p0 + q < kc, lie inside this panel of
                        // `dst`.
                        unsafe { _mm512_storeu_ps(out.add((p0 + q) * NR + 16 * h), *v) };
                    }
                }
            }
        } else {
            for p in 0..kc {
                for j in 0..NR {
                    // SAFETY: element (p, c0 + j) is read only when j < cols, inside the block; index p · NR + j
                    // < kc · NR lies inside this panel of `dst`.
                    unsafe { *out.add(p * NR + j) = if j < cols { *b.at(p, c0 + j) } else { 0.0 } };
                }
            }
        }
    }
}
