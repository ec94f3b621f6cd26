//! All-or-nothing file writes, the one way coca replaces a file: a reader sees the old
//! file or the complete new one, never a half-written file, even if the writer fails,
//! panics or the machine crashes.
//!
//! The data goes to a temporary file in the destination's directory (a rename is only
//! atomic within one filesystem), is flushed and fsynced, and then renamed over the
//! destination. On any failure the temporary file is removed.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Writing a file failed; the destination was left untouched.
#[derive(Debug, thiserror::Error)]
#[error("failed to write '{}' (the file was left untouched): {source}", path.display())]
pub struct WriteError {
    /// The destination file.
    pub path: PathBuf,
    /// The underlying I/O error.
    #[source]
    pub source: io::Error,
}

/// Lets closures that work in `std::io::Result` be passed to [`write_atomic`]; the message, which names
/// the file, and the error kind (e.g. `StorageFull`) are kept.
impl From<WriteError> for io::Error {
    fn from(err: WriteError) -> Self {
        io::Error::new(err.source.kind(), err)
    }
}

/// Write `path` atomically: `write` fills a buffered writer on a temporary file,
/// which replaces `path` only if `write` succeeds and the data reached the disk.
///
/// If `write` returns an error (or panics), or flushing/syncing/renaming fails, the
/// temporary file is deleted and `path` keeps its old content (or stays absent).
/// Permissions of an existing destination are kept. The closure's error type only
/// needs `From<WriteError>`, so it can be `std::io::Error`, `anyhow::Error` or a
/// crate's own error type.
///
/// ```no_run
/// use std::io::Write;
/// coca_fs::write_atomic("out/config.json", |w| -> std::io::Result<()> {
///     w.write_all(b"{}")
/// })?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn write_atomic<T, E, F>(path: impl AsRef<Path>, write: F) -> Result<T, E>
where
    F: FnOnce(&mut BufWriter<File>) -> Result<T, E>,
    E: From<WriteError>,
{
    let path = path.as_ref();
    let failed = |source: io::Error| WriteError {
        path: path.to_path_buf(),
        source,
    };
    let mut temp = TempFile::create_beside(path).map_err(failed)?;
    let value = write(&mut temp.writer)?;
    temp.commit(path).map_err(failed)?;
    Ok(value)
}

/// Replace `path` with `bytes`, all or nothing (see [`write_atomic`]).
pub fn write_bytes_atomic(path: impl AsRef<Path>, bytes: &[u8]) -> Result<(), WriteError> {
    let path = path.as_ref();
    write_atomic(path, |w| {
        w.write_all(bytes).map_err(|source| WriteError {
            path: path.to_path_buf(),
            source,
        })
    })
}

/// A temporary file that deletes itself unless committed.
struct TempFile {
    path: PathBuf,
    writer: BufWriter<File>,
    committed: bool,
}

/// Distinguishes temporary files of concurrent writes within one process.
static COUNTER: AtomicU64 = AtomicU64::new(0);

impl TempFile {
    /// Create `.<name>.tmp.<pid>.<n>` next to `dest`.
    fn create_beside(dest: &Path) -> io::Result<Self> {
        let name = dest.file_name().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "the path does not name a file")
        })?;
        let dir = match dest.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        let mut attempts = 0;
        loop {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let mut temp_name = std::ffi::OsString::from(".");
            temp_name.push(name);
            temp_name.push(format!(".tmp.{}.{n}", std::process::id()));
            let path = dir.join(temp_name);
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(file) => {
                    return Ok(Self {
                        path,
                        writer: BufWriter::with_capacity(1 << 20, file),
                        committed: false,
                    })
                }
                // A stale file from a crashed run with the same pid: try the next name.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempts < 100 => {
                    attempts += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Flush, fsync, and rename over `dest`.
    fn commit(mut self, dest: &Path) -> io::Result<()> {
        self.writer.flush()?;
        let file = self.writer.get_ref();
        if let Ok(meta) = fs::metadata(dest) {
            file.set_permissions(meta.permissions())?;
        }
        file.sync_all()?;
        fs::rename(&self.path, dest)?;
        self.committed = true;
        sync_parent_dir(dest);
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.committed {
            // Best effort: nothing more can be done about a failed cleanup here.
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Make the rename itself durable. Best effort: some filesystems refuse to sync a
/// directory, and the data is already safely in the file by now.
fn sync_parent_dir(dest: &Path) {
    #[cfg(unix)]
    {
        let dir = match dest.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        if let Ok(dir) = File::open(dir) {
            let _ = dir.sync_all();
        }
    }
    #[cfg(not(unix))]
    let _ = dest;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn writes_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.txt");
        let n = write_atomic(&path, |w| -> io::Result<usize> {
            w.write_all(b"first")?;
            Ok(5)
        })
        .unwrap();
        assert_eq!(n, 5);
        write_atomic(&path, |w| -> io::Result<()> { w.write_all(b"second") }).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second");
        assert_eq!(dir_entries(dir.path()), ["out.txt"]);
    }

    #[test]
    fn failure_leaves_old_content_and_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.txt");
        fs::write(&path, b"old").unwrap();
        let err = write_atomic(&path, |w| -> io::Result<()> {
            w.write_all(&[7u8; 3 << 20])?; // more than the buffer: really hits the disk
            Err(io::Error::other("simulated failure"))
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "simulated failure");
        assert_eq!(fs::read(&path).unwrap(), b"old");
        assert_eq!(dir_entries(dir.path()), ["out.txt"]);
    }

    #[test]
    fn panic_in_writer_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.bin");
        let result = std::panic::catch_unwind(|| {
            let _ = write_atomic(&path, |w| -> io::Result<()> {
                w.write_all(b"partial")?;
                panic!("writer bug");
            });
        });
        assert!(result.is_err());
        assert!(dir_entries(dir.path()).is_empty());
    }

    #[test]
    fn missing_directory_is_reported_with_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no/such/dir/out.bin");
        let err = write_atomic(&path, |_| -> Result<(), WriteError> { Ok(()) }).unwrap_err();
        assert_eq!(err.path, path);
        assert!(err.to_string().contains("no/such/dir/out.bin"), "{err}");
        assert_eq!(io::Error::from(err).kind(), io::ErrorKind::NotFound);
    }

    #[cfg(unix)]
    #[test]
    fn existing_permissions_are_kept() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.safetensors");
        fs::write(&path, b"old").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        write_atomic(&path, |w| -> io::Result<()> { w.write_all(b"new") }).unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o640
        );
    }
}
