//! Recognise a checkpoint's container format from its first bytes.
//!
//! File extensions lie (`.bin` is used for everything, downloads get renamed), so the
//! format is decided by content alone. When the content is not a checkpoint, the
//! caller gets a description of what it looks like instead, because "not a checkpoint"
//! alone does not tell a user that they saved an HTML error page or a Git LFS pointer.

use std::fmt;

/// How many leading bytes [`sniff`] needs to decide.
pub(crate) const SNIFF_LEN: usize = 64;

/// The container formats this crate reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// A `torch.save` zip archive (PyTorch >= 1.6), e.g. `open_clip_pytorch_model.bin`.
    TorchZip,
    /// A safetensors file, e.g. `open_clip_model.safetensors`.
    Safetensors,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::TorchZip => "PyTorch zip",
            Self::Safetensors => "safetensors",
        })
    }
}

/// The verdict on a file's first bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Sniffed {
    /// A format we can read.
    Known(Format),
    /// The pre-1.6 `torch.save` format (a bare pickle stream starting with torch's magic number).
    LegacyTorch,
    /// Something else; the string completes "but it ...".
    Other(String),
}

/// The little-endian bytes of the magic number that legacy `torch.save` pickles first.
const LEGACY_TORCH_MAGIC: [u8; 10] = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];

/// Safetensors caps its JSON header far below this; a larger "length" means the
/// first 8 bytes are something else (text, typically).
const MAX_PLAUSIBLE_SAFETENSORS_HEADER: u64 = 1 << 32;

/// Classify a non-empty file from its first [`SNIFF_LEN`] (or fewer) bytes.
pub(crate) fn sniff(head: &[u8]) -> Sniffed {
    // "PK\x03\x04" starts a local file header; "PK\x05\x06" is an empty archive.
    // Both are zips: the archive reader then says precisely what is missing.
    if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
        return Sniffed::Known(Format::TorchZip);
    }
    if looks_like_safetensors(head) {
        return Sniffed::Known(Format::Safetensors);
    }
    if let Some(protocol) = pickle_protocol(head) {
        if head
            .windows(LEGACY_TORCH_MAGIC.len())
            .any(|w| w == LEGACY_TORCH_MAGIC)
        {
            return Sniffed::LegacyTorch;
        }
        return Sniffed::Other(format!(
            "looks like a bare Python pickle stream (protocol {protocol}), not a torch.save zip archive"
        ));
    }
    Sniffed::Other(describe_other(head))
}

/// An 8-byte little-endian header length followed by the opening brace of the JSON header.
fn looks_like_safetensors(head: &[u8]) -> bool {
    let Some(len_bytes) = head.get(..8) else {
        return false;
    };
    let mut le = [0u8; 8];
    le.copy_from_slice(len_bytes);
    let header_len = u64::from_le_bytes(le);
    head.get(8) == Some(&b'{') && header_len < MAX_PLAUSIBLE_SAFETENSORS_HEADER
}

/// The protocol number if `head` starts with a pickle PROTO opcode.
fn pickle_protocol(head: &[u8]) -> Option<u8> {
    match head {
        [0x80, protocol @ 2..=5, ..] => Some(*protocol),
        _ => None,
    }
}

/// Describe content that is not a checkpoint; the result completes "but it ...".
fn describe_other(head: &[u8]) -> String {
    const SIGNATURES: &[(&[u8], &str)] = &[
        (b"\x93NUMPY", "looks like a NumPy .npy array"),
        (
            b"\x1f\x8b",
            "looks like gzip-compressed data; decompress it first",
        ),
        (b"GGUF", "looks like a GGUF (llama.cpp) file"),
        (
            b"\x89HDF\r\n\x1a\n",
            "looks like an HDF5 file (Keras/TensorFlow weights?)",
        ),
        (b"\x89PNG", "looks like a PNG image"),
        (b"\xff\xd8\xff", "looks like a JPEG image"),
        (b"\x7fELF", "looks like an executable (ELF)"),
    ];
    if let Some((_, what)) = SIGNATURES.iter().find(|(sig, _)| head.starts_with(sig)) {
        return (*what).to_string();
    }
    match as_text(head) {
        Some(text) => describe_text(text),
        None => format!(
            "starts with the bytes {}, which match no known format",
            hex_preview(head)
        ),
    }
}

/// `head` as text, if it is valid UTF-8 (allowing a character cut off at the end)
/// made of printable characters and whitespace.
fn as_text(head: &[u8]) -> Option<&str> {
    let text = match std::str::from_utf8(head) {
        Ok(text) => text,
        // A multi-byte character cut by the sniff window is still text.
        Err(e) if e.error_len().is_none() => std::str::from_utf8(&head[..e.valid_up_to()]).ok()?,
        Err(_) => return None,
    };
    let printable = text
        .chars()
        .all(|c| !c.is_control() || c.is_ascii_whitespace());
    (printable && !text.trim().is_empty()).then_some(text)
}

fn describe_text(text: &str) -> String {
    let trimmed = text.trim_start();
    let lower = trimmed.to_ascii_lowercase();
    let quoted = quote_preview(trimmed);
    if lower.starts_with("version https://git-lfs") {
        "is a Git LFS pointer file, not the weights themselves (fetch the real file, e.g. with `git lfs pull`)".to_string()
    } else if lower.starts_with("<!doctype html") || lower.starts_with("<html") {
        format!("looks like an HTML page (an error or login page saved instead of the download?): {quoted}")
    } else if lower.starts_with("<?xml") || lower.starts_with('<') {
        format!("looks like XML/HTML text: {quoted}")
    } else if trimmed.starts_with('{') || trimmed.starts_with('[') {
        format!("looks like JSON text (a config file?): {quoted}")
    } else {
        format!("looks like plain text: {quoted}")
    }
}

/// The first line-ish of `text`, escaped and shortened, in quotes.
fn quote_preview(text: &str) -> String {
    const MAX_CHARS: usize = 40;
    let mut preview: String = text.chars().take(MAX_CHARS).collect();
    if text.chars().count() > MAX_CHARS {
        preview.push('…');
    }
    format!("{preview:?}")
}

fn hex_preview(head: &[u8]) -> String {
    const MAX_BYTES: usize = 8;
    let shown: Vec<String> = head
        .iter()
        .take(MAX_BYTES)
        .map(|b| format!("{b:02x}"))
        .collect();
    shown.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn other(head: &[u8]) -> String {
        match sniff(head) {
            Sniffed::Other(s) => s,
            v => panic!("expected Other, got {v:?}"),
        }
    }

    #[test]
    fn recognises_containers() {
        assert_eq!(sniff(b"PK\x03\x04rest"), Sniffed::Known(Format::TorchZip));
        assert_eq!(sniff(b"PK\x05\x06\0\0"), Sniffed::Known(Format::TorchZip));
        let mut st = 2u64.to_le_bytes().to_vec();
        st.extend_from_slice(b"{}");
        assert_eq!(sniff(&st), Sniffed::Known(Format::Safetensors));
    }

    #[test]
    fn recognises_legacy_torch_and_bare_pickles() {
        let mut legacy = vec![0x80, 0x02, 0x8a, 0x0a];
        legacy.extend_from_slice(&LEGACY_TORCH_MAGIC);
        legacy.push(b'.');
        assert_eq!(sniff(&legacy), Sniffed::LegacyTorch);
        assert!(other(b"\x80\x04\x95\x10\0\0").contains("pickle stream (protocol 4)"));
    }

    #[test]
    fn describes_text_content() {
        assert!(other(b"{\"model_cfg\": {\"embed_dim\": 512}}").contains("JSON"));
        assert!(other(b"<!DOCTYPE html><html><body>404").contains("HTML page"));
        assert!(other(b"version https://git-lfs.github.com/spec/v1\noid").contains("Git LFS"));
        let plain = other(b"hello world\n");
        assert!(
            plain.contains("plain text") && plain.contains("hello world"),
            "{plain}"
        );
    }

    #[test]
    fn text_that_looks_like_a_huge_safetensors_header_is_still_text() {
        // Bytes 0..8 are ASCII, so the "header length" is absurd even though byte 8 is '{'.
        assert!(other(b"abcdefgh{\"x\": 1}").contains("plain text"));
    }

    #[test]
    fn describes_binary_content() {
        assert!(other(b"\x1f\x8b\x08\0").contains("gzip"));
        assert!(other(b"\x93NUMPY\x01\0").contains("NumPy"));
        let unknown = other(&[0x01, 0x02, 0xfe, 0xff, 0x00]);
        assert!(unknown.contains("01 02 fe ff 00"), "{unknown}");
    }

    #[test]
    fn text_cut_inside_a_multibyte_character_is_text() {
        let bytes = "un café".as_bytes();
        let cut = &bytes[..bytes.len() - 1];
        assert!(std::str::from_utf8(cut).is_err());
        assert!(other(cut).contains("plain text"));
    }
}
