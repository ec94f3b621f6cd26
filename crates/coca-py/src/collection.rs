//! `coca.write_collection`: embeddings computed in Python written in clip-retrieval's layout by the writer
//! `coca embed --output-dir` uses ([`coca_retrieval::EmbeddingOutput`]), so `coca index`, `coca search`,
//! clip-retrieval and autofaiss read them as they read the CLI's.

use std::collections::BTreeMap;
use std::path::PathBuf;

use coca_retrieval::{
    EmbeddingDtype, EmbeddingOutput, Manifest, MetadataRow, PartitionData, WorkerReport,
    FORMAT_VERSION,
};
use numpy::{PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::errors::{without_gil, Error, Result};

/// Rows and width of an optional embedding matrix, and its values row-major.
fn embeddings(
    name: &str,
    array: Option<PyReadonlyArray2<'_, f32>>,
) -> Result<Option<(usize, usize, Vec<f32>)>> {
    let Some(array) = array else { return Ok(None) };
    let (rows, dim) = (array.shape()[0], array.shape()[1]);
    if dim == 0 {
        return Err(Error::value(format!("{name}: the embeddings have width 0")));
    }
    let values: Vec<f32> = match array.as_slice() {
        Ok(slice) => slice.to_vec(),
        Err(_) => array.as_array().iter().copied().collect(),
    };
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(Error::value(format!(
            "{name}: row {} holds NaN or an infinite value",
            i / dim
        )));
    }
    Ok(Some((rows, dim, values)))
}

/// Write embeddings in clip-retrieval's layout (see `coca.write_collection`); returns a summary dict.
#[pyfunction]
#[pyo3(signature = (
    out_dir, image_embeddings=None, text_embeddings=None, image_paths=None, captions=None, keys=None,
    partition_size=10_000, dtype="float16", settings=None
))]
#[allow(clippy::too_many_arguments)]
pub fn write_collection<'py>(
    py: Python<'py>,
    out_dir: PathBuf,
    image_embeddings: Option<PyReadonlyArray2<'py, f32>>,
    text_embeddings: Option<PyReadonlyArray2<'py, f32>>,
    image_paths: Option<Vec<String>>,
    captions: Option<Vec<Option<String>>>,
    keys: Option<Vec<String>>,
    partition_size: usize,
    dtype: &str,
    settings: Option<BTreeMap<String, String>>,
) -> PyResult<Bound<'py, PyDict>> {
    if partition_size == 0 {
        return Err(Error::value("partition_size must be at least 1").into());
    }
    let dtype = match dtype {
        "float16" | "f16" => EmbeddingDtype::F16,
        "float32" | "f32" => EmbeddingDtype::F32,
        other => {
            return Err(Error::value(format!(
                "dtype {other:?} is not \"float16\" (clip-retrieval's) or \"float32\""
            ))
            .into())
        }
    };
    let image = embeddings("image_embeddings", image_embeddings)?;
    let text = embeddings("text_embeddings", text_embeddings)?;
    let (rows, dim) = match (&image, &text) {
        (None, None) => {
            return Err(
                Error::value("give image_embeddings, text_embeddings or both to write").into(),
            )
        }
        (Some((n, d, _)), None) | (None, Some((n, d, _))) => (*n, *d),
        (Some((n, d, _)), Some((tn, td, _))) => {
            if (n, d) != (tn, td) {
                return Err(Error::value(format!(
                    "image_embeddings are ({n}, {d}) but text_embeddings ({tn}, {td}): they must be row-aligned \
                     and of one width"
                ))
                .into());
            }
            (*n, *d)
        }
    };
    let check_len = |name: &str, len: Option<usize>| -> Result<()> {
        match len {
            Some(len) if len != rows => Err(Error::value(format!(
                "{name} has {len} entries but the embeddings have {rows} rows"
            ))),
            _ => Ok(()),
        }
    };
    check_len("image_paths", image_paths.as_ref().map(Vec::len))?;
    check_len("captions", captions.as_ref().map(Vec::len))?;
    check_len("keys", keys.as_ref().map(Vec::len))?;

    let mut recorded: BTreeMap<String, serde_json::Value> = settings
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, serde_json::Value::String(v)))
        .collect();
    // A rerun into the same folder must describe the same data, or it is refused as the CLI refuses one.
    recorded.insert("input".into(), "python".into());
    recorded.insert("rows".into(), rows.into());
    let manifest = Manifest {
        format: FORMAT_VERSION,
        partition_size,
        dim,
        dtype,
        image_embeddings: image.is_some(),
        text_embeddings: text.is_some(),
        settings: recorded,
    };
    let partitions = rows.div_ceil(partition_size);
    without_gil(py, || {
        let mut output = EmbeddingOutput::create_or_resume(&out_dir, manifest)?;
        for partition in 0..partitions {
            let range = partition * partition_size..((partition + 1) * partition_size).min(rows);
            let mut data = PartitionData::default();
            for i in range {
                let cols = i * dim..(i + 1) * dim;
                let image_path = image_paths.as_ref().map(|p| p[i].clone());
                data.push(
                    image.as_ref().map(|(_, _, v)| &v[cols.clone()]),
                    text.as_ref().map(|(_, _, v)| &v[cols.clone()]),
                    MetadataRow {
                        // As `coca embed --input-list`: a sample's key is its path unless given.
                        key: keys.as_ref().map(|k| k[i].clone()).or(image_path.clone()),
                        image_path,
                        caption: captions.as_ref().and_then(|c| c[i].clone()),
                        video: false,
                        frames: None,
                    },
                );
            }
            output.write_partition(partition, &data)?;
        }
        WorkerReport {
            worker: 0,
            workers: 1,
            input_items: rows,
            partitions,
            checkpoint_sha256: None,
        }
        .write(output.layout())?;
        Ok(())
    })?;
    let summary = PyDict::new(py);
    summary.set_item("output_dir", out_dir)?;
    summary.set_item("rows", rows)?;
    summary.set_item("partitions", partitions)?;
    summary.set_item("dim", dim)?;
    summary.set_item("dtype", dtype.to_string())?;
    summary.set_item("image_embeddings", image.is_some())?;
    summary.set_item("text_embeddings", text.is_some())?;
    Ok(summary)
}
