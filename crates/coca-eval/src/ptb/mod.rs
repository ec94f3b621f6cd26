//! pycocoevalcap's caption tokenisation, reimplemented: Stanford PTBTokenizer then punctuation removal.
//!
//! pycocoevalcap 1.2 (`tokenizer/ptbtokenizer.py`) tokenises captions by
//! 1. replacing `\n` inside each caption with a space and joining all captions of one set (all references,
//!    or all candidates) with `\n`, in image order;
//! 2. running `java -cp stanford-corenlp-3.4.1.jar edu.stanford.nlp.process.PTBTokenizer -preserveLines
//!    -lowerCase` on that text, which writes the tokens of each input line space-separated on one output
//!    line, lower-cased with English rules;
//! 3. splitting each output line on single spaces (after stripping trailing whitespace) and dropping the
//!    tokens ``''  '  ``  `  -LRB-  -RRB-  -LCB-  -RCB-  .  ?  !  ,  :  -  --  ...  ;`` — note that the
//!    bracket names are upper-case in that list while the tokenizer already lower-cased them, so
//!    `-lrb-`, `-rrb-`, `-lcb-`, `-rcb-`, `-lsb-`, `-rsb-` **stay** in the tokenised caption;
//! 4. joining the remaining tokens with single spaces.
//!
//! This module does the same in Rust. Step 2 is a longest-match lexer over a restatement of the
//! tokenizer's rule table (`rules`), so besides ordinary words it reproduces, for example:
//! * contractions and possessives split off: `isn't` → `is n't`, `can't` → `ca n't`, `it's` → `it 's`,
//!   `dogs'` → `dogs '`, `they'd've` → `they 'd 've`; `cannot` → `can not`; `gonna`/`gotta`/`wanna`/
//!   `lemme`/`gimme` → `gon na` …; `'tis` → `'t is`; kept whole: `o'clock`, `y'all` → `y' all`, `rock 'n' roll`;
//! * punctuation as separate tokens, `...`/`…`/`. . .` → `...`, 3–4 hyphens and en/em dashes → `--`,
//!   `"` → ` `` ` or `''` by position, brackets → `-lrb-` …;
//! * numbers, decimals, times, fractions and thousands kept whole (`3.5`, `10:30`, `2,000`, `1/2`),
//!   hyphenated words kept whole (`black-and-white`, `3.5-inch`), abbreviations and acronyms keeping
//!   their period (`mr.`, `u.s.`, `a.m.`), and a sentence-final abbreviation followed by its period as
//!   an extra token (`etc.` at the end of a caption gives `etc. .`, which after punctuation removal is
//!   `etc.`); `£`/`€` → `#`/`$`, `½` → `1/2`; e-mail addresses and URLs kept whole.
//!
//! Because the tokenizer sees all captions of a set as one text, a few rules look across caption
//! boundaries (an abbreviation such as `etc.` ending one caption is followed by an extra `.` token only
//! if the next caption starts with an upper-case letter or the text ends). [`tokenize_captions`]
//! reproduces this by lexing the set as one text, exactly as pycocoevalcap does; [`tokenize_ptb`]
//! tokenises one caption on its own.
//!
//! Known differences from the Java tokenizer (none occurs in ordinary English captions):
//! * Character classes follow the Unicode tables of Rust's `regex` crate, not those of the Java 7/8
//!   runtime the tokenizer was built for; letters added to Unicode since then count as letters here.
//! * Java processes UTF-16 code units: characters outside the Basic Multilingual Plane (emoji,
//!   mathematical alphanumerics) are never letters there and are dropped as untokenizable; here they are
//!   dropped too unless Unicode classes them as letters or digits.
//! * Where a rule has variable-length trailing context, the split between token and context is taken
//!   as the longest token; the original lexer generator's choice may differ in contrived inputs.
//! * Lower-casing uses Rust's Unicode lower-casing, which equals Java's `toLowerCase(Locale.ENGLISH)`
//!   except for a few special cases (e.g. `İ`).
//! * Line breaks other than `\n` inside a caption (`\r`, U+2028, U+0085, …) are line ends for the Java
//!   tokenizer but not replaced by pycocoevalcap, which shifts every later caption by a line. The
//!   batch function reproduces that shift; avoid such characters in captions.

mod lexer;
mod rules;

use lexer::Lexeme;

/// The tokens pycocoevalcap removes after tokenisation (compared case-sensitively, after lower-casing).
pub const PYCOCOEVALCAP_PUNCTUATION: [&str; 17] = [
    "''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--",
    "...", ";",
];

/// Tokenises one caption as pycocoevalcap would if it were the only caption of its set.
///
/// Returns the tokens after lower-casing and punctuation removal. An empty or all-punctuation
/// caption gives no tokens (pycocoevalcap represents it as the empty string).
pub fn tokenize_ptb(caption: &str) -> Vec<String> {
    let joined = tokenize_captions(&[caption]).pop().unwrap_or_default();
    joined
        .split(' ')
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect()
}

/// Tokenises a set of captions exactly as pycocoevalcap's `PTBTokenizer.tokenize` does, returning
/// each caption as its space-joined tokenised string (the form every scorer consumes).
///
/// The captions are lexed as one text, one caption a line, so that rules which look across caption
/// boundaries behave as in pycocoevalcap; pass them in the order pycocoevalcap would (images in order,
/// each image's captions in order).
pub fn tokenize_captions<S: AsRef<str>>(captions: &[S]) -> Vec<String> {
    let text = captions
        .iter()
        .map(|c| c.as_ref().replace('\n', " "))
        .collect::<Vec<_>>()
        .join("\n");
    let mut lines: Vec<Vec<String>> = vec![Vec::new()];
    for lexeme in lexer::lex(&text) {
        match lexeme {
            Lexeme::Newline => lines.push(Vec::new()),
            Lexeme::Token(t) => {
                if let Some(line) = lines.last_mut() {
                    line.push(t.to_lowercase());
                }
            }
        }
    }
    // Like the Python zip: as many captions as both sides have (they differ only when a caption
    // holds a line break other than `\n`); a missing line stands for an empty caption.
    let mut out: Vec<String> = lines
        .into_iter()
        .take(captions.len())
        .map(|tokens| {
            let line = tokens.join(" ");
            line.trim_end()
                .split(' ')
                .filter(|t| !PYCOCOEVALCAP_PUNCTUATION.contains(t))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    out.resize(captions.len(), String::new());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tok(s: &str) -> String {
        tokenize_captions(&[s]).pop().unwrap()
    }

    #[test]
    fn contractions_and_possessives_split() {
        assert_eq!(tok("A man's bike isn't red."), "a man 's bike is n't red");
        assert_eq!(tok("They can't, won't; I'd"), "they ca n't wo n't i 'd");
        assert_eq!(tok("cannot gonna"), "can not gon na");
    }

    #[test]
    fn brackets_stay_as_lower_case_names() {
        assert_eq!(tok("a (small) dog"), "a -lrb- small -rrb- dog");
    }

    #[test]
    fn numbers_and_hyphenated_words_stay_whole() {
        assert_eq!(
            tok("A 3.5-inch photo of 2,000 people at 10:30 a.m."),
            "a 3.5-inch photo of 2,000 people at 10:30 a.m."
        );
    }

    #[test]
    fn empty_caption_is_empty_string() {
        assert_eq!(tokenize_captions(&["", "a dog", ""]), ["", "a dog", ""]);
        assert!(tokenize_ptb("...").is_empty());
    }
}
