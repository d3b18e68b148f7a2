//! Framing: every packet is a 3-byte little-endian payload length, a sequence id, and the
//! payload. A payload of 16 MiB − 1 or more is split into packets of exactly `MAX_PAYLOAD`
//! bytes followed by a shorter (possibly empty) one
//! (<https://mariadb.com/kb/en/0-packet/>).

pub const HEADER_LEN: usize = 4;
/// The largest payload one physical packet carries.
pub const MAX_PAYLOAD: usize = 0xff_ffff;

/// Length and sequence id of the physical packet at the start of `buf`.
#[inline]
pub fn header(buf: &[u8]) -> Option<(usize, u8)> {
    let h = buf.get(..HEADER_LEN)?;
    Some((
        usize::from(h[0]) | usize::from(h[1]) << 8 | usize::from(h[2]) << 16,
        h[3],
    ))
}

/// Total size (header included) of the physical packet at the start of `buf`, if it is all there.
#[inline]
pub fn complete(buf: &[u8]) -> Option<usize> {
    let (len, _) = header(buf)?;
    let total = HEADER_LEN + len;
    (buf.len() >= total).then_some(total)
}

/// Appends `payload` as packets starting at sequence id `*seq`, leaving `*seq` at the next id.
pub fn write(out: &mut Vec<u8>, seq: &mut u8, payload: &[u8]) {
    let mut rest = payload;
    loop {
        let n = rest.len().min(MAX_PAYLOAD);
        out.extend_from_slice(&(n as u32).to_le_bytes()[..3]);
        out.push(*seq);
        out.extend_from_slice(&rest[..n]);
        *seq = seq.wrapping_add(1);
        rest = &rest[n..];
        if n < MAX_PAYLOAD {
            return;
        }
    }
}

/// One logical packet (continuations joined) at the start of a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logical {
    /// Bytes of the buffer it spans, headers included.
    pub consumed: usize,
    /// Sequence id of its first physical packet.
    pub seq: u8,
    /// Sequence id of its last physical packet.
    pub last_seq: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("packet of at least {size} bytes exceeds the limit of {limit}")]
pub struct TooLarge {
    pub size: usize,
    pub limit: usize,
}

/// Finds the logical packet at the start of `buf`: `Ok(None)` while incomplete, an error as soon
/// as it is known to exceed `limit` payload bytes (so an oversized packet is refused before it is
/// buffered).
pub fn logical(buf: &[u8], limit: usize) -> Result<Option<Logical>, TooLarge> {
    let mut pos = 0;
    let mut size = 0;
    let mut first_seq = None;
    loop {
        let Some((len, seq)) = header(&buf[pos..]) else {
            return Ok(None);
        };
        first_seq.get_or_insert(seq);
        size += len;
        if size > limit {
            return Err(TooLarge { size, limit });
        }
        if buf.len() < pos + HEADER_LEN + len {
            return Ok(None);
        }
        pos += HEADER_LEN + len;
        if len < MAX_PAYLOAD {
            return Ok(Some(Logical {
                consumed: pos,
                seq: first_seq.unwrap_or(seq),
                last_seq: seq,
            }));
        }
    }
}

/// The payload of a logical packet, continuations joined (borrowed when it is one packet).
pub fn payload<'a>(buf: &'a [u8], lp: &Logical) -> std::borrow::Cow<'a, [u8]> {
    let one = &buf[..lp.consumed];
    if lp.consumed < HEADER_LEN + MAX_PAYLOAD {
        return std::borrow::Cow::Borrowed(&one[HEADER_LEN..]);
    }
    let mut out = Vec::with_capacity(lp.consumed);
    let mut pos = 0;
    while pos < lp.consumed {
        let (len, _) = header(&one[pos..]).unwrap_or((0, 0));
        out.extend_from_slice(&one[pos + HEADER_LEN..pos + HEADER_LEN + len]);
        pos += HEADER_LEN + len;
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn small_packet() {
        let mut out = Vec::new();
        let mut seq = 3;
        write(&mut out, &mut seq, b"abc");
        assert_eq!(out, [3, 0, 0, 3, b'a', b'b', b'c']);
        assert_eq!(seq, 4);
        let lp = logical(&out, 100).unwrap().unwrap();
        assert_eq!((lp.consumed, lp.seq, lp.last_seq), (7, 3, 3));
        assert_eq!(&*payload(&out, &lp), b"abc");
    }

    #[test]
    fn exact_multiple_gets_an_empty_trailer() {
        let data = vec![7u8; MAX_PAYLOAD];
        let mut out = Vec::new();
        let mut seq = 0;
        write(&mut out, &mut seq, &data);
        assert_eq!(out.len(), 2 * HEADER_LEN + MAX_PAYLOAD);
        assert_eq!(seq, 2);
        let lp = logical(&out, usize::MAX).unwrap().unwrap();
        assert_eq!(lp.last_seq, 1);
        assert_eq!(payload(&out, &lp).len(), MAX_PAYLOAD);
    }

    #[test]
    fn oversized_is_refused_early() {
        let mut out = Vec::new();
        write(&mut out, &mut 0, &vec![1u8; 1000]);
        assert_eq!(
            logical(&out[..10], 100),
            Err(TooLarge {
                size: 1000,
                limit: 100
            })
        );
    }

    #[test]
    fn empty_payload() {
        let mut out = Vec::new();
        write(&mut out, &mut 0, b"");
        assert_eq!(out, [0, 0, 0, 0]);
    }

    proptest! {
        // Few cases: each one near the split allocates 16 MiB.
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn round_trip_across_the_split(len in prop_oneof![0usize..64, (MAX_PAYLOAD - 2)..(MAX_PAYLOAD + 3)], seq in any::<u8>()) {
            let data: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut out = Vec::new();
            let mut s = seq;
            write(&mut out, &mut s, &data);
            let lp = logical(&out, usize::MAX).unwrap().unwrap();
            prop_assert_eq!(lp.consumed, out.len());
            prop_assert_eq!(lp.seq, seq);
            prop_assert_eq!(lp.last_seq.wrapping_add(1), s);
            prop_assert_eq!(&*payload(&out, &lp), &data[..]);
            // Any prefix is incomplete, never an error or a panic.
            prop_assert_eq!(logical(&out[..out.len() - 1], usize::MAX), Ok(None));
        }
    }
}
