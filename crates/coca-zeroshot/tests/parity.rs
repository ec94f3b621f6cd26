//! The zero-shot classifier and rankings against open_clip's `build_zero_shot_classifier`, on the demo
//! checkpoint (fixtures/zeroshot/demo_classifier.json, written by scripts/parity/make_zeroshot_fixtures.py).

use std::path::PathBuf;

use candle_core::{Device, Tensor};
use coca_image::PreprocessConfig;
use coca_model::load::{load_model, LoadOptions};
use coca_model::{Coca, CocaConfig};
use coca_zeroshot::{build_classifier, build_classifier_with_progress, classify, Template};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[derive(serde::Deserialize)]
struct Fixture {
    classnames: Vec<String>,
    templates: Vec<String>,
    classifier: Vec<Vec<f32>>,
    images: Vec<String>,
    logits: Vec<Vec<f32>>,
    top5: Vec<Vec<usize>>,
    top5_probabilities: Vec<Vec<f32>>,
}

fn fixture() -> Fixture {
    let text =
        std::fs::read_to_string(root().join("fixtures/zeroshot/demo_classifier.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn demo_model() -> Coca {
    let cfg = CocaConfig::from_file(&root().join("assets/demo/coca_demo-tiny.json")).unwrap();
    load_model(
        &cfg,
        &root().join("assets/demo/coca_demo-tiny.safetensors"),
        &LoadOptions::default(),
    )
    .unwrap()
}

fn templates(f: &Fixture) -> Vec<Template> {
    f.templates
        .iter()
        .map(|t| Template::parse(t).unwrap())
        .collect()
}

fn max_abs_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .flat_map(|(x, y)| {
            assert_eq!(x.len(), y.len());
            x.iter().zip(y).map(|(p, q)| (p - q).abs())
        })
        .fold(0.0, f32::max)
}

#[test]
fn classifier_matches_open_clip() {
    let f = fixture();
    let model = demo_model();
    // A prompt batch that splits classes across forward passes: the result must not depend on it.
    let mut reports = Vec::new();
    let classifier =
        build_classifier_with_progress(&model, &f.classnames, &templates(&f), 7, &mut |n| {
            reports.push(n)
        })
        .unwrap();
    assert_eq!(classifier.dims(), [16, f.classnames.len()]);
    let ours = classifier.to_vec2::<f32>().unwrap();
    let err = max_abs_diff(&ours, &f.classifier);
    eprintln!("classifier vs open_clip: max abs error {err:e}");
    assert!(err <= 1e-4, "classifier max abs error {err:e}");
    let total = f.classnames.len() * f.templates.len();
    assert_eq!(reports.last(), Some(&total));
    assert_eq!(reports.len(), total.div_ceil(7));

    let one_pass = build_classifier(&model, &f.classnames, &templates(&f), 1000).unwrap();
    let diff = max_abs_diff(&one_pass.to_vec2::<f32>().unwrap(), &ours);
    assert!(diff <= 1e-6, "batching changed the classifier by {diff:e}");
}

#[test]
fn top5_matches_open_clip_on_photos() {
    let f = fixture();
    let model = demo_model();
    let classifier = build_classifier(&model, &f.classnames, &templates(&f), 64).unwrap();
    let pre = PreprocessConfig::default();
    let mut pixels = Vec::new();
    for image in &f.images {
        pixels.extend(coca_image::preprocess_path(root().join(image), &pre).unwrap());
    }
    let pixels = Tensor::from_vec(pixels, (f.images.len(), 3, 224, 224), &Device::Cpu).unwrap();
    let embeddings = model.encode_image(&pixels).unwrap().embedding;
    let ranked = classify(&embeddings, &classifier, 5).unwrap();
    for (i, image) in f.images.iter().enumerate() {
        let order: Vec<usize> = ranked[i].iter().map(|p| p.index).collect();
        assert_eq!(order, f.top5[i], "{image}: top-5 order");
        for (p, (&want_p, &idx)) in ranked[i]
            .iter()
            .zip(f.top5_probabilities[i].iter().zip(&f.top5[i]))
        {
            assert!(
                (p.probability - want_p).abs() <= 1e-3,
                "{image}: probability {} vs open_clip {want_p}",
                p.probability
            );
            let want_logit = f.logits[i][idx];
            assert!(
                (100.0 * p.similarity - want_logit).abs() <= 1e-2,
                "{image}: logit {} vs open_clip {want_logit}",
                100.0 * p.similarity
            );
        }
    }
}

#[test]
fn empty_lists_and_zero_batches_are_refused() {
    let f = fixture();
    let model = demo_model();
    let t = templates(&f);
    let err = build_classifier(&model, &[], &t, 8)
        .unwrap_err()
        .to_string();
    assert!(err.contains("no class names"), "{err}");
    let err = build_classifier(&model, &f.classnames, &[], 8)
        .unwrap_err()
        .to_string();
    assert!(err.contains("no prompt templates"), "{err}");
    let err = build_classifier(&model, &f.classnames, &t, 0)
        .unwrap_err()
        .to_string();
    assert!(err.contains("batch size"), "{err}");
}
