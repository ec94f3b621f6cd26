//! `coca eval` end to end with the demo checkpoint on small datasets written in the test: every task's
//! metrics are recomputed here by brute force from `coca classify` / `coca embed` / `coca caption`
//! outputs, the dataset layouts must agree with each other, captioning metrics must equal pycocoevalcap's
//! on its fixture, and bad inputs must fail with messages that name them.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::{json, Value};

use common::{assert_fails_with, command, root, stderr, DEMO_CFG, DEMO_WEIGHTS};

const MODEL: [&str; 4] = ["--model", DEMO_CFG, "--pretrained", DEMO_WEIGHTS];
const SOURCES: &str = "fixtures/images/sources";

/// (class folder, images): unbalanced, so balanced accuracy and accuracy differ.
const CLASSES: [(&str, &[&str]); 6] = [
    ("astronaut", &["astronaut_420.jpg"]),
    ("cat", &["chelsea.png", "chelsea_422.jpg", "coins.png"]),
    ("coffee_cup", &["coffee.webp", "coffee_progressive.jpg"]),
    ("flower", &["flower.jpg"]),
    ("grey_camera", &["camera_grey.jpg", "bilevel.png"]),
    ("temple", &["china.jpg"]),
];

/// Run `coca` in the repository root with a private cache and no METEOR jar.
fn run(args: &[&str], home: &Path) -> Output {
    command()
        .args(args)
        .env("HOME", home)
        .env("COCA_CACHE_DIR", home.join("cache"))
        .env_remove("COCA_METEOR_JAR")
        .env_remove("COCA_LOG")
        .output()
        .expect("run coca")
}

/// Run `coca eval <task> ...` with the demo model and `--json`; the parsed result.
fn eval_json(task: &str, with_model: bool, extra: &[&str], home: &Path) -> Value {
    let mut args = vec!["-q", "eval", task];
    if with_model {
        args.extend(MODEL);
    }
    args.extend_from_slice(extra);
    args.push("--json");
    let o = run(&args, home);
    assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    serde_json::from_slice(&o.stdout).expect("JSON on stdout")
}

/// CLIP_benchmark's schema plus the skip count and list: exactly these keys; these datasets skip nothing.
fn assert_schema(v: &Value, task: &str, dataset: &str, with_model: bool) {
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "dataset",
            "language",
            "metrics",
            "model",
            "pretrained",
            "skipped_images",
            "skipped_items",
            "task"
        ]
    );
    assert_eq!(v["skipped_images"], 0);
    assert_eq!(v["skipped_items"], json!([]));
    assert_eq!(v["task"], task);
    assert_eq!(v["dataset"], dataset);
    assert_eq!(v["language"], "en");
    if with_model {
        assert_eq!(v["model"], DEMO_CFG);
        assert_eq!(v["pretrained"], DEMO_WEIGHTS);
    } else {
        assert!(v["model"].is_null() && v["pretrained"].is_null());
    }
}

fn close(a: f64, b: f64, what: &str) {
    assert!((a - b).abs() < 1e-9, "{what}: {a} vs {b}");
}

fn src(name: &str) -> PathBuf {
    root().join(SOURCES).join(name)
}

/// The classes as an image folder under `dir`; returns (image path, label) in the dataset's order.
fn image_folder(dir: &Path) -> Vec<(PathBuf, usize)> {
    let mut items = Vec::new();
    for (label, (class, images)) in CLASSES.iter().enumerate() {
        std::fs::create_dir_all(dir.join(class)).unwrap();
        for image in images.iter() {
            let to = dir.join(class).join(image);
            std::fs::copy(src(image), &to).unwrap();
            items.push((to, label));
        }
    }
    items
}

/// A WebDataset sample: its key and its files as (extension, bytes).
type ShardSample<'a> = (String, Vec<(&'a str, Vec<u8>)>);

/// A tar shard at `path` holding these samples.
fn write_shard(path: &Path, samples: &[ShardSample<'_>]) {
    let mut builder = tar::Builder::new(Vec::new());
    for (key, files) in samples {
        for (ext, data) in files {
            let mut header = tar::Header::new_ustar();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder
                .append_data(&mut header, format!("{key}.{ext}"), data.as_slice())
                .unwrap();
        }
    }
    std::fs::write(path, builder.into_inner().unwrap()).unwrap();
}

fn extension(name: &str) -> &str {
    match name.rsplit('.').next().unwrap() {
        "jpg" => "jpg",
        "png" => "png",
        "webp" => "webp",
        other => panic!("no shard key for {other}"),
    }
}

/// acc1, acc5 and balanced accuracy from `coca classify --top-k <all> --json` rankings.
fn metrics_from_rankings(rankings: &Value, labels: &[usize]) -> (f64, f64, f64) {
    let ranked: Vec<Vec<usize>> = rankings
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r["top_k"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["index"].as_u64().unwrap() as usize)
                .collect()
        })
        .collect();
    let n = labels.len() as f64;
    let within = |k: usize| {
        ranked
            .iter()
            .zip(labels)
            .filter(|(r, l)| r[..k].contains(l))
            .count() as f64
            / n
    };
    let classes = labels.iter().max().unwrap() + 1;
    let recall: f64 = (0..classes)
        .map(|c| {
            let of_c: Vec<_> = ranked.iter().zip(labels).filter(|(_, &l)| l == c).collect();
            of_c.iter().filter(|(r, _)| r[0] == c).count() as f64 / of_c.len() as f64
        })
        .sum::<f64>()
        / classes as f64;
    (within(1), within(5), recall)
}

#[test]
fn zeroshot_classification_matches_classify_and_shards_match_folders() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("six");
    let items = image_folder(&data);
    let templates = tmp.path().join("templates.txt");
    std::fs::write(
        &templates,
        "a photo of a {c}.\na blurry photo of the {c}.\n",
    )
    .unwrap();
    let templates = templates.to_str().unwrap();

    let result = eval_json(
        "zeroshot-classification",
        true,
        &[
            "--dataset-root",
            data.to_str().unwrap(),
            "--templates",
            templates,
        ],
        tmp.path(),
    );
    assert_schema(&result, "zeroshot_classification", "six", true);
    let m = &result["metrics"];

    // The same classifier through `coca classify` (folder names with _ as spaces), every class ranked.
    let classes = tmp.path().join("classes.txt");
    let names: Vec<String> = CLASSES.iter().map(|(c, _)| c.replace('_', " ")).collect();
    std::fs::write(&classes, names.join("\n")).unwrap();
    let mut args = vec!["-q", "classify"];
    args.extend(MODEL);
    args.extend([
        "--classes",
        classes.to_str().unwrap(),
        "--templates",
        templates,
        "--top-k",
        "6",
        "--json",
    ]);
    let paths: Vec<String> = items.iter().map(|(p, _)| p.display().to_string()).collect();
    args.extend(paths.iter().map(String::as_str));
    let o = run(&args, tmp.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let labels: Vec<usize> = items.iter().map(|(_, l)| *l).collect();
    let (acc1, acc5, recall) =
        metrics_from_rankings(&serde_json::from_slice(&o.stdout).unwrap(), &labels);
    close(m["acc1"].as_f64().unwrap(), acc1, "acc1");
    close(m["acc5"].as_f64().unwrap(), acc5, "acc5");
    close(
        m["mean_per_class_recall"].as_f64().unwrap(),
        recall,
        "recall",
    );

    // The same images as WebDataset shards with .cls labels (two shards, CLIP_benchmark's test/ folder).
    let wds = tmp.path().join("wds");
    std::fs::create_dir_all(wds.join("test")).unwrap();
    std::fs::write(wds.join("classnames.txt"), names.join("\n") + "\n").unwrap();
    let samples: Vec<_> = CLASSES
        .iter()
        .enumerate()
        .flat_map(|(label, (_, images))| images.iter().map(move |i| (label, *i)))
        .enumerate()
        .map(|(n, (label, image))| {
            let files = vec![
                (extension(image), std::fs::read(src(image)).unwrap()),
                ("cls", label.to_string().into_bytes()),
            ];
            (format!("{n:06}"), files)
        })
        .collect();
    write_shard(&wds.join("test/0.tar"), &samples[..5]);
    write_shard(&wds.join("test/1.tar"), &samples[5..]);
    let shards = eval_json(
        "zeroshot-classification",
        true,
        &[
            "--dataset-root",
            wds.to_str().unwrap(),
            "--templates",
            templates,
            "--dataset",
            "wds_six",
            "--batch-size",
            "3",
        ],
        tmp.path(),
    );
    assert_schema(&shards, "zeroshot_classification", "wds_six", true);
    assert_eq!(shards["metrics"], result["metrics"]);

    // Fewer than 5 classes: acc5 is null (CLIP_benchmark's NaN); --output writes the same JSON.
    let three = tmp.path().join("three");
    for (class, images) in &CLASSES[..3] {
        std::fs::create_dir_all(three.join(class)).unwrap();
        for image in images.iter() {
            std::fs::copy(src(image), three.join(class).join(image)).unwrap();
        }
    }
    let out = tmp.path().join("result.json");
    let mut args = vec!["-q", "eval", "zeroshot-classification"];
    args.extend(MODEL);
    args.extend([
        "--dataset-root",
        three.to_str().unwrap(),
        "--templates",
        "simple",
        "--output",
        out.to_str().unwrap(),
    ]);
    let o = run(&args, tmp.path());
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("acc1"));
    let written: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_schema(&written, "zeroshot_classification", "three", true);
    assert!(written["metrics"]["acc5"].is_null());
    assert!(written["metrics"]["acc1"].as_f64().is_some());
}

/// The retrieval fixture: (image, split, captions).
const RETRIEVAL: [(&str, &str, &[&str]); 5] = [
    (
        "chelsea.png",
        "test",
        &["a cat", "an orange cat looking up"],
    ),
    ("coffee.webp", "test", &["a cup of coffee"]),
    (
        "astronaut_420.jpg",
        "test",
        &["an astronaut", "a woman in a space suit", "a portrait"],
    ),
    ("china.jpg", "train", &["a temple"]),
    ("flower.jpg", "test", &["a flower", "petals"]),
];

/// recall@k both ways by sorting, from `coca embed` embeddings.
fn brute_force_recall(
    images: &[Vec<f64>],
    texts: &[Vec<f64>],
    text_image: &[usize],
    k: usize,
) -> (f64, f64) {
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    let order = |scores: Vec<f64>| {
        let mut idx: Vec<usize> = (0..scores.len()).collect();
        idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
        idx
    };
    let t2i = texts
        .iter()
        .zip(text_image)
        .filter(|(t, &i)| {
            order(images.iter().map(|im| dot(t, im)).collect())[..k.min(images.len())].contains(&i)
        })
        .count() as f64
        / texts.len() as f64;
    let i2t = images
        .iter()
        .enumerate()
        .filter(|(i, im)| {
            order(texts.iter().map(|t| dot(t, im)).collect())[..k.min(texts.len())]
                .iter()
                .any(|&t| text_image[t] == *i)
        })
        .count() as f64
        / images.len() as f64;
    (t2i, i2t)
}

fn embeddings(v: &Value, key: &str) -> Vec<Vec<f64>> {
    v[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        })
        .collect()
}

#[test]
fn retrieval_matches_brute_force_in_every_layout() {
    let tmp = tempfile::tempdir().unwrap();
    let karpathy = json!({"images": RETRIEVAL.iter().enumerate().map(|(i, (f, split, caps))| json!({
        "filename": f, "split": split, "imgid": i,
        "sentences": caps.iter().map(|c| json!({"raw": c})).collect::<Vec<_>>(),
    })).collect::<Vec<_>>()});
    let kfile = tmp.path().join("karpathy.json");
    std::fs::write(&kfile, karpathy.to_string()).unwrap();
    let kfile = kfile.to_str().unwrap();
    let result = eval_json(
        "retrieval",
        true,
        &[
            "--annotations",
            kfile,
            "--dataset-root",
            SOURCES,
            "--batch-size",
            "3",
        ],
        tmp.path(),
    );
    assert_schema(&result, "zeroshot_retrieval", "karpathy", true);
    let metrics = result["metrics"].as_object().unwrap();
    assert_eq!(metrics.len(), 6);

    // Brute force over the test split from `coca embed`.
    let test: Vec<_> = RETRIEVAL.iter().filter(|(_, s, _)| *s == "test").collect();
    let mut args = vec!["-q", "embed"];
    args.extend(MODEL);
    let paths: Vec<String> = test
        .iter()
        .map(|(f, _, _)| format!("{SOURCES}/{f}"))
        .collect();
    for p in &paths {
        args.extend(["--image", p]);
    }
    let mut text_image = Vec::new();
    for (i, (_, _, caps)) in test.iter().enumerate() {
        for c in caps.iter() {
            args.extend(["--text", c]);
            text_image.push(i);
        }
    }
    args.push("--json");
    let o = run(&args, tmp.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let e: Value = serde_json::from_slice(&o.stdout).unwrap();
    let (images, texts) = (
        embeddings(&e, "image_embeddings"),
        embeddings(&e, "text_embeddings"),
    );
    for k in [1, 5, 10] {
        let (t2i, i2t) = brute_force_recall(&images, &texts, &text_image, k);
        close(
            metrics[&format!("image_retrieval_recall@{k}")]
                .as_f64()
                .unwrap(),
            t2i,
            "t2i",
        );
        close(
            metrics[&format!("text_retrieval_recall@{k}")]
                .as_f64()
                .unwrap(),
            i2t,
            "i2t",
        );
    }
    // A small set, so recall@1 is informative: not every query is a hit.
    assert!(metrics["image_retrieval_recall@10"].as_f64().unwrap() == 1.0);

    // CLIP_benchmark's list form, a CSV with one row per caption, and shards with one caption per line.
    let list: Vec<Value> = test
        .iter()
        .map(|(f, _, caps)| json!({"image": f, "caption": caps}))
        .collect();
    let lfile = tmp.path().join("list.json");
    std::fs::write(&lfile, Value::Array(list).to_string()).unwrap();
    let mut csv = String::from("filepath,title\n");
    for (round, _) in [0, 1, 2].iter().enumerate() {
        // Captions interleaved across images: grouping must not depend on adjacent rows.
        for (f, _, caps) in &test {
            if let Some(c) = caps.get(round) {
                csv.push_str(&format!("{SOURCES}/{f},{c}\n"));
            }
        }
    }
    let cfile = tmp.path().join("val.csv");
    std::fs::write(&cfile, csv).unwrap();
    let shard = tmp.path().join("caps.tar");
    let samples: Vec<_> = test
        .iter()
        .enumerate()
        .map(|(n, (f, _, caps))| {
            let files = vec![
                (extension(f), std::fs::read(src(f)).unwrap()),
                ("txt", caps.join("\n").into_bytes()),
            ];
            (format!("{n:04}"), files)
        })
        .collect();
    write_shard(&shard, &samples);
    let sources_dir = root().join(SOURCES);
    for extra in [
        vec![
            "--annotations",
            lfile.to_str().unwrap(),
            "--dataset-root",
            sources_dir.to_str().unwrap(),
        ],
        vec!["--csv", cfile.to_str().unwrap(), "--csv-separator", ","],
        vec!["--shards", shard.to_str().unwrap()],
    ] {
        let other = eval_json("retrieval", true, &extra, tmp.path());
        let other = other["metrics"].as_object().unwrap();
        for (name, want) in metrics {
            close(
                other[name].as_f64().unwrap(),
                want.as_f64().unwrap(),
                &format!("{extra:?} {name}"),
            );
        }
    }

    // --max-images 1: one image, so every query is a hit at every K.
    let one = eval_json(
        "retrieval",
        true,
        &[
            "--annotations",
            kfile,
            "--dataset-root",
            SOURCES,
            "--max-images",
            "1",
        ],
        tmp.path(),
    );
    for (name, v) in one["metrics"].as_object().unwrap() {
        assert_eq!(v.as_f64(), Some(1.0), "{name}");
    }

    // Other K.
    let r = eval_json(
        "retrieval",
        true,
        &[
            "--annotations",
            kfile,
            "--dataset-root",
            SOURCES,
            "--recall-k",
            "2,3",
        ],
        tmp.path(),
    );
    let keys: Vec<&String> = r["metrics"].as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        [
            "image_retrieval_recall@2",
            "image_retrieval_recall@3",
            "text_retrieval_recall@2",
            "text_retrieval_recall@3"
        ]
    );
    let (t2i, i2t) = brute_force_recall(&images, &texts, &text_image, 2);
    close(
        r["metrics"]["image_retrieval_recall@2"].as_f64().unwrap(),
        t2i,
        "t2i@2",
    );
    close(
        r["metrics"]["text_retrieval_recall@2"].as_f64().unwrap(),
        i2t,
        "i2t@2",
    );
}

#[test]
fn captioning_matches_pycocoevalcap_and_the_caption_command() {
    let tmp = tempfile::tempdir().unwrap();
    // pycocoevalcap's own numbers on its fixture, through --predictions.
    let fixture: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("fixtures/eval/captions/captions.json")).unwrap(),
    )
    .unwrap();
    let images = fixture["images"].as_array().unwrap();
    let refs: Vec<Value> = images
        .iter()
        .enumerate()
        .map(|(i, im)| json!({"image": format!("{i}.jpg"), "image_id": i, "caption": im["references"]}))
        .collect();
    let preds: Vec<Value> = images
        .iter()
        .enumerate()
        .rev() // order does not matter
        .map(|(i, im)| json!({"image_id": i, "caption": im["candidate"]}))
        .collect();
    let rfile = tmp.path().join("refs.json");
    let pfile = tmp.path().join("preds.json");
    std::fs::write(&rfile, Value::Array(refs).to_string()).unwrap();
    std::fs::write(&pfile, Value::Array(preds).to_string()).unwrap();
    let r = eval_json(
        "captioning",
        false,
        &[
            "--annotations",
            rfile.to_str().unwrap(),
            "--predictions",
            pfile.to_str().unwrap(),
        ],
        tmp.path(),
    );
    assert_schema(&r, "captioning", "refs", false);
    let got = r["metrics"].as_object().unwrap();
    let keys: Vec<&String> = got.keys().collect();
    assert_eq!(
        keys,
        ["Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "CIDEr", "ROUGE_L"],
        "no METEOR without the jar"
    );
    for (name, value) in got {
        let want = fixture["corpus"][name].as_f64().unwrap();
        assert!(
            (value.as_f64().unwrap() - want).abs() < 1e-4,
            "{name}: {value} vs {want}"
        );
    }

    // Generated captions equal `coca caption`'s; saved, they score the same through --predictions.
    let karpathy = json!({"images": RETRIEVAL.iter().map(|(f, split, caps)| json!({
        "filename": f, "split": split,
        "sentences": caps.iter().map(|c| json!({"raw": c})).collect::<Vec<_>>(),
    })).collect::<Vec<_>>()});
    let kfile = tmp.path().join("k.json");
    std::fs::write(&kfile, karpathy.to_string()).unwrap();
    let saved = tmp.path().join("captions.json");
    let generated = eval_json(
        "captioning",
        true,
        &[
            "--annotations",
            kfile.to_str().unwrap(),
            "--dataset-root",
            SOURCES,
            "--strategy",
            "greedy",
            "--max-length",
            "12",
            "--batch-size",
            "3",
            "--save-captions",
            saved.to_str().unwrap(),
        ],
        tmp.path(),
    );
    assert_schema(&generated, "captioning", "k", true);
    let saved_list: Value =
        serde_json::from_str(&std::fs::read_to_string(&saved).unwrap()).unwrap();
    let saved_list = saved_list.as_array().unwrap();
    assert_eq!(saved_list.len(), 4, "the test split");

    let mut args = vec!["-q", "caption"];
    args.extend(MODEL);
    args.extend(["--strategy", "greedy", "--max-length", "12", "--json"]);
    let paths: Vec<String> = RETRIEVAL
        .iter()
        .filter(|(_, s, _)| *s == "test")
        .map(|(f, _, _)| format!("{SOURCES}/{f}"))
        .collect();
    args.extend(paths.iter().map(String::as_str));
    let o = run(&args, tmp.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let direct: Value = serde_json::from_slice(&o.stdout).unwrap();
    for (entry, want) in saved_list
        .iter()
        .zip(direct["captions"].as_array().unwrap())
    {
        assert_eq!(entry["caption"], want["caption"]);
        assert_eq!(
            entry["image_id"],
            entry["image"].as_str().unwrap().rsplit('/').next().unwrap()
        );
        assert!(entry["references"]
            .as_array()
            .is_some_and(|r| !r.is_empty()));
        assert!(entry["scores"]["CIDEr"].as_f64().is_some());
    }
    let rescored = eval_json(
        "captioning",
        false,
        &[
            "--annotations",
            kfile.to_str().unwrap(),
            "--predictions",
            saved.to_str().unwrap(),
        ],
        tmp.path(),
    );
    assert_eq!(rescored["metrics"], generated["metrics"]);
}

#[test]
fn bad_datasets_fail_with_the_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path();
    let zs = |root: &Path, extra: &[&str]| {
        let mut args = vec!["eval", "zeroshot-classification"];
        args.extend(MODEL);
        args.extend([
            "--dataset-root",
            root.to_str().unwrap(),
            "--templates",
            "simple",
        ]);
        args.extend_from_slice(extra);
        run(&args, home)
    };
    let missing = tmp.path().join("missing");
    assert_fails_with(
        &zs(&missing, &[]),
        &["missing", "dataset root does not exist"],
    );
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    assert_fails_with(&zs(&empty, &[]), &["no class folders and no .tar shards"]);
    std::fs::create_dir_all(empty.join("dog")).unwrap();
    std::fs::write(empty.join("dog/notes.txt"), "not an image").unwrap();
    assert_fails_with(&zs(&empty, &[]), &["class folder `dog` has no images"]);
    assert_fails_with(
        &zs(&empty, &["--split", "val"]),
        &["unknown split `val`", "subfolders: dog"],
    );
    let wds = tmp.path().join("wds");
    std::fs::create_dir_all(&wds).unwrap();
    write_shard(
        &wds.join("0.tar"),
        &[(
            "a".into(),
            vec![
                ("png", std::fs::read(src("coins.png")).unwrap()),
                ("cls", b"7".to_vec()),
            ],
        )],
    );
    assert_fails_with(&zs(&wds, &[]), &["--classnames", "classnames.txt"]);
    std::fs::write(wds.join("classnames.txt"), "a\nb\n").unwrap();
    let no_samples = tmp.path().join("no_samples");
    std::fs::create_dir_all(&no_samples).unwrap();
    write_shard(&no_samples.join("0.tar"), &[]);
    std::fs::write(no_samples.join("classnames.txt"), "a\n").unwrap();
    assert_fails_with(
        &zs(&no_samples, &[]),
        &["no_samples", "the dataset has no samples"],
    );
    assert_fails_with(
        &zs(&wds, &[]),
        &[
            "0.tar:a.cls",
            "label 7 is out of range for the 2 class names",
        ],
    );

    let ret = |extra: &[&str]| {
        let mut args = vec!["eval", "retrieval"];
        args.extend(MODEL);
        args.extend_from_slice(extra);
        run(&args, home)
    };
    let bad = tmp.path().join("bad.json");
    std::fs::write(&bad, "{\"images\": [").unwrap();
    assert_fails_with(
        &ret(&["--annotations", bad.to_str().unwrap()]),
        &["bad.json", "not valid JSON"],
    );
    std::fs::write(
        &bad,
        r#"{"images": [{"filename": "x.jpg", "split": "test", "sentences": "a cat"}]}"#,
    )
    .unwrap();
    assert_fails_with(
        &ret(&["--annotations", bad.to_str().unwrap()]),
        &["bad.json: images[0]: \"sentences\" must be a list, got a string"],
    );
    std::fs::write(
        &bad,
        r#"{"images": [{"filename": "x.jpg", "split": "train", "sentences": [{"raw": "a"}]}]}"#,
    )
    .unwrap();
    assert_fails_with(
        &ret(&["--annotations", bad.to_str().unwrap()]),
        &["unknown split `test` (the file has: train)"],
    );
    // A referenced image that does not exist is skipped, named in a warning; with no other image, there is
    // nothing to score.
    std::fs::write(&bad, r#"[{"image": "nowhere.jpg", "caption": "a"}]"#).unwrap();
    let o = ret(&["--annotations", bad.to_str().unwrap()]);
    assert!(
        stderr(&o).contains("skipped ") && stderr(&o).contains("nowhere.jpg: no such file"),
        "{}",
        stderr(&o)
    );
    let mut args = vec!["-q", "eval", "retrieval"];
    args.extend(MODEL);
    args.extend(["--annotations", bad.to_str().unwrap()]);
    assert_fails_with(
        &run(&args, home),
        &["none of the 1 images could be used", "nowhere.jpg"],
    );

    // Predictions for an image that is not in the references.
    std::fs::write(
        &bad,
        r#"[{"image": "a.jpg", "image_id": 1, "caption": "a cat"}]"#,
    )
    .unwrap();
    let preds = tmp.path().join("preds.json");
    std::fs::write(
        &preds,
        r#"[{"image_id": 1, "caption": "x"}, {"image_id": 99, "caption": "y"}]"#,
    )
    .unwrap();
    let o = run(
        &[
            "eval",
            "captioning",
            "--annotations",
            bad.to_str().unwrap(),
            "--predictions",
            preds.to_str().unwrap(),
        ],
        home,
    );
    assert_fails_with(
        &o,
        &["preds.json: [1]: image_id 99 is not among the 1 reference images of bad"],
    );
    let o = run(
        &["eval", "captioning", "--annotations", bad.to_str().unwrap()],
        home,
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--model"), "{}", stderr(&o));
}
