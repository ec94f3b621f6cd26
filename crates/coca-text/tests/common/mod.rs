//! Loading of the fixtures written by scripts/parity/make_tokenizer_fixtures.py.

#![allow(dead_code)] // each test binary uses a different subset

use std::path::PathBuf;

use serde::Deserialize;

pub fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/tokenizer")
}

pub fn read_json<T: for<'de> Deserialize<'de>>(name: &str) -> T {
    let path = fixture_dir().join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("cannot parse {}: {e}", path.display()))
}

#[derive(Deserialize)]
pub struct Meta {
    pub open_clip: String,
    pub ftfy: String,
    pub context_length: usize,
    pub vocab_size: usize,
    pub n_zero_shot_prompts: usize,
}

#[derive(Deserialize)]
pub struct ZeroShot {
    pub classnames: Vec<String>,
    pub templates: Vec<String>,
}

#[derive(Deserialize)]
pub struct Tricky {
    pub text: String,
    /// open_clip's row up to and including the first EOT.
    pub ids: Vec<u32>,
    /// `len(encode(text)) + 2`, before truncation.
    pub n_tokens: usize,
    pub clean: String,
    pub ftfy: String,
    /// `open_clip.decode` of the full padded row.
    pub decoded: String,
    pub caption: String,
}

#[derive(Deserialize)]
pub struct DecodeCase {
    pub ids: Vec<u32>,
    pub decoded: String,
}

#[derive(Deserialize)]
pub struct FtfyCases {
    pub badness: Vec<(String, bool)>,
    pub fix_text: Vec<(String, String)>,
    /// `(input, html.unescape(input), ftfy.fixes.unescape_html(input))`
    pub html: Vec<(String, String, String)>,
}

/// The zero-shot prompts in the fixture's order (class-major, then template),
/// built with Python's `template.format(classname)` semantics: every template
/// has exactly one `{}`.
pub fn zero_shot_prompts(z: &ZeroShot) -> Vec<String> {
    z.classnames
        .iter()
        .flat_map(|c| z.templates.iter().map(move |t| t.replacen("{}", c, 1)))
        .collect()
}

/// `(ids, offsets)` from zero_shot_ids.safetensors.
pub fn zero_shot_rows() -> Vec<Vec<u32>> {
    let path = fixture_dir().join("zero_shot_ids.safetensors");
    let bytes =
        std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("valid safetensors");
    let ids = st.tensor("ids").expect("ids tensor");
    assert_eq!(ids.dtype(), safetensors::Dtype::U16);
    let ids: Vec<u32> = ids
        .data()
        .chunks_exact(2)
        .map(|b| u32::from(u16::from_le_bytes([b[0], b[1]])))
        .collect();
    let offsets = st.tensor("offsets").expect("offsets tensor");
    assert_eq!(offsets.dtype(), safetensors::Dtype::U32);
    let offsets: Vec<usize> = offsets
        .data()
        .chunks_exact(4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .collect();
    offsets
        .windows(2)
        .map(|w| ids[w[0]..w[1]].to_vec())
        .collect()
}
