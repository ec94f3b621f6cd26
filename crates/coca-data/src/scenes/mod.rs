//! Synthetic captioned scenes: coloured shapes on a pale background, each image with exactly one correct
//! caption, generated on demand by index — the data of coca's train-from-scratch demo.
//!
//! ```text
//! a large green triangle
//! a small red circle left of a large blue square
//! a large yellow square above a small green circle
//! ```
//!
//! # What a scene is
//! One or two objects ([`SceneOptions::min_objects`]..=[`SceneOptions::max_objects`], uniformly), each a
//! [`Shape`] in a [`Colour`] at a [`Size`]. Small objects have a radius of 9.5–11.2 % of the image side, large
//! ones 17.5–19.5 %, so the two classes are at least 1.5× apart in radius (2.4× in area); the largest
//! pair still fits side by side. Two objects are placed
//! either side by side ([`Relation::LeftOf`]) or one over the other ([`Relation::Above`]), with a gap of at
//! least 6 % of the side between their bounding boxes along that axis and an offset across it of at most
//! half the offset along it, so the relation is never in doubt; every object lies fully inside the frame
//! with a 2 % margin. The caption names the left (or upper) object first, which makes it a function of the
//! image: `a {size} {colour} {shape}` or `a {size} {colour} {shape} {left of|above} a {size} {colour} {shape}`,
//! lower case, no period. [`parse_caption`] is its inverse.
//!
//! Rendering supersamples every pixel of an object's bounding box (4×4 by default) for smooth edges. Object
//! colours are the named colour ± [`SceneOptions::colour_jitter`] per channel, the background is a pale tone
//! (each channel in 222..=250), and every pixel gets uniform noise of ± [`SceneOptions::noise`] per channel.
//!
//! # Determinism and splits
//! A [`SceneSet`] is `(options, split, seed)`; scene `index` of it is drawn from its own generator seeded by
//! hashing `(seed, split, index)` — no global state, no clock — so [`SceneSet::sample`] is random access:
//! the same index always gives the same pixels and caption, on any thread, in any order. The three
//! [`Split`]s hash to independent streams. Scenes are disjoint between splits in the sense that matters for
//! images: positions and radii are continuous (53-bit) draws and the noise differs, so two splits share an
//! identical image with probability ~0. *Captions* are shared on purpose: with the default vocabulary there
//! are only [`SceneOptions::caption_count`] = 1,176 of them (24 one-object + 24·24·2 two-object), and the
//! held-out test measures generalisation to new images, not to unseen word combinations.
//!
//! # Zero-shot classification
//! The classes are `"<colour> <shape>"` for every colour × shape of the options, colour-major
//! ([`class_names`]: `red circle, red square, red triangle, green circle, …`, 12 by default); size is not part
//! of the class. The labelled set is made of one-object scenes only (a two-object scene has no single class):
//! [`SceneSet::labelled`] gives `(image, class index)` for any index, from a stream separate from the
//! captioned scenes of the same split. Prompts such as `"a photo of a {c}"` then read `"a photo of a red
//! circle"`, close to the one-object captions `"a large red circle"` seen in training.
//!
//! ```
//! use coca_data::scenes::{SceneOptions, SceneSet, Split};
//! let train = SceneSet::new(SceneOptions::default(), Split::Train, 0)?;
//! let (image, caption) = train.sample(123);
//! assert_eq!(image.dimensions(), (64, 64));
//! assert_eq!((image, caption), train.sample(123));
//!
//! let test = SceneSet::new(SceneOptions::default(), Split::Test, 0)?;
//! let (_image, class) = test.labelled(7);
//! println!("{}", test.class_names()[class]);
//! # Ok::<(), coca_data::DataError>(())
//! ```

mod export;
mod layout;
mod render;
mod rng;
mod scene;
mod vocab;

use image::RgbImage;

use crate::DataError;

pub use export::{contact_sheet, write_scene_folder};
pub use scene::{Scene, SceneObject};
pub use vocab::{parse_caption, CaptionParts, Colour, Description, Relation, Shape, Size};

/// Radius range of small objects, as fractions of the image side.
pub const SMALL_RADIUS: (f64, f64) = (0.095, 0.112);
/// Radius range of large objects, as fractions of the image side.
pub const LARGE_RADIUS: (f64, f64) = (0.175, 0.195);

/// How scenes look. [`Default`] is the demo's setting: 64×64 images, one or two objects, red/green/blue/
/// yellow circles, squares and triangles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SceneOptions {
    /// Side of the square images, in pixels (at least 16).
    pub image_size: u32,
    /// Fewest objects per scene (1 or 2).
    pub min_objects: usize,
    /// Most objects per scene (1 or 2, at least `min_objects`); the count is uniform in between.
    pub max_objects: usize,
    /// The colours objects are drawn in (distinct, at least one). Their order fixes the class indices.
    pub colours: Vec<Colour>,
    /// The shapes drawn (distinct, at least one). Their order fixes the class indices.
    pub shapes: Vec<Shape>,
    /// Coverage samples per pixel along each axis (1 = aliased; 1..=16).
    pub supersample: u32,
    /// Per-channel pixel noise amplitude (0 = none).
    pub noise: u8,
    /// Per-channel deviation of object colours from their named colour, at most 30 so colours stay distinct.
    pub colour_jitter: u8,
}

impl Default for SceneOptions {
    fn default() -> Self {
        Self {
            image_size: 64,
            min_objects: 1,
            max_objects: 2,
            colours: vec![Colour::Red, Colour::Green, Colour::Blue, Colour::Yellow],
            shapes: vec![Shape::Circle, Shape::Square, Shape::Triangle],
            supersample: 4,
            noise: 4,
            colour_jitter: 12,
        }
    }
}

impl SceneOptions {
    /// Check the options; the error says which field is out of range and why.
    pub fn validate(&self) -> Result<(), DataError> {
        let bad = |detail: String| Err(DataError::SceneOptions { detail });
        if self.image_size < 16 {
            return bad(format!(
                "image_size {} is too small to draw small objects (at least 16)",
                self.image_size
            ));
        }
        if !(1..=2).contains(&self.min_objects)
            || !(1..=2).contains(&self.max_objects)
            || self.min_objects > self.max_objects
        {
            return bad(format!(
                "objects per scene {}..={}: scenes hold 1 or 2 objects",
                self.min_objects, self.max_objects
            ));
        }
        if self.colours.is_empty() || has_duplicates(&self.colours) {
            return bad(format!(
                "colours {:?}: give at least one, each once",
                self.colours
            ));
        }
        if self.shapes.is_empty() || has_duplicates(&self.shapes) {
            return bad(format!(
                "shapes {:?}: give at least one, each once",
                self.shapes
            ));
        }
        if !(1..=16).contains(&self.supersample) {
            return bad(format!("supersample {} is not in 1..=16", self.supersample));
        }
        if self.colour_jitter > 30 {
            return bad(format!(
                "colour_jitter {} over 30 would let colours run into each other",
                self.colour_jitter
            ));
        }
        Ok(())
    }

    /// How many different objects there are: sizes × colours × shapes.
    pub fn object_count(&self) -> usize {
        Size::ALL.len() * self.colours.len() * self.shapes.len()
    }

    /// How many different captions these options can produce (1,176 by default).
    pub fn caption_count(&self) -> usize {
        let objects = self.object_count();
        let mut count = 0;
        if self.min_objects <= 1 {
            count += objects;
        }
        if self.max_objects >= 2 {
            count += objects * objects * Relation::ALL.len();
        }
        count
    }
}

fn has_duplicates<T: PartialEq>(items: &[T]) -> bool {
    items
        .iter()
        .enumerate()
        .any(|(i, a)| items[..i].contains(a))
}

/// Which part of the data: the three parts draw from independent streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Split {
    /// Training scenes.
    Train,
    /// Validation scenes (periodic evaluation during training).
    Val,
    /// Held-out test scenes (final evaluation).
    Test,
}

impl Split {
    /// Distinct constants mixed into the seed; fixed forever so that datasets stay reproducible.
    fn tag(self) -> u64 {
        match self {
            Split::Train => 0x7472_6169_6e00_0001,
            Split::Val => 0x7661_6c00_0000_0002,
            Split::Test => 0x7465_7374_0000_0003,
        }
    }
}

/// Separates the labelled (one-object) stream of a split from its captioned stream.
const LABELLED_TAG: u64 = 0x6c61_6265_6c6c_6564;

/// An endless, randomly addressable set of scenes: `(options, split, seed)` and an index fix a scene.
#[derive(Debug, Clone)]
pub struct SceneSet {
    options: SceneOptions,
    split: Split,
    seed: u64,
    stream: u64,
}

impl SceneSet {
    /// The scenes of `split` under `seed`. Fails if the options are invalid (see [`SceneOptions::validate`]).
    pub fn new(options: SceneOptions, split: Split, seed: u64) -> Result<Self, DataError> {
        options.validate()?;
        Ok(Self {
            stream: rng::combine(seed, split.tag()),
            options,
            split,
            seed,
        })
    }

    /// The options.
    pub fn options(&self) -> &SceneOptions {
        &self.options
    }

    /// The split.
    pub fn split(&self) -> Split {
        self.split
    }

    /// The seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Scene `index` of the captioned stream (one to two objects, per the options).
    pub fn scene(&self, index: u64) -> Scene {
        let mut rng = rng::SplitMix64::new(rng::combine(self.stream, index));
        let (lo, hi) = (self.options.min_objects, self.options.max_objects);
        let count = lo + rng.below(hi - lo + 1);
        layout::draw_scene(&mut rng, &self.options, count)
    }

    /// Scene `index` of the labelled stream: always one object, so [`SceneSet::class_label`] is `Some`.
    /// Independent of [`SceneSet::scene`]'s stream.
    pub fn labelled_scene(&self, index: u64) -> Scene {
        let stream = rng::combine(self.stream, LABELLED_TAG);
        let mut rng = rng::SplitMix64::new(rng::combine(stream, index));
        layout::draw_scene(&mut rng, &self.options, 1)
    }

    /// Draw `scene` at the options' image size.
    pub fn render(&self, scene: &Scene) -> RgbImage {
        render::render(
            scene,
            self.options.image_size,
            self.options.supersample,
            self.options.noise,
        )
    }

    /// Image and caption of scene `index`: the training pair.
    pub fn sample(&self, index: u64) -> (RgbImage, String) {
        let scene = self.scene(index);
        (self.render(&scene), scene.caption())
    }

    /// Image and class index of labelled scene `index`: the zero-shot evaluation pair.
    pub fn labelled(&self, index: u64) -> (RgbImage, usize) {
        let scene = self.labelled_scene(index);
        let class = self
            .class_label(&scene)
            .expect("labelled scenes have one object of the options' palette");
        (self.render(&scene), class)
    }

    /// The class of a one-object scene, an index into [`SceneSet::class_names`]; `None` for two objects
    /// (or an object whose colour or shape is not in these options).
    pub fn class_label(&self, scene: &Scene) -> Option<usize> {
        let [only] = scene.objects.as_slice() else {
            return None;
        };
        let d = only.description;
        let colour = self.options.colours.iter().position(|&c| c == d.colour)?;
        let shape = self.options.shapes.iter().position(|&s| s == d.shape)?;
        Some(colour * self.options.shapes.len() + shape)
    }

    /// The zero-shot class names, see [`class_names`].
    pub fn class_names(&self) -> Vec<String> {
        class_names(&self.options)
    }
}

/// The zero-shot class names in their fixed order: `"<colour> <shape>"`, colour-major in the options' order
/// (`red circle, red square, red triangle, green circle, …`). Index `i` is class label `i`.
pub fn class_names(options: &SceneOptions) -> Vec<String> {
    options
        .colours
        .iter()
        .flat_map(|c| {
            options
                .shapes
                .iter()
                .map(move |s| format!("{} {}", c.name(), s.name()))
        })
        .collect()
}

/// Every caption the options can produce, in a fixed order (one-object captions first). Useful to score a
/// model by caption retrieval or to check a generated caption is well formed.
pub fn all_captions(options: &SceneOptions) -> Vec<String> {
    let objects: Vec<Description> = Size::ALL
        .into_iter()
        .flat_map(|size| {
            options.colours.iter().flat_map(move |&colour| {
                options.shapes.iter().map(move |&shape| Description {
                    size,
                    colour,
                    shape,
                })
            })
        })
        .collect();
    let mut captions = Vec::with_capacity(options.caption_count());
    if options.min_objects <= 1 {
        captions.extend(objects.iter().map(|&first| {
            CaptionParts {
                first,
                second: None,
            }
            .to_string()
        }));
    }
    if options.max_objects >= 2 {
        for relation in Relation::ALL {
            for &first in &objects {
                for &second in &objects {
                    let parts = CaptionParts {
                        first,
                        second: Some((relation, second)),
                    };
                    captions.push(parts.to_string());
                }
            }
        }
    }
    captions
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_uniform() {
        // Every class, size, relation and object count is about equally frequent: no stream correlations.
        let set = SceneSet::new(SceneOptions::default(), Split::Val, 1).unwrap();
        let n = 12_000;
        let mut classes = [0usize; 12];
        let mut sizes = [0usize; 2];
        for index in 0..n {
            let scene = set.labelled_scene(index);
            classes[set.class_label(&scene).unwrap()] += 1;
            sizes[scene.objects[0].description.size as usize] += 1;
        }
        for count in classes {
            assert!((850..1150).contains(&count), "{classes:?}");
        }
        assert!(sizes[0].abs_diff(sizes[1]) < 600, "{sizes:?}");
        let mut relations = [0usize; 2];
        for index in 0..n {
            if let Some(relation) = set.scene(index).relation {
                relations[relation as usize] += 1;
            }
        }
        let pairs = relations[0] + relations[1];
        assert!(pairs.abs_diff(n as usize / 2) < 400, "{relations:?}");
        assert!(relations[0].abs_diff(relations[1]) < 400, "{relations:?}");
    }
}
