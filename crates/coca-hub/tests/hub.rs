//! End-to-end tests of tag resolution against a fake hub on 127.0.0.1
//! (no real network), each with its own temporary cache.

mod support;

use std::fs;
use std::path::{Path, PathBuf};

use coca_hub::{resolve_pretrained, HubError, HubOptions, Origin};
use support::{fake_checkpoint, hex, FakeFile, FakeHub, COMMIT};

const MODEL: &str = "coca_ViT-B-32";
const TAG: &str = "laion2b_s13b_b90k";
const REPO: &str = "laion/CoCa-ViT-B-32-laion2B-s13B-b90k";
const BIN: &str = "open_clip_pytorch_model.bin";
const SAFE: &str = "open_clip_model.safetensors";

struct Env {
    cache: tempfile::TempDir,
    hub: FakeHub,
}

impl Env {
    /// A fake hub holding `REPO/BIN` (LFS) and an empty cache.
    fn with_bin(content: &[u8]) -> Self {
        let hub = FakeHub::start();
        hub.add(REPO, BIN, FakeFile::lfs(content.to_vec()));
        Self {
            cache: tempfile::tempdir().unwrap(),
            hub,
        }
    }

    fn opts(&self) -> HubOptions {
        HubOptions::new(self.cache.path(), self.hub.endpoint())
    }

    fn repo_dir(&self, repo: &str) -> PathBuf {
        self.cache
            .path()
            .join(format!("models--{}", repo.replace('/', "--")))
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex(&sha2::Sha256::digest(bytes))
}

fn incomplete_files(dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(dir.join("blobs"))
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "incomplete"))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn download_fills_the_huggingface_cache_layout_then_reuses_it_offline_of_the_network() {
    let content = fake_checkpoint(300_000, 1);
    let env = Env::with_bin(&content);
    let got = resolve_pretrained(MODEL, TAG, &env.opts()).unwrap();
    assert_eq!(got.origin, Origin::Downloaded);
    assert_eq!(got.pretrained.unwrap().repo_id, REPO);

    let repo = env.repo_dir(REPO);
    let sha = sha256_hex(&content);
    let pointer = repo.join("snapshots").join(COMMIT).join(BIN);
    assert_eq!(got.path, pointer);
    assert_eq!(fs::read(repo.join("blobs").join(&sha)).unwrap(), content);
    #[cfg(unix)]
    assert_eq!(
        fs::read_link(&pointer).unwrap(),
        Path::new("../..").join("blobs").join(&sha)
    );
    assert_eq!(fs::read(&pointer).unwrap(), content);
    // Exactly the hash, no newline, as huggingface_hub writes it.
    assert_eq!(fs::read_to_string(repo.join("refs/main")).unwrap(), COMMIT);
    // open_clip asked for the safetensors first; the miss is remembered.
    assert!(repo.join(".no_exist").join(COMMIT).join(SAFE).is_file());
    assert!(incomplete_files(&repo).is_empty());

    let seen = env.hub.seen();
    let asked: Vec<_> = seen
        .iter()
        .map(|s| format!("{} {} {}", s.server, s.method, s.path))
        .collect();
    assert_eq!(
        asked,
        [
            format!("hub HEAD /{REPO}/resolve/main/{SAFE}"),
            format!("hub HEAD /{REPO}/resolve/main/{BIN}"),
            format!("cdn GET /cdn/{REPO}/{BIN}"),
        ]
    );
    assert!(seen.iter().all(|s| !s.headers.contains_key("range")));

    // Second run: the server is gone, the cache answers.
    let opts = env.opts();
    let Env { cache, hub } = env;
    hub.stop();
    let again = resolve_pretrained(MODEL, TAG, &opts).unwrap();
    assert_eq!(again.origin, Origin::Cache);
    assert_eq!(again.path, pointer);
    drop(cache);
}

#[test]
fn safetensors_is_preferred_when_the_repo_has_it() {
    let env = Env::with_bin(&fake_checkpoint(1000, 2));
    let safe = fake_checkpoint(800, 3);
    env.hub.add(REPO, SAFE, FakeFile::lfs(safe.clone()));
    let got = resolve_pretrained(MODEL, TAG, &env.opts()).unwrap();
    assert!(got.path.ends_with(SAFE), "{}", got.path.display());
    assert_eq!(fs::read(&got.path).unwrap(), safe);
    assert!(!env.hub.seen().iter().any(|s| s.path.ends_with(BIN)));
}

#[test]
fn offline_miss_explains_what_to_download_and_hit_uses_the_cache() {
    let env = Env::with_bin(&fake_checkpoint(1000, 4));
    let mut offline = env.opts();
    offline.offline = true;
    let err = resolve_pretrained(MODEL, TAG, &offline).unwrap_err();
    assert!(matches!(err, HubError::Offline(_)), "{err:?}");
    let msg = err.to_string();
    for needle in [
        "HF_HUB_OFFLINE".to_string(),
        format!("huggingface-cli download {REPO} {BIN}"),
        format!("{}/{REPO}/resolve/main/{BIN}", env.hub.endpoint()),
        "--pretrained /path/to/open_clip_pytorch_model.bin".to_string(),
        env.cache.path().display().to_string(),
    ] {
        assert!(msg.contains(&needle), "missing {needle:?} in:\n{msg}");
    }
    assert!(env.hub.seen().is_empty(), "offline mode used the network");

    resolve_pretrained(MODEL, TAG, &env.opts()).unwrap();
    let n = env.hub.seen().len();
    let hit = resolve_pretrained(MODEL, TAG, &offline).unwrap();
    assert_eq!(hit.origin, Origin::Cache);
    assert_eq!(env.hub.seen().len(), n);
}

#[test]
fn unreachable_hub_without_cache_says_what_to_do() {
    let cache = tempfile::tempdir().unwrap();
    // A port that was free a moment ago: connection refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let opts = HubOptions::new(cache.path(), format!("http://127.0.0.1:{port}"));
    let err = resolve_pretrained(MODEL, TAG, &opts).unwrap_err();
    assert!(matches!(err, HubError::Network { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&format!("resolve/main/{BIN}")), "{msg}");
    assert!(msg.contains("huggingface-cli download"), "{msg}");
}

#[test]
fn a_cut_download_resumes_with_a_range_request() {
    let content = fake_checkpoint(200_000, 5);
    let hub = FakeHub::start();
    let mut file = FakeFile::lfs(content.clone());
    file.cut_after = Some(75_000);
    hub.add(REPO, BIN, file);
    let env = Env {
        cache: tempfile::tempdir().unwrap(),
        hub,
    };
    let repo = env.repo_dir(REPO);

    let err = resolve_pretrained(MODEL, TAG, &env.opts()).unwrap_err();
    assert!(matches!(err, HubError::Network { .. }), "{err:?}");
    assert!(err.to_string().contains("resume"), "{err}");
    let partial = incomplete_files(&repo);
    assert_eq!(partial.len(), 1);
    assert_eq!(fs::read(&partial[0]).unwrap(), &content[..75_000]);

    let got = resolve_pretrained(MODEL, TAG, &env.opts()).unwrap();
    assert_eq!(fs::read(&got.path).unwrap(), content);
    let ranges: Vec<_> = env
        .hub
        .seen()
        .into_iter()
        .filter_map(|s| s.headers.get("range").cloned())
        .collect();
    assert_eq!(ranges, ["bytes=75000-"]);
    assert!(incomplete_files(&repo).is_empty());
}

#[test]
fn a_corrupt_download_is_rejected_and_deleted() {
    let content = fake_checkpoint(50_000, 6);
    let hub = FakeHub::start();
    let mut file = FakeFile::lfs(content.clone());
    let mut corrupt = content.clone();
    corrupt[12_345] ^= 0xff;
    file.served = Some(corrupt);
    hub.add(REPO, BIN, file);
    let env = Env {
        cache: tempfile::tempdir().unwrap(),
        hub,
    };
    let err = resolve_pretrained(MODEL, TAG, &env.opts()).unwrap_err();
    match &err {
        HubError::ChecksumMismatch {
            expected, actual, ..
        } => {
            assert_eq!(expected, &sha256_hex(&content));
            assert_ne!(actual, expected);
        }
        other => panic!("expected a checksum error, got {other:?}"),
    }
    let repo = env.repo_dir(REPO);
    assert!(incomplete_files(&repo).is_empty());
    assert!(!repo.join("blobs").join(sha256_hex(&content)).exists());
    assert!(!repo.join("snapshots").join(COMMIT).join(BIN).exists());
}

#[test]
fn gated_repo_asks_for_a_token_and_the_token_stays_off_the_cdn() {
    let env = Env::with_bin(&fake_checkpoint(1000, 7));
    env.hub.require_token(REPO, "hf_secret");
    let err = resolve_pretrained(MODEL, TAG, &env.opts()).unwrap_err();
    assert!(
        matches!(err, HubError::Unauthorized { status: 401, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("HF_TOKEN"), "{err}");

    let mut opts = env.opts();
    opts.token = Some("hf_secret".into());
    resolve_pretrained(MODEL, TAG, &opts).unwrap();
    let seen = env.hub.seen();
    let auth = |server: &str| {
        seen.iter()
            .filter(|s| s.server == server)
            .any(|s| s.headers.contains_key("authorization"))
    };
    assert!(auth("hub"));
    assert!(!auth("cdn"), "token sent to the CDN");
}

#[test]
fn missing_repo_and_missing_file_are_told_apart() {
    let env = Env::with_bin(&fake_checkpoint(10, 8));
    // The L-14 repo does not exist on this hub.
    let err = resolve_pretrained("coca_ViT-L-14", TAG, &env.opts()).unwrap_err();
    assert!(matches!(err, HubError::RepoNotFound { .. }), "{err:?}");

    let hub = FakeHub::start();
    hub.add(REPO, "README.md", FakeFile::lfs(b"# card".to_vec()));
    let env = Env {
        cache: tempfile::tempdir().unwrap(),
        hub,
    };
    let err = resolve_pretrained(MODEL, TAG, &env.opts()).unwrap_err();
    match err {
        HubError::EntryNotFound { filename, .. } => assert_eq!(filename, BIN),
        other => panic!("expected EntryNotFound, got {other:?}"),
    }
}

#[test]
fn tags_are_normalised_like_open_clip() {
    let hub = FakeHub::start();
    let repo = "laion/mscoco_finetuned_CoCa-ViT-B-32-laion2B-s13B-b90k";
    let content = fake_checkpoint(4096, 9);
    hub.add(repo, BIN, FakeFile::lfs(content.clone()));
    let env = Env {
        cache: tempfile::tempdir().unwrap(),
        hub,
    };
    let got = resolve_pretrained(MODEL, "mscoco_finetuned_laion2B-s13B-b90k", &env.opts()).unwrap();
    assert_eq!(fs::read(&got.path).unwrap(), content);
    assert_eq!(
        got.pretrained.unwrap().tag,
        "mscoco_finetuned_laion2b_s13b_b90k"
    );
}

#[test]
fn bad_tags_and_paths_get_helpful_messages() {
    let cache = tempfile::tempdir().unwrap();
    // Port 9 (discard) on loopback is never contacted: these fail first.
    let opts = HubOptions::new(cache.path(), "http://127.0.0.1:9");
    let msg = resolve_pretrained(MODEL, "laion2b_s34b_b79k", &opts)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("`laion2b_s34b_b79k`"), "{msg}");
    assert!(msg.contains("mscoco_finetuned_laion2b_s13b_b90k"), "{msg}");

    let msg = resolve_pretrained("coca_base", TAG, &opts)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("coca_ViT-B-32, coca_ViT-L-14"), "{msg}");

    let err = resolve_pretrained(MODEL, "/no/such/weights.bin", &opts).unwrap_err();
    assert!(matches!(err, HubError::NotFound { .. }), "{err:?}");
    assert!(err.to_string().contains("known tags: laion2b_s13b_b90k"));

    let err = resolve_pretrained(MODEL, cache.path().to_str().unwrap(), &opts).unwrap_err();
    assert!(matches!(err, HubError::IsADirectory(_)), "{err:?}");
}

#[test]
fn an_existing_path_wins_over_tags() {
    let dir = tempfile::tempdir().unwrap();
    // A file named like a tag, in the working directory's place.
    let file = dir.path().join(TAG);
    fs::write(&file, b"weights").unwrap();
    let opts = HubOptions::new(dir.path().join("cache"), "http://127.0.0.1:9");
    let got = resolve_pretrained(MODEL, file.to_str().unwrap(), &opts).unwrap();
    assert_eq!(got.origin, Origin::LocalPath);
    assert_eq!(got.path, file);
    assert!(got.pretrained.is_none());
}

/// Build the cache exactly as Python's `hf_hub_download` leaves it, then
/// resolve with an endpoint that would fail if contacted.
#[cfg(unix)]
#[test]
fn a_file_downloaded_by_python_is_reused() {
    let cache = tempfile::tempdir().unwrap();
    let repo = cache
        .path()
        .join("models--laion--CoCa-ViT-L-14-laion2B-s13B-b90k");
    let content = fake_checkpoint(1234, 10);
    let sha = sha256_hex(&content);
    let commit = "b8c8f8d6a4e2c0b9a7f5e3d1c9b7a5f3e1d9c7b5";
    fs::create_dir_all(repo.join("blobs")).unwrap();
    fs::create_dir_all(repo.join("refs")).unwrap();
    fs::create_dir_all(repo.join("snapshots").join(commit)).unwrap();
    fs::create_dir_all(repo.join(".no_exist").join(commit)).unwrap();
    fs::write(repo.join("blobs").join(&sha), &content).unwrap();
    fs::write(repo.join("refs/main"), commit).unwrap();
    fs::write(repo.join(".no_exist").join(commit).join(SAFE), b"").unwrap();
    std::os::unix::fs::symlink(
        format!("../../blobs/{sha}"),
        repo.join("snapshots").join(commit).join(BIN),
    )
    .unwrap();
    // Python also leaves a lock folder; it must not confuse us.
    fs::create_dir_all(
        cache
            .path()
            .join(".locks/models--laion--CoCa-ViT-L-14-laion2B-s13B-b90k"),
    )
    .unwrap();

    let opts = HubOptions::new(cache.path(), "http://127.0.0.1:9");
    let got = resolve_pretrained("coca_ViT-L-14", "LAION2B-S13B-B90K", &opts).unwrap();
    assert_eq!(got.origin, Origin::Cache);
    assert_eq!(got.path, repo.join("snapshots").join(commit).join(BIN));
    assert_eq!(fs::read(&got.path).unwrap(), content);
}

#[test]
fn a_cached_blob_is_linked_without_downloading_again() {
    // Same blob, new commit (e.g. a README change upstream): the snapshot
    // link is made from the existing blob, nothing is fetched.
    let content = fake_checkpoint(5000, 11);
    let env = Env::with_bin(&content);
    let repo = env.repo_dir(REPO);
    let sha = sha256_hex(&content);
    fs::create_dir_all(repo.join("blobs")).unwrap();
    fs::write(repo.join("blobs").join(&sha), &content).unwrap();
    let got = resolve_pretrained(MODEL, TAG, &env.opts()).unwrap();
    assert_eq!(fs::read(&got.path).unwrap(), content);
    assert!(!env.hub.seen().iter().any(|s| s.server == "cdn"));
}
