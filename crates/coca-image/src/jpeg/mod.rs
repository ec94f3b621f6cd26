//! A baseline + progressive JPEG decoder that reproduces libjpeg-turbo's
//! default output (the decoder behind PIL's `Image.open`) sample for sample.
//!
//! Why not the `image` crate's decoder: zune-jpeg uses a different integer
//! IDCT and chroma upsampler, which moves pixels by up to 4 levels on 4:2:0
//! photos; after open_clip's resize that is still up to 0.04 in normalised
//! units, above the parity budget. libjpeg-turbo's defaults that matter and
//! are reproduced here:
//! - "islow" integer IDCT (13-bit constants, 2 extra bits in the first pass);
//! - "fancy" triangle-filter chroma upsampling (h2v1, h1v2, h2v2) with edge
//!   rows/columns duplicated, and box replication for other integral ratios;
//! - fixed-point (16-bit) YCbCr -> RGB tables, YCCK -> CMYK, colour space
//!   guessed from the JFIF/Adobe markers and component ids;
//! - a marker inside entropy-coded data reads as zero bits (corrupt data is
//!   decoded, not rejected), while running out of file is an error, as PIL
//!   reports "image file is truncated".
//!
//! - progressive files whose low-frequency coefficients stay incomplete get
//!   libjpeg's block smoothing.
//!
//! Not supported (reported as [`JpegError::Unsupported`]): arithmetic coding,
//! lossless and hierarchical JPEG, precisions other than 8 bits, and
//! fractional sampling ratios.

mod color;
mod header;
mod huffman;
mod idct;
mod scan;
mod smooth;

use color::Reconstruction;
use header::{Frame, Parser, Segment};

/// Why a JPEG could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum JpegError {
    /// A valid JPEG using a feature this decoder does not implement.
    Unsupported(String),
    /// The bytes violate the JPEG syntax.
    Corrupt(String),
    /// The file ends before the image data does.
    Truncated(String),
    /// The frame header declares a zero width or height.
    ZeroSize { width: u32, height: u32 },
    /// The frame header declares more pixels than the caller's limit.
    TooLarge { width: u32, height: u32 },
    /// Decoding must buffer every coefficient, and that working memory
    /// is as much as `pixels` pixels may use: more than the caller's limit.
    TooMuchMemory {
        width: u32,
        height: u32,
        pixels: u64,
    },
}

/// Samples of a decoded JPEG, interleaved, in the layout PIL opens it with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum JpegPixels {
    /// One component: PIL mode "L".
    Gray(Vec<u8>),
    /// Three components converted to RGB: PIL mode "RGB".
    Rgb(Vec<u8>),
    /// Four components, already inverted the way PIL's "CMYK;I" raw mode
    /// does (PIL assumes Adobe's inverted CMYK convention): PIL mode "CMYK".
    Cmyk(Vec<u8>),
}

/// A decoded JPEG image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JpegImage {
    pub width: u32,
    pub height: u32,
    pub pixels: JpegPixels,
}

/// Colour space of the encoded components, guessed as libjpeg does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ColorSpace {
    Gray,
    YCbCr,
    Rgb,
    Cmyk,
    Ycck,
}

/// Decodes a complete JPEG file held in memory, refusing a frame of more
/// than `max_pixels` pixels before allocating for it.
///
/// A sequential image whose first scan holds every component (nearly every
/// baseline JPEG) is turned into pixels an iMCU row at a time as the scan
/// is decoded: besides the output only one row of coefficients and a few
/// rows of samples are held. Any other image (progressive, or sequential
/// with a scan per component) needs every coefficient until its last scan,
/// 2 bytes per sample of each component (libjpeg keeps the same); they are
/// kept in iMCU-row chunks that are freed as their rows are converted while
/// the output grows in [`color::OUTPUT_GROWTH_STEPS`] steps, so the peak
/// is the coefficients plus one step of output (and a few iMCU rows): with
/// 4:2:0 chroma the coefficients take as many bytes as the RGB image, with
/// 4:4:4 twice as many. That memory is charged against the pixel limit
/// before it is allocated ([`buffered_pixels`]).
pub(crate) fn decode(data: &[u8], max_pixels: u64) -> Result<JpegImage, JpegError> {
    let mut parser = Parser::new(data, max_pixels)?;
    let mut frame: Option<Frame> = None;
    let mut output: Option<Reconstruction> = None;
    let mut scans_done = 0usize;
    // libjpeg emits rows while decoding a sequential frame whose first scan
    // holds every component; PIL has its image once that scan ends and
    // ignores libjpeg running out of data while it looks for the EOI
    // marker. Images with several scans are only complete at EOI.
    let mut single_scan = false;
    loop {
        let segment = match parser.next_segment() {
            Ok(segment) => segment,
            Err(JpegError::Truncated(_)) if single_scan => break,
            Err(err) => return Err(err),
        };
        match segment {
            Segment::Frame(f) => frame = Some(f),
            Segment::Scan(scan_header) => {
                if single_scan {
                    return Err(JpegError::Corrupt(
                        "a second scan in a single-scan image (expected end of image)".into(),
                    ));
                }
                let frame = frame
                    .as_mut()
                    .ok_or_else(|| JpegError::Corrupt("scan before frame header".into()))?;
                if scans_done == 0 {
                    single_scan = !frame.progressive
                        && scan_header.components.len() == frame.components.len();
                    if !frame.progressive {
                        parser.tables_mut().add_standard_huffman_tables();
                    }
                    // libjpeg fixes the colour space and the upsampling
                    // before it reads the first scan.
                    let color_space = parser.color_space(frame);
                    if !single_scan {
                        let pixels = buffered_pixels(frame, color_space);
                        if pixels > max_pixels {
                            return Err(JpegError::TooMuchMemory {
                                width: frame.width as u32,
                                height: frame.height as u32,
                                pixels,
                            });
                        }
                    }
                    output = Some(Reconstruction::new(frame, color_space, !single_scan)?);
                    frame.allocate_coefficients(!single_scan);
                }
                let streamed = output.as_mut().filter(|_| single_scan);
                let end = match streamed {
                    Some(out) => scan::decode_scan(
                        frame,
                        &scan_header,
                        parser.tables(),
                        parser.remaining(),
                        &mut |frame, m| convert_streamed_row(frame, m, out),
                    )?,
                    None => scan::decode_scan(
                        frame,
                        &scan_header,
                        parser.tables(),
                        parser.remaining(),
                        &mut |_, _| {},
                    )?,
                };
                parser.advance(end);
                scans_done += 1;
            }
            Segment::EndOfImage => break,
        }
    }
    let mut frame = frame.ok_or_else(|| JpegError::Corrupt("no frame header".into()))?;
    let mut output = match output {
        Some(output) if scans_done > 0 => output,
        _ => return Err(JpegError::Corrupt("no image data (no scan)".into())),
    };
    if !single_scan {
        convert_buffered(&mut frame, &mut output);
    }
    Ok(output.finish())
}

/// The pixels whose decoding budget (1.5 times their RGB size) a buffered
/// image's working memory uses up: all its coefficients plus one growth
/// step of its output. At least the image's own pixel count.
fn buffered_pixels(frame: &Frame, color_space: ColorSpace) -> u64 {
    let pixels = frame.width as u64 * frame.height as u64;
    let output = pixels * color::channels(color_space) as u64;
    let working = frame
        .buffered_coefficient_bytes()
        .saturating_add(output.div_ceil(color::OUTPUT_GROWTH_STEPS as u64));
    pixels.max(crate::limits::pixels_for_working_memory(working))
}

/// Converts iMCU row `m` of a single-scan image as soon as the scan has
/// decoded it, then clears the row's coefficients for the next one.
fn convert_streamed_row(frame: &mut Frame, m: usize, out: &mut Reconstruction) {
    for (index, comp) in frame.components.iter_mut().enumerate() {
        out.push(index, comp, m, &comp.coefs[0]);
        comp.coefs[0].fill(0);
    }
    out.imcu_row_done();
}

/// Converts a buffered image once its last scan is decoded, freeing each
/// iMCU row's coefficients as soon as no later row needs them (block
/// smoothing reads two block rows below and above).
fn convert_buffered(frame: &mut Frame, out: &mut Reconstruction) {
    let smoothing = frame.progressive && scan::needs_block_smoothing(frame);
    let mut freed = vec![0usize; frame.components.len()];
    for m in 0..frame.mcus_y {
        for (index, freed) in freed.iter_mut().enumerate() {
            let comp = &frame.components[index];
            if smoothing {
                let smoothed = smooth::smoothed_chunk(comp, frame, m);
                out.push(index, comp, m, &smoothed);
                // Row (m + 1) * v - 2 is the first the next iMCU row reads.
                let v = comp.v;
                let keep_from = ((m + 1) * v).saturating_sub(2) / v;
                let comp = &mut frame.components[index];
                while *freed < keep_from {
                    comp.coefs[*freed] = Vec::new();
                    *freed += 1;
                }
            } else {
                out.push(index, comp, m, &comp.coefs[m]);
                frame.components[index].coefs[m] = Vec::new();
            }
        }
        out.imcu_row_done();
    }
}
