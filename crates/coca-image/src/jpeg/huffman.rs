//! Huffman tables and the entropy-coded bit stream.

use super::JpegError;

/// Bits resolved by one table lookup; longer codes take the slow path.
const LOOKUP_BITS: u32 = 9;

/// A canonical Huffman decoding table (JPEG Annex C / F.2.2.3).
pub(super) struct HuffTable {
    /// Indexed by the next `LOOKUP_BITS` bits: `(length << 8) | symbol`, or 0
    /// when the code is longer.
    lookup: Vec<u16>,
    /// Largest code of each length (index = length), -1 when none.
    max_code: [i32; 17],
    /// `symbol index - code` for the codes of each length.
    val_offset: [i32; 17],
    values: Vec<u8>,
}

impl HuffTable {
    /// A table without codes, standing in for tables a scan never reads.
    pub fn empty() -> Self {
        Self {
            lookup: vec![0; 1 << LOOKUP_BITS],
            max_code: [-1; 17],
            val_offset: [0; 17],
            values: Vec::new(),
        }
    }

    /// Builds the table from the DHT code-length counts and symbols,
    /// rejecting what libjpeg's `jpeg_make_d_derived_tbl` rejects:
    /// over-subscribed code lengths, and DC symbols above 15.
    pub fn new(counts: &[u8; 16], values: &[u8], is_dc: bool) -> Result<Self, JpegError> {
        if is_dc && values.iter().any(|&v| v > 15) {
            return Err(JpegError::Corrupt("bad DC Huffman table".into()));
        }
        let mut lookup = vec![0u16; 1 << LOOKUP_BITS];
        let mut max_code = [-1i32; 17];
        let mut val_offset = [0i32; 17];
        let mut code: i32 = 0;
        let mut index: usize = 0;
        for len in 1..=16usize {
            let n = usize::from(counts[len - 1]);
            // A code may not be all ones, so after this length's codes the
            // next free code must still fit in `len` bits (libjpeg's check).
            if code + n as i32 >= (1 << len) {
                return Err(JpegError::Corrupt("over-subscribed Huffman table".into()));
            }
            if n > 0 {
                val_offset[len] = index as i32 - code;
                for i in 0..n {
                    let c = code + i as i32;
                    if len as u32 <= LOOKUP_BITS {
                        let shift = LOOKUP_BITS - len as u32;
                        let first = (c as usize) << shift;
                        let entry = ((len as u16) << 8) | u16::from(values[index + i]);
                        lookup[first..first + (1 << shift)].fill(entry);
                    }
                }
                index += n;
                code += n as i32;
                max_code[len] = code - 1;
            }
            code <<= 1;
        }
        Ok(Self {
            lookup,
            max_code,
            val_offset,
            values: values.to_vec(),
        })
    }
}

/// Reads entropy-coded data like libjpeg's bit reader: removes stuffed zero
/// bytes, and at a marker supplies zero bits. Consuming such padding sets
/// libjpeg's "insufficient data" state, in which the following MCUs are left
/// untouched until the next restart marker; consuming padding past the end
/// of the file is reported through [`BitReader::overran`].
pub(super) struct BitReader<'a> {
    data: &'a [u8],
    pos: usize,
    /// Unread bits, left-aligned.
    acc: u64,
    nbits: u32,
    /// A marker ended the data; `pos` is at its 0xFF.
    marker_hit: bool,
    /// Zero bytes appended after a marker or the end of the file.
    fake_bytes: u32,
    insufficient: bool,
    /// Reading reached the end of the data without a marker.
    hit_eof: bool,
    /// Number (0..=7) of the restart marker expected next.
    next_restart: u8,
}

impl<'a> BitReader<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Self {
            data,
            pos: 0,
            acc: 0,
            nbits: 0,
            marker_hit: false,
            fake_bytes: 0,
            insufficient: false,
            hit_eof: false,
            next_restart: 0,
        }
    }

    /// Offset just past the consumed entropy data: at the marker that ended
    /// it, or the end of the file.
    pub fn position(&self) -> usize {
        self.pos
    }

    fn consumed_padding(&self) -> bool {
        self.nbits < 8 * self.fake_bytes
    }

    /// True once decoding consumed bits past the end of the file.
    pub fn overran(&self) -> bool {
        !self.marker_hit && self.consumed_padding()
    }

    /// True once reading ran into the end of the file (rather than stopping
    /// at a marker).
    pub fn hit_eof(&self) -> bool {
        self.hit_eof
    }

    /// libjpeg skips MCUs (leaving their coefficients alone) after the data
    /// of a restart interval ran out at a marker.
    pub fn skip_mcu(&self) -> bool {
        self.insufficient
    }

    /// Call after each decoded MCU.
    pub fn finish_mcu(&mut self) {
        if self.marker_hit && self.consumed_padding() {
            self.insufficient = true;
        }
    }

    fn next_byte(&mut self) -> u8 {
        if self.marker_hit {
            self.fake_bytes += 1;
            return 0;
        }
        let Some(&byte) = self.data.get(self.pos) else {
            self.fake_bytes += 1;
            self.hit_eof = true;
            return 0;
        };
        if byte != 0xFF {
            self.pos += 1;
            return byte;
        }
        let mut p = self.pos + 1;
        while p < self.data.len() && self.data[p] == 0xFF {
            p += 1;
        }
        match self.data.get(p) {
            None => {
                self.pos = self.data.len();
                self.fake_bytes += 1;
                self.hit_eof = true;
                0
            }
            Some(0) => {
                self.pos = p + 1;
                0xFF
            }
            Some(_) => {
                // Leave `pos` on the 0xFF that starts the marker.
                self.pos = p - 1;
                self.marker_hit = true;
                self.fake_bytes += 1;
                0
            }
        }
    }

    fn fill(&mut self) {
        while self.nbits <= 56 {
            let byte = self.next_byte();
            self.acc |= u64::from(byte) << (56 - self.nbits);
            self.nbits += 8;
        }
    }

    fn consume(&mut self, n: u32) {
        self.acc <<= n;
        self.nbits -= n;
    }

    /// Reads `n` (0..=16) bits as an unsigned number.
    pub fn bits(&mut self, n: u32) -> u32 {
        if n == 0 {
            return 0;
        }
        if self.nbits < n {
            self.fill();
        }
        let v = (self.acc >> (64 - n)) as u32;
        self.consume(n);
        v
    }

    /// Reads one bit.
    pub fn bit(&mut self) -> bool {
        self.bits(1) != 0
    }

    /// Reads `n` bits holding a magnitude category value and sign-extends it
    /// (JPEG's EXTEND procedure).
    pub fn extended(&mut self, n: u32) -> i32 {
        if n == 0 {
            return 0;
        }
        let v = self.bits(n) as i32;
        if v < (1 << (n - 1)) {
            v - (1 << n) + 1
        } else {
            v
        }
    }

    /// Decodes one Huffman symbol. An invalid code consumes 17 bits and
    /// yields symbol 0, as libjpeg does after warning about corrupt data.
    pub fn symbol(&mut self, table: &HuffTable) -> u8 {
        if self.nbits < 17 {
            self.fill();
        }
        let entry = table.lookup[(self.acc >> (64 - LOOKUP_BITS)) as usize];
        if entry != 0 {
            self.consume(u32::from(entry >> 8));
            return entry as u8;
        }
        let window = (self.acc >> 48) as i32;
        for len in (LOOKUP_BITS as usize + 1)..=16 {
            let code = window >> (16 - len);
            if code <= table.max_code[len] {
                self.consume(len as u32);
                let index = ((code + table.val_offset[len]) & 0xFF) as usize;
                return table.values.get(index).copied().unwrap_or(0);
            }
        }
        self.consume(17);
        0
    }

    /// Moves `pos` to the next marker (skipping garbage), or to the end.
    fn seek_marker(&mut self) {
        while self.pos < self.data.len() {
            if self.data[self.pos] != 0xFF {
                self.pos += 1;
                continue;
            }
            let mut p = self.pos + 1;
            while p < self.data.len() && self.data[p] == 0xFF {
                p += 1;
            }
            if p < self.data.len() && self.data[p] != 0 {
                self.pos = p - 1;
                self.marker_hit = true;
                return;
            }
            self.pos = p;
        }
    }

    /// Handles a restart interval boundary like libjpeg's `process_restart`
    /// and `jpeg_resync_to_restart`: drops buffered bits, consumes the
    /// expected RSTn marker (skipping stale ones), and otherwise leaves the
    /// marker in place so that the next interval runs out of data at once.
    pub fn restart(&mut self) {
        self.acc = 0;
        self.nbits = 0;
        self.fake_bytes = 0;
        if !self.marker_hit {
            self.seek_marker();
        }
        let desired = self.next_restart;
        while self.marker_hit {
            let code = self.data[self.pos + 1];
            let action = if code < 0xC0 {
                Resync::SkipAhead
            } else if !(0xD0..=0xD7).contains(&code) {
                Resync::Stop
            } else {
                let n = code - 0xD0;
                if n == (desired + 1) & 7 || n == (desired + 2) & 7 {
                    Resync::Stop
                } else if n == desired.wrapping_sub(1) & 7 || n == desired.wrapping_sub(2) & 7 {
                    Resync::SkipAhead
                } else {
                    Resync::Consume
                }
            };
            match action {
                Resync::Consume => {
                    self.pos += 2;
                    self.marker_hit = false;
                }
                Resync::SkipAhead => {
                    self.pos += 2;
                    self.marker_hit = false;
                    self.seek_marker();
                }
                Resync::Stop => break,
            }
            if action == Resync::Consume {
                break;
            }
        }
        // libjpeg clears its out-of-data state only when the marker was
        // consumed; a marker left in place keeps the previous state, so the
        // next interval starts decoding and runs into the marker itself.
        if !self.marker_hit {
            self.insufficient = false;
        }
        self.next_restart = (desired + 1) & 7;
    }
}

/// `jpeg_resync_to_restart`'s choices for the marker found at a restart.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Resync {
    /// The expected (or an unrelated) restart marker: take it and go on.
    Consume,
    /// Garbage or an earlier restart marker: look for the next marker.
    SkipAhead,
    /// A later restart or another marker: leave it; the interval is empty.
    Stop,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Codes: 'a' = 0, 'b' = 10, 'c' = 110 (lengths 1, 2, 3).
    fn small_table() -> HuffTable {
        let mut counts = [0u8; 16];
        counts[..3].copy_from_slice(&[1, 1, 1]);
        HuffTable::new(&counts, b"abc", false).unwrap()
    }

    #[test]
    fn decodes_canonical_codes_and_removes_stuffing() {
        // Bits: 0 | 10 | 110 | 0 ... then 0xFF 0x00 is one data byte 0xFF.
        let data = [0b0101_1000, 0xFF, 0x00, 0xFF, 0xD9];
        let mut r = BitReader::new(&data);
        let t = small_table();
        assert_eq!([r.symbol(&t), r.symbol(&t), r.symbol(&t)], *b"abc");
        assert_eq!(r.bits(2), 0);
        assert_eq!(r.bits(8), 0xFF);
        assert!(!r.overran());
        // The EOI marker ends the data: zero bits follow, the position stays
        // on the marker, and consuming them enters libjpeg's skip state.
        assert_eq!(r.bits(16), 0);
        assert_eq!(r.position(), 3);
        r.finish_mcu();
        assert!(r.skip_mcu() && !r.overran());
    }

    #[test]
    fn running_off_the_end_is_detected() {
        let data = [0xAB];
        let mut r = BitReader::new(&data);
        assert_eq!(r.bits(8), 0xAB);
        assert!(!r.overran());
        r.bits(1);
        assert!(r.overran());
    }

    #[test]
    fn restart_consumes_the_expected_marker() {
        // One byte of data, RST0, one more byte.
        let data = [0x80, 0xFF, 0xD0, 0x40];
        let mut r = BitReader::new(&data);
        assert!(r.bit());
        r.restart();
        assert!(!r.skip_mcu());
        assert_eq!(r.bits(2), 0b01);
    }

    #[test]
    fn extend_sign_extends() {
        // Category 3: 000 -> -7, 011 -> -4, 100 -> 4, 111 -> 7.
        let data = [0b0000_1110, 0b0111_1000];
        let mut r = BitReader::new(&data);
        assert_eq!(r.extended(3), -7);
        assert_eq!(r.extended(3), -4);
        assert_eq!(r.extended(3), 4);
        assert_eq!(r.extended(3), 7);
    }

    #[test]
    fn rejects_over_subscribed_tables() {
        let mut counts = [0u8; 16];
        counts[0] = 3; // three 1-bit codes cannot exist
        assert!(HuffTable::new(&counts, b"abc", false).is_err());
        counts[0] = 2; // two 1-bit codes would leave no all-ones-free code
        assert!(HuffTable::new(&counts, b"ab", false).is_err());
        // DC symbols are magnitude categories 0..=15.
        counts[0] = 1;
        assert!(HuffTable::new(&counts, &[16], true).is_err());
        assert!(HuffTable::new(&counts, &[16], false).is_ok());
    }
}
