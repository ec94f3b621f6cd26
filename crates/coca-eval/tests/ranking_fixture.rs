//! acc1/acc5/mean per-class recall and recall@K against CLIP_benchmark's formulas (torch.topk and
//! scikit-learn's balanced_accuracy_score) on seeded score matrices: fixtures/eval/ranking/metrics.json,
//! written by scripts/eval/make_ranking_metric_fixtures.py.

use coca_eval::{classification_metrics, retrieval_recall};
use serde_json::Value;

fn fixture() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fixtures/eval/ranking/metrics.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn indices(v: &Value) -> Vec<usize> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect()
}

/// The oracle averaged in float32; the fixtures' fractions are exact otherwise.
fn close(got: f64, want: f64, what: &str) {
    assert!((got - want).abs() < 1e-6, "{what}: {got} vs {want}");
}

#[test]
fn classification_matches_clip_benchmark() {
    let f = fixture();
    let cases = f["classification"].as_array().unwrap();
    assert_eq!(cases.len(), 3);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let classes = case["classes"].as_u64().unwrap() as usize;
        let m = classification_metrics(
            &floats(&case["logits"]),
            classes,
            &indices(&case["targets"]),
        )
        .unwrap();
        close(m.acc1, case["acc1"].as_f64().unwrap(), name);
        match case["acc5"].as_f64() {
            Some(want) => close(m.acc5.expect("acc5"), want, name),
            None => assert_eq!(m.acc5, None, "{name}"),
        }
        close(
            m.mean_per_class_recall,
            case["mean_per_class_recall"].as_f64().unwrap(),
            name,
        );
        // The balanced accuracy is not the plain accuracy on these imbalanced targets.
        assert!((m.mean_per_class_recall - m.acc1).abs() > 1e-3, "{name}");
    }
}

#[test]
fn retrieval_matches_clip_benchmark() {
    let f = fixture();
    let cases = f["retrieval"].as_array().unwrap();
    assert_eq!(cases.len(), 2);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let images = case["images"].as_u64().unwrap() as usize;
        let ks = indices(&case["ks"]);
        let recalls = retrieval_recall(
            &floats(&case["scores"]),
            images,
            &indices(&case["text_image"]),
            &ks,
        )
        .unwrap();
        for r in recalls {
            let want = &case["metrics"];
            close(
                r.image_retrieval,
                want[format!("image_retrieval_recall@{}", r.k)]
                    .as_f64()
                    .unwrap(),
                name,
            );
            close(
                r.text_retrieval,
                want[format!("text_retrieval_recall@{}", r.k)]
                    .as_f64()
                    .unwrap(),
                name,
            );
        }
    }
}
