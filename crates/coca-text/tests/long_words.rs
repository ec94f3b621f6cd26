//! The merge loop is O(n log n) in the length of a word and gives exactly the tokens of the literal
//! lowest-rank-first loop; stopping once the context is full gives the same row as encoding everything.

use std::time::{Duration, Instant};

use coca_text::{Tokenizer, DEFAULT_CONTEXT_LENGTH, EOT_TOKEN, PAD_TOKEN, SOT_TOKEN};

/// A small deterministic generator (no dependency needed for test data).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }

    fn text(&mut self, alphabet: &[char], len: usize) -> String {
        (0..len)
            .map(|_| alphabet[self.below(alphabet.len() as u64) as usize])
            .collect()
    }
}

fn letters() -> Vec<char> {
    ('a'..='z').collect()
}

/// `instant-clip-tokenizer`'s own (quadratic) merge loop, the reference for the tokens.
fn reference(clip: &instant_clip_tokenizer::Tokenizer, text: &str) -> Vec<u32> {
    let mut tokens = Vec::new();
    clip.encode(text, &mut tokens);
    tokens.into_iter().map(|t| u32::from(t.to_u16())).collect()
}

#[test]
fn random_words_match_the_literal_merge_loop() {
    let tok = Tokenizer::new().unwrap();
    let clip = instant_clip_tokenizer::Tokenizer::new();
    let mut rng = Lcg(7);
    let alphabets: [Vec<char>; 4] = [
        letters(),
        "aeiouns".chars().collect(),
        "éèàüößçñ漢字かなабв".chars().collect(),
        "ab!?.,'0123 ".chars().collect(),
    ];
    for alphabet in &alphabets {
        for len in [1, 2, 3, 5, 8, 13, 40, 200, 2000] {
            for _ in 0..4 {
                let text = rng.text(alphabet, len);
                // Already clean and lower-case, so cleaning leaves it as the reference sees it.
                let cleaned = coca_text::clean_text(&text);
                assert_eq!(
                    tok.encode(&cleaned),
                    reference(&clip, &cleaned),
                    "{cleaned:?}"
                );
            }
        }
    }
}

#[test]
fn one_mebibyte_word_is_fast() {
    let tok = Tokenizer::new().unwrap();
    let word = Lcg(13).text(&letters(), 1 << 20);
    let started = Instant::now();
    let ids = tok.encode(&word);
    let took = started.elapsed();
    // The literal loop needs minutes for this word (n^1.7: 10 s at 100k letters in release); O(n log n)
    // needs well under a second of CPU in release, a few at most at the test profile's opt-level 1 on a
    // busy machine.
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert!(ids.len() > (1 << 20) / 8, "{} ids", ids.len());
    let row = tok.tokenize(&word, DEFAULT_CONTEXT_LENGTH);
    assert!(row.truncated);
    assert_eq!(&row.ids[..75], &[&[SOT_TOKEN][..], &ids[..74]].concat()[..]);
    assert_eq!(row.ids[75], EOT_TOKEN);
}

#[test]
fn stopping_at_a_full_context_gives_the_whole_text_row() {
    let tok = Tokenizer::new().unwrap();
    let mut rng = Lcg(3);
    let alphabet: Vec<char> = "abcdefgh ijk lmn!? 0123 éü<>_".chars().collect();
    for len in [0, 10, 100, 300, 1000] {
        let text = rng.text(&alphabet, len);
        let all = tok.encode(&text);
        for context in [0, 1, 2, 3, 10, 76, 77, 200] {
            let row = tok.tokenize(&text, context);
            let mut want: Vec<u32> = [&[SOT_TOKEN][..], &all, &[EOT_TOKEN]].concat();
            let truncated = want.len() > context;
            want.truncate(context);
            if truncated {
                if let Some(last) = want.last_mut() {
                    *last = EOT_TOKEN;
                }
            }
            let n_tokens = want.len();
            want.resize(context, PAD_TOKEN);
            assert_eq!(row.ids, want, "{text:?} at {context}");
            assert_eq!(
                (row.truncated, row.n_tokens),
                (truncated, n_tokens),
                "{text:?} at {context}"
            );
        }
    }
}
