//! Labelled sources captioned by templates (class folders, a CSV label column, shards with `.cls`), and
//! mixtures of sources with upsampling factors: captions, determinism, shares, independent epochs, exact
//! resume and the errors.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use coca_data::train::{IndexedGet, LabelPrompts, LabelledInput, SourceState};
use coca_data::{DataError, Input, LoaderConfig, LoaderState, TrainLoader, TrainSource};

use common::*;

const TEMPLATES: [&str; 3] = ["a photo of a {c}.", "a {c}.", "art of the {c}"];

fn prompts(classes: &[&str]) -> Arc<LabelPrompts> {
    let classes = classes.iter().map(|c| c.to_string()).collect();
    let templates = TEMPLATES.map(String::from).to_vec();
    Arc::new(
        LabelPrompts::new(classes, templates, |t: &String, c: &str| {
            t.replace("{c}", c)
        })
        .unwrap(),
    )
}

/// The captions a class can get.
fn captions_of(class: &str) -> Vec<String> {
    TEMPLATES.iter().map(|t| t.replace("{c}", class)).collect()
}

/// `root/<class>/<i>.png` for each class, `per` images each, numbered across classes.
fn write_class_folders(root: &Path, classes: &[&str], per: u64) {
    for (c, class) in classes.iter().enumerate() {
        std::fs::create_dir_all(root.join(class)).unwrap();
        for i in 0..per {
            let n = c as u64 * per + i;
            picture(n)
                .save(root.join(class).join(format!("{n:03}.png")))
                .unwrap();
        }
    }
}

fn labelled(input: LabelledInput, classes: &[&str]) -> TrainSource {
    TrainSource::Labelled {
        input,
        prompts: prompts(classes),
    }
}

/// Key → caption of every sample of the batches.
fn captions(batches: &[coca_data::Batch]) -> BTreeMap<String, String> {
    batches
        .iter()
        .flat_map(|b| b.keys.iter().cloned().zip(b.texts.iter().cloned()))
        .collect()
}

#[test]
fn class_folders_are_captioned_with_their_class_and_resume_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let classes = ["cat", "dog", "red_fox"];
    write_class_folders(dir.path(), &classes, 6);
    // Folder names are the labels; the class names (one per folder, in sorted order) fill the templates.
    let names = ["cat", "dog", "red fox"];
    let source = labelled(LabelledInput::ClassFolders(dir.path().into()), &names);
    let mut loader = TrainLoader::new(source.clone(), cfg(3, 4), LoaderState::default()).unwrap();
    let epoch0 = take(&mut loader, 6);
    let seen = captions(&epoch0);
    assert_eq!(seen.len(), 18, "every image once per epoch");
    let mut templates_used = BTreeSet::new();
    for (key, text) in &seen {
        let folder = key.split('/').next().unwrap();
        let class = names[classes.iter().position(|c| *c == folder).unwrap()];
        let t = captions_of(class).iter().position(|c| c == text);
        assert!(
            t.is_some(),
            "{key}: caption {text:?} is not one of {class}'s"
        );
        templates_used.insert(t);
    }
    assert_eq!(
        templates_used.len(),
        3,
        "every template drawn over 18 samples"
    );
    // The next epoch draws templates anew.
    let epoch1 = captions(&take(&mut loader, 6));
    assert_eq!(epoch1.len(), 18);
    assert!(
        seen.iter().any(|(k, t)| epoch1[k] != *t),
        "same templates in epoch 1"
    );
    assert_resumes_exactly(source, cfg(3, 4), 4, 5);
}

#[test]
fn templates_depend_on_seed_epoch_and_key_only() {
    let dir = tempfile::tempdir().unwrap();
    write_class_folders(dir.path(), &["a", "b"], 12);
    let source = labelled(LabelledInput::ClassFolders(dir.path().into()), &["a", "b"]);
    let epoch0 = |batch_size: usize, workers: usize, seed: u64| {
        let mut c = cfg(batch_size, seed);
        c.workers = workers;
        let mut loader = TrainLoader::new(source.clone(), c, LoaderState::default()).unwrap();
        captions(&take(&mut loader, 24 / batch_size))
    };
    let reference = epoch0(4, 3, 7);
    assert_eq!(reference.len(), 24);
    assert_eq!(
        epoch0(6, 1, 7),
        reference,
        "batch size or workers changed captions"
    );
    assert_eq!(epoch0(4, 3, 7), reference);
    assert_ne!(
        epoch0(4, 3, 8),
        reference,
        "the seed does not choose the templates"
    );
    // The loader's captions are the documented choice.
    let p = prompts(&["a", "b"]);
    for (key, text) in &reference {
        let label = usize::from(key.starts_with('b'));
        assert_eq!(
            *text,
            p.prompt(label, p.choose_template(7, 0, key)),
            "{key}"
        );
    }
}

#[test]
fn a_csv_label_column_gives_class_captions_and_bad_labels_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut rows = String::from("filepath\tlabel\n");
    for i in 0..8u64 {
        let path = d.join(format!("{i}.png"));
        picture(i).save(&path).unwrap();
        // Indices and names both label; row 5 has no label.
        let label = match i {
            5 => String::new(),
            i if i.is_multiple_of(2) => "1".into(),
            _ => "cat".into(),
        };
        rows.push_str(&format!("{}\t{label}\n", path.display()));
    }
    let csv = d.join("labels.tsv");
    std::fs::write(&csv, &rows).unwrap();
    let input = |label_key: &str| LabelledInput::Csv {
        path: csv.clone(),
        img_key: "filepath".into(),
        label_key: label_key.into(),
        separator: b'\t',
    };
    let mut loader = TrainLoader::new(
        labelled(input("label"), &["cat", "dog"]),
        cfg(7, 1),
        LoaderState::default(),
    )
    .unwrap();
    let batch = loader.next_batch().unwrap();
    for (key, text) in batch.keys.iter().zip(&batch.texts) {
        let i: u64 = Path::new(key)
            .file_stem()
            .unwrap()
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let class = if i.is_multiple_of(2) { "dog" } else { "cat" };
        assert!(captions_of(class).contains(text), "{key}: {text}");
    }
    let skipped = loader.skipped();
    assert_eq!(skipped.missing_captions, 1, "{skipped}");
    assert!(
        skipped.recent[0].contains("5.png` has no label"),
        "{skipped:?}"
    );

    let fail = |source: TrainSource| {
        TrainLoader::new(source, cfg(2, 1), LoaderState::default())
            .err()
            .unwrap()
    };
    // Index 1 is outside a one-class list: the error names the file, the image and the label.
    let err = fail(labelled(input("label"), &["cat"]));
    assert!(matches!(err, DataError::Label { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("labels.tsv: image `") && msg.contains("label 1 is outside the 1 class names"),
        "{msg}"
    );
    let msg = fail(labelled(input("label"), &["dog", "bird"])).to_string();
    assert!(
        msg.contains("\"cat\" is neither a class index below 2"),
        "{msg}"
    );
    let msg = fail(labelled(input("class"), &["cat"])).to_string();
    assert!(
        msg.contains("no column `class` (set it with --csv-label-key)"),
        "{msg}"
    );
}

/// A shard of labelled samples `000..n`: sample `i` has label `i % 3`; `.txt` captions are ignored.
fn write_labelled_shard(path: &Path, n: u64, label: impl Fn(u64) -> Option<String>) {
    let mut files = Vec::new();
    for i in 0..n {
        files.push((format!("{i:03}.png"), png(&picture(i))));
        if let Some(l) = label(i) {
            files.push((format!("{i:03}.cls"), l.into_bytes()));
        }
        files.push((format!("{i:03}.txt"), b"an alt-text, not used".to_vec()));
    }
    write_shard(path, &files);
}

#[test]
fn shards_with_cls_labels_are_captioned_and_an_unknown_label_stops_the_loader() {
    let dir = tempfile::tempdir().unwrap();
    let shard = dir.path().join("0.tar");
    // Sample 4 has no label: skipped.
    write_labelled_shard(&shard, 10, |i| (i != 4).then(|| format!("{}\n", i % 3)));
    let names = ["zero", "one", "two"];
    let source = labelled(LabelledInput::Shards(shard.display().to_string()), &names);
    let mut loader = TrainLoader::new(source.clone(), cfg(3, 2), LoaderState::default()).unwrap();
    let seen = captions(&take(&mut loader, 3));
    assert_eq!(seen.len(), 9);
    assert!(!seen.contains_key("004"));
    for (key, text) in &seen {
        let i: usize = key.parse().unwrap();
        assert!(captions_of(names[i % 3]).contains(text), "{key}: {text}");
    }
    assert!(
        loader.skipped().recent[0].contains("0.tar:004.cls"),
        "{:?}",
        loader.skipped()
    );
    assert_resumes_exactly(source, cfg(3, 2), 2, 4);

    // A class list too short for the labels: the loader stops, naming the shard member.
    let short = labelled(
        LabelledInput::Shards(shard.display().to_string()),
        &["zero", "one"],
    );
    let mut loader = TrainLoader::new(short, cfg(3, 2), LoaderState::default()).unwrap();
    let err = (0..4).find_map(|_| loader.next_batch().err()).unwrap();
    assert!(matches!(err, DataError::Label { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("0.tar:") && msg.contains(".cls: label 2 is outside the 2 class names"),
        "{msg}"
    );
    assert_eq!(
        loader.next_batch().unwrap_err().to_string(),
        msg,
        "the failure is kept"
    );
}

#[test]
fn class_folders_need_one_name_per_folder() {
    let dir = tempfile::tempdir().unwrap();
    write_class_folders(dir.path(), &["a", "b", "c"], 2);
    let err = TrainLoader::new(
        labelled(LabelledInput::ClassFolders(dir.path().into()), &["a", "b"]),
        cfg(2, 0),
        LoaderState::default(),
    )
    .err()
    .unwrap();
    let msg = err.to_string();
    assert!(
        msg.contains("class folders") && msg.contains("3 class folders but 2 class names"),
        "{msg}"
    );
}

/// An indexed source whose captions say which source they come from: `"<name> <index>"`.
fn named(name: &'static str, len: u64) -> TrainSource {
    let get: IndexedGet = Arc::new(move |i| Ok((picture(i), format!("{name} {i}"))));
    TrainSource::Indexed { len, get }
}

fn no_augment(batch_size: usize, seed: u64) -> LoaderConfig {
    LoaderConfig {
        augment: false,
        ..cfg(batch_size, seed)
    }
}

#[test]
fn batches_follow_the_factors_and_sources_cycle_independently() {
    // Weights 1·60 and 4·10: expected shares 0.6 and 0.4.
    let sources = || vec![(named("big", 60), 1.0), (named("small", 10), 4.0)];
    let (batches, size) = (100, 8);
    let mut loader =
        TrainLoader::mixture(sources(), no_augment(size, 3), LoaderState::default()).unwrap();
    assert_eq!(loader.source_sizes(), [60, 10]);
    let shares = loader.source_shares();
    assert!(
        (shares[0] - 0.6).abs() < 1e-12 && (shares[1] - 0.4).abs() < 1e-12,
        "{shares:?}"
    );
    let got = take(&mut loader, batches);
    let texts: Vec<&String> = got.iter().flat_map(|b| &b.texts).collect();
    let small: Vec<u64> = texts
        .iter()
        .filter_map(|t| t.strip_prefix("small "))
        .map(|i| i.parse().unwrap())
        .collect();
    let n = (batches * size) as f64;
    // The count of a source is Binomial(n, p): within 4 standard deviations (a 1-in-15000 miss for an
    // arbitrary seed; the seed here is fixed, so the test cannot flake).
    let sd = (n * 0.4 * 0.6).sqrt();
    assert!(
        (small.len() as f64 - n * 0.4).abs() < 4.0 * sd,
        "{} small samples of {n}, expected {} ± {:.1}",
        small.len(),
        n * 0.4,
        4.0 * sd
    );
    assert_eq!(
        loader.source_samples(),
        [texts.len() as u64 - small.len() as u64, small.len() as u64]
    );
    // The small source runs through its epochs while the big one is still in an early one: each run of 10
    // of its samples is a whole epoch, in a new order.
    let epochs: Vec<BTreeSet<u64>> = small
        .chunks_exact(10)
        .map(|c| c.iter().copied().collect())
        .collect();
    assert!(epochs.len() >= 20);
    assert!(
        epochs.iter().all(|e| e.len() == 10),
        "a sample twice within an epoch"
    );
    assert_ne!(small[..10], small[10..20]);
    // Each source's epoch and position account for what it gave (a source whose last epoch was used up
    // whole may not have turned to the next one yet).
    let state = loader.state();
    let consumed = |s: &SourceState, len: u64| s.epoch * len + s.position;
    assert_eq!(consumed(&state.sources[1], 10), small.len() as u64);
    assert_eq!(
        consumed(&state.sources[0], 60),
        (texts.len() - small.len()) as u64
    );
    assert!(
        state.sources[1].epoch >= 19 && state.sources[0].epoch <= 8,
        "{state:?}"
    );
    assert_eq!(state.position, texts.len() as u64);
    // The mixture is a function of the seed.
    let again = take(
        &mut TrainLoader::mixture(sources(), no_augment(size, 3), LoaderState::default()).unwrap(),
        batches,
    );
    assert!(again.iter().zip(&got).all(|(a, b)| a.texts == b.texts));
    let other = take(
        &mut TrainLoader::mixture(sources(), no_augment(size, 4), LoaderState::default()).unwrap(),
        3,
    );
    assert_ne!(other[0].texts, got[0].texts);
}

#[test]
fn the_first_source_of_a_mixture_is_ordered_as_it_would_be_alone() {
    // With the second source switched off, the mixture is the first source's stream, cut into batches
    // without dropping a partial batch at the epoch's end.
    let mut alone = TrainLoader::new(named("a", 12), cfg(4, 9), LoaderState::default()).unwrap();
    let mut mixed = TrainLoader::mixture(
        vec![(named("a", 12), 1.0), (named("b", 12), 0.0)],
        cfg(4, 9),
        LoaderState::default(),
    )
    .unwrap();
    let (a, m) = (take(&mut alone, 6), take(&mut mixed, 6));
    for (x, y) in a.iter().zip(&m) {
        assert_eq!(x.texts, y.texts);
        assert!(x.pixels == y.pixels);
    }
    assert_eq!(mixed.source_samples(), [24, 0]);
}

#[test]
fn a_mixture_of_shards_labels_and_scenes_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let shards = dir.path().join("shards");
    std::fs::create_dir(&shards).unwrap();
    let pattern = write_shards(&shards, 3, 5);
    let folders = dir.path().join("classes");
    write_class_folders(&folders, &["cat", "dog"], 4);
    let sources = || {
        vec![
            (TrainSource::Stream(Input::Shards(pattern.clone())), 1.0),
            (
                labelled(
                    LabelledInput::ClassFolders(folders.clone()),
                    &["cat", "dog"],
                ),
                2.0,
            ),
            (named("scene", 7), 1.0),
        ]
    };
    // Stop in the middle of several sources' epochs, at different points.
    for (k, m) in [(3, 9), (7, 6), (1, 4)] {
        assert_reopens_exactly(
            |state| TrainLoader::mixture(sources(), cfg(5, 21), state).unwrap(),
            k,
            m,
        );
    }
    let mut loader = TrainLoader::mixture(sources(), cfg(5, 21), LoaderState::default()).unwrap();
    assert_eq!(loader.source_sizes(), [15, 8, 7]);
    let texts: Vec<String> = take(&mut loader, 12)
        .into_iter()
        .flat_map(|b| b.texts)
        .collect();
    for (prefix, source) in [("caption ", 0), ("scene ", 2)] {
        let count = texts.iter().filter(|t| t.starts_with(prefix)).count() as u64;
        assert_eq!(count, loader.source_samples()[source], "{prefix}");
    }
    let state = loader.state();
    let json = serde_json::to_value(&state).unwrap();
    assert_eq!(json["sources"].as_array().unwrap().len(), 3);
}

#[test]
fn a_single_source_state_reads_and_writes_as_before() {
    // A checkpoint written before mixtures existed.
    let old = r#"{"epoch":2,"batches_in_epoch":3,"position":14,"skipped":{"corrupt_images":1,
        "missing_captions":0,"damaged_shards":0,"bad_records":0,"recent":["x"]}}"#;
    let state: LoaderState = serde_json::from_str(old).unwrap();
    assert_eq!((state.epoch, state.position), (2, 14));
    assert!(state.sources.is_empty() && state.source_samples().is_empty());
    let json = serde_json::to_value(&state).unwrap();
    assert!(json.get("sources").is_none(), "{json}");
    // Resuming it continues the single-source stream.
    let mut loader = TrainLoader::new(indexed(40), cfg(4, 1), state).unwrap();
    loader.next_batch().unwrap();
    assert_eq!(loader.state().position, 18);
    assert!(loader.source_samples().is_empty());
}

#[test]
fn bad_mixtures_are_refused_with_clear_messages() {
    let fails = |sources: Vec<(TrainSource, f64)>, state: LoaderState, needles: &[&str]| {
        let err = TrainLoader::mixture(sources, cfg(2, 0), state)
            .err()
            .unwrap();
        let msg = err.to_string();
        for n in needles {
            assert!(msg.contains(n), "`{msg}` lacks `{n}`");
        }
    };
    let two = |fa: f64, fb: f64| vec![(named("a", 10), fa), (named("b", 10), fb)];
    fails(
        two(1.0, -1.0),
        LoaderState::default(),
        &["mixture", "factor 2 is -1", "not negative"],
    );
    fails(
        two(f64::NAN, 1.0),
        LoaderState::default(),
        &["factor 1 is NaN"],
    );
    fails(
        two(0.0, 0.0),
        LoaderState::default(),
        &["every factor is 0"],
    );
    fails(Vec::new(), LoaderState::default(), &["no sources to mix"]);
    let saved = LoaderState {
        position: 4,
        sources: vec![SourceState::default(); 3],
        ..LoaderState::default()
    };
    fails(
        two(1.0, 1.0),
        saved.clone(),
        &["holds 3 source(s), this mixture has 2"],
    );
    let single = LoaderState {
        position: 4,
        ..LoaderState::default()
    };
    fails(
        two(1.0, 1.0),
        single,
        &["holds 0 source(s), this mixture has 2"],
    );
    // A source's own problems are reported as for a single source.
    fails(
        vec![
            (named("a", 10), 1.0),
            (
                TrainSource::Stream(Input::Shards("/nonexistent/{0..1}.tar".into())),
                1.0,
            ),
        ],
        LoaderState::default(),
        &["no shard of `/nonexistent/{0..1}.tar` exists"],
    );
    // A mixture's state is not a single source's.
    let err = TrainLoader::new(named("a", 10), cfg(2, 0), saved)
        .err()
        .unwrap();
    assert!(
        err.to_string()
            .contains("a mixture of 3 sources; this run reads one"),
        "{err}"
    );
    // The parser of open_clip's flag names the text.
    let err = coca_data::train::parse_upsampling_factors("1::4", 3)
        .unwrap_err()
        .to_string();
    assert!(err.contains("`1::4`: 2 factors for 3 sources"), "{err}");
}

#[test]
fn a_source_without_usable_samples_stops_the_mixture() {
    let broken: IndexedGet = Arc::new(|_| Err("generator failed".into()));
    let sources = vec![
        (named("a", 10), 1.0),
        (
            TrainSource::Indexed {
                len: 3,
                get: broken,
            },
            1.0,
        ),
    ];
    let mut loader = TrainLoader::mixture(sources, cfg(4, 0), LoaderState::default()).unwrap();
    let err = (0..10).find_map(|_| loader.next_batch().err()).unwrap();
    let msg = err.to_string();
    assert!(
        msg.contains("indexed source of 3 samples: no usable training samples")
            && msg.contains("its epoch 0 in the mixture gave no usable sample")
            && msg.contains("3 corrupt images"),
        "{msg}"
    );
}
