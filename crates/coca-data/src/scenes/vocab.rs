//! The words of the scene language: shapes, colours, sizes and relations, each with its one spelling.

use std::fmt;

/// A shape that can be drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Shape {
    /// A disc.
    Circle,
    /// An axis-aligned square.
    Square,
    /// An equilateral triangle pointing up.
    Triangle,
    /// A square standing on a corner (not in the default set: at small sizes it is the hardest to tell apart).
    Diamond,
}

impl Shape {
    /// Every shape, in a fixed order.
    pub const ALL: [Shape; 4] = [
        Shape::Circle,
        Shape::Square,
        Shape::Triangle,
        Shape::Diamond,
    ];

    /// The word used in captions.
    pub fn name(self) -> &'static str {
        match self {
            Shape::Circle => "circle",
            Shape::Square => "square",
            Shape::Triangle => "triangle",
            Shape::Diamond => "diamond",
        }
    }

    /// The shape a caption word names.
    pub fn from_name(word: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == word)
    }
}

/// A named colour and the RGB value it is drawn with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Colour {
    /// `(215, 40, 40)`.
    Red,
    /// `(40, 165, 60)`.
    Green,
    /// `(40, 80, 215)`.
    Blue,
    /// `(235, 200, 25)`.
    Yellow,
    /// `(135, 55, 185)`.
    Purple,
    /// `(245, 130, 25)`.
    Orange,
    /// `(25, 185, 200)`.
    Cyan,
    /// `(35, 35, 35)`.
    Black,
}

impl Colour {
    /// Every colour, in a fixed order.
    pub const ALL: [Colour; 8] = [
        Colour::Red,
        Colour::Green,
        Colour::Blue,
        Colour::Yellow,
        Colour::Purple,
        Colour::Orange,
        Colour::Cyan,
        Colour::Black,
    ];

    /// The word used in captions.
    pub fn name(self) -> &'static str {
        match self {
            Colour::Red => "red",
            Colour::Green => "green",
            Colour::Blue => "blue",
            Colour::Yellow => "yellow",
            Colour::Purple => "purple",
            Colour::Orange => "orange",
            Colour::Cyan => "cyan",
            Colour::Black => "black",
        }
    }

    /// The colour a caption word names.
    pub fn from_name(word: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == word)
    }

    /// The nominal RGB value; drawn objects deviate from it by at most
    /// [`SceneOptions::colour_jitter`](super::SceneOptions::colour_jitter) per channel.
    /// The values are saturated and far apart so that every pair stays distinct under jitter and
    /// against the pale backgrounds.
    pub fn rgb(self) -> [u8; 3] {
        match self {
            Colour::Red => [215, 40, 40],
            Colour::Green => [40, 165, 60],
            Colour::Blue => [40, 80, 215],
            Colour::Yellow => [235, 200, 25],
            Colour::Purple => [135, 55, 185],
            Colour::Orange => [245, 130, 25],
            Colour::Cyan => [25, 185, 200],
            Colour::Black => [35, 35, 35],
        }
    }
}

/// An object's size class. The radii of the two classes are far enough apart (at least 1.5×) to be told
/// apart at a glance at any image size; see [`SceneOptions`](super::SceneOptions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Size {
    /// Radius in [`SMALL_RADIUS`](super::SMALL_RADIUS) of the image side.
    Small,
    /// Radius in [`LARGE_RADIUS`](super::LARGE_RADIUS) of the image side.
    Large,
}

impl Size {
    /// Both sizes, in a fixed order.
    pub const ALL: [Size; 2] = [Size::Small, Size::Large];

    /// The word used in captions.
    pub fn name(self) -> &'static str {
        match self {
            Size::Small => "small",
            Size::Large => "large",
        }
    }

    /// The size a caption word names.
    pub fn from_name(word: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == word)
    }
}

/// How the second object of a two-object scene lies relative to the first. The caption always names the
/// left (or upper) object first, so one relation per axis suffices and every scene has one caption.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Relation {
    /// The first object is left of the second (horizontal layout).
    LeftOf,
    /// The first object is above the second (vertical layout).
    Above,
}

impl Relation {
    /// Both relations, in a fixed order.
    pub const ALL: [Relation; 2] = [Relation::LeftOf, Relation::Above];

    /// The words used in captions.
    pub fn phrase(self) -> &'static str {
        match self {
            Relation::LeftOf => "left of",
            Relation::Above => "above",
        }
    }
}

/// What a caption says about one object: its size, colour and shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Description {
    /// Small or large.
    pub size: Size,
    /// The named colour.
    pub colour: Colour,
    /// The shape.
    pub shape: Shape,
}

impl fmt::Display for Description {
    /// `a small red circle`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "a {} {} {}",
            self.size.name(),
            self.colour.name(),
            self.shape.name()
        )
    }
}

/// Everything a caption says: one object, or two objects and their relation. Its `Display` is the canonical
/// caption and [`parse_caption`] is its inverse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CaptionParts {
    /// The only object, or the left/upper one of two.
    pub first: Description,
    /// The relation and the right/lower object, for two-object scenes.
    pub second: Option<(Relation, Description)>,
}

impl fmt::Display for CaptionParts {
    /// `a small red circle` or `a small red circle left of a large blue square`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.first)?;
        if let Some((relation, second)) = &self.second {
            write!(f, " {} {second}", relation.phrase())?;
        }
        Ok(())
    }
}

/// Parse a caption in the canonical form back into its parts; `None` if it is not exactly one (extra or missing
/// words, unknown words, other spacing or case). Useful to score generated captions attribute by attribute.
///
/// ```
/// use coca_data::scenes::{parse_caption, Colour, Relation, Shape, Size};
/// let parts = parse_caption("a small red circle left of a large blue square").unwrap();
/// assert_eq!(parts.first.colour, Colour::Red);
/// let (relation, second) = parts.second.unwrap();
/// assert_eq!((relation, second.size, second.shape), (Relation::LeftOf, Size::Large, Shape::Square));
/// assert!(parse_caption("a red circle").is_none());
/// ```
pub fn parse_caption(caption: &str) -> Option<CaptionParts> {
    let words: Vec<&str> = caption.split(' ').collect();
    let object = |w: &[&str]| -> Option<Description> {
        match w {
            ["a", size, colour, shape] => Some(Description {
                size: Size::from_name(size)?,
                colour: Colour::from_name(colour)?,
                shape: Shape::from_name(shape)?,
            }),
            _ => None,
        }
    };
    let (first, rest) = (words.get(..4)?, &words[4..]);
    let first = object(first)?;
    let second = match rest {
        [] => None,
        ["left", "of", tail @ ..] => Some((Relation::LeftOf, object(tail)?)),
        ["above", tail @ ..] => Some((Relation::Above, object(tail)?)),
        _ => return None,
    };
    Some(CaptionParts { first, second })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for s in Shape::ALL {
            assert_eq!(Shape::from_name(s.name()), Some(s));
        }
        for c in Colour::ALL {
            assert_eq!(Colour::from_name(c.name()), Some(c));
        }
        for s in Size::ALL {
            assert_eq!(Size::from_name(s.name()), Some(s));
        }
    }

    #[test]
    fn parse_rejects_near_misses() {
        for bad in [
            "",
            "a small red circle ",
            "A small red circle",
            "a small red circle.",
            "a small red circle left a large blue square",
            "a small red circle above a large blue",
            "a small red circle below a large blue square",
            "a tiny red circle",
            "a small red circle above a large blue square a small red circle",
        ] {
            assert!(parse_caption(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn colours_are_far_apart() {
        // Every pair differs by more than twice the largest jitter in some channel.
        for (i, a) in Colour::ALL.iter().enumerate() {
            for b in &Colour::ALL[i + 1..] {
                let (x, y) = (a.rgb(), b.rgb());
                let d = (0..3).map(|k| x[k].abs_diff(y[k])).max().unwrap();
                assert!(d > 60, "{a:?} vs {b:?}: {d}");
            }
        }
    }
}
