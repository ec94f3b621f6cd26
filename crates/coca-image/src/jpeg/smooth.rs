//! libjpeg's block smoothing (`decompress_smooth_data` in jdcoefct.c),
//! which it applies to progressive JPEGs whose low-frequency AC
//! coefficients are not fully refined (files cut short, or encoders that
//! stop early): zero coefficients that are not known to be exact are
//! estimated from the DC values of the 5×5 neighbouring blocks.

use super::header::{Component, Frame};

/// Natural positions (and zigzag index = array index) of the coefficients
/// block smoothing may estimate.
const AC01: usize = 1;
const AC10: usize = 8;
const AC20: usize = 16;
const AC11: usize = 9;
const AC02: usize = 2;
const AC03: usize = 3;
const AC12: usize = 10;
const AC21: usize = 17;
const AC30: usize = 24;

/// Rounds `num / (q * 256)` to nearest (ties away from zero) and, when the
/// coefficient is known to `al` bits, keeps the estimate below `2^al`.
fn estimate(num: i64, q: i64, al: i32) -> i16 {
    let mut pred = (((q << 7) + num.abs()) / (q << 8)) as i32;
    if al > 0 && pred >= (1 << al) {
        pred = (1 << al) - 1;
    }
    if num < 0 {
        pred = -pred;
    }
    pred as i16
}

/// Block rows of iMCU row `m` of the component (laid out like one of its
/// coefficient chunks) with libjpeg's smoothing estimates applied. The
/// estimates read the DC values of up to two block rows above and below,
/// so those rows' chunks must still be held; `prev_bits` is the
/// progression state before the last scan (used for block rows that scan
/// never reached).
pub(super) fn smoothed_chunk(comp: &Component, frame: &Frame, m: usize) -> Vec<i16> {
    let quant = comp.quant.unwrap_or([0; 64]);
    let q = |pos: usize| i64::from(quant[pos]);
    let q00 = q(0);
    let stride = comp.stride_blocks;
    let (width, rows, v) = (comp.blocks_w, comp.blocks_h, comp.v);
    let padded_rows = frame.mcus_y * v;
    let last_imcu_row = frame.mcus_y.saturating_sub(1);
    let current_bits: [i32; 10] = std::array::from_fn(|k| comp.coef_bits[k]);
    let prev_bits = if frame.scans_seen > 1 {
        comp.prev_coef_bits
    } else {
        [-1; 10]
    };
    let dc_at = |row: usize, col: usize| i64::from(comp.block(row, col)[0]);
    let first = m * v;
    let bits = if m > frame.last_good_imcu_row {
        prev_bits
    } else {
        current_bits
    };
    // DC interpolation only when no AC data at all has arrived.
    let change_dc = bits[1..].iter().all(|&b| b == -1);
    // Rows below may reach into an iMCU row's padding blocks, except in the
    // last iMCU row, where libjpeg stops at the real rows.
    let limit = if m < last_imcu_row { padded_rows } else { rows };
    let mut out = comp.coefs[m].clone();
    for r in first..((m + 1) * v).min(rows) {
        let prev = if r > 0 { r - 1 } else { r };
        let prev2 = if r > 1 { r - 2 } else { prev };
        let next = if r + 1 < limit { r + 1 } else { r };
        let next2 = if r + 2 < limit { r + 2 } else { next };
        let nrows = [prev2, prev, r, next, next2];
        for b in 0..width {
            let col = |d: isize| (b as isize + d).clamp(0, width as isize - 1) as usize;
            let ncols = [col(-2), col(-1), b, col(1), col(2)];
            // dc(n) is libjpeg's DCnn: n = 1..=25 row-major over the 5x5
            // neighbourhood, 13 being this block.
            let grid: [[i64; 5]; 5] =
                std::array::from_fn(|i| std::array::from_fn(|j| dc_at(nrows[i], ncols[j])));
            let dc = |n: usize| grid[(n - 1) / 5][(n - 1) % 5];
            let at = ((r - first) * stride + b) * 64;
            let block = &mut out[at..at + 64];
            let mut apply = |pos: usize, bits_index: usize, q_pos: usize, weights: i64| {
                let al = bits[bits_index];
                if al != 0 && block[pos] == 0 {
                    block[pos] = estimate(q00 * weights, q(q_pos), al);
                }
            };
            let cd = change_dc;
            apply(
                AC01,
                1,
                AC01,
                if cd {
                    -dc(1) - dc(2) + dc(4) + dc(5) - 3 * dc(6) + 13 * dc(7) - 13 * dc(9)
                        + 3 * dc(10)
                        - 3 * dc(11)
                        + 38 * dc(12)
                        - 38 * dc(14)
                        + 3 * dc(15)
                        - 3 * dc(16)
                        + 13 * dc(17)
                        - 13 * dc(19)
                        + 3 * dc(20)
                        - dc(21)
                        - dc(22)
                        + dc(24)
                        + dc(25)
                } else {
                    -7 * dc(11) + 50 * dc(12) - 50 * dc(14) + 7 * dc(15)
                },
            );
            apply(
                AC10,
                2,
                AC10,
                if cd {
                    -dc(1) - 3 * dc(2) - 3 * dc(3) - 3 * dc(4) - dc(5) - dc(6)
                        + 13 * dc(7)
                        + 38 * dc(8)
                        + 13 * dc(9)
                        - dc(10)
                        + dc(16)
                        - 13 * dc(17)
                        - 38 * dc(18)
                        - 13 * dc(19)
                        + dc(20)
                        + dc(21)
                        + 3 * dc(22)
                        + 3 * dc(23)
                        + 3 * dc(24)
                        + dc(25)
                } else {
                    -7 * dc(3) + 50 * dc(8) - 50 * dc(18) + 7 * dc(23)
                },
            );
            apply(
                AC20,
                3,
                AC20,
                if cd {
                    dc(3) + 2 * dc(7) + 7 * dc(8) + 2 * dc(9)
                        - 5 * dc(12)
                        - 14 * dc(13)
                        - 5 * dc(14)
                        + 2 * dc(17)
                        + 7 * dc(18)
                        + 2 * dc(19)
                        + dc(23)
                } else {
                    -dc(3) + 13 * dc(8) - 24 * dc(13) + 13 * dc(18) - dc(23)
                },
            );
            apply(
                AC11,
                4,
                AC11,
                if cd {
                    -dc(1) + dc(5) + 9 * dc(7) - 9 * dc(9) - 9 * dc(17) + 9 * dc(19) + dc(21)
                        - dc(25)
                } else {
                    dc(10) + dc(16) - 10 * dc(17) + 10 * dc(19) - dc(2) - dc(20) + dc(22) - dc(24)
                        + dc(4)
                        - dc(6)
                        + 10 * dc(7)
                        - 10 * dc(9)
                },
            );
            apply(
                AC02,
                5,
                AC02,
                if cd {
                    2 * dc(7) - 5 * dc(8) + 2 * dc(9) + dc(11) + 7 * dc(12) - 14 * dc(13)
                        + 7 * dc(14)
                        + dc(15)
                        + 2 * dc(17)
                        - 5 * dc(18)
                        + 2 * dc(19)
                } else {
                    -dc(11) + 13 * dc(12) - 24 * dc(13) + 13 * dc(14) - dc(15)
                },
            );
            if cd {
                apply(
                    AC03,
                    6,
                    AC03,
                    dc(7) - dc(9) + 2 * dc(12) - 2 * dc(14) + dc(17) - dc(19),
                );
                apply(
                    AC12,
                    7,
                    AC12,
                    dc(7) - 3 * dc(8) + dc(9) - dc(17) + 3 * dc(18) - dc(19),
                );
                apply(
                    AC21,
                    8,
                    AC21,
                    dc(7) - dc(9) - 3 * dc(12) + 3 * dc(14) + dc(17) - dc(19),
                );
                apply(
                    AC30,
                    9,
                    AC30,
                    dc(7) + 2 * dc(8) + dc(9) - dc(17) - 2 * dc(18) - dc(19),
                );
                // The DC itself is re-estimated unconditionally (no bound).
                let num = q00
                    * (-2 * dc(1) - 6 * dc(2) - 8 * dc(3) - 6 * dc(4) - 2 * dc(5) - 6 * dc(6)
                        + 6 * dc(7)
                        + 42 * dc(8)
                        + 6 * dc(9)
                        - 6 * dc(10)
                        - 8 * dc(11)
                        + 42 * dc(12)
                        + 152 * dc(13)
                        + 42 * dc(14)
                        - 8 * dc(15)
                        - 6 * dc(16)
                        + 6 * dc(17)
                        + 42 * dc(18)
                        + 6 * dc(19)
                        - 6 * dc(20)
                        - 2 * dc(21)
                        - 6 * dc(22)
                        - 8 * dc(23)
                        - 6 * dc(24)
                        - 2 * dc(25));
                block[0] = estimate(num, q00, 0);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::estimate;

    #[test]
    fn estimates_round_and_respect_known_bits() {
        // 300 / 256 = 1.17 -> 1; -(300) -> -1; bounded by 2^al - 1.
        assert_eq!(estimate(300, 1, 0), 1);
        assert_eq!(estimate(-300, 1, 0), -1);
        assert_eq!(estimate(128 * 9, 1, 0), 5); // 4.5 rounds away from zero
        assert_eq!(estimate(256 * 40, 1, 3), 7);
        assert_eq!(estimate(-256 * 40, 1, 3), -7);
        assert_eq!(estimate(256 * 40, 1, -1), 40); // unknown: no bound
    }
}
