//! Whole-file replacement that never leaves a half-written file behind.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use crate::error::{Result, RunlogError};

/// Write `bytes` to a temporary file beside `path`, fsync it, rename it over `path`, then fsync the directory
/// (so the rename itself survives a power cut). A crash at any point leaves either the old or the new file.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = parent_dir(path);
    let err = |source| RunlogError::io(path, "cannot write", source);
    let mut builder = tempfile::Builder::new();
    builder.prefix(".tmp-");
    // tempfile creates owner-only files; outputs get the usual permissions (less the umask).
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644));
    let mut temp = builder.tempfile_in(dir).map_err(err)?;
    temp.write_all(bytes).map_err(err)?;
    temp.as_file().sync_all().map_err(err)?;
    temp.persist(path).map_err(|e| err(e.error))?;
    sync_dir(dir);
    Ok(())
}

/// The directory holding `path` (`.` for a bare file name).
pub(crate) fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// Best-effort fsync of a directory: durability of a rename, not correctness, depends on it, and some
/// platforms cannot open directories at all.
pub(crate) fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}
