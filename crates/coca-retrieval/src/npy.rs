//! NumPy `.npy` files holding a 2-D float16 or float32 matrix (what `np.save` writes for clip-retrieval's
//! `img_emb_N.npy`): a small header, then the rows, little-endian, in C order.

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::Path;

use half::f16;
use serde::{Deserialize, Serialize};

use crate::error::RetrievalError;

/// The six bytes every `.npy` file starts with.
const MAGIC: &[u8] = b"\x93NUMPY";

/// numpy aligns the data to this many bytes (header padded with spaces).
const ALIGN: usize = 64;

/// How embeddings are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EmbeddingDtype {
    /// IEEE half precision, as clip-retrieval stores embeddings (2 bytes a value; cosine scores change by
    /// about 1e-3 at most, below what matters for ranking).
    F16,
    /// Single precision, exactly what the model computed.
    F32,
}

impl EmbeddingDtype {
    /// numpy's dtype string.
    pub fn descr(self) -> &'static str {
        match self {
            EmbeddingDtype::F16 => "<f2",
            EmbeddingDtype::F32 => "<f4",
        }
    }

    /// Bytes per value.
    pub fn size(self) -> usize {
        match self {
            EmbeddingDtype::F16 => 2,
            EmbeddingDtype::F32 => 4,
        }
    }

    /// Parse `f16`/`float16`/`fp16` or `f32`/`float32`/`fp32`.
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "f16" | "fp16" | "float16" | "half" => Some(Self::F16),
            "f32" | "fp32" | "float32" | "float" => Some(Self::F32),
            _ => None,
        }
    }
}

impl std::fmt::Display for EmbeddingDtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EmbeddingDtype::F16 => "float16",
            EmbeddingDtype::F32 => "float32",
        })
    }
}

/// A row-major matrix read from a `.npy` file, widened to f32.
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix {
    /// Number of rows.
    pub rows: usize,
    /// Values per row.
    pub cols: usize,
    /// `rows * cols` values.
    pub data: Vec<f32>,
}

impl Matrix {
    /// Row `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.cols..(i + 1) * self.cols]
    }
}

/// Write `data` (`rows × cols`, row-major) as a version 1.0 `.npy` file of `dtype`.
pub fn write_npy<W: Write>(
    w: &mut W,
    data: &[f32],
    rows: usize,
    cols: usize,
    dtype: EmbeddingDtype,
) -> std::io::Result<()> {
    assert_eq!(
        data.len(),
        rows * cols,
        "matrix data does not match its shape"
    );
    let mut header = format!(
        "{{'descr': '{}', 'fortran_order': False, 'shape': ({rows}, {cols}), }}",
        dtype.descr()
    );
    // magic (6) + version (2) + header length (2) + header, padded so the data starts aligned.
    let unpadded = MAGIC.len() + 4 + header.len() + 1;
    header.push_str(&" ".repeat(unpadded.next_multiple_of(ALIGN) - unpadded));
    header.push('\n');
    w.write_all(MAGIC)?;
    w.write_all(&[1, 0])?;
    w.write_all(&(header.len() as u16).to_le_bytes())?;
    w.write_all(header.as_bytes())?;
    match dtype {
        EmbeddingDtype::F32 => {
            for v in data {
                w.write_all(&v.to_le_bytes())?;
            }
        }
        EmbeddingDtype::F16 => {
            for v in data {
                w.write_all(&f16::from_f32(*v).to_le_bytes())?;
            }
        }
    }
    Ok(())
}

/// Shape and dtype from a header.
struct Header {
    dtype: EmbeddingDtype,
    rows: usize,
    cols: usize,
}

fn read_header(path: &Path, r: &mut impl Read) -> Result<Header, RetrievalError> {
    let bad = |detail: String| RetrievalError::Npy {
        path: path.to_path_buf(),
        detail,
    };
    let io = |e: std::io::Error| RetrievalError::io(path, e);
    let mut start = [0u8; 8];
    r.read_exact(&mut start).map_err(io)?;
    if &start[..6] != MAGIC {
        return Err(bad("missing the \\x93NUMPY magic".into()));
    }
    let header_len = match start[6] {
        1 => {
            let mut n = [0u8; 2];
            r.read_exact(&mut n).map_err(io)?;
            u16::from_le_bytes(n) as usize
        }
        2 | 3 => {
            let mut n = [0u8; 4];
            r.read_exact(&mut n).map_err(io)?;
            u32::from_le_bytes(n) as usize
        }
        v => return Err(bad(format!("unknown format version {v}"))),
    };
    if header_len > 1 << 16 {
        return Err(bad(format!("header of {header_len} bytes")));
    }
    let mut text = vec![0u8; header_len];
    r.read_exact(&mut text).map_err(io)?;
    let text = String::from_utf8_lossy(&text);
    let value = |key: &str| -> Option<&str> {
        let at = text.find(&format!("'{key}':"))? + key.len() + 3;
        Some(text[at..].trim_start())
    };
    let dtype = match value("descr") {
        Some(v) if v.starts_with("'<f2'") => EmbeddingDtype::F16,
        Some(v) if v.starts_with("'<f4'") => EmbeddingDtype::F32,
        _ => return Err(bad(format!("dtype is not <f2 or <f4 in {}", text.trim()))),
    };
    if !value("fortran_order").is_some_and(|v| v.starts_with("False")) {
        return Err(bad("Fortran-ordered arrays are not supported".into()));
    }
    let shape = value("shape")
        .and_then(|v| v.strip_prefix('('))
        .and_then(|v| v.split(')').next())
        .ok_or_else(|| bad(format!("no shape in {}", text.trim())))?;
    let dims: Vec<usize> = shape
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| d.parse().map_err(|_| bad(format!("bad shape ({shape})"))))
        .collect::<Result<_, _>>()?;
    let [rows, cols] = dims[..] else {
        return Err(bad(format!("shape ({shape}) is not 2-D")));
    };
    Ok(Header { dtype, rows, cols })
}

/// Rows and columns of a `.npy` file, from its header alone.
pub fn npy_shape(path: &Path) -> Result<(usize, usize), RetrievalError> {
    let file = File::open(path).map_err(|e| RetrievalError::io(path, e))?;
    let header = read_header(path, &mut BufReader::new(file))?;
    Ok((header.rows, header.cols))
}

/// Read a whole `.npy` embedding file, widening float16 to f32.
pub fn read_npy(path: &Path) -> Result<Matrix, RetrievalError> {
    let file = File::open(path).map_err(|e| RetrievalError::io(path, e))?;
    let mut r = BufReader::new(file);
    let Header { dtype, rows, cols } = read_header(path, &mut r)?;
    let n = rows.checked_mul(cols).ok_or_else(|| RetrievalError::Npy {
        path: path.to_path_buf(),
        detail: format!("shape ({rows}, {cols}) is too large"),
    })?;
    let mut bytes = Vec::new();
    r.read_to_end(&mut bytes)
        .map_err(|e| RetrievalError::io(path, e))?;
    if bytes.len() != n * dtype.size() {
        return Err(RetrievalError::Npy {
            path: path.to_path_buf(),
            detail: format!(
                "{} data bytes for shape ({rows}, {cols}) of {dtype}; expected {} (truncated?)",
                bytes.len(),
                n * dtype.size()
            ),
        });
    }
    let data = match dtype {
        EmbeddingDtype::F32 => bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        EmbeddingDtype::F16 => bytes
            .chunks_exact(2)
            .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
    };
    Ok(Matrix { rows, cols, data })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_both_dtypes_with_an_aligned_header() {
        let dir = tempfile::tempdir().unwrap();
        let data = [0.5f32, -0.25, 1.0, 0.1, 0.2, 0.3];
        for dtype in [EmbeddingDtype::F16, EmbeddingDtype::F32] {
            let path = dir.path().join(format!("{dtype}.npy"));
            let mut bytes = Vec::new();
            write_npy(&mut bytes, &data, 2, 3, dtype).unwrap();
            assert_eq!((bytes.len() - 6 * dtype.size()) % ALIGN, 0);
            assert_eq!(bytes[bytes.len() - 6 * dtype.size() - 1], b'\n');
            std::fs::write(&path, &bytes).unwrap();
            let m = read_npy(&path).unwrap();
            assert_eq!((m.rows, m.cols), (2, 3));
            assert_eq!(npy_shape(&path).unwrap(), (2, 3));
            for (a, b) in m.data.iter().zip(&data) {
                let tol = if dtype == EmbeddingDtype::F16 {
                    1e-3
                } else {
                    0.0
                };
                assert!((a - b).abs() <= tol, "{dtype}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn matches_numpy_bytes() {
        // np.save(f, np.array([[1, 2]], dtype='<f2')) writes exactly these bytes (numpy 2.x).
        let mut bytes = Vec::new();
        write_npy(&mut bytes, &[1.0, 2.0], 1, 2, EmbeddingDtype::F16).unwrap();
        let header = "{'descr': '<f2', 'fortran_order': False, 'shape': (1, 2), }";
        assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00");
        assert_eq!(u16::from_le_bytes([bytes[8], bytes[9]]), 118);
        assert!(bytes[10..].starts_with(header.as_bytes()));
        assert_eq!(&bytes[128..], &[0x00, 0x3c, 0x00, 0x40]);
    }

    #[test]
    fn damaged_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("img_emb_0.npy");
        let mut bytes = Vec::new();
        write_npy(&mut bytes, &[1.0; 8], 2, 4, EmbeddingDtype::F32).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
        let err = read_npy(&path).unwrap_err().to_string();
        assert!(
            err.contains("img_emb_0.npy") && err.contains("truncated"),
            "{err}"
        );
        std::fs::write(&path, b"hello").unwrap();
        let err = read_npy(&path).unwrap_err().to_string();
        assert!(err.contains("img_emb_0.npy"), "{err}");
    }
}
