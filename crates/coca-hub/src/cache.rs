//! The `huggingface_hub` cache layout, so that Python and coca share files:
//!
//! ```text
//! {cache_dir}/models--{org}--{name}/
//!     refs/{revision}                 the commit the revision last pointed to
//!     blobs/{etag}                    file contents (etag = sha256 for LFS files)
//!     blobs/{etag}.incomplete         a download in progress (resumable)
//!     snapshots/{commit}/{filename}   relative symlink to ../../blobs/{etag}
//!     .no_exist/{commit}/{filename}   empty marker: the file is not in that commit
//! ```

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use crate::error::HubError;

/// One model repository's folder in the hub cache.
#[derive(Debug, Clone)]
pub struct RepoCache {
    root: PathBuf,
}

impl RepoCache {
    /// The folder for model repository `repo_id` (`org/name`) under
    /// `cache_dir`.
    pub fn new(cache_dir: &Path, repo_id: &str) -> Self {
        let folder = std::iter::once("models")
            .chain(repo_id.split('/'))
            .collect::<Vec<_>>()
            .join("--");
        Self {
            root: cache_dir.join(folder),
        }
    }

    /// `models--{org}--{name}`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `blobs/{etag}`.
    pub fn blob_path(&self, etag: &str) -> PathBuf {
        self.root.join("blobs").join(etag)
    }

    /// `snapshots/{commit}/{filename}`.
    pub fn pointer_path(&self, commit: &str, filename: &str) -> PathBuf {
        filename
            .split('/')
            .fold(self.root.join("snapshots").join(commit), |p, part| {
                p.join(part)
            })
    }

    /// The commit `revision` resolves to locally: itself if it is a full
    /// commit hash, else the content of `refs/{revision}`.
    pub fn resolve_revision(&self, revision: &str) -> Option<String> {
        if is_commit_hash(revision) {
            return Some(revision.to_string());
        }
        let commit = fs::read_to_string(self.root.join("refs").join(revision)).ok()?;
        let commit = commit.trim();
        is_safe_name(commit).then(|| commit.to_string())
    }

    /// The cached file for `revision`, if the snapshot has it (following
    /// the symlink: a dangling link does not count).
    pub fn cached_file(&self, revision: &str, filename: &str) -> Option<PathBuf> {
        let commit = self.resolve_revision(revision)?;
        let pointer = self.pointer_path(&commit, filename);
        pointer.is_file().then_some(pointer)
    }

    /// Record that `revision` points to `commit` (nothing for a commit
    /// hash). Written only when it changes, as Python does, so a read-only
    /// cache that is up to date keeps working.
    pub fn write_ref(&self, revision: &str, commit: &str) -> Result<(), HubError> {
        if revision == commit {
            return Ok(());
        }
        let path = self.root.join("refs").join(revision);
        if fs::read_to_string(&path).is_ok_and(|c| c == commit) {
            return Ok(());
        }
        create_parent(&path)?;
        // Python writes the hash without a newline; so do we, atomically.
        let tmp = path.with_extension("coca-tmp");
        fs::write(&tmp, commit).map_err(|e| HubError::io("cannot write", &tmp, e))?;
        fs::rename(&tmp, &path).map_err(|e| HubError::io("cannot write", &path, e))
    }

    /// Leave `.no_exist/{commit}/{filename}`, Python's note that the file is
    /// missing from that commit. Best effort: failing to write it is harmless.
    pub fn mark_missing(&self, commit: &str, filename: &str) {
        let marker = filename
            .split('/')
            .fold(self.root.join(".no_exist").join(commit), |p, part| {
                p.join(part)
            });
        let written = marker
            .parent()
            .map_or(Ok(()), fs::create_dir_all)
            .and_then(|()| fs::write(&marker, b""));
        if let Err(e) = written {
            tracing::debug!("cannot write {}: {e}", marker.display());
        }
    }

    /// Point `snapshots/{commit}/{filename}` at `blobs/{etag}` with a
    /// relative symlink, replacing a stale pointer. Where symlinks are not
    /// allowed (Windows without developer mode) the blob is copied, as
    /// `huggingface_hub` then does.
    pub fn link_snapshot(
        &self,
        commit: &str,
        filename: &str,
        etag: &str,
    ) -> Result<PathBuf, HubError> {
        let pointer = self.pointer_path(commit, filename);
        let blob = self.blob_path(etag);
        create_parent(&pointer)?;
        if fs::symlink_metadata(&pointer).is_ok() {
            fs::remove_file(&pointer).map_err(|e| HubError::io("cannot replace", &pointer, e))?;
        }
        // From snapshots/{commit}/{dirs..}/ back up to the repo folder.
        let depth = 2 + filename.matches('/').count();
        let target: PathBuf = std::iter::repeat_n("..", depth)
            .collect::<PathBuf>()
            .join("blobs")
            .join(etag);
        if symlink(&target, &pointer).is_err() {
            fs::copy(&blob, &pointer).map_err(|e| HubError::io("cannot copy to", &pointer, e))?;
        }
        Ok(pointer)
    }
}

#[cfg(unix)]
fn symlink(target: &Path, link: &Path) -> std::io::Result<()> {
    std::os::unix::fs::symlink(target, link)
}

#[cfg(windows)]
fn symlink(target: &Path, link: &Path) -> std::io::Result<()> {
    std::os::windows::fs::symlink_file(target, link)
}

#[cfg(not(any(unix, windows)))]
fn symlink(_target: &Path, _link: &Path) -> std::io::Result<()> {
    Err(std::io::Error::from(ErrorKind::Unsupported))
}

/// Create the parent directories of `path`.
pub(crate) fn create_parent(path: &Path) -> Result<(), HubError> {
    match path.parent() {
        Some(dir) => fs::create_dir_all(dir).map_err(|e| HubError::io("cannot create", dir, e)),
        None => Ok(()),
    }
}

/// A 40-hex-digit git commit id.
pub fn is_commit_hash(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A server-provided value (etag, commit) that is safe as one path
/// component: it cannot climb out of the cache or hide as a dotfile.
pub fn is_safe_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// Remove a file, ignoring "not found".
pub(crate) fn remove_if_exists(path: &Path) -> Result<(), HubError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != ErrorKind::NotFound => Err(HubError::io("cannot delete", path, e)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_names() {
        let c = RepoCache::new(Path::new("/c"), "laion/CoCa-ViT-B-32-laion2B-s13B-b90k");
        assert_eq!(
            c.root(),
            Path::new("/c/models--laion--CoCa-ViT-B-32-laion2B-s13B-b90k")
        );
        assert_eq!(
            c.pointer_path("abc", "sub/f.bin"),
            c.root().join("snapshots/abc/sub/f.bin")
        );
    }

    #[test]
    fn names_from_the_server_are_checked() {
        assert!(is_safe_name("3a4f0c9e"));
        assert!(!is_safe_name("../x"));
        assert!(!is_safe_name(".hidden"));
        assert!(!is_safe_name(""));
        assert!(is_commit_hash(&"a".repeat(40)));
        assert!(!is_commit_hash("main"));
    }

    #[cfg(unix)]
    #[test]
    fn nested_link_is_relative_and_resolves() {
        let dir = tempfile::tempdir().unwrap();
        let c = RepoCache::new(dir.path(), "o/r");
        fs::create_dir_all(c.root().join("blobs")).unwrap();
        fs::write(c.blob_path("e1"), b"x").unwrap();
        let p = c.link_snapshot("c1", "a/b.bin", "e1").unwrap();
        assert_eq!(fs::read_link(&p).unwrap(), Path::new("../../../blobs/e1"));
        assert_eq!(fs::read(&p).unwrap(), b"x");
        c.write_ref("main", "c1").unwrap();
        assert_eq!(c.cached_file("main", "a/b.bin"), Some(p));
        assert_eq!(c.cached_file("main", "other.bin"), None);
    }
}
