//! `metrics.jsonl`: round trips, crash tolerance and resume trimming.

use std::path::Path;

use coca_runlog::{read_metrics, MetricsWriter, Record, RunlogError, Split, METRICS_FILE};

fn steps(path: &Path) -> Vec<(u64, Split)> {
    read_metrics(path)
        .unwrap()
        .iter()
        .map(|r| (r.step, r.split))
        .collect()
}

/// Train lines for steps 1..=n, a val line every 3 steps.
fn write_run(dir: &Path, n: u64) {
    let mut log = MetricsWriter::create(dir).unwrap();
    for step in 1..=n {
        log.log(step, Split::Train, &[("loss", 10.0 / step as f64)])
            .unwrap();
        if step % 3 == 0 {
            log.log(step, Split::Val, &[("zeroshot_top1", 0.1 * step as f64)])
                .unwrap();
        }
    }
}

fn append_raw(path: &Path, text: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

#[test]
fn records_round_trip_with_fixed_keys_first() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = MetricsWriter::create(dir.path().join("run")).unwrap();
    let record = Record {
        step: 7,
        time: 1_764_210_000.25,
        split: Split::Train,
        values: [
            ("loss".to_owned(), 2.5),
            ("lr".to_owned(), 1e-4),
            ("bad".to_owned(), f64::NAN),
        ]
        .into_iter()
        .collect(),
    };
    log.write(&record).unwrap();
    log.sync().unwrap();
    let path = dir.path().join("run").join(METRICS_FILE);
    assert_eq!(log.path(), path);
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        text,
        "{\"step\":7,\"time\":1764210000.25,\"split\":\"train\",\"bad\":null,\"loss\":2.5,\"lr\":0.0001}\n"
    );
    let back = read_metrics(&path).unwrap();
    assert_eq!(back.len(), 1);
    assert_eq!(
        (back[0].step, back[0].time, back[0].split),
        (7, 1_764_210_000.25, Split::Train)
    );
    assert_eq!(back[0].get("loss"), Some(2.5));
    assert_eq!(back[0].get("lr"), Some(1e-4));
    assert!(
        back[0].get("bad").unwrap().is_nan(),
        "null reads back as NaN"
    );
}

#[test]
fn create_refuses_an_existing_log_and_reserved_names() {
    let dir = tempfile::tempdir().unwrap();
    write_run(dir.path(), 2);
    let err = MetricsWriter::create(dir.path()).unwrap_err();
    assert!(matches!(err, RunlogError::MetricsExist { .. }), "{err}");
    assert!(err.to_string().contains("metrics.jsonl"), "{err}");

    let mut log = MetricsWriter::open_append(dir.path()).unwrap();
    for name in ["step", "split", "time", ""] {
        let err = log.log(3, Split::Train, &[(name, 1.0)]).unwrap_err();
        assert!(matches!(err, RunlogError::InvalidName { .. }), "{err}");
    }
    assert_eq!(
        steps(&dir.path().join(METRICS_FILE)).len(),
        2,
        "nothing written by refused records"
    );
}

#[test]
fn reader_skips_only_a_torn_last_line() {
    let dir = tempfile::tempdir().unwrap();
    write_run(dir.path(), 4);
    let path = dir.path().join(METRICS_FILE);
    append_raw(&path, "{\"step\":5,\"time\":17642");
    assert_eq!(steps(&path).len(), 5, "4 train + 1 val, torn line skipped");

    // Garbage that is not even UTF-8 at the tail is also a torn write.
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.truncate(bytes.len() - 5);
    bytes.extend_from_slice(&[0xff, 0xfe, 0x00]);
    std::fs::write(&path, &bytes).unwrap();
    assert_eq!(steps(&path).len(), 5);

    // The same damage on a complete line (newline written) is an error naming the line.
    append_raw(
        &path,
        "\n{\"step\":6,\"time\":1,\"split\":\"train\",\"loss\":1}\n",
    );
    let err = read_metrics(&path).unwrap_err();
    assert!(
        matches!(err, RunlogError::MalformedLine { line: 6, .. }),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("metrics.jsonl:6: malformed metrics line"),
        "{err}"
    );
}

#[test]
fn reader_reports_bad_fields_with_their_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(METRICS_FILE);
    let cases = [
        ("[1,2]", "not a JSON object"),
        ("{\"time\":1,\"split\":\"train\"}", "no \"step\""),
        (
            "{\"step\":-1,\"time\":1,\"split\":\"train\"}",
            "\"step\" is not a non-negative integer",
        ),
        (
            "{\"step\":1,\"time\":1,\"split\":\"test\"}",
            "unknown split \"test\"",
        ),
        (
            "{\"step\":1,\"time\":1,\"split\":\"val\",\"acc\":\"high\"}",
            "metric \"acc\" is not a number",
        ),
    ];
    for (line, reason) in cases {
        std::fs::write(&path, format!("\n{line}\n")).unwrap();
        let err = read_metrics(&path).unwrap_err().to_string();
        assert!(
            err.contains(":2: malformed") && err.contains(reason),
            "{line}: {err}"
        );
    }
    std::fs::write(&path, "  \n\n").unwrap();
    assert!(
        read_metrics(&path).unwrap().is_empty(),
        "blank lines are fine"
    );
}

#[test]
fn resume_drops_later_steps_and_the_torn_line_atomically() {
    let dir = tempfile::tempdir().unwrap();
    write_run(dir.path(), 10);
    let path = dir.path().join(METRICS_FILE);
    append_raw(&path, "{\"step\":11,\"time\":1764210000.5,\"split\":\"tr"); // killed mid-write
    let before = std::fs::read_to_string(&path).unwrap();

    // The checkpoint was saved at step 6: steps 7.. will be trained again.
    let mut log = MetricsWriter::resume(dir.path(), 6).unwrap();
    assert_eq!(
        log.dropped_on_resume(),
        4 + 1 + 1,
        "train 7-10, val 9, the torn line"
    );
    let kept = std::fs::read_to_string(&path).unwrap();
    assert!(before.starts_with(&kept), "kept lines are byte-identical");
    let expected: Vec<(u64, Split)> = (1..=6)
        .flat_map(|s| {
            let val = (s % 3 == 0).then_some((s, Split::Val));
            std::iter::once((s, Split::Train)).chain(val)
        })
        .collect();
    assert_eq!(steps(&path), expected);

    for step in 7..=8 {
        log.log(step, Split::Train, &[("loss", 1.0)]).unwrap();
    }
    drop(log);
    let all = steps(&path);
    assert_eq!(all.len(), expected.len() + 2);
    assert_eq!(all.last(), Some(&(8, Split::Train)));
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, [METRICS_FILE], "no temporary file left");
}

#[test]
fn resume_refuses_a_damaged_middle_and_creates_a_missing_log() {
    let dir = tempfile::tempdir().unwrap();
    write_run(dir.path(), 3);
    let path = dir.path().join(METRICS_FILE);
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.insert_str(0, "{oops}\n");
    std::fs::write(&path, &text).unwrap();
    let err = MetricsWriter::resume(dir.path(), 2).unwrap_err();
    assert!(
        matches!(err, RunlogError::MalformedLine { line: 1, .. }),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        text,
        "left untouched"
    );

    let fresh = dir.path().join("fresh");
    let mut log = MetricsWriter::resume(&fresh, 100).unwrap();
    assert_eq!(log.dropped_on_resume(), 0);
    log.log(101, Split::Train, &[("loss", 1.0)]).unwrap();
    assert_eq!(steps(&fresh.join(METRICS_FILE)), [(101, Split::Train)]);
}

#[test]
fn open_append_repairs_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    write_run(dir.path(), 2);
    let path = dir.path().join(METRICS_FILE);
    append_raw(&path, "{\"step\":3,\"ti");
    let mut log = MetricsWriter::open_append(dir.path()).unwrap();
    log.log(3, Split::Train, &[("loss", 3.0)]).unwrap();
    assert_eq!(steps(&path).last(), Some(&(3, Split::Train)));
    assert_eq!(steps(&path).len(), 3);
    drop(log);

    // A whole record that only lost its newline is kept.
    append_raw(
        &path,
        "{\"step\":4,\"time\":1,\"split\":\"val\",\"acc\":0.5}",
    );
    let mut log = MetricsWriter::open_append(dir.path()).unwrap();
    log.log(5, Split::Train, &[("loss", 3.0)]).unwrap();
    let all = steps(&path);
    assert_eq!(&all[3..], [(4, Split::Val), (5, Split::Train)]);
}
