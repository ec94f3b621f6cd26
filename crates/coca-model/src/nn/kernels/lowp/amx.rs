//! The low-precision products of [`super::matmul_reference`] on AMX tiles (`tdpbssd` for int8, `tdpbf16ps` for
//! bf16), one function for both formats.
//!
//! # Data flow
//!
//! 1. The activation rows are converted once into a 64-byte aligned buffer `A`: int8 rows quantised exactly as
//!    [`super::quantize_rows`] does (same values, same scales), or bf16 rows rounded as [`super::bf16_bits`]
//!    does; each row [`PackedWeight::k_padded`] wide, and the rows padded with zeros to a multiple of 16, so
//!    every tile load reads whole rows that exist.
//! 2. An AMX tile holds 16 rows of 64 bytes. An A tile is 16 activation rows × one 64-byte step of k; a B tile is
//!    the 16 lines of a weight panel for that step, exactly as [`PackedWeight`] stores them; a C tile is 16 rows ×
//!    16 output channels of i32 (int8) or f32 (bf16) sums. The micro-kernel keeps 2 × 2 C tiles (32 rows × 32
//!    channels, `tmm0`–`tmm3`) while it walks k, loading two A tiles (`tmm4`, `tmm5`) and two B tiles (`tmm6`,
//!    `tmm7`) per step for four tile products, then stores the C tiles to an aligned scratch block.
//! 3. The epilogue turns the sums into outputs with the reference's arithmetic: int8 `acc as f32 · (x_scale ·
//!    w_scale) + bias`, bf16 `acc + bias` (plus `0.0` without a bias, as the reference adds). The int8 output is
//!    therefore bit-identical to the reference's; the bf16 output differs only in the order of the f32 sums.
//!
//! # Threads
//!
//! The output is cut into tasks of up to `MAX_TASK_ROW_BLOCKS` row blocks × a run of panel pairs. Each task
//! configures the tiles of its own thread (`ldtilecfg`), sweeps its panels with the row blocks inside (a panel
//! pair's B tiles are reused by every row block while they are in L1, the task's A rows stay in L2), and releases
//! the tiles (`tilerelease`) at the end.
//!
//! The AMX instructions are written as inline assembly: their intrinsics are not stable in Rust. The compiler
//! never allocates tile registers itself, so the tile state that one `asm!` block leaves for the next (the
//! configuration) is not disturbed between them.

use std::arch::x86_64::*;
use std::mem::MaybeUninit;
use std::ops::Range;

use candle_core::Result;
use rayon::prelude::*;

use super::avx512::quantize_row_avx512;
use super::{check_operands, Format, Line, PackedWeight, LINE_BYTES, PANEL};
use crate::nn::kernels::cpu::{self, Amx};

/// Rows of an AMX tile (and of a block of activation rows).
const TILE_ROWS: usize = 16;

/// Bytes of one B tile: the 16 lines of a panel for one step of k.
const B_TILE_BYTES: usize = TILE_ROWS * LINE_BYTES;

/// Bytes of one C tile: 16 rows × 16 sums of 4 bytes.
const C_TILE_BYTES: usize = TILE_ROWS * PANEL * 4;

/// Row blocks (of 16) per task: 128 rows of `A`, at most 384 KiB at k = 3072 in int8, stay in L2 while the task
/// sweeps its panels.
const MAX_TASK_ROW_BLOCKS: usize = 8;

/// Tasks per thread: enough for rayon to rebalance when a core is busy with other work.
const TASKS_PER_THREAD: usize = 4;

/// Below this many multiply-adds a product runs on the calling thread: splitting costs more than it saves.
const MIN_PARALLEL_MACS: usize = 1 << 22;

/// Activation rows converted per parallel task when `A` is filled.
const CONVERT_ROWS_PER_TASK: usize = 16;

/// The operand of `ldtilecfg`: palette 1, every one of the 8 tiles 16 rows × 64 bytes.
#[repr(C, align(64))]
struct TileConfig([u8; 64]);

impl TileConfig {
    fn all_full() -> Self {
        let mut bytes = [0u8; 64];
        bytes[0] = 1;
        for tile in 0..8 {
            bytes[16 + 2 * tile..18 + 2 * tile].copy_from_slice(&(LINE_BYTES as u16).to_le_bytes());
            bytes[48 + tile] = TILE_ROWS as u8;
        }
        Self(bytes)
    }
}

/// The four C tiles of a micro-kernel as stored by `tilestored`: tile `2·row block + panel`, each 16 rows of 16
/// 32-bit sums (i32 for int8, f32 bits for bf16).
#[repr(C, align(64))]
struct CTiles([[u32; TILE_ROWS * PANEL]; 4]);

/// The activation rows converted for the tiles: `rows` (a multiple of 16) rows of `stride` bytes, 64-byte
/// aligned, zero beyond the data; and, for int8, one scale per real row.
struct Activations {
    lines: Vec<Line>,
    stride: usize,
    scales: Vec<f32>,
}

impl Activations {
    /// Convert `x` (m, k) for `weight`'s format.
    fn new(_: Amx, x: &[f32], m: usize, weight: &PackedWeight) -> Self {
        let (k, kp) = (weight.k(), weight.k_padded());
        let rows = m.div_ceil(TILE_ROWS) * TILE_ROWS;
        let elem = match weight.format() {
            Format::Int8 => 1,
            Format::Bf16 => 2,
        };
        let stride = kp * elem;
        let mut lines = vec![Line::ZERO; rows * stride / LINE_BYTES];
        let mut scales = Vec::new();
        let chunk = CONVERT_ROWS_PER_TASK;
        match weight.format() {
            Format::Int8 => {
                scales = vec![0f32; m];
                // SAFETY: `Line` is `repr(C)` around `[u8; 64]`, so the lines are `len · 64` initialised bytes;
                // the new slice borrows `lines` mutably for its whole life.
                let q: &mut [u8] = unsafe {
                    std::slice::from_raw_parts_mut(
                        lines.as_mut_ptr().cast(),
                        lines.len() * LINE_BYTES,
                    )
                };
                q.par_chunks_mut(chunk * kp)
                    .zip(x.par_chunks(chunk * k))
                    .zip(scales.par_chunks_mut(chunk))
                    .for_each(|((q, x), scales)| {
                        for ((q, x), s) in q.chunks_exact_mut(kp).zip(x.chunks_exact(k)).zip(scales)
                        {
                            // SAFETY: an `Amx` token is only made after `cpu::avx512()` (see `cpu::amx`).
                            *s = unsafe { quantize_row_avx512(x, &mut q[..k], 0) };
                        }
                    });
            }
            Format::Bf16 => {
                // SAFETY: as above; two bytes make a valid `u16`, and 64-byte alignment suits it.
                let b: &mut [u16] = unsafe {
                    std::slice::from_raw_parts_mut(
                        lines.as_mut_ptr().cast(),
                        lines.len() * LINE_BYTES / 2,
                    )
                };
                b.par_chunks_mut(chunk * kp)
                    .zip(x.par_chunks(chunk * k))
                    .for_each(|(b, x)| {
                        for (b, x) in b.chunks_exact_mut(kp).zip(x.chunks_exact(k)) {
                            // SAFETY: as for int8.
                            unsafe { bf16_row_avx512(x, &mut b[..k]) };
                        }
                    });
            }
        }
        Self {
            lines,
            stride,
            scales,
        }
    }

    /// The first byte of row block `b` (rows `16·b ..`).
    fn block(&self, b: usize) -> *const u8 {
        self.lines
            .as_ptr()
            .cast::<u8>()
            .wrapping_add(b * TILE_ROWS * self.stride)
    }
}

/// [`super::bf16_bits`] of every value of `row` into `out` (as long as `row`), on AVX-512: the same integer
/// rounding (ties to even) and the same quiet NaN. (`vcvtneps2bf16` would flush subnormals to zero.)
#[target_feature(enable = "avx512f")]
fn bf16_row_avx512(row: &[f32], out: &mut [u16]) {
    assert_eq!(row.len(), out.len(), "bf16_row_avx512: lengths differ");
    let (bias, one, quiet) = (
        _mm512_set1_epi32(0x7fff),
        _mm512_set1_epi32(1),
        _mm512_set1_epi32(0x40),
    );
    for start in (0..row.len()).step_by(16) {
        let mask = lanes(row.len() - start);
        // SAFETY: the mask covers only `row[start..]`; masked-off lanes are not read.
        let v = unsafe { _mm512_maskz_loadu_ps(mask, row.as_ptr().add(start)) };
        let bits = _mm512_castps_si512(v);
        let high = _mm512_srli_epi32::<16>(bits);
        let round = _mm512_add_epi32(bias, _mm512_and_si512(high, one));
        let rounded = _mm512_srli_epi32::<16>(_mm512_add_epi32(bits, round));
        let nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v);
        let result = _mm512_mask_mov_epi32(rounded, nan, _mm512_or_si512(high, quiet));
        // SAFETY: the mask covers only `out[start..]`; masked-off lanes are not written.
        unsafe {
            _mm512_mask_cvtepi32_storeu_epi16(out.as_mut_ptr().add(start).cast(), mask, result)
        };
    }
}

/// The mask of the first `min(left, 16)` lanes.
fn lanes(left: usize) -> __mmask16 {
    if left >= 16 {
        0xffff
    } else {
        (1u16 << left) - 1
    }
}

/// The tile micro-kernels of one product instruction: 2 × 2 C tiles, and 1 × 2 for a last odd row block.
macro_rules! tile_kernels {
    ($two_by_two:ident, $one_by_two:ident, $dp:literal) => {
        /// The 2 × 2 C tiles of row blocks at `a0`, `a1` (rows `a_stride` bytes apart) and the panels at `b0`,
        /// `b1`, summed over `steps` steps of k, stored into `c`.
        ///
        /// # Safety
        /// The CPU must run AMX and this thread's tiles must be configured as [`TileConfig::all_full`]. `a0`
        /// and `a1` must each address 16 readable rows of `steps · 64` bytes, `a_stride` apart; `b0` and `b1`
        /// `steps · 16` readable lines each.
        unsafe fn $two_by_two(
            a0: *const u8,
            a1: *const u8,
            a_stride: usize,
            b0: *const u8,
            b1: *const u8,
            steps: usize,
            c: &mut CTiles,
        ) {
            debug_assert!(steps > 0);
            // SAFETY: the loads read only what this function's contract makes readable, and the stores write
            // the 4 KiB of `c`, 64-byte aligned; `steps > 0`, so the loop counter reaches zero.
            unsafe {
                core::arch::asm!(
                    "tilezero tmm0",
                    "tilezero tmm1",
                    "tilezero tmm2",
                    "tilezero tmm3",
                    "2:",
                    "tileloadd tmm4, [{a0} + {a_stride}*1]",
                    "tileloadd tmm6, [{b0} + {line}*1]",
                    concat!($dp, " tmm0, tmm4, tmm6"),
                    "tileloadd tmm7, [{b1} + {line}*1]",
                    concat!($dp, " tmm1, tmm4, tmm7"),
                    "tileloadd tmm5, [{a1} + {a_stride}*1]",
                    concat!($dp, " tmm2, tmm5, tmm6"),
                    concat!($dp, " tmm3, tmm5, tmm7"),
                    "add {a0}, {a_step}",
                    "add {a1}, {a_step}",
                    "add {b0}, {b_step}",
                    "add {b1}, {b_step}",
                    "dec {steps}",
                    "jnz 2b",
                    "tilestored [{c} + {line}*1], tmm0",
                    "tilestored [{c} + {line}*1 + {c1}], tmm1",
                    "tilestored [{c} + {line}*1 + {c2}], tmm2",
                    "tilestored [{c} + {line}*1 + {c3}], tmm3",
                    a0 = inout(reg) a0 => _,
                    a1 = inout(reg) a1 => _,
                    b0 = inout(reg) b0 => _,
                    b1 = inout(reg) b1 => _,
                    steps = inout(reg) steps => _,
                    a_stride = in(reg) a_stride,
                    line = in(reg) LINE_BYTES,
                    c = in(reg) c.0.as_mut_ptr(),
                    a_step = const LINE_BYTES,
                    b_step = const B_TILE_BYTES,
                    c1 = const C_TILE_BYTES,
                    c2 = const 2 * C_TILE_BYTES,
                    c3 = const 3 * C_TILE_BYTES,
                    options(nostack),
                );
            }
        }

        /// The 1 × 2 C tiles of the row block at `a0` and the panels at `b0`, `b1`, stored into `c`'s tiles 0
        /// and 1.
        ///
        /// # Safety
        /// As for the 2 × 2 kernel, without `a1`.
        unsafe fn $one_by_two(
            a0: *const u8,
            a_stride: usize,
            b0: *const u8,
            b1: *const u8,
            steps: usize,
            c: &mut CTiles,
        ) {
            debug_assert!(steps > 0);
            // SAFETY: as for the 2 × 2 kernel; the stores write the first 2 KiB of `c`.
            unsafe {
                core::arch::asm!(
                    "tilezero tmm0",
                    "tilezero tmm1",
                    "2:",
                    "tileloadd tmm4, [{a0} + {a_stride}*1]",
                    "tileloadd tmm6, [{b0} + {line}*1]",
                    concat!($dp, " tmm0, tmm4, tmm6"),
                    "tileloadd tmm7, [{b1} + {line}*1]",
                    concat!($dp, " tmm1, tmm4, tmm7"),
                    "add {a0}, {a_step}",
                    "add {b0}, {b_step}",
                    "add {b1}, {b_step}",
                    "dec {steps}",
                    "jnz 2b",
                    "tilestored [{c} + {line}*1], tmm0",
                    "tilestored [{c} + {line}*1 + {c1}], tmm1",
                    a0 = inout(reg) a0 => _,
                    b0 = inout(reg) b0 => _,
                    b1 = inout(reg) b1 => _,
                    steps = inout(reg) steps => _,
                    a_stride = in(reg) a_stride,
                    line = in(reg) LINE_BYTES,
                    c = in(reg) c.0.as_mut_ptr(),
                    a_step = const LINE_BYTES,
                    b_step = const B_TILE_BYTES,
                    c1 = const C_TILE_BYTES,
                    options(nostack),
                );
            }
        }
    };
}

tile_kernels!(int8_2x2, int8_1x2, "tdpbssd");
tile_kernels!(bf16_2x2, bf16_1x2, "tdpbf16ps");

/// The output, written by several tasks at once, each to its own rows × channels.
struct Out {
    ptr: *mut f32,
    n: usize,
}

// SAFETY: the tasks of `matmul` write disjoint (row block, panel) parts of the output, which `matmul` borrows
// mutably for as long as they run.
unsafe impl Sync for Out {}

/// One product: the converted activations, the weight, and where the results go.
struct Job<'a> {
    a: &'a Activations,
    weight: &'a PackedWeight,
    bias: Option<&'a [f32]>,
    m: usize,
    out: Out,
}

impl Job<'_> {
    /// The output rows of row blocks `blocks` × the channels of panels `panels`, on the calling thread.
    fn run(&self, _: Amx, blocks: Range<usize>, panels: Range<usize>) {
        let config = TileConfig::all_full();
        // SAFETY: the `Amx` token proves the CPU runs AMX and that Linux lets this process use the tiles;
        // `config` is a valid 64-byte palette-1 configuration.
        unsafe { core::arch::asm!("ldtilecfg [{}]", in(reg) config.0.as_ptr(), options(nostack)) };
        let steps = self.weight.k_padded() / self.weight.format().k_align();
        let mut c = CTiles([[0; TILE_ROWS * PANEL]; 4]);
        for p in panels.clone().step_by(2) {
            let pair = p + 1 < panels.end;
            // A lone last panel is multiplied twice; the second copy is not stored.
            let (b0, b1) = (
                self.weight.panel(p).as_ptr().cast::<u8>(),
                self.weight
                    .panel(if pair { p + 1 } else { p })
                    .as_ptr()
                    .cast::<u8>(),
            );
            for rb in blocks.clone().step_by(2) {
                let two_rows = rb + 1 < blocks.end;
                let a0 = self.a.block(rb);
                // SAFETY: the tiles are configured above (the token proves AMX); each A block holds 16 rows of
                // `k_padded` elements = `steps · 64` bytes inside `self.a`, whose rows are padded to a multiple
                // of 16; each panel holds `steps · 16` lines.
                unsafe {
                    match (self.weight.format(), two_rows) {
                        (Format::Int8, true) => int8_2x2(
                            a0,
                            self.a.block(rb + 1),
                            self.a.stride,
                            b0,
                            b1,
                            steps,
                            &mut c,
                        ),
                        (Format::Int8, false) => int8_1x2(a0, self.a.stride, b0, b1, steps, &mut c),
                        (Format::Bf16, true) => bf16_2x2(
                            a0,
                            self.a.block(rb + 1),
                            self.a.stride,
                            b0,
                            b1,
                            steps,
                            &mut c,
                        ),
                        (Format::Bf16, false) => bf16_1x2(a0, self.a.stride, b0, b1, steps, &mut c),
                    }
                }
                for (t, tile) in c.0.iter().enumerate() {
                    let (row_block, panel) = (rb + t / 2, p + t % 2);
                    if row_block < blocks.end && panel < panels.end {
                        // SAFETY: the token proves AVX-512F (see `cpu::amx`); this task owns these rows ×
                        // channels of the output (`matmul`'s split).
                        unsafe { self.epilogue(tile, row_block, panel) };
                    }
                }
            }
        }
        // SAFETY: as for `ldtilecfg`; releasing the tiles returns this thread to the init state.
        unsafe { core::arch::asm!("tilerelease", options(nostack, nomem)) };
    }

    /// Write the outputs of the C tile of `row_block` × `panel`: the reference's arithmetic on each sum.
    ///
    /// # Safety
    /// The CPU must run AVX-512F, and no other thread may touch these rows × channels of the output meanwhile.
    #[target_feature(enable = "avx512f")]
    unsafe fn epilogue(&self, tile: &[u32; TILE_ROWS * PANEL], row_block: usize, panel: usize) {
        let n = self.out.n;
        let first = panel * PANEL;
        let width = (n - first).min(PANEL);
        let mask = lanes(width);
        let bias = match self.bias {
            // SAFETY: the mask covers `width` channels from `first`, all inside the bias (length n).
            Some(b) => unsafe { _mm512_maskz_loadu_ps(mask, b.as_ptr().add(first)) },
            None => _mm512_setzero_ps(),
        };
        let w_scales = match self.weight.format() {
            // SAFETY: a panel has 16 scales (`panel_scales`).
            Format::Int8 => unsafe { _mm512_loadu_ps(self.weight.panel_scales(panel).as_ptr()) },
            Format::Bf16 => _mm512_setzero_ps(),
        };
        let first_row = row_block * TILE_ROWS;
        for (i, sums) in tile.chunks_exact(PANEL).enumerate() {
            let r = first_row + i;
            if r >= self.m {
                break;
            }
            // SAFETY: `sums` is 16 values.
            let sums = unsafe { _mm512_loadu_si512(sums.as_ptr().cast()) };
            let value = match self.weight.format() {
                Format::Int8 => {
                    let scale = _mm512_mul_ps(_mm512_set1_ps(self.a.scales[r]), w_scales);
                    _mm512_mul_ps(_mm512_cvtepi32_ps(sums), scale)
                }
                Format::Bf16 => _mm512_castsi512_ps(sums),
            };
            let value = _mm512_add_ps(value, bias);
            // SAFETY: row r < m and channels `first .. first + width` ≤ n lie inside the (m, n) output, which
            // this task alone writes there (this function's contract).
            unsafe { _mm512_mask_storeu_ps(self.out.ptr.add(r * n + first), mask, value) };
        }
    }
}

/// `out (m, n) = x (m, k) · Wᵀ (+ bias)` on AMX tiles, with the contract, errors and arithmetic of
/// [`super::matmul_reference`] (int8: the same bits; bf16: the same up to the order of the f32 sums).
///
/// `out` may be uninitialised memory: every one of its `m · n` values is written (each row below `m` of each
/// row block, each channel below `n` of each panel, by the epilogue of the one task that owns them), so the
/// output needs no zeroing first.
pub(crate) fn matmul(
    cpu: Amx,
    x: &[f32],
    m: usize,
    weight: &PackedWeight,
    bias: Option<&[f32]>,
    out: &mut [MaybeUninit<f32>],
) -> Result<()> {
    check_operands(x, m, weight, bias, out)?;
    if m == 0 {
        return Ok(());
    }
    let a = Activations::new(cpu, x, m, weight);
    let job = Job {
        a: &a,
        weight,
        bias,
        m,
        out: Out {
            ptr: out.as_mut_ptr().cast::<f32>(),
            n: weight.n(),
        },
    };
    let blocks = m.div_ceil(TILE_ROWS);
    let panels = weight.panels();
    let row_groups = blocks.div_ceil(MAX_TASK_ROW_BLOCKS);
    let pairs = panels.div_ceil(2);
    let macs = m.saturating_mul(weight.n()).saturating_mul(weight.k());
    let threads = rayon::current_num_threads();
    let panel_groups = if macs < MIN_PARALLEL_MACS || threads <= 1 {
        1
    } else {
        (TASKS_PER_THREAD * threads).div_ceil(row_groups).min(pairs)
    };
    let task = |t: usize| {
        let (g, h) = (t / panel_groups, t % panel_groups);
        let rows = g * MAX_TASK_ROW_BLOCKS..((g + 1) * MAX_TASK_ROW_BLOCKS).min(blocks);
        let cols =
            2 * (pairs * h / panel_groups)..(2 * (pairs * (h + 1) / panel_groups)).min(panels);
        job.run(cpu, rows, cols);
    };
    let tasks = row_groups * panel_groups;
    if macs < MIN_PARALLEL_MACS || threads <= 1 {
        (0..tasks).for_each(task);
    } else {
        (0..tasks).into_par_iter().for_each(task);
    }
    Ok(())
}

/// Whether [`matmul_on_amx`] can run here: the CPU has AMX, Linux lets this process use it, and neither
/// `COCA_AMX=0` nor `COCA_AVX512=0` is set.
pub fn available() -> bool {
    cpu::amx().is_some()
}

/// `matmul` for code outside this crate that measures the kernel directly (`examples/kernel_peaks.rs`); fails
/// where AMX is not [`available`].
pub fn matmul_on_amx(
    x: &[f32],
    m: usize,
    weight: &PackedWeight,
    bias: Option<&[f32]>,
    out: &mut [f32],
) -> Result<()> {
    let Some(cpu) = cpu::amx() else {
        candle_core::bail!(
            "AMX matmul: this CPU has no usable AMX (or COCA_AMX=0 / COCA_AVX512=0 is set)"
        );
    };
    // SAFETY: `MaybeUninit<f32>` has the layout of `f32`, and `matmul` writes only f32 values into the slice,
    // so `out` holds initialised values throughout.
    let out = unsafe { &mut *(out as *mut [f32] as *mut [MaybeUninit<f32>]) };
    matmul(cpu, x, m, weight, bias, out)
}

#[cfg(test)]
mod tests {
    use super::super::{bf16_bits, bf16_to_f32, matmul_reference, quantize_row};
    use super::*;
    use crate::nn::kernels::tests::values;
    use crate::test_support::skip;

    /// The AMX token, or `None` after reporting the test skipped.
    fn amx_or_skip() -> Option<Amx> {
        let cpu = cpu::amx();
        if cpu.is_none() {
            skip("this CPU has no usable AMX (or COCA_AMX=0 / COCA_AVX512=0 is set)");
        }
        cpu
    }

    /// Activations with a few hostile rows: ties, NaN, a zero row, a subnormal maximum, an infinity.
    fn activations(m: usize, k: usize) -> Vec<f32> {
        let mut x = values(m * k, 7);
        let mut row = |r: usize, f: &dyn Fn(usize) -> f32| {
            if r < m {
                for (j, v) in x[r * k..(r + 1) * k].iter_mut().enumerate() {
                    *v = f(j);
                }
            }
        };
        row(1, &|j| {
            if j == 0 {
                2.54
            } else {
                (j % 5) as f32 * -0.635
            }
        });
        row(2, &|_| 0.0);
        row(3, &|j| {
            if j % 7 == 3 {
                f32::NAN
            } else {
                j as f32 * 0.01
            }
        });
        row(4, &|j| f32::from_bits(1 + (j % 3) as u32));
        row(5, &|j| if j == 1 { f32::INFINITY } else { 1.0 });
        x
    }

    #[test]
    fn int8_is_bit_identical_and_bf16_close_to_the_reference() {
        if amx_or_skip().is_none() {
            return;
        }
        for k in [64, 70, 768] {
            for n in [16, 40, 304] {
                let w: Vec<f32> = values(n * k, 11).iter().map(|v| v * 0.1).collect();
                let bias = values(n, 12);
                let int8 = PackedWeight::quantize_int8(&w, n, k).unwrap();
                let bf16 = PackedWeight::from_f32_as_bf16(&w, n, k).unwrap();
                for m in [1, 3, 16, 17, 50, 77, 130] {
                    let x = activations(m, k);
                    for b in [Some(&bias[..]), None] {
                        let mut want = vec![0f32; m * n];
                        // NaN everywhere first: a value the kernel failed to write cannot pass.
                        let mut got = vec![f32::NAN; m * n];
                        matmul_reference(&x, m, &int8, b, &mut want).unwrap();
                        matmul_on_amx(&x, m, &int8, b, &mut got).unwrap();
                        let same = want
                            .iter()
                            .zip(&got)
                            .all(|(a, b)| a.to_bits() == b.to_bits());
                        assert!(same, "int8 m {m} n {n} k {k} bias {}", b.is_some());

                        // Finite rows only: a NaN or infinity spreads differently through other sums.
                        let x: Vec<f32> = x
                            .iter()
                            .map(|v| if v.is_finite() { *v } else { 0.5 })
                            .collect();
                        matmul_reference(&x, m, &bf16, b, &mut want).unwrap();
                        got.fill(f32::NAN);
                        matmul_on_amx(&x, m, &bf16, b, &mut got).unwrap();
                        let w16 = bf16.dequantize().unwrap();
                        for r in 0..m {
                            for c in 0..n {
                                // Two orders of f32 sums of k exact products: each off by at most k ulps of Σ|x·w|.
                                let magnitude: f32 = (0..k)
                                    .map(|j| {
                                        (bf16_to_f32(bf16_bits(x[r * k + j])) * w16[c * k + j])
                                            .abs()
                                    })
                                    .sum();
                                let tol =
                                    2.0 * k as f32 * f32::EPSILON * magnitude + f32::MIN_POSITIVE;
                                let (g, e) = (got[r * n + c], want[r * n + c]);
                                assert!(
                                    (g - e).abs() <= tol,
                                    "bf16 m {m} n {n} k {k} ({r}, {c}): {g} vs {e}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn a_view_of_some_panels_multiplies_only_those_channels() {
        if amx_or_skip().is_none() {
            return;
        }
        let (m, n, k) = (20, 72, 96);
        let w = values(n * k, 3);
        let x = values(m * k, 4);
        for weight in [
            PackedWeight::quantize_int8(&w, n, k).unwrap(),
            PackedWeight::from_f32_as_bf16(&w, n, k).unwrap(),
        ] {
            let part = weight.narrow_channels(32, 40).unwrap();
            let mut want = vec![0f32; m * 40];
            let mut got = vec![0f32; m * 40];
            matmul_reference(&x, m, &part, None, &mut want).unwrap();
            matmul_on_amx(&x, m, &part, None, &mut got).unwrap();
            for (g, e) in got.iter().zip(&want) {
                assert!(
                    (g - e).abs() <= 1e-5 * e.abs().max(1.0),
                    "{:?}: {g} vs {e}",
                    weight.format()
                );
            }
        }
    }

    #[test]
    fn vector_conversions_equal_the_scalar_ones() {
        let Some(_) = amx_or_skip() else { return };
        let k = 37;
        let x = activations(6, k);
        for row in x.chunks_exact(k) {
            let (mut want, mut got) = (vec![0i8; k], vec![0u8; k]);
            let scale = quantize_row(row, &mut want);
            // SAFETY: an AMX token implies AVX-512F (`cpu::amx`).
            let got_scale = unsafe { quantize_row_avx512(row, &mut got, 0) };
            let got: Vec<i8> = got.into_iter().map(|b| b as i8).collect();
            assert_eq!(
                (got, got_scale.to_bits()),
                (want, scale.to_bits()),
                "{row:?}"
            );

            let mut bits = vec![0u16; k];
            // SAFETY: as above.
            unsafe { bf16_row_avx512(row, &mut bits) };
            let want: Vec<u16> = row.iter().map(|&v| bf16_bits(v)).collect();
            assert_eq!(bits, want, "{row:?}");
        }
        let ties = [
            f32::from_bits(0x3f80_8000),
            f32::from_bits(0x3f81_8000),
            f32::from_bits(0x0000_8000),
            f32::from_bits(0x7f7f_ffff),
            -f32::NAN,
            f32::NEG_INFINITY,
        ];
        let mut bits = [0u16; 6];
        // SAFETY: as above.
        unsafe { bf16_row_avx512(&ties, &mut bits) };
        assert_eq!(
            bits.to_vec(),
            ties.iter().map(|&v| bf16_bits(v)).collect::<Vec<_>>()
        );
    }

    #[test]
    fn operands_of_the_wrong_size_are_refused_as_by_the_reference() {
        if amx_or_skip().is_none() {
            return;
        }
        let w = PackedWeight::quantize_int8(&[1.0; 8], 2, 4).unwrap();
        let mut out = [0f32; 2];
        let want = matmul_reference(&[1.0; 3], 1, &w, None, &mut out).unwrap_err();
        let got = matmul_on_amx(&[1.0; 3], 1, &w, None, &mut out).unwrap_err();
        // The first line: candle appends a backtrace when RUST_BACKTRACE is set.
        let first = |e: candle_core::Error| e.to_string().lines().next().unwrap_or("").to_string();
        let got = first(got);
        assert_eq!(got, first(want));
        assert!(got.contains("x has 3 values"), "{got}");
        let got = matmul_on_amx(&[1.0; 4], 1, &w, Some(&[0.0; 3]), &mut out).unwrap_err();
        assert!(got.to_string().contains("low-precision matmul"), "{got}");
        matmul_on_amx(&[], 0, &w, None, &mut []).unwrap();
    }
}
