//! TensorBoard event files: written, read back with checksums verified, trimmed on resume.

use std::path::{Path, PathBuf};

use coca_runlog::{read_events, EventWriter, Record, RunlogError, Split};

fn event_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

/// (tag, step, value) of every scalar in the files of `dir`.
fn scalars(dir: &Path) -> Vec<(String, i64, f32)> {
    event_files(dir)
        .iter()
        .flat_map(|f| read_events(f).unwrap())
        .flat_map(|e| e.scalars.into_iter().map(move |(tag, v)| (tag, e.step, v)))
        .collect()
}

#[test]
fn writes_a_tensorboard_file_that_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let tb_dir = dir.path().join("tensorboard");
    let mut tb = EventWriter::create(&tb_dir).unwrap();
    tb.add_scalar("train/loss", 1, 2.5, 1000.5).unwrap();
    tb.add_scalar("train/loss", 2, 2.25, 1001.5).unwrap();
    let val = Record {
        step: 2,
        time: 1002.0,
        split: Split::Val,
        values: [
            ("zeroshot_top1".to_owned(), 0.75),
            ("retrieval_i2t_r1".to_owned(), 0.5),
        ]
        .into_iter()
        .collect(),
    };
    tb.add_record(&val).unwrap();
    tb.flush().unwrap();
    let path = tb.path().to_path_buf();
    drop(tb);

    let name = path.file_name().unwrap().to_str().unwrap();
    let parts: Vec<&str> = name.splitn(5, '.').collect();
    assert_eq!(&parts[..3], ["events", "out", "tfevents"], "{name}");
    assert!(parts[3].parse::<u64>().unwrap() > 1_600_000_000, "{name}");
    assert!(!parts[4].is_empty(), "host in {name}");
    assert_eq!(event_files(&tb_dir), std::slice::from_ref(&path));

    let bytes = std::fs::read(&path).unwrap();
    // TensorFlow's own files start with the same 12 bytes: the 24-byte file_version record's header.
    assert_eq!(&bytes[..12], b"\x18\0\0\0\0\0\0\0\xa3\x7fK\"");

    let events = read_events(&path).unwrap();
    assert_eq!(events.len(), 5);
    assert_eq!(events[0].file_version.as_deref(), Some("brain.Event:2"));
    assert!(events[0].scalars.is_empty());
    assert_eq!(events[1].scalars, [("train/loss".to_owned(), 2.5)]);
    assert_eq!((events[1].step, events[1].wall_time), (1, 1000.5));
    assert_eq!(events[2].step, 2);
    assert_eq!(
        events[3].scalars,
        [("val/retrieval_i2t_r1".to_owned(), 0.5)]
    );
    assert_eq!(events[4].scalars, [("val/zeroshot_top1".to_owned(), 0.75)]);
    assert_eq!((events[4].step, events[4].wall_time), (2, 1002.0));
}

#[test]
fn reader_tolerates_a_torn_tail_but_not_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let mut tb = EventWriter::create(dir.path()).unwrap();
    for step in 1..=3 {
        tb.add_scalar("train/loss", step, step as f32, 0.0).unwrap();
    }
    let path = tb.path().to_path_buf();
    drop(tb);
    let bytes = std::fs::read(&path).unwrap();

    std::fs::write(&path, &bytes[..bytes.len() - 7]).unwrap();
    assert_eq!(
        read_events(&path).unwrap().len(),
        3,
        "header + 2 whole scalars"
    );

    let mut flipped = bytes.clone();
    let last = flipped.len() - 10;
    flipped[last] ^= 0x40;
    std::fs::write(&path, &flipped).unwrap();
    let err = read_events(&path).unwrap_err();
    assert!(matches!(err, RunlogError::CorruptEvents { .. }), "{err}");
    assert!(err.to_string().contains("checksum mismatch"), "{err}");
}

#[test]
fn resume_drops_events_after_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let mut tb = EventWriter::create(dir.path()).unwrap();
    for step in 1..=10 {
        tb.add_scalar("train/loss", step, step as f32, step as f64)
            .unwrap();
    }
    let first = tb.path().to_path_buf();
    drop(tb);
    // Killed mid-record.
    let mut bytes = std::fs::read(&first).unwrap();
    bytes.extend_from_slice(&[0x20, 0, 0, 0, 0, 0, 0, 0, 1, 2]);
    std::fs::write(&first, &bytes).unwrap();

    let mut tb = EventWriter::resume(dir.path(), 6).unwrap();
    assert_ne!(tb.path(), first, "a new file for the resumed run");
    for step in 7..=8 {
        tb.add_scalar("train/loss", step, 100.0 + step as f32, 0.0)
            .unwrap();
    }
    drop(tb);

    let old = read_events(&first).unwrap();
    assert_eq!(
        old[0].file_version.as_deref(),
        Some("brain.Event:2"),
        "header kept"
    );
    let steps: Vec<i64> = old.iter().skip(1).map(|e| e.step).collect();
    assert_eq!(steps, [1, 2, 3, 4, 5, 6]);

    let all = scalars(dir.path());
    let after: Vec<(i64, f32)> = all.iter().filter(|s| s.1 > 6).map(|s| (s.1, s.2)).collect();
    assert_eq!(
        after,
        [(7, 107.0), (8, 108.0)],
        "only the resumed run's steps after 6"
    );
    assert_eq!(event_files(dir.path()).len(), 2, "no temporary file left");
}

#[test]
fn resume_cuts_a_damaged_file_at_the_damage() {
    let dir = tempfile::tempdir().unwrap();
    let mut tb = EventWriter::create(dir.path()).unwrap();
    for step in 1..=4 {
        tb.add_scalar("train/loss", step, step as f32, 0.0).unwrap();
    }
    let first = tb.path().to_path_buf();
    drop(tb);
    let mut bytes = std::fs::read(&first).unwrap();
    let n = bytes.len();
    bytes[n - 48 - 20] ^= 0x01; // inside the step-3 record (each scalar record is 48 bytes)
    std::fs::write(&first, &bytes).unwrap();
    assert!(read_events(&first).is_err());

    drop(EventWriter::resume(dir.path(), 10).unwrap());
    let steps: Vec<i64> = read_events(&first)
        .unwrap()
        .iter()
        .map(|e| e.step)
        .collect();
    assert_eq!(steps, [0, 1, 2], "header and the records before the damage");
}

#[test]
fn writers_started_together_get_distinct_files() {
    let dir = tempfile::tempdir().unwrap();
    let a = EventWriter::create(dir.path()).unwrap();
    let b = EventWriter::create(dir.path()).unwrap();
    assert_ne!(a.path(), b.path());
}
