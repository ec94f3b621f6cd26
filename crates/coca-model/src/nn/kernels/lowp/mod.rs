//! Low-precision weights for CPU inference: int8 (symmetric, one scale per output channel) and bf16, packed once
//! at load into the one layout that every low-precision kernel reads, and the reference products those kernels
//! are tested against.
//!
//! # Layout
//!
//! A weight `W` (n, k), stored by `nn.Linear` as one row per output channel, is cut into panels of [`PANEL`]
//! output channels. A panel is a run of 64-byte [`Line`]s; line `l` holds, for each of the panel's 16 channels in
//! turn, the [`Format::k_per_line`] consecutive k values `W[c][l·kpl .. (l+1)·kpl]` (int8: 4 bytes, bf16: 2
//! values). This is the operand layout of `vpdpbusd` and `vdpbf16ps` (one line is one 512-bit register, each
//! 32-bit lane one output channel) and of an AMX B tile (16 consecutive lines). `n` is padded with zero channels
//! to a multiple of [`PANEL`] and `k` with zeros to a multiple of [`Format::k_align`], so that every kernel reads
//! whole registers and whole tiles.
//!
//! # Products
//!
//! - int8: each activation row is quantised symmetrically to int8 with its own scale ([`quantize_rows`], ties to
//!   even), the products are summed exactly in i32, and the result is `acc as f32 · (x_scale · w_scale) + bias`.
//!   Every int8 kernel computes these same integers, so its output equals [`matmul_reference`]'s to the last bit.
//! - bf16: activations are rounded to bf16 (ties to even), products of bf16 are exact in f32 and summed in f32,
//!   plus the bias. Kernels differ from the reference only in the order of the f32 sums.
//! - weight-only ([`thin_matmul_reference`], for the few activation rows of a decoding step): f32 activations
//!   times the dequantised weight (int8 value · channel scale, or bf16 widened), summed in f32, plus the bias.
//!   Kernels may apply an int8 channel's scale once after its sum, and differ in the order of the sums.

#[cfg(target_arch = "x86_64")]
pub mod amx;
#[cfg(target_arch = "x86_64")]
pub mod avx512;

use std::mem::MaybeUninit;
use std::sync::Arc;

use candle_core::Result;

/// Output channels per panel: the 32-bit lanes of one 512-bit register, the columns of one AMX tile.
pub const PANEL: usize = 16;

/// Bytes per packed line: one 512-bit register, one row of an AMX tile.
pub const LINE_BYTES: usize = 64;

/// Largest int8 magnitude used: symmetric quantisation keeps −128 out so that negation never overflows.
pub const INT8_MAX: f32 = 127.0;

/// 64 bytes, aligned to 64 so that aligned vector loads and AMX tile loads may read it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C, align(64))]
pub struct Line(pub [u8; LINE_BYTES]);

impl Line {
    const ZERO: Line = Line([0; LINE_BYTES]);
}

/// Element format of a packed weight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Symmetric int8 with one f32 scale per output channel.
    Int8,
    /// bfloat16 (the top half of an f32).
    Bf16,
}

impl Format {
    /// k values per output channel in one line: 4 int8 bytes or 2 bf16 values, one 32-bit lane.
    pub fn k_per_line(self) -> usize {
        match self {
            Format::Int8 => 4,
            Format::Bf16 => 2,
        }
    }

    /// Bytes per value.
    fn bytes(self) -> usize {
        match self {
            Format::Int8 => 1,
            Format::Bf16 => 2,
        }
    }

    /// `k` is padded to a multiple of this: the k values of one AMX tile (16 lines).
    pub fn k_align(self) -> usize {
        16 * self.k_per_line()
    }
}

/// A weight (n, k) in [`Format`], packed as the module documentation describes. Cheap to clone (the lines are
/// shared), and [`PackedWeight::narrow_channels`] views a range of whole panels without copying.
#[derive(Clone, Debug)]
pub struct PackedWeight {
    format: Format,
    /// Output channels (unpadded) of this view.
    n: usize,
    /// Input width (unpadded).
    k: usize,
    /// Every panel of the packed weight this view shares.
    lines: Arc<[Line]>,
    /// int8: per-channel scales of the shared weight (zero for padding channels); bf16: empty.
    scales: Arc<[f32]>,
    /// int8: per-channel `Σ_k W[c][k]` of the shared weight, for kernels that shift signed activations to
    /// unsigned bytes (`vpdpbusd`); bf16: empty.
    column_sums: Arc<[i32]>,
    /// First panel of this view within the shared weight.
    first_panel: usize,
}

impl PackedWeight {
    /// Quantise an f32 weight (n, k), row-major, to int8 with one scale per output channel (`max |W[c]| / 127`,
    /// ties to even) and pack it.
    pub fn quantize_int8(weight: &[f32], n: usize, k: usize) -> Result<Self> {
        check_len("weight", weight.len(), n, k)?;
        let mut q = vec![0i8; n * k];
        let mut scales = vec![0f32; n];
        for ((row, q_row), scale) in weight
            .chunks_exact(k.max(1))
            .zip(q.chunks_exact_mut(k.max(1)))
            .zip(&mut scales)
        {
            *scale = quantize_row(row, q_row);
        }
        Self::from_int8(&q, &scales, n, k)
    }

    /// Pack int8 values (n, k), row-major, with their per-channel scales (as a quantised file stores them).
    pub fn from_int8(values: &[i8], scales: &[f32], n: usize, k: usize) -> Result<Self> {
        check_len("int8 weight", values.len(), n, k)?;
        if scales.len() != n {
            candle_core::bail!(
                "int8 weight: {} scales for {n} output channels",
                scales.len()
            );
        }
        if let Some(bad) = scales.iter().find(|s| !s.is_finite() || **s < 0.0) {
            candle_core::bail!("int8 weight: scale {bad} is not a finite non-negative number");
        }
        let format = Format::Int8;
        let layout = Layout::new(format, n, k);
        let mut lines = vec![Line::ZERO; layout.panels * layout.lines_per_panel];
        let mut column_sums = vec![0i32; layout.panels * PANEL];
        for (c, row) in values.chunks_exact(k.max(1)).enumerate().take(n) {
            column_sums[c] = row.iter().map(|&v| i32::from(v)).sum();
            for (j, &v) in row.iter().enumerate() {
                let (line, byte) = layout.position(c, j, 1);
                lines[line].0[byte] = v as u8;
            }
        }
        let mut padded_scales = scales.to_vec();
        padded_scales.resize(layout.panels * PANEL, 0.0);
        Ok(Self {
            format,
            n,
            k,
            lines: lines.into(),
            scales: padded_scales.into(),
            column_sums: column_sums.into(),
            first_panel: 0,
        })
    }

    /// Round an f32 weight (n, k), row-major, to bf16 (ties to even) and pack it.
    pub fn from_f32_as_bf16(weight: &[f32], n: usize, k: usize) -> Result<Self> {
        check_len("weight", weight.len(), n, k)?;
        let bits: Vec<u16> = weight.iter().map(|&v| bf16_bits(v)).collect();
        Self::from_bf16_bits(&bits, n, k)
    }

    /// Pack bf16 values (n, k), row-major, given as their bit patterns.
    pub fn from_bf16_bits(bits: &[u16], n: usize, k: usize) -> Result<Self> {
        check_len("bf16 weight", bits.len(), n, k)?;
        let format = Format::Bf16;
        let layout = Layout::new(format, n, k);
        let mut lines = vec![Line::ZERO; layout.panels * layout.lines_per_panel];
        for (c, row) in bits.chunks_exact(k.max(1)).enumerate().take(n) {
            for (j, &v) in row.iter().enumerate() {
                let (line, byte) = layout.position(c, j, 2);
                lines[line].0[byte..byte + 2].copy_from_slice(&v.to_le_bytes());
            }
        }
        Ok(Self {
            format,
            n,
            k,
            lines: lines.into(),
            scales: Arc::from([]),
            column_sums: Arc::from([]),
            first_panel: 0,
        })
    }

    /// The element format.
    pub fn format(&self) -> Format {
        self.format
    }

    /// Output channels (unpadded).
    pub fn n(&self) -> usize {
        self.n
    }

    /// Input width (unpadded).
    pub fn k(&self) -> usize {
        self.k
    }

    /// Input width padded to [`Format::k_align`]: the activation rows a kernel reads must be this wide.
    pub fn k_padded(&self) -> usize {
        self.k.div_ceil(self.format.k_align()) * self.format.k_align()
    }

    /// Panels of this view (`n` rounded up to [`PANEL`], divided by it).
    pub fn panels(&self) -> usize {
        self.n.div_ceil(PANEL)
    }

    /// Lines per panel: `k_padded / k_per_line`.
    pub fn lines_per_panel(&self) -> usize {
        self.k_padded() / self.format.k_per_line()
    }

    /// The lines of panel `p` of this view (`p < panels()`).
    pub fn panel(&self, p: usize) -> &[Line] {
        let per = self.lines_per_panel();
        let start = (self.first_panel + p) * per;
        &self.lines[start..start + per]
    }

    /// int8: the [`PANEL`] scales of panel `p` (zero for padding channels). Empty slice for bf16.
    pub fn panel_scales(&self, p: usize) -> &[f32] {
        panel_slice(&self.scales, self.first_panel + p)
    }

    /// int8: the [`PANEL`] column sums of panel `p`. Empty slice for bf16.
    pub fn panel_column_sums(&self, p: usize) -> &[i32] {
        panel_slice(&self.column_sums, self.first_panel + p)
    }

    /// The output channels `start .. start + len` as a view sharing these lines (the query or key/value part of a
    /// packed attention projection). `start` must be a multiple of [`PANEL`], and `len` one too unless the range
    /// ends at `n`.
    pub fn narrow_channels(&self, start: usize, len: usize) -> Result<Self> {
        let end = start + len;
        if end > self.n
            || !start.is_multiple_of(PANEL)
            || (!len.is_multiple_of(PANEL) && end != self.n)
        {
            candle_core::bail!(
                "packed weight: channels {start}..{end} of {} are not whole panels of {PANEL}",
                self.n
            );
        }
        Ok(Self {
            n: len,
            first_panel: self.first_panel + start / PANEL,
            ..self.clone()
        })
    }

    /// int8: the values (n, k), row-major, and the per-channel scales, as a quantised file stores them.
    pub fn int8_rows(&self) -> Result<(Vec<i8>, Vec<f32>)> {
        if self.format != Format::Int8 {
            candle_core::bail!(
                "packed weight: int8 values asked of a {:?} weight",
                self.format
            );
        }
        let layout = Layout::new(self.format, self.n, self.k);
        let mut values = vec![0i8; self.n * self.k];
        for c in 0..self.n {
            let lines = self.panel(c / PANEL);
            for j in 0..self.k {
                let (line, byte) = layout.position(c % PANEL, j, 1);
                values[c * self.k + j] = lines[line].0[byte] as i8;
            }
        }
        let scales = (0..self.n)
            .map(|c| self.panel_scales(c / PANEL)[c % PANEL])
            .collect();
        Ok((values, scales))
    }

    /// bf16: the bit patterns (n, k), row-major, as a file stores them.
    pub fn bf16_rows(&self) -> Result<Vec<u16>> {
        if self.format != Format::Bf16 {
            candle_core::bail!(
                "packed weight: bf16 values asked of a {:?} weight",
                self.format
            );
        }
        let layout = Layout::new(self.format, self.n, self.k);
        let mut bits = vec![0u16; self.n * self.k];
        for c in 0..self.n {
            let lines = self.panel(c / PANEL);
            for j in 0..self.k {
                let (line, byte) = layout.position(c % PANEL, j, 2);
                bits[c * self.k + j] =
                    u16::from_le_bytes([lines[line].0[byte], lines[line].0[byte + 1]]);
            }
        }
        Ok(bits)
    }

    /// The weight as f32 (n, k), row-major: int8 values times their scales, or bf16 widened.
    pub fn dequantize(&self) -> Result<Vec<f32>> {
        let mut out = vec![0f32; self.n * self.k];
        for (c, row) in out.chunks_exact_mut(self.k.max(1)).enumerate() {
            self.dequantize_channel(c, row)?;
        }
        Ok(out)
    }

    /// Output channel `c` as f32 into `row` (`k` values): int8 value times the channel's scale, or bf16
    /// widened. A packed table's row: what an embedding lookup reads ([`crate::nn::ops::embedding`]).
    pub fn dequantize_channel(&self, c: usize, row: &mut [f32]) -> Result<()> {
        if c >= self.n || row.len() != self.k {
            candle_core::bail!(
                "packed weight: channel {c} into {} values asked of a ({}, {}) weight",
                row.len(),
                self.n,
                self.k
            );
        }
        let layout = Layout::new(self.format, self.n, self.k);
        let lines = self.panel(c / PANEL);
        for (j, v) in row.iter_mut().enumerate().take(self.k) {
            let (line, byte) = layout.position(c % PANEL, j, self.format.bytes());
            let b = &lines[line].0[byte..];
            *v = match self.format {
                Format::Int8 => f32::from(b[0] as i8) * self.panel_scales(c / PANEL)[c % PANEL],
                Format::Bf16 => bf16_to_f32(u16::from_le_bytes([b[0], b[1]])),
            };
        }
        Ok(())
    }
}

/// Where one weight value sits in the packing.
struct Layout {
    format: Format,
    panels: usize,
    lines_per_panel: usize,
}

impl Layout {
    fn new(format: Format, n: usize, k: usize) -> Self {
        let k_padded = k.div_ceil(format.k_align()) * format.k_align();
        Self {
            format,
            panels: n.div_ceil(PANEL),
            lines_per_panel: k_padded / format.k_per_line(),
        }
    }

    /// (line index, byte offset) of `W[c][j]` for elements of `size` bytes, `c` counted from the first panel.
    fn position(&self, c: usize, j: usize, size: usize) -> (usize, usize) {
        let kpl = self.format.k_per_line();
        let line = (c / PANEL) * self.lines_per_panel + j / kpl;
        (line, ((c % PANEL) * kpl + j % kpl) * size)
    }
}

fn check_len(what: &str, len: usize, n: usize, k: usize) -> Result<()> {
    if n == 0 || k == 0 || Some(len) != n.checked_mul(k) {
        candle_core::bail!("{what}: {len} values do not make a non-empty ({n}, {k}) matrix");
    }
    Ok(())
}

fn panel_slice<T>(values: &[T], panel: usize) -> &[T] {
    values
        .get(panel * PANEL..(panel + 1) * PANEL)
        .unwrap_or(&[])
}

/// Quantise `row` into `out` symmetrically (`scale = max |v| / 127`, `q = round_ties_even(v · 127 / max)`), and
/// return the scale (0 for an all-zero row, whose values are then all 0).
pub fn quantize_row(row: &[f32], out: &mut [i8]) -> f32 {
    let max = row.iter().fold(0f32, |m, v| m.max(v.abs()));
    if max == 0.0 || !max.is_finite() {
        out.fill(0);
        return 0.0;
    }
    let inv = INT8_MAX / max;
    for (q, &v) in out.iter_mut().zip(row) {
        *q = (v * inv).round_ties_even().clamp(-INT8_MAX, INT8_MAX) as i8;
    }
    max / INT8_MAX
}

/// Quantise the activation rows `x` (m, k), row-major, for an int8 product: returns the values (m, `k_padded`),
/// zero beyond `k`, and one scale per row.
pub fn quantize_rows(x: &[f32], m: usize, k: usize, k_padded: usize) -> (Vec<i8>, Vec<f32>) {
    let mut q = vec![0i8; m * k_padded];
    let scales = x
        .chunks_exact(k)
        .zip(q.chunks_exact_mut(k_padded))
        .map(|(row, out)| quantize_row(row, &mut out[..k]))
        .collect();
    (q, scales)
}

/// `out` with every element set to 0, as values: for a kernel that takes an initialised output.
pub(crate) fn zeroed(out: &mut [MaybeUninit<f32>]) -> &mut [f32] {
    for v in out.iter_mut() {
        v.write(0.0);
    }
    // SAFETY: every element was initialised just above, and `MaybeUninit<f32>` has the layout of `f32`.
    unsafe { &mut *(out as *mut [MaybeUninit<f32>] as *mut [f32]) }
}

/// The bf16 bit pattern nearest to `v` (ties to even; NaN stays NaN).
pub fn bf16_bits(v: f32) -> u16 {
    let bits = v.to_bits();
    if v.is_nan() {
        return ((bits >> 16) | 0x40) as u16;
    }
    let round = 0x7fff + ((bits >> 16) & 1);
    (bits.wrapping_add(round) >> 16) as u16
}

/// The f32 value of a bf16 bit pattern.
pub fn bf16_to_f32(bits: u16) -> f32 {
    f32::from_bits(u32::from(bits) << 16)
}

/// Fail unless `x` (m, k), `out` (m, n) and `bias` (n) fit `weight` (n, k): the operands every product here takes
/// (`out` as values, or as memory a kernel fills).
pub(crate) fn check_operands<T>(
    x: &[f32],
    m: usize,
    weight: &PackedWeight,
    bias: Option<&[f32]>,
    out: &[T],
) -> Result<()> {
    let (n, k) = (weight.n(), weight.k());
    if Some(x.len()) != m.checked_mul(k)
        || Some(out.len()) != m.checked_mul(n)
        || bias.is_some_and(|b| b.len() != n)
    {
        candle_core::bail!(
            "low-precision matmul: x has {} values, out {}, bias {:?}, for m {m}, k {k}, n {n}",
            x.len(),
            out.len(),
            bias.map(<[f32]>::len)
        );
    }
    Ok(())
}

/// The weight-only product `out (m, n) = x (m, k) · W̃ᵀ (+ bias)` with `W̃` the dequantised weight (see the
/// module documentation), in plain scalar code: what the thin decoding kernels are tested against, and their
/// portable path.
pub fn thin_matmul_reference(
    x: &[f32],
    m: usize,
    weight: &PackedWeight,
    bias: Option<&[f32]>,
    out: &mut [f32],
) -> Result<()> {
    check_operands(x, m, weight, bias, out)?;
    let (n, k) = (weight.n(), weight.k());
    let mut w_row = vec![0f32; k];
    for c in 0..n {
        weight.dequantize_channel(c, &mut w_row)?;
        for (r, x_row) in x.chunks_exact(k).enumerate() {
            let acc = x_row.iter().zip(&w_row).fold(0f32, |a, (x, w)| a + x * w);
            out[r * n + c] = acc + bias.map_or(0.0, |b| b[c]);
        }
    }
    Ok(())
}

/// The reference product `out (m, n) = x (m, k) · Wᵀ (+ bias)` with the arithmetic the module documentation
/// defines, in plain scalar code: what every low-precision kernel is tested against, and the portable path.
pub fn matmul_reference(
    x: &[f32],
    m: usize,
    weight: &PackedWeight,
    bias: Option<&[f32]>,
    out: &mut [f32],
) -> Result<()> {
    check_operands(x, m, weight, bias, out)?;
    let (n, k) = (weight.n(), weight.k());
    let kp = weight.k_padded();
    let kpl = weight.format().k_per_line();
    match weight.format() {
        Format::Int8 => {
            let (q, x_scales) = quantize_rows(x, m, k, kp);
            for (r, out_row) in out.chunks_exact_mut(n).enumerate() {
                let xq = &q[r * kp..(r + 1) * kp];
                for (c, o) in out_row.iter_mut().enumerate() {
                    let (panel, lane) = (c / PANEL, c % PANEL);
                    let acc: i32 = weight
                        .panel(panel)
                        .iter()
                        .enumerate()
                        .map(|(l, line)| {
                            (0..kpl)
                                .map(|t| {
                                    i32::from(line.0[lane * kpl + t] as i8)
                                        * i32::from(xq[l * kpl + t])
                                })
                                .sum::<i32>()
                        })
                        .sum();
                    let scale = x_scales[r] * weight.panel_scales(panel)[lane];
                    *o = acc as f32 * scale + bias.map_or(0.0, |b| b[c]);
                }
            }
        }
        Format::Bf16 => {
            let xb: Vec<f32> = x.iter().map(|&v| bf16_to_f32(bf16_bits(v))).collect();
            for (r, out_row) in out.chunks_exact_mut(n).enumerate() {
                let xr = &xb[r * k..(r + 1) * k];
                for (c, o) in out_row.iter_mut().enumerate() {
                    let (panel, lane) = (c / PANEL, c % PANEL);
                    let lines = weight.panel(panel);
                    let mut acc = 0f32;
                    for (j, &xv) in xr.iter().enumerate() {
                        let b = &lines[j / kpl].0[(lane * kpl + j % kpl) * 2..];
                        acc += xv * bf16_to_f32(u16::from_le_bytes([b[0], b[1]]));
                    }
                    *o = acc + bias.map_or(0.0, |b| b[c]);
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::kernels::tests::values;

    fn f32_matmul(x: &[f32], m: usize, w: &[f32], n: usize, k: usize) -> Vec<f32> {
        let mut out = vec![0f32; m * n];
        for r in 0..m {
            for c in 0..n {
                out[r * n + c] = (0..k).map(|j| x[r * k + j] * w[c * k + j]).sum();
            }
        }
        out
    }

    #[test]
    fn packing_round_trips_the_values_and_narrowing_keeps_them() {
        let (n, k) = (37, 70);
        let w = values(n * k, 1);
        let q = PackedWeight::quantize_int8(&w, n, k).unwrap();
        assert_eq!(
            (q.panels(), q.k_padded(), q.lines_per_panel()),
            (3, 128, 32)
        );
        let (vals, scales) = q.int8_rows().unwrap();
        let again = PackedWeight::from_int8(&vals, &scales, n, k).unwrap();
        assert_eq!(again.int8_rows().unwrap(), (vals.clone(), scales.clone()));
        let part = q.narrow_channels(16, 21).unwrap();
        let (pv, ps) = part.int8_rows().unwrap();
        assert_eq!(pv, vals[16 * k..].to_vec());
        assert_eq!(ps, scales[16..].to_vec());
        assert!(q.narrow_channels(8, 16).is_err());
        assert!(q.narrow_channels(16, 16).is_ok());

        let b = PackedWeight::from_f32_as_bf16(&w, n, k).unwrap();
        assert_eq!((b.k_padded(), b.lines_per_panel()), (96, 48));
        let deq = b.dequantize().unwrap();
        for (a, d) in w.iter().zip(&deq) {
            assert!((a - d).abs() <= a.abs() / 256.0, "{a} vs {d}");
        }
    }

    #[test]
    fn quantisation_is_symmetric_per_channel_with_ties_to_even() {
        let mut q = [0i8; 4];
        let scale = quantize_row(&[2.54, -1.27, 0.01, 0.0], &mut q);
        assert_eq!(q, [127, -64, 0, 0]); // -1.27·50 = -63.5 → -64 (even)
        assert!((scale - 0.02).abs() < 1e-7);
        assert_eq!(quantize_row(&[0.0; 4], &mut q), 0.0);
        assert_eq!(q, [0; 4]);
        assert_eq!(bf16_bits(1.0), 0x3f80);
        assert_eq!(bf16_bits(f32::from_bits(0x3f80_8000)), 0x3f80); // tie → even
        assert_eq!(bf16_bits(f32::from_bits(0x3f81_8000)), 0x3f82);
        assert!(bf16_to_f32(bf16_bits(f32::NAN)).is_nan());
    }

    #[test]
    fn reference_products_are_close_to_f32() {
        let (m, n, k) = (5, 40, 96);
        let x = values(m * k, 2);
        let w: Vec<f32> = values(n * k, 3).iter().map(|v| v * 0.1).collect();
        let bias = values(n, 4);
        let mut want = f32_matmul(&x, m, &w, n, k);
        for row in want.chunks_exact_mut(n) {
            for (o, b) in row.iter_mut().zip(&bias) {
                *o += b;
            }
        }
        for (weight, tol) in [
            (PackedWeight::quantize_int8(&w, n, k).unwrap(), 0.02),
            (PackedWeight::from_f32_as_bf16(&w, n, k).unwrap(), 0.005),
        ] {
            let mut out = vec![0f32; m * n];
            matmul_reference(&x, m, &weight, Some(&bias), &mut out).unwrap();
            let scale = want.iter().fold(0f32, |a, v| a.max(v.abs()));
            let worst = out
                .iter()
                .zip(&want)
                .fold(0f32, |a, (o, w)| a.max((o - w).abs()));
            assert!(
                worst <= tol * scale,
                "{:?}: {worst} vs scale {scale}",
                weight.format()
            );
        }
    }

    #[test]
    fn malformed_parts_are_refused() {
        assert!(PackedWeight::from_int8(&[1, 2, 3], &[1.0], 2, 2).is_err());
        assert!(PackedWeight::from_int8(&[1, 2, 3, 4], &[1.0], 2, 2).is_err());
        assert!(PackedWeight::from_int8(&[1, 2, 3, 4], &[1.0, f32::NAN], 2, 2).is_err());
        assert!(PackedWeight::from_bf16_bits(&[], 0, 4).is_err());
        let w = PackedWeight::quantize_int8(&[1.0; 8], 2, 4).unwrap();
        let mut out = [0f32; 2];
        assert!(matmul_reference(&[1.0; 3], 1, &w, None, &mut out).is_err());
    }
}
