//! The crate's error type.

use std::path::Path;

/// Name used in error messages for images decoded from memory without a
/// caller-supplied name.
pub const BYTES_NAME: &str = "<bytes>";

/// Why an image could not be loaded. Every message starts with the path (or
/// the name given to [`crate::decode_rgb`], e.g. [`BYTES_NAME`]) so batch
/// failures can be traced to their input.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImageError {
    /// The file does not exist.
    #[error("{name}: no such file")]
    NotFound {
        /// Path of the missing file.
        name: String,
    },
    /// The file exists but could not be read.
    #[error("{name}: cannot read file: {source}")]
    Io {
        /// Path of the file.
        name: String,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The input holds no bytes at all.
    #[error("{name}: empty file, not an image")]
    Empty {
        /// Path or name of the input.
        name: String,
    },
    /// The bytes are not in a supported image format, or use a feature of
    /// one that this crate does not decode.
    #[error("{name}: unsupported image format: {detail}")]
    Unsupported {
        /// Path or name of the input.
        name: String,
        /// What was recognised or missing.
        detail: String,
    },
    /// The image is damaged or not what its header claims.
    #[error("{name}: corrupt or unreadable image: {detail}")]
    Corrupt {
        /// Path or name of the input.
        name: String,
        /// What went wrong.
        detail: String,
    },
    /// The image data stops before the image is complete (PIL's "image
    /// file is truncated").
    #[error("{name}: truncated image: {detail}")]
    Truncated {
        /// Path or name of the input.
        name: String,
        /// Where the data ran out.
        detail: String,
    },
    /// The image claims more pixels than the decoding budget allows
    /// ([`crate::DecodeLimits`]); refused before its pixels are allocated.
    #[error(
        "{name}: image too large: {width}x{height} is {} pixels, above the limit of {limit} pixels \
         (--max-image-pixels)",
        width.saturating_mul(*height)
    )]
    TooLarge {
        /// Path or name of the input.
        name: String,
        /// Claimed width.
        width: u64,
        /// Claimed height.
        height: u64,
        /// The pixel limit it exceeds.
        limit: u64,
    },
    /// The image is within the pixel limit, but decoding it must hold more
    /// working memory than the limit allows (1.5 times the RGB size of the
    /// limit's pixels): a progressive JPEG keeps all its coefficients.
    #[error(
        "{name}: image too large: decoding the {width}x{height} image keeps all its coefficients, \
         as much memory as {pixels} pixels may use, above the limit of {limit} pixels \
         (--max-image-pixels)"
    )]
    TooMuchMemory {
        /// Path or name of the input.
        name: String,
        /// Claimed width.
        width: u64,
        /// Claimed height.
        height: u64,
        /// The pixels whose decoding budget its working memory uses up.
        pixels: u64,
        /// The pixel limit it exceeds.
        limit: u64,
    },
    /// The image declares a zero width or height.
    #[error("{name}: image has zero size ({width}x{height})")]
    ZeroSize {
        /// Path or name of the input.
        name: String,
        /// Declared width.
        width: u32,
        /// Declared height.
        height: u32,
    },
}

impl ImageError {
    /// Maps an error from opening or reading `path`.
    pub(crate) fn from_io(path: &Path, source: std::io::Error) -> Self {
        let name = path.display().to_string();
        if source.kind() == std::io::ErrorKind::NotFound {
            Self::NotFound { name }
        } else {
            Self::Io { name, source }
        }
    }

    /// The path or name of the input this error is about.
    pub fn name(&self) -> &str {
        match self {
            Self::NotFound { name }
            | Self::Io { name, .. }
            | Self::Empty { name }
            | Self::Unsupported { name, .. }
            | Self::Corrupt { name, .. }
            | Self::Truncated { name, .. }
            | Self::TooLarge { name, .. }
            | Self::TooMuchMemory { name, .. }
            | Self::ZeroSize { name, .. } => name,
        }
    }
}
