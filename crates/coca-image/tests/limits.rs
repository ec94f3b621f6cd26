//! The decoding budget: header bombs of every format are refused from their header, before their pixels
//! are allocated, and decoding a legal image allocates at most 1.5x its RGB size at any moment. A counting
//! allocator records each thread's live and peak heap bytes, so parallel tests do not disturb each other.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::PathBuf;

use coca_image::{DecodeLimits, DecodedImage, ImageError};

struct Counting;

thread_local! {
    static LIVE: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

fn record(grow: usize, shrink: usize) {
    // `try_with`: allocations while a thread's locals are torn down are not counted.
    let _ = LIVE.try_with(|live| {
        let now = (live.get() + grow).saturating_sub(shrink);
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

// SAFETY: forwards every call to the system allocator unchanged; only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        record(layout.size(), 0);
        // SAFETY: the caller upholds `GlobalAlloc`'s contract for this call, which is passed on unchanged.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        record(layout.size(), 0);
        // SAFETY: the caller upholds `GlobalAlloc`'s contract for this call, which is passed on unchanged.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        record(0, layout.size());
        // SAFETY: the caller upholds `GlobalAlloc`'s contract for this call, which is passed on unchanged.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        record(new_size, layout.size());
        // SAFETY: the caller upholds `GlobalAlloc`'s contract for this call, which is passed on unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `f` and returns its result with the most heap bytes this thread held at once above what it held
/// before.
fn peak_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(base));
    let out = f();
    (out, PEAK.with(Cell::get) - base)
}

fn bombs_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/adversarial/images")
}

#[test]
fn header_bombs_are_refused_before_their_pixels_are_allocated() {
    let text = std::fs::read_to_string(bombs_dir().join("manifest.json")).unwrap();
    let manifest: serde_json::Value = serde_json::from_str(&text).unwrap();
    let files = manifest["files"].as_array().unwrap();
    assert!(files.len() >= 10);
    for entry in files {
        let name = entry["file"].as_str().unwrap();
        let bytes = std::fs::read(bombs_dir().join(name)).unwrap();
        let (result, peak) = peak_during(|| DecodedImage::decode(&bytes, name));
        let err = result.expect_err(name);
        let message = err.to_string();
        for fragment in entry["expect"].as_array().unwrap() {
            let fragment = fragment.as_str().unwrap();
            assert!(
                message.contains(fragment),
                "{name}: {fragment:?} missing in {message}"
            );
        }
        assert!(message.starts_with(name), "{name}: {message}");
        // Headers and tables only: far below even one row of pixels of any of these images.
        assert!(
            peak < 1 << 20,
            "{name}: {peak} bytes allocated before refusing"
        );
    }
}

#[test]
fn the_limit_is_the_callers() {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/data/folder/coffee.jpg");
    let img = DecodedImage::open(&path).unwrap();
    let pixels = u64::from(img.width()) * u64::from(img.height());
    let exact = DecodeLimits { max_pixels: pixels };
    assert!(DecodedImage::open_limited(&path, &exact).is_ok());
    let below = DecodeLimits {
        max_pixels: pixels - 1,
    };
    match DecodedImage::open_limited(&path, &below) {
        Err(ImageError::TooLarge {
            width,
            height,
            limit,
            ..
        }) => {
            assert_eq!((width, height), (img.width().into(), img.height().into()));
            assert_eq!(limit, pixels - 1);
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    // The default is PIL's limit.
    let gif = std::fs::read(bombs_dir().join("gif_screen_30000.gif")).unwrap();
    match DecodedImage::decode(&gif, "g") {
        Err(ImageError::TooLarge { limit, .. }) => assert_eq!(limit, 89_478_485),
        other => panic!("expected TooLarge, got {other:?}"),
    }
}

/// Most bytes decoding may hold at once, per byte of the decoded RGB image, beyond a few rows' worth of
/// buffers and tables.
const BUDGET: f64 = 1.5;
const SLACK: usize = 64 << 10;

fn assert_within_budget(name: &str, bytes: &[u8]) -> DecodedImage {
    assert_within(name, bytes, BUDGET)
}

/// Decodes `bytes` to RGB and checks that it held at most `budget` times the RGB size (plus [`SLACK`]).
fn assert_within(name: &str, bytes: &[u8], budget: f64) -> DecodedImage {
    let (img, peak) = peak_during(|| DecodedImage::decode(bytes, name).map(DecodedImage::into_rgb));
    let img = img.unwrap_or_else(|e| panic!("{e}"));
    let rgb = img.as_raw().len();
    let ratio = peak as f64 / rgb as f64;
    eprintln!("{name}: decoding held {peak} bytes at most, {ratio:.3}x its RGB size");
    assert!(
        peak as f64 <= budget * rgb as f64 + SLACK as f64,
        "{name}: decoding to RGB held {peak} bytes at once, {ratio:.2}x the {rgb}-byte RGB image"
    );
    DecodedImage::from_rgb(img)
}

#[test]
fn decoding_a_gif_or_png_holds_at_most_one_and_a_half_times_its_rgb_size() {
    use coca_image::image::{codecs::png::PngEncoder, ImageEncoder};
    // A GIF: 1024 x 1024 screen, a palette frame over part of it.
    let mut gif = Vec::new();
    {
        let palette: Vec<u8> = (0..=255u8).flat_map(|i| [i, 255 - i, i / 2]).collect();
        let mut encoder = gif::Encoder::new(&mut gif, 1024, 1024, &palette).unwrap();
        let mut frame = gif::Frame::from_indexed_pixels(400, 300, vec![7; 400 * 300], None);
        frame.left = 50;
        frame.top = 60;
        encoder.write_frame(&frame).unwrap();
    }
    let img = assert_within_budget("frame.gif", &gif);
    assert_eq!((img.width(), img.height()), (1024, 1024));
    // An RGBA PNG, converted in place.
    let mut png = Vec::new();
    let rgba: Vec<u8> = (0..1024 * 1024 * 4).map(|i| (i % 251) as u8).collect();
    PngEncoder::new(&mut png)
        .write_image(
            &rgba,
            1024,
            1024,
            coca_image::image::ExtendedColorType::Rgba8,
        )
        .unwrap();
    assert_within_budget("rgba.png", &png);
}

/// Writes bits MSB first with JPEG byte stuffing.
#[derive(Default)]
struct Bits {
    out: Vec<u8>,
    acc: u32,
    n: u32,
}

impl Bits {
    fn put(&mut self, code: &str) {
        for c in code.bytes() {
            self.acc = (self.acc << 1) | u32::from(c == b'1');
            self.n += 1;
            if self.n == 8 {
                self.out.push(self.acc as u8);
                if self.acc == 0xFF {
                    self.out.push(0);
                }
                (self.acc, self.n) = (0, 0);
            }
        }
    }

    /// Pads the last byte with ones and returns the bytes.
    fn finish(mut self) -> Vec<u8> {
        while self.n != 0 {
            self.put("1");
        }
        self.out
    }
}

/// A `side` × `side` YCbCr JPEG whose luma is sampled `luma` (0x22: 4:2:0, 0x11: 4:4:4). Baseline: one
/// interleaved scan with the standard Huffman tables (JPEG's default when a file has no DHT), luma DC stepping
/// up and down by 16 from block to block. Progressive: a DC scan and, when `ac_scans`, an AC scan per
/// component, all coefficients zero, with one-code tables.
fn synthetic_jpeg(side: u16, luma: u8, progressive: bool, ac_scans: bool) -> Vec<u8> {
    let (h, v) = (usize::from(luma >> 4), usize::from(luma & 15));
    let mut out = vec![0xFF, 0xD8, 0xFF, 0xDB, 0, 67, 0];
    out.extend([1u8; 64]);
    out.extend([0xFF, if progressive { 0xC2 } else { 0xC0 }, 0, 17, 8]);
    out.extend(side.to_be_bytes());
    out.extend(side.to_be_bytes());
    out.extend([3, 1, luma, 0, 2, 0x11, 0, 3, 0x11, 0]);
    let side = usize::from(side);
    let (mcus_x, mcus_y) = (side.div_ceil(8 * h), side.div_ceil(8 * v));
    if !progressive {
        out.extend([0xFF, 0xDA, 0, 12, 3, 1, 0x00, 2, 0x11, 3, 0x11, 0, 63, 0]);
        let mut bits = Bits::default();
        let mut up = true;
        for _ in 0..mcus_x * mcus_y {
            for _ in 0..h * v {
                // Luma: DC category 5 ("110") and +16 or -16, then end of block ("1010").
                bits.put(if up { "11010000" } else { "11001111" });
                bits.put("1010");
                up = !up;
            }
            // Chroma: DC category 0 ("00"), end of block ("00"); twice.
            bits.put("00000000");
        }
        out.extend(bits.finish());
    } else {
        // DC table 0 and AC table 0 with a single 1-bit code: DC category 0, end of block.
        out.extend([0xFF, 0xC4, 0, 38, 0x00, 1]);
        out.extend([0u8; 15]);
        out.push(0);
        out.push(0x10);
        out.push(1);
        out.extend([0u8; 15]);
        out.push(0x00);
        out.extend([0xFF, 0xDA, 0, 12, 3, 1, 0x00, 2, 0x00, 3, 0x00, 0, 0, 0]);
        let mut bits = Bits::default();
        for _ in 0..mcus_x * mcus_y * (h * v + 2) {
            bits.put("0");
        }
        out.extend(bits.finish());
        if ac_scans {
            for (id, blocks) in [(1u8, (h, v)), (2, (1, 1)), (3, (1, 1))] {
                let (cw, ch) = (side * blocks.0 / h, side * blocks.1 / v);
                out.extend([0xFF, 0xDA, 0, 8, 1, id, 0x00, 1, 63, 0]);
                let mut bits = Bits::default();
                for _ in 0..cw.div_ceil(8) * ch.div_ceil(8) {
                    bits.put("0");
                }
                out.extend(bits.finish());
            }
        }
    }
    out.extend([0xFF, 0xD9]);
    out
}

/// Bytes a buffered (progressive) decode of `synthetic_jpeg(side, luma, ..)` keeps in coefficients: 2 per
/// sample of every component, over whole MCUs.
fn coefficient_bytes(side: usize, luma: u8) -> usize {
    let (h, v) = (usize::from(luma >> 4), usize::from(luma & 15));
    let (mcus_x, mcus_y) = (side.div_ceil(8 * h), side.div_ceil(8 * v));
    mcus_x * mcus_y * (h * v + 2) * 64 * 2
}

#[test]
fn decoding_a_baseline_jpeg_holds_at_most_one_and_a_half_times_its_rgb_size() {
    for (name, luma) in [("baseline_420.jpg", 0x22), ("baseline_444.jpg", 0x11)] {
        let img = assert_within_budget(name, &synthetic_jpeg(1000, luma, false, false));
        assert_eq!((img.width(), img.height()), (1000, 1000));
        // Rows are streamed, yet the image is the one the file holds: luma alternates by block.
        let rgb = img.to_rgb();
        let (a, b) = (rgb.get_pixel(0, 0)[0], rgb.get_pixel(8, 0)[0]);
        assert_ne!(a, b, "{name}");
        assert_eq!(rgb.get_pixel(0, 999)[0], rgb.get_pixel(0, 999)[1], "{name}");
    }
}

#[test]
fn a_progressive_jpeg_holds_its_coefficients_and_a_sixteenth_of_its_output() {
    for (name, luma, ac_scans) in [
        ("progressive_420.jpg", 0x22, true),
        ("progressive_444.jpg", 0x11, true),
        // Only DC: libjpeg's block smoothing runs, on a few rows at a time.
        ("progressive_444_dc.jpg", 0x11, false),
    ] {
        let side: usize = 1000;
        let rgb = side * side * 3;
        // Block smoothing keeps the two iMCU rows above the one it converts, and a smoothed copy of that one.
        let imcu_rows = side.div_ceil(8 * usize::from(luma & 15));
        let rows = 3 * coefficient_bytes(side, luma) / imcu_rows;
        let bound = (coefficient_bytes(side, luma) + rgb / 16 + rows) as f64 / rgb as f64;
        assert_within(
            name,
            &synthetic_jpeg(side as u16, luma, true, ac_scans),
            bound,
        );
        // 4:2:0 is within the 1.5x budget even though every coefficient is held.
        if luma == 0x22 {
            assert_within(
                name,
                &synthetic_jpeg(side as u16, luma, true, ac_scans),
                BUDGET,
            );
        }
    }
}

#[test]
fn a_progressive_jpeg_is_charged_its_coefficients_against_the_pixel_limit() {
    let jpeg = synthetic_jpeg(1000, 0x11, true, true);
    let pixels = 1000 * 1000;
    // Its 6 bytes of coefficients a pixel (and a sixteenth of its output) use the budget of 1.33x its pixels.
    let charged = ((coefficient_bytes(1000, 0x11) + 3 * pixels / 16) as u64 * 2).div_ceil(9);
    let at = DecodeLimits {
        max_pixels: charged,
    };
    assert!(DecodedImage::decode_limited(&jpeg, "p.jpg", &at).is_ok());
    let below = DecodeLimits {
        max_pixels: charged - 1,
    };
    let (result, peak) = peak_during(|| DecodedImage::decode_limited(&jpeg, "p.jpg", &below));
    let message = result.expect_err("refused").to_string();
    assert!(peak < 1 << 20, "{peak} bytes allocated before refusing");
    for fragment in [
        "p.jpg: image too large",
        "1000x1000",
        "keeps all its coefficients",
        &format!("as much memory as {charged} pixels"),
        &format!("limit of {} pixels", charged - 1),
    ] {
        assert!(
            message.contains(fragment),
            "{fragment:?} missing in {message}"
        );
    }
    // The baseline image of the same size streams and needs no more than its pixels.
    let baseline = synthetic_jpeg(1000, 0x11, false, false);
    let exact = DecodeLimits {
        max_pixels: pixels as u64,
    };
    assert!(DecodedImage::decode_limited(&baseline, "b.jpg", &exact).is_ok());
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn png_chunk(out: &mut Vec<u8>, kind: &[u8], data: &[u8]) {
    out.extend((data.len() as u32).to_be_bytes());
    let start = out.len();
    out.extend(kind);
    out.extend(data);
    let crc = crc32(&out[start..]);
    out.extend(crc.to_be_bytes());
}

/// A PNG of `pixels` (`bytes_per_pixel` bytes each, big-endian samples, rows of `width`) with the given colour
/// type and bit depth, Adam7-interlaced when `interlaced`; stored (uncompressed) deflate blocks.
fn png_file(
    width: usize,
    height: usize,
    (color_type, depth, bytes_per_pixel): (u8, u8, usize),
    interlaced: bool,
    pixels: &[u8],
) -> Vec<u8> {
    let passes: &[(usize, usize, usize, usize)] = if interlaced {
        &[
            (0, 0, 8, 8),
            (4, 0, 8, 8),
            (0, 4, 4, 8),
            (2, 0, 4, 4),
            (0, 2, 2, 4),
            (1, 0, 2, 2),
            (0, 1, 1, 2),
        ]
    } else {
        &[(0, 0, 1, 1)]
    };
    let mut raw = Vec::new();
    for &(x0, y0, dx, dy) in passes {
        if x0 >= width || y0 >= height {
            continue;
        }
        for y in (y0..height).step_by(dy) {
            raw.push(0); // filter: none
            for x in (x0..width).step_by(dx) {
                let at = (y * width + x) * bytes_per_pixel;
                raw.extend(&pixels[at..at + bytes_per_pixel]);
            }
        }
    }
    let mut zlib = vec![0x78, 0x01];
    let blocks: Vec<&[u8]> = raw.chunks(65535).collect();
    for (i, block) in blocks.iter().enumerate() {
        zlib.push(u8::from(i + 1 == blocks.len()));
        let len = block.len() as u16;
        zlib.extend(len.to_le_bytes());
        zlib.extend((!len).to_le_bytes());
        zlib.extend(*block);
    }
    let (mut a, mut b) = (1u32, 0u32);
    for &byte in &raw {
        a = (a + u32::from(byte)) % 65521;
        b = (b + a) % 65521;
    }
    zlib.extend(((b << 16) | a).to_be_bytes());
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend((width as u32).to_be_bytes());
    ihdr.extend((height as u32).to_be_bytes());
    ihdr.extend([depth, color_type, 0, 0, u8::from(interlaced)]);
    png_chunk(&mut out, b"IHDR", &ihdr);
    if color_type == 3 {
        let palette: Vec<u8> = (0..=255u8).flat_map(|i| [i, 255 - i, i / 3]).collect();
        png_chunk(&mut out, b"PLTE", &palette);
    }
    png_chunk(&mut out, b"IDAT", &zlib);
    png_chunk(&mut out, b"IEND", &[]);
    out
}

#[test]
fn sixteen_bit_and_interlaced_pngs_are_decoded_a_row_at_a_time() {
    let (w, h) = (1000, 1000);
    let rgb16: Vec<u8> = (0..w * h * 6).map(|i| (i * 7 % 253) as u8).collect();
    let plain = assert_within_budget("rgb16.png", &png_file(w, h, (2, 16, 6), false, &rgb16));
    // PIL keeps the high byte of each 16-bit sample.
    let high: Vec<u8> = rgb16.iter().step_by(2).copied().collect();
    assert_eq!(plain.to_rgb().into_raw(), high);
    let interlaced =
        assert_within_budget("rgb16_adam7.png", &png_file(w, h, (2, 16, 6), true, &rgb16));
    assert_eq!(interlaced.to_rgb().into_raw(), high);
    // 8-bit grey, grey + alpha, palette and RGBA, plain and interlaced, at a size Adam7 leaves passes empty.
    for (name, format, side) in [
        ("grey.png", (0, 8, 1), w),
        ("grey_alpha.png", (4, 8, 2), w),
        ("palette.png", (3, 8, 1), w),
        ("rgba.png", (6, 8, 4), w),
        ("rgba16.png", (6, 16, 8), w),
        ("grey_alpha_tiny.png", (4, 8, 2), 3),
    ] {
        let samples: Vec<u8> = (0..side * side * format.2)
            .map(|i| (i * 13 % 251) as u8)
            .collect();
        let plain =
            DecodedImage::decode(&png_file(side, side, format, false, &samples), name).unwrap();
        let bytes = png_file(side, side, format, true, &samples);
        let interlaced = if side == w {
            assert_within_budget(name, &bytes)
        } else {
            DecodedImage::decode(&bytes, name).unwrap()
        };
        assert_eq!(interlaced.to_rgb(), plain.to_rgb(), "{name}");
    }
}

#[test]
fn only_the_first_gif_frame_and_tiff_page_are_read() {
    // A 64 x 64 GIF whose second frame claims 60000 x 60000.
    let mut gif = Vec::new();
    {
        let palette: Vec<u8> = (0..=255u8).flat_map(|i| [i, i / 2, 255 - i]).collect();
        let mut encoder = gif::Encoder::new(&mut gif, 64, 64, &palette).unwrap();
        let frame = gif::Frame::from_indexed_pixels(64, 64, vec![9; 64 * 64], None);
        encoder.write_frame(&frame).unwrap();
    }
    assert_eq!(gif.pop(), Some(0x3B));
    gif.push(0x2C);
    for field in [0u16, 0, 60000, 60000] {
        gif.extend(field.to_le_bytes());
    }
    gif.extend([0, 2, 2, 0x44, 0x01, 0, 0x3B]);
    let (img, peak) = peak_during(|| DecodedImage::decode(&gif, "two_frames.gif"));
    let img = img.unwrap();
    assert_eq!((img.width(), img.height()), (64, 64));
    assert!(peak < 1 << 20, "{peak} bytes");

    // A 64 x 64 greyscale TIFF whose second page claims 60000 x 60000.
    let entries = |width: u32, height: u32, strip: u32, next: u32| {
        let mut ifd = Vec::new();
        let fields: [(u16, u16, u32); 8] = [
            (256, 4, width),
            (257, 4, height),
            (258, 3, 8),
            (259, 3, 1),
            (262, 3, 1),
            (273, 4, strip),
            (278, 4, height),
            (279, 4, width * height.min(64)),
        ];
        ifd.extend((fields.len() as u16).to_le_bytes());
        for (tag, kind, value) in fields {
            ifd.extend(tag.to_le_bytes());
            ifd.extend(kind.to_le_bytes());
            ifd.extend(1u32.to_le_bytes());
            if kind == 3 {
                ifd.extend((value as u16).to_le_bytes());
                ifd.extend([0, 0]);
            } else {
                ifd.extend(value.to_le_bytes());
            }
        }
        ifd.extend(next.to_le_bytes());
        ifd
    };
    let strip = 8u32;
    let first_ifd = strip + 64 * 64;
    let second_ifd = first_ifd + 2 + 8 * 12 + 4;
    let mut tiff = b"II*\0".to_vec();
    tiff.extend(first_ifd.to_le_bytes());
    tiff.extend((0..64 * 64).map(|i| (i % 256) as u8));
    tiff.extend(entries(64, 64, strip, second_ifd));
    tiff.extend(entries(60000, 60000, strip, 0));
    let (img, peak) = peak_during(|| DecodedImage::decode(&tiff, "two_pages.tif"));
    let img = img.unwrap();
    assert_eq!((img.width(), img.height()), (64, 64));
    assert_eq!(img.to_rgb().get_pixel(5, 1)[0], 69);
    assert!(peak < 1 << 20, "{peak} bytes");
}
