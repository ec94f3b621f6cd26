//! Parity with open_clip 3.3.0 on the committed fixtures (`scripts/parity/make_model_fixtures.py`):
//! embeddings, pooled tokens and logits ≤ 1e-4 max abs, losses ≤ 1e-5 relative, every parameter's
//! gradient ≤ 1e-3 relative norm error, through both weight formats.

use std::path::PathBuf;

use coca_model::parity::{compare_dir, ParityOptions};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/parity")
        .join(name)
}

fn check(name: &str, opts: ParityOptions) {
    let report = compare_dir(&fixture(name), &opts).unwrap_or_else(|e| panic!("{name}: {e}"));
    let n_grads = report
        .checks
        .iter()
        .filter(|c| c.name.starts_with("grad."))
        .count();
    if opts.gradients {
        assert!(n_grads > 50, "{name}: only {n_grads} gradients compared");
    }
    for c in report.worst() {
        eprintln!(
            "{name}: worst {} {} = {:.3e} (tol {:.0e})",
            c.metric, c.name, c.error, c.tolerance
        );
    }
    let failures = report.failures();
    assert!(
        failures.is_empty(),
        "{name}: {} checks failed: {:#?}",
        failures.len(),
        failures
    );
}

#[test]
fn tiny_legacy_pooler_matches_open_clip() {
    check("tiny_legacy", ParityOptions::default());
}

#[test]
fn tiny_parallel_pooler_matches_open_clip() {
    check("tiny_parallel", ParityOptions::default());
}

#[test]
fn tiny_cascade_pooler_matches_open_clip() {
    check("tiny_cascade", ParityOptions::default());
}

#[test]
fn tiny_cls_pooling_matches_open_clip() {
    check("tiny_clspool", ParityOptions::default());
}

/// CPU f32 runs coca's fused kernels, for inference and training alike; CUDA without `COCA_CUDA_KERNELS` and
/// half precision run candle's composed ops instead. Hold that path to open_clip too, outputs and gradients.
#[test]
fn composed_candle_ops_match_open_clip_too() {
    coca_model::nn::ops::with_composed_ops(|| {
        check("tiny_legacy", ParityOptions::default());
        check("tiny_parallel", ParityOptions::default());
    });
}

#[test]
fn pytorch_bin_weights_give_the_same_outputs() {
    for name in [
        "tiny_legacy",
        "tiny_parallel",
        "tiny_cascade",
        "tiny_clspool",
    ] {
        check(
            name,
            ParityOptions {
                gradients: false,
                use_pytorch_bin: true,
                ..ParityOptions::default()
            },
        );
    }
}

#[test]
fn bf16_inference_stays_within_half_precision_error() {
    let opts = ParityOptions {
        dtype: candle_core::DType::BF16,
        ..ParityOptions::default()
    };
    let report = compare_dir(&fixture("tiny_legacy"), &opts).expect("bf16 run");
    assert!(report.checks.iter().all(|c| !c.name.starts_with("grad.")));
    let logits = report
        .checks
        .iter()
        .find(|c| c.name == "logits")
        .expect("logits compared");
    // Far from f32 agreement, but within what 8 significant bits allow.
    assert!(logits.error > 1e-5, "bf16 should not match f32 exactly");
    let failures = report.failures();
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn sincos_position_tables_equal_open_clips() {
    // scripts/parity/make_sincos_fixture.py: the `positional_embedding` parameter of open_clip ViTs built with
    // `pos_embed_type="sin_cos_2d"`.
    let text = std::fs::read_to_string(fixture("sincos_2d.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let tables = json["tables"].as_array().unwrap();
    assert_eq!(tables.len(), 2);
    for table in tables {
        let width = table["width"].as_u64().unwrap() as usize;
        let grid = table["grid"].as_u64().unwrap() as usize;
        let want: Vec<f64> = table["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let got = coca_model::vision::sincos_2d_positional_embedding(width, grid);
        assert_eq!(got.len(), want.len(), "width {width}, grid {grid}");
        let worst = got
            .iter()
            .zip(&want)
            .map(|(g, w)| (f64::from(*g) - w).abs())
            .fold(0f64, f64::max);
        assert!(
            worst <= 1e-7,
            "width {width}, grid {grid}: max abs difference {worst:e}"
        );
    }
}
