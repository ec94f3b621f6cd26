//! The few protobuf fields of TensorBoard's `Event` that scalar logging needs, encoded and decoded by hand
//! (a protobuf code generator would be a heavy dependency for five fields).
//!
//! ```text
//! Event   { double wall_time = 1; int64 step = 2; string file_version = 3; Summary summary = 5; }
//! Summary { repeated Value value = 1; }
//! Value   { string tag = 1; float simple_value = 2; }
//! ```

/// Protobuf wire types.
const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const FIXED32: u8 = 5;

/// A decoded `Event` (only the fields above; others are skipped).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Event {
    /// Seconds since the Unix epoch.
    pub wall_time: f64,
    /// Training step.
    pub step: i64,
    /// `Some("brain.Event:2")` in the first event of a file.
    pub file_version: Option<String>,
    /// `(tag, simple_value)` pairs of the event's summary.
    pub scalars: Vec<(String, f32)>,
}

impl Event {
    /// Protobuf bytes of this event.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        key(1, FIXED64, &mut out);
        out.extend_from_slice(&self.wall_time.to_le_bytes());
        if self.step != 0 {
            key(2, VARINT, &mut out);
            // int64 is the two's complement bit pattern as a varint.
            varint(self.step as u64, &mut out);
        }
        if let Some(version) = &self.file_version {
            bytes_field(3, version.as_bytes(), &mut out);
        }
        if !self.scalars.is_empty() {
            let mut summary = Vec::new();
            for (tag, value) in &self.scalars {
                let mut v = Vec::with_capacity(tag.len() + 8);
                bytes_field(1, tag.as_bytes(), &mut v);
                key(2, FIXED32, &mut v);
                v.extend_from_slice(&value.to_le_bytes());
                bytes_field(1, &v, &mut summary);
            }
            bytes_field(5, &summary, &mut out);
        }
        out
    }

    /// Decode an event, skipping fields other than the ones above.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, String> {
        let mut event = Event::default();
        for field in Fields(bytes) {
            match field? {
                (1, Value::Fixed64(bits)) => event.wall_time = f64::from_bits(bits),
                (2, Value::Varint(v)) => event.step = v as i64,
                (3, Value::Len(s)) => event.file_version = Some(utf8(s, "file_version")?),
                (5, Value::Len(summary)) => {
                    for value in Fields(summary) {
                        if let (1, Value::Len(v)) = value? {
                            if let Some(scalar) = decode_value(v)? {
                                event.scalars.push(scalar);
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(event)
    }
}

/// A `Summary.Value` with a tag and a `simple_value`; `None` for other kinds (images, histograms, ...).
fn decode_value(bytes: &[u8]) -> Result<Option<(String, f32)>, String> {
    let (mut tag, mut value) = (None, None);
    for field in Fields(bytes) {
        match field? {
            (1, Value::Len(s)) => tag = Some(utf8(s, "tag")?),
            (2, Value::Fixed32(bits)) => value = Some(f32::from_bits(bits)),
            _ => {}
        }
    }
    Ok(tag.zip(value))
}

fn utf8(bytes: &[u8], what: &str) -> Result<String, String> {
    String::from_utf8(bytes.to_vec()).map_err(|_| format!("{what} is not UTF-8"))
}

fn key(field: u32, wire: u8, out: &mut Vec<u8>) {
    varint(u64::from(field) << 3 | u64::from(wire), out);
}

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn bytes_field(field: u32, bytes: &[u8], out: &mut Vec<u8>) {
    key(field, LEN, out);
    varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

/// One field's payload.
enum Value<'a> {
    Varint(u64),
    Fixed64(u64),
    Len(&'a [u8]),
    Fixed32(u32),
}

/// Iterator over the `(field number, value)` pairs of a message.
struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn read_varint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = self.0.split_first().ok_or("truncated varint")?;
            self.0 = rest;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err("varint longer than 10 bytes".into())
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if n > self.0.len() {
            return Err("field runs past the end of the message".into());
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn next_field(&mut self) -> Result<(u64, Value<'a>), String> {
        let k = self.read_varint()?;
        let value = match (k & 7) as u8 {
            VARINT => Value::Varint(self.read_varint()?),
            FIXED64 => Value::Fixed64(u64::from_le_bytes(self.take(8)?.try_into().expect("8"))),
            LEN => {
                let n = usize::try_from(self.read_varint()?).map_err(|_| "length too large")?;
                Value::Len(self.take(n)?)
            }
            FIXED32 => Value::Fixed32(u32::from_le_bytes(self.take(4)?.try_into().expect("4"))),
            wire => return Err(format!("unsupported wire type {wire}")),
        };
        Ok((k >> 3, value))
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u64, Value<'a>), String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.0.is_empty() {
            return None;
        }
        let item = self.next_field();
        if item.is_err() {
            self.0 = &[]; // stop after the first error
        }
        Some(item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_version_event_has_tensorflows_bytes() {
        let event = Event {
            wall_time: 0.0,
            file_version: Some("brain.Event:2".into()),
            ..Event::default()
        };
        let mut expected = vec![0x09];
        expected.extend_from_slice(&[0; 8]);
        expected.extend_from_slice(b"\x1a\x0dbrain.Event:2");
        assert_eq!(event.encode(), expected);
    }

    #[test]
    fn scalar_event_encodes_field_by_field() {
        let event = Event {
            wall_time: 1.5,
            step: 300,
            file_version: None,
            scalars: vec![("a".into(), 2.0)],
        };
        let mut expected = vec![0x09];
        expected.extend_from_slice(&1.5f64.to_le_bytes());
        expected.extend_from_slice(&[0x10, 0xac, 0x02]); // step 300 as a varint
        expected.extend_from_slice(&[0x2a, 0x0a, 0x0a, 0x08, 0x0a, 0x01, b'a', 0x15]);
        expected.extend_from_slice(&2.0f32.to_le_bytes());
        assert_eq!(event.encode(), expected);
        assert_eq!(Event::decode(&expected).unwrap(), event);
    }

    #[test]
    fn decode_skips_unknown_fields_and_rejects_truncation() {
        let mut bytes = Event {
            wall_time: 3.0,
            step: 7,
            ..Event::default()
        }
        .encode();
        bytes.extend_from_slice(&[0x78, 0x05]); // field 15 = 5: not one this decoder knows
        let event = Event::decode(&bytes).unwrap();
        assert_eq!((event.wall_time, event.step), (3.0, 7));
        assert!(Event::decode(&bytes[..5]).is_err());
    }
}
