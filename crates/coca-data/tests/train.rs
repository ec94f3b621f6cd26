//! The training loader: exact resume, ordering, epoch coverage, skips, rank splits and transforms, on small
//! shards, folders and indexed sources built in temporary directories.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use coca_data::train::IndexedGet;
use coca_data::{
    Batch, CsvOptions, DataError, Input, LoaderConfig, LoaderState, TrainLoader, TrainSource,
};

use common::*;

#[test]
fn indexed_source_resumes_exactly_across_epochs() {
    // 10 batches per epoch: resume in epoch 1 and run into epoch 2.
    assert_resumes_exactly(indexed(43), cfg(4, 11), 13, 9);
    // Resuming right at an epoch boundary.
    assert_resumes_exactly(indexed(40), cfg(4, 11), 10, 3);
}

#[test]
fn shards_with_a_shuffle_buffer_and_skips_resume_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let pattern = write_shards(dir.path(), 3, 10);
    // A corrupt image and a missing caption in shard 001.
    let mut files: Vec<(String, Vec<u8>)> = (10..20)
        .flat_map(|i| {
            [
                (format!("{i:06}.png"), png(&picture(i))),
                (format!("{i:06}.txt"), format!("caption {i}").into_bytes()),
            ]
        })
        .collect();
    files[2].1 = b"\x89PNG not really".to_vec();
    files.remove(5);
    write_shard(&dir.path().join("001.tar"), &files);
    let source = TrainSource::Stream(Input::Shards(pattern));
    // 28 usable samples = 7 batches per epoch (none dropped).
    assert_resumes_exactly(source.clone(), cfg(4, 5), 5, 8);
    let mut plain = cfg(4, 5);
    plain.workers = 1;
    plain.augment = false;
    assert_resumes_exactly(source, plain, 3, 6);
}

#[test]
fn listed_folders_resume_exactly() {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..14u64 {
        picture(i)
            .save(dir.path().join(format!("{i:02}.png")))
            .unwrap();
        std::fs::write(dir.path().join(format!("{i:02}.txt")), format!("photo {i}")).unwrap();
    }
    let source = TrainSource::Stream(Input::Folder(dir.path().to_path_buf()));
    assert_resumes_exactly(source, cfg(3, 2), 5, 6);
}

#[test]
fn every_sample_comes_once_per_epoch_in_a_new_order() {
    let mut loader = TrainLoader::new(indexed(24), cfg(4, 1), LoaderState::default()).unwrap();
    let epoch0 = keys(&take(&mut loader, 6));
    let epoch1 = keys(&take(&mut loader, 6));
    // The end of epoch 1 is noticed when the next batch is asked for.
    let state = loader.state();
    assert_eq!(
        (state.epoch, state.batches_in_epoch, state.position),
        (1, 6, 24)
    );
    let all: BTreeSet<String> = (0..24).map(|i| i.to_string()).collect();
    for epoch in [&epoch0, &epoch1] {
        assert_eq!(epoch.len(), 24);
        assert_eq!(epoch.iter().cloned().collect::<BTreeSet<_>>(), all);
    }
    assert_ne!(epoch0, epoch1);

    let dir = tempfile::tempdir().unwrap();
    let pattern = write_shards(dir.path(), 4, 6);
    let source = TrainSource::Stream(Input::Shards(pattern));
    let mut loader = TrainLoader::new(source, cfg(3, 1), LoaderState::default()).unwrap();
    let epoch0 = keys(&take(&mut loader, 8));
    let epoch1 = keys(&take(&mut loader, 8));
    let all: BTreeSet<String> = (0..24).map(|i| format!("{i:06}")).collect();
    for epoch in [&epoch0, &epoch1] {
        assert_eq!(epoch.iter().cloned().collect::<BTreeSet<_>>(), all);
    }
    assert_ne!(epoch0, epoch1);
    assert_eq!(loader.skipped().total(), 0);
}

#[test]
fn seeds_change_orders_and_no_shuffle_keeps_natural_order() {
    let first = |seed, buffer| {
        let mut c = cfg(4, seed);
        c.shuffle_buffer = buffer;
        let mut loader = TrainLoader::new(indexed(20), c, LoaderState::default()).unwrap();
        keys(&take(&mut loader, 5))
    };
    assert_eq!(first(1, 7), first(1, 7));
    assert_ne!(first(1, 7), first(2, 7));
    let natural: Vec<String> = (0..20).map(|i| i.to_string()).collect();
    assert_eq!(first(1, 0), natural);

    let dir = tempfile::tempdir().unwrap();
    let pattern = write_shards(dir.path(), 3, 8);
    let shard_keys = |seed| {
        let source = TrainSource::Stream(Input::Shards(pattern.clone()));
        let mut loader = TrainLoader::new(source, cfg(4, seed), LoaderState::default()).unwrap();
        keys(&take(&mut loader, 6))
    };
    assert_ne!(shard_keys(1), shard_keys(2));
}

#[test]
fn corrupt_images_and_missing_captions_are_counted_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for i in 0..10u64 {
        let image = match i {
            3 => b"not an image at all".to_vec(),
            _ => png(&picture(i)),
        };
        files.push((format!("{i:06}.png"), image));
        match i {
            5 => {}                                                      // no caption file
            6 => files.push((format!("{i:06}.txt"), b"  \n ".to_vec())), // blank
            _ => files.push((format!("{i:06}.txt"), format!("caption {i}").into_bytes())),
        }
    }
    files.push(("000010.txt".into(), b"caption without image".to_vec()));
    write_shard(&dir.path().join("only.tar"), &files);
    let source = TrainSource::Stream(Input::Shards(
        dir.path().join("only.tar").display().to_string(),
    ));
    let mut c = cfg(7, 0);
    c.shuffle_buffer = 0;
    let mut loader = TrainLoader::new(source, c, LoaderState::default()).unwrap();
    let batch = loader.next_batch().unwrap();
    assert_eq!(
        batch.keys,
        ["000000", "000001", "000002", "000004", "000007", "000008", "000009"]
    );
    assert_eq!(batch.texts[3], "caption 4");
    assert_eq!(batch.pixels.len(), 7 * 3 * 12 * 12);
    let skipped = loader.skipped();
    assert_eq!(
        (skipped.corrupt_images, skipped.missing_captions),
        (1, 2),
        "{skipped:?}"
    );
    let all = skipped.recent.join("\n");
    assert!(
        all.contains("000003.png: unsupported image format"),
        "{all}"
    );
    assert!(all.contains("000005.png: no caption"), "{all}");
    // The caption without an image comes after the first batch, then the next epoch meets the rest again.
    assert_eq!(loader.next_batch().unwrap().keys, batch.keys);
    let skipped = loader.skipped();
    assert_eq!((skipped.corrupt_images, skipped.missing_captions), (3, 4));
    assert!(
        skipped
            .recent
            .iter()
            .any(|m| m.contains("`000010` has no image")),
        "{skipped:?}"
    );
}

#[test]
fn a_truncated_shard_is_counted_with_its_name_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let pattern = write_shards(dir.path(), 2, 8);
    let damaged = dir.path().join("001.tar");
    let bytes = std::fs::read(&damaged).unwrap();
    std::fs::write(&damaged, &bytes[..bytes.len() / 2]).unwrap();
    let source = TrainSource::Stream(Input::Shards(pattern));
    let mut loader = TrainLoader::new(source, cfg(2, 3), LoaderState::default()).unwrap();
    let epoch = take(&mut loader, 5);
    assert!(keys(&epoch).iter().any(|k| k.as_str() >= "000008"));
    let skipped = loader.skipped();
    assert_eq!(skipped.damaged_shards, 1, "{skipped:?}");
    let msg = &skipped.recent[0];
    assert!(
        msg.contains("001.tar") && msg.contains("damaged tar shard at byte"),
        "{msg}"
    );
}

#[test]
fn ranks_get_disjoint_shares_that_cover_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let pattern = write_shards(dir.path(), 5, 4);
    let epoch_keys = |source: &TrainSource, rank, world_size, batches| {
        let mut c = cfg(2, 9);
        (c.rank, c.world_size) = (rank, world_size);
        let mut loader = TrainLoader::new(source.clone(), c, LoaderState::default()).unwrap();
        let first = keys(&take(&mut loader, batches));
        assert_eq!(loader.state().batches_in_epoch, batches as u64);
        first
    };
    let shards = TrainSource::Stream(Input::Shards(pattern));
    // 5 shards over 2 ranks: 3 shards (12 samples) for one, 2 (8) for the other; take each rank's epoch 0.
    let whole = |rank| {
        let mut c = cfg(2, 9);
        (c.rank, c.world_size) = (rank, 2);
        let mut loader = TrainLoader::new(shards.clone(), c, LoaderState::default()).unwrap();
        let mut out = Vec::new();
        while loader.state().epoch == 0 {
            out.extend(loader.next_batch().unwrap().keys);
        }
        out.truncate(out.len() - 2); // the first batch of epoch 1
        out
    };
    let (r0, r1) = (whole(0), whole(1));
    let mut sizes = [r0.len(), r1.len()];
    sizes.sort_unstable();
    assert_eq!(sizes, [8, 12]);
    let set0: BTreeSet<_> = r0.iter().collect();
    let set1: BTreeSet<_> = r1.iter().collect();
    assert!(set0.is_disjoint(&set1));
    assert_eq!(set0.union(&set1).count(), 20);
    // Ranks hold whole shards.
    let shard_of = |k: &String| k.parse::<usize>().unwrap() / 4;
    assert!(r0
        .iter()
        .all(|k| !r1.iter().any(|j| shard_of(j) == shard_of(k))));

    // Indexed: 8 items per rank, together all 24.
    let idx = indexed(24);
    let shares: Vec<Vec<String>> = (0..3).map(|rank| epoch_keys(&idx, rank, 3, 4)).collect();
    let all: BTreeSet<_> = shares.iter().flatten().collect();
    assert_eq!(all.len(), 24);
}

#[test]
fn without_augmentation_pixels_equal_the_eval_preprocessing() {
    let mut c = cfg(5, 0);
    c.augment = false;
    c.preprocess.image_size = 16;
    let check = |batch: &Batch, expected: &dyn Fn(&str) -> Vec<f32>| {
        let len = 3 * 16 * 16;
        for (i, key) in batch.keys.iter().enumerate() {
            assert!(
                batch.pixels[i * len..(i + 1) * len] == expected(key)[..],
                "{key}"
            );
        }
    };
    // Indexed (RGB images).
    let mut loader = TrainLoader::new(indexed(10), c.clone(), LoaderState::default()).unwrap();
    let batch = loader.next_batch().unwrap();
    check(&batch, &|key| {
        coca_image::preprocess(&picture(key.parse().unwrap()), &c.preprocess)
    });
    // Shards: decoded to RGB, then preprocessed.
    let dir = tempfile::tempdir().unwrap();
    let pattern = write_shards(dir.path(), 2, 5);
    let mut loader = TrainLoader::new(
        TrainSource::Stream(Input::Shards(pattern)),
        c.clone(),
        LoaderState::default(),
    )
    .unwrap();
    check(&loader.next_batch().unwrap(), &|key| {
        let i: u64 = key.parse().unwrap();
        let rgb = coca_image::decode_rgb(&png(&picture(i)), "x").unwrap();
        coca_image::preprocess(&rgb, &c.preprocess)
    });
    // The fixture folder (JPEG, WebP with alpha, BMP, GIF, palette PNG): each file in its own PIL mode.
    let folder = fixtures().join("folder");
    let mut loader = TrainLoader::new(
        TrainSource::Stream(Input::Folder(folder.clone())),
        c.clone(),
        LoaderState::default(),
    )
    .unwrap();
    check(&loader.next_batch().unwrap(), &|key| {
        coca_image::preprocess_path(folder.join(key), &c.preprocess).unwrap()
    });
}

#[test]
fn augmentation_is_random_per_epoch_but_reproducible() {
    let source = || indexed(8);
    let mut c = cfg(8, 4);
    c.shuffle_buffer = 0; // same order every epoch, so epochs can be compared sample by sample
    let run = || {
        let mut loader = TrainLoader::new(source(), c.clone(), LoaderState::default()).unwrap();
        take(&mut loader, 2)
    };
    let (a, b) = (run(), run());
    assert_eq!(a, b);
    // Thread count and scheduling do not matter.
    for workers in [1, 5] {
        let mut other = c.clone();
        other.workers = workers;
        let mut loader = TrainLoader::new(source(), other, LoaderState::default()).unwrap();
        assert_eq!(take(&mut loader, 2), a, "{workers} workers");
    }
    assert_eq!(a[0].keys, a[1].keys);
    assert_ne!(
        a[0].pixels, a[1].pixels,
        "crops should differ between epochs"
    );
    let mut eval = c.clone();
    eval.augment = false;
    let mut loader = TrainLoader::new(source(), eval, LoaderState::default()).unwrap();
    assert_ne!(loader.next_batch().unwrap().pixels, a[0].pixels);
    // Normalised values of 8-bit pixels stay within the normalisation's range.
    assert!(a[0].pixels.iter().all(|v| v.abs() < 2.2));
}

#[test]
fn unusable_inputs_and_settings_fail_at_new_with_clear_messages() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let fails = |source: TrainSource, c: LoaderConfig, needles: &[&str]| {
        let err = TrainLoader::new(source, c, LoaderState::default())
            .err()
            .unwrap();
        let msg = err.to_string();
        for n in needles {
            assert!(msg.contains(n), "`{msg}` lacks `{n}`");
        }
        err
    };
    let shards = |p: String| TrainSource::Stream(Input::Shards(p));
    let err = fails(
        shards(format!("{}/{{0..3}}.tar", d.display())),
        cfg(2, 0),
        &["no shard"],
    );
    assert!(matches!(err, DataError::NoShards { .. }));
    fails(
        shards(format!("{}/{{0..3.tar", d.display())),
        cfg(2, 0),
        &["unbalanced"],
    );
    write_shards(d, 2, 3);
    let err = fails(
        shards(format!("{}/{{000..004}}.tar", d.display())),
        cfg(2, 0),
        &["3 of the 5 shards", "002.tar"],
    );
    assert!(matches!(err, DataError::MissingShards { .. }));
    std::fs::write(d.join("002.tar"), b"").unwrap();
    std::fs::write(d.join("003.tar"), [0u8; 1024]).unwrap();
    fails(
        shards(format!("{}/{{000..002}}.tar", d.display())),
        cfg(2, 0),
        &["002.tar", "empty shard"],
    );
    fails(
        shards(format!("{}/003.tar", d.display())),
        cfg(2, 0),
        &["003.tar", "empty shard"],
    );
    let mut c = cfg(2, 0);
    c.world_size = 3;
    fails(
        shards(format!("{}/{{000..001}}.tar", d.display())),
        c,
        &["2 shards", "3 ranks"],
    );

    let csv = d.join("train.csv");
    std::fs::write(&csv, "filepath\tcaption\na.png\tan a\n").unwrap();
    let csv_input = |caption_key: Option<&str>| {
        TrainSource::Stream(Input::Csv {
            path: csv.clone(),
            options: CsvOptions {
                caption_key: caption_key.map(String::from),
                ..Default::default()
            },
        })
    };
    let err = fails(
        csv_input(Some("title")),
        cfg(2, 0),
        &["no column `title`", "caption"],
    );
    assert!(matches!(err, DataError::CsvColumn { .. }));
    fails(csv_input(None), cfg(2, 0), &["needs captions"]);
    let empty_dir = d.join("empty");
    std::fs::create_dir(&empty_dir).unwrap();
    fails(
        TrainSource::Stream(Input::Folder(empty_dir)),
        cfg(2, 0),
        &["no usable training samples"],
    );

    fails(indexed(3), cfg(4, 0), &["fewer than one batch of 4"]);
    fails(indexed(10), cfg(0, 0), &["batch size"]);
    let mut c = cfg(2, 0);
    c.rank = 2;
    c.world_size = 2;
    fails(indexed(10), c, &["rank 2 outside world size 2"]);
}

#[test]
fn an_epoch_without_a_full_batch_stops_the_loader() {
    let get: IndexedGet = Arc::new(|i| {
        if i % 2 == 0 {
            Err("generator failed".into())
        } else {
            Ok((picture(i), "ok".into()))
        }
    });
    let source = TrainSource::Indexed { len: 6, get };
    let mut loader = TrainLoader::new(source, cfg(4, 0), LoaderState::default()).unwrap();
    for _ in 0..2 {
        let msg = loader.next_batch().err().unwrap().to_string();
        assert!(
            msg.contains("epoch 0 gave 3 usable samples, fewer than one batch of 4"),
            "{msg}"
        );
        assert!(msg.contains("3 corrupt images"), "{msg}");
    }
    assert_eq!(loader.state(), LoaderState::default());
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/data")
}
