//! The ftfy port and the HTML unescaper against randomised probes answered by
//! ftfy 6.3.1 and Python's `html.unescape`.

mod common;

use coca_text::ftfy::{fix_text, is_bad, unescape_html};
use coca_text::html::unescape;
use common::{read_json, FtfyCases};

fn check<T: PartialEq + std::fmt::Debug>(what: &str, cases: impl Iterator<Item = (String, T, T)>) {
    let mut total = 0;
    let failures: Vec<String> = cases
        .inspect(|_| total += 1)
        .filter(|(_, got, want)| got != want)
        .map(|(input, got, want)| format!("{input:?}: got {got:?}, want {want:?}"))
        .collect();
    assert!(total > 0, "no {what} cases");
    assert!(
        failures.is_empty(),
        "{what}: {} of {total} differ, first ones:\n{}",
        failures.len(),
        failures
            .iter()
            .take(8)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn badness_heuristic_matches() {
    let cases: FtfyCases = read_json("ftfy_cases.json");
    let positives = cases.badness.iter().filter(|(_, bad)| *bad).count();
    assert!(
        positives > 100 && positives < cases.badness.len() - 100,
        "probes cover both verdicts"
    );
    check(
        "is_bad",
        cases
            .badness
            .into_iter()
            .map(|(s, want)| (s.clone(), is_bad(&s), want)),
    );
}

#[test]
fn mojibake_repair_matches() {
    let cases: FtfyCases = read_json("ftfy_cases.json");
    check(
        "fix_text",
        cases
            .fix_text
            .into_iter()
            .map(|(s, want)| (s.clone(), fix_text(&s), want)),
    );
}

#[test]
fn html_unescaping_matches_python_and_ftfy() {
    let cases: FtfyCases = read_json("ftfy_cases.json");
    check(
        "html.unescape",
        cases
            .html
            .iter()
            .map(|(s, py, _)| (s.clone(), unescape(s).into_owned(), py.clone())),
    );
    check(
        "ftfy unescape_html",
        cases
            .html
            .into_iter()
            .map(|(s, _, ft)| (s.clone(), unescape_html(&s), ft)),
    );
}
