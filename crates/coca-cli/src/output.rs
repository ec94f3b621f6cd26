//! Writing results: JSON to stdout, or atomically to a file.

use std::io::Write;
use std::path::Path;

use anyhow::Result;

/// Pretty JSON to `path` (temp file + rename, so an interrupted write leaves nothing behind) or to stdout.
pub fn write_json(value: &serde_json::Value, path: Option<&Path>) -> Result<()> {
    match path {
        Some(path) => {
            coca_fs::write_atomic(path, |w| -> Result<()> {
                serde_json::to_writer(&mut *w, value)?;
                w.write_all(b"\n")?;
                Ok(())
            })?;
            tracing::info!("wrote {}", path.display());
        }
        None => {
            let stdout = std::io::stdout();
            let mut lock = stdout.lock();
            serde_json::to_writer(&mut lock, value)?;
            lock.write_all(b"\n")?;
        }
    }
    Ok(())
}
