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
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        record(layout.size(), 0);
        System.alloc_zeroed(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        record(0, layout.size());
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        record(new_size, layout.size());
        System.realloc(ptr, layout, new_size)
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

/// A baseline 4:2:0 JPEG of `side` × `side` pixels, every block zero: each block is a DC category 0 and an end of block, coded with the standard tables a
/// JPEG without DHT segments uses.
fn grey_jpeg(side: u16) -> Vec<u8> {
    let mut out = vec![0xFF, 0xD8, 0xFF, 0xDB, 0, 67, 0];
    out.extend([1u8; 64]);
    out.extend([0xFF, 0xC0, 0, 17, 8]);
    out.extend(side.to_be_bytes());
    out.extend(side.to_be_bytes());
    out.extend([3, 1, 0x22, 0, 2, 0x11, 0, 3, 0x11, 0]);
    out.extend([0xFF, 0xDA, 0, 12, 3, 1, 0x00, 2, 0x11, 3, 0x11, 0, 63, 0]);
    for _ in 0..usize::from(side).div_ceil(16).pow(2) {
        out.extend([0x28, 0xA2, 0x8A, 0x00]);
    }
    out.extend([0xFF, 0xD9]);
    out
}

/// Most bytes decoding may hold at once, per byte of the decoded RGB image, beyond a few rows' worth of
/// buffers and tables.
const BUDGET: f64 = 1.5;
const SLACK: usize = 64 << 10;

fn assert_within_budget(name: &str, bytes: &[u8]) -> DecodedImage {
    let (img, peak) = peak_during(|| DecodedImage::decode(bytes, name).map(DecodedImage::into_rgb));
    let img = img.unwrap_or_else(|e| panic!("{e}"));
    let rgb = img.as_raw().len();
    let ratio = peak as f64 / rgb as f64;
    eprintln!("{name}: decoding held {peak} bytes at most, {ratio:.3}x its RGB size");
    assert!(
        peak as f64 <= BUDGET * rgb as f64 + SLACK as f64,
        "{name}: decoding to RGB held {peak} bytes at once, {ratio:.2}x the {rgb}-byte RGB image"
    );
    DecodedImage::from_rgb(img)
}

#[test]
fn decoding_a_jpeg_holds_at_most_one_and_a_half_times_its_rgb_size() {
    let img = assert_within_budget("grey.jpg", &grey_jpeg(1024));
    assert_eq!((img.width(), img.height()), (1024, 1024));
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
