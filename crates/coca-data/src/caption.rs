//! Sibling caption files: `dir/cat.jpg` is captioned by `dir/cat.txt`.

use std::path::Path;

use crate::error::DataError;
use crate::sample::clean_caption;

/// Read the caption beside `image`, if there is one. A missing file is no caption; an unreadable or non-UTF-8
/// one is an error for this sample.
pub(crate) fn sibling_caption(image: &Path) -> Result<Option<String>, DataError> {
    let path = image.with_extension("txt");
    match std::fs::read(&path) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(text) => Ok(clean_caption(&text)),
            Err(e) => Err(DataError::Caption {
                path,
                detail: format!("not UTF-8 ({e})"),
            }),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(DataError::Caption {
            path,
            detail: e.to_string(),
        }),
    }
}
