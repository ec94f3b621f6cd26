//! `coca plot`: charts from a run's metrics.jsonl, and its error messages.

mod common;

use std::path::Path;

use common::{assert_fails_with, coca, stderr, stdout};

/// A small run log: 30 training steps, validation every 10.
fn write_metrics(run: &Path) {
    std::fs::create_dir_all(run).unwrap();
    let mut text = String::new();
    for step in 1..=30 {
        let loss = 6.0 / (1.0 + step as f64 * 0.2);
        text += &format!(
            "{{\"step\":{step},\"time\":{},\"split\":\"train\",\"loss\":{loss},\"loss_caption\":{},\"lr\":0.001}}\n",
            1_764_210_000 + step,
            loss * 0.6
        );
        if step % 10 == 0 {
            text += &format!(
                "{{\"step\":{step},\"time\":0,\"split\":\"val\",\"zeroshot_top1\":{}}}\n",
                step as f64 / 40.0
            );
        }
    }
    std::fs::write(run.join("metrics.jsonl"), text).unwrap();
}

fn arg(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn plot_writes_png_and_svg_per_chart() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    write_metrics(&run);
    let o = coca(&["plot", arg(&run)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let printed: Vec<String> = stdout(&o).lines().map(str::to_owned).collect();
    let plots = run.join("plots");
    let expected: Vec<String> = ["losses", "validation", "train_lr"]
        .iter()
        .flat_map(|c| [format!("{c}.png"), format!("{c}.svg")])
        .map(|f| plots.join(f).display().to_string())
        .collect();
    assert_eq!(printed, expected);
    for f in &printed {
        let bytes = std::fs::read(f).unwrap();
        if f.ends_with(".png") {
            assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{f}");
        } else {
            let svg = String::from_utf8(bytes).unwrap();
            assert!(
                svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"),
                "{f}"
            );
        }
    }
    let losses = std::fs::read_to_string(plots.join("losses.svg")).unwrap();
    assert!(losses.contains("train/loss_caption"));
}

#[test]
fn plot_with_prefix_and_metric_selection() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    write_metrics(&run);
    let prefix = dir.path().join("report/demo");
    let o = coca(&[
        "plot",
        arg(&run),
        "--output",
        arg(&prefix),
        "--metrics",
        "val/zeroshot_top1,lr",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let mut names: Vec<String> = std::fs::read_dir(dir.path().join("report"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "demo_train_lr.png",
            "demo_train_lr.svg",
            "demo_validation.png",
            "demo_validation.svg"
        ]
    );
    assert!(!run.join("plots").exists());
}

#[test]
fn plot_errors_name_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-run");
    assert_fails_with(
        &coca(&["plot", arg(&missing)]),
        &["no-such-run", "run directory not found"],
    );

    let run = dir.path().join("run");
    std::fs::create_dir_all(&run).unwrap();
    assert_fails_with(
        &coca(&["plot", arg(&run)]),
        &["run/metrics.jsonl", "no metrics file"],
    );

    write_metrics(&run);
    assert_fails_with(
        &coca(&["plot", arg(&run), "--metrics", "loss,accuracy"]),
        &[
            "no metric named accuracy",
            "train/loss_caption",
            "val/zeroshot_top1",
        ],
    );
    assert_fails_with(
        &coca(&["plot", arg(&run), "--smoothing", "1.5"]),
        &["smoothing must be in [0, 1)"],
    );

    let mut text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    text.insert_str(
        0,
        "{\"step\":0,\"time\":0,\"split\":\"train\",\"loss\":1}\n{\"step\": oops}\n",
    );
    std::fs::write(run.join("metrics.jsonl"), text).unwrap();
    assert_fails_with(
        &coca(&["plot", arg(&run)]),
        &["run/metrics.jsonl:2: malformed metrics line"],
    );
    assert!(!run.join("plots").exists(), "nothing written on error");
}
