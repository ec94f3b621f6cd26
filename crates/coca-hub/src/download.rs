//! `hf_hub_download` for one file: metadata from a `HEAD` request, a
//! resumable download into `blobs/{etag}.incomplete`, size and SHA-256
//! checks, an atomic rename, then the snapshot link and the ref.

use std::fs::{self, File};
use std::io::{self, BufWriter, ErrorKind, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use sha2::{Digest, Sha256};

use crate::cache::{self, RepoCache};
use crate::error::{HubError, ManualDownload};
use crate::http::{self, Answer, Client};
use crate::options::HubOptions;

/// Where a resolved file came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A path given by the user.
    LocalPath,
    /// Already in the hub cache; the network was not used.
    Cache,
    /// Downloaded (or a cached blob newly linked) just now.
    Downloaded,
}

/// One file of one hub repository at one revision.
#[derive(Debug, Clone, Copy)]
pub struct HubFile<'a> {
    /// `org/name`.
    pub repo_id: &'a str,
    /// Path of the file in the repository.
    pub filename: &'a str,
    /// Branch, tag or commit hash.
    pub revision: &'a str,
}

impl HubFile<'_> {
    /// `{endpoint}/{repo}/resolve/{revision}/{filename}`.
    pub fn url(&self, endpoint: &str) -> String {
        format!(
            "{endpoint}/{}/resolve/{}/{}",
            self.repo_id,
            http::encode_path(self.revision),
            http::encode_path(self.filename)
        )
    }

    /// How to fetch this file by hand.
    pub fn manual_download(&self, opts: &HubOptions) -> Box<ManualDownload> {
        Box::new(ManualDownload {
            repo_id: self.repo_id.to_string(),
            filename: self.filename.to_string(),
            url: self.url(&opts.endpoint),
            cache_dir: opts.cache_dir.clone(),
        })
    }

    /// The file's path in the cache, if there, without using the network.
    pub fn cached(&self, opts: &HubOptions) -> Option<PathBuf> {
        RepoCache::new(&opts.cache_dir, self.repo_id).cached_file(self.revision, self.filename)
    }
}

/// The file from the cache, or else from the hub into the cache.
///
/// Unlike `huggingface_hub`, a file already cached for the revision is used
/// without asking the hub whether the branch moved: pretrained checkpoints
/// do not change, and this keeps runs fast and working without network.
pub fn fetch(file: &HubFile<'_>, opts: &HubOptions) -> Result<(PathBuf, Origin), HubError> {
    if let Some(path) = file.cached(opts) {
        return Ok((path, Origin::Cache));
    }
    if opts.offline {
        return Err(HubError::Offline(file.manual_download(opts)));
    }
    let repo = RepoCache::new(&opts.cache_dir, file.repo_id);
    let client = Client::new(opts);
    let url = file.url(&opts.endpoint);
    let network_error = |e: ureq::Error| HubError::Network {
        url: url.clone(),
        reason: e.to_string(),
        help: file.manual_download(opts),
    };

    let head = client.head(&url).map_err(network_error)?;
    if head.status() == 404 {
        // Remember the miss like Python does (`.no_exist`), then report it.
        if let Some(commit) = head
            .header(http::X_REPO_COMMIT)
            .filter(|c| cache::is_safe_name(c))
        {
            repo.mark_missing(commit, file.filename);
            repo.write_ref(file.revision, commit)?;
        }
    }
    if !(head.response.status().is_success() || head.response.status().is_redirection()) {
        return Err(status_error(&head, file, &client, opts));
    }
    let meta = Metadata::from_head(&head)?;

    repo.write_ref(file.revision, &meta.commit)?;
    let pointer = repo.pointer_path(&meta.commit, file.filename);
    if pointer.is_file() {
        return Ok((pointer, Origin::Cache));
    }
    let blob = repo.blob_path(&meta.etag);
    if !blob.is_file() {
        cache::create_parent(&blob)?;
        let download = Download {
            client: &client,
            file,
            opts,
            meta: &meta,
            blob: &blob,
        };
        download.run()?;
    }
    let pointer = repo.link_snapshot(&meta.commit, file.filename, &meta.etag)?;
    Ok((pointer, Origin::Downloaded))
}

/// What the `HEAD` answer tells about the file.
#[derive(Debug)]
struct Metadata {
    commit: String,
    etag: String,
    size: u64,
    /// Where the bytes are (the CDN for LFS files).
    location: String,
}

impl Metadata {
    fn from_head(head: &Answer) -> Result<Self, HubError> {
        let bad = |problem: &str| HubError::BadMetadata {
            url: head.url.clone(),
            problem: problem.to_string(),
        };
        let commit = head
            .header(http::X_REPO_COMMIT)
            .ok_or_else(|| bad("no X-Repo-Commit header"))?;
        // The linked etag is the LFS object's SHA-256; plain files only have
        // an ETag (their git blob id). Weak markers and quotes are dropped.
        let etag = head
            .header(http::X_LINKED_ETAG)
            .or_else(|| head.header("etag"))
            .map(|e| e.trim_start_matches("W/").trim_matches('"'))
            .ok_or_else(|| bad("no ETag header"))?;
        let size = head
            .header(http::X_LINKED_SIZE)
            .or_else(|| head.header("content-length"))
            .and_then(|s| s.trim().parse::<u64>().ok())
            .ok_or_else(|| bad("no file size (X-Linked-Size / Content-Length)"))?;
        if !cache::is_safe_name(commit) || !cache::is_safe_name(etag) {
            return Err(bad("commit or etag is not a plain name"));
        }
        let location = match head.header("location") {
            Some(loc) if head.response.status().is_redirection() => {
                http::resolve_location(&head.url, loc)
            }
            _ => head.url.clone(),
        };
        Ok(Self {
            commit: commit.to_string(),
            etag: etag.to_string(),
            size,
            location,
        })
    }

    /// LFS etags are the SHA-256 of the content, so it can be checked.
    fn sha256(&self) -> Option<&str> {
        (self.etag.len() == 64 && self.etag.bytes().all(|b| b.is_ascii_hexdigit()))
            .then_some(self.etag.as_str())
    }
}

/// Turn a non-success status into the matching error.
fn status_error(
    answer: &Answer,
    file: &HubFile<'_>,
    client: &Client,
    opts: &HubOptions,
) -> HubError {
    let status = answer.status();
    let code = answer.header(http::X_ERROR_CODE).unwrap_or("");
    match status {
        401 | 403 => HubError::Unauthorized {
            repo_id: file.repo_id.to_string(),
            status,
            token_sent: client.has_token(),
        },
        404 if code == "RepoNotFound" => HubError::RepoNotFound {
            repo_id: file.repo_id.to_string(),
            endpoint: opts.endpoint.clone(),
        },
        404 => HubError::EntryNotFound {
            repo_id: file.repo_id.to_string(),
            filename: file.filename.to_string(),
            revision: file.revision.to_string(),
        },
        _ => HubError::HttpStatus {
            url: answer.url.clone(),
            status,
            message: answer.header(http::X_ERROR_MESSAGE).map(String::from),
        },
    }
}

/// One download of a blob, resumed from `{blob}.incomplete` if present.
struct Download<'a> {
    client: &'a Client,
    file: &'a HubFile<'a>,
    opts: &'a HubOptions,
    meta: &'a Metadata,
    blob: &'a Path,
}

impl Download<'_> {
    fn run(&self) -> Result<(), HubError> {
        let partial = incomplete_path(self.blob);
        let mut out = File::options()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&partial)
            .map_err(|e| self.write_error(&partial, e))?;
        let mut have = out
            .metadata()
            .map_err(|e| HubError::io("cannot read", &partial, e))?
            .len();
        if have > self.meta.size {
            // Not a prefix of this file: start over.
            have = 0;
        }
        let mut hasher = self.meta.sha256().map(|_| Sha256::new());
        if let Some(h) = hasher.as_mut() {
            hash_prefix(&mut out, have, h).map_err(|e| HubError::io("cannot read", &partial, e))?;
        }

        if have < self.meta.size {
            let answer = self
                .client
                .get(&self.meta.location, have)
                .map_err(|e| self.network(e))?;
            let status = answer.status();
            if status == 200 && have > 0 {
                // The server ignored the range: take the whole body.
                have = 0;
                if let Some(h) = hasher.as_mut() {
                    *h = Sha256::new();
                }
            } else if !(status == 200 || (status == 206 && have > 0)) {
                return Err(status_error(&answer, self.file, self.client, self.opts));
            } else if status == 206
                && !answer
                    .header("content-range")
                    .is_some_and(|r| r.starts_with(&format!("bytes {have}-")))
            {
                // Appending bytes from elsewhere would corrupt the file.
                cache::remove_if_exists(&partial)?;
                return Err(HubError::BadMetadata {
                    url: answer.url.clone(),
                    problem: format!("partial answer does not start at byte {have}"),
                });
            }
            if have > 0 {
                tracing::info!(
                    "resuming {} from byte {have} of {}",
                    self.file.filename,
                    self.meta.size
                );
            }
            out.set_len(have)
                .and_then(|()| out.seek(SeekFrom::Start(have)).map(drop))
                .map_err(|e| self.write_error(&partial, e))?;
            have = self.receive(answer, &mut out, have, hasher.as_mut(), &partial)?;
        }
        out.sync_all().map_err(|e| self.write_error(&partial, e))?;
        drop(out);

        if have != self.meta.size {
            if have < self.meta.size {
                // A body that ended early without an I/O error: keep it.
                return Err(self.network_reason(format!(
                    "the connection ended after {have} of {} bytes; run again to resume",
                    self.meta.size
                )));
            }
            cache::remove_if_exists(&partial)?;
            return Err(HubError::SizeMismatch {
                repo_id: self.file.repo_id.to_string(),
                filename: self.file.filename.to_string(),
                expected: self.meta.size,
                actual: have,
            });
        }
        if let (Some(expected), Some(h)) = (self.meta.sha256(), hasher) {
            let actual = hex(&h.finalize());
            if !actual.eq_ignore_ascii_case(expected) {
                cache::remove_if_exists(&partial)?;
                return Err(HubError::ChecksumMismatch {
                    repo_id: self.file.repo_id.to_string(),
                    filename: self.file.filename.to_string(),
                    expected: expected.to_string(),
                    actual,
                });
            }
        }
        fs::rename(&partial, self.blob)
            .map_err(|e| HubError::io("cannot move into place", self.blob, e))
    }

    /// Copy the body to `out`, hashing and showing progress; returns the
    /// file's length. A broken connection keeps what arrived for a resume.
    fn receive(
        &self,
        mut answer: Answer,
        out: &mut File,
        mut have: u64,
        mut hasher: Option<&mut Sha256>,
        partial: &Path,
    ) -> Result<u64, HubError> {
        let bar = self.progress_bar(have);
        let mut reader = answer.response.body_mut().as_reader();
        let mut writer = BufWriter::with_capacity(1 << 20, out);
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Save what arrived, then report.
                    writer.flush().map_err(|e| self.write_error(partial, e))?;
                    bar.abandon();
                    return Err(self.network_reason(format!(
                        "{e} after {have} of {} bytes; run again to resume",
                        self.meta.size
                    )));
                }
            };
            let chunk = &buf[..n];
            writer
                .write_all(chunk)
                .map_err(|e| self.write_error(partial, e))?;
            if let Some(h) = hasher.as_deref_mut() {
                h.update(chunk);
            }
            have += n as u64;
            bar.set_position(have);
            if have > self.meta.size {
                break; // Longer than announced; the caller rejects it.
            }
        }
        writer.flush().map_err(|e| self.write_error(partial, e))?;
        bar.finish_and_clear();
        Ok(have)
    }

    fn progress_bar(&self, position: u64) -> ProgressBar {
        if !self.opts.progress {
            return ProgressBar::hidden();
        }
        // indicatif draws nothing when stderr is not a terminal.
        let bar = ProgressBar::with_draw_target(Some(self.meta.size), ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(self.file.filename.to_string());
        bar.set_position(position);
        bar
    }

    fn write_error(&self, path: &Path, e: io::Error) -> HubError {
        write_error(path, self.meta.size, e)
    }

    fn network(&self, e: ureq::Error) -> HubError {
        self.network_reason(e.to_string())
    }

    fn network_reason(&self, reason: String) -> HubError {
        HubError::Network {
            url: self.file.url(&self.opts.endpoint),
            reason,
            help: self.file.manual_download(self.opts),
        }
    }
}

/// A write failure, singling out a full disk.
pub(crate) fn write_error(path: &Path, needed: u64, e: io::Error) -> HubError {
    if e.kind() == ErrorKind::StorageFull {
        HubError::DiskFull {
            path: path.to_path_buf(),
            needed,
        }
    } else {
        HubError::io("cannot write", path, e)
    }
}

/// `blobs/{etag}.incomplete`, the name `huggingface_hub` resumes from too.
fn incomplete_path(blob: &Path) -> PathBuf {
    let mut name = blob.as_os_str().to_owned();
    name.push(".incomplete");
    PathBuf::from(name)
}

/// Feed the first `len` bytes of `file` to `hasher`.
fn hash_prefix(file: &mut File, len: u64, hasher: &mut Sha256) -> io::Result<()> {
    file.seek(SeekFrom::Start(0))?;
    let copied = io::copy(&mut Read::by_ref(file).take(len), hasher)?;
    if copied != len {
        return Err(io::Error::new(
            ErrorKind::UnexpectedEof,
            "partial file shrank",
        ));
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_disk_is_named() {
        let e = io::Error::from(ErrorKind::StorageFull);
        let err = write_error(Path::new("/c/blobs/x.incomplete"), 42, e);
        assert!(matches!(err, HubError::DiskFull { needed: 42, .. }));
        assert!(err.to_string().contains("disk full"), "{err}");
        let e = io::Error::from(ErrorKind::PermissionDenied);
        assert!(matches!(
            write_error(Path::new("/x"), 1, e),
            HubError::Io { .. }
        ));
    }

    #[test]
    fn incomplete_name() {
        assert_eq!(
            incomplete_path(Path::new("/c/blobs/abc")),
            Path::new("/c/blobs/abc.incomplete")
        );
    }
}
