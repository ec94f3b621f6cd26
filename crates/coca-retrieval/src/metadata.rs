//! The metadata of a partition, one row per embedding row, as a Parquet file with clip-retrieval's column
//! names: `image_path` and `caption`, plus coca's `key` (the sample's key in its collection), `video` (whether
//! the row is a video, whose embedding is the mean of its sampled frames') and `frames` (how many frames were
//! averaged; null for images).

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use parquet::basic::Compression;
use parquet::data_type::{BoolType, ByteArray, ByteArrayType, Int32Type};
use parquet::file::properties::WriterProperties;
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::file::writer::SerializedFileWriter;
use parquet::record::Field;
use parquet::schema::parser::parse_message_type;
use serde::Serialize;

use crate::error::RetrievalError;

/// What is known about one embedded sample.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MetadataRow {
    /// The image's path (file-based collections) or its key (tar shards), as clip-retrieval records it.
    pub image_path: Option<String>,
    /// The caption, if the sample had one.
    pub caption: Option<String>,
    /// The sample's key in its collection.
    pub key: Option<String>,
    /// Whether the sample is a video (its `image_path` names a video file, an animated GIF or a frame folder).
    pub video: bool,
    /// For a video, the number of sampled frames whose embeddings were averaged; `None` for images.
    pub frames: Option<u32>,
}

const SCHEMA: &str = "
message coca_metadata {
    OPTIONAL BYTE_ARRAY image_path (UTF8);
    OPTIONAL BYTE_ARRAY caption (UTF8);
    OPTIONAL BYTE_ARRAY key (UTF8);
    REQUIRED BOOLEAN video;
    OPTIONAL INT32 frames;
}";

/// Write `rows` as one Parquet row group (uncompressed: the crate is built without codecs to keep builds
/// fast, and every Parquet reader accepts uncompressed pages).
pub fn write_metadata<W: Write + Send>(
    w: W,
    rows: &[MetadataRow],
    path: &Path,
) -> Result<(), RetrievalError> {
    let fail = |e: parquet::errors::ParquetError| RetrievalError::Metadata {
        path: path.to_path_buf(),
        detail: e.to_string(),
    };
    let schema = Arc::new(parse_message_type(SCHEMA).map_err(fail)?);
    let props = Arc::new(
        WriterProperties::builder()
            .set_compression(Compression::UNCOMPRESSED)
            .set_created_by(format!("coca-retrieval {}", env!("CARGO_PKG_VERSION")))
            .build(),
    );
    let mut writer = SerializedFileWriter::new(w, schema, props).map_err(fail)?;
    if !rows.is_empty() {
        let columns: [fn(&MetadataRow) -> Option<&String>; 3] = [
            |r| r.image_path.as_ref(),
            |r| r.caption.as_ref(),
            |r| r.key.as_ref(),
        ];
        let mut group = writer.next_row_group().map_err(fail)?;
        for get in columns {
            let mut column = group
                .next_column()
                .map_err(fail)?
                .expect("the schema has five columns");
            // Definition level 1 marks a present value, 0 a null; only present values are passed.
            let levels: Vec<i16> = rows.iter().map(|r| i16::from(get(r).is_some())).collect();
            let values: Vec<ByteArray> = rows
                .iter()
                .filter_map(get)
                .map(|s| ByteArray::from(s.as_bytes()))
                .collect();
            column
                .typed::<ByteArrayType>()
                .write_batch(&values, Some(&levels), None)
                .map_err(fail)?;
            column.close().map_err(fail)?;
        }
        let mut column = group
            .next_column()
            .map_err(fail)?
            .expect("the schema has a video column");
        let videos: Vec<bool> = rows.iter().map(|r| r.video).collect();
        column
            .typed::<BoolType>()
            .write_batch(&videos, None, None)
            .map_err(fail)?;
        column.close().map_err(fail)?;
        let mut column = group
            .next_column()
            .map_err(fail)?
            .expect("the schema has a frames column");
        let levels: Vec<i16> = rows.iter().map(|r| i16::from(r.frames.is_some())).collect();
        // Parquet has no unsigned 32-bit physical type; frame counts are far below i32::MAX.
        let frames: Vec<i32> = rows
            .iter()
            .filter_map(|r| r.frames)
            .map(|f| i32::try_from(f).unwrap_or(i32::MAX))
            .collect();
        column
            .typed::<Int32Type>()
            .write_batch(&frames, Some(&levels), None)
            .map_err(fail)?;
        column.close().map_err(fail)?;
        group.close().map_err(fail)?;
    }
    writer.close().map_err(fail)?;
    Ok(())
}

/// Read every row of a metadata file. Columns other than `image_path`, `caption`, `key`, `video` and
/// `frames` (clip-retrieval adds one per JSON field) are ignored; missing ones read as `None` (`video`: false,
/// as in files written before videos were embedded).
pub fn read_metadata(path: &Path) -> Result<Vec<MetadataRow>, RetrievalError> {
    let fail = |e: parquet::errors::ParquetError| RetrievalError::Metadata {
        path: path.to_path_buf(),
        detail: e.to_string(),
    };
    let file = File::open(path).map_err(|e| RetrievalError::io(path, e))?;
    let reader = SerializedFileReader::new(file).map_err(fail)?;
    let mut rows = Vec::with_capacity(reader.metadata().file_metadata().num_rows().max(0) as usize);
    for row in reader {
        let row = row.map_err(fail)?;
        let mut out = MetadataRow::default();
        for (name, field) in row.get_column_iter() {
            match (name.as_str(), field) {
                ("video", Field::Bool(b)) => {
                    out.video = *b;
                    continue;
                }
                ("frames", Field::Int(n)) => {
                    out.frames = u32::try_from(*n).ok();
                    continue;
                }
                _ => {}
            }
            let slot = match name.as_str() {
                "image_path" => &mut out.image_path,
                "caption" => &mut out.caption,
                "key" => &mut out.key,
                _ => continue,
            };
            *slot = match field {
                Field::Str(s) => Some(s.clone()),
                Field::Null => None,
                other => Some(other.to_string()),
            };
        }
        rows.push(out);
    }
    Ok(rows)
}

/// Number of rows, from the file footer alone.
pub fn metadata_rows(path: &Path) -> Result<usize, RetrievalError> {
    let file = File::open(path).map_err(|e| RetrievalError::io(path, e))?;
    let reader = SerializedFileReader::new(file).map_err(|e| RetrievalError::Metadata {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })?;
    Ok(reader.metadata().file_metadata().num_rows().max(0) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_rows_with_nulls_and_empty_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metadata_0.parquet");
        let rows = vec![
            MetadataRow {
                image_path: Some("imgs/a.jpg".into()),
                caption: Some("a cat, \"quoted\" — ünïcode".into()),
                key: Some("a".into()),
                ..MetadataRow::default()
            },
            MetadataRow {
                image_path: Some("imgs/b.png".into()),
                caption: None,
                key: Some("b".into()),
                ..MetadataRow::default()
            },
            MetadataRow {
                image_path: Some("clips/c.mp4".into()),
                caption: Some("a clip".into()),
                key: Some("c".into()),
                video: true,
                frames: Some(8),
            },
        ];
        write_metadata(File::create(&path).unwrap(), &rows, &path).unwrap();
        assert_eq!(read_metadata(&path).unwrap(), rows);
        assert_eq!(metadata_rows(&path).unwrap(), 3);

        write_metadata(File::create(&path).unwrap(), &[], &path).unwrap();
        assert!(read_metadata(&path).unwrap().is_empty());
        assert_eq!(metadata_rows(&path).unwrap(), 0);
    }

    #[test]
    fn garbage_is_reported_with_the_file_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metadata_3.parquet");
        std::fs::write(&path, b"not parquet at all").unwrap();
        let err = read_metadata(&path).unwrap_err().to_string();
        assert!(err.contains("metadata_3.parquet"), "{err}");
    }
}
