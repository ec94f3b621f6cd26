//! Class-name lists and template sets: the built-in ones and files in CLIP_benchmark's formats.
//!
//! Accepted files (the format is chosen by the extension: `.json` is JSON, anything else is text):
//!
//! * **text**, one entry per line, as CLIP_benchmark's `classnames.txt` and
//!   `zeroshot_classification_templates.txt`: each line is stripped of surrounding whitespace; a UTF-8 byte
//!   order mark and blank lines at the end of the file are ignored. A blank line before the last entry is an
//!   error, because CLIP_benchmark would turn it into an empty class and shift every later class index.
//! * **JSON**, either a list of strings, or an object mapping dataset names to lists as in CLIP_benchmark's
//!   `en_classnames.json` / `en_zeroshot_classification_templates.json` (`{"cifar10": ["airplane", ...]}`).
//!   From an object, the `dataset` key is taken; without one, an object with a single key is used and any
//!   other object is refused with the list of its keys. CuPL-style objects (class name → its own prompts)
//!   are not supported.
//!
//! Templates use `{c}` (or `{}`) for the class name; see [`Template`].

use std::path::Path;

use serde_json::Value;

use crate::error::{Result, ZeroShotError};
use crate::template::Template;

/// The built-in class lists: `(name, aliases, one-per-line text)`.
const BUILTIN_CLASSES: &[(&str, &[&str], &str)] = &[(
    "imagenet",
    &["imagenet1k"],
    include_str!("../data/imagenet_classnames.txt"),
)];

/// The built-in template sets: `(name, one-per-line text)`.
const BUILTIN_TEMPLATES: &[(&str, &str)] = &[
    ("openai", include_str!("../data/openai_templates.txt")),
    ("simple", include_str!("../data/simple_templates.txt")),
];

/// Names accepted by [`builtin_classnames`] (aliases excluded).
pub fn builtin_class_list_names() -> Vec<&'static str> {
    BUILTIN_CLASSES.iter().map(|(name, _, _)| *name).collect()
}

/// Names accepted by [`builtin_templates`].
pub fn builtin_template_set_names() -> Vec<&'static str> {
    BUILTIN_TEMPLATES.iter().map(|(name, _)| *name).collect()
}

/// A built-in class list: `imagenet` (alias `imagenet1k`), open_clip's 1000 ImageNet class names
/// (`IMAGENET_CLASSNAMES` of open_clip 3.3.0), in class-index order. `None` for an unknown name.
pub fn builtin_classnames(name: &str) -> Option<Vec<String>> {
    let (_, _, text) = BUILTIN_CLASSES
        .iter()
        .find(|(n, aliases, _)| *n == name || aliases.contains(&name))?;
    // The data files are checked by this crate's tests, so parsing them cannot fail at run time.
    parse_lines(text, name).ok()
}

/// A built-in template set: `openai` (open_clip's 80 `OPENAI_IMAGENET_TEMPLATES`) or `simple` (its 7
/// `SIMPLE_IMAGENET_TEMPLATES`). `None` for an unknown name.
pub fn builtin_templates(name: &str) -> Option<Vec<Template>> {
    let (_, text) = BUILTIN_TEMPLATES.iter().find(|(n, _)| *n == name)?;
    let lines = parse_lines(text, name).ok()?;
    lines
        .iter()
        .map(|line| Template::parse(line))
        .collect::<Result<_>>()
        .ok()
}

/// What the user passed for `--classes` / `--templates`: a built-in name or a file.
fn resolve_spec<T>(
    spec: &str,
    kind: &'static str,
    builtin: impl Fn(&str) -> Option<T>,
    known: Vec<&'static str>,
    from_file: impl Fn(&Path) -> Result<T>,
) -> Result<T> {
    // Built-in names win over files of the same name in the working directory; `./name` reads the file.
    if let Some(list) = builtin(spec) {
        return Ok(list);
    }
    let path = Path::new(spec);
    if path.is_file() {
        return from_file(path);
    }
    let looks_like_path = spec.contains(['/', '\\', '.']);
    if looks_like_path || path.exists() {
        return Err(ZeroShotError::Io {
            path: path.to_path_buf(),
            reason: if path.exists() {
                "not a regular file".into()
            } else {
                "no such file".into()
            },
        });
    }
    Err(ZeroShotError::UnknownBuiltin {
        kind,
        name: spec.to_string(),
        known: known.join(", "),
    })
}

/// Class names from a built-in name (`imagenet`) or a file (see the module docs); `dataset` picks the key of
/// a `{dataset: [names]}` JSON file.
pub fn resolve_classnames(spec: &str, dataset: Option<&str>) -> Result<Vec<String>> {
    resolve_spec(
        spec,
        "class list",
        builtin_classnames,
        builtin_class_list_names(),
        |path| read_classnames(path, dataset),
    )
}

/// Templates from a built-in name (`openai`, `simple`) or a file (see the module docs); `dataset` picks the
/// key of a `{dataset: [templates]}` JSON file.
pub fn resolve_templates(spec: &str, dataset: Option<&str>) -> Result<Vec<Template>> {
    resolve_spec(
        spec,
        "template set",
        builtin_templates,
        builtin_template_set_names(),
        |path| read_templates(path, dataset),
    )
}

/// Read a class-name file (one per line, or JSON; see the module docs).
pub fn read_classnames(path: &Path, dataset: Option<&str>) -> Result<Vec<String>> {
    let text = read_text(path)?;
    let origin = path.display().to_string();
    if is_json(path) {
        parse_json_list(&text, &origin, dataset, "class names")
    } else {
        parse_lines(&text, &origin)
    }
}

/// Read a template file (one per line, or JSON; see the module docs); every template must contain `{c}`.
pub fn read_templates(path: &Path, dataset: Option<&str>) -> Result<Vec<Template>> {
    let text = read_text(path)?;
    let origin = path.display().to_string();
    let lines = if is_json(path) {
        parse_json_list(&text, &origin, dataset, "templates")?
    } else {
        parse_lines(&text, &origin)?
    };
    lines
        .iter()
        .enumerate()
        .map(|(i, line)| {
            Template::parse(line).map_err(|e| ZeroShotError::BadList {
                origin: origin.clone(),
                reason: format!("template #{}: {e}", i + 1),
            })
        })
        .collect()
}

fn is_json(path: &Path) -> bool {
    path.extension()
        .is_some_and(|ext| ext.eq_ignore_ascii_case("json"))
}

fn read_text(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| ZeroShotError::Io {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    String::from_utf8(bytes).map_err(|e| ZeroShotError::BadList {
        origin: path.display().to_string(),
        reason: format!(
            "not UTF-8 text (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        ),
    })
}

/// One entry per line, stripped (CLIP_benchmark's `[line.strip() for line in text.splitlines()]`), with the
/// trailing blank lines dropped and interior blank lines refused.
pub fn parse_lines(text: &str, origin: &str) -> Result<Vec<String>> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut entries: Vec<String> = python_splitlines(text)
        .map(|line| line.trim().to_string())
        .collect();
    while entries.last().is_some_and(String::is_empty) {
        entries.pop();
    }
    if entries.is_empty() {
        return Err(ZeroShotError::BadList {
            origin: origin.to_string(),
            reason: "the file lists nothing (expected one entry per line)".into(),
        });
    }
    if let Some(blank) = entries.iter().position(String::is_empty) {
        return Err(ZeroShotError::BadList {
            origin: origin.to_string(),
            reason: format!(
                "line {} is blank; remove it (a blank entry would shift every later class index)",
                blank + 1
            ),
        });
    }
    Ok(entries)
}

/// A JSON list of strings, or the `dataset` entry of a `{dataset: [strings]}` object.
pub fn parse_json_list(
    text: &str,
    origin: &str,
    dataset: Option<&str>,
    what: &str,
) -> Result<Vec<String>> {
    let bad = |reason: String| ZeroShotError::BadList {
        origin: origin.to_string(),
        reason,
    };
    let value: Value =
        serde_json::from_str(text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
    let (list, key) = match &value {
        Value::Array(_) => (&value, None),
        Value::Object(map) => {
            let key = match dataset {
                Some(key) => key.to_string(),
                None if map.len() == 1 => map.keys().next().cloned().unwrap_or_default(),
                None => {
                    let keys: Vec<&str> = map.keys().map(String::as_str).collect();
                    return Err(bad(format!(
                        "the file holds {what} for several datasets ({}); choose one with --dataset",
                        keys.join(", ")
                    )));
                }
            };
            let list = map.get(&key).ok_or_else(|| {
                let keys: Vec<&str> = map.keys().map(String::as_str).collect();
                bad(format!(
                    "no dataset `{key}` in the file; it has: {}",
                    keys.join(", ")
                ))
            })?;
            (list, Some(key))
        }
        _ => {
            return Err(bad(format!(
                "expected a JSON list of {what} or an object {{dataset: [{what}]}}"
            )))
        }
    };
    let at = |i: usize| match &key {
        Some(key) => format!("`{key}` entry #{}", i + 1),
        None => format!("entry #{}", i + 1),
    };
    let items = list.as_array().ok_or_else(|| {
        bad(format!(
            "`{}` is not a list of {what}",
            key.as_deref().unwrap_or("")
        ))
    })?;
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let s = item
            .as_str()
            .ok_or_else(|| bad(format!("{} is not a string: {item}", at(i))))?;
        if s.trim().is_empty() {
            return Err(bad(format!("{} is empty", at(i))));
        }
        out.push(s.to_string());
    }
    if out.is_empty() {
        return Err(bad(format!("the list of {what} is empty")));
    }
    Ok(out)
}

/// Python's `str.splitlines()`: lines end at `\n`, `\r\n`, `\r` and the other Unicode line boundaries
/// Python knows, and a final line end does not start an empty line.
fn python_splitlines(text: &str) -> impl Iterator<Item = &str> {
    let is_break = |c: char| {
        matches!(
            c,
            '\n' | '\r'
                | '\u{b}'
                | '\u{c}'
                | '\u{1c}'
                | '\u{1d}'
                | '\u{1e}'
                | '\u{85}'
                | '\u{2028}'
                | '\u{2029}'
        )
    };
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        match rest.find(is_break) {
            Some(at) => {
                let line = &rest[..at];
                let after = &rest[at..];
                let skip = if after.starts_with("\r\n") {
                    2
                } else {
                    after.chars().next().map_or(1, char::len_utf8)
                };
                rest = &after[skip..];
                Some(line)
            }
            None => {
                let line = rest;
                rest = "";
                Some(line)
            }
        }
    })
}
