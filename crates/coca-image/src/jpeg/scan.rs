//! Entropy decoding of one scan into the frame's coefficient buffers, for
//! sequential and progressive (spectral selection + successive
//! approximation) Huffman coding.

use super::header::{Frame, HuffSpec, ScanHeader, Tables, NATURAL_ORDER};
use super::huffman::{BitReader, HuffTable};
use super::JpegError;

/// Which coding procedure a scan uses.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pass {
    Sequential,
    DcFirst,
    DcRefine,
    AcFirst,
    AcRefine,
}

/// Decodes the scan whose entropy-coded data starts at `data[0]`; returns
/// how many bytes it consumed. `row_done` is called with each iMCU row's
/// number as soon as the scan has coded all of that row's blocks (also for
/// rows whose data is missing), so a single-scan image can be turned into
/// pixels row by row.
pub(super) fn decode_scan(
    frame: &mut Frame,
    scan: &ScanHeader,
    tables: &Tables,
    data: &[u8],
    row_done: &mut dyn FnMut(&mut Frame, usize),
) -> Result<usize, JpegError> {
    let pass = pass_of(frame, scan)?;
    check_mcu_size(frame, scan)?;
    let built = resolve_tables(scan, tables, pass)?;
    let unused = HuffTable::empty();
    let huff: Vec<(&HuffTable, &HuffTable)> = built
        .iter()
        .map(|(dc, ac)| {
            (
                dc.as_ref().unwrap_or(&unused),
                ac.as_ref().unwrap_or(&unused),
            )
        })
        .collect();
    latch_quant_tables(frame, scan, tables)?;
    frame.scans_seen += 1;
    if frame.progressive {
        record_coef_bits(frame, scan);
    }

    let mut reader = BitReader::new(data);
    let mut state = EntropyState::default();
    let single = scan.components.len() == 1;
    let (mcus_x, mcus_y) = if single {
        let c = &frame.components[scan.components[0].index];
        (c.blocks_w, c.blocks_h)
    } else {
        (frame.mcus_x, frame.mcus_y)
    };
    let restart_interval = tables.restart_interval;
    // Block rows per iMCU row, to map a non-interleaved MCU to its iMCU row.
    let rows_per_imcu = if single {
        frame.components[scan.components[0].index].v
    } else {
        1
    };
    for mcu in 0..mcus_x * mcus_y {
        // libjpeg notes this before the MCU's restart processing.
        if !reader.skip_mcu() {
            frame.last_good_imcu_row = mcu / mcus_x / rows_per_imcu;
        }
        if restart_interval > 0 && mcu > 0 && mcu % restart_interval == 0 {
            reader.restart();
            state = EntropyState::default();
        }
        let (mx, my) = (mcu % mcus_x, mcu / mcus_x);
        if !reader.skip_mcu() {
            decode_mcu(frame, scan, pass, &huff, &mut reader, (mx, my), &mut state);
            reader.finish_mcu();
            if reader.overran() {
                return Err(JpegError::Truncated(
                    "entropy-coded data ends before the last block".into(),
                ));
            }
        }
        let row_end = (my + 1) % rows_per_imcu == 0 || my + 1 == mcus_y;
        if mx + 1 == mcus_x && row_end {
            row_done(frame, my / rows_per_imcu);
        }
    }
    // libjpeg prefetches entropy data; when that reaches the end of the
    // file before a marker, it suspends for more input, which PIL reports
    // as a truncated file even if the last block was already complete.
    if reader.hit_eof() {
        return Err(JpegError::Truncated(
            "entropy-coded data runs to the end of the file".into(),
        ));
    }
    Ok(reader.position())
}

/// Predictions carried from block to block, reset at restart markers.
#[derive(Default)]
struct EntropyState {
    /// DC predictor of each scan component.
    dc_pred: [i32; 4],
    /// Blocks left in the current end-of-band run (progressive AC scans).
    eobrun: u32,
}

/// Decodes the blocks of MCU (`mx`, `my`) of the scan.
fn decode_mcu(
    frame: &mut Frame,
    scan: &ScanHeader,
    pass: Pass,
    huff: &[(&HuffTable, &HuffTable)],
    reader: &mut BitReader,
    (mx, my): (usize, usize),
    state: &mut EntropyState,
) {
    let EntropyState { dc_pred, eobrun } = state;
    let single = scan.components.len() == 1;
    for (slot, sc) in scan.components.iter().enumerate() {
        let comp = &mut frame.components[sc.index];
        let (h, v) = if single { (1, 1) } else { (comp.h, comp.v) };
        for by in 0..v {
            for bx in 0..h {
                let block = comp.block_mut(my * v + by, mx * h + bx);
                let (dc, ac) = huff[slot];
                match pass {
                    Pass::Sequential => sequential_block(reader, dc, ac, block, &mut dc_pred[slot]),
                    Pass::DcFirst => dc_first(reader, dc, block, &mut dc_pred[slot], scan.al),
                    Pass::DcRefine => {
                        if reader.bit() {
                            block[0] |= (1i32 << scan.al) as i16;
                        }
                    }
                    Pass::AcFirst => ac_first(reader, ac, block, scan, eobrun),
                    Pass::AcRefine => ac_refine(reader, ac, block, scan, eobrun),
                }
            }
        }
    }
}

/// The (DC, AC) Huffman tables of one scan component; `None` when the pass
/// does not read that kind.
type ComponentTables = (Option<HuffTable>, Option<HuffTable>);

/// Builds the (DC, AC) tables of each scan component, as libjpeg's
/// `start_pass` does: only tables the pass reads are looked up and
/// validated (a missing one is an error); the others are `unused`.
fn resolve_tables(
    scan: &ScanHeader,
    tables: &Tables,
    pass: Pass,
) -> Result<Vec<ComponentTables>, JpegError> {
    let needs_dc = matches!(pass, Pass::Sequential | Pass::DcFirst);
    let needs_ac = matches!(pass, Pass::Sequential | Pass::AcFirst | Pass::AcRefine);
    let build = |specs: &[Option<HuffSpec>; 4], slot: usize, is_dc: bool| {
        let spec = specs.get(slot).and_then(Option::as_ref).ok_or_else(|| {
            let kind = if is_dc { "DC" } else { "AC" };
            JpegError::Corrupt(format!("{kind} Huffman table {slot} is not defined"))
        })?;
        HuffTable::new(&spec.counts, &spec.values, is_dc).map(Some)
    };
    scan.components
        .iter()
        .map(|sc| {
            let dc = if needs_dc {
                build(&tables.dc, sc.dc_table, true)?
            } else {
                None
            };
            let ac = if needs_ac {
                build(&tables.ac, sc.ac_table, false)?
            } else {
                None
            };
            Ok((dc, ac))
        })
        .collect()
}

/// Classifies the scan and validates its parameters.
fn pass_of(frame: &Frame, scan: &ScanHeader) -> Result<Pass, JpegError> {
    if !frame.progressive {
        // libjpeg only warns about odd Ss/Se/Ah/Al in sequential scans.
        return Ok(Pass::Sequential);
    }
    let bad = |what: &str| Err(JpegError::Corrupt(format!("bad progressive scan: {what}")));
    if scan.al > 13 || (scan.ah != 0 && scan.ah != scan.al + 1) {
        return bad("successive approximation bits");
    }
    if scan.ss == 0 {
        if scan.se != 0 {
            return bad("DC scan with AC coefficients");
        }
        Ok(if scan.ah == 0 {
            Pass::DcFirst
        } else {
            Pass::DcRefine
        })
    } else {
        if scan.se < scan.ss || scan.se > 63 {
            return bad("spectral selection");
        }
        if scan.components.len() != 1 {
            return bad("AC scan with several components");
        }
        Ok(if scan.ah == 0 {
            Pass::AcFirst
        } else {
            Pass::AcRefine
        })
    }
}

/// libjpeg limits an interleaved MCU to 10 blocks (`D_MAX_BLOCKS_IN_MCU`).
fn check_mcu_size(frame: &Frame, scan: &ScanHeader) -> Result<(), JpegError> {
    if scan.components.len() > 1 {
        let blocks: usize = scan
            .components
            .iter()
            .map(|sc| frame.components[sc.index].h * frame.components[sc.index].v)
            .sum();
        if blocks > 10 {
            return Err(JpegError::Corrupt(format!(
                "{blocks} blocks per MCU (at most 10)"
            )));
        }
    }
    Ok(())
}

/// libjpeg copies a component's quantisation table when the first scan
/// containing it starts; later DQT segments do not affect it.
fn latch_quant_tables(
    frame: &mut Frame,
    scan: &ScanHeader,
    tables: &Tables,
) -> Result<(), JpegError> {
    for sc in &scan.components {
        let comp = &mut frame.components[sc.index];
        if comp.quant.is_none() {
            let table = tables
                .quant
                .get(comp.tq)
                .copied()
                .flatten()
                .ok_or_else(|| {
                    JpegError::Corrupt(format!("quantisation table {} is not defined", comp.tq))
                })?;
            comp.quant = Some(table);
        }
    }
    Ok(())
}

/// Tracks the precision each coefficient is known to (libjpeg's
/// `coef_bits`, updated when a progressive scan starts), and the state
/// before this scan for the first ten coefficients, as jdphuff.c does:
/// both decide whether and how block smoothing runs.
fn record_coef_bits(frame: &mut Frame, scan: &ScanHeader) {
    let first_scan = frame.scans_seen == 1;
    for sc in &scan.components {
        let comp = &mut frame.components[sc.index];
        // libjpeg covers min(Ss, 1)..=max(Se, 9); only 0..=9 are kept.
        for k in scan.ss.min(1)..10 {
            comp.prev_coef_bits[k] = if first_scan { 0 } else { comp.coef_bits[k] };
        }
        for b in &mut comp.coef_bits[scan.ss..=scan.se.min(63)] {
            *b = scan.al as i32;
        }
    }
}

/// True when libjpeg would post-process this progressive image with its
/// block-smoothing filter (`smoothing_ok` in jdcoefct.c): all DC values
/// present, the first ten quantisers non-zero, and some of the first nine
/// AC coefficients not fully refined.
pub(super) fn needs_block_smoothing(frame: &Frame) -> bool {
    const FIRST_AC_POSITIONS: [usize; 9] = [1, 8, 16, 9, 2, 3, 10, 17, 24];
    let mut useful = false;
    for comp in &frame.components {
        let Some(quant) = comp.quant else {
            return false;
        };
        if quant[0] == 0 || FIRST_AC_POSITIONS.iter().any(|&p| quant[p] == 0) {
            return false;
        }
        if comp.coef_bits[0] < 0 {
            return false;
        }
        if comp.coef_bits[1..10].iter().any(|&b| b != 0) {
            useful = true;
        }
    }
    useful
}

fn sequential_block(
    reader: &mut BitReader,
    dc: &HuffTable,
    ac: &HuffTable,
    block: &mut [i16],
    pred: &mut i32,
) {
    let s = u32::from(reader.symbol(dc));
    // Corrupt data can push the predictor anywhere; wrap like C's int.
    *pred = pred.wrapping_add(reader.extended(s));
    block[0] = *pred as i16;
    let mut k = 1;
    while k < 64 {
        let rs = reader.symbol(ac);
        let (r, s) = (usize::from(rs >> 4), u32::from(rs & 15));
        if s != 0 {
            k += r;
            block[NATURAL_ORDER[k]] = reader.extended(s) as i16;
        } else if r == 15 {
            k += 15;
        } else {
            break;
        }
        k += 1;
    }
}

fn dc_first(reader: &mut BitReader, dc: &HuffTable, block: &mut [i16], pred: &mut i32, al: u32) {
    let s = u32::from(reader.symbol(dc));
    *pred = pred.wrapping_add(reader.extended(s));
    block[0] = (i64::from(*pred) << al) as i16;
}

fn ac_first(
    reader: &mut BitReader,
    ac: &HuffTable,
    block: &mut [i16],
    scan: &ScanHeader,
    eobrun: &mut u32,
) {
    if *eobrun > 0 {
        *eobrun -= 1;
        return;
    }
    let mut k = scan.ss;
    while k <= scan.se {
        let rs = reader.symbol(ac);
        let (r, s) = (u32::from(rs >> 4), u32::from(rs & 15));
        if s != 0 {
            k += r as usize;
            block[NATURAL_ORDER[k]] = ((reader.extended(s) as u32) << scan.al) as i16;
        } else if r == 15 {
            k += 15;
        } else {
            *eobrun = (1 << r) + reader.bits(r) - 1;
            break;
        }
        k += 1;
    }
}

/// Adds one correction bit to an already non-zero coefficient.
fn refine_nonzero(reader: &mut BitReader, coef: &mut i16, p1: i16) {
    if reader.bit() && (*coef & p1) == 0 {
        if *coef >= 0 {
            *coef = coef.wrapping_add(p1);
        } else {
            *coef = coef.wrapping_sub(p1);
        }
    }
}

fn ac_refine(
    reader: &mut BitReader,
    ac: &HuffTable,
    block: &mut [i16],
    scan: &ScanHeader,
    eobrun: &mut u32,
) {
    let p1 = (1i32 << scan.al) as i16;
    let mut k = scan.ss;
    if *eobrun == 0 {
        while k <= scan.se {
            let rs = reader.symbol(ac);
            let (mut r, s) = (i32::from(rs >> 4), rs & 15);
            let mut value = 0i16;
            if s != 0 {
                // s must be 1 here; libjpeg only warns otherwise.
                value = if reader.bit() { p1 } else { p1.wrapping_neg() };
            } else if r != 15 {
                *eobrun = (1 << r) + reader.bits(r as u32);
                break;
            }
            // Skip `r` zero coefficients, refining the non-zero ones passed.
            while k <= scan.se {
                let coef = &mut block[NATURAL_ORDER[k]];
                if *coef != 0 {
                    refine_nonzero(reader, coef, p1);
                } else {
                    r -= 1;
                    if r < 0 {
                        break;
                    }
                }
                k += 1;
            }
            if value != 0 {
                block[NATURAL_ORDER[k]] = value;
            }
            k += 1;
        }
    }
    if *eobrun > 0 {
        while k <= scan.se {
            let coef = &mut block[NATURAL_ORDER[k]];
            if *coef != 0 {
                refine_nonzero(reader, coef, p1);
            }
            k += 1;
        }
        *eobrun -= 1;
    }
}
