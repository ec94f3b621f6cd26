//! A longest-match lexer driven by the rule table in [`super::rules`].
//!
//! At each position every rule is tried as an anchored search; the rule whose match (trailing context
//! included) is longest wins, the earlier rule on a tie — the semantics of the lexer generator the
//! Stanford tokenizer is built with. Searches use lazy DFAs in "longest match" mode, so alternations
//! such as `Sep|Sept` behave as in the original rather than as in a backtracking engine.

use std::sync::OnceLock;

use regex_automata::hybrid::dfa::{Cache, DFA};
use regex_automata::{Anchored, Input, MatchKind};

use super::rules::{self, Action};

/// A compiled rule: the token pattern, and for rules with trailing context the context alone and
/// token-plus-context.
struct Compiled {
    token: DFA,
    trailing: Option<(DFA, DFA)>,
    action: Action,
}

/// One lexed item: a token's text, or the end of an input line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Lexeme {
    Token(String),
    Newline,
}

fn build(pattern: &str) -> DFA {
    DFA::builder()
        .configure(DFA::config().match_kind(MatchKind::All))
        .build(pattern)
        // The table is a compile-time constant; a pattern that fails to build is a programming
        // error caught by every test, never a property of the input.
        .unwrap_or_else(|e| panic!("PTB rule table: pattern does not compile ({e}): {pattern}"))
}

fn compiled_rules() -> &'static [Compiled] {
    static RULES: OnceLock<Vec<Compiled>> = OnceLock::new();
    RULES.get_or_init(|| {
        let defs = rules::definitions();
        rules::rules()
            .into_iter()
            .map(|spec| {
                let token = rules::expand(spec.pattern, &defs);
                let trailing = spec.trailing.map(|t| {
                    let context = rules::expand(t, &defs);
                    let both = format!("(?:{token})(?:{context})");
                    (build(&context), build(&both))
                });
                Compiled {
                    token: build(&token),
                    trailing,
                    action: spec.action,
                }
            })
            .collect()
    })
}

/// Per-call search caches, one per rule and pattern.
struct Caches {
    token: Vec<Cache>,
    trailing: Vec<Option<(Cache, Cache)>>,
}

impl Caches {
    fn new(rules: &[Compiled]) -> Self {
        Self {
            token: rules.iter().map(|r| r.token.create_cache()).collect(),
            trailing: rules
                .iter()
                .map(|r| {
                    r.trailing
                        .as_ref()
                        .map(|(c, b)| (c.create_cache(), b.create_cache()))
                })
                .collect(),
        }
    }
}

/// End of the longest anchored match of `dfa` in `text[start..end]`, if any.
fn longest(dfa: &DFA, cache: &mut Cache, text: &str, start: usize, end: usize) -> Option<usize> {
    let input = Input::new(text).span(start..end).anchored(Anchored::Yes);
    // The lazy DFA only gives up when configured to (minimum cache clear count, quit bytes or
    // Unicode word boundaries); none of these is used, so a search cannot fail.
    dfa.try_search_fwd(cache, &input)
        .expect("lazy DFA search without give-up conditions cannot fail")
        .map(|m| m.offset())
}

/// Whether `dfa` matches exactly `text[start..end]`.
fn matches_exactly(dfa: &DFA, cache: &mut Cache, text: &str, start: usize, end: usize) -> bool {
    longest(dfa, cache, text, start, end) == Some(end)
}

/// The match of rule `i` at `pos`: (end of match with context, end of the token).
fn try_rule(
    rule: &Compiled,
    caches: &mut Caches,
    i: usize,
    text: &str,
    pos: usize,
) -> Option<(usize, usize)> {
    match (&rule.trailing, caches.trailing[i].as_mut()) {
        (None, _) => {
            let end = longest(&rule.token, &mut caches.token[i], text, pos, text.len())?;
            (end > pos).then_some((end, end))
        }
        (Some((context, both)), Some((context_cache, both_cache))) => {
            let total = longest(both, both_cache, text, pos, text.len())?;
            // The token is the longest prefix of the match that the token pattern covers while the
            // context pattern covers the rest.
            let token_end = (pos + 1..total)
                .rev()
                .filter(|&p| text.is_char_boundary(p))
                .find(|&p| {
                    matches_exactly(&rule.token, &mut caches.token[i], text, pos, p)
                        && matches_exactly(context, context_cache, text, p, total)
                })?;
            Some((total, token_end))
        }
        (Some(_), None) => unreachable!("caches are built from the same rule list"),
    }
}

/// Lexes `text` into tokens (as the lexer normalises them, before lower-casing) and line ends.
pub(crate) fn lex(text: &str) -> Vec<Lexeme> {
    let rules = compiled_rules();
    let mut caches = Caches::new(rules);
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < text.len() {
        let mut best: Option<(usize, usize, usize)> = None; // (total end, token end, rule)
        for (i, rule) in rules.iter().enumerate() {
            if let Some((total, token_end)) = try_rule(rule, &mut caches, i, text, pos) {
                if best.is_none_or(|(b, _, _)| total > b) {
                    best = Some((total, token_end, i));
                }
            }
        }
        // The last rule matches any single character, so some rule always matches.
        let (_, token_end, i) = best.expect("the catch-all rule matches any character");
        let matched = &text[pos..token_end];
        pos = token_end;
        match rules[i].action {
            Action::Skip | Action::Drop => {}
            Action::Newline => out.push(Lexeme::Newline),
            Action::PushBack(n) => {
                let keep = char_prefix_len(matched, n);
                out.push(Lexeme::Token(matched[..keep].to_string()));
                pos -= matched.len() - keep;
            }
            Action::PeriodTwice => {
                out.push(Lexeme::Token(matched.to_string()));
                pos -= 1; // the final '.' is lexed again
            }
            Action::AcronymBeforeSentence => {
                if matched.chars().count() == 2 {
                    out.push(Lexeme::Token(matched[..matched.len() - 1].to_string()));
                } else {
                    out.push(Lexeme::Token(matched.to_string()));
                }
                pos -= 1; // the final '.' is lexed again either way
            }
            action => out.push(Lexeme::Token(normalise(action, matched))),
        }
    }
    out
}

/// Byte length of `s` without its last `n` characters.
fn char_prefix_len(s: &str, n: usize) -> usize {
    s.char_indices().rev().nth(n - 1).map_or(0, |(i, _)| i)
}

/// The token text an action makes of the matched text.
fn normalise(action: Action, s: &str) -> String {
    match action {
        Action::Replace(r) => r.to_string(),
        Action::SoftHyphens => {
            let t: String = s.chars().filter(|&c| c != '\u{AD}').collect();
            if t.is_empty() {
                "-".to_string()
            } else {
                t
            }
        }
        Action::Quote(left) => latex_quotes(s, left),
        Action::Ellipsis => "...".to_string(),
        Action::Fraction => s
            .replace('\u{BC}', "1/4")
            .replace('\u{BD}', "1/2")
            .replace('\u{BE}', "3/4")
            .replace('\u{2153}', "1/3")
            .replace('\u{2154}', "2/3"),
        Action::Currency => s
            .replace('\u{A2}', "cents")
            .replace('\u{A3}', "#")
            .replace(['\u{80}', '\u{A4}', '\u{20A0}', '\u{20AC}'], "$"),
        Action::Amp => replace_ignore_ascii_case(s, "&amp;", "&"),
        Action::NoBreakSpace => s.replace(' ', "\u{A0}"),
        Action::NoBreakSpaceParens => s
            .replace(' ', "\u{A0}")
            .replace('(', "-LRB-")
            .replace(')', "-RRB-"),
        Action::Parens => s.replace('(', "-LRB-").replace(')', "-RRB-"),
        Action::Hyphens => {
            if (3..=4).contains(&s.len()) {
                "--".to_string()
            } else {
                s.to_string()
            }
        }
        Action::Keep
        | Action::PushBack(_)
        | Action::PeriodTwice
        | Action::AcronymBeforeSentence
        | Action::Skip
        | Action::Newline
        | Action::Drop => s.to_string(),
    }
}

/// Maps ASCII and typographic quotes to the LaTeX quotes `` ` `` `` `` `` `'` `''`.
fn latex_quotes(s: &str, probably_left: bool) -> String {
    let (single, double) = if probably_left {
        ("`", "``")
    } else {
        ("'", "''")
    };
    // The entity names are matched case-sensitively here, unlike `&amp;`.
    let s = s.replace("&apos;", single).replace("&quot;", double);
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\'' => out.push_str(single),
            '"' => out.push_str(double),
            '\u{91}' | '\u{2018}' | '\u{201B}' | '\u{2039}' => out.push('`'),
            '\u{92}' | '\u{2019}' | '\u{203A}' => out.push('\''),
            '\u{93}' | '\u{201C}' | '\u{AB}' => out.push_str("``"),
            '\u{94}' | '\u{201D}' | '\u{BB}' => out.push_str("''"),
            c => out.push(c),
        }
    }
    out
}

fn replace_ignore_ascii_case(s: &str, from: &str, to: &str) -> String {
    let lower = s.to_ascii_lowercase();
    let mut out = String::with_capacity(s.len());
    let mut last = 0;
    for (i, _) in lower.match_indices(from) {
        out.push_str(&s[last..i]);
        out.push_str(to);
        last = i + from.len();
    }
    out.push_str(&s[last..]);
    out
}
