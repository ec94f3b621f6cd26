//! `plot_confusion`: a decodable PNG and an SVG with the class names, and errors for bad shapes.

use coca_runlog::{plot_confusion, RunlogError};

fn names(n: usize) -> Vec<String> {
    [
        "red",
        "green",
        "blue",
        "yellow",
        "a rather long class name that gets shortened",
    ]
    .iter()
    .cycle()
    .take(n)
    .enumerate()
    .map(|(i, s)| format!("{s} {i}"))
    .collect()
}

#[test]
fn writes_png_and_svg_with_class_names() {
    let dir = tempfile::tempdir().unwrap();
    let matrix = vec![
        vec![9, 1, 0, 0, 0],
        vec![0, 7, 3, 0, 0],
        vec![0, 0, 10, 0, 0],
        vec![2, 0, 0, 8, 0],
        vec![0, 0, 0, 0, 0],
    ];
    let base = dir.path().join("sub/confusion.png");
    let written = plot_confusion(&matrix, &names(5), &base, "Linear probe").unwrap();
    let png = dir.path().join("sub/confusion.png");
    let svg = dir.path().join("sub/confusion.svg");
    assert_eq!(written, vec![png.clone(), svg.clone()]);
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&png).unwrap()));
    let reader = decoder.read_info().unwrap();
    assert!(reader.info().width >= 240 && reader.info().height >= 240);
    let text = std::fs::read_to_string(&svg).unwrap();
    for needle in [
        "Linear probe",
        "red 0",
        "yellow 3  3",
        "predicted class",
        "true class",
    ] {
        assert!(text.contains(needle), "missing {needle}");
    }
    // Cell counts are written (plotters puts each text on a line of its own).
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    for count in ["9", "7", "10", "2"] {
        assert!(lines.contains(&count), "no count {count}");
    }
    assert!(!text.contains("a rather long class name that gets shortened"));
}

#[test]
fn many_classes_fall_back_to_indices() {
    let dir = tempfile::tempdir().unwrap();
    let n = 80;
    let matrix: Vec<Vec<u64>> = (0..n)
        .map(|i| (0..n).map(|j| u64::from(i == j)).collect())
        .collect();
    let written = plot_confusion(&matrix, &names(n), dir.path().join("big"), "80 classes").unwrap();
    assert_eq!(written.len(), 2);
    let text = std::fs::read_to_string(&written[1]).unwrap();
    assert!(!text.contains("green 1"));
}

#[test]
fn rejects_a_matrix_that_does_not_fit_the_names() {
    let dir = tempfile::tempdir().unwrap();
    let err = plot_confusion(&[vec![1, 2]], &names(2), dir.path().join("x"), "t").unwrap_err();
    assert!(matches!(err, RunlogError::InvalidOption(_)));
    assert!(err.to_string().contains("2x2"), "{err}");
    assert!(plot_confusion(&[], &[], dir.path().join("x"), "t").is_err());
}
