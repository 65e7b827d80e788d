//! Internet checksum arithmetic (RFC 1071), shared by the kernel's REJECT
//! replies and the tests that check them. Sums are kept unfolded in a `u32`
//! and folded once at the end.

/// Add a 16-bit word (as it sits in the packet, big-endian) to `sum`.
#[must_use]
pub const fn add16(sum: u32, word: u16) -> u32 {
    sum + word as u32
}

/// Add the two halves of a 32-bit big-endian value.
#[must_use]
pub const fn add32(sum: u32, v: u32) -> u32 {
    sum + (v >> 16) + (v & 0xffff)
}

/// Add bytes, as big-endian 16-bit words (an odd last byte is padded).
#[must_use]
pub const fn add_bytes(mut sum: u32, bytes: &[u8]) -> u32 {
    let mut i = 0;
    while i + 1 < bytes.len() {
        sum += ((bytes[i] as u32) << 8) | bytes[i + 1] as u32;
        i += 2;
    }
    if i < bytes.len() {
        sum += (bytes[i] as u32) << 8;
    }
    sum
}

/// Fold carries and complement: the value to store in a checksum field.
#[must_use]
#[expect(
    clippy::cast_possible_truncation,
    reason = "the carries were folded in: the sum fits 16 bits"
)]
pub const fn finish(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2.
        let sum = add_bytes(0, &[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]);
        assert_eq!(finish(sum), !0xddf2);
    }

    #[test]
    fn ipv4_header_checksum() {
        // A real header (checksum field zeroed): 45 00 00 73 00 00 40 00 40 11 .. .. c0 a8 00 01 c0 a8 00 c7
        let hdr = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0, 0, 0xc0, 0xa8, 0x00,
            0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(finish(add_bytes(0, &hdr)), 0xb861);
    }

    #[test]
    fn words_and_odd_bytes() {
        assert_eq!(
            add32(add16(0, 0x1234), 0xabcd_0001),
            0x1234 + 0xabcd + 0x0001
        );
        assert_eq!(add_bytes(0, &[0x12, 0x34, 0x56]), 0x1234 + 0x5600);
    }
}
