//! Videos end to end on the demo model: `coca embed --video`, `coca search --video`, and `coca probe --video`
//! (a single-query attentional pooler over every frame's tokens) on animated GIFs and frame folders.

mod common;

use std::path::Path;

use coca_image::image::codecs::gif::GifEncoder;
use coca_image::image::{Delay, DynamicImage, Frame, Rgb, RgbImage};
use common::{assert_fails_with, coca, command, stderr, DEMO_CFG, DEMO_WEIGHTS};

/// A GIF of `frames` frames: a disc of `colour` moving across a pale background.
fn write_gif(path: &Path, colour: [u8; 3], frames: usize) {
    let file = std::fs::File::create(path).unwrap();
    let mut encoder = GifEncoder::new_with_speed(file, 10);
    for f in 0..frames {
        let img = RgbImage::from_fn(32, 32, |x, y| {
            let cx = 8.0 + 16.0 * f as f32 / frames.max(2) as f32;
            let d = ((x as f32 - cx).powi(2) + (y as f32 - 16.0).powi(2)).sqrt();
            if d < 7.0 {
                Rgb(colour)
            } else {
                Rgb([235, 235, 230])
            }
        });
        let rgba = DynamicImage::ImageRgb8(img).to_rgba8();
        encoder
            .encode_frame(Frame::from_parts(
                rgba,
                0,
                0,
                Delay::from_numer_denom_ms(80, 1),
            ))
            .unwrap();
    }
}

const COLOURS: [(&str, [u8; 3]); 3] = [
    ("blue", [40, 80, 215]),
    ("green", [40, 165, 60]),
    ("red", [215, 40, 40]),
];

#[test]
fn embed_and_search_accept_videos() {
    let tmp = tempfile::tempdir().unwrap();
    let gif = tmp.path().join("red.gif");
    write_gif(&gif, [215, 40, 40], 6);
    let still = tmp.path().join("still.gif");
    write_gif(&still, [40, 80, 215], 1);
    let o = coca(&[
        "embed",
        "--model",
        DEMO_CFG,
        "--pretrained",
        DEMO_WEIGHTS,
        "--video",
        gif.to_str().unwrap(),
        "--video",
        still.to_str().unwrap(),
        "--frames",
        "4",
        "--text",
        "a red disc",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let videos = v["video_embeddings"].as_array().unwrap();
    assert_eq!(videos.len(), 2);
    let e: Vec<f64> = videos[0]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    assert_eq!(e.len(), 16);
    let norm: f64 = e.iter().map(|x| x * x).sum::<f64>().sqrt();
    assert!((norm - 1.0).abs() < 1e-4, "{norm}");
    assert_eq!(v["video_similarity"].as_array().unwrap().len(), 2);
    assert_eq!(v["frames"], 4);

    // A one-frame GIF's video embedding is that frame's image embedding.
    let frame = tmp.path().join("frame.png");
    let frames = coca_data::video::read_frames(&still, 1).unwrap();
    frames[0].to_rgb().save(&frame).unwrap();
    let o = coca(&[
        "embed",
        "--model",
        DEMO_CFG,
        "--pretrained",
        DEMO_WEIGHTS,
        "--image",
        frame.to_str().unwrap(),
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let img: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let a = img["image_embeddings"][0].as_array().unwrap();
    let b = videos[1].as_array().unwrap();
    for (x, y) in a.iter().zip(b) {
        assert!((x.as_f64().unwrap() - y.as_f64().unwrap()).abs() < 1e-5);
    }

    // Search an index of images with a video query.
    let photos = tmp.path().join("photos");
    std::fs::create_dir(&photos).unwrap();
    std::fs::copy(&frame, photos.join("a.png")).unwrap();
    std::fs::copy(
        root_file("fixtures/images/sources/chelsea.png"),
        photos.join("b.png"),
    )
    .unwrap();
    let index = tmp.path().join("index");
    let o = coca(&[
        "-q",
        "embed",
        "--model",
        DEMO_CFG,
        "--pretrained",
        DEMO_WEIGHTS,
        "--input-dir",
        photos.to_str().unwrap(),
        "--output-dir",
        index.to_str().unwrap(),
        "--emb-dtype",
        "f32",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = coca(&[
        "search",
        "--model",
        DEMO_CFG,
        "--pretrained",
        DEMO_WEIGHTS,
        "--index",
        index.to_str().unwrap(),
        "--video",
        still.to_str().unwrap(),
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["query"]["video"].as_str().unwrap().ends_with("still.gif"));
    let top = &v["results"][0];
    assert!(
        top["image_path"].as_str().unwrap().ends_with("a.png"),
        "{v}"
    );
    assert!(top["score"].as_f64().unwrap() > 0.9999);

    let o = coca(&[
        "embed",
        "--model",
        DEMO_CFG,
        "--pretrained",
        DEMO_WEIGHTS,
        "--video",
        "README.md",
    ]);
    assert_fails_with(&o, &["README.md", "not a video"]);
}

fn root_file(rel: &str) -> std::path::PathBuf {
    common::root().join(rel)
}

#[test]
fn a_video_probe_learns_from_gifs_and_frame_folders() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("actions");
    for (name, colour) in COLOURS {
        let dir = data.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..6 {
            let shade = |c: u8| c.saturating_add((i * 5) as u8);
            let colour = [shade(colour[0]), shade(colour[1]), shade(colour[2])];
            write_gif(&dir.join(format!("{i}.gif")), colour, 2 + i % 3);
        }
        // One video as a folder of frames.
        let frames = dir.join("clip_frames");
        std::fs::create_dir(&frames).unwrap();
        for (k, frame) in coca_data::video::read_frames(&dir.join("0.gif"), 3)
            .unwrap()
            .iter()
            .enumerate()
        {
            frame
                .to_rgb()
                .save(frames.join(format!("{k:03}.png")))
                .unwrap();
        }
    }
    let cache = tmp.path().join("cache");
    let out = tmp.path().join("video.json");
    let o = command()
        .args([
            "-q",
            "probe",
            "--model",
            DEMO_CFG,
            "--pretrained",
            DEMO_WEIGHTS,
            "--video",
        ])
        .args([
            "--frames",
            "3",
            "--pooler-heads",
            "4",
            "--val-fraction",
            "0.3",
        ])
        .args(["--train-dir", data.to_str().unwrap()])
        .args(["--cache-dir", cache.to_str().unwrap()])
        .args(["--output", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(v["task"], "video_attentional_probe");
    assert_eq!(v["frames"], 3);
    assert_eq!(v["probe"]["queries"], 1);
    // 3 frames × (1 + 7×7) tokens of the demo ViT, concatenated along the sequence.
    assert_eq!(v["probe"]["tokens_per_item"], 150);
    assert_eq!(
        v["train_samples"].as_u64().unwrap() + v["val_samples"].as_u64().unwrap(),
        21
    );
    let acc1 = v["metrics"]["acc1"].as_f64().unwrap();
    assert!(acc1 >= 0.6, "video probe top-1 {acc1} (chance 0.33)");

    // An unreadable video is skipped, named in a warning and counted; the others still train the probe.
    std::fs::write(data.join("red/broken.gif"), b"GIF89a, or so it claims").unwrap();
    let skipped_out = tmp.path().join("skipped.json");
    let o = command()
        .args([
            "probe",
            "--model",
            DEMO_CFG,
            "--pretrained",
            DEMO_WEIGHTS,
            "--video",
        ])
        .args([
            "--frames",
            "3",
            "--pooler-heads",
            "4",
            "--val-fraction",
            "0.3",
        ])
        .args(["--train-dir", data.to_str().unwrap(), "--no-cache"])
        .args(["--output", skipped_out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("broken.gif"),
        "the skipped video is named: {}",
        stderr(&o)
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&skipped_out).unwrap()).unwrap();
    assert_eq!(v["skipped_images"], 1, "{v}");
    assert_eq!(
        v["train_samples"].as_u64().unwrap() + v["val_samples"].as_u64().unwrap(),
        21,
        "the 21 readable videos are used"
    );
}

/// Every metadata row of an embedding folder, in order.
fn metadata(out: &Path) -> Vec<coca_retrieval::MetadataRow> {
    let layout = coca_retrieval::Layout::new(out);
    layout
        .partitions()
        .unwrap()
        .into_iter()
        .flat_map(|p| coca_retrieval::read_metadata(&layout.metadata_path(p)).unwrap())
        .collect()
}

/// `coca search --json` over `index` with extra query flags; the results.
fn search(index: &Path, query: &[&str]) -> Vec<serde_json::Value> {
    let mut args = vec![
        "search",
        "--model",
        DEMO_CFG,
        "--pretrained",
        DEMO_WEIGHTS,
        "--index",
        index.to_str().unwrap(),
        "--json",
    ];
    args.extend_from_slice(query);
    let o = coca(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    v["results"].as_array().unwrap().clone()
}

#[test]
fn collections_embed_each_video_once_and_search_finds_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("collection");
    std::fs::create_dir(&dir).unwrap();
    write_gif(&dir.join("moving.gif"), [215, 40, 40], 6);
    std::fs::write(dir.join("moving.txt"), "a red disc moving to the right").unwrap();
    write_gif(&dir.join("still.gif"), [40, 80, 215], 1);
    // A folder of frames inside --input-dir is walked as images (nothing tells it from a folder of photos).
    let frames = dir.join("frames");
    std::fs::create_dir(&frames).unwrap();
    for (i, f) in coca_data::video::read_frames(&dir.join("moving.gif"), 3)
        .unwrap()
        .iter()
        .enumerate()
    {
        f.to_rgb().save(frames.join(format!("{i:03}.png"))).unwrap();
    }
    // Not a decodable video in any build: reported and skipped, like an unreadable image.
    std::fs::write(dir.join("broken.mp4"), b"not a video").unwrap();

    let index = tmp.path().join("index");
    let o = coca(&[
        "-q",
        "embed",
        "--model",
        DEMO_CFG,
        "--pretrained",
        DEMO_WEIGHTS,
        "--input-dir",
        dir.to_str().unwrap(),
        "--output-dir",
        index.to_str().unwrap(),
        "--embeddings",
        "image",
        "--frames",
        "4",
        "--emb-dtype",
        "f32",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(summary["embedded"], 5, "{summary}");
    assert_eq!(summary["skipped"], 1, "{summary}");
    assert!(
        summary["skipped_items"][0]
            .as_str()
            .unwrap()
            .contains("broken.mp4"),
        "{summary}"
    );
    let rows = metadata(&index);
    let described: Vec<(String, bool, Option<u32>)> = rows
        .iter()
        .map(|r| (r.key.clone().unwrap(), r.video, r.frames))
        .collect();
    assert_eq!(
        described,
        [
            ("frames/000.png".to_string(), false, None),
            ("frames/001.png".to_string(), false, None),
            ("frames/002.png".to_string(), false, None),
            ("moving.gif".to_string(), true, Some(4)),
            // A GIF of one frame stays an image.
            ("still.gif".to_string(), false, None),
        ]
    );
    assert_eq!(
        rows[3].caption.as_deref(),
        Some("a red disc moving to the right")
    );

    // The stored row is the video's embedding: the same as `coca embed --video` (queried via search).
    let moving = dir.join("moving.gif");
    let hits = search(
        &index,
        &["--video", moving.to_str().unwrap(), "--frames", "4"],
    );
    assert!(
        hits[0]["image_path"]
            .as_str()
            .unwrap()
            .ends_with("moving.gif"),
        "{hits:?}"
    );
    assert!(hits[0]["score"].as_f64().unwrap() > 0.9999, "{hits:?}");
    assert_eq!(hits[0]["video"], true);
    assert_eq!(hits[0]["frames"], 4);
    // Text queries rank the video among the images, with its metadata.
    let hits = search(&index, &["--text", "a red disc", "--top-k", "5"]);
    assert_eq!(hits.len(), 5);
    let video_hits: Vec<_> = hits.iter().filter(|h| h["video"] == true).collect();
    assert_eq!(video_hits.len(), 1);
    assert_eq!(video_hits[0]["frames"], 4);

    // A file list may name a frame folder: one video row, equal to `coca embed --video FOLDER`.
    let list = tmp.path().join("list.txt");
    std::fs::write(
        &list,
        format!("{}\n{}\n", frames.display(), moving.display()),
    )
    .unwrap();
    let listed = tmp.path().join("listed");
    let o = coca(&[
        "-q",
        "embed",
        "--model",
        DEMO_CFG,
        "--pretrained",
        DEMO_WEIGHTS,
        "--input-list",
        list.to_str().unwrap(),
        "--output-dir",
        listed.to_str().unwrap(),
        "--frames",
        "2",
        "--emb-dtype",
        "f32",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let rows = metadata(&listed);
    assert_eq!(
        rows.iter().map(|r| (r.video, r.frames)).collect::<Vec<_>>(),
        [(true, Some(2)), (true, Some(2))]
    );
    let hits = search(
        &listed,
        &["--video", frames.to_str().unwrap(), "--frames", "2"],
    );
    assert!(
        hits[0]["image_path"].as_str().unwrap().ends_with("frames"),
        "{hits:?}"
    );
    assert!(hits[0]["score"].as_f64().unwrap() > 0.9999, "{hits:?}");
}

#[test]
fn video_fine_tuning_reads_every_frame_and_its_head_predicts_videos() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("actions");
    for (name, colour) in COLOURS {
        let dir = data.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..4 {
            write_gif(&dir.join(format!("{i}.gif")), colour, 2 + i % 2);
        }
    }
    let run = tmp.path().join("run");
    let o = command()
        .args([
            "-q",
            "finetune",
            "--model",
            DEMO_CFG,
            "--pretrained",
            DEMO_WEIGHTS,
        ])
        .args([
            "--video",
            "--frames",
            "3",
            "--epochs",
            "2",
            "--batch-size",
            "4",
        ])
        .args([
            "--val-fraction",
            "0.25",
            "--output",
            run.to_str().unwrap(),
            "--json",
        ])
        .arg("--train-dir")
        .arg(&data)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["task"], "video_finetune");
    assert_eq!(v["frames"], 3);
    assert_eq!(v["pooler"]["queries"], 1);
    assert_eq!(v["val_samples"], 3);
    let o = command()
        .args(["probe", "--model", DEMO_CFG, "--pretrained"])
        .arg(run.join("model.safetensors"))
        .arg("--predict")
        .arg(run.join("head.safetensors"))
        .args(["--json", "--top-k", "3"])
        .arg(data.join("red/0.gif"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let p: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(p[0]["top_k"].as_array().unwrap().len(), 3);
}
