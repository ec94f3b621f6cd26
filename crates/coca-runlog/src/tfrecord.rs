//! TFRecord framing, the container of TensorBoard event files:
//! `u64 length (LE) | u32 masked crc32c(length) | data | u32 masked crc32c(data)`.

/// TFRecord's CRC mask: rotate right by 15 and add a constant, so that a CRC stored inside CRC'ed data
/// does not make the outer CRC degenerate.
pub(crate) fn masked_crc(bytes: &[u8]) -> u32 {
    let crc = crc32c::crc32c(bytes);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// Append one framed record holding `data` to `out`.
pub(crate) fn frame(data: &[u8], out: &mut Vec<u8>) {
    let len = (data.len() as u64).to_le_bytes();
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc(data).to_le_bytes());
}

/// One record found by [`unframe`].
#[derive(Debug)]
pub(crate) struct Framed<'a> {
    /// Byte offset of the record's header.
    pub offset: usize,
    /// Byte offset just past the record.
    pub end: usize,
    /// The payload.
    pub data: &'a [u8],
}

/// What stopped [`unframe`] before the end of the input.
#[derive(Debug, PartialEq)]
pub(crate) enum Damage {
    /// The input ends inside the record starting at this offset (a write cut short).
    Truncated(usize),
    /// A checksum does not match at this offset.
    BadCrc(usize, &'static str),
}

/// Split `bytes` into records. Stops at the first damaged record and says why; the records before it are
/// intact (their CRCs were checked).
pub(crate) fn unframe(bytes: &[u8]) -> (Vec<Framed<'_>>, Option<Damage>) {
    let mut records = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        let Some(header) = bytes.get(pos..pos + 12) else {
            return (records, Some(Damage::Truncated(pos)));
        };
        let (len_bytes, len_crc) = header.split_at(8);
        if masked_crc(len_bytes) != u32::from_le_bytes(len_crc.try_into().expect("4 bytes")) {
            return (
                records,
                Some(Damage::BadCrc(pos, "length checksum mismatch")),
            );
        }
        let len = u64::from_le_bytes(len_bytes.try_into().expect("8 bytes"));
        let data_start = pos + 12;
        let Some(end) = usize::try_from(len)
            .ok()
            .and_then(|len| data_start.checked_add(len)?.checked_add(4))
            .filter(|&end| end <= bytes.len())
        else {
            return (records, Some(Damage::Truncated(pos)));
        };
        let data = &bytes[data_start..end - 4];
        let crc = u32::from_le_bytes(bytes[end - 4..end].try_into().expect("4 bytes"));
        if masked_crc(data) != crc {
            return (records, Some(Damage::BadCrc(pos, "data checksum mismatch")));
        }
        records.push(Framed {
            offset: pos,
            end,
            data,
        });
        pos = end;
    }
    (records, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_published_vectors() {
        // RFC 3720 (iSCSI) appendix B.4 and the classic check value.
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
        assert_eq!(crc32c::crc32c(&[0u8; 32]), 0x8a91_36aa);
        assert_eq!(crc32c::crc32c(&[0xffu8; 32]), 0x62a8_ab43);
    }

    #[test]
    fn frame_header_matches_tensorflow() {
        // Every TensorFlow event file starts with these 12 bytes: the header of its 24-byte first record
        // (wall_time + file_version "brain.Event:2"), b"\x18\0\0\0\0\0\0\0\xa3\x7fK\"".
        let mut out = Vec::new();
        frame(&[0u8; 24], &mut out);
        assert_eq!(&out[..12], b"\x18\0\0\0\0\0\0\0\xa3\x7fK\"");
    }

    #[test]
    fn unframe_round_trips_and_detects_damage() {
        let mut out = Vec::new();
        frame(b"hello", &mut out);
        frame(b"", &mut out);
        frame(b"world!", &mut out);
        let (records, damage) = unframe(&out);
        assert_eq!(damage, None);
        let payloads: Vec<&[u8]> = records.iter().map(|r| r.data).collect();
        assert_eq!(payloads, [&b"hello"[..], b"", b"world!"]);

        let cut = &out[..out.len() - 3];
        let (records, damage) = unframe(cut);
        assert_eq!(records.len(), 2);
        assert_eq!(damage, Some(Damage::Truncated(records[1].end)));

        let mut flipped = out.clone();
        flipped[13] ^= 1; // inside "hello"
        let (records, damage) = unframe(&flipped);
        assert!(records.is_empty());
        assert_eq!(damage, Some(Damage::BadCrc(0, "data checksum mismatch")));
    }
}
