//! One scene: its objects with their geometry, and the caption and class they determine.

use super::vocab::{CaptionParts, Description, Relation, Shape};

/// Half-side of a square, as a fraction of the object's radius: a square of side 1.8 r has about the area of
/// the circle of radius r, so "large" looks equally large for both.
pub(crate) const SQUARE_HALF: f64 = 0.9;
/// Half-width of the triangle's base, as a fraction of the radius (an equilateral triangle of side 2.2 r).
pub(crate) const TRIANGLE_HALF_WIDTH: f64 = 1.1;
/// Distance from the diamond's centre to a corner, as a fraction of the radius.
pub(crate) const DIAMOND_HALF: f64 = 1.15;
/// The largest half-extent of any shape along either axis, as a fraction of the radius: layouts keep this
/// much room around every centre, whatever the shape.
pub(crate) const MAX_HALF_EXTENT: f64 = 1.15;

/// One drawn object. Geometry is in units of the image side (0..1, origin at the top-left corner, y down),
/// so a scene renders the same at every image size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SceneObject {
    /// What the caption says about it.
    pub description: Description,
    /// Centre of its bounding box, `[x, y]`.
    pub centre: [f64; 2],
    /// Its radius: the circle's radius; other shapes scale with it (see [`SceneObject::half_extent`]).
    pub radius: f64,
    /// The colour it is drawn with: the named colour's [`rgb`](super::Colour::rgb), jittered slightly.
    pub rgb: [u8; 3],
}

impl SceneObject {
    /// Half the width and half the height of its bounding box, in units of the image side.
    pub fn half_extent(&self) -> [f64; 2] {
        let r = self.radius;
        match self.description.shape {
            Shape::Circle => [r, r],
            Shape::Square => [SQUARE_HALF * r, SQUARE_HALF * r],
            Shape::Triangle => {
                let w = TRIANGLE_HALF_WIDTH * r;
                [w, w * 3f64.sqrt() / 2.0]
            }
            Shape::Diamond => [DIAMOND_HALF * r, DIAMOND_HALF * r],
        }
    }

    /// Its bounding box `[x0, y0, x1, y1]`, in units of the image side.
    pub fn bounds(&self) -> [f64; 4] {
        let [hx, hy] = self.half_extent();
        let [x, y] = self.centre;
        [x - hx, y - hy, x + hx, y + hy]
    }
}

/// A scene: one or two objects on a plain pale background.
///
/// Objects are stored in caption order: for two objects, `objects[0]` is the left one
/// ([`Relation::LeftOf`]) or the upper one ([`Relation::Above`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Scene {
    /// The objects, in caption order (one or two).
    pub objects: Vec<SceneObject>,
    /// How `objects[0]` lies relative to `objects[1]`; `None` for one object.
    pub relation: Option<Relation>,
    /// The background colour.
    pub background: [u8; 3],
    /// Seeds the per-pixel noise, so the scene alone fixes every pixel.
    pub noise_seed: u64,
}

impl Scene {
    /// What the caption says, as data.
    pub fn parts(&self) -> CaptionParts {
        CaptionParts {
            first: self.objects[0].description,
            second: self
                .relation
                .zip(self.objects.get(1))
                .map(|(relation, second)| (relation, second.description)),
        }
    }

    /// The one correct caption: `a large green triangle`, or
    /// `a small red circle left of a large blue square` (left object first) /
    /// `a small red circle above a large blue square` (upper object first). Lower case, no trailing period.
    pub fn caption(&self) -> String {
        self.parts().to_string()
    }

    /// The zero-shot class name of a one-object scene, `"<colour> <shape>"` (e.g. `"red circle"`; size is not
    /// part of the class); `None` for two objects. Its index is [`SceneSet::class_label`](super::SceneSet::class_label).
    pub fn class_name(&self) -> Option<String> {
        match self.objects.as_slice() {
            [only] => Some(format!(
                "{} {}",
                only.description.colour.name(),
                only.description.shape.name()
            )),
            _ => None,
        }
    }
}
