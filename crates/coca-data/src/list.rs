//! A text file naming one image per line.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use crate::caption::sibling_caption;
use crate::error::DataError;
use crate::sample::{ImageData, Sample};

/// Reads a file list line by line: each non-blank line is an image path (surrounding whitespace removed;
/// relative paths are used as given, i.e. from the working directory, as open_clip does with CSV paths).
/// A sibling `.txt` file is the caption, as for folders.
pub struct ListSource {
    path: PathBuf,
    reader: BufReader<File>,
    line: u64,
    buf: Vec<u8>,
    done: bool,
}

impl ListSource {
    /// Open the list file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, DataError> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|e| DataError::io(&path, e))?;
        Ok(Self {
            path,
            reader: BufReader::new(file),
            line: 0,
            buf: Vec::new(),
            done: false,
        })
    }

    fn line_error(&self, detail: String) -> DataError {
        DataError::ListLine {
            path: self.path.clone(),
            line: self.line,
            detail,
        }
    }
}

impl Iterator for ListSource {
    type Item = Result<Sample, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            self.buf.clear();
            self.line += 1;
            match self.reader.read_until(b'\n', &mut self.buf) {
                Ok(0) => {
                    self.done = true;
                    return None;
                }
                Ok(_) => {}
                // A read error would most likely repeat forever: report it once and stop.
                Err(e) => {
                    self.done = true;
                    return Some(Err(self.line_error(e.to_string())));
                }
            }
            let text = match std::str::from_utf8(&self.buf) {
                Ok(text) => text.trim(),
                Err(e) => return Some(Err(self.line_error(format!("not UTF-8 ({e})")))),
            };
            if text.is_empty() {
                continue;
            }
            let image = PathBuf::from(text);
            let key = text.to_string();
            return Some(sibling_caption(&image).map(|text| Sample {
                key,
                image: ImageData::Path(image),
                text,
            }));
        }
        None
    }
}
