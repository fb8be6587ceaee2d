//! Minimal protobuf wire-format reader and writer.
//!
//! The pipeline keeps telemetry as encoded protobuf bytes, so components walk messages field by
//! field instead of decoding them into structs. [`FieldIter`] reads the fields of one message from a
//! byte slice without allocating; the `encode_*` helpers write tags, varints and length-delimited
//! fields when a message has to be rebuilt from byte ranges of other messages.
//!
//! [`read_field`] is the building block for hot loops that track their own position.
//!
//! Decoding follows prost's rules (varints of at most 10 bytes, tags that fit in `u32`, field
//! number 0 invalid) so that anything this reader accepts, prost accepts too. Groups (wire types 3
//! and 4) are rejected: no OTLP message uses them.

use std::fmt;

/// Largest field number protobuf allows (2^29 - 1).
pub const MAX_FIELD_NUMBER: u32 = (1 << 29) - 1;

/// The wire type carried in the low three bits of every field tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WireType {
    Varint = 0,
    Fixed64 = 1,
    LengthDelimited = 2,
    StartGroup = 3,
    EndGroup = 4,
    Fixed32 = 5,
}

impl WireType {
    fn from_bits(bits: u8) -> Option<WireType> {
        match bits {
            0 => Some(WireType::Varint),
            1 => Some(WireType::Fixed64),
            2 => Some(WireType::LengthDelimited),
            3 => Some(WireType::StartGroup),
            4 => Some(WireType::EndGroup),
            5 => Some(WireType::Fixed32),
            _ => None,
        }
    }
}

impl fmt::Display for WireType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WireType::Varint => "varint",
            WireType::Fixed64 => "fixed64",
            WireType::LengthDelimited => "length-delimited",
            WireType::StartGroup => "start-group",
            WireType::EndGroup => "end-group",
            WireType::Fixed32 => "fixed32",
        })
    }
}

/// The payload of one field, borrowed from the message bytes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum WireValue<'a> {
    Varint(u64),
    Fixed64(u64),
    /// A length-delimited payload: a string, bytes, a nested message or a packed repeated field.
    Bytes(&'a [u8]),
    Fixed32(u32),
}

impl WireValue<'_> {
    /// The wire type this value was encoded with.
    pub fn wire_type(&self) -> WireType {
        match self {
            WireValue::Varint(_) => WireType::Varint,
            WireValue::Fixed64(_) => WireType::Fixed64,
            WireValue::Bytes(_) => WireType::LengthDelimited,
            WireValue::Fixed32(_) => WireType::Fixed32,
        }
    }
}

/// Why a byte sequence is not a well-formed protobuf message.
#[derive(thiserror::Error, Clone, Debug, PartialEq, Eq)]
pub enum WireError {
    #[error("truncated message: field at offset {offset} runs past the end")]
    Truncated { offset: usize },
    #[error("invalid varint at offset {offset} (longer than 10 bytes or overflowing 64 bits)")]
    InvalidVarint { offset: usize },
    #[error("invalid field tag {tag} at offset {offset}")]
    InvalidTag { tag: u64, offset: usize },
    #[error("invalid wire type {wire_type} at offset {offset}")]
    InvalidWireType { wire_type: u8, offset: usize },
    #[error("unsupported group field (wire type {wire_type}) at offset {offset}; OTLP does not use groups")]
    Group { wire_type: WireType, offset: usize },
}

/// Reads a varint starting at `*pos`, advancing `*pos` past it.
#[inline(always)]
pub fn read_varint(buf: &[u8], pos: &mut usize) -> Result<u64, WireError> {
    // Fast path: single-byte varints are by far the most common (tags, small lengths).
    if let Some(&byte) = buf.get(*pos) {
        if byte < 0x80 {
            *pos += 1;
            return Ok(u64::from(byte));
        }
    }
    read_varint_slow(buf, pos)
}

#[inline(never)]
fn read_varint_slow(buf: &[u8], pos: &mut usize) -> Result<u64, WireError> {
    let start = *pos;
    let mut value: u64 = 0;
    for i in 0..10 {
        let Some(&byte) = buf.get(start + i) else {
            return Err(WireError::Truncated { offset: start });
        };
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte < 0x80 {
            // The 10th byte may only contribute the single remaining bit of a u64.
            if i == 9 && byte > 1 {
                return Err(WireError::InvalidVarint { offset: start });
            }
            *pos = start + i + 1;
            return Ok(value);
        }
    }
    Err(WireError::InvalidVarint { offset: start })
}

/// Reads the field starting at `*pos` (tag and value), advancing `*pos` past it.
///
/// `*pos` must be below `buf.len()`; at the end of the buffer this reports truncation.
#[inline(always)]
pub fn read_field<'a>(buf: &'a [u8], pos: &mut usize) -> Result<(u32, WireValue<'a>), WireError> {
    let tag_offset = *pos;
    let key = read_varint(buf, pos)?;
    if key > u64::from(u32::MAX) || key >> 3 == 0 {
        return Err(WireError::InvalidTag {
            tag: key,
            offset: tag_offset,
        });
    }
    let number = (key >> 3) as u32;
    let value = match key & 0x07 {
        0 => WireValue::Varint(read_varint(buf, pos)?),
        1 => {
            let bytes = take(buf, pos, 8, tag_offset)?;
            let mut array = [0u8; 8];
            array.copy_from_slice(bytes);
            WireValue::Fixed64(u64::from_le_bytes(array))
        }
        2 => WireValue::Bytes(read_length_delimited(buf, pos, tag_offset)?),
        5 => {
            let bytes = take(buf, pos, 4, tag_offset)?;
            let mut array = [0u8; 4];
            array.copy_from_slice(bytes);
            WireValue::Fixed32(u32::from_le_bytes(array))
        }
        bits => return Err(unsupported_wire_type(bits as u8, tag_offset)),
    };
    Ok((number, value))
}

/// Reads the length and payload of a length-delimited field whose tag (at `tag_offset`) has
/// already been read, advancing `*pos` past the payload.
#[inline(always)]
pub fn read_length_delimited<'a>(
    buf: &'a [u8],
    pos: &mut usize,
    tag_offset: usize,
) -> Result<&'a [u8], WireError> {
    let len = read_varint(buf, pos)?;
    let len = usize::try_from(len).map_err(|_| WireError::Truncated { offset: tag_offset })?;
    take(buf, pos, len, tag_offset)
}

/// Skips a varint value whose tag has already been read.
#[inline(always)]
pub fn skip_varint(buf: &[u8], pos: &mut usize) -> Result<(), WireError> {
    read_varint(buf, pos).map(drop)
}

/// Skips `len` bytes of a fixed-width value whose tag (at `tag_offset`) has already been read.
#[inline(always)]
pub fn skip_fixed(
    buf: &[u8],
    pos: &mut usize,
    len: usize,
    tag_offset: usize,
) -> Result<(), WireError> {
    take(buf, pos, len, tag_offset).map(drop)
}

#[cold]
fn unsupported_wire_type(bits: u8, offset: usize) -> WireError {
    match WireType::from_bits(bits) {
        Some(group @ (WireType::StartGroup | WireType::EndGroup)) => WireError::Group {
            wire_type: group,
            offset,
        },
        _ => WireError::InvalidWireType {
            wire_type: bits,
            offset,
        },
    }
}

#[inline(always)]
fn take<'a>(
    buf: &'a [u8],
    pos: &mut usize,
    len: usize,
    tag_offset: usize,
) -> Result<&'a [u8], WireError> {
    let end = pos
        .checked_add(len)
        .filter(|&end| end <= buf.len())
        .ok_or(WireError::Truncated { offset: tag_offset })?;
    let bytes = &buf[*pos..end];
    *pos = end;
    Ok(bytes)
}

/// Iterates over the fields of one protobuf message, yielding `(field_number, value)`.
///
/// After an error the iterator is fused: it yields `None` from then on.
#[derive(Clone, Debug)]
pub struct FieldIter<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> FieldIter<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        FieldIter { buf, pos: 0 }
    }

    /// Offset in the message of the next field's tag (equals the end of the field last returned).
    pub fn position(&self) -> usize {
        self.pos
    }
}

impl<'a> Iterator for FieldIter<'a> {
    type Item = Result<(u32, WireValue<'a>), WireError>;

    #[inline(always)]
    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.buf.len() {
            return None;
        }
        let result = read_field(self.buf, &mut self.pos);
        if result.is_err() {
            self.pos = self.buf.len();
        }
        Some(result)
    }
}

/// Number of bytes `value` takes as a varint.
#[inline]
pub fn varint_len(value: u64) -> usize {
    // Each byte carries 7 bits; zero still takes one byte.
    let significant_bits = 64 - (value | 1).leading_zeros() as usize;
    significant_bits.div_ceil(7)
}

/// Appends `value` as a varint.
#[inline]
pub fn encode_varint(mut value: u64, out: &mut Vec<u8>) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// The one-byte tag of a field numbered below 16, for matching on a message's next byte.
///
/// Meant for constants: panics (at compile time, in a `const`) unless `field_number` is 1..=15.
pub const fn short_tag(field_number: u32, wire_type: WireType) -> u8 {
    assert!(field_number >= 1 && field_number < 16);
    ((field_number << 3) | wire_type as u32) as u8
}

/// Appends a field tag (`field_number << 3 | wire_type`).
#[inline]
pub fn encode_tag(field_number: u32, wire_type: WireType, out: &mut Vec<u8>) {
    debug_assert!((1..=MAX_FIELD_NUMBER).contains(&field_number));
    encode_varint((u64::from(field_number) << 3) | wire_type as u64, out);
}

/// Appends a complete length-delimited field: tag, length, payload.
#[inline]
pub fn encode_length_delimited(field_number: u32, payload: &[u8], out: &mut Vec<u8>) {
    encode_tag(field_number, WireType::LengthDelimited, out);
    encode_varint(payload.len() as u64, out);
    out.extend_from_slice(payload);
}

/// Encoded size of a length-delimited field with a payload of `payload_len` bytes.
#[inline]
pub fn length_delimited_len(field_number: u32, payload_len: usize) -> usize {
    varint_len(u64::from(field_number) << 3) + varint_len(payload_len as u64) + payload_len
}

/// Writes a length-delimited field whose payload is produced after its header.
///
/// `begin` writes the tag; `end` inserts the length prefix once the payload is known. Used when
/// rebuilding nested messages whose size is not known in advance.
#[derive(Debug)]
pub struct OpenField {
    payload_start: usize,
}

impl OpenField {
    /// Writes the tag of a length-delimited field; the payload is appended to `out` next.
    pub fn begin(field_number: u32, out: &mut Vec<u8>) -> OpenField {
        encode_tag(field_number, WireType::LengthDelimited, out);
        OpenField {
            payload_start: out.len(),
        }
    }

    /// Length of the payload written so far.
    pub fn payload_len(&self, out: &[u8]) -> usize {
        out.len() - self.payload_start
    }

    /// Inserts the length prefix in front of the payload written since [`OpenField::begin`].
    pub fn end(self, out: &mut Vec<u8>) {
        let mut value = (out.len() - self.payload_start) as u64;
        let mut prefix = [0u8; 10];
        let mut prefix_len = 0;
        while value >= 0x80 {
            prefix[prefix_len] = (value as u8) | 0x80;
            value >>= 7;
            prefix_len += 1;
        }
        prefix[prefix_len] = value as u8;
        prefix_len += 1;
        out.splice(
            self.payload_start..self.payload_start,
            prefix[..prefix_len].iter().copied(),
        );
    }
}

#[cfg(test)]
mod tests;
