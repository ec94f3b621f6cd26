//! AVX-512 kernels of the low-precision products, for CPUs without AMX (or with `COCA_AMX=0`), and the thin
//! weight-only kernel of decoding steps.
//!
//! - `matmul_int8_vnni`: the int8 product of [`matmul_reference`](super::matmul_reference) with `vpdpbusd`,
//!   which multiplies unsigned by signed bytes. The quantised activations are shifted to unsigned (`q + 128`),
//!   and `128 · Σ_k W[c][k]` ([`PackedWeight::panel_column_sums`]) is taken off each sum, so the i32 sums, and
//!   with the same epilogue the outputs, equal the reference's to the last bit.
//! - `matmul_bf16`: the bf16 product with `vdpbf16ps`; activations rounded to bf16 as the reference does.
//! - `thin_matmul`: the weight-only product of [`thin_matmul_reference`](super::thin_matmul_reference) for at
//!   most `MAX_ROWS` f32 activation rows: the packed weight is widened to f32 in registers (bf16: a shift or a
//!   mask; int8: a sign-extending shift pair and a conversion) and multiplied with f32 FMA, so a decoding step
//!   streams 1 or 2 bytes per weight instead of 4; an int8 channel's scale is applied once after its sum.
//!
//! The register tile of the two dot-product kernels is `ROWS` activation rows × two panels (2 · 16 output
//! channels): per packed line, two weight registers and one 32-bit broadcast per row (4 int8 or 2 bf16 values
//! of k, the same 4 bytes in both formats) feed `2 · ROWS` independent accumulators. Work is split over rayon's
//! threads by blocks of rows and panels; every task writes only its own output columns of its own rows.

use std::arch::x86_64::*;
use std::ops::Range;

use candle_core::Result;
use rayon::prelude::*;

use super::{bf16_bits, check_operands, Format, Line, PackedWeight, INT8_MAX, PANEL};
use crate::nn::kernels::cpu::{Avx512, Avx512Bf16, Avx512Vnni};
use crate::nn::kernels::thin_matmul::MAX_ROWS;

/// Activation rows of the dot-product kernels' register tile: 12 rows × 2 panels are 24 of the 32 zmm registers,
/// leaving the two weight lines and the broadcast activation without spills (as in `gemm512`).
const ROWS: usize = 12;

/// Rows of the register tile for the last rows of a product (fewer than [`ROWS`] left): the activation buffer is
/// padded to a multiple of this.
const TAIL_ROWS: usize = 4;

/// Rows per parallel task of the dot-product kernels (a multiple of [`ROWS`]).
const ROWS_PER_TASK: usize = 4 * ROWS;

/// Panels per parallel task of the dot-product kernels (even: panels go in pairs): the task's weight stays in L2
/// while its row blocks pass over it.
const PANELS_PER_TASK: usize = 8;

/// Lines per k block of the dot-product kernels: a row block's activations for one k block (`ROWS · 4 ·
/// K_BLOCK_LINES` bytes) stay in L1 while the weight lines of the task's panels stream past them.
const K_BLOCK_LINES: usize = 128;

/// Panels per parallel task of the thin kernel: enough weight bytes to amortise scheduling, enough tasks to
/// balance two cores on the decoder's narrowest products.
const THIN_PANELS_PER_TASK: usize = 8;

/// The output matrix (m, n), row-major, shared by parallel tasks that each write a disjoint block of it.
#[derive(Clone, Copy)]
struct Out {
    ptr: *mut f32,
    n: usize,
}

// SAFETY: `Out` is a pointer into the caller's `&mut [f32]`, which outlives the parallel section that uses it;
// the tasks write disjoint (row, column) blocks, so sharing the pointer between threads races on nothing.
unsafe impl Send for Out {}
// SAFETY: as for `Send`: no two tasks write the same element, and none reads the output.
unsafe impl Sync for Out {}

/// Where one register tile's results go and what its epilogue adds: rows `row0 .. row0 + rows` of the output,
/// columns `16·panel0 ..` (at most `n`).
#[derive(Clone, Copy)]
struct Dst<'a> {
    out: Out,
    row0: usize,
    rows: usize,
    panel0: usize,
    bias: Option<&'a [f32]>,
}

impl Dst<'_> {
    /// Mask of the valid output columns of panel `panel0 + p`, and the first of them.
    fn columns(&self, p: usize) -> (__mmask16, usize) {
        let c0 = (self.panel0 + p) * PANEL;
        let valid = self.out.n.saturating_sub(c0).min(PANEL);
        (((1u32 << valid) - 1) as __mmask16, c0)
    }

    /// Store `v` (the 16 channels of panel `panel0 + p`, plus the bias) as row `r` of this tile.
    ///
    /// # Safety
    /// The CPU must have AVX-512F; `r < rows`, and the output must have the rows and columns of this tile.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn store(&self, r: usize, p: usize, v: __m512) {
        let (mask, c0) = self.columns(p);
        // SAFETY: the masked load reads only the valid columns `c0 ..` of the bias (n values) and the masked
        // store writes only those of output row `row0 + r` (< m): elements of the caller's slices.
        unsafe {
            let bias = match self.bias {
                Some(b) => _mm512_maskz_loadu_ps(mask, b.as_ptr().add(c0)),
                None => _mm512_setzero_ps(),
            };
            let at = self.out.ptr.add((self.row0 + r) * self.out.n + c0);
            _mm512_mask_storeu_ps(at, mask, _mm512_add_ps(v, bias));
        }
    }
}

/// One dot-product instruction, and the register tile's loop compiled for its features.
trait Dot {
    /// Add to the `R × P` accumulators `acc` the products of activation rows `a` (`R` rows of `stride` bytes, 4
    /// bytes per line) with the lines of `P` equally long panel slices.
    ///
    /// # Safety
    /// The CPU must have AVX-512F and the instruction's features; each of the `R` rows at `a` must hold 4 readable
    /// bytes per line of the slices.
    unsafe fn accumulate<const R: usize, const P: usize>(
        acc: &mut [[__m512i; P]; R],
        a: *const u8,
        stride: usize,
        panels: [&[Line]; P],
    );
}

/// `vpdpbusd`: four u8 × i8 products per lane, summed in i32 (wrapping, never reached: see [`matmul_int8_vnni`]).
struct Vnni;

impl Dot for Vnni {
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn accumulate<const R: usize, const P: usize>(
        acc: &mut [[__m512i; P]; R],
        a: *const u8,
        stride: usize,
        panels: [&[Line]; P],
    ) {
        // SAFETY: this function's contract, which is `accumulate_with`'s.
        unsafe {
            accumulate_with(acc, a, stride, panels, |c, x, w| {
                _mm512_dpbusd_epi32(c, x, w)
            })
        }
    }
}

/// `vdpbf16ps`: two bf16 × bf16 products per lane, summed in f32 (the accumulator's bits travel as `__m512i`).
struct Bf16Dot;

impl Dot for Bf16Dot {
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    unsafe fn accumulate<const R: usize, const P: usize>(
        acc: &mut [[__m512i; P]; R],
        a: *const u8,
        stride: usize,
        panels: [&[Line]; P],
    ) {
        let dot = |c: __m512i, x: __m512i, w: __m512i| {
            // SAFETY: `__m512bh` and `__m512i` are both 64 bytes of plain lanes; reinterpreting them is what the
            // instruction does with its register operands.
            let (x, w) = unsafe {
                (
                    std::mem::transmute::<__m512i, __m512bh>(x),
                    std::mem::transmute::<__m512i, __m512bh>(w),
                )
            };
            _mm512_castps_si512(_mm512_dpbf16_ps(_mm512_castsi512_ps(c), x, w))
        };
        // SAFETY: this function's contract, which is `accumulate_with`'s.
        unsafe { accumulate_with(acc, a, stride, panels, dot) }
    }
}

/// [`Dot::accumulate`] with `dot` as the instruction. Always inlined, so that it compiles with the features of the
/// implementation that calls it.
///
/// # Safety
/// As [`Dot::accumulate`].
#[inline(always)]
unsafe fn accumulate_with<const R: usize, const P: usize>(
    acc_io: &mut [[__m512i; P]; R],
    a: *const u8,
    stride: usize,
    panels: [&[Line]; P],
    dot: impl Fn(__m512i, __m512i, __m512i) -> __m512i,
) {
    // A local copy, so that the accumulators live in registers for the whole loop.
    let mut acc = *acc_io;
    let lines = panels.iter().map(|p| p.len()).min().unwrap_or(0);
    for l in 0..lines {
        // SAFETY: line l < the length of every slice; bytes 4l .. 4l + 4 of each of the R rows at `a` (the
        // contract); the lines are 64-byte aligned `Line`s.
        unsafe {
            let w: [__m512i; P] =
                std::array::from_fn(|p| _mm512_load_si512(panels[p].as_ptr().add(l).cast()));
            for (r, row) in acc.iter_mut().enumerate() {
                let x = _mm512_set1_epi32(a.add(r * stride + 4 * l).cast::<i32>().read_unaligned());
                for (c, &wp) in row.iter_mut().zip(&w) {
                    *c = dot(*c, x, wp);
                }
            }
        }
    }
    *acc_io = acc;
}

/// The activation rows of a dot-product kernel: `rows` rows (padded to a multiple of [`TAIL_ROWS`]) of `stride`
/// bytes, 4 bytes per packed line.
struct Acts<'a> {
    bytes: &'a [u8],
    stride: usize,
    rows: usize,
}

/// Split the (rows × panels) product over rayon's threads and run `block(big, r0, rows, panels)` for every block
/// of rows: `big` says whether it has [`ROWS`] rows or [`TAIL_ROWS`] (of which `rows` are valid), `panels` is the
/// task's range of panels.
fn for_each_block(
    m: usize,
    panels: usize,
    block: impl Fn(bool, usize, usize, Range<usize>) + Sync,
) {
    let row_tasks = m.div_ceil(ROWS_PER_TASK);
    let panel_tasks = panels.div_ceil(PANELS_PER_TASK);
    (0..row_tasks * panel_tasks).into_par_iter().for_each(|t| {
        let (rt, pt) = (t / panel_tasks, t % panel_tasks);
        let rows_end = ((rt + 1) * ROWS_PER_TASK).min(m);
        let task_panels = pt * PANELS_PER_TASK..((pt + 1) * PANELS_PER_TASK).min(panels);
        let mut r0 = rt * ROWS_PER_TASK;
        while r0 < rows_end {
            let left = rows_end - r0;
            let (big, rows) = if left >= ROWS {
                (true, ROWS)
            } else {
                (false, left.min(TAIL_ROWS))
            };
            block(big, r0, rows, task_panels.clone());
            r0 += rows;
        }
    });
}

/// The products of the `R` activation rows from `dst.row0` with `panels` (at most [`PANELS_PER_TASK`]), in k
/// blocks of [`K_BLOCK_LINES`] that pass over all the panels in turn, each tile's accumulators handed to
/// `epilogue` at the end.
///
/// # Safety
/// The CPU must have AVX-512F and `D`'s features; `acts` must hold rows `dst.row0 .. dst.row0 + R`, each with
/// `4 · weight.lines_per_panel()` bytes; `panels` must be inside `weight`.
#[target_feature(enable = "avx512f")]
unsafe fn row_block<D: Dot, const R: usize>(
    acts: &Acts,
    weight: &PackedWeight,
    panels: Range<usize>,
    dst: Dst,
    epilogue: impl Fn(&[__m512i], usize, Dst),
) {
    debug_assert!(dst.row0 + R <= acts.rows && panels.len() <= PANELS_PER_TASK);
    let lines = weight.lines_per_panel();
    let pairs = panels.len() / 2;
    let single = (panels.len() % 2 == 1).then_some(panels.end - 1);
    let mut acc2 = [[[_mm512_setzero_si512(); 2]; R]; PANELS_PER_TASK / 2];
    let mut acc1 = [[_mm512_setzero_si512(); 1]; R];
    // SAFETY: rows row0 .. row0 + R of the activations hold 4 bytes per line of every panel (the contract).
    let a = unsafe { acts.bytes.as_ptr().add(dst.row0 * acts.stride) };
    for l0 in (0..lines).step_by(K_BLOCK_LINES) {
        let l1 = (l0 + K_BLOCK_LINES).min(lines);
        let slice = |p: usize| &weight.panel(p)[l0..l1];
        // SAFETY: the slices are lines l0 .. l1 of panels inside `weight`; each activation row holds the 4 bytes of
        // each of those lines from byte 4·l0 (the contract).
        unsafe {
            for (j, acc) in acc2.iter_mut().enumerate().take(pairs) {
                let p = panels.start + 2 * j;
                D::accumulate::<R, 2>(acc, a.add(4 * l0), acts.stride, [slice(p), slice(p + 1)]);
            }
            if let Some(p) = single {
                D::accumulate::<R, 1>(&mut acc1, a.add(4 * l0), acts.stride, [slice(p)]);
            }
        }
    }
    for (j, acc) in acc2.iter().enumerate().take(pairs) {
        let panel0 = panels.start + 2 * j;
        epilogue(acc.as_flattened(), 2, Dst { panel0, ..dst });
    }
    if let Some(panel0) = single {
        epilogue(acc1.as_flattened(), 1, Dst { panel0, ..dst });
    }
}

/// Run every block of the product of `acts` (m rows) and `weight` with `D`, each tile through `epilogue`.
///
/// # Safety
/// The CPU must have AVX-512F and `D`'s features, and `epilogue` the features its `#[target_feature]` needs; `acts`
/// must be as [`Acts`] says for `m` rows and `weight`, and `out` (m, n) must be writable for the whole call.
unsafe fn run_tiles<D: Dot>(
    acts: &Acts,
    m: usize,
    weight: &PackedWeight,
    bias: Option<&[f32]>,
    out: Out,
    epilogue: &(impl Fn(&[__m512i], usize, Dst) + Sync),
) {
    for_each_block(m, weight.panels(), |big, row0, rows, panels| {
        let dst = Dst {
            out,
            row0,
            rows,
            panel0: panels.start,
            bias,
        };
        // SAFETY: `for_each_block` hands out row blocks inside the m rows, which `acts` pads to a multiple of
        // TAIL_ROWS (so a tail block's R = TAIL_ROWS rows exist), and panels inside `weight`; the blocks are
        // disjoint parts of `out`.
        unsafe {
            if big {
                row_block::<D, ROWS>(acts, weight, panels, dst, epilogue)
            } else {
                row_block::<D, TAIL_ROWS>(acts, weight, panels, dst, epilogue)
            }
        }
    });
}

/// Bytes between activation rows of `bytes` bytes: one cache line more, so that the rows of a tile, read in step,
/// fall into different L1 sets also when the row width is a multiple of 512 bytes (as the models' widths are).
fn row_stride(bytes: usize) -> usize {
    bytes + 64
}

/// Fail unless `weight` is in `format` (the kernel `what` reads no other).
fn expect_format(weight: &PackedWeight, format: Format, what: &str) -> Result<()> {
    if weight.format() != format {
        candle_core::bail!(
            "low-precision matmul: the {what} kernel takes {format:?} weights, got {:?}",
            weight.format()
        );
    }
    Ok(())
}

/// The int8 product of [`matmul_reference`](super::matmul_reference) (`out (m, n) = x (m, k) · Wᵀ + bias`) with
/// `vpdpbusd`; the output equals the reference's bit for bit.
///
/// The shifted sums stay below `255 · 127 · k_padded`, inside i32 for any `k` under 66,000.
pub(crate) fn matmul_int8_vnni(
    cpu: Avx512Vnni,
    x: &[f32],
    m: usize,
    weight: &PackedWeight,
    bias: Option<&[f32]>,
    out: &mut [f32],
) -> Result<()> {
    check_operands(x, m, weight, bias, out)?;
    expect_format(weight, Format::Int8, "VNNI")?;
    let kp = weight.k_padded();
    let rows = m.next_multiple_of(TAIL_ROWS);
    let stride = row_stride(kp);
    // Padding rows are zero: their products are computed by a tail tile but never stored.
    let mut bytes = vec![0u8; rows * stride];
    let x_scales = quantize_rows_shifted(cpu, x, weight.k(), stride, &mut bytes);
    let acts = Acts {
        bytes: &bytes,
        stride,
        rows,
    };
    let out = Out {
        ptr: out.as_mut_ptr(),
        n: weight.n(),
    };
    let epilogue = |acc: &[__m512i], pair: usize, dst: Dst| {
        // SAFETY: the `Avx512Vnni` token proves AVX-512F; `dst` is a tile of `out`.
        unsafe { int8_epilogue(acc, pair, dst, weight, &x_scales) }
    };
    // SAFETY: the token proves AVX-512F and VNNI; `acts` holds `rows` rows of kp = 4 · lines_per_panel bytes;
    // `out` is the caller's (m, n) slice, borrowed mutably for this call.
    unsafe { run_tiles::<Vnni>(&acts, m, weight, bias, out, &epilogue) };
    Ok(())
}

/// [`quantize_rows`](super::quantize_rows) of the rows `x` (k values each) with AVX-512, written as `vpdpbusd`
/// reads them: each value plus 128 (`q ^ 0x80`), rows `stride ≥ k` bytes apart in `out` (the rest of each row
/// untouched). The values and the returned scales are those of the scalar code, bit for bit.
fn quantize_rows_shifted(
    _: Avx512Vnni,
    x: &[f32],
    k: usize,
    stride: usize,
    out: &mut [u8],
) -> Vec<f32> {
    x.chunks_exact(k)
        .zip(out.chunks_exact_mut(stride))
        // SAFETY: the `Avx512Vnni` token proves AVX-512F.
        .map(|(row, dst)| unsafe { quantize_row_avx512(row, &mut dst[..k], 0x80) })
        .collect()
}

/// [`quantize_row`](super::quantize_row) on AVX-512: the same maximum, the same `127 / max`, the same products
/// rounded to nearest even, clamped to ±127, NaN to 0, and the same scale returned; each value is stored as its
/// byte xor `flip` (0: the signed bytes AMX multiplies; 0x80: the value plus 128, the unsigned bytes `vpdpbusd`
/// takes). `out` must be as long as `row`.
#[target_feature(enable = "avx512f")]
pub(super) fn quantize_row_avx512(row: &[f32], out: &mut [u8], flip: u8) -> f32 {
    assert_eq!(row.len(), out.len(), "quantize_row_avx512: lengths differ");
    let lanes = |left: usize| ((1u32 << left.min(16)) - 1) as __mmask16;
    let mut acc = _mm512_setzero_ps();
    for start in (0..row.len()).step_by(16) {
        let mask = lanes(row.len() - start);
        // SAFETY: the mask covers only `row[start..]`, and masked-off lanes are not read.
        let v = unsafe { _mm512_maskz_loadu_ps(mask, row.as_ptr().add(start)) };
        // `max(|v|, acc)` returns `acc` where `v` is NaN, as `f32::max` ignores a NaN.
        acc = _mm512_max_ps(_mm512_abs_ps(v), acc);
    }
    let max = _mm512_reduce_max_ps(acc);
    if max == 0.0 || !max.is_finite() {
        out.fill(flip);
        return 0.0;
    }
    let inv = _mm512_set1_ps(INT8_MAX / max);
    let (lo, hi) = (_mm512_set1_ps(-INT8_MAX), _mm512_set1_ps(INT8_MAX));
    let flip = _mm512_set1_epi32(i32::from(flip));
    for start in (0..row.len()).step_by(16) {
        let mask = lanes(row.len() - start);
        // SAFETY: as above.
        let v = unsafe { _mm512_maskz_loadu_ps(mask, row.as_ptr().add(start)) };
        let y = _mm512_mul_ps(v, inv);
        let rounded = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(y);
        let clamped = _mm512_min_ps(_mm512_max_ps(rounded, lo), hi);
        // A NaN product (NaN value, or 0 · ∞ when 127 / max overflows) is 0 in the scalar code.
        let ordered = _mm512_cmp_ps_mask::<_CMP_ORD_Q>(y, y);
        let q = _mm512_maskz_mov_epi32(ordered, _mm512_cvttps_epi32(clamped));
        // The store keeps each lane's low byte, so xor-ing the 32-bit lane flips the stored byte.
        let q = _mm512_xor_si512(q, flip);
        // SAFETY: the mask covers only `out[start..]` (as long as `row`); masked-off lanes are not written.
        unsafe { _mm512_mask_cvtepi32_storeu_epi8(out.as_mut_ptr().add(start).cast(), mask, q) };
    }
    max / INT8_MAX
}

/// `(acc − 128 · column_sum) as f32 · (x_scale · w_scale) + bias`, with the reference's roundings, stored for the
/// valid rows and channels of `dst` (`acc` holds `pair` panels per row).
///
/// # Safety
/// The CPU must have AVX-512F; `dst` must be a tile of the output: its rows below m, its panels inside `weight`,
/// `x_scales` one per row.
#[target_feature(enable = "avx512f")]
unsafe fn int8_epilogue(
    acc: &[__m512i],
    pair: usize,
    dst: Dst,
    weight: &PackedWeight,
    x_scales: &[f32],
) {
    for (r, row) in acc.chunks_exact(pair).enumerate().take(dst.rows) {
        let xs = _mm512_set1_ps(x_scales[dst.row0 + r]);
        for (p, &a) in row.iter().enumerate() {
            let panel = dst.panel0 + p;
            // SAFETY: a panel's scales and column sums are 16 values each.
            let (ws, sums) = unsafe {
                (
                    _mm512_loadu_ps(weight.panel_scales(panel).as_ptr()),
                    _mm512_loadu_si512(weight.panel_column_sums(panel).as_ptr().cast()),
                )
            };
            let exact = _mm512_sub_epi32(a, _mm512_slli_epi32::<7>(sums));
            let v = _mm512_mul_ps(_mm512_cvtepi32_ps(exact), _mm512_mul_ps(xs, ws));
            // SAFETY: row r < dst.rows and panel p of this tile (this function's contract).
            unsafe { dst.store(r, p, v) };
        }
    }
}

/// The bf16 product of [`matmul_reference`](super::matmul_reference) with `vdpbf16ps`: activations rounded to bf16
/// (ties to even), products exact, sums in f32 in another order than the reference's.
pub(crate) fn matmul_bf16(
    _: Avx512Bf16,
    x: &[f32],
    m: usize,
    weight: &PackedWeight,
    bias: Option<&[f32]>,
    out: &mut [f32],
) -> Result<()> {
    check_operands(x, m, weight, bias, out)?;
    expect_format(weight, Format::Bf16, "AVX512-BF16")?;
    let (k, kp) = (weight.k(), weight.k_padded());
    let rows = m.next_multiple_of(TAIL_ROWS);
    let stride = row_stride(2 * kp);
    let mut bytes = vec![0u8; rows * stride];
    for (dst, src) in bytes.chunks_exact_mut(stride).zip(x.chunks_exact(k)) {
        for (d, &v) in dst.chunks_exact_mut(2).zip(src) {
            d.copy_from_slice(&bf16_bits(v).to_le_bytes());
        }
    }
    let acts = Acts {
        bytes: &bytes,
        stride,
        rows,
    };
    let out = Out {
        ptr: out.as_mut_ptr(),
        n: weight.n(),
    };
    let epilogue = |acc: &[__m512i], pair: usize, dst: Dst| {
        // SAFETY: the `Avx512Bf16` token proves AVX-512F; `dst` is a tile of `out`.
        unsafe { f32_epilogue(acc, pair, dst) }
    };
    // SAFETY: the token proves AVX-512F and BF16; `acts` holds `rows` rows of 2·kp = 4 · lines_per_panel bytes;
    // `out` is the caller's (m, n) slice, borrowed mutably for this call.
    unsafe { run_tiles::<Bf16Dot>(&acts, m, weight, bias, out, &epilogue) };
    Ok(())
}

/// Store f32 accumulators (carried as `__m512i`) plus the bias for the valid rows and channels of `dst`.
///
/// # Safety
/// The CPU must have AVX-512F; `dst` must be a tile of the output.
#[target_feature(enable = "avx512f")]
unsafe fn f32_epilogue(acc: &[__m512i], pair: usize, dst: Dst) {
    for (r, row) in acc.chunks_exact(pair).enumerate().take(dst.rows) {
        for (p, &a) in row.iter().enumerate() {
            // SAFETY: row r < dst.rows and panel p of this tile (this function's contract).
            unsafe { dst.store(r, p, _mm512_castsi512_ps(a)) };
        }
    }
}

/// How the thin kernel widens one packed line into f32 weights and multiplies them with broadcast activations.
trait Widen {
    /// k values per line.
    const KPL: usize;

    /// For each of the `R` activation rows at `x` (`stride` f32 apart, the line's `KPL` values of k first): add
    /// the line's products into the row's two accumulators (even and odd k, two dependency chains).
    ///
    /// # Safety
    /// The CPU must have AVX-512F; each row at `x` must hold `KPL` readable values.
    unsafe fn line<const R: usize>(
        w: __m512i,
        x: *const f32,
        stride: usize,
        acc: &mut [[__m512; 2]; R],
    );
}

/// int8 lanes: byte t of a lane is `(lane << (24 − 8t)) >> 24` (arithmetic), converted to f32.
struct WidenInt8;

impl Widen for WidenInt8 {
    const KPL: usize = 4;

    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn line<const R: usize>(
        w: __m512i,
        x: *const f32,
        stride: usize,
        acc: &mut [[__m512; 2]; R],
    ) {
        let wt = [
            _mm512_cvtepi32_ps(_mm512_srai_epi32::<24>(_mm512_slli_epi32::<24>(w))),
            _mm512_cvtepi32_ps(_mm512_srai_epi32::<24>(_mm512_slli_epi32::<16>(w))),
            _mm512_cvtepi32_ps(_mm512_srai_epi32::<24>(_mm512_slli_epi32::<8>(w))),
            _mm512_cvtepi32_ps(_mm512_srai_epi32::<24>(w)),
        ];
        for (r, a) in acc.iter_mut().enumerate() {
            for (t, &wv) in wt.iter().enumerate() {
                // SAFETY: row r holds KPL = 4 values at `x + r·stride` (this function's contract).
                let xv = unsafe { _mm512_set1_ps(*x.add(r * stride + t)) };
                a[t % 2] = _mm512_fmadd_ps(wv, xv, a[t % 2]);
            }
        }
    }
}

/// bf16 lanes: the even k is the lane's low half (`lane << 16`), the odd k its high half (`lane & 0xffff0000`).
struct WidenBf16;

impl Widen for WidenBf16 {
    const KPL: usize = 2;

    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn line<const R: usize>(
        w: __m512i,
        x: *const f32,
        stride: usize,
        acc: &mut [[__m512; 2]; R],
    ) {
        let wt = [
            _mm512_castsi512_ps(_mm512_slli_epi32::<16>(w)),
            _mm512_castsi512_ps(_mm512_and_si512(
                w,
                _mm512_set1_epi32(0xffff_0000_u32 as i32),
            )),
        ];
        for (r, a) in acc.iter_mut().enumerate() {
            for (t, &wv) in wt.iter().enumerate() {
                // SAFETY: row r holds KPL = 2 values at `x + r·stride` (this function's contract).
                let xv = unsafe { _mm512_set1_ps(*x.add(r * stride + t)) };
                a[t] = _mm512_fmadd_ps(wv, xv, a[t]);
            }
        }
    }
}

/// The thin kernel on `P` panels from `dst.panel0`, for `R` activation rows of `x` (`stride` f32 each, zero
/// beyond k); stores rows `< dst.rows`.
///
/// # Safety
/// The CPU must have AVX-512F; `x` must hold `R` rows of `stride ≥ k_padded` values; panels `dst.panel0 .. + P`
/// must exist; `dst` must be a block of the output.
#[target_feature(enable = "avx512f")]
unsafe fn thin_panels<W: Widen, const R: usize, const P: usize>(
    x: &[f32],
    stride: usize,
    weight: &PackedWeight,
    dst: Dst,
) {
    let panels: [&[Line]; P] = std::array::from_fn(|p| weight.panel(dst.panel0 + p));
    let mut acc = [[[_mm512_setzero_ps(); 2]; R]; P];
    for l in 0..weight.lines_per_panel() {
        for (lines, a) in panels.iter().zip(acc.iter_mut()) {
            // SAFETY: line l exists in each panel; each row of `x` holds k_padded = KPL · lines values, so the
            // KPL values from KPL·l are inside it.
            unsafe {
                let w = _mm512_load_si512(lines.as_ptr().add(l).cast());
                W::line::<R>(w, x.as_ptr().add(W::KPL * l), stride, a);
            }
        }
    }
    for (p, a) in acc.iter().enumerate() {
        let scales = match weight.format() {
            Format::Int8 => {
                let s = weight.panel_scales(dst.panel0 + p);
                // SAFETY: a panel's scales are 16 values.
                Some(unsafe { _mm512_loadu_ps(s.as_ptr()) })
            }
            Format::Bf16 => None,
        };
        for (r, halves) in a.iter().enumerate().take(dst.rows) {
            let sum = _mm512_add_ps(halves[0], halves[1]);
            let v = scales.map_or(sum, |s| _mm512_mul_ps(sum, s));
            // SAFETY: row r < dst.rows and panel p of this block (this function's contract).
            unsafe { dst.store(r, p, v) };
        }
    }
}

/// The weight-only product of [`thin_matmul_reference`](super::thin_matmul_reference) for `m ≤` [`MAX_ROWS`] f32
/// activation rows and an int8 or bf16 packed weight, with f32 FMA on the widened weight.
pub(crate) fn thin_matmul(
    _: Avx512,
    x: &[f32],
    m: usize,
    weight: &PackedWeight,
    bias: Option<&[f32]>,
    out: &mut [f32],
) -> Result<()> {
    check_operands(x, m, weight, bias, out)?;
    if m > MAX_ROWS {
        candle_core::bail!("thin low-precision matmul: {m} rows, more than {MAX_ROWS}");
    }
    if m == 0 {
        return Ok(());
    }
    let (k, kp) = (weight.k(), weight.k_padded());
    // The kernel's rows: a power of two, so four tile heights cover every m; padding rows are zero and not stored.
    let rows = m.next_power_of_two();
    let stride = row_stride(4 * kp) / 4;
    let mut xp = vec![0f32; rows * stride];
    for (dst, src) in xp.chunks_exact_mut(stride).zip(x.chunks_exact(k)) {
        dst[..k].copy_from_slice(src);
    }
    let out = Out {
        ptr: out.as_mut_ptr(),
        n: weight.n(),
    };
    let panels = weight.panels();
    (0..panels.div_ceil(THIN_PANELS_PER_TASK))
        .into_par_iter()
        .for_each(|t| {
            let end = ((t + 1) * THIN_PANELS_PER_TASK).min(panels);
            let mut p0 = t * THIN_PANELS_PER_TASK;
            while p0 < end {
                // Few rows leave few dependency chains: more panels at once keep the FMA units busy.
                let group = (4 / rows).max(1);
                let take = if end - p0 >= group { group } else { 1 };
                let dst = Dst {
                    out,
                    row0: 0,
                    rows: m,
                    panel0: p0,
                    bias,
                };
                // SAFETY: the `Avx512` token proves AVX-512F; `xp` holds `rows` rows of stride ≥ kp values; panels
                // p0 .. p0 + take ≤ panels exist; this task alone writes their columns.
                unsafe {
                    match weight.format() {
                        Format::Int8 => {
                            thin_dispatch::<WidenInt8>(rows, take, &xp, stride, weight, dst)
                        }
                        Format::Bf16 => {
                            thin_dispatch::<WidenBf16>(rows, take, &xp, stride, weight, dst)
                        }
                    }
                };
                p0 += take;
            }
        });
    Ok(())
}

/// Run the instantiation of [`thin_panels`] for `rows` (1, 2, 4 or 8) and `take` panels (1, or `4 / rows` for 1
/// and 2 rows).
///
/// # Safety
/// As [`thin_panels`], with `x` holding `rows` rows.
unsafe fn thin_dispatch<W: Widen>(
    rows: usize,
    take: usize,
    x: &[f32],
    stride: usize,
    weight: &PackedWeight,
    dst: Dst,
) {
    debug_assert!(rows.is_power_of_two() && rows <= MAX_ROWS);
    // SAFETY: this function's contract, with R = rows and P = take.
    unsafe {
        match (rows, take) {
            (1, 4) => thin_panels::<W, 1, 4>(x, stride, weight, dst),
            (1, _) => thin_panels::<W, 1, 1>(x, stride, weight, dst),
            (2, 2) => thin_panels::<W, 2, 2>(x, stride, weight, dst),
            (2, _) => thin_panels::<W, 2, 1>(x, stride, weight, dst),
            (4, _) => thin_panels::<W, 4, 1>(x, stride, weight, dst),
            _ => thin_panels::<W, 8, 1>(x, stride, weight, dst),
        }
    }
}

/// This module's kernels by name, for code outside the crate that measures them (`examples/kernel_peaks.rs`);
/// model code reaches them through `ops`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// `matmul_int8_vnni`: int8 weights and activations with `vpdpbusd`.
    Int8Vnni,
    /// `matmul_bf16`: bf16 weights and activations with `vdpbf16ps`.
    Bf16,
    /// `thin_matmul`: at most `MAX_ROWS` f32 activation rows, int8 or bf16 weights widened to f32.
    Thin,
}

impl Kernel {
    /// `out (m, n) = x (m, k) · Wᵀ (+ bias)` with this kernel, when this CPU runs it (an error naming the missing
    /// instructions otherwise).
    pub fn run(
        self,
        x: &[f32],
        m: usize,
        weight: &PackedWeight,
        bias: Option<&[f32]>,
        out: &mut [f32],
    ) -> Result<()> {
        let missing = |what: &str| {
            candle_core::Error::Msg(format!(
                "the {self:?} kernel needs {what}, which this CPU lacks (or COCA_AVX512=0 turned off)"
            ))
        };
        match self {
            Kernel::Int8Vnni => {
                let cpu =
                    crate::nn::kernels::cpu::avx512_vnni().ok_or_else(|| missing("AVX512-VNNI"))?;
                matmul_int8_vnni(cpu, x, m, weight, bias, out)
            }
            Kernel::Bf16 => {
                let cpu =
                    crate::nn::kernels::cpu::avx512_bf16().ok_or_else(|| missing("AVX512-BF16"))?;
                matmul_bf16(cpu, x, m, weight, bias, out)
            }
            Kernel::Thin => {
                let cpu = crate::nn::kernels::cpu::avx512().ok_or_else(|| missing("AVX-512F"))?;
                thin_matmul(cpu, x, m, weight, bias, out)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::kernels::cpu;
    use crate::nn::kernels::lowp::{matmul_reference, quantize_rows, thin_matmul_reference};
    use crate::nn::kernels::tests::values;
    use crate::test_support::skip;

    const MS: [usize; 7] = [1, 2, 5, 8, 9, 50, 77];
    const NS: [usize; 3] = [16, 40, 200];
    const KS: [usize; 3] = [64, 70, 512];

    /// Activations (m, k) with one all-zero row and one row holding an infinity when there is room (both quantise
    /// to zeros with scale 0), weights (n, k) and a bias (n), varied by the shape.
    fn operands(m: usize, n: usize, k: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let seed = (m * 1000 + n * 10 + k) as u64;
        let mut x = values(m * k, seed);
        if m >= 5 {
            x[2 * k..3 * k].fill(0.0);
            x[4 * k + 3] = f32::INFINITY;
        }
        (x, values(n * k, seed + 1), values(n, seed + 2))
    }

    /// Fail unless each output is within `slack · Σ_j |x_j · w̃_j|` of the reference (`w̃` the dequantised
    /// weight): the bound of f32 sums of k terms in any order, times a small factor.
    fn assert_within_sum_bound(got: &[f32], want: &[f32], x: &[f32], w: &PackedWeight, slack: f32) {
        let (n, k) = (w.n(), w.k());
        let wd = w.dequantize().unwrap();
        for (i, (g, e)) in got.iter().zip(want).enumerate() {
            let (r, c) = (i / n, i % n);
            let mass: f32 = (0..k).map(|j| (x[r * k + j] * wd[c * k + j]).abs()).sum();
            let bound = slack * (k as f32) * f32::EPSILON * mass + 1e-6;
            assert!(
                (g - e).abs() <= bound,
                "output ({r}, {c}): {g} vs {e} (bound {bound})"
            );
        }
    }

    #[test]
    fn vnni_int8_equals_the_reference_bit_for_bit() {
        let Some(cpu) = cpu::avx512_vnni() else {
            skip("this CPU has no AVX512-VNNI (or COCA_AVX512=0 is set)");
            return;
        };
        for (m, n, k) in MS
            .iter()
            .flat_map(|&m| NS.iter().flat_map(move |&n| KS.map(|k| (m, n, k))))
        {
            let (x, w, bias) = operands(m, n, k);
            let w = PackedWeight::quantize_int8(&w, n, k).unwrap();
            for b in [None, Some(bias.as_slice())] {
                let mut want = vec![0f32; m * n];
                matmul_reference(&x, m, &w, b, &mut want).unwrap();
                let mut got = vec![f32::NAN; m * n];
                matmul_int8_vnni(cpu, &x, m, &w, b, &mut got).unwrap();
                let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                assert_eq!(
                    bits(&got),
                    bits(&want),
                    "m {m} n {n} k {k} bias {}",
                    b.is_some()
                );
            }
        }
    }

    #[test]
    fn vectorised_quantisation_equals_the_scalar_one() {
        let Some(cpu) = cpu::avx512_vnni() else {
            skip("this CPU has no AVX512-VNNI (or COCA_AVX512=0 is set)");
            return;
        };
        let k = 37;
        let mut rows: Vec<Vec<f32>> = (0..6).map(|s| values(k, 40 + s)).collect();
        rows[1][5] = f32::NAN;
        rows[2].fill(0.0);
        rows[3][0] = f32::NEG_INFINITY;
        rows[4].iter_mut().for_each(|v| *v *= 1e-38); // 127 / max overflows to ∞
                                                      // Products that land exactly on .5: ties go to the even integer.
        rows[5] = (0..k).map(|j| (j as f32 - 18.0) * 0.5).collect();
        rows[5][0] = 127.0;
        let x: Vec<f32> = rows.concat();
        let (want_q, want_scales) = quantize_rows(&x, rows.len(), k, k);
        let stride = 48;
        let mut got = vec![0u8; rows.len() * stride];
        let scales = quantize_rows_shifted(cpu, &x, k, stride, &mut got);
        assert_eq!(
            scales.iter().map(|s| s.to_bits()).collect::<Vec<_>>(),
            want_scales.iter().map(|s| s.to_bits()).collect::<Vec<_>>()
        );
        for (r, want) in want_q.chunks_exact(k).enumerate() {
            let got: Vec<i8> = got[r * stride..r * stride + k]
                .iter()
                .map(|&b| (b ^ 0x80) as i8)
                .collect();
            assert_eq!(got, want, "row {r}");
        }
    }

    #[test]
    fn vnni_int8_sums_stay_exact_at_full_scale() {
        let Some(cpu) = cpu::avx512_vnni() else {
            skip("this CPU has no AVX512-VNNI (or COCA_AVX512=0 is set)");
            return;
        };
        // Every activation and weight at ±127 after quantisation: the largest shifted sums.
        let (m, n, k) = (13, 33, 3000);
        let x: Vec<f32> = (0..m * k)
            .map(|i| if i % 3 == 0 { -1.0 } else { 1.0 })
            .collect();
        let w: Vec<f32> = (0..n * k)
            .map(|i| if i % 5 == 0 { 1.0 } else { -1.0 })
            .collect();
        let w = PackedWeight::quantize_int8(&w, n, k).unwrap();
        let mut want = vec![0f32; m * n];
        matmul_reference(&x, m, &w, None, &mut want).unwrap();
        let mut got = vec![0f32; m * n];
        matmul_int8_vnni(cpu, &x, m, &w, None, &mut got).unwrap();
        assert_eq!(got, want);
    }

    #[test]
    fn bf16_matches_the_reference_up_to_the_order_of_sums() {
        let Some(cpu) = cpu::avx512_bf16() else {
            skip("this CPU has no AVX512-BF16 (or COCA_AVX512=0 is set)");
            return;
        };
        for (m, n, k) in MS
            .iter()
            .flat_map(|&m| NS.iter().flat_map(move |&n| KS.map(|k| (m, n, k))))
        {
            let (mut x, w, bias) = operands(m, n, k);
            // An infinity would make both sides inf or NaN alike; the bound needs finite sums.
            x.iter_mut()
                .filter(|v| v.is_infinite())
                .for_each(|v| *v = 0.5);
            let w = PackedWeight::from_f32_as_bf16(&w, n, k).unwrap();
            let mut want = vec![0f32; m * n];
            matmul_reference(&x, m, &w, Some(&bias), &mut want).unwrap();
            let mut got = vec![f32::NAN; m * n];
            matmul_bf16(cpu, &x, m, &w, Some(&bias), &mut got).unwrap();
            let xb: Vec<f32> = x
                .iter()
                .map(|&v| super::super::bf16_to_f32(bf16_bits(v)))
                .collect();
            assert_within_sum_bound(&got, &want, &xb, &w, 2.0);
        }
    }

    #[test]
    fn thin_kernel_matches_the_weight_only_reference() {
        let Some(cpu) = cpu::avx512() else {
            skip("this CPU has no AVX-512F (or COCA_AVX512=0 is set)");
            return;
        };
        let shapes = (1..=MAX_ROWS)
            .flat_map(|m| NS.iter().flat_map(move |&n| KS.map(|k| (m, n, k))))
            .chain([(1, 3088 * 16 - 5, 64), (3, 1000, 512)]);
        for (m, n, k) in shapes {
            let (mut x, w, bias) = operands(m, n, k);
            x.iter_mut()
                .filter(|v| v.is_infinite())
                .for_each(|v| *v = 0.5);
            for w in [
                PackedWeight::quantize_int8(&w, n, k).unwrap(),
                PackedWeight::from_f32_as_bf16(&w, n, k).unwrap(),
            ] {
                for b in [None, Some(bias.as_slice())] {
                    let mut want = vec![0f32; m * n];
                    thin_matmul_reference(&x, m, &w, b, &mut want).unwrap();
                    let mut got = vec![f32::NAN; m * n];
                    thin_matmul(cpu, &x, m, &w, b, &mut got).unwrap();
                    assert_within_sum_bound(&got, &want, &x, &w, 3.0);
                }
            }
        }
    }

    #[test]
    fn wrong_operands_are_refused() {
        let w8 = PackedWeight::quantize_int8(&values(32 * 8, 1), 32, 8).unwrap();
        let wb = PackedWeight::from_f32_as_bf16(&values(32 * 8, 1), 32, 8).unwrap();
        let x = values(9 * 8, 2);
        let mut out = vec![0f32; 9 * 32];
        let mut checked = 0;
        if let Some(cpu) = cpu::avx512_vnni() {
            let err = matmul_int8_vnni(cpu, &x, 9, &wb, None, &mut out).unwrap_err();
            assert!(
                err.to_string().contains("takes Int8 weights, got Bf16"),
                "{err}"
            );
            let err = matmul_int8_vnni(cpu, &x[1..], 9, &w8, None, &mut out).unwrap_err();
            assert!(err.to_string().contains("x has 71 values"), "{err}");
            checked += 1;
        }
        if let Some(cpu) = cpu::avx512_bf16() {
            let err = matmul_bf16(cpu, &x, 9, &w8, None, &mut out).unwrap_err();
            assert!(
                err.to_string().contains("takes Bf16 weights, got Int8"),
                "{err}"
            );
            let err = matmul_bf16(cpu, &x, 9, &wb, Some(&[0.0; 3]), &mut out).unwrap_err();
            assert!(err.to_string().contains("bias Some(3)"), "{err}");
            checked += 1;
        }
        if let Some(cpu) = cpu::avx512() {
            let err = thin_matmul(cpu, &x, 9, &w8, None, &mut out).unwrap_err();
            assert!(err.to_string().contains("9 rows, more than 8"), "{err}");
            checked += 1;
        }
        for (kernel, w) in [
            (Kernel::Int8Vnni, &w8),
            (Kernel::Bf16, &wb),
            (Kernel::Thin, &w8),
        ] {
            match kernel.run(&x[..8], 1, w, None, &mut out[..32]) {
                Ok(()) => checked += 1,
                Err(e) => assert!(e.to_string().contains("which this CPU lacks"), "{e}"),
            }
        }
        if checked < 6 {
            skip("this CPU lacks AVX-512F, AVX512-VNNI or AVX512-BF16 (or COCA_AVX512=0 is set)");
        }
    }
}
