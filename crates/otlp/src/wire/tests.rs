use super::*;

fn fields(buf: &[u8]) -> Vec<Result<(u32, WireValue<'_>), WireError>> {
    FieldIter::new(buf).collect()
}

#[test]
fn varints_round_trip_and_match_prost() {
    for value in [
        0,
        1,
        127,
        128,
        300,
        16_383,
        16_384,
        u32::MAX as u64,
        u64::MAX - 1,
        u64::MAX,
    ] {
        let mut ours = Vec::new();
        encode_varint(value, &mut ours);
        let mut theirs = Vec::new();
        prost::encoding::encode_varint(value, &mut theirs);
        assert_eq!(ours, theirs, "{value}");
        assert_eq!(varint_len(value), ours.len(), "{value}");
        let mut pos = 0;
        assert_eq!(read_varint(&ours, &mut pos), Ok(value));
        assert_eq!(pos, ours.len());
    }
}

#[test]
fn varint_errors() {
    let mut pos = 0;
    assert_eq!(
        read_varint(&[0x80, 0x80], &mut pos),
        Err(WireError::Truncated { offset: 0 })
    );
    // 11 continuation bytes: longer than any u64.
    let mut pos = 0;
    assert_eq!(
        read_varint(&[0xff; 11], &mut pos),
        Err(WireError::InvalidVarint { offset: 0 })
    );
    // 10 bytes whose last one overflows 64 bits.
    let mut overflowing = vec![0xff; 9];
    overflowing.push(0x02);
    let mut pos = 0;
    assert_eq!(
        read_varint(&overflowing, &mut pos),
        Err(WireError::InvalidVarint { offset: 0 })
    );
    // Non-minimal encodings are valid protobuf.
    let mut pos = 0;
    assert_eq!(read_varint(&[0x81, 0x80, 0x00], &mut pos), Ok(1));
}

#[test]
fn reads_every_wire_type() {
    let mut buf = Vec::new();
    encode_tag(1, WireType::Varint, &mut buf);
    encode_varint(150, &mut buf);
    encode_tag(2, WireType::Fixed64, &mut buf);
    buf.extend_from_slice(&7u64.to_le_bytes());
    encode_length_delimited(3, b"abc", &mut buf);
    encode_tag(MAX_FIELD_NUMBER, WireType::Fixed32, &mut buf);
    buf.extend_from_slice(&9u32.to_le_bytes());
    assert_eq!(
        fields(&buf),
        vec![
            Ok((1, WireValue::Varint(150))),
            Ok((2, WireValue::Fixed64(7))),
            Ok((3, WireValue::Bytes(b"abc"))),
            Ok((MAX_FIELD_NUMBER, WireValue::Fixed32(9))),
        ]
    );
    assert_eq!(length_delimited_len(3, 3), 5);
}

#[test]
fn position_tracks_field_boundaries() {
    let mut buf = Vec::new();
    encode_length_delimited(1, b"xy", &mut buf);
    encode_tag(2, WireType::Varint, &mut buf);
    encode_varint(1, &mut buf);
    let mut iter = FieldIter::new(&buf);
    assert_eq!(iter.position(), 0);
    iter.next();
    assert_eq!(iter.position(), 4);
    iter.next();
    assert_eq!(iter.position(), 6);
    assert!(iter.next().is_none());
}

#[test]
fn malformed_fields_are_errors_and_fuse_the_iterator() {
    // Length runs past the end.
    assert_eq!(
        fields(&[0x0a, 0x05, b'a']),
        vec![Err(WireError::Truncated { offset: 0 })]
    );
    // Fixed-width values cut short.
    assert_eq!(
        fields(&[0x09, 1, 2, 3]),
        vec![Err(WireError::Truncated { offset: 0 })]
    );
    assert_eq!(
        fields(&[0x0d, 1]),
        vec![Err(WireError::Truncated { offset: 0 })]
    );
    // Wire types 6 and 7 do not exist.
    assert_eq!(
        fields(&[0x0e]),
        vec![Err(WireError::InvalidWireType {
            wire_type: 6,
            offset: 0
        })]
    );
    // Groups are not used by OTLP.
    assert_eq!(
        fields(&[0x08, 0x01, 0x0b]),
        vec![
            Ok((1, WireValue::Varint(1))),
            Err(WireError::Group {
                wire_type: WireType::StartGroup,
                offset: 2
            })
        ]
    );
    // Field number 0 is invalid; so is a tag that does not fit 32 bits.
    assert_eq!(
        fields(&[0x00]),
        vec![Err(WireError::InvalidTag { tag: 0, offset: 0 })]
    );
    let mut huge_tag = Vec::new();
    encode_varint(u64::from(u32::MAX) + 1, &mut huge_tag);
    assert!(matches!(
        fields(&huge_tag)[..],
        [Err(WireError::InvalidTag { .. })]
    ));
    // A length that does not fit in usize on any platform.
    let mut huge_len = vec![0x0a];
    encode_varint(u64::MAX, &mut huge_len);
    assert_eq!(
        fields(&huge_len),
        vec![Err(WireError::Truncated { offset: 0 })]
    );
}

#[test]
fn open_field_inserts_minimal_length_prefix() {
    for payload_len in [0usize, 1, 127, 128, 20_000] {
        let mut out = vec![0xaa];
        let open = OpenField::begin(2, &mut out);
        out.extend(std::iter::repeat_n(7u8, payload_len));
        assert_eq!(open.payload_len(&out), payload_len);
        open.end(&mut out);
        let mut expected = vec![0xaa];
        encode_length_delimited(2, &vec![7u8; payload_len], &mut expected);
        assert_eq!(out, expected, "payload of {payload_len} bytes");
    }
}
