//! Bulk embedding of collections (`coca embed --input-* --output-dir`) and `coca search`, end to end with
//! the demo checkpoint on the fixture collection in fixtures/data/folder.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

const MODEL: [&str; 4] = [
    "--model",
    "assets/demo/coca_demo-tiny.json",
    "--pretrained",
    "assets/demo/coca_demo-tiny.safetensors",
];
const FOLDER: &str = "fixtures/data/folder";
/// (image, caption) of the fixture collection, in the folder walk's order.
const ITEMS: [(&str, &str); 5] = [
    ("coffee.jpg", "a tiny photo of coffee"),
    ("gradient.webp", "a gradient with transparency"),
    ("nested/grey.gif", "a grey animation frame"),
    ("nested/palette.png", "a four-bit palette image"),
    ("small.bmp", "a small bitmap"),
];

fn coca(sub: &str, extra: &[&str]) -> Output {
    let mut args = vec![sub];
    args.extend(MODEL);
    args.extend_from_slice(extra);
    Command::new(env!("CARGO_BIN_EXE_coca"))
        .current_dir(root())
        .args(&args)
        .output()
        .expect("run coca")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The JSON printed by a successful run.
fn json_of(o: &Output) -> Value {
    assert!(o.status.success(), "failed: {}", stderr(o));
    serde_json::from_slice(&o.stdout).expect("JSON on stdout")
}

fn assert_fails_with(o: &Output, fragments: &[&str]) {
    let err = stderr(o);
    assert!(!o.status.success(), "expected failure; stderr: {err}");
    assert!(!err.contains("panicked"), "panicked: {err}");
    for f in fragments {
        assert!(err.contains(f), "missing {f:?} in: {err}");
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn fixture(name: &str) -> PathBuf {
    root().join(FOLDER).join(name)
}

/// Every metadata row of an output folder, in order.
fn metadata(out: &Path) -> Vec<coca_retrieval::MetadataRow> {
    let layout = coca_retrieval::Layout::new(out);
    layout
        .partitions()
        .unwrap()
        .into_iter()
        .flat_map(|p| coca_retrieval::read_metadata(&layout.metadata_path(p)).unwrap())
        .collect()
}

fn captions(out: &Path) -> Vec<Option<String>> {
    metadata(out).into_iter().map(|r| r.caption).collect()
}

#[test]
fn folder_is_embedded_in_clip_retrieval_layout_and_each_item_finds_itself() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("index");
    let o = coca(
        "embed",
        &[
            "--input-dir",
            FOLDER,
            "--output-dir",
            s(&out),
            "--partition-size",
            "2",
            "--batch-size",
            "2",
            "--json",
        ],
    );
    let summary = json_of(&o);
    assert_eq!(summary["embedded"], 5);
    assert_eq!(summary["skipped"], 0);
    assert_eq!(summary["partitions_written"], 3);
    assert_eq!(summary["image_embeddings"], true);
    assert_eq!(
        summary["text_embeddings"], true,
        "captions exist, so auto embeds them"
    );
    assert!(
        !stderr(&o).contains("samples read"),
        "progress bar drawn on a non-terminal: {}",
        stderr(&o)
    );
    for n in ["00000", "00001", "00002"] {
        let (rows, dim) =
            coca_retrieval::npy_shape(&out.join(format!("img_emb/img_emb_{n}.npy"))).unwrap();
        assert_eq!(dim, 16);
        assert_eq!(rows, if n == "00002" { 1 } else { 2 });
        assert!(out.join(format!("text_emb/text_emb_{n}.npy")).is_file());
        assert!(out.join(format!("metadata/metadata_{n}.parquet")).is_file());
    }
    let rows = metadata(&out);
    let expected: Vec<(String, Option<String>)> = ITEMS
        .iter()
        .map(|(f, c)| (format!("{FOLDER}/{f}"), Some(c.to_string())))
        .collect();
    let got: Vec<(String, Option<String>)> = rows
        .iter()
        .map(|r| (r.image_path.clone().unwrap(), r.caption.clone()))
        .collect();
    assert_eq!(got, expected);
    let vectors = coca_retrieval::read_npy(&out.join("img_emb/img_emb_00000.npy")).unwrap();
    let norm: f32 = vectors.row(0).iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!(
        (norm - 1.0).abs() < 2e-3,
        "stored rows are L2-normalised: {norm}"
    );

    for (file, caption) in ITEMS {
        // An image query finds its own image first (same embedding, up to float16 storage).
        let hits = json_of(&coca(
            "search",
            &[
                "--index",
                s(&out),
                "--image",
                s(&fixture(file)),
                "--top-k",
                "3",
                "--json",
            ],
        ));
        assert_eq!(hits["against"], "image");
        let results = hits["results"].as_array().unwrap();
        assert_eq!(results.len(), 3);
        assert_eq!(results[0]["rank"], 1);
        assert_eq!(results[0]["image_path"], format!("{FOLDER}/{file}"));
        assert_eq!(results[0]["caption"], caption);
        let top = results[0]["score"].as_f64().unwrap();
        assert!(
            top > 0.999 && top <= 1.0 + 1e-6,
            "{file}: self-similarity {top}"
        );
        assert!(results[1]["score"].as_f64().unwrap() < top - 0.05);

        // A caption query against the caption embeddings finds that caption first.
        let hits = json_of(&coca(
            "search",
            &[
                "--index",
                s(&out),
                "--text",
                caption,
                "--against",
                "text",
                "--json",
            ],
        ));
        let results = hits["results"].as_array().unwrap();
        assert_eq!(results.len(), 5, "top-k 10 of 5 rows gives 5");
        assert_eq!(results[0]["caption"], caption);
    }

    // The plain-text listing names the hits.
    let o = coca(
        "search",
        &[
            "--index",
            s(&out),
            "--image",
            s(&fixture("small.bmp")),
            "--top-k",
            "1",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("small.bmp") && text.contains("\"a small bitmap\""),
        "{text}"
    );
}

#[test]
fn csv_flags_choose_columns_and_unreadable_images_are_skipped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.jpg");
    let jpeg = std::fs::read(fixture("coffee.jpg")).unwrap();
    std::fs::write(&broken, &jpeg[..jpeg.len() / 4]).unwrap();
    let missing = dir.path().join("missing.png");
    let csv = dir.path().join("pairs.csv");
    let mut text = String::from("id,path,caption\n");
    let rows = [
        (fixture("coffee.jpg"), "coffee, from a CSV"),
        (broken.clone(), "a broken image"),
        (fixture("small.bmp"), "\"a small bitmap\", quoted"),
        (missing.clone(), "not there"),
        (fixture("nested/palette.png"), "palette"),
    ];
    for (i, (path, caption)) in rows.iter().enumerate() {
        let quoted = caption.replace('"', "\"\"");
        text.push_str(&format!("{i},{},\"{quoted}\"\n", path.display()));
    }
    std::fs::write(&csv, text).unwrap();
    let out = dir.path().join("out");
    let o = coca(
        "embed",
        &[
            "--input-csv",
            s(&csv),
            "--csv-separator",
            ",",
            "--csv-img-key",
            "path",
            "--csv-caption-key",
            "caption",
            "--output-dir",
            s(&out),
            "--batch-size",
            "8",
            "--json",
        ],
    );
    let summary = json_of(&o);
    assert_eq!(summary["embedded"], 3);
    assert_eq!(summary["skipped"], 2);
    let skipped: Vec<String> = serde_json::from_value(summary["skipped_items"].clone()).unwrap();
    assert!(skipped[0].contains("broken.jpg"), "{skipped:?}");
    assert!(
        skipped[1].contains("missing.png") && skipped[1].contains("no such file"),
        "{skipped:?}"
    );
    // Each unreadable image is reported once, at warn level, with its name.
    let err = stderr(&o);
    assert_eq!(err.matches("broken.jpg").count(), 1, "{err}");
    assert_eq!(err.matches("missing.png").count(), 1, "{err}");
    assert!(err.contains("WARN"), "{err}");
    assert_eq!(
        captions(&out),
        [
            Some("coffee, from a CSV".to_string()),
            Some("\"a small bitmap\", quoted".to_string()),
            Some("palette".to_string()),
        ]
    );

    // open_clip's defaults: tab-separated, filepath and title columns.
    let tsv = dir.path().join("train.tsv");
    std::fs::write(
        &tsv,
        format!(
            "filepath\ttitle\n{}\tfirst\n{}\tsecond\n",
            fixture("gradient.webp").display(),
            fixture("nested/grey.gif").display()
        ),
    )
    .unwrap();
    let out2 = dir.path().join("out2");
    let summary = json_of(&coca(
        "embed",
        &["--input-csv", s(&tsv), "--output-dir", s(&out2), "--json"],
    ));
    assert_eq!(summary["embedded"], 2);
    assert_eq!(
        captions(&out2),
        [Some("first".to_string()), Some("second".to_string())]
    );

    // A CSV without the requested column fails before any work, naming the columns it has.
    let o = coca(
        "embed",
        &[
            "--input-csv",
            s(&csv),
            "--csv-separator",
            ",",
            "--output-dir",
            s(&out2),
        ],
    );
    assert_fails_with(
        &o,
        &["pairs.csv", "no column `filepath`", "id, path, caption"],
    );
}

#[test]
fn file_list_uses_sibling_captions_and_image_only_mode_skips_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("list.txt");
    std::fs::write(
        &list,
        format!(
            "{}\n\n{}\n",
            fixture("nested/palette.png").display(),
            fixture("coffee.jpg").display()
        ),
    )
    .unwrap();
    let out = dir.path().join("out");
    let summary = json_of(&coca(
        "embed",
        &[
            "--input-list",
            s(&list),
            "--output-dir",
            s(&out),
            "--embeddings",
            "image",
            "--emb-dtype",
            "f32",
            "--json",
        ],
    ));
    assert_eq!(summary["embedded"], 2);
    assert_eq!(summary["text_embeddings"], false);
    assert_eq!(summary["dtype"], "float32");
    assert!(!out.join("text_emb").exists());
    // Captions are still recorded for an image-only run.
    assert_eq!(
        captions(&out),
        [
            Some("a four-bit palette image".to_string()),
            Some("a tiny photo of coffee".to_string())
        ]
    );
    let o = coca(
        "search",
        &["--index", s(&out), "--text", "x", "--against", "text"],
    );
    assert_fails_with(&o, &["no text embeddings", "text_emb"]);
}

#[test]
fn shards_are_read_through_a_brace_pattern_and_damage_is_reported_with_name_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let jpg = std::fs::read(fixture("coffee.jpg")).unwrap();
    let webp = std::fs::read(fixture("gradient.webp")).unwrap();
    let png = std::fs::read(fixture("nested/palette.png")).unwrap();
    common::write_shard(
        &d.join("00000.tar"),
        &[
            ("000000.jpg", &jpg),
            ("000000.txt", b"coffee in a shard"),
            ("000000.json", b"{\"url\": \"http://example.com/c.jpg\"}"),
            ("000001.webp", &webp),
            ("000001.txt", b"a gradient in a shard"),
        ],
    );
    // Shard 1 ends in the middle of 000003.jpg, as an interrupted download would.
    let offsets = common::write_shard(
        &d.join("00001.tar"),
        &[
            ("000002.png", &png),
            ("000002.txt", b"a palette in a shard"),
            ("000003.jpg", &jpg),
            ("000003.txt", b"never read"),
        ],
    );
    let cut = offsets[2] + 300;
    let bytes = std::fs::read(d.join("00001.tar")).unwrap();
    std::fs::write(d.join("00001.tar"), &bytes[..cut as usize]).unwrap();
    // Shard 2 holds a sample whose image is not an image, and a good one after it.
    common::write_shard(
        &d.join("00002.tar"),
        &[
            ("000004.jpg", b"these bytes are no JPEG"),
            ("000004.txt", b"corrupt"),
            ("000005.jpg", &jpg),
            ("000005.txt", b"coffee again"),
        ],
    );
    let out = d.join("out");
    let pattern = format!("{}/{{00000..00002}}.tar", d.display());
    let summary = json_of(&coca(
        "embed",
        &[
            "--input-shards",
            &pattern,
            "--output-dir",
            s(&out),
            "--json",
        ],
    ));
    assert_eq!(summary["embedded"], 4);
    assert_eq!(summary["skipped"], 2);
    let skipped: Vec<String> = serde_json::from_value(summary["skipped_items"].clone()).unwrap();
    assert!(
        skipped[0].contains("00001.tar")
            && skipped[0].contains(&format!("at byte {cut}"))
            && skipped[0].contains("000003.jpg"),
        "{skipped:?}"
    );
    assert!(skipped[1].contains("00002.tar:000004.jpg"), "{skipped:?}");
    let rows = metadata(&out);
    let keys: Vec<_> = rows.iter().map(|r| r.key.clone().unwrap()).collect();
    assert_eq!(keys, ["000000", "000001", "000002", "000005"]);
    // clip-retrieval records a shard sample's key as its image_path.
    assert_eq!(rows[1].image_path.as_deref(), Some("000001"));
    assert_eq!(rows[1].caption.as_deref(), Some("a gradient in a shard"));
}

/// Relative path → bytes of every file under `dir`.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let rel = path.strip_prefix(dir).unwrap().display().to_string();
                files.push((rel, std::fs::read(&path).unwrap()));
            }
        }
    }
    files.sort();
    files
}

#[test]
fn an_interrupted_run_resumes_to_the_same_output_as_an_uninterrupted_one() {
    let dir = tempfile::tempdir().unwrap();
    let run = |out: &Path, extra: &[&str]| {
        let mut args = vec![
            "--input-dir",
            FOLDER,
            "--output-dir",
            s(out),
            "--partition-size",
            "2",
        ];
        args.extend_from_slice(extra);
        args.push("--json");
        coca("embed", &args)
    };
    let whole = dir.path().join("whole");
    json_of(&run(&whole, &[]));

    // Simulate a run killed while writing partition 1: partition 0 complete, partition 1's image file
    // half-written under its temporary name and an old, different file under the final name, no metadata,
    // nothing of partition 2.
    let cut = dir.path().join("cut");
    json_of(&run(&cut, &[]));
    std::fs::remove_file(cut.join("metadata/metadata_00001.parquet")).unwrap();
    std::fs::write(cut.join("img_emb/img_emb_00001.npy"), b"stale").unwrap();
    std::fs::write(cut.join("img_emb/.img_emb_00002.npy.tmp.4242.0"), b"half").unwrap();
    for f in [
        "img_emb/img_emb_00002.npy",
        "text_emb/text_emb_00002.npy",
        "metadata/metadata_00002.parquet",
    ] {
        std::fs::remove_file(cut.join(f)).unwrap();
    }
    let summary = json_of(&run(&cut, &[]));
    assert_eq!(summary["partitions_reused"], 1);
    assert_eq!(summary["rows_reused"], 2);
    assert_eq!(summary["partitions_written"], 2);
    assert_eq!(summary["embedded"], 3);
    assert_eq!(snapshot(&cut), snapshot(&whole), "resumed output differs");

    // A complete run started again does nothing.
    let summary = json_of(&run(&cut, &[]));
    assert_eq!(summary["partitions_reused"], 3);
    assert_eq!(summary["embedded"], 0);

    // Other settings would mix two runs in one folder: refused, naming the difference.
    let o = run(&cut, &["--emb-dtype", "f32"]);
    assert_fails_with(
        &o,
        &[
            "coca_embed.json",
            "other settings",
            "dtype: was \"f16\", now \"f32\"",
        ],
    );
}

#[test]
fn collection_mistakes_are_explained() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let o = coca("embed", &["--output-dir", s(&out)]);
    assert_fails_with(&o, &["--output-dir needs a collection", "--input-dir"]);
    let o = coca("embed", &["--input-dir", FOLDER]);
    assert_fails_with(&o, &["pass --output-dir"]);
    let o = coca(
        "embed",
        &[
            "--input-dir",
            FOLDER,
            "--input-list",
            "x.txt",
            "--output-dir",
            s(&out),
        ],
    );
    assert_fails_with(&o, &["not several"]);
    let o = coca(
        "embed",
        &[
            "--input-dir",
            FOLDER,
            "--image",
            "a.jpg",
            "--output-dir",
            s(&out),
        ],
    );
    assert_fails_with(&o, &["cannot be combined"]);
    let o = coca(
        "embed",
        &["--input-dir", "no/such/dir", "--output-dir", s(&out)],
    );
    assert_fails_with(&o, &["no/such/dir", "no such file"]);
    let o = coca(
        "embed",
        &["--input-shards", "s/{0..3.tar", "--output-dir", s(&out)],
    );
    assert_fails_with(&o, &["bad shard pattern", "unbalanced"]);

    let junk = dir.path().join("junk");
    std::fs::create_dir_all(&junk).unwrap();
    std::fs::write(junk.join("a.png"), b"not a png").unwrap();
    let o = coca("embed", &["--input-dir", s(&junk), "--output-dir", s(&out)]);
    assert_fails_with(
        &o,
        &["no sample of the collection could be embedded (1 skipped)"],
    );

    let o = coca("search", &["--index", s(&junk), "--text", "x"]);
    assert_fails_with(&o, &["no embeddings found"]);
}
