//! The classifier cache: hits, misses, keys, corrupt and foreign files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::Device;
use coca_model::load::{load_model, LoadOptions};
use coca_model::{Coca, CocaConfig};
use coca_zeroshot::cache::Lookup;
use coca_zeroshot::{CacheKey, CacheOutcome, CheckpointIdentity, ClassifierCache, Template};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn demo() -> (Coca, CocaConfig, PathBuf) {
    let cfg = CocaConfig::from_file(&root().join("assets/demo/coca_demo-tiny.json")).unwrap();
    let ckpt = root().join("assets/demo/coca_demo-tiny.safetensors");
    let model = load_model(&cfg, &ckpt, &LoadOptions::default()).unwrap();
    (model, cfg, ckpt)
}

fn classes() -> Vec<String> {
    vec![
        "tabby cat".into(),
        "space shuttle".into(),
        "espresso".into(),
    ]
}

fn templates() -> Vec<Template> {
    ["a photo of a {c}.", "a drawing of the {c}."]
        .iter()
        .map(|t| Template::parse(t).unwrap())
        .collect()
}

fn key_for(cfg: &CocaConfig, ckpt: &Path, classes: &[String], templates: &[Template]) -> CacheKey {
    let id = CheckpointIdentity::of(ckpt).unwrap();
    CacheKey::new(&id, cfg, "f32", classes, templates).unwrap()
}

#[test]
fn miss_then_hit_returns_the_same_classifier() {
    let (model, cfg, ckpt) = demo();
    let dir = tempfile::tempdir().unwrap();
    let cache = ClassifierCache::new(dir.path().join("nested/zeroshot"));
    let key = key_for(&cfg, &ckpt, &classes(), &templates());
    let info = BTreeMap::from([("checkpoint".to_string(), ckpt.display().to_string())]);

    let mut built_prompts = 0;
    let (first, outcome) = cache
        .load_or_build(&key, &model, &classes(), &templates(), 4, &info, &mut |n| {
            built_prompts = n
        })
        .unwrap();
    assert_eq!(outcome, CacheOutcome::Built(cache.path(&key)));
    assert_eq!(built_prompts, 6);
    assert!(cache.path(&key).is_file());

    let mut called = false;
    let (second, outcome) = cache
        .load_or_build(
            &key,
            &model,
            &classes(),
            &templates(),
            4,
            &info,
            &mut |_| called = true,
        )
        .unwrap();
    assert_eq!(outcome, CacheOutcome::Hit(cache.path(&key)));
    assert!(!called, "a cache hit must not run the text tower");
    assert_eq!(
        first.to_vec2::<f32>().unwrap(),
        second.to_vec2::<f32>().unwrap()
    );
    // Nothing but the cache file is left in the directory (atomic writes clean up their temp files).
    let entries: Vec<_> = std::fs::read_dir(cache.dir()).unwrap().collect();
    assert_eq!(entries.len(), 1);
}

#[test]
fn key_depends_on_every_input() {
    let (_, cfg, ckpt) = demo();
    let base = key_for(&cfg, &ckpt, &classes(), &templates());
    assert_eq!(base.as_str().len(), 64);
    assert_eq!(base, key_for(&cfg, &ckpt, &classes(), &templates()));

    let mut other_classes = classes();
    other_classes.swap(0, 1);
    assert_ne!(base, key_for(&cfg, &ckpt, &other_classes, &templates()));
    assert_ne!(base, key_for(&cfg, &ckpt, &classes(), &templates()[..1]));
    // `{}` and `{c}` spell the same template, so they share a cache entry.
    let braces: Vec<Template> = ["a photo of a {}.", "a drawing of the {c}."]
        .iter()
        .map(|t| Template::parse(t).unwrap())
        .collect();
    assert_eq!(base, key_for(&cfg, &ckpt, &classes(), &braces));

    let mut cfg2 = cfg.clone();
    cfg2.text_cfg.context_length = 77;
    assert_ne!(base, key_for(&cfg2, &ckpt, &classes(), &templates()));
    let id = CheckpointIdentity::of(&ckpt).unwrap();
    assert_ne!(
        base,
        CacheKey::new(&id, &cfg, "f16", &classes(), &templates()).unwrap()
    );
    let touched = CheckpointIdentity {
        modified_ns: id.modified_ns + 1,
        ..id.clone()
    };
    assert_ne!(
        base,
        CacheKey::new(&touched, &cfg, "f32", &classes(), &templates()).unwrap()
    );
    let copied = CheckpointIdentity {
        path: PathBuf::from("/elsewhere/model.safetensors"),
        ..id
    };
    assert_ne!(
        base,
        CacheKey::new(&copied, &cfg, "f32", &classes(), &templates()).unwrap()
    );
}

#[test]
fn corrupt_and_foreign_files_are_rebuilt() {
    let (model, cfg, ckpt) = demo();
    let dir = tempfile::tempdir().unwrap();
    let cache = ClassifierCache::new(dir.path());
    let key = key_for(&cfg, &ckpt, &classes(), &templates());
    let info = BTreeMap::new();
    let (good, _) = cache
        .load_or_build(
            &key,
            &model,
            &classes(),
            &templates(),
            8,
            &info,
            &mut |_| {},
        )
        .unwrap();
    let good = good.to_vec2::<f32>().unwrap();
    let path = cache.path(&key);
    let bytes = std::fs::read(&path).unwrap();

    // Truncated file.
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    assert!(matches!(
        cache.lookup(&key, (16, 3), &Device::Cpu),
        Lookup::Invalid { .. }
    ));
    let (rebuilt, outcome) = cache
        .load_or_build(
            &key,
            &model,
            &classes(),
            &templates(),
            8,
            &info,
            &mut |_| {},
        )
        .unwrap();
    match outcome {
        CacheOutcome::Rebuilt { path: p, reason } => {
            assert_eq!(p, path);
            assert!(reason.contains("unreadable"), "{reason}");
        }
        other => panic!("expected a rebuild, got {other:?}"),
    }
    assert_eq!(rebuilt.to_vec2::<f32>().unwrap(), good);
    assert_eq!(
        std::fs::read(&path).unwrap(),
        bytes,
        "the file is rewritten whole"
    );

    // Garbage.
    std::fs::write(&path, b"not a safetensors file").unwrap();
    assert!(matches!(
        cache.lookup(&key, (16, 3), &Device::Cpu),
        Lookup::Invalid { .. }
    ));

    // A valid file stored under another key (e.g. renamed by hand).
    let other = key_for(&cfg, &ckpt, &classes()[..2], &templates());
    let other_path = cache.path(&other);
    std::fs::write(&path, &bytes).unwrap();
    std::fs::rename(&path, &other_path).unwrap();
    match cache.lookup(&other, (16, 2), &Device::Cpu) {
        Lookup::Invalid { reason, .. } => assert!(reason.contains("another key"), "{reason}"),
        other => panic!("expected invalid, got {other:?}"),
    }

    // Right key, wrong shape (the caller expects more classes).
    std::fs::write(&path, &bytes).unwrap();
    match cache.lookup(&key, (16, 4), &Device::Cpu) {
        Lookup::Invalid { reason, .. } => assert!(reason.contains("expected [16, 4]"), "{reason}"),
        other => panic!("expected invalid, got {other:?}"),
    }
    assert!(matches!(
        cache.lookup(&key, (16, 3), &Device::Cpu),
        Lookup::Hit(_)
    ));
}

#[test]
fn an_unwritable_cache_still_returns_the_classifier() {
    let (model, cfg, ckpt) = demo();
    let dir = tempfile::tempdir().unwrap();
    // A file where the cache directory should be: creating the directory fails.
    let blocker = dir.path().join("cache");
    std::fs::write(&blocker, b"").unwrap();
    let cache = ClassifierCache::new(&blocker);
    let key = key_for(&cfg, &ckpt, &classes(), &templates());
    let (classifier, outcome) = cache
        .load_or_build(
            &key,
            &model,
            &classes(),
            &templates(),
            8,
            &BTreeMap::new(),
            &mut |_| {},
        )
        .unwrap();
    assert_eq!(outcome, CacheOutcome::Uncached);
    assert_eq!(classifier.dims(), [16, 3]);
}
