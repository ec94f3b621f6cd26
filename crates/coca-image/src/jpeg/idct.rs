//! libjpeg's "islow" inverse DCT (jidctint.c, the default `JDCT_ISLOW`):
//! the Loeffler–Ligtenberg–Moschytz algorithm with 13-bit fixed-point
//! constants and two extra bits of precision between the column and row
//! passes.
//!
//! The arithmetic follows libjpeg-turbo's x86-64 SIMD version
//! (jidctint-avx2.asm / -sse2.asm), which is what PIL runs: 16-bit lanes
//! for the dequantised coefficients, the pass-1 results and a few sums, and
//! saturation when narrowing. On valid JPEG data this equals the C code;
//! the difference only shows on corrupt, out-of-range coefficients.

const CONST_BITS: u32 = 13;
const PASS1_BITS: u32 = 2;

const F_0_298: i32 = 2446;
const F_0_390: i32 = 3196;
const F_0_541: i32 = 4433;
const F_0_765: i32 = 6270;
const F_0_899: i32 = 7373;
const F_1_175: i32 = 9633;
const F_1_501: i32 = 12299;
const F_1_847: i32 = 15137;
const F_1_961: i32 = 16069;
const F_2_053: i32 = 16819;
const F_2_562: i32 = 20995;
const F_3_072: i32 = 25172;

/// Wraps to a 16-bit lane (`paddw`, `pmullw`, `psllw`).
#[inline]
fn wrap16(x: i32) -> i32 {
    x as i16 as i32
}

/// `pmaddwd` on one pair: two 16-bit products summed in 32 bits.
#[inline]
fn madd(a: i32, ca: i32, b: i32, cb: i32) -> i32 {
    (a * ca).wrapping_add(b * cb)
}

/// One 1-D pass over eight 16-bit inputs (natural order), with the final
/// rounding shift by `shift` and saturation to 16 bits (`packssdw`).
#[inline]
fn butterfly(x: [i32; 8], shift: u32) -> [i32; 8] {
    // Even part: tmp3 / tmp2 rearranged so each is one multiply-add.
    let tmp3 = madd(x[2], F_0_541 + F_0_765, x[6], F_0_541);
    let tmp2 = madd(x[6], F_0_541 - F_1_847, x[2], F_0_541);
    let tmp0 = wrap16(x[0] + x[4]) << CONST_BITS;
    let tmp1 = wrap16(x[0] - x[4]) << CONST_BITS;
    let tmp10 = tmp0.wrapping_add(tmp3);
    let tmp13 = tmp0.wrapping_sub(tmp3);
    let tmp11 = tmp1.wrapping_add(tmp2);
    let tmp12 = tmp1.wrapping_sub(tmp2);

    // Odd part.
    let z3 = wrap16(x[7] + x[3]);
    let z4 = wrap16(x[5] + x[1]);
    let z3r = madd(z3, F_1_175 - F_1_961, z4, F_1_175);
    let z4r = madd(z4, F_1_175 - F_0_390, z3, F_1_175);
    let o0 = madd(x[7], F_0_298 - F_0_899, x[1], -F_0_899).wrapping_add(z3r);
    let o1 = madd(x[5], F_2_053 - F_2_562, x[3], -F_2_562).wrapping_add(z4r);
    let o2 = madd(x[5], -F_2_562, x[3], F_3_072 - F_2_562).wrapping_add(z3r);
    let o3 = madd(x[7], -F_0_899, x[1], F_1_501 - F_0_899).wrapping_add(z4r);

    let round = 1i32 << (shift - 1);
    let out = |v: i32| (v.wrapping_add(round) >> shift).clamp(-32768, 32767);
    [
        out(tmp10.wrapping_add(o3)),
        out(tmp11.wrapping_add(o2)),
        out(tmp12.wrapping_add(o1)),
        out(tmp13.wrapping_add(o0)),
        out(tmp13.wrapping_sub(o0)),
        out(tmp12.wrapping_sub(o1)),
        out(tmp11.wrapping_sub(o2)),
        out(tmp10.wrapping_sub(o3)),
    ]
}

/// Dequantises one block of coefficients (natural order) and writes its
/// 8×8 samples to `out`, rows `stride` bytes apart.
pub(super) fn idct_block(coefs: &[i16], quant: &[u16; 64], out: &mut [u8], stride: usize) {
    // Dequantisation keeps the low 16 bits of the product (`pmullw`).
    let deq: [i32; 64] =
        std::array::from_fn(|i| wrap16(i32::from(coefs[i]) * i32::from(quant[i] as i16)));
    let mut workspace = [0i32; 64];
    if coefs[8..].iter().all(|&c| c == 0) {
        // Only the first row of coefficients is set: every column is flat.
        for col in 0..8 {
            let dc = wrap16(deq[col] << PASS1_BITS);
            for row in 0..8 {
                workspace[row * 8 + col] = dc;
            }
        }
    } else {
        for col in 0..8 {
            let y = butterfly(
                std::array::from_fn(|row| deq[row * 8 + col]),
                CONST_BITS - PASS1_BITS,
            );
            for row in 0..8 {
                workspace[row * 8 + col] = y[row];
            }
        }
    }
    for row in 0..8 {
        let y = butterfly(
            std::array::from_fn(|i| workspace[row * 8 + i]),
            CONST_BITS + PASS1_BITS + 3,
        );
        let line = &mut out[row * stride..row * stride + 8];
        for (dst, v) in line.iter_mut().zip(y) {
            // `packsswb` then adding CENTERJSAMPLE: clamp and level-shift.
            *dst = (v.clamp(-128, 127) + 128) as u8;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dc_only_block_is_flat_and_level_shifted() {
        let mut coefs = [0i16; 64];
        coefs[0] = 10;
        let mut quant = [1u16; 64];
        quant[0] = 8;
        let mut out = [0u8; 64];
        idct_block(&coefs, &quant, &mut out, 8);
        // DC 80 over 8x8 samples is an offset of 80 / 8 = 10.
        assert!(out.iter().all(|&v| v == 138), "{out:?}");
    }

    #[test]
    fn zero_block_is_mid_grey_and_extremes_clamp() {
        let mut out = [0u8; 64];
        idct_block(&[0; 64], &[1; 64], &mut out, 8);
        assert!(out.iter().all(|&v| v == 128));
        let mut coefs = [0i16; 64];
        coefs[0] = 2000;
        idct_block(&coefs, &[1; 64], &mut out, 8);
        assert!(out.iter().all(|&v| v == 255));
        coefs[0] = -2000;
        idct_block(&coefs, &[1; 64], &mut out, 8);
        assert!(out.iter().all(|&v| v == 0));
    }
}
