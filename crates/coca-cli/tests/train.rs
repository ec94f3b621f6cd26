//! `coca train` end to end: a killed run resumes to the same losses, fine-tuning on real photos, and every
//! error path of the data, the checkpoints and the loss.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{assert_fails_with, coca, command, root, stderr, stdout};

/// A CoCa small enough to train in a test (CLIP vocabulary, 32-px images, 12-token context).
const MICRO: &str = "fixtures/train/scenes_micro.json";

fn train_args<'a>(out: &'a str, steps: &'a str) -> Vec<&'a str> {
    vec![
        "-q",
        "train",
        "--model",
        MICRO,
        "--train-data",
        "synthetic",
        "--batch-size",
        "8",
        "--steps",
        steps,
        "--warmup",
        "3",
        "--lr",
        "1e-3",
        "--save-every",
        "5",
        "--keep-checkpoints",
        "0",
        "--val-samples",
        "0",
        "--seed",
        "3",
        "--output",
        out,
    ]
}

/// Train losses by step from a run's metrics.jsonl.
fn losses(run: &Path) -> Vec<(u64, f64)> {
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    text.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["split"] == "train")
        .map(|v| (v["step"].as_u64().unwrap(), v["loss"].as_f64().unwrap()))
        .collect()
}

#[test]
fn a_killed_run_resumes_to_the_uninterrupted_losses() {
    let tmp = tempfile::tempdir().unwrap();
    let whole = tmp.path().join("whole");
    let killed = tmp.path().join("killed");
    let (whole_s, killed_s) = (whole.to_str().unwrap(), killed.to_str().unwrap());

    let o = coca(&train_args(whole_s, "40"));
    assert!(o.status.success(), "{}", common::stderr(&o));
    let reference = losses(&whole);
    assert_eq!(reference.len(), 40);

    // SIGKILL the second run as soon as its second checkpoint exists, mid-training.
    let mut child = command()
        .args(train_args(killed_s, "40"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let marker = killed.join("checkpoints/step_00000010/state.json");
    let started = Instant::now();
    while !marker.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "no checkpoint appeared"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it could be killed"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let before: Vec<u64> = losses(&killed).iter().map(|(s, _)| *s).collect();
    assert!(
        before.len() < 40,
        "killed too late: {} steps logged",
        before.len()
    );

    let mut resume = train_args(killed_s, "40");
    resume.extend(["--resume", "latest"]);
    // The same command line starts a run that has no checkpoint yet (as open_clip's --resume latest).
    let fresh = tmp.path().join("fresh");
    let mut first = train_args(fresh.to_str().unwrap(), "3");
    first.extend(["--resume", "latest"]);
    let o = coca(&first);
    assert!(o.status.success(), "{}", common::stderr(&o));
    assert_eq!(losses(&fresh).len(), 3);
    let o = coca(&resume);
    assert!(o.status.success(), "{}", common::stderr(&o));
    let resumed = losses(&killed);
    let steps: Vec<u64> = resumed.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        steps,
        (1..=40).collect::<Vec<_>>(),
        "every step logged once"
    );
    for ((step, a), (_, b)) in reference.iter().zip(&resumed) {
        assert!(
            (a - b).abs() <= 1e-6,
            "step {step}: {a} uninterrupted vs {b} resumed"
        );
    }
    // The final weights are usable by inference commands.
    let cfg = killed.join("model_config.json");
    let weights = killed.join("model.safetensors");
    let o = coca(&[
        "caption",
        "--model",
        cfg.to_str().unwrap(),
        "--pretrained",
        weights.to_str().unwrap(),
        "--strategy",
        "greedy",
        "--json",
        "fixtures/images/sources/chelsea.png",
    ]);
    assert!(o.status.success(), "{}", common::stderr(&o));
    assert!(stdout(&o).contains("caption"));
}

#[test]
fn fine_tunes_the_demo_model_on_real_photos_from_a_csv() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("ft");
    let o = coca(&[
        "-q",
        "train",
        "--model",
        common::DEMO_CFG,
        "--pretrained",
        common::DEMO_WEIGHTS,
        "--train-data",
        "fixtures/train/photos.csv",
        "--csv-separator",
        ",",
        "--val-data",
        "fixtures/train/photos.csv",
        "--val-samples",
        "8",
        "--batch-size",
        "4",
        "--steps",
        "4",
        "--warmup",
        "1",
        "--lr",
        "1e-4",
        "--lock-image",
        "--lock-image-unlocked-groups",
        "1",
        "--save-every",
        "2",
        "--output",
        out.to_str().unwrap(),
        "--json",
    ]);
    assert!(o.status.success(), "{}", common::stderr(&o));
    let summary: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(summary["steps"], 4);
    assert_eq!(summary["skipped_samples"], 0);
    for key in [
        "retrieval_i2t_r1",
        "retrieval_t2i_r1",
        "caption_exact_match",
    ] {
        let v = summary["validation"][key].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&v), "{key} = {v}");
    }
    // Locked stem: the patch embedding did not move; the unlocked head did.
    let start = coca_checkpoint::Checkpoint::open(root().join(common::DEMO_WEIGHTS)).unwrap();
    let end = coca_checkpoint::Checkpoint::open(out.join("model.safetensors")).unwrap();
    let get = |c: &coca_checkpoint::Checkpoint, n: &str| {
        c.get(n, candle_core::DType::F32, &candle_core::Device::Cpu)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    };
    assert_eq!(
        get(&start, "visual.conv1.weight"),
        get(&end, "visual.conv1.weight")
    );
    assert_ne!(get(&start, "visual.proj"), get(&end, "visual.proj"));
    assert!(out.join("samples/step_00000004.json").exists());
    assert!(out
        .join("checkpoints/step_00000002/model.safetensors")
        .exists());
}

#[test]
fn bad_training_inputs_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let out_s = out.to_str().unwrap();
    let base = |data: &str| {
        vec![
            "train".to_string(),
            "--model".into(),
            MICRO.into(),
            "--train-data".into(),
            data.into(),
            "--steps".into(),
            "2".into(),
            "--warmup".into(),
            "1".into(),
            "--output".into(),
            out_s.into(),
        ]
    };
    let run = |args: Vec<String>| {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        coca(&refs)
    };
    assert_fails_with(
        &run(base("fixtures/nothing/{000..003}.tar")),
        &["fixtures/nothing"],
    );
    let empty = tmp.path().join("empty.tar");
    std::fs::write(&empty, b"").unwrap();
    assert_fails_with(&run(base(empty.to_str().unwrap())), &["empty.tar"]);
    let mut csv = base("fixtures/train/photos.csv");
    csv.extend([
        "--csv-separator".into(),
        ",".into(),
        "--csv-caption-key".into(),
        "caption".into(),
    ]);
    assert_fails_with(&run(csv), &["caption"]);
    let mut one_class = base("fixtures/train/photos.csv");
    one_class.extend(
        [
            "--csv-separator",
            ",",
            "--val-data",
            "fixtures/train/photos.csv",
            "--val-zeroshot",
            "fixtures/train/zeroshot/cup_of_coffee",
        ]
        .map(String::from),
    );
    assert_fails_with(&run(one_class), &["cup_of_coffee", "two class sub-folders"]);
    let mut no_model = base("synthetic");
    no_model.drain(1..3);
    assert_fails_with(&run(no_model), &["--model"]);

    // Resume with another architecture.
    let o = coca(&train_args(out_s, "2"));
    assert!(o.status.success(), "{}", common::stderr(&o));
    let mut other = vec![
        "train",
        "--model",
        common::DEMO_CFG,
        "--train-data",
        "synthetic",
        "--steps",
        "3",
        "--warmup",
        "1",
        "--output",
        out_s,
        "--resume",
        "latest",
    ];
    assert_fails_with(&coca(&other), &["step_00000002", "different model config"]);
    // Starting over in a used directory without --resume.
    other.truncate(11);
    assert_fails_with(&coca(&other), &["--resume latest"]);
}

#[test]
fn a_diverging_run_stops_at_the_bad_step_and_names_the_last_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("nan");
    let o = coca(&[
        "train",
        "--model",
        MICRO,
        "--train-data",
        "synthetic",
        "--batch-size",
        "4",
        "--steps",
        "200",
        "--warmup",
        "1",
        "--lr",
        "1e30",
        "--wd",
        "0",
        "--save-every",
        "1",
        "--val-samples",
        "0",
        "--output",
        out.to_str().unwrap(),
    ]);
    assert_fails_with(&o, &["at step", "Last good checkpoint", "step_0000"]);
}

/// `--precision amp_bf16` trains from f32 master weights with bf16 compute: the run finishes and its losses
/// follow the f32 run's within bf16 error.
#[test]
fn bf16_mixed_precision_follows_the_f32_run() {
    let tmp = tempfile::tempdir().unwrap();
    let (f32_dir, bf16_dir) = (tmp.path().join("f32"), tmp.path().join("bf16"));
    let f32_out = f32_dir.to_str().unwrap();
    let bf16_out = bf16_dir.to_str().unwrap();
    let o = coca(&train_args(f32_out, "6"));
    assert!(o.status.success(), "{}", common::stderr(&o));
    let mut args = train_args(bf16_out, "6");
    args.extend(["--precision", "amp_bf16"]);
    let o = coca(&args);
    assert!(o.status.success(), "{}", common::stderr(&o));
    let (a, b) = (losses(&f32_dir), losses(&bf16_dir));
    assert_eq!(a.len(), 6);
    assert_eq!(b.len(), 6);
    for ((step, x), (_, y)) in a.iter().zip(&b) {
        assert!(y.is_finite(), "step {step}: {y}");
        assert!(
            ((x - y) / x).abs() < 5e-2,
            "step {step}: f32 {x} vs bf16 {y}"
        );
    }
    assert_ne!(a, b, "bf16 compute should round differently from f32");
}

/// `--grad-checkpointing` recomputes every residual block in the backward: the same gradients, so the same
/// losses step for step, and the same final weights.
#[test]
fn grad_checkpointing_trains_to_the_same_losses() {
    let tmp = tempfile::tempdir().unwrap();
    let (plain_dir, ckpt_dir) = (tmp.path().join("plain"), tmp.path().join("ckpt"));
    let o = coca(&train_args(plain_dir.to_str().unwrap(), "4"));
    assert!(o.status.success(), "{}", common::stderr(&o));
    let mut args = train_args(ckpt_dir.to_str().unwrap(), "4");
    args.push("--grad-checkpointing");
    let o = coca(&args);
    assert!(o.status.success(), "{}", common::stderr(&o));
    let (a, b) = (losses(&plain_dir), losses(&ckpt_dir));
    assert_eq!(a.len(), 4);
    assert_eq!(a, b);
    let weights = |dir: &Path| std::fs::read(dir.join("model.safetensors")).unwrap();
    assert_eq!(weights(&plain_dir), weights(&ckpt_dir));
}

#[test]
fn without_a_terminal_progress_is_logged_as_lines() {
    // stderr is a pipe here, as under nohup, `| tee` or CI: a bar would show nothing until the end.
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let mut args = train_args(out.to_str().unwrap(), "3");
    args.remove(0); // not -q
    args.splice(0..0, ["--progress-interval", "0"]);
    let o = coca(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    for step in 1..=3 {
        let line = err
            .lines()
            .find(|l| l.starts_with(&format!("training: {step}/3 steps (")))
            .unwrap_or_else(|| panic!("no progress line for step {step} in:\n{err}"));
        assert!(
            line.contains("steps/s") && line.contains("elapsed; loss "),
            "{line}"
        );
    }
    // -q silences it.
    let quiet = tmp.path().join("quiet");
    let mut args = train_args(quiet.to_str().unwrap(), "3");
    args.splice(0..0, ["--progress-interval", "0"]);
    let o = coca(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).contains("training: "), "{}", stderr(&o));
}

/// Class folders of fixture photos (3 classes, 8 images) and their class names, under `dir`.
fn class_folders(dir: &Path) -> (String, String) {
    let classes: [(&str, &[&str]); 3] = [
        ("1_cat", &["chelsea_422.jpg", "chelsea_exif_rot6.jpg"]),
        (
            "2_coffee",
            &[
                "coffee_tiny_37x23.jpg",
                "coffee_progressive.jpg",
                "coffee.webp",
            ],
        ),
        (
            "3_pattern",
            &["palette.png", "small_50x40.bmp", "palette.bmp"],
        ),
    ];
    let root = dir.join("classes");
    for (class, files) in classes {
        std::fs::create_dir_all(root.join(class)).unwrap();
        for f in files {
            std::fs::copy(
                common::root().join("fixtures/images/sources").join(f),
                root.join(class).join(f),
            )
            .unwrap();
        }
    }
    let names = dir.join("classnames.txt");
    std::fs::write(&names, "cat\ncup of coffee\ncolour pattern\n").unwrap();
    (
        root.to_str().unwrap().to_string(),
        names.to_str().unwrap().to_string(),
    )
}

/// A tiny run on a mixture of labelled class folders (8 images) and the captioned photos CSV (8 rows) with
/// factors 1::3, at a constant learning rate so that a shorter run is a prefix of a longer one.
fn mixture_args(classes: &str, names: &str, out: &str, steps: &str) -> Vec<String> {
    [
        "-q",
        "train",
        "--model",
        MICRO,
        "--train-data",
        &format!("labels:{classes}::fixtures/train/photos.csv"),
        "--train-data-upsampling-factors",
        "1::3",
        "--classnames",
        names,
        "--label-templates",
        "simple",
        "--csv-separator",
        ",",
        "--batch-size",
        "4",
        "--steps",
        steps,
        "--warmup",
        "2",
        "--lr-scheduler",
        "const",
        "--lr",
        "1e-3",
        "--save-every",
        "6",
        "--keep-checkpoints",
        "0",
        "--val-samples",
        "0",
        "--workers",
        "2",
        "--seed",
        "5",
        "--output",
        out,
        "--json",
    ]
    .map(String::from)
    .to_vec()
}

fn run_strings(args: &[String]) -> std::process::Output {
    coca(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// Per-source sample counts by step from a run's metrics.jsonl.
fn source_samples(run: &Path) -> Vec<(u64, u64, u64)> {
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    text.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["split"] == "train")
        .map(|v| {
            let n = |i: usize| v[format!("source_samples/{i}")].as_f64().unwrap() as u64;
            (v["step"].as_u64().unwrap(), n(0), n(1))
        })
        .collect()
}

#[test]
fn a_mixture_of_labels_and_captions_follows_its_factors_and_resumes_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let (classes, names) = class_folders(tmp.path());
    let whole = tmp.path().join("whole");
    let mut args = mixture_args(&classes, &names, whole.to_str().unwrap(), "30");
    // Progress lines (not -q) with the per-source counts.
    args.splice(0..1, ["--progress-interval".to_string(), "0".to_string()]);
    let o = run_strings(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let summary: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let err = stderr(&o);
    let last = err
        .lines()
        .find(|l| l.starts_with("training: 30/30 steps ("))
        .unwrap_or_else(|| panic!("no progress line for step 30 in:\n{err}"));

    // Weights 1·8 and 3·8: the class folders' expected share is 1/4 of the 120 samples, 30, with a binomial
    // standard deviation of sqrt(120·1/4·3/4) ≈ 4.7; allow 4 of them.
    let sources = summary["sources"].as_array().unwrap();
    assert_eq!(sources.len(), 2);
    let field = |i: usize, k: &str| sources[i][k].as_f64().unwrap();
    assert_eq!((field(0, "size"), field(1, "size")), (8.0, 8.0));
    assert_eq!((field(0, "factor"), field(1, "factor")), (1.0, 3.0));
    let (labelled, captioned) = (field(0, "samples"), field(1, "samples"));
    assert_eq!(labelled + captioned, 120.0);
    assert!((labelled - 30.0).abs() <= 4.0 * 4.75, "{labelled} of 120");
    // The counts are logged with every step and add up to the samples trained so far.
    let counts = source_samples(&whole);
    assert_eq!(counts.len(), 30);
    for (step, a, b) in &counts {
        assert_eq!(a + b, step * 4, "step {step}");
    }
    assert_eq!(counts[29].1 as f64, labelled);
    assert!(
        last.contains(&format!(
            "samples by source: labels:{classes} {labelled}, fixtures/train/photos.csv {captioned}"
        )),
        "{last}"
    );

    // The run records the class names and templates its captions came from.
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(whole.join("train_data.json")).unwrap()).unwrap();
    assert_eq!(
        record["labels"]["classnames"],
        serde_json::json!(["cat", "cup of coffee", "colour pattern"])
    );
    let simple: Vec<String> = coca_zeroshot::lists::resolve_templates("simple", None)
        .unwrap()
        .iter()
        .map(|t| t.as_str().to_string())
        .collect();
    assert_eq!(record["labels"]["templates"], serde_json::json!(simple));
    assert_eq!(record["upsampling_factors"], serde_json::json!([1.0, 3.0]));

    // Stopped at step 12 and resumed to 30: the same losses and the same per-source counts.
    let parts = tmp.path().join("parts");
    let parts_s = parts.to_str().unwrap();
    let o = run_strings(&mixture_args(&classes, &names, parts_s, "12"));
    assert!(o.status.success(), "{}", stderr(&o));
    let mut resume = mixture_args(&classes, &names, parts_s, "30");
    resume.extend(["--resume".to_string(), "latest".to_string()]);
    let o = run_strings(&resume);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(losses(&parts), losses(&whole));
    assert_eq!(source_samples(&parts), counts);

    // Resuming with other templates would caption the same images otherwise: refused.
    let mut other = mixture_args(&classes, &names, parts_s, "31");
    let i = other.iter().position(|a| a == "--label-templates").unwrap();
    other[i + 1] = "openai".into();
    other.remove(0);
    other.extend(["--resume".to_string(), "latest".to_string()]);
    assert_fails_with(
        &run_strings(&other),
        &[
            "train_data.json",
            "other labelled data, class names or templates",
        ],
    );
    assert_eq!(losses(&parts).len(), 30);
}

#[test]
fn bad_labels_and_mixtures_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let (classes, names) = class_folders(tmp.path());
    let out = tmp.path().join("run");
    let out_s = out.to_str().unwrap();
    let with = |edit: &dyn Fn(&mut Vec<String>)| {
        let mut args = mixture_args(&classes, &names, out_s, "3");
        args.remove(0);
        edit(&mut args);
        run_strings(&args)
    };
    let set = |flag: &'static str, value: String| {
        move |args: &mut Vec<String>| {
            let i = args.iter().position(|a| a == flag).unwrap();
            args[i + 1] = value.clone();
        }
    };
    assert_fails_with(
        &with(&set("--train-data-upsampling-factors", "1::2::3".into())),
        &["--train-data-upsampling-factors", "3 factors for 2 sources"],
    );
    assert_fails_with(
        &with(&set("--label-templates", "fancy".into())),
        &[
            "--label-templates fancy",
            "unknown built-in template set `fancy`",
        ],
    );
    assert_fails_with(
        &with(&set("--train-data", format!("labels:{classes}::"))),
        &["source 2 is empty"],
    );
    let two_names = tmp.path().join("two.txt");
    std::fs::write(&two_names, "cat\ncup of coffee\n").unwrap();
    assert_fails_with(
        &with(&set("--classnames", two_names.to_str().unwrap().into())),
        &[&classes, "3 class folders but 2 class names"],
    );
    // A labelled CSV whose label is not one of the classes.
    let csv = tmp.path().join("labels.csv");
    std::fs::write(
        &csv,
        "filepath,label\nfixtures/images/sources/chelsea.png,cat\nfixtures/images/sources/rocket.jpg,rocket\n",
    )
    .unwrap();
    let labelled_csv = format!("labels:{}", csv.display());
    let o = with(&|args: &mut Vec<String>| {
        set("--train-data", labelled_csv.clone())(args);
        set("--train-data-upsampling-factors", "1".into())(args);
        args.extend(["--csv-label-key".into(), "label".into()]);
    });
    assert_fails_with(
        &o,
        &[
            csv.to_str().unwrap(),
            "\"rocket\" is neither a class index below 3 nor one of the class names",
        ],
    );
    let o = with(&|args: &mut Vec<String>| {
        set("--train-data", labelled_csv.clone())(args);
        set("--train-data-upsampling-factors", "1".into())(args);
    });
    assert_fails_with(&o, &["labels.csv", "give --csv-label-key COLUMN"]);
    // Labels without class names, class names without labels.
    let o = with(&|args: &mut Vec<String>| {
        let i = args.iter().position(|a| a == "--classnames").unwrap();
        args.drain(i..i + 2);
    });
    assert_fails_with(&o, &["labelled data needs --classnames"]);
    let o = with(&set(
        "--train-data",
        "fixtures/train/photos.csv::fixtures/train/photos.csv".into(),
    ));
    assert_fails_with(
        &o,
        &["--classnames names the classes of labelled training data"],
    );
    // Zero-shot validation names its class folders by the training class names.
    let o = with(&|args: &mut Vec<String>| {
        args.extend(
            [
                "--val-data",
                "fixtures/train/photos.csv",
                "--val-samples",
                "4",
                "--val-zeroshot",
                "fixtures/train/zeroshot",
            ]
            .map(String::from),
        );
        let i = args.iter().position(|a| a == "--val-samples").unwrap();
        args.drain(i..i + 2);
    });
    assert_fails_with(
        &o,
        &["--val-zeroshot fixtures/train/zeroshot: 2 class folders but --classnames"],
    );
    assert!(!out.join("checkpoints").exists());
}

#[test]
fn labelled_shards_train_and_a_label_outside_the_classes_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, names) = class_folders(tmp.path());
    let image = std::fs::read(root().join("fixtures/images/sources/palette.png")).unwrap();
    // Labels as class indices and as class names (CLIP_benchmark writes indices).
    let labels = [
        "0",
        "1",
        "2",
        "cat",
        "cup of coffee",
        "colour pattern",
        "1",
        "2",
    ];
    let files: Vec<(String, Vec<u8>)> = labels
        .iter()
        .enumerate()
        .flat_map(|(i, label)| {
            [
                (format!("{i:06}.png"), image.clone()),
                (format!("{i:06}.cls"), label.as_bytes().to_vec()),
            ]
        })
        .collect();
    let write = |path: &Path, files: &[(String, Vec<u8>)]| {
        let entries: Vec<(&str, &[u8])> = files
            .iter()
            .map(|(n, d)| (n.as_str(), d.as_slice()))
            .collect();
        common::write_shard(path, &entries);
    };
    let shard = tmp.path().join("labelled.tar");
    write(&shard, &files);
    let out = tmp.path().join("run");
    let mut args = mixture_args("unused", &names, out.to_str().unwrap(), "3");
    let i = args.iter().position(|a| a == "--train-data").unwrap();
    args[i + 1] = format!("labels:{}", shard.display());
    args[i + 3] = "1".into();
    let o = run_strings(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let summary: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(summary["steps"], 3);
    assert_eq!(summary["skipped_samples"], 0);
    assert!(summary.get("sources").is_none(), "one source is no mixture");

    let mut bad = files.clone();
    bad[5].1 = b"7".to_vec();
    write(&shard, &bad);
    let out = tmp.path().join("bad");
    let at = args.len() - 2;
    args[at] = out.to_str().unwrap().into();
    args.remove(0);
    assert_fails_with(
        &run_strings(&args),
        &["000002.cls", "label 7 is outside the 3 class names"],
    );
}
