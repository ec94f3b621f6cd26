//! `plot_run` on a synthetic run: every chart written as a decodable PNG and an SVG with its text.

use std::path::Path;

use coca_runlog::{plot_run, MetricsWriter, PlotOptions, RunlogError, Split};

/// A run of 400 steps: noisy decreasing losses, lr warmup + decay, validation every 50 steps.
fn synthetic_run(dir: &Path) {
    let mut log = MetricsWriter::create(dir).unwrap();
    let mut noise = 12345u64;
    for step in 1..=400u64 {
        noise = noise
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let jitter = ((noise >> 33) as f64 / (1u64 << 31) as f64 - 0.5) * 0.4;
        let t = step as f64 / 400.0;
        let con = 2.0 * (-3.0 * t).exp() + 0.1 + jitter * 0.5;
        let cap = 5.0 * (-2.0 * t).exp() + 0.6 + jitter;
        let lr = if step < 40 {
            5e-4 * step as f64 / 40.0
        } else {
            5e-4 * (1.0 - t)
        };
        log.log(
            step,
            Split::Train,
            &[
                ("loss", con + 2.0 * cap),
                ("loss_contrastive", con),
                ("loss_caption", cap),
                ("lr", lr),
                ("samples_per_s", 250.0 + 30.0 * jitter),
            ],
        )
        .unwrap();
        if step % 50 == 0 {
            log.log(
                step,
                Split::Val,
                &[
                    ("zeroshot_top1", 1.0 - (-4.0 * t).exp()),
                    ("retrieval_i2t_r1", 0.9 - 0.8 * (-3.0 * t).exp()),
                    ("caption_exact_match", t * t * 0.85),
                ],
            )
            .unwrap();
        }
    }
}

/// The contents of an SVG file's `<text>` elements.
fn svg_texts(path: &Path) -> Vec<String> {
    let svg = std::fs::read_to_string(path).unwrap();
    svg.split("<text")
        .skip(1)
        .map(|t| {
            let body = &t[t.find('>').unwrap() + 1..t.find("</text>").unwrap()];
            body.trim().to_owned()
        })
        .collect()
}

#[test]
fn plots_every_chart_as_png_and_svg() {
    let dir = tempfile::tempdir().unwrap();
    synthetic_run(dir.path());
    let files = plot_run(dir.path(), &PlotOptions::default()).unwrap();
    let names: Vec<String> = files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "losses.png",
            "losses.svg",
            "validation.png",
            "validation.svg",
            "train_lr.png",
            "train_lr.svg",
            "train_samples_per_s.png",
            "train_samples_per_s.svg",
        ]
    );
    for f in &files {
        assert_eq!(f.parent().unwrap(), dir.path().join("plots"));
    }
    // Only the outputs are left in plots/: no temporary files.
    assert_eq!(
        std::fs::read_dir(dir.path().join("plots")).unwrap().count(),
        8
    );

    let png = std::fs::read(&files[0]).unwrap();
    let decoder = png::Decoder::new(std::io::Cursor::new(png));
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut pixels).unwrap();
    assert_eq!((info.width, info.height), (1000, 600));
    // Not blank: white background, dark text and coloured curves.
    let dark = pixels
        .chunks(3)
        .filter(|p| p.iter().all(|&c| c < 80))
        .count();
    let blue = pixels
        .chunks(3)
        .filter(|p| p[2] > 150 && p[0] < 60 && p[1] < 140)
        .count();
    assert!(dark > 500, "too little text/axes: {dark} dark pixels");
    assert!(blue > 500, "no first curve: {blue} blue pixels");

    let texts = svg_texts(&files[1]);
    for text in [
        "Losses",
        "step",
        "loss",
        "train/loss_caption",
        "train/loss_contrastive",
        "train/loss",
        "200",
    ] {
        assert!(texts.iter().any(|t| t == text), "{text:?} not in {texts:?}");
    }
    let texts = svg_texts(&dir.path().join("plots/validation.svg"));
    for text in [
        "Validation",
        "val/zeroshot_top1",
        "val/caption_exact_match",
        "0.2",
        "1",
    ] {
        assert!(texts.iter().any(|t| t == text), "{text:?} not in {texts:?}");
    }
}

#[test]
fn metric_selection_and_output_prefix() {
    let dir = tempfile::tempdir().unwrap();
    synthetic_run(dir.path());
    let options = PlotOptions {
        output: Some(dir.path().join("out/run1")),
        metrics: Some(vec!["loss_caption".into(), "val/zeroshot_top1".into()]),
        smoothing: 0.0,
        ..PlotOptions::default()
    };
    let files = plot_run(dir.path(), &options).unwrap();
    let names: Vec<String> = files
        .iter()
        .map(|p| p.strip_prefix(dir.path()).unwrap().display().to_string())
        .collect();
    assert_eq!(
        names,
        [
            "out/run1_losses.png",
            "out/run1_losses.svg",
            "out/run1_validation.png",
            "out/run1_validation.svg"
        ]
    );
    let svg = std::fs::read_to_string(dir.path().join("out/run1_losses.svg")).unwrap();
    assert!(svg.contains("train/loss_caption"));
    assert!(!svg.contains("train/loss_contrastive"));

    let unknown = PlotOptions {
        metrics: Some(vec!["loss".into(), "accuracy".into()]),
        ..PlotOptions::default()
    };
    let err = plot_run(dir.path(), &unknown).unwrap_err();
    assert!(
        matches!(err, RunlogError::UnknownMetrics { ref missing, .. } if missing == &["accuracy"])
    );
    assert!(err.to_string().contains("train/lr"), "{err}");
}

#[test]
fn errors_name_the_run_and_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let err = plot_run(&missing, &PlotOptions::default()).unwrap_err();
    assert!(matches!(err, RunlogError::RunDirNotFound { .. }), "{err}");

    let err = plot_run(dir.path(), &PlotOptions::default()).unwrap_err();
    assert!(matches!(err, RunlogError::MetricsNotFound { .. }), "{err}");
    assert!(err.to_string().contains("metrics.jsonl"));

    std::fs::write(dir.path().join("metrics.jsonl"), "").unwrap();
    let err = plot_run(dir.path(), &PlotOptions::default()).unwrap_err();
    assert!(matches!(err, RunlogError::NothingToPlot { .. }), "{err}");

    std::fs::write(
        dir.path().join("metrics.jsonl"),
        "{\"step\":1,\"time\":0,\"split\":\"train\",\"loss\":1}\nnot json\n{\"step\":2,\"time\":0,\"split\":\"train\",\"loss\":1}\n",
    )
    .unwrap();
    let err = plot_run(dir.path(), &PlotOptions::default()).unwrap_err();
    assert!(
        err.to_string().contains("metrics.jsonl:2: malformed"),
        "{err}"
    );

    let bad = PlotOptions {
        smoothing: 1.0,
        ..PlotOptions::default()
    };
    assert!(matches!(
        plot_run(dir.path(), &bad),
        Err(RunlogError::InvalidOption(_))
    ));
    assert!(
        !dir.path().join("plots").exists(),
        "nothing written on error"
    );
}
