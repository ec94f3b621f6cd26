//! The CLIP BPE tokenizer.
//!
//! # Why `instant-clip-tokenizer`
//!
//! The BPE itself, the pre-tokenizer regex and the 48,894-merge vocabulary come
//! from the `instant-clip-tokenizer` crate (MIT). It bundles OpenAI's
//! `bpe_simple_vocab_16e6.txt` (byte-identical to open_clip's, md5
//! f83f3e2479df59e7cd1597baa03f34c8) inside the crate, so nothing is
//! downloaded at run time and no vocabulary file lives in this repository, and
//! its merge loop (lowest-rank pair first, all non-overlapping occurrences
//! left to right) and id layout are the same as open_clip's `SimpleTokenizer`.
//! Using the HF `tokenizers` crate instead would still need the vocabulary
//! from somewhere and a hand-built pipeline around it.
//!
//! The merge loop itself is not that crate's, though: its literal loop is
//! quadratic in the length of a word, so the merges run in [`crate::bpe`]
//! (merges in rank order over a linked list, same tokens) on a merge table rebuilt from the
//! crate's vocabulary. The pre-tokenizer regex is the crate's, copied.
//!
//! What that crate does not do is open_clip's text cleaning, which this crate
//! adds in front of it ([`crate::clean_text`]). One more difference is
//! handled here: open_clip compiles its pre-tokenizer with `re.IGNORECASE`,
//! under which the `regex` module matches U+0345 (combining ypogegrammeni,
//! case-equivalent to the letter ι) by neither `\p{L}` nor `[^\s\p{L}\p{N}]`,
//! so the character is skipped like whitespace; we replace it with a space.
//! The only remaining case-folding effect is `ſ` (long s) matching `s` in
//! `'s` and `<start_of_text>`, which cannot be reproduced through this crate's
//! API; `it'ſ` and `<ſtart_of_text>` are the documented divergences.

use std::sync::OnceLock;

use instant_clip_tokenizer::{Token, Tokenizer as ClipBpe};
use regex::Regex;

use crate::bpe::Bpe;
use crate::clean::{clean_text, trim_python_whitespace};
use crate::{EOT_TOKEN, PAD_TOKEN, SOT_TOKEN, VOCAB_SIZE};

/// Errors from building the tokenizer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenizerError {
    /// The bundled BPE vocabulary does not produce the ids open_clip uses,
    /// e.g. because a different version of the vocabulary crate was linked.
    #[error("bundled CLIP vocabulary is not the one open_clip uses: {check} gave {found}, expected {expected}")]
    VocabularyMismatch {
        /// What was checked.
        check: &'static str,
        /// The value open_clip produces.
        expected: String,
        /// The value the bundled vocabulary produced.
        found: String,
    },
}

/// One text turned into a fixed-length row of token ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tokenized {
    /// `[SOT] + tokens + [EOT]`, cut to the context length (last slot forced
    /// to EOT) and padded with [`PAD_TOKEN`]; always `context_length` long.
    pub ids: Vec<u32>,
    /// Whether tokens had to be dropped to fit the context length.
    pub truncated: bool,
    /// How many leading entries of `ids` are real tokens (SOT..=EOT); the
    /// rest is padding.
    pub n_tokens: usize,
}

/// The CLIP tokenizer of open_clip's CoCa models. Cheap to construct and to
/// clone: the vocabulary is built once per process and shared.
#[derive(Clone, Copy)]
pub struct Tokenizer {
    vocab: &'static Vocab,
}

/// Everything built once per process.
struct Vocab {
    /// The bundled vocabulary; used for its ids and its decoder.
    clip: ClipBpe,
    /// The merge table, applied in O(n log n) per word.
    bpe: Bpe,
    /// CLIP's pre-tokenizer (after lower-casing).
    word_split: Regex,
}

/// The pre-tokenizer of open_clip's `SimpleTokenizer`, as `instant-clip-tokenizer` writes it.
const WORD_SPLIT: &str = r"(?x)
    # Special substrings - these each get encoded as a single marker token
    <start_of_text>|<end_of_text>|
    # Common english contractions
    's|'t|'re|'ve|'m|'ll|'d|
    # Consecutive letters, single numbers, or runs of special chars
    [\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &VOCAB_SIZE)
            .finish()
    }
}

impl Tokenizer {
    /// Returns the tokenizer with the built-in vocabulary. The first call builds
    /// the merge table (about a tenth of a second) and checks it against ids
    /// known from open_clip; later calls reuse it.
    ///
    /// # Errors
    ///
    /// [`TokenizerError::VocabularyMismatch`] if the bundled vocabulary does not
    /// reproduce open_clip's special-token ids or a reference encoding.
    pub fn new() -> Result<Self, TokenizerError> {
        static VOCAB: OnceLock<Result<Vocab, TokenizerError>> = OnceLock::new();
        match VOCAB.get_or_init(build_checked) {
            Ok(vocab) => Ok(Self { vocab }),
            Err(e) => Err(e.clone()),
        }
    }

    /// Cleans `text` ([`clean_text`]) and returns its BPE ids, without SOT/EOT.
    ///
    /// Literal `<start_of_text>` / `<end_of_text>` in the text become the
    /// special ids when they start a pre-token, exactly as in open_clip.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        self.vocab.encode_cleaned(&clean_text(text), usize::MAX)
    }

    /// Tokenizes one text into a row of exactly `context_length` ids, like
    /// calling open_clip's tokenizer on it.
    ///
    /// Longer texts are cut to `context_length` ids and the last one is
    /// replaced by EOT. open_clip rejects a context length of 0; here it gives
    /// an empty row marked as truncated.
    ///
    /// Encoding stops once the row is full: words are encoded independently
    /// of each other, so the words after that cannot change the kept ids, and
    /// `truncated` and `n_tokens` come out as for the whole text.
    pub fn tokenize(&self, text: &str, context_length: usize) -> Tokenized {
        // SOT plus this many ids already overflow the row with EOT added.
        let enough = context_length.saturating_sub(1);
        let encoded = self.vocab.encode_cleaned(&clean_text(text), enough);
        let mut ids = Vec::with_capacity(context_length.max(encoded.len() + 2));
        ids.push(SOT_TOKEN);
        ids.extend_from_slice(&encoded);
        ids.push(EOT_TOKEN);
        let truncated = ids.len() > context_length;
        if truncated {
            ids.truncate(context_length);
            if let Some(last) = ids.last_mut() {
                *last = EOT_TOKEN;
            }
        }
        let n_tokens = ids.len();
        ids.resize(context_length, PAD_TOKEN);
        Tokenized {
            ids,
            truncated,
            n_tokens,
        }
    }

    /// [`Tokenizer::tokenize`] for each text, in order.
    pub fn tokenize_batch(
        &self,
        texts: &[impl AsRef<str>],
        context_length: usize,
    ) -> Vec<Tokenized> {
        texts
            .iter()
            .map(|t| self.tokenize(t.as_ref(), context_length))
            .collect()
    }

    /// Turns ids back into text exactly like open_clip's `decode`: the bytes
    /// of all tokens are joined, decoded as UTF-8 with invalid sequences
    /// replaced by U+FFFD, and every end-of-word marker becomes a space.
    /// Special ids appear as `<start_of_text>` / `<end_of_text>`, and padding
    /// (id 0) as `!`.
    ///
    /// Ids outside the vocabulary (open_clip raises `KeyError`) become U+FFFD.
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut out = String::new();
        for (i, run) in ids.split(|&id| id as usize >= VOCAB_SIZE).enumerate() {
            if i > 0 {
                out.push('\u{FFFD}');
            }
            if !run.is_empty() {
                let clip = &self.vocab.clip;
                let tokens = run.iter().filter_map(|&id| to_token(clip, id));
                out.push_str(&clip.decode(tokens));
            }
        }
        out
    }

    /// Readable text of a generated or tokenized sequence: everything from the
    /// first EOT on is dropped (if there is no EOT, trailing padding is), SOT
    /// ids are removed, and the decoded text is trimmed. This is the
    /// `decode(ids).split("<end_of_text>")[0].replace("<start_of_text>", "").strip()`
    /// recipe from open_clip's README. Id 0 before EOT is kept, because it is
    /// also the `!` token.
    pub fn decode_caption(&self, ids: &[u32]) -> String {
        let body = match ids.iter().position(|&id| id == EOT_TOKEN) {
            Some(eot) => &ids[..eot],
            None => {
                let end = ids
                    .iter()
                    .rposition(|&id| id != PAD_TOKEN)
                    .map_or(0, |i| i + 1);
                &ids[..end]
            }
        };
        let kept: Vec<u32> = body.iter().copied().filter(|&id| id != SOT_TOKEN).collect();
        trim_python_whitespace(&self.decode(&kept)).to_owned()
    }
}

fn to_token(bpe: &ClipBpe, id: u32) -> Option<Token> {
    Token::from_u16(u16::try_from(id).ok()?, bpe)
}

impl Vocab {
    /// BPE of already-cleaned text, word by word, stopping before the first
    /// word that starts once `limit` ids are out (the last word is kept whole).
    fn encode_cleaned(&self, cleaned: &str, limit: usize) -> Vec<u32> {
        // U+0345 is skipped by open_clip's case-insensitive regex (see the module documentation).
        let prepared;
        let cleaned = if cleaned.contains('\u{345}') {
            prepared = cleaned.replace('\u{345}', " ");
            prepared.as_str()
        } else {
            cleaned
        };
        // instant-clip-tokenizer lower-cases again before splitting; clean_text
        // already did, but this keeps the exact steps the parity fixtures checked.
        let text = cleaned.to_lowercase();
        let mut ids = Vec::new();
        let mut word_ids = Vec::new();
        for word in self.word_split.find_iter(&text).map(|m| m.as_str()) {
            if ids.len() >= limit {
                break;
            }
            match word {
                "<start_of_text>" => ids.push(SOT_TOKEN),
                "<end_of_text>" => ids.push(EOT_TOKEN),
                _ => {
                    word_ids.clear();
                    self.bpe.merge_word(word.as_bytes(), true, &mut word_ids);
                    ids.extend(word_ids.iter().map(|&id| u32::from(id)));
                }
            }
        }
        ids
    }
}

/// Builds the tables and checks them against values taken from open_clip.
fn build_checked() -> Result<Vocab, TokenizerError> {
    let clip = ClipBpe::new();
    let mismatch = |check, expected: String, found: String| TokenizerError::VocabularyMismatch {
        check,
        expected,
        found,
    };
    let sot = u32::from(clip.start_of_text().to_u16());
    let eot = u32::from(clip.end_of_text().to_u16());
    if (sot, eot) != (SOT_TOKEN, EOT_TOKEN) {
        return Err(mismatch(
            "special token ids",
            format!("({SOT_TOKEN}, {EOT_TOKEN})"),
            format!("({sot}, {eot})"),
        ));
    }
    let last_merge = clip.start_of_text().to_u16() - 1;
    let bpe = Bpe::from_clip(&clip, last_merge).map_err(|found| {
        mismatch(
            "rebuilding the merge table",
            "every token one merge of two lower tokens".into(),
            found,
        )
    })?;
    let word_split = Regex::new(WORD_SPLIT).expect("static pre-tokenizer pattern compiles");
    let vocab = Vocab {
        clip,
        bpe,
        word_split,
    };
    // Ids of "a photo of a cat." in open_clip; exercises several merges.
    let found = vocab.encode_cleaned("a photo of a cat.", usize::MAX);
    let expected = [320u32, 1125, 539, 320, 2368, 269];
    if found != expected {
        return Err(mismatch(
            "encoding \"a photo of a cat.\"",
            format!("{expected:?}"),
            format!("{found:?}"),
        ));
    }
    Ok(vocab)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn construction_is_cached() {
        let a = Tokenizer::new().unwrap();
        let b = Tokenizer::new().unwrap();
        assert!(std::ptr::eq(a.vocab, b.vocab));
    }

    #[test]
    fn zero_context_length_gives_an_empty_truncated_row() {
        let tok = Tokenizer::new().unwrap();
        let t = tok.tokenize("cat", 0);
        assert!(t.ids.is_empty() && t.truncated && t.n_tokens == 0);
        let t = tok.tokenize("cat", 1);
        assert_eq!(t.ids, [EOT_TOKEN]);
    }

    #[test]
    fn unknown_ids_decode_to_replacement_characters() {
        let tok = Tokenizer::new().unwrap();
        assert_eq!(
            tok.decode(&[2368, 49408, 2368, u32::MAX]),
            "cat \u{FFFD}cat \u{FFFD}"
        );
    }
}
