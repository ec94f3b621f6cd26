//! Built-in lists against open_clip's, and the class-name / template file formats with their errors.

use std::path::{Path, PathBuf};

use coca_zeroshot::lists::{
    builtin_classnames, builtin_templates, read_classnames, read_templates, resolve_classnames,
    resolve_templates,
};
use coca_zeroshot::ZeroShotError;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn write(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

#[derive(serde::Deserialize)]
struct TokenizerZeroShot {
    classnames: Vec<String>,
    templates: Vec<String>,
}

#[test]
fn builtin_lists_are_open_clips() {
    // fixtures/tokenizer/zero_shot.json was written from open_clip's zero_shot_metadata.py by the tokenizer
    // oracle (templates spelled with `{}`), independently of this crate's data files.
    let text = std::fs::read_to_string(root().join("fixtures/tokenizer/zero_shot.json")).unwrap();
    let reference: TokenizerZeroShot = serde_json::from_str(&text).unwrap();

    let classes = builtin_classnames("imagenet").unwrap();
    assert_eq!(classes.len(), 1000);
    assert_eq!(classes, reference.classnames);
    assert_eq!(builtin_classnames("imagenet1k").unwrap(), classes);
    assert_eq!(classes[21], "kite (bird of prey)");

    let openai = builtin_templates("openai").unwrap();
    assert_eq!(openai.len(), 80);
    for (ours, theirs) in openai.iter().zip(&reference.templates) {
        assert_eq!(ours.fill("tabby cat"), theirs.replace("{}", "tabby cat"));
    }
    let simple = builtin_templates("simple").unwrap();
    let simple: Vec<String> = simple.iter().map(|t| t.fill("X")).collect();
    assert_eq!(
        simple,
        [
            "itap of a X.",
            "a bad photo of the X.",
            "a origami X.",
            "a photo of the large X.",
            "a X in a video game.",
            "art of the X.",
            "a photo of the small X.",
        ]
    );
}

#[test]
fn text_files_are_read_like_clip_benchmark() {
    let dir = tempfile::tempdir().unwrap();
    // BOM, CRLF line ends, surrounding spaces, a lone `\r`, and trailing blank lines.
    let classes = write(
        dir.path(),
        "classnames.txt",
        "\u{feff}airplane\r\n  automobile \r\nbird\rcat\n\n \n",
    );
    assert_eq!(
        read_classnames(&classes, None).unwrap(),
        ["airplane", "automobile", "bird", "cat"]
    );
    let templates = write(
        dir.path(),
        "zeroshot_classification_templates.txt",
        "a photo of a {c}.\na blurry photo of the {}.\n",
    );
    let templates = read_templates(&templates, None).unwrap();
    let filled: Vec<String> = templates.iter().map(|t| t.fill("cat")).collect();
    assert_eq!(filled, ["a photo of a cat.", "a blurry photo of the cat."]);
}

#[test]
fn json_lists_and_dataset_objects() {
    let dir = tempfile::tempdir().unwrap();
    let list = write(dir.path(), "classes.json", r#"["cat", " dog "]"#);
    // JSON entries are taken verbatim (CLIP_benchmark does not strip them).
    assert_eq!(read_classnames(&list, None).unwrap(), ["cat", " dog "]);

    let several = write(
        dir.path(),
        "en_classnames.json",
        r#"{"cifar10": ["airplane", "bird"], "mnist": ["0", "1", "2"]}"#,
    );
    assert_eq!(
        read_classnames(&several, Some("mnist")).unwrap(),
        ["0", "1", "2"]
    );
    let err = read_classnames(&several, None).unwrap_err().to_string();
    assert!(
        err.contains("cifar10, mnist")
            && err.contains("--dataset")
            && err.contains("en_classnames.json"),
        "{err}"
    );
    let err = read_classnames(&several, Some("cifar100"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("no dataset `cifar100`"), "{err}");

    let single = write(
        dir.path(),
        "templates.json",
        r#"{"imagenet1k": ["a photo of a {c}.", "art of the {c}."]}"#,
    );
    assert_eq!(read_templates(&single, None).unwrap().len(), 2);

    let not_strings = write(dir.path(), "bad.json", r#"["cat", 3]"#);
    let err = read_classnames(&not_strings, None).unwrap_err().to_string();
    assert!(err.contains("entry #2 is not a string"), "{err}");
    let broken = write(dir.path(), "broken.json", r#"["cat""#);
    let err = read_classnames(&broken, None).unwrap_err().to_string();
    assert!(
        err.contains("not valid JSON") && err.contains("broken.json"),
        "{err}"
    );
}

#[test]
fn empty_and_blank_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for (name, contents) in [
        ("empty.txt", ""),
        ("blank.txt", "\n  \n"),
        ("empty.json", "[]"),
    ] {
        let path = write(dir.path(), name, contents);
        let err = read_classnames(&path, None).unwrap_err();
        assert!(
            matches!(err, ZeroShotError::BadList { .. }),
            "{name}: {err}"
        );
        let msg = err.to_string();
        assert!(msg.contains(name), "names the file: {msg}");
    }
    let gap = write(dir.path(), "gap.txt", "cat\n\ndog\n");
    let err = read_classnames(&gap, None).unwrap_err().to_string();
    assert!(err.contains("line 2 is blank"), "{err}");
}

#[test]
fn templates_without_placeholder_are_refused_with_their_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "t.txt",
        "a photo of a {c}.\na photo of a cat.\n",
    );
    let err = read_templates(&path, None).unwrap_err().to_string();
    assert!(
        err.contains("t.txt")
            && err.contains("template #2")
            && err.contains("no `{c}` placeholder"),
        "{err}"
    );
    let path = write(dir.path(), "t2.txt", "a photo of a {classname}.\n");
    let err = read_templates(&path, None).unwrap_err().to_string();
    assert!(err.contains("unknown field `{classname}`"), "{err}");
}

#[test]
fn names_resolve_to_builtins_or_files() {
    assert_eq!(resolve_classnames("imagenet", None).unwrap().len(), 1000);
    assert_eq!(resolve_templates("simple", None).unwrap().len(), 7);

    let err = resolve_classnames("imagenet21k", None).unwrap_err();
    assert!(matches!(err, ZeroShotError::UnknownBuiltin { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("`imagenet21k`") && msg.contains("imagenet"),
        "{msg}"
    );
    let msg = resolve_templates("fancy", None).unwrap_err().to_string();
    assert!(
        msg.contains("`fancy`") && msg.contains("openai, simple"),
        "{msg}"
    );

    // Something that looks like a path is reported as a missing file, not as an unknown built-in.
    let msg = resolve_classnames("no/such/classes.txt", None)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("no/such/classes.txt: no such file"), "{msg}");

    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "mine.txt", "cat\ndog\n");
    assert_eq!(
        resolve_classnames(path.to_str().unwrap(), None).unwrap(),
        ["cat", "dog"]
    );
}
