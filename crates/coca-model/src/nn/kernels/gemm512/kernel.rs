//! The AVX-512 register tile: `MR × NR` accumulators over one packed `A` panel and one packed `B` panel, and the
//! update of the destination tile from them.

use std::arch::x86_64::*;

/// Rows of the register tile: 12 rows × 2 vectors are 24 of the 32 zmm registers, leaving room for the two `B`
/// vectors and the broadcast `A` value without spills.
pub(super) const MR: usize = 12;
/// Columns of the register tile: two 16-lane vectors.
pub(super) const NR: usize = 32;

/// How the tile's products `P = Σ_p a_p ⊗ b_p` land in the destination `C`.
#[derive(Clone, Copy, Debug)]
pub(super) struct Update {
    /// Read `C` (`C = alpha·C + beta·P`) or overwrite it (`C = beta·P`).
    pub read: bool,
    pub alpha: f32,
    pub beta: f32,
}

/// A destination tile: `rows × cols` valid elements at `ptr`, element (i, j) at `ptr + i·rs + j·cs`.
#[derive(Clone, Copy, Debug)]
pub(super) struct Tile {
    pub ptr: *mut f32,
    pub rs: isize,
    pub cs: isize,
    pub rows: usize,
    pub cols: usize,
}

/// Mask of the first `n` lanes (all 16 when `n ≥ 16`).
#[inline(always)]
pub(super) fn lanes(n: usize) -> __mmask16 {
    if n >= 16 {
        0xFFFF
    } else {
        ((1u32 << n) - 1) as __mmask16
    }
}

/// Accumulate `kc` rank-1 updates from the packed panels `a` (`kc × MR`, p-major) and `b` (`kc × NR`, p-major)
/// and apply them to `tile` as `update` says.
///
/// # Safety
/// The CPU must have AVX-512F; `a` and `b` must hold `kc·MR` and `kc·NR` values; `tile` must address valid,
/// writable elements that alias neither panel, with `rows ≤ MR` and `cols ≤ NR`.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn tile(kc: usize, a: *const f32, b: *const f32, tile: Tile, update: Update) {
    // A panel with at most 16 real columns (the ragged edge, or the attention node's narrow heads) runs half
    // the multiply-adds.
    // SAFETY: the panels and the tile are as `accumulate` and `store` require (this function's contract).
    unsafe {
        let acc = if tile.cols <= 16 {
            accumulate::<1>(kc, a, b)
        } else {
            accumulate::<2>(kc, a, b)
        };
        store(&acc, tile, update);
    }
}

/// The `MR × 16·VECS` products of the panels (the second vector of each row stays zero when `VECS` is 1).
///
/// # Safety
/// The CPU must have AVX-512F; `a` and `b` must hold `kc·MR` and `kc·NR` values.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn accumulate<const VECS: usize>(
    kc: usize,
    mut a: *const f32,
    mut b: *const f32,
) -> [[__m512; 2]; MR] {
    let mut acc = [[_mm512_setzero_ps(); 2]; MR];
    for _ in 0..kc {
        // SAFETY: each of the `kc` steps reads the next MR values of `a` and the next 16·VECS ≤ NR of `b`, then
        // moves both pointers one step on: the reads stay inside the panels' `kc·MR` and `kc·NR` values.
        unsafe {
            let mut bv = [_mm512_setzero_ps(); VECS];
            for (h, v) in bv.iter_mut().enumerate() {
                *v = _mm512_loadu_ps(b.add(16 * h));
            }
            for (i, row) in acc.iter_mut().enumerate() {
                let ai = _mm512_set1_ps(*a.add(i));
                for (r, &v) in row.iter_mut().zip(&bv) {
                    *r = _mm512_fmadd_ps(ai, v, *r);
                }
            }
            a = a.add(MR);
            b = b.add(NR);
        }
    }
    acc
}

/// Write the accumulators into the destination tile.
///
/// # Safety
/// The CPU must have AVX-512F; `t` must address `t.rows ≤ MR` × `t.cols ≤ NR` valid, writable elements.
#[target_feature(enable = "avx512f")]
unsafe fn store(acc: &[[__m512; 2]; MR], t: Tile, u: Update) {
    let beta = _mm512_set1_ps(u.beta);
    let alpha = _mm512_set1_ps(u.alpha);
    if t.cs == 1 {
        // Rows are contiguous: masked vector loads and stores cover the ragged right edge.
        let masks = [lanes(t.cols), lanes(t.cols.saturating_sub(16))];
        for (i, row) in acc.iter().enumerate().take(t.rows) {
            for (h, (&v, &mask)) in row.iter().zip(&masks).enumerate() {
                if mask == 0 {
                    continue;
                }
                // SAFETY: row i < t.rows of the tile, columns 16h .. 16h + popcount(mask) ≤ t.cols: elements of the
                // tile (contiguous, as cs = 1), and the masked load and store touch only those lanes.
                unsafe {
                    let at = t.ptr.offset(i as isize * t.rs).add(16 * h);
                    let out = if u.read {
                        let old = _mm512_maskz_loadu_ps(mask, at);
                        _mm512_fmadd_ps(beta, v, _mm512_mul_ps(alpha, old))
                    } else {
                        _mm512_mul_ps(beta, v)
                    };
                    _mm512_mask_storeu_ps(at, mask, out);
                }
            }
        }
    } else {
        // Any other layout: spill the tile and update element by element (no caller's hot path uses this).
        let mut tmp = [0f32; MR * NR];
        for (i, row) in acc.iter().enumerate() {
            // SAFETY: row i < MR of `tmp` holds NR = 32 values, the two 16-lane stores' worth.
            unsafe {
                _mm512_storeu_ps(tmp.as_mut_ptr().add(i * NR), row[0]);
                _mm512_storeu_ps(tmp.as_mut_ptr().add(i * NR + 16), row[1]);
            }
        }
        for i in 0..t.rows {
            for j in 0..t.cols {
                let p = tmp[i * NR + j];
                // SAFETY: (i, j) is an element of the tile (i < t.rows, j < t.cols), valid and writable.
                unsafe {
                    let c = t.ptr.offset(i as isize * t.rs + j as isize * t.cs);
                    *c = if u.read {
                        u.beta.mul_add(p, u.alpha * *c)
                    } else {
                        u.beta * p
                    };
                }
            }
        }
    }
}

/// Transpose a 16 × 16 block held as 16 row vectors, in place: afterwards `r[j]` holds the old column `j`.
#[target_feature(enable = "avx512f")]
pub(super) fn transpose16(r: &mut [__m512; 16]) {
    // 1. Interleave row pairs: within each 128-bit lane L, a[2i] = (x[2i][4L], x[2i+1][4L], x[2i][4L+1],
    //    x[2i+1][4L+1]) and a[2i+1] the same for columns 4L+2, 4L+3.
    let mut a = [_mm512_setzero_ps(); 16];
    for i in 0..8 {
        a[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        a[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    // 2. Within each lane L, b[4g + c] = column 4L + c of rows 4g..4g+3.
    let mut b = [_mm512_setzero_ps(); 16];
    for g in 0..4 {
        b[4 * g] = _mm512_shuffle_ps::<0x44>(a[4 * g], a[4 * g + 2]);
        b[4 * g + 1] = _mm512_shuffle_ps::<0xEE>(a[4 * g], a[4 * g + 2]);
        b[4 * g + 2] = _mm512_shuffle_ps::<0x44>(a[4 * g + 1], a[4 * g + 3]);
        b[4 * g + 3] = _mm512_shuffle_ps::<0xEE>(a[4 * g + 1], a[4 * g + 3]);
    }
    // 3. Gather lane L of b[c], b[4 + c], b[8 + c], b[12 + c] into column 4L + c.
    for c in 0..4 {
        let u0 = _mm512_shuffle_f32x4::<0x44>(b[c], b[4 + c]);
        let u1 = _mm512_shuffle_f32x4::<0xEE>(b[c], b[4 + c]);
        let u2 = _mm512_shuffle_f32x4::<0x44>(b[8 + c], b[12 + c]);
        let u3 = _mm512_shuffle_f32x4::<0xEE>(b[8 + c], b[12 + c]);
        r[c] = _mm512_shuffle_f32x4::<0x88>(u0, u2);
        r[4 + c] = _mm512_shuffle_f32x4::<0xDD>(u0, u2);
        r[8 + c] = _mm512_shuffle_f32x4::<0x88>(u1, u3);
        r[12 + c] = _mm512_shuffle_f32x4::<0xDD>(u1, u3);
    }
}
