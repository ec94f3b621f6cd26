//! CSV/TSV collections, read as open_clip's `CsvDataset` reads them (`pd.read_csv(path, sep=...)`).

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::error::DataError;
use crate::sample::{clean_caption, ImageData, Sample};

/// Column names and separator, with open_clip's defaults: `--csv-img-key filepath`, `--csv-caption-key
/// title`, `--csv-separator '\t'`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvOptions {
    /// The column holding image paths.
    pub img_key: String,
    /// The column holding captions; `None` reads images only.
    pub caption_key: Option<String>,
    /// The field separator byte.
    pub separator: u8,
}

impl Default for CsvOptions {
    fn default() -> Self {
        Self {
            img_key: "filepath".into(),
            caption_key: Some("title".into()),
            separator: b'\t',
        }
    }
}

/// Parse a separator as given on a command line: one ASCII character, or `\t` / `tab` for a tab (a shell
/// passes `'\t'` as a backslash and a `t`).
pub fn parse_separator(given: &str) -> Result<u8, DataError> {
    match given {
        "\\t" | "tab" => Ok(b'\t'),
        s if s.len() == 1 && s.is_ascii() => Ok(s.as_bytes()[0]),
        _ => Err(DataError::Separator {
            given: given.to_string(),
        }),
    }
}

/// Yields one sample per CSV record. Relative image paths are used as given (from the working directory), as
/// open_clip does. A malformed record (wrong number of fields, invalid UTF-8) or an empty image path is an
/// error item naming the line; the records after it are still read.
pub struct CsvSource {
    path: PathBuf,
    records: csv::StringRecordsIntoIter<File>,
    img_col: usize,
    caption_col: Option<usize>,
}

impl CsvSource {
    /// Open the file and find the columns in its header.
    pub fn open(path: impl AsRef<Path>, options: &CsvOptions) -> Result<Self, DataError> {
        let text = options
            .caption_key
            .as_deref()
            .map(|key| (key, "--csv-caption-key"));
        Self::open_columns(path.as_ref(), &options.img_key, text, options.separator)
    }

    /// Open the file with `img_key` as the image column and an optional text column (the caption, or a class
    /// label), named with the command-line flag that sets it, for messages.
    pub(crate) fn open_columns(
        path: &Path,
        img_key: &str,
        text: Option<(&str, &'static str)>,
        separator: u8,
    ) -> Result<Self, DataError> {
        let path = path.to_path_buf();
        let file = File::open(&path).map_err(|e| DataError::io(&path, e))?;
        let mut reader = csv::ReaderBuilder::new()
            .delimiter(separator)
            .has_headers(true)
            .from_reader(file);
        let header: Vec<String> = reader
            .headers()
            .map_err(|e| DataError::CsvRecord {
                path: path.clone(),
                line: 1,
                detail: format!("unreadable header: {e}"),
            })?
            .iter()
            .map(str::to_string)
            .collect();
        let find = |column: &str, flag: &'static str| {
            header
                .iter()
                .position(|h| h == column)
                .ok_or_else(|| DataError::CsvColumn {
                    path: path.clone(),
                    column: column.to_string(),
                    flag,
                    available: header.clone(),
                })
        };
        let img_col = find(img_key, "--csv-img-key")?;
        let caption_col = text.map(|(key, flag)| find(key, flag)).transpose()?;
        Ok(Self {
            path,
            records: reader.into_records(),
            img_col,
            caption_col,
        })
    }

    fn error(&self, line: u64, detail: String) -> DataError {
        DataError::CsvRecord {
            path: self.path.clone(),
            line,
            detail,
        }
    }
}

impl Iterator for CsvSource {
    type Item = Result<Sample, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        let record = match self.records.next()? {
            Ok(record) => record,
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                return Some(Err(self.error(line, e.to_string())));
            }
        };
        let line = record.position().map_or(0, |p| p.line());
        let image = record.get(self.img_col).unwrap_or("").trim();
        if image.is_empty() {
            return Some(Err(self.error(line, "empty image path".into())));
        }
        let text = self
            .caption_col
            .and_then(|col| record.get(col))
            .and_then(clean_caption);
        Some(Ok(Sample {
            key: image.to_string(),
            image: ImageData::Path(PathBuf::from(image)),
            text,
        }))
    }
}
