//! Prompt templates: text with a placeholder where the class name goes.
//!
//! The syntax is the subset of Python's `str.format` that open_clip and CLIP_benchmark templates use:
//! `{c}` (CLIP_benchmark's `template.format(c=name)`) or `{}` (open_clip's `template.format(name)`) stands for
//! the class name, and `{{` / `}}` are literal braces. Any other field is refused rather than passed through,
//! because Python would raise on it too and a typo such as `{class}` would otherwise reach the model verbatim.

use crate::error::{Result, ZeroShotError};

/// One piece of a parsed template.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Piece {
    Text(String),
    ClassName,
}

/// A parsed prompt template such as `a photo of a {c}.`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Template {
    source: String,
    pieces: Vec<Piece>,
}

impl Template {
    /// Parse a template; it must contain the class-name placeholder at least once.
    ///
    /// # Errors
    ///
    /// [`ZeroShotError::BadTemplate`] for a template without `{c}`, an unknown field such as `{name}`, or an
    /// unmatched brace.
    pub fn parse(source: &str) -> Result<Self> {
        let bad = |reason: String| ZeroShotError::BadTemplate {
            template: source.to_string(),
            reason,
        };
        let mut pieces = Vec::new();
        let mut text = String::new();
        let mut chars = source.char_indices().peekable();
        while let Some((at, ch)) = chars.next() {
            match ch {
                '{' if chars.peek().map(|&(_, c)| c) == Some('{') => {
                    chars.next();
                    text.push('{');
                }
                '{' => {
                    let rest = &source[at + 1..];
                    let end = rest.find('}').ok_or_else(|| {
                        bad(format!(
                            "unclosed `{{` at byte {at}; write `{{{{` for a literal brace"
                        ))
                    })?;
                    let field = &rest[..end];
                    if !field.is_empty() && field != "c" {
                        return Err(bad(format!(
                            "unknown field `{{{field}}}`; the class name is written `{{c}}` (or `{{}}`)"
                        )));
                    }
                    for _ in 0..=field.chars().count() {
                        chars.next();
                    }
                    if !text.is_empty() {
                        pieces.push(Piece::Text(std::mem::take(&mut text)));
                    }
                    pieces.push(Piece::ClassName);
                }
                '}' if chars.peek().map(|&(_, c)| c) == Some('}') => {
                    chars.next();
                    text.push('}');
                }
                '}' => {
                    return Err(bad(format!(
                        "single `}}` at byte {at}; write `}}}}` for a literal brace"
                    )))
                }
                other => text.push(other),
            }
        }
        if !text.is_empty() {
            pieces.push(Piece::Text(text));
        }
        if !pieces.contains(&Piece::ClassName) {
            return Err(bad(
                "no `{c}` placeholder for the class name (e.g. `a photo of a {c}.`)".to_string(),
            ));
        }
        Ok(Self {
            source: source.to_string(),
            pieces,
        })
    }

    /// The template as it was given.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The template written with `{c}` placeholders and escaped literal braces, whichever spelling it was
    /// given in: equal canonical forms give equal prompts (used for cache keys).
    pub fn canonical(&self) -> String {
        let mut out = String::with_capacity(self.source.len());
        for piece in &self.pieces {
            match piece {
                Piece::Text(t) => out.push_str(&t.replace('{', "{{").replace('}', "}}")),
                Piece::ClassName => out.push_str("{c}"),
            }
        }
        out
    }

    /// The prompt for one class: the template with every placeholder replaced by `class_name`.
    pub fn fill(&self, class_name: &str) -> String {
        let mut out = String::with_capacity(self.source.len() + class_name.len());
        for piece in &self.pieces {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::ClassName => out.push_str(class_name),
            }
        }
        out
    }
}

impl std::fmt::Display for Template {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.source)
    }
}

impl std::str::FromStr for Template {
    type Err = ZeroShotError;

    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_both_placeholder_spellings() {
        let t = Template::parse("a photo of a {c}.").unwrap();
        assert_eq!(t.fill("tabby cat"), "a photo of a tabby cat.");
        let t = Template::parse("a {} in a video game, a {c}.").unwrap();
        assert_eq!(t.fill("dog"), "a dog in a video game, a dog.");
        assert_eq!(t.canonical(), "a {c} in a video game, a {c}.");
    }

    #[test]
    fn doubled_braces_are_literal() {
        let t = Template::parse("{{x}} {c} }}").unwrap();
        assert_eq!(t.fill("cat"), "{x} cat }");
        assert_eq!(t.canonical(), "{{x}} {c} }}");
        assert_eq!(
            Template::parse(&t.canonical()).unwrap().fill("cat"),
            "{x} cat }"
        );
    }

    #[test]
    fn class_names_are_inserted_verbatim() {
        // A class name with braces must not be re-interpreted as a template.
        let t = Template::parse("itap of a {c}.").unwrap();
        assert_eq!(t.fill("{c} (x)"), "itap of a {c} (x).");
    }

    #[test]
    fn refuses_templates_without_placeholder_or_with_other_fields() {
        for (bad, needle) in [
            ("a photo of a cat.", "no `{c}` placeholder"),
            ("a photo of a {class}.", "unknown field `{class}`"),
            ("a photo of a {c.", "unclosed"),
            ("a photo of a c}.", "single `}`"),
            ("{{c}}", "no `{c}` placeholder"),
            ("", "no `{c}` placeholder"),
        ] {
            let err = Template::parse(bad).unwrap_err().to_string();
            assert!(err.contains(needle), "{bad:?}: {err}");
            assert!(
                err.contains(&format!("{bad:?}")),
                "error names the template: {err}"
            );
        }
    }
}
