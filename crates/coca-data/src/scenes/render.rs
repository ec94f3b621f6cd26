//! Rasterising a scene: the background, each object anti-aliased by supersampling, then a little noise.

use image::RgbImage;

use super::rng::mix64;
use super::scene::{Scene, SceneObject, DIAMOND_HALF, SQUARE_HALF, TRIANGLE_HALF_WIDTH};
use super::vocab::Shape;

/// Render `scene` at `size`×`size` pixels with `supersample`² coverage samples per pixel and per-channel
/// noise uniform in `-noise..=noise`.
pub(crate) fn render(scene: &Scene, size: u32, supersample: u32, noise: u8) -> RgbImage {
    let mut image = RgbImage::from_pixel(size, size, image::Rgb(scene.background));
    for object in &scene.objects {
        draw_object(&mut image, object, supersample.max(1), scene.background);
    }
    if noise > 0 {
        add_noise(&mut image, scene.noise_seed, noise);
    }
    image
}

/// Blend one object over the background, visiting only the pixels of its bounding box. Objects never
/// overlap, so blending against the plain background colour is exact.
fn draw_object(image: &mut RgbImage, object: &SceneObject, supersample: u32, background: [u8; 3]) {
    let side = f64::from(image.width());
    let [x0, y0, x1, y1] = object.bounds().map(|v| v * side);
    let cx = (object.centre[0] * side) as f32;
    let cy = (object.centre[1] * side) as f32;
    let inside = Inside::new(object.description.shape, (object.radius * side) as f32);
    let clamp = |v: f64| (v.max(0.0) as u32).min(image.width());
    let (px0, px1) = (clamp(x0.floor()), clamp(x1.ceil()));
    let (py0, py1) = (clamp(y0.floor()), clamp(y1.ceil()));
    let step = 1.0 / supersample as f32;
    let total = (supersample * supersample) as f32;
    for py in py0..py1 {
        for px in px0..px1 {
            let mut hits = 0u32;
            for sy in 0..supersample {
                let y = py as f32 + (sy as f32 + 0.5) * step - cy;
                for sx in 0..supersample {
                    let x = px as f32 + (sx as f32 + 0.5) * step - cx;
                    hits += u32::from(inside.contains(x, y));
                }
            }
            if hits == 0 {
                continue;
            }
            let coverage = hits as f32 / total;
            let pixel = image.get_pixel_mut(px, py);
            for ((out, &bg), &fg) in pixel.0.iter_mut().zip(&background).zip(&object.rgb) {
                let (bg, fg) = (f32::from(bg), f32::from(fg));
                *out = (bg + (fg - bg) * coverage).round() as u8;
            }
        }
    }
}

/// A shape's membership test with its size folded in, relative to the bounding-box centre (pixels, y down).
enum Inside {
    /// Squared radius.
    Circle(f32),
    /// Half side.
    Square(f32),
    /// Half base width and height; apex up, centred vertically in its bounding box.
    Triangle(f32, f32),
    /// Centre-to-corner distance.
    Diamond(f32),
}

impl Inside {
    fn new(shape: Shape, radius: f32) -> Self {
        match shape {
            Shape::Circle => Inside::Circle(radius * radius),
            Shape::Square => Inside::Square(SQUARE_HALF as f32 * radius),
            Shape::Triangle => {
                let w = TRIANGLE_HALF_WIDTH as f32 * radius;
                Inside::Triangle(w, w * 3f32.sqrt())
            }
            Shape::Diamond => Inside::Diamond(DIAMOND_HALF as f32 * radius),
        }
    }

    fn contains(&self, x: f32, y: f32) -> bool {
        match *self {
            Inside::Circle(r2) => x * x + y * y <= r2,
            Inside::Square(h) => x.abs() <= h && y.abs() <= h,
            Inside::Triangle(w, h) => {
                // Distance below the apex, and the half-width of the triangle at that depth.
                let depth = y + h / 2.0;
                depth <= h && x.abs() * h <= w * depth
            }
            Inside::Diamond(d) => x.abs() + y.abs() <= d,
        }
    }
}

/// Add per-channel noise in `-amplitude..=amplitude` from a hash of the seed and the pixel's position.
fn add_noise(image: &mut RgbImage, seed: u64, amplitude: u8) {
    let span = 2 * u32::from(amplitude) + 1;
    for (i, pixel) in image.pixels_mut().enumerate() {
        let mut bits = mix64(seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        for channel in &mut pixel.0 {
            // 16 bits per channel: the modulo bias is negligible for spans this small.
            let delta = ((bits & 0xffff) as u32 % span) as i32 - i32::from(amplitude);
            bits >>= 16;
            *channel = (i32::from(*channel) + delta).clamp(0, 255) as u8;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_have_the_expected_areas() {
        // Count samples on a fine grid: areas relative to r² are pi, 3.24, 2.10 and 2.65.
        let r = 10.0;
        let expected = [
            (Shape::Circle, std::f32::consts::PI),
            (Shape::Square, 4.0 * 0.81),
            (Shape::Triangle, 1.1 * 1.1 * 3f32.sqrt()),
            (Shape::Diamond, 2.0 * 1.15 * 1.15),
        ];
        for (shape, relative) in expected {
            let inside = Inside::new(shape, r);
            let n = 400;
            let mut hits = 0;
            for i in 0..n {
                for j in 0..n {
                    let x = -15.0 + 30.0 * (i as f32 + 0.5) / n as f32;
                    let y = -15.0 + 30.0 * (j as f32 + 0.5) / n as f32;
                    hits += usize::from(inside.contains(x, y));
                }
            }
            let area = hits as f32 * (30.0 * 30.0) / (n * n) as f32;
            let want = relative * r * r;
            assert!(
                (area - want).abs() < 0.02 * want,
                "{shape:?}: {area} vs {want}"
            );
        }
    }
}
