//! The hostile checkpoints of `fixtures/adversarial/checkpoints/` (pickle bombs, deep nesting, lying
//! sizes, code-running globals, non-finite weights): `coca info` and `coca embed` refuse each one with
//! one message naming the file, under an address-space limit, without a signal.

mod common;

use common::{assert_refused_cleanly, coca_limited, stderr, stdout, HOSTILE_ADDRESS_SPACE};
use serde_json::Value;

const DIR: &str = "fixtures/adversarial/checkpoints";
const IMAGE: &str = "fixtures/images/sources/chelsea.png";

struct Case {
    path: String,
    model: String,
    error: String,
    /// The tensors holding NaN or infinity, for the files that are valid apart from that.
    non_finite: Option<Vec<String>>,
}

fn cases() -> Vec<Case> {
    let text = std::fs::read_to_string(common::root().join(DIR).join("manifest.json"))
        .expect("read the manifest");
    let manifest: Value = serde_json::from_str(&text).expect("parse the manifest");
    let default_model = manifest["default_model"].as_str().expect("default_model");
    let files = manifest["files"].as_array().expect("files");
    assert!(!files.is_empty(), "the manifest lists no files");
    files
        .iter()
        .map(|f| {
            let field = |k: &str| f[k].as_str().map(str::to_string);
            Case {
                path: format!("{DIR}/{}", field("file").expect("file")),
                model: field("model").unwrap_or_else(|| default_model.to_string()),
                error: field("error").expect("error"),
                non_finite: f["non_finite"].as_array().map(|names| {
                    names
                        .iter()
                        .map(|n| n.as_str().expect("a tensor name").to_string())
                        .collect()
                }),
            }
        })
        .collect()
}

fn info(case: &Case, json: bool) -> std::process::Output {
    let mut args = vec!["info", "--model", &case.model, "--pretrained", &case.path];
    if json {
        args.push("--json");
    }
    coca_limited(&args, HOSTILE_ADDRESS_SPACE)
}

fn embed(case: &Case, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "embed",
        "--model",
        &case.model,
        "--pretrained",
        &case.path,
        "--image",
        IMAGE,
    ];
    args.extend_from_slice(extra);
    coca_limited(&args, HOSTILE_ADDRESS_SPACE)
}

#[test]
fn every_file_is_in_the_manifest() {
    let listed: Vec<String> = cases().into_iter().map(|c| c.path).collect();
    for entry in std::fs::read_dir(common::root().join(DIR)).expect("list the fixtures") {
        let name = entry.expect("a directory entry").file_name();
        let name = name.to_string_lossy();
        if name != "manifest.json" {
            let path = format!("{DIR}/{name}");
            assert!(listed.contains(&path), "{path} is not in the manifest");
        }
    }
}

#[test]
fn malformed_checkpoints_are_refused_by_info_and_embed() {
    for case in cases().iter().filter(|c| c.non_finite.is_none()) {
        let expected = [case.path.as_str(), case.error.as_str()];
        assert_refused_cleanly(&info(case, false), &expected);
        assert_refused_cleanly(&embed(case, &[]), &expected);
    }
}

#[test]
fn non_finite_weights_are_listed_by_info_and_refused_by_inference() {
    let nonfinite: Vec<Case> = cases()
        .into_iter()
        .filter(|c| c.non_finite.is_some())
        .collect();
    assert!(!nonfinite.is_empty(), "no non-finite case in the manifest");
    for case in &nonfinite {
        let names = case.non_finite.as_ref().expect("filtered");

        let o = info(case, true);
        assert!(o.status.success(), "{}: {}", case.path, stderr(&o));
        let report: Value = serde_json::from_str(&stdout(&o)).expect("info --json prints JSON");
        let listed: Vec<&str> = report["checkpoint"]["non_finite_tensors"]
            .as_array()
            .expect("non_finite_tensors")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(listed, *names, "{}", case.path);

        let o = info(case, false);
        assert!(o.status.success(), "{}: {}", case.path, stderr(&o));
        let text = stdout(&o);
        assert!(text.contains("NaN or infinite"), "{text}");
        for name in names {
            assert!(
                text.contains(&format!("'{name}'")),
                "{name} missing in: {text}"
            );
        }

        let o = embed(case, &[]);
        assert_refused_cleanly(&o, &[&case.path, &case.error, "--allow-nonfinite-weights"]);
        assert!(stdout(&o).is_empty(), "printed output: {}", stdout(&o));
    }
}

/// With the flag, the run goes ahead with a warning naming the tensors, and the NaN embedding it
/// produces is an error naming the image, never a silent `null`.
#[test]
fn allowed_non_finite_weights_warn_and_never_print_null() {
    use std::os::unix::process::ExitStatusExt;
    let case = cases()
        .into_iter()
        .find(|c| c.path.ends_with("nan_weight.safetensors"))
        .expect("nan_weight.safetensors in the manifest");
    for extra in [
        &["--allow-nonfinite-weights"][..],
        &["--allow-nonfinite-weights", "--json"],
    ] {
        let o = embed(&case, extra);
        let err = stderr(&o);
        assert!(o.status.signal().is_none(), "signal: {err}");
        assert!(!o.status.success(), "succeeded: {}", stdout(&o));
        assert!(
            err.contains("'visual.proj'") && err.contains("running anyway"),
            "no warning naming the tensor: {err}"
        );
        assert!(
            err.contains(&format!(
                "error: the model produced a NaN or infinite embedding for image '{IMAGE}'"
            )),
            "{err}"
        );
        assert!(!stdout(&o).contains("null"), "{}", stdout(&o));
    }
}
