//! Times the tokenizer on long words without spaces and other texts that are slow to clean, to show how the
//! cost grows with the length.
//!
//! `cargo run --release -p coca-text --example tokenize_timing [--reference]`: with `--reference`, the
//! literal merge loop of `instant-clip-tokenizer` is timed beside coca's on the same words (up to 100k
//! letters; it is quadratic) and the tokens are compared. Times are CPU seconds of this thread (from
//! `/proc/thread-self/schedstat`, so that a busy machine does not inflate them), or wall seconds where that
//! file is missing.

use std::time::Instant;

/// A clock that counts this thread's CPU time where Linux exposes it.
#[derive(Clone, Copy)]
enum Clock {
    Cpu(u64),
    Wall(Instant),
}

impl Clock {
    fn now() -> Self {
        std::fs::read_to_string("/proc/thread-self/schedstat")
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse().ok())
            .map_or_else(|| Clock::Wall(Instant::now()), Clock::Cpu)
    }

    fn secs(self) -> f64 {
        match (self, Clock::now()) {
            (Clock::Cpu(a), Clock::Cpu(b)) => (b - a) as f64 * 1e-9,
            (Clock::Wall(a), _) | (_, Clock::Wall(a)) => a.elapsed().as_secs_f64(),
        }
    }
}

use coca_text::{clean_text, Tokenizer, DEFAULT_CONTEXT_LENGTH};

/// `n` pseudo-random lower-case ASCII letters (a fixed linear congruential sequence).
fn letters(n: usize) -> String {
    let mut state: u64 = 0x2545_F491_4F6C_DD1D;
    (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            char::from(b'a' + ((state >> 33) % 26) as u8)
        })
        .collect()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let reference = std::env::args().any(|a| a == "--reference");
    let start = Clock::now();
    let tok = Tokenizer::new()?;
    println!("building the tokenizer: {:.3} s", start.secs());
    let clip = instant_clip_tokenizer::Tokenizer::new();
    for n in [25_000, 50_000, 100_000, 1_000_000] {
        let word = letters(n);
        let start = Clock::now();
        let ids = tok.encode(&word);
        let ours = start.secs();
        let start = Clock::now();
        tok.tokenize(&word, DEFAULT_CONTEXT_LENGTH);
        let row = start.secs();
        print!(
            "{n:>9} letters: encode {ours:.3} s ({} ids), tokenize {row:.3} s",
            ids.len()
        );
        if reference && n <= 100_000 {
            let mut tokens = Vec::new();
            let start = Clock::now();
            clip.encode(&word, &mut tokens);
            let theirs = start.secs();
            let same = tokens.iter().map(|t| u32::from(t.to_u16())).eq(ids);
            print!("; literal loop {theirs:.3} s, same tokens: {same}");
        }
        println!();
    }
    let mb = 1 << 20;
    let cases: [(&str, String); 6] = [
        ("1 MiB of words", "lorem ipsum dolor ".repeat(mb / 18)),
        ("1 MiB of accented letters", "é".repeat(mb / 2)),
        ("1 MiB of mojibake", "Ã©".repeat(mb / 4)),
        ("1 MiB of &amp;", "&amp;".repeat(mb / 5)),
        ("1 MiB of unterminated &", "&".repeat(mb)),
        ("1 MiB of CJK", "漢字".repeat(mb / 6)),
    ];
    for (what, text) in cases {
        let start = Clock::now();
        let cleaned = clean_text(&text);
        let clean = start.secs();
        let start = Clock::now();
        tok.tokenize(&text, DEFAULT_CONTEXT_LENGTH);
        let row = start.secs();
        let start = Clock::now();
        let ids = tok.encode(&text);
        let all = start.secs();
        println!(
            "{what:>28}: clean {clean:.3} s ({} bytes), tokenize {row:.3} s, encode all {all:.3} s ({} ids)",
            cleaned.len(),
            ids.len()
        );
    }
    Ok(())
}
