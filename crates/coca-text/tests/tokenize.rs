//! Behaviour of the public tokenizer API: truncation, padding, decoding.

use coca_text::{Tokenizer, DEFAULT_CONTEXT_LENGTH, EOT_TOKEN, PAD_TOKEN, SOT_TOKEN};

fn tok() -> Tokenizer {
    Tokenizer::new().expect("built-in vocabulary")
}

#[test]
fn short_text_is_wrapped_and_padded() {
    let t = tok().tokenize("a photo of a cat.", DEFAULT_CONTEXT_LENGTH);
    assert_eq!(t.ids.len(), DEFAULT_CONTEXT_LENGTH);
    assert_eq!(
        &t.ids[..8],
        &[SOT_TOKEN, 320, 1125, 539, 320, 2368, 269, EOT_TOKEN]
    );
    assert!(t.ids[8..].iter().all(|&id| id == PAD_TOKEN));
    assert_eq!(t.n_tokens, 8);
    assert!(!t.truncated);
}

#[test]
fn empty_and_blank_text_give_sot_eot() {
    for text in ["", "   ", "\t\n\u{3000}"] {
        let t = tok().tokenize(text, 10);
        assert_eq!(
            t.ids,
            [SOT_TOKEN, EOT_TOKEN, 0, 0, 0, 0, 0, 0, 0, 0],
            "{text:?}"
        );
        assert_eq!(t.n_tokens, 2);
    }
}

#[test]
fn truncation_keeps_sot_and_forces_eot_last() {
    let tokenizer = tok();
    let word = tokenizer.encode("word");
    assert_eq!(word.len(), 1, "'word' is a single token");
    // 74 words + SOT + EOT fill 76 slots exactly: no truncation.
    let fits = tokenizer.tokenize(&"word ".repeat(74), 76);
    assert!(!fits.truncated);
    assert_eq!(fits.n_tokens, 76);
    assert_eq!(fits.ids[75], EOT_TOKEN);
    assert_eq!(fits.ids[74], word[0]);
    // One more word: the 75th word is dropped, EOT overwrites the last slot.
    let cut = tokenizer.tokenize(&"word ".repeat(75), 76);
    assert!(cut.truncated);
    assert_eq!(cut.n_tokens, 76);
    assert_eq!(cut.ids[0], SOT_TOKEN);
    assert_eq!(cut.ids[75], EOT_TOKEN);
    assert_eq!(fits.ids, cut.ids);
}

#[test]
fn small_context_lengths() {
    let tokenizer = tok();
    let t = tokenizer.tokenize("a photo of a cat", 3);
    assert_eq!(t.ids, [SOT_TOKEN, 320, EOT_TOKEN]);
    assert!(t.truncated);
    let t = tokenizer.tokenize("cat", 2);
    assert_eq!(t.ids, [SOT_TOKEN, EOT_TOKEN]);
    assert!(t.truncated);
}

#[test]
fn batch_equals_individual_calls() {
    let tokenizer = tok();
    let long = "A very long caption ".repeat(30);
    let texts = ["a dog", "", long.as_str()];
    let batch = tokenizer.tokenize_batch(&texts, 20);
    assert_eq!(batch.len(), 3);
    for (text, row) in texts.iter().zip(&batch) {
        assert_eq!(row, &tokenizer.tokenize(text, 20));
    }
    let owned: Vec<String> = texts.iter().map(|s| s.to_string()).collect();
    assert_eq!(tokenizer.tokenize_batch(&owned, 20), batch);
}

#[test]
fn literal_special_tokens_become_special_ids() {
    let tokenizer = tok();
    assert_eq!(tokenizer.encode("<start_of_text>"), [SOT_TOKEN]);
    assert_eq!(tokenizer.encode("x <END_OF_TEXT>"), [343, EOT_TOKEN]);
    // Preceded by punctuation the regex swallows the `<` into a symbol run.
    assert!(!tokenizer.encode("!<end_of_text>").contains(&EOT_TOKEN));
}

#[test]
fn raw_decode_shows_specials_and_padding() {
    let tokenizer = tok();
    let t = tokenizer.tokenize("Hello, World!", 12);
    assert_eq!(
        tokenizer.decode(&t.ids),
        "<start_of_text>hello , world ! <end_of_text>!!!!!!"
    );
}

#[test]
fn decode_caption_strips_specials_and_everything_after_eot() {
    let tokenizer = tok();
    let t = tokenizer.tokenize("A photo of a cat", DEFAULT_CONTEXT_LENGTH);
    assert_eq!(tokenizer.decode_caption(&t.ids), "a photo of a cat");
    // Generated sequences may carry junk after EOT.
    let mut generated = t.ids[..t.n_tokens].to_vec();
    generated.extend([2368, 2368, PAD_TOKEN]);
    assert_eq!(tokenizer.decode_caption(&generated), "a photo of a cat");
    // Without EOT, trailing padding is dropped but "!" (id 0) inside is kept.
    let no_eot = [SOT_TOKEN, 2368, PAD_TOKEN, 2368, PAD_TOKEN, PAD_TOKEN];
    assert_eq!(tokenizer.decode_caption(&no_eot), "cat !cat");
    assert_eq!(tokenizer.decode_caption(&[]), "");
}

#[test]
fn decode_is_lossy_on_split_utf8() {
    let tokenizer = tok();
    // U+10348 (Gothic hwair) has no merges beyond single bytes.
    let ids = tokenizer.encode("\u{10348}");
    assert_eq!(ids, [172, 238, 235, 486]);
    assert_eq!(tokenizer.decode(&ids), "\u{10348} ");
    assert_eq!(tokenizer.decode(&ids[..1]), "\u{FFFD}");
}
