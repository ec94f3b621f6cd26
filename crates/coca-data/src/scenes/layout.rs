//! Drawing a random scene: object attributes, then a placement that keeps every object inside the frame,
//! apart from the other, and — for two objects — clearly on one side along the relation's axis.

use super::rng::SplitMix64;
use super::scene::{Scene, SceneObject, MAX_HALF_EXTENT};
use super::vocab::{Description, Relation, Size};
use super::{SceneOptions, LARGE_RADIUS, SMALL_RADIUS};

/// Free border kept around every object, in units of the image side.
pub(crate) const MARGIN: f64 = 0.02;
/// Smallest gap between the bounding boxes of two objects along the relation's axis (about 4 pixels at 64).
pub(crate) const MIN_GAP: f64 = 0.06;
/// For two objects, the offset across the relation's axis is at most this fraction of the offset along it
/// (an angle under 27°), so "left of" never looks like "above".
pub(crate) const MAX_CROSS_RATIO: f64 = 0.5;

/// Background channels are drawn from this range: pale, slightly tinted tones.
const BACKGROUND: (u8, u8) = (222, 250);

/// Draw a scene with `count` (1 or 2) objects from `rng`, using the options' palette and shapes.
pub(crate) fn draw_scene(rng: &mut SplitMix64, options: &SceneOptions, count: usize) -> Scene {
    let background = [0; 3]
        .map(|_: u8| BACKGROUND.0 + rng.below(usize::from(BACKGROUND.1 - BACKGROUND.0) + 1) as u8);
    let noise_seed = rng.next_u64();
    let first = draw_object(rng, options);
    if count < 2 {
        let [hx, hy] = half_room(first.radius);
        let centre = [
            rng.uniform(MARGIN + hx, 1.0 - MARGIN - hx),
            rng.uniform(MARGIN + hy, 1.0 - MARGIN - hy),
        ];
        return Scene {
            objects: vec![SceneObject { centre, ..first }],
            relation: None,
            background,
            noise_seed,
        };
    }
    let second = draw_object(rng, options);
    let relation = if rng.coin() {
        Relation::LeftOf
    } else {
        Relation::Above
    };
    // Place along one axis ("along") and across it; swap at the end for a vertical layout.
    let (e1, e2) = (
        MAX_HALF_EXTENT * first.radius,
        MAX_HALF_EXTENT * second.radius,
    );
    let slack = (1.0 - 2.0 * MARGIN - 2.0 * e1 - 2.0 * e2 - MIN_GAP).max(0.0);
    // Split the slack at two uniform cut points: before, between and after the objects.
    let (a, b) = (rng.unit() * slack, rng.unit() * slack);
    let (before, between) = (a.min(b), (a - b).abs());
    let along1 = MARGIN + before + e1;
    let along2 = along1 + e1 + MIN_GAP + between + e2;
    let across1 = rng.uniform(MARGIN + e1, 1.0 - MARGIN - e1);
    let reach = MAX_CROSS_RATIO * (along2 - along1);
    let lo = (MARGIN + e2).max(across1 - reach);
    let hi = (1.0 - MARGIN - e2).min(across1 + reach);
    let across2 = rng.uniform(lo, hi.max(lo));
    let (c1, c2) = match relation {
        Relation::LeftOf => ([along1, across1], [along2, across2]),
        Relation::Above => ([across1, along1], [across2, along2]),
    };
    Scene {
        objects: vec![
            SceneObject {
                centre: c1,
                ..first
            },
            SceneObject {
                centre: c2,
                ..second
            },
        ],
        relation: Some(relation),
        background,
        noise_seed,
    }
}

/// The room an object of `radius` needs around its centre, whatever its shape.
fn half_room(radius: f64) -> [f64; 2] {
    [MAX_HALF_EXTENT * radius; 2]
}

/// Draw one object's attributes, radius and colour; its centre is set by the caller.
fn draw_object(rng: &mut SplitMix64, options: &SceneOptions) -> SceneObject {
    let size = if rng.coin() { Size::Small } else { Size::Large };
    let colour = options.colours[rng.below(options.colours.len())];
    let shape = options.shapes[rng.below(options.shapes.len())];
    let (lo, hi) = match size {
        Size::Small => SMALL_RADIUS,
        Size::Large => LARGE_RADIUS,
    };
    let radius = rng.uniform(lo, hi);
    let jitter = i32::from(options.colour_jitter);
    let rgb = colour.rgb().map(|c| {
        let delta = rng.below((2 * jitter + 1) as usize) as i32 - jitter;
        (i32::from(c) + delta).clamp(0, 255) as u8
    });
    SceneObject {
        description: Description {
            size,
            colour,
            shape,
        },
        centre: [0.5, 0.5],
        radius,
        rgb,
    }
}
