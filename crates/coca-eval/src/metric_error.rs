//! Errors of the ranking metrics ([`crate::classification`], [`crate::retrieval`]).

/// Why a ranking metric could not be computed; each message names the offending row or label.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetricError {
    /// Nothing to evaluate.
    #[error("no {what} to evaluate")]
    Empty {
        /// What was missing (`samples`, `images`, `texts`).
        what: &'static str,
    },
    /// A score matrix whose length is not rows × columns.
    #[error("{what}: {len} scores do not form a matrix of {rows} rows × {cols} columns")]
    Shape {
        /// Which matrix.
        what: &'static str,
        /// Its length.
        len: usize,
        /// Rows expected.
        rows: usize,
        /// Columns expected.
        cols: usize,
    },
    /// A label (class or paired image) outside the matrix.
    #[error("{what} {index}: label {label} is out of range (there are {count})")]
    Label {
        /// What is labelled (`sample`, `text`).
        what: &'static str,
        /// Position of the labelled item.
        index: usize,
        /// The label given.
        label: usize,
        /// How many labels exist.
        count: usize,
    },
    /// A NaN score, which has no rank.
    #[error("{what} {index} has a NaN score")]
    NotANumber {
        /// Which kind of row (`sample`, `text`, `image`).
        what: &'static str,
        /// The row.
        index: usize,
    },
    /// An image that no text describes.
    #[error("image {index} has no caption (every image needs at least one)")]
    NoCaption {
        /// The image.
        index: usize,
    },
}
