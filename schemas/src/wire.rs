//! Confluent's wire format: a magic byte (0), the schema id as 4 bytes big
//! endian, then the Avro datum.

/// The first byte of every Confluent-framed payload.
pub const MAGIC_BYTE: u8 = 0;

/// Splits a Confluent-framed payload into its schema id and datum.
pub fn split_wire_format(bytes: &[u8]) -> Result<(u32, &[u8]), String> {
    let Some((&magic, rest)) = bytes.split_first() else {
        return Err(
            "0 bytes is too short for the Confluent wire format (a magic byte and a 4-byte schema id come first)"
                .to_owned(),
        );
    };
    let Some((id, datum)) = rest.split_first_chunk::<4>() else {
        return Err(format!(
            "{} bytes is too short for the Confluent wire format (a magic byte and a 4-byte schema id come first)",
            bytes.len()
        ));
    };
    if magic != MAGIC_BYTE {
        return Err(format!(
            "wrong magic byte 0x{magic:02x} (expected 0x00): not Confluent-framed Avro"
        ));
    }
    Ok((u32::from_be_bytes(*id), datum))
}

/// Prefixes a datum with the magic byte and the schema id.
pub fn frame(id: u32, datum: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + datum.len());
    out.push(MAGIC_BYTE);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(datum);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_back_and_short_or_unframed_payloads_are_errors() {
        let framed = frame(0x0102_0304, b"datum");
        assert_eq!(split_wire_format(&framed), Ok((0x0102_0304, &b"datum"[..])));
        assert_eq!(split_wire_format(&frame(7, b"")), Ok((7, &b""[..])));
        for short in [&b""[..], b"\0", b"\0\0\0\0"] {
            let error = split_wire_format(short).unwrap_err();
            assert!(error.contains("too short"), "{error}");
        }
        let error = split_wire_format(b"{\"json\": 1}").unwrap_err();
        assert!(error.contains("magic byte 0x7b"), "{error}");
    }
}
