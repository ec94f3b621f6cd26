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
        self.ptr.offset(i as isize * self.rs + j as isize * self.cs)
    }
}

/// Pack the `mc × kc` block of `a` into `ceil(mc / MR)` panels of `kc × MR` values in `dst`.
///
/// # Safety
/// AVX-512F must be available; the block must lie inside `a`'s matrix; `dst` must hold
/// `ceil(mc / MR) · MR · kc` values.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn pack_a(dst: *mut f32, a: Src, mc: usize, kc: usize) {
    for (panel, r0) in (0..mc).step_by(MR).enumerate() {
        let rows = MR.min(mc - r0);
        let out = dst.add(panel * MR * kc);
        if a.cs == 1 {
            // Rows are contiguous in k: transpose 16 k-values of the panel's rows at a time.
            let mut block = [_mm512_setzero_ps(); 16];
            for p0 in (0..kc).step_by(16) {
                let width = 16.min(kc - p0);
                for (i, v) in block.iter_mut().enumerate() {
                    *v = if i < rows {
                        _mm512_maskz_loadu_ps(lanes(width), a.at(r0 + i, p0))
                    } else {
                        _mm512_setzero_ps()
                    };
                }
                transpose16(&mut block);
                for (q, v) in block.iter().enumerate().take(width) {
                    _mm512_mask_storeu_ps(out.add((p0 + q) * MR), lanes(MR), *v);
                }
            }
        } else if a.rs == 1 {
            // Columns are contiguous: each k index is one short copy.
            for p in 0..kc {
                let v = _mm512_maskz_loadu_ps(lanes(rows), a.at(r0, p));
                _mm512_mask_storeu_ps(out.add(p * MR), lanes(MR), v);
            }
        } else {
            for p in 0..kc {
                for i in 0..MR {
                    *out.add(p * MR + i) = if i < rows { *a.at(r0 + i, p) } else { 0.0 };
                }
            }
        }
    }
}

/// Pack the `kc × nc` block of `b` into `ceil(nc / NR)` panels of `kc × NR` values in `dst`.
///
/// # Safety
/// AVX-512F must be available; the block must lie inside `b`'s matrix; `dst` must hold
/// `ceil(nc / NR) · NR · kc` values.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn pack_b(dst: *mut f32, b: Src, kc: usize, nc: usize) {
    for (panel, c0) in (0..nc).step_by(NR).enumerate() {
        let cols = NR.min(nc - c0);
        let out = dst.add(panel * NR * kc);
        if b.cs == 1 {
            // Rows are contiguous in n: each k index is two vector copies.
            for p in 0..kc {
                for h in 0..NR / 16 {
                    let width = cols.saturating_sub(16 * h).min(16);
                    let v = if width > 0 {
                        _mm512_maskz_loadu_ps(lanes(width), b.at(p, c0 + 16 * h))
                    } else {
                        _mm512_setzero_ps()
                    };
                    _mm512_storeu_ps(out.add(p * NR + 16 * h), v);
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
                            _mm512_maskz_loadu_ps(lanes(depth), b.at(p0, c0 + 16 * h + j))
                        } else {
                            _mm512_setzero_ps()
                        };
                    }
                    transpose16(&mut block);
                    for (q, v) in block.iter().enumerate().take(depth) {
                        _mm512_storeu_ps(out.add((p0 + q) * NR + 16 * h), *v);
                    }
                }
            }
        } else {
            for p in 0..kc {
                for j in 0..NR {
                    *out.add(p * NR + j) = if j < cols { *b.at(p, c0 + j) } else { 0.0 };
                }
            }
        }
    }
}
