//! Checks tokenisation and every metric against pycocoevalcap 1.2's own output on the fixture
//! written by `scripts/eval/make_caption_metric_fixtures.py`.

use coca_eval::{tokenize_captions, tokenize_ptb, CaptionMetrics, MeteorJar, Scores};
use serde_json::Value;

const TOL: f64 = 1e-4;

struct Image {
    candidate: String,
    references: Vec<String>,
    candidate_tokenized: String,
    references_tokenized: Vec<String>,
    scores: Value,
}

fn fixture() -> (Value, Vec<Image>) {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fixtures/eval/captions/captions.json"
    );
    let text = std::fs::read_to_string(path).expect("fixture readable");
    let json: Value = serde_json::from_str(&text).expect("fixture is JSON");
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect()
    };
    let images = json["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|im| Image {
            candidate: im["candidate"].as_str().unwrap().to_string(),
            references: strings(&im["references"]),
            candidate_tokenized: im["candidate_tokenized"].as_str().unwrap().to_string(),
            references_tokenized: strings(&im["references_tokenized"]),
            scores: im["scores"].clone(),
        })
        .collect();
    (json["corpus"].clone(), images)
}

fn close(what: &str, got: f64, want: &Value) {
    let want = want
        .as_f64()
        .unwrap_or_else(|| panic!("{what}: no reference value"));
    assert!(
        (got - want).abs() <= TOL,
        "{what}: coca {got} vs pycocoevalcap {want} (diff {})",
        (got - want).abs()
    );
}

fn check(scores: &Scores, corpus: &Value, images: &[Image], with_meteor: bool) {
    for k in 0..4 {
        close(
            &format!("corpus Bleu_{}", k + 1),
            scores.bleu[k],
            &corpus[format!("Bleu_{}", k + 1)],
        );
    }
    close("corpus ROUGE_L", scores.rouge_l, &corpus["ROUGE_L"]);
    close("corpus CIDEr", scores.cider_d, &corpus["CIDEr"]);
    assert_eq!(scores.per_image.len(), images.len());
    for (i, (got, im)) in scores.per_image.iter().zip(images).enumerate() {
        for k in 0..4 {
            close(
                &format!("image {i} Bleu_{}", k + 1),
                got.bleu[k],
                &im.scores[format!("Bleu_{}", k + 1)],
            );
        }
        close(
            &format!("image {i} ROUGE_L"),
            got.rouge_l,
            &im.scores["ROUGE_L"],
        );
        close(
            &format!("image {i} CIDEr"),
            got.cider_d,
            &im.scores["CIDEr"],
        );
        if with_meteor {
            close(
                &format!("image {i} METEOR"),
                got.meteor.unwrap(),
                &im.scores["METEOR"],
            );
        } else {
            assert!(got.meteor.is_none());
        }
    }
    if with_meteor {
        close("corpus METEOR", scores.meteor.unwrap(), &corpus["METEOR"]);
    } else {
        assert!(scores.meteor.is_none());
    }
}

#[test]
fn tokenisation_matches_stanford_ptb_tokenizer() {
    let (_, images) = fixture();
    // Both sets lexed as pycocoevalcap does: all references as one text, all candidates as another.
    let refs: Vec<&str> = images
        .iter()
        .flat_map(|im| im.references.iter().map(String::as_str))
        .collect();
    let want_refs: Vec<&str> = images
        .iter()
        .flat_map(|im| im.references_tokenized.iter().map(String::as_str))
        .collect();
    assert_eq!(tokenize_captions(&refs), want_refs);
    let cands: Vec<&str> = images.iter().map(|im| im.candidate.as_str()).collect();
    let want_cands: Vec<&str> = images
        .iter()
        .map(|im| im.candidate_tokenized.as_str())
        .collect();
    assert_eq!(tokenize_captions(&cands), want_cands);
    // Single captions tokenise the same way here (no rule looks across these captions).
    for im in &images {
        let want: Vec<&str> = im
            .candidate_tokenized
            .split(' ')
            .filter(|t| !t.is_empty())
            .collect();
        assert_eq!(tokenize_ptb(&im.candidate), want, "{:?}", im.candidate);
    }
}

#[test]
fn metrics_on_raw_captions_match_pycocoevalcap() {
    let (corpus, images) = fixture();
    let input: Vec<(&str, Vec<&str>)> = images
        .iter()
        .map(|im| {
            (
                im.candidate.as_str(),
                im.references.iter().map(String::as_str).collect(),
            )
        })
        .collect();
    let scores = CaptionMetrics::new().compute(&input).unwrap();
    check(&scores, &corpus, &images, false);
}

#[test]
fn metrics_on_pycocoevalcap_tokens_match_pycocoevalcap() {
    let (corpus, images) = fixture();
    let input: Vec<(&str, Vec<&str>)> = images
        .iter()
        .map(|im| {
            (
                im.candidate_tokenized.as_str(),
                im.references_tokenized.iter().map(String::as_str).collect(),
            )
        })
        .collect();
    let scores = CaptionMetrics::new().compute_tokenized(&input).unwrap();
    check(&scores, &corpus, &images, false);
}

/// METEOR runs the reference jar; set `COCA_METEOR_JAR` to pycocoevalcap's `meteor/meteor-1.5.jar`
/// (with Java on `PATH`) to include it. Without the variable this test checks nothing.
#[test]
fn meteor_through_the_jar_matches_pycocoevalcap() {
    let Some(jar) = MeteorJar::from_env() else {
        eprintln!("COCA_METEOR_JAR not set: METEOR not checked");
        return;
    };
    let (corpus, images) = fixture();
    let input: Vec<(&str, Vec<&str>)> = images
        .iter()
        .map(|im| {
            (
                im.candidate.as_str(),
                im.references.iter().map(String::as_str).collect(),
            )
        })
        .collect();
    let scores = CaptionMetrics::new()
        .with_meteor(jar)
        .compute(&input)
        .unwrap();
    check(&scores, &corpus, &images, true);
}

#[test]
fn a_perfect_caption_scores_higher_than_a_wrong_one() {
    let refs = vec![
        "a dog runs on the beach",
        "a brown dog running along the sand",
    ];
    let good = CaptionMetrics::new()
        .compute(&[("A dog runs on the beach.", refs.clone())])
        .unwrap();
    let bad = CaptionMetrics::new()
        .compute(&[("A plate of food.", refs)])
        .unwrap();
    assert!((good.bleu[3] - 1.0).abs() < 1e-6 && (good.rouge_l - 1.0).abs() < 1e-9);
    assert!(bad.bleu[0] < good.bleu[0] && bad.rouge_l < good.rouge_l);
}

#[test]
fn empty_input_and_missing_references_are_errors() {
    let none: [(&str, Vec<&str>); 0] = [];
    assert!(CaptionMetrics::new()
        .compute(&none)
        .unwrap_err()
        .to_string()
        .contains("at least one image"));
    let err = CaptionMetrics::new()
        .compute(&[("a dog", vec!["a dog"]), ("a cat", vec![])])
        .unwrap_err();
    assert!(
        err.to_string().contains("image 1 has no reference"),
        "{err}"
    );
}

#[test]
fn missing_meteor_jar_is_a_named_error() {
    let jar = MeteorJar {
        java: "/nonexistent/java".into(),
        jar: "/nonexistent/meteor-1.5.jar".into(),
    };
    let err = CaptionMetrics::new()
        .with_meteor(jar)
        .compute(&[("a dog", vec!["a dog"])])
        .unwrap_err();
    assert!(
        err.to_string().contains("/nonexistent/meteor-1.5.jar"),
        "{err}"
    );
}
