//! Byte-level BPE in O(n log n) per word.
//!
//! CLIP's BPE (open_clip's `SimpleTokenizer.bpe`) repeatedly takes the
//! adjacent pair of lowest merge rank and merges all of its non-overlapping
//! occurrences from left to right. Done literally that is quadratic in the
//! word length, and a long word without spaces is something any client can
//! send. Here the word is a linked list of symbols and the candidate merges sit
//! in a min-heap ordered by (rank, position); entries made stale by earlier
//! merges are skipped when popped ("lazy invalidation").
//!
//! # Why the order is the same
//!
//! In this vocabulary every merge's result has a higher rank than both of its
//! parts (checked by [`Bpe::from_clip`], which fails otherwise), so a merge
//! only creates pairs of a higher rank than its own. The literal algorithm
//! therefore applies merges in increasing rank, each rank once, occurrences
//! left to right, and a pair of a rank already processed can never reappear.
//! Popping (rank, position) in order does exactly the same merges.
//!
//! # Where the merge table comes from
//!
//! `instant-clip-tokenizer` keeps its merge rules private, but its decoder
//! gives every token's bytes, and the rules follow from those: each merge
//! result, tokenized on its own with only the lower-ranked merges, splits into
//! exactly the pair that was merged (true for all 48,894 merges of CLIP's
//! vocabulary). [`Bpe::from_clip`] rebuilds the table that way, one rank at a
//! time, and refuses the vocabulary if any token does not split into two.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use instant_clip_tokenizer::{Token, Tokenizer as ClipBpe};

/// Number of single-byte tokens: 256 inside a word and 256 ending a word.
const BYTE_TOKENS: u16 = 512;
/// Offset from a byte's token to the same byte ending a word (`</w>`).
const END_OF_WORD: u16 = 256;
/// Marks the absence of a neighbour in the symbol list.
const NONE: u32 = u32::MAX;
/// Words longer than this (in bytes) are merged rank by rank ([`RankBuckets`])
/// instead of through one heap: past a few thousand entries the heap stops
/// fitting in cache, while the buckets cost a table of all ranks per word.
const LONG_WORD: usize = 4096;

/// The merge table and the byte alphabet of a CLIP vocabulary.
pub(crate) struct Bpe {
    /// Token of each byte inside a word; `+ END_OF_WORD` for the last byte.
    byte_token: [u16; 256],
    /// `(left, right)` packed as `left << 16 | right` → merged token. Merged
    /// tokens are numbered in rank order, so the id is the rank.
    merges: HashMap<u32, u16>,
    /// The highest merged token.
    last_merge: u16,
}

/// One symbol of the word being merged, in a doubly linked list.
#[derive(Clone, Copy)]
struct Symbol {
    token: u16,
    prev: u32,
    next: u32,
}

fn pair(left: u16, right: u16) -> u32 {
    (u32::from(left) << 16) | u32::from(right)
}

/// GPT-2's `bytes_to_unicode` order, which numbers CLIP's byte tokens: the
/// printable Latin-1 bytes first, then the rest in increasing order.
fn byte_order() -> impl Iterator<Item = u8> {
    let printable = (b'!'..=b'~').chain(0xA1..=0xAC).chain(0xAE..=0xFF);
    let is_printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    printable.chain((0..=255u8).filter(move |&b| !is_printable(b)))
}

impl Bpe {
    /// Rebuilds the merge table of `clip` (see the module documentation).
    /// `last_merge` is the id of the highest merged token (the one before
    /// `<start_of_text>`).
    ///
    /// # Errors
    ///
    /// A message saying which token could not be explained as one merge.
    pub(crate) fn from_clip(clip: &ClipBpe, last_merge: u16) -> Result<Self, String> {
        let mut byte_token = [0u16; 256];
        for (id, byte) in byte_order().enumerate() {
            byte_token[usize::from(byte)] = id as u16;
        }
        let mut bpe = Self {
            byte_token,
            merges: HashMap::with_capacity(usize::from(last_merge - BYTE_TOKENS) + 1),
            last_merge,
        };
        let mut parts = Vec::new();
        for id in BYTE_TOKENS..=last_merge {
            let (bytes, end_of_word) = bpe
                .token_bytes(clip, id)
                .ok_or_else(|| format!("the bytes of token {id} cannot be recovered"))?;
            parts.clear();
            bpe.merge_word(&bytes, end_of_word, &mut parts);
            match parts[..] {
                [left, right] if left < id && right < id => {
                    bpe.merges.insert(pair(left, right), id);
                }
                _ => {
                    return Err(format!(
                        "token {id} ({:?}) is not one merge of two lower tokens",
                        String::from_utf8_lossy(&bytes)
                    ))
                }
            }
        }
        Ok(bpe)
    }

    /// The raw bytes of token `id` and whether it ends a word. The crate's
    /// decoder replaces bytes that are not UTF-8 on their own (pieces of a
    /// multi-byte character) by U+FFFD, so such tokens are decoded between
    /// byte tokens that complete the characters, which are then cut off
    /// again. The context leaving the fewest U+FFFD wins: one token of the
    /// vocabulary is U+FFFD itself, which no context removes. A wrong guess
    /// cannot go unnoticed: [`Bpe::from_clip`] then finds no split into two
    /// lower tokens.
    fn token_bytes(&self, clip: &ClipBpe, id: u16) -> Option<(Vec<u8>, bool)> {
        const PREFIXES: [&[u8]; 4] = [&[], &[0xC2], &[0xE1], &[0xF1]];
        const SUFFIXES: [&[u8]; 10] = [
            &[],
            &[0x80],
            &[0x80, 0x80],
            &[0x80, 0x80, 0x80],
            &[0x90],
            &[0x90, 0x80],
            &[0x90, 0x80, 0x80],
            &[0xA0],
            &[0xA0, 0x80],
            &[0xA0, 0x80, 0x80],
        ];
        Token::from_u16(id, clip)?;
        let mut best: Option<(usize, Vec<u8>, bool)> = None;
        for prefix in PREFIXES {
            for suffix in SUFFIXES {
                let tokens = prefix
                    .iter()
                    .map(|&b| self.byte_token[usize::from(b)])
                    .chain(std::iter::once(id))
                    .chain(suffix.iter().map(|&b| self.byte_token[usize::from(b)]))
                    .filter_map(|t| Token::from_u16(t, clip));
                let text = clip.decode(tokens);
                let replaced = text.matches('\u{FFFD}').count();
                if best
                    .as_ref()
                    .is_some_and(|(fewest, _, _)| *fewest <= replaced)
                {
                    continue;
                }
                let Some(body) = text
                    .as_bytes()
                    .strip_prefix(prefix)
                    .and_then(|b| b.strip_suffix(suffix))
                else {
                    continue;
                };
                // The decoder writes the end-of-word marker as a space, and
                // words never contain spaces (the pre-tokenizer splits there).
                let (bytes, end_of_word) = match body.strip_suffix(b" ") {
                    Some(word) => (word.to_vec(), true),
                    None => (body.to_vec(), false),
                };
                if replaced == 0 {
                    return Some((bytes, end_of_word));
                }
                best = Some((replaced, bytes, end_of_word));
            }
        }
        best.map(|(_, bytes, end_of_word)| (bytes, end_of_word))
    }

    /// Appends the BPE tokens of one pre-tokenized word (its bytes; the last
    /// one ends the word when `end_of_word`) to `out`.
    pub(crate) fn merge_word(&self, bytes: &[u8], end_of_word: bool, out: &mut Vec<u16>) {
        let n = bytes.len();
        if n == 0 {
            return;
        }
        let mut symbols: Vec<Symbol> = bytes
            .iter()
            .enumerate()
            .map(|(i, &b)| Symbol {
                token: self.byte_token[usize::from(b)],
                prev: if i == 0 { NONE } else { i as u32 - 1 },
                next: if i + 1 == n { NONE } else { i as u32 + 1 },
            })
            .collect();
        if end_of_word {
            symbols[n - 1].token += END_OF_WORD;
        }
        let pairs = symbols.windows(2).enumerate().filter_map(|(i, w)| {
            let merged = self.merges.get(&pair(w[0].token, w[1].token))?;
            Some((*merged, i as u32))
        });
        if n <= LONG_WORD {
            let mut heap: BinaryHeap<Reverse<(u16, u32)>> = pairs.map(Reverse).collect();
            while let Some(Reverse((merged, at))) = heap.pop() {
                self.merge_at(&mut symbols, merged, at, |m, p| heap.push(Reverse((m, p))));
            }
        } else {
            let mut buckets = RankBuckets::new(self.last_merge);
            for (merged, at) in pairs {
                buckets.push(merged, at);
            }
            let mut positions = Vec::new();
            while let Some(merged) = buckets.next_rank(&mut positions) {
                for &at in &positions {
                    self.merge_at(&mut symbols, merged, at, |m, p| buckets.push(m, p));
                }
            }
        }
        let mut i = 0u32;
        while i != NONE {
            out.push(symbols[i as usize].token);
            i = symbols[i as usize].next;
        }
    }

    /// Merges the symbol at `at` with its right neighbour into `merged`,
    /// unless the entry is stale: the symbol was absorbed into its left
    /// neighbour, or its pair has changed since the entry was made. The pairs
    /// the merge creates with its neighbours go to `candidate`.
    fn merge_at(
        &self,
        symbols: &mut [Symbol],
        merged: u16,
        at: u32,
        mut candidate: impl FnMut(u16, u32),
    ) {
        let left = symbols[at as usize];
        if left.next == NONE {
            return;
        }
        let right = symbols[left.next as usize];
        if self.merges.get(&pair(left.token, right.token)) != Some(&merged) {
            return;
        }
        // The right symbol leaves the list; `next = NONE` makes its own
        // entries stale.
        symbols[left.next as usize].next = NONE;
        symbols[at as usize].token = merged;
        symbols[at as usize].next = right.next;
        if right.next != NONE {
            symbols[right.next as usize].prev = at;
        }
        if left.prev != NONE {
            let before = symbols[left.prev as usize].token;
            if let Some(&m) = self.merges.get(&pair(before, merged)) {
                candidate(m, left.prev);
            }
        }
        if right.next != NONE {
            let after = symbols[right.next as usize].token;
            if let Some(&m) = self.merges.get(&pair(merged, after)) {
                candidate(m, at);
            }
        }
    }
}

/// The candidate merges of a long word, one list of positions per rank.
/// A heap of (rank, position) entries works for any length, but for long
/// words its random accesses dominate; here each rank's positions are sorted
/// once, when that rank comes up, and walked in order. A rank's list is
/// complete by then because merges only create pairs of higher rank.
struct RankBuckets {
    positions: Vec<Vec<u32>>,
    /// Ranks with a non-empty list, each once.
    pending: BinaryHeap<Reverse<u16>>,
}

impl RankBuckets {
    fn new(last_merge: u16) -> Self {
        Self {
            positions: vec![Vec::new(); usize::from(last_merge) + 1],
            pending: BinaryHeap::new(),
        }
    }

    fn push(&mut self, merged: u16, at: u32) {
        let list = &mut self.positions[usize::from(merged)];
        if list.is_empty() {
            self.pending.push(Reverse(merged));
        }
        list.push(at);
    }

    /// The lowest pending rank, with its positions in increasing order in `out`.
    fn next_rank(&mut self, out: &mut Vec<u32>) -> Option<u16> {
        let Reverse(merged) = self.pending.pop()?;
        out.clear();
        std::mem::swap(out, &mut self.positions[usize::from(merged)]);
        out.sort_unstable();
        out.dedup();
        Some(merged)
    }
}
