//! Marker segment parsing: frame and scan headers, quantisation and Huffman
//! tables, restart interval, and the JFIF/Adobe markers that decide the
//! colour space.

use super::{ColorSpace, JpegError};

/// Zigzag index -> natural (row-major) index, with 16 guard entries so that a
/// corrupt run length past coefficient 63 lands on 63 as libjpeg's does.
pub(super) const NATURAL_ORDER: [usize; 80] = [
    0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20,
    13, 6, 7, 14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59,
    52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63,
    63, 63, 63, 63, 63, 63,
];

/// One image component as declared in the frame header, plus its decoded
/// coefficients.
pub(super) struct Component {
    pub id: u8,
    /// Horizontal / vertical sampling factors (1..=4).
    pub h: usize,
    pub v: usize,
    /// Quantisation table selector as written (only 0..=3 can exist).
    pub tq: usize,
    /// Size of the component's sample grid (after downsampling).
    pub width: usize,
    pub height: usize,
    /// Blocks covering the sample grid; a non-interleaved scan codes exactly
    /// these.
    pub blocks_w: usize,
    pub blocks_h: usize,
    /// Blocks per row in whole MCUs; interleaved scans also code the
    /// padding blocks.
    pub stride_blocks: usize,
    /// Coefficients (64 a block, natural order) in chunks of one iMCU row
    /// (`stride_blocks * v` blocks each): one chunk per iMCU row when the
    /// whole image is buffered, or a single chunk reused for every row
    /// when a single-scan image is decoded row by row. Empty until the
    /// first scan decides which ([`Frame::allocate_coefficients`]).
    pub coefs: Vec<Vec<i16>>,
    /// Quantisation table latched at the first scan that includes this
    /// component (libjpeg ignores later redefinitions for it).
    pub quant: Option<[u16; 64]>,
    /// Progressive bookkeeping: the successive-approximation bit position
    /// each zigzag coefficient is known to, or -1 when never sent.
    pub coef_bits: [i32; 64],
    /// `coef_bits[..10]` as it was before the latest scan covering this
    /// component (libjpeg's second `coef_bits` half, used for smoothing).
    pub prev_coef_bits: [i32; 10],
}

/// The frame (SOF) header and the coefficient storage of its components.
pub(super) struct Frame {
    pub width: usize,
    pub height: usize,
    pub progressive: bool,
    pub components: Vec<Component>,
    pub max_h: usize,
    pub max_v: usize,
    /// MCUs of an interleaved scan (`mcus_y` is libjpeg's iMCU row count).
    pub mcus_x: usize,
    pub mcus_y: usize,
    /// Scans started so far (libjpeg's `input_scan_number`).
    pub scans_seen: usize,
    /// Last iMCU row decoded while data was still available (libjpeg's
    /// `last_good_iMCU_row`), which selects the progression state that
    /// block smoothing uses.
    pub last_good_imcu_row: usize,
}

impl Component {
    /// Coefficients in one iMCU row chunk.
    fn chunk_len(&self) -> usize {
        self.stride_blocks * self.v * 64
    }

    /// Index of block (`row`, `col`) (in the component's block grid) in its
    /// chunk, and that chunk's number.
    fn locate(&self, row: usize, col: usize) -> (usize, usize) {
        let chunk = (row / self.v) % self.coefs.len();
        (chunk, ((row % self.v) * self.stride_blocks + col) * 64)
    }

    /// The 64 coefficients of block (`row`, `col`).
    pub fn block(&self, row: usize, col: usize) -> &[i16] {
        let (chunk, at) = self.locate(row, col);
        &self.coefs[chunk][at..at + 64]
    }

    /// The 64 coefficients of block (`row`, `col`), for a scan to fill.
    pub fn block_mut(&mut self, row: usize, col: usize) -> &mut [i16] {
        let (chunk, at) = self.locate(row, col);
        &mut self.coefs[chunk][at..at + 64]
    }
}

impl Frame {
    /// Bytes the coefficients of the whole image take when buffered.
    pub fn buffered_coefficient_bytes(&self) -> u64 {
        let per_row: u64 = self
            .components
            .iter()
            .map(|c| c.chunk_len() as u64 * 2)
            .sum();
        per_row.saturating_mul(self.mcus_y as u64)
    }

    /// Allocates the coefficient chunks: one per iMCU row when `buffered`,
    /// else one chunk that each iMCU row reuses.
    pub fn allocate_coefficients(&mut self, buffered: bool) {
        let chunks = if buffered { self.mcus_y } else { 1 };
        for comp in &mut self.components {
            comp.coefs = vec![vec![0; comp.chunk_len()]; chunks];
        }
    }
}

/// One component taking part in a scan.
pub(super) struct ScanComponent {
    /// Index into `Frame::components`.
    pub index: usize,
    /// Huffman table selectors as written (0..=15; only 0..=3 can exist).
    pub dc_table: usize,
    pub ac_table: usize,
}

/// A start-of-scan header.
pub(super) struct ScanHeader {
    pub components: Vec<ScanComponent>,
    /// Spectral selection start / end (zigzag indices).
    pub ss: usize,
    pub se: usize,
    /// Successive approximation high / low bit.
    pub ah: u32,
    pub al: u32,
}

/// A Huffman table as defined by DHT. Like libjpeg, the table is only
/// validated and built when a scan uses it.
#[derive(Clone)]
pub(super) struct HuffSpec {
    pub counts: [u8; 16],
    pub values: Vec<u8>,
}

/// Tables in force when a scan starts.
#[derive(Default)]
pub(super) struct Tables {
    pub quant: [Option<[u16; 64]>; 4],
    pub dc: [Option<HuffSpec>; 4],
    pub ac: [Option<HuffSpec>; 4],
    pub restart_interval: usize,
}

impl Tables {
    /// libjpeg-turbo's sequential Huffman decoder fills table slots 0 and 1
    /// that are still undefined when decoding starts with the standard
    /// tables of JPEG Annex K.3 (Motion-JPEG frames rely on this).
    pub fn add_standard_huffman_tables(&mut self) {
        let spec = |counts: [u8; 16], values: &[u8]| HuffSpec {
            counts,
            values: values.to_vec(),
        };
        let categories: Vec<u8> = (0..12).collect();
        self.dc[0].get_or_insert_with(|| spec(STD_DC_LUMA_COUNTS, &categories));
        self.dc[1].get_or_insert_with(|| spec(STD_DC_CHROMA_COUNTS, &categories));
        self.ac[0].get_or_insert_with(|| spec(STD_AC_LUMA_COUNTS, &STD_AC_LUMA_VALUES));
        self.ac[1].get_or_insert_with(|| spec(STD_AC_CHROMA_COUNTS, &STD_AC_CHROMA_VALUES));
    }
}

/// What the parser found next.
pub(super) enum Segment {
    Frame(Frame),
    Scan(ScanHeader),
    EndOfImage,
}

/// Reads marker segments the way libjpeg's `read_markers` does: fields are
/// read and checked in the same order, so a damaged segment fails with the
/// same kind of error (running out of data is [`JpegError::Truncated`],
/// what libjpeg would suspend on; anything libjpeg rejects outright is
/// [`JpegError::Corrupt`]).
pub(super) struct Parser<'a> {
    data: &'a [u8],
    pos: usize,
    tables: Tables,
    /// Component ids of the frame, once its header has been read.
    frame_ids: Option<Vec<u8>>,
    /// Most pixels a frame may have (checked before its coefficient
    /// buffers are allocated).
    max_pixels: u64,
    saw_jfif: bool,
    adobe_transform: Option<u8>,
}

fn truncated(what: &str) -> JpegError {
    JpegError::Truncated(format!("file ends inside {what}"))
}

impl<'a> Parser<'a> {
    /// Checks the start-of-image marker, which must open the file.
    /// `max_pixels` bounds the frame size.
    pub fn new(data: &'a [u8], max_pixels: u64) -> Result<Self, JpegError> {
        if data.len() < 2 || data[0] != 0xFF || data[1] != 0xD8 {
            return Err(JpegError::Corrupt("missing start-of-image marker".into()));
        }
        Ok(Self {
            data,
            pos: 2,
            tables: Tables::default(),
            frame_ids: None,
            max_pixels,
            saw_jfif: false,
            adobe_transform: None,
        })
    }

    /// Tables currently defined.
    pub fn tables(&self) -> &Tables {
        &self.tables
    }

    /// Tables, for the decoder to add defaults to.
    pub fn tables_mut(&mut self) -> &mut Tables {
        &mut self.tables
    }

    /// The bytes after the last parsed segment (entropy-coded data right
    /// after a scan header).
    pub fn remaining(&self) -> &'a [u8] {
        &self.data[self.pos..]
    }

    /// Skips `n` bytes of entropy-coded data consumed by a scan.
    pub fn advance(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.data.len());
    }

    /// The colour space libjpeg's `default_decompress_parms` would guess.
    pub fn color_space(&self, frame: &Frame) -> ColorSpace {
        match frame.components.len() {
            1 => ColorSpace::Gray,
            3 => {
                if self.saw_jfif {
                    ColorSpace::YCbCr
                } else if let Some(transform) = self.adobe_transform {
                    if transform == 0 {
                        ColorSpace::Rgb
                    } else {
                        ColorSpace::YCbCr
                    }
                } else {
                    let ids: Vec<u8> = frame.components.iter().map(|c| c.id).collect();
                    if ids == [b'R', b'G', b'B'] {
                        ColorSpace::Rgb
                    } else {
                        ColorSpace::YCbCr
                    }
                }
            }
            _ => match self.adobe_transform {
                Some(0) | None => ColorSpace::Cmyk,
                Some(_) => ColorSpace::Ycck,
            },
        }
    }

    fn byte(&mut self, what: &str) -> Result<u8, JpegError> {
        let b = *self.data.get(self.pos).ok_or_else(|| truncated(what))?;
        self.pos += 1;
        Ok(b)
    }

    fn u16(&mut self, what: &str) -> Result<i64, JpegError> {
        let hi = self.byte(what)?;
        let lo = self.byte(what)?;
        Ok(i64::from(u16::from_be_bytes([hi, lo])))
    }

    /// Skips `n` bytes; skipping past the end leaves the parser at the end,
    /// where the next read reports truncation.
    fn skip(&mut self, n: i64) {
        if n > 0 {
            self.pos = self.pos.saturating_add(n as usize).min(self.data.len());
        }
    }

    /// Parses segments until a frame header, scan header or end of image.
    pub fn next_segment(&mut self) -> Result<Segment, JpegError> {
        loop {
            let marker = self.next_marker()?;
            match marker {
                0xD8 => return Err(JpegError::Corrupt("second start-of-image marker".into())),
                0xC0..=0xC2 => return self.read_frame(marker).map(Segment::Frame),
                0xC3 | 0xC9..=0xCB => {
                    if self.frame_ids.is_some() {
                        return Err(JpegError::Corrupt("second frame header".into()));
                    }
                    let kind = if marker == 0xC3 {
                        "lossless JPEG"
                    } else {
                        "arithmetic-coded JPEG"
                    };
                    return Err(JpegError::Unsupported(kind.into()));
                }
                0xC5..=0xC8 | 0xCD..=0xCF => {
                    // libjpeg rejects hierarchical JPEG outright.
                    return Err(JpegError::Corrupt(format!(
                        "unsupported frame type 0xFF{marker:02X} (hierarchical JPEG)"
                    )));
                }
                0xDA => return self.read_scan().map(Segment::Scan),
                0xD9 => return Ok(Segment::EndOfImage),
                0xC4 => self.read_huffman_tables()?,
                0xDB => self.read_quant_tables()?,
                0xDD => {
                    if self.u16("DRI")? != 4 {
                        return Err(JpegError::Corrupt("bad DRI segment length".into()));
                    }
                    self.tables.restart_interval = self.u16("DRI")? as usize;
                }
                0xE0 | 0xEE => self.read_interesting_app(marker)?,
                // Other APPn, COM, DNL and arithmetic-coding conditioning:
                // skipped (a length below 2 skips nothing, as in libjpeg).
                0xE1..=0xED | 0xEF | 0xFE | 0xDC | 0xCC => {
                    let len = self.u16("marker segment")?;
                    self.skip(len - 2);
                }
                // Parameterless: restart markers out of place and TEM.
                0xD0..=0xD7 | 0x01 => {}
                // Reserved markers (RESn, DHP, EXP, JPGn) are fatal in libjpeg.
                _ => {
                    return Err(JpegError::Corrupt(format!(
                        "unknown marker 0xFF{marker:02X}"
                    )))
                }
            }
        }
    }

    /// Finds the next marker code like libjpeg's `next_marker`: garbage
    /// bytes and stuffed FF 00 pairs are skipped, fill FF bytes swallowed.
    fn next_marker(&mut self) -> Result<u8, JpegError> {
        loop {
            while self.byte("marker search")? != 0xFF {}
            let mut code = self.byte("marker")?;
            while code == 0xFF {
                code = self.byte("marker")?;
            }
            if code != 0 {
                return Ok(code);
            }
        }
    }

    /// APP0 / APP14: libjpeg looks at up to 14 bytes for JFIF / Adobe.
    fn read_interesting_app(&mut self, marker: u8) -> Result<(), JpegError> {
        let len = self.u16("APPn segment")? - 2;
        let take = len.clamp(0, 14) as usize;
        let mut head = Vec::with_capacity(take);
        for _ in 0..take {
            head.push(self.byte("APPn segment")?);
        }
        if marker == 0xE0 && head.len() >= 14 && head.starts_with(b"JFIF\0") {
            self.saw_jfif = true;
        }
        if marker == 0xEE && head.len() >= 12 && head.starts_with(b"Adobe") {
            self.adobe_transform = Some(head[11]);
        }
        self.skip(len - take as i64);
        Ok(())
    }

    fn read_frame(&mut self, marker: u8) -> Result<Frame, JpegError> {
        if self.frame_ids.is_some() {
            return Err(JpegError::Corrupt("second frame header".into()));
        }
        let what = "frame header";
        let len = self.u16(what)?;
        let precision = self.byte(what)?;
        let height = self.u16(what)? as usize;
        let width = self.u16(what)? as usize;
        let ncomp = usize::from(self.byte(what)?);
        if height == 0 || width == 0 || ncomp == 0 {
            return Err(JpegError::ZeroSize {
                width: width as u32,
                height: height as u32,
            });
        }
        if len - 8 != 3 * ncomp as i64 {
            return Err(JpegError::Corrupt("bad frame header length".into()));
        }
        let mut comps = Vec::with_capacity(ncomp);
        for _ in 0..ncomp {
            let id = self.byte(what)?;
            let hv = self.byte(what)?;
            let tq = self.byte(what)?;
            comps.push((
                id,
                usize::from(hv >> 4),
                usize::from(hv & 15),
                usize::from(tq),
            ));
        }
        // PIL's own header parser and libjpeg's `initial_setup` checks.
        if precision != 8 {
            return Err(JpegError::Unsupported(format!("{precision}-bit samples")));
        }
        if !matches!(ncomp, 1 | 3 | 4) {
            return Err(JpegError::Unsupported(format!("{ncomp} components")));
        }
        if width > 65500 || height > 65500 {
            return Err(JpegError::Unsupported(format!(
                "{width}x{height} image is too large"
            )));
        }
        if (width as u64) * (height as u64) > self.max_pixels {
            return Err(JpegError::TooLarge {
                width: width as u32,
                height: height as u32,
            });
        }
        if comps
            .iter()
            .any(|&(_, h, v, _)| !(1..=4).contains(&h) || !(1..=4).contains(&v))
        {
            return Err(JpegError::Corrupt("bad sampling factors".into()));
        }
        let max_h = comps.iter().map(|c| c.1).max().unwrap_or(1);
        let max_v = comps.iter().map(|c| c.2).max().unwrap_or(1);
        let mcus_x = width.div_ceil(8 * max_h);
        let mcus_y = height.div_ceil(8 * max_v);
        let components = comps
            .into_iter()
            .map(|(id, h, v, tq)| {
                let cw = (width * h).div_ceil(max_h);
                let ch = (height * v).div_ceil(max_v);
                let stride_blocks = mcus_x * h;
                Component {
                    id,
                    h,
                    v,
                    tq,
                    width: cw,
                    height: ch,
                    blocks_w: cw.div_ceil(8),
                    blocks_h: ch.div_ceil(8),
                    stride_blocks,
                    coefs: Vec::new(),
                    quant: None,
                    coef_bits: [-1; 64],
                    prev_coef_bits: [0; 10],
                }
            })
            .collect::<Vec<_>>();
        self.frame_ids = Some(components.iter().map(|c| c.id).collect());
        Ok(Frame {
            width,
            height,
            progressive: marker == 0xC2,
            components,
            max_h,
            max_v,
            mcus_x,
            mcus_y,
            scans_seen: 0,
            last_good_imcu_row: 0,
        })
    }

    fn read_quant_tables(&mut self) -> Result<(), JpegError> {
        let what = "DQT segment";
        let mut len = self.u16(what)? - 2;
        while len > 0 {
            let pq_tq = self.byte(what)?;
            let (wide, slot) = (pq_tq >> 4 != 0, usize::from(pq_tq & 15));
            if slot > 3 {
                return Err(JpegError::Corrupt(format!(
                    "bad quantisation table index {slot}"
                )));
            }
            let mut table = [0u16; 64];
            for &natural in &NATURAL_ORDER[..64] {
                table[natural] = if wide {
                    self.u16(what)? as u16
                } else {
                    u16::from(self.byte(what)?)
                };
            }
            self.tables.quant[slot] = Some(table);
            len -= if wide { 129 } else { 65 };
        }
        if len != 0 {
            return Err(JpegError::Corrupt("bad DQT segment length".into()));
        }
        Ok(())
    }

    fn read_huffman_tables(&mut self) -> Result<(), JpegError> {
        let what = "DHT segment";
        let mut len = self.u16(what)? - 2;
        while len > 16 {
            let index = self.byte(what)?;
            let mut counts = [0u8; 16];
            for c in &mut counts {
                *c = self.byte(what)?;
            }
            len -= 17;
            let total: i64 = counts.iter().map(|&c| i64::from(c)).sum();
            if total > 256 || total > len {
                return Err(JpegError::Corrupt("bad Huffman table".into()));
            }
            let mut values = Vec::with_capacity(total as usize);
            for _ in 0..total {
                values.push(self.byte(what)?);
            }
            len -= total;
            let (is_ac, slot) = (index & 0x10 != 0, usize::from(index & !0x10));
            if slot > 3 {
                return Err(JpegError::Corrupt(format!(
                    "bad Huffman table index {index:#04x}"
                )));
            }
            let spec = Some(HuffSpec { counts, values });
            if is_ac {
                self.tables.ac[slot] = spec;
            } else {
                self.tables.dc[slot] = spec;
            }
        }
        if len != 0 {
            return Err(JpegError::Corrupt("bad DHT segment length".into()));
        }
        Ok(())
    }

    fn read_scan(&mut self) -> Result<ScanHeader, JpegError> {
        let frame_ids = self
            .frame_ids
            .clone()
            .ok_or_else(|| JpegError::Corrupt("scan before frame header".into()))?;
        let what = "scan header";
        let len = self.u16(what)?;
        let n = usize::from(self.byte(what)?);
        if len != 2 * n as i64 + 6 || !(1..=4).contains(&n) {
            return Err(JpegError::Corrupt("bad scan header".into()));
        }
        let mut slots: [Option<usize>; 4] = [None; 4];
        let mut components = Vec::with_capacity(n);
        for i in 0..n {
            let id = self.byte(what)?;
            let tables = self.byte(what)?;
            // libjpeg's lookup: the first of the first four components with
            // this id whose *scan slot of the same number* is still free.
            let index = (0..frame_ids.len().min(4))
                .find(|&ci| frame_ids[ci] == id && slots[ci].is_none())
                .ok_or_else(|| JpegError::Corrupt(format!("scan names unknown component {id}")))?;
            if slots[..i].contains(&Some(index)) {
                return Err(JpegError::Corrupt("component repeated in a scan".into()));
            }
            slots[i] = Some(index);
            components.push(ScanComponent {
                index,
                dc_table: usize::from(tables >> 4),
                ac_table: usize::from(tables & 15),
            });
        }
        let ss = usize::from(self.byte(what)?);
        let se = usize::from(self.byte(what)?);
        let ah_al = self.byte(what)?;
        Ok(ScanHeader {
            components,
            ss,
            se,
            ah: u32::from(ah_al >> 4),
            al: u32::from(ah_al & 15),
        })
    }
}

/// Standard Huffman tables (JPEG Annex K.3): code counts per length and
/// symbols, for DC and AC coefficients of luminance and chrominance.
const STD_DC_LUMA_COUNTS: [u8; 16] = [0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0];
const STD_DC_CHROMA_COUNTS: [u8; 16] = [0, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0];
const STD_AC_LUMA_COUNTS: [u8; 16] = [0, 2, 1, 3, 3, 2, 4, 3, 5, 5, 4, 4, 0, 0, 1, 0x7d];
const STD_AC_CHROMA_COUNTS: [u8; 16] = [0, 2, 1, 2, 4, 4, 3, 4, 7, 5, 4, 4, 0, 1, 2, 0x77];
#[rustfmt::skip]
const STD_AC_LUMA_VALUES: [u8; 162] = [
    0x01, 0x02, 0x03, 0x00, 0x04, 0x11, 0x05, 0x12, 0x21, 0x31, 0x41, 0x06, 0x13, 0x51, 0x61, 0x07,
    0x22, 0x71, 0x14, 0x32, 0x81, 0x91, 0xa1, 0x08, 0x23, 0x42, 0xb1, 0xc1, 0x15, 0x52, 0xd1, 0xf0,
    0x24, 0x33, 0x62, 0x72, 0x82, 0x09, 0x0a, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x25, 0x26, 0x27, 0x28,
    0x29, 0x2a, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3a, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49,
    0x4a, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5a, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69,
    0x6a, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7a, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89,
    0x8a, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9a, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7,
    0xa8, 0xa9, 0xaa, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7, 0xb8, 0xb9, 0xba, 0xc2, 0xc3, 0xc4, 0xc5,
    0xc6, 0xc7, 0xc8, 0xc9, 0xca, 0xd2, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xd9, 0xda, 0xe1, 0xe2,
    0xe3, 0xe4, 0xe5, 0xe6, 0xe7, 0xe8, 0xe9, 0xea, 0xf1, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8,
    0xf9, 0xfa,
];
#[rustfmt::skip]
const STD_AC_CHROMA_VALUES: [u8; 162] = [
    0x00, 0x01, 0x02, 0x03, 0x11, 0x04, 0x05, 0x21, 0x31, 0x06, 0x12, 0x41, 0x51, 0x07, 0x61, 0x71,
    0x13, 0x22, 0x32, 0x81, 0x08, 0x14, 0x42, 0x91, 0xa1, 0xb1, 0xc1, 0x09, 0x23, 0x33, 0x52, 0xf0,
    0x15, 0x62, 0x72, 0xd1, 0x0a, 0x16, 0x24, 0x34, 0xe1, 0x25, 0xf1, 0x17, 0x18, 0x19, 0x1a, 0x26,
    0x27, 0x28, 0x29, 0x2a, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3a, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48,
    0x49, 0x4a, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5a, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68,
    0x69, 0x6a, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7a, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87,
    0x88, 0x89, 0x8a, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9a, 0xa2, 0xa3, 0xa4, 0xa5,
    0xa6, 0xa7, 0xa8, 0xa9, 0xaa, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7, 0xb8, 0xb9, 0xba, 0xc2, 0xc3,
    0xc4, 0xc5, 0xc6, 0xc7, 0xc8, 0xc9, 0xca, 0xd2, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xd9, 0xda,
    0xe2, 0xe3, 0xe4, 0xe5, 0xe6, 0xe7, 0xe8, 0xe9, 0xea, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8,
    0xf9, 0xfa,
];
