//! The compressed protocol (<https://mariadb.com/kb/en/0-packet/>, "compressed packet"): once a
//! client that asked for `CLIENT_COMPRESS` has read the login's OK, each direction is a stream
//! of compressed packets: a 3-byte length of what follows the 7-byte header, a sequence id of
//! its own, and a 3-byte uncompressed length, 0 when the payload went as it was. Their payloads,
//! joined, are the ordinary packet stream; a compressed packet may end in the middle of one of
//! its packets.
//!
//! Clients number that inner stream each in their own way (MariaDB Connector/C numbers every
//! packet of a command 0; the server and mysql_common start an answer at the compressed id),
//! so [`Headers`] finds the inner packets' headers in a stream cut anywhere, for their ids to
//! be rewritten.

use crate::malformed;
use crate::packet::{HEADER_LEN as PLAIN_HEADER_LEN, MAX_PAYLOAD};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

pub const HEADER_LEN: usize = 7;
/// Payloads shorter than this go uncompressed, as the server sends them (`MIN_COMPRESS_LENGTH`).
pub const MIN_COMPRESS_LENGTH: usize = 50;

/// The header of the compressed packet at the start of `buf`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Bytes after the header.
    pub len: usize,
    pub seq: u8,
    /// The payload's length once inflated; 0 when it is not compressed.
    pub uncompressed: usize,
}

impl Header {
    pub fn parse(buf: &[u8]) -> Option<Header> {
        let h = buf.get(..HEADER_LEN)?;
        let le3 = |b: &[u8]| usize::from(b[0]) | usize::from(b[1]) << 8 | usize::from(b[2]) << 16;
        Some(Header {
            len: le3(&h[..3]),
            seq: h[3],
            uncompressed: le3(&h[4..7]),
        })
    }

    /// The size of the whole packet, header included.
    pub fn total(&self) -> usize {
        HEADER_LEN + self.len
    }
}

/// Inflates compressed payloads. Its state (about 40 KiB) is made on the first compressed
/// payload, and can be given back between packets: each is a zlib stream of its own.
#[derive(Default)]
pub struct Inflater(Option<Box<Decompress>>);

impl Inflater {
    /// Gives the state's memory back (an idle session's).
    pub fn release(&mut self) {
        self.0 = None;
    }

    /// Appends the plain bytes of a compressed packet's payload to `out`: exactly
    /// `header.uncompressed` of them, or the payload itself when it went uncompressed. A
    /// payload that inflates to another length is malformed, so no input makes more than 16 MiB.
    pub fn inflate(
        &mut self,
        header: &Header,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), crate::Malformed> {
        if header.uncompressed == 0 {
            out.extend_from_slice(payload);
            return Ok(());
        }
        let d = self
            .0
            .get_or_insert_with(|| Box::new(Decompress::new(true)));
        d.reset(true);
        let start = out.len();
        // `decompress_vec` writes into the spare room and never grows it, so a stream longer
        // than announced inflates to more than that or stops at the room's end without its end
        // marker: the checks below refuse both, and nothing is inflated past the room.
        out.reserve(header.uncompressed);
        let ended = matches!(
            d.decompress_vec(payload, out, FlushDecompress::Finish),
            Ok(Status::StreamEnd)
        );
        if ended && out.len() - start == header.uncompressed && d.total_in() == payload.len() as u64
        {
            return Ok(());
        }
        out.truncate(start);
        Err(malformed("compressed"))
    }
}

/// Compresses the proxy's answers into compressed packets. Its state (about 270 KiB, and a
/// tenth of a millisecond to make) is made on the first payload worth compressing and kept for
/// the next, until [`release`](Self::release)d.
#[derive(Default)]
pub struct Deflater(Option<Box<Compress>>);

impl Deflater {
    /// Gives the state's memory back (an idle session's).
    pub fn release(&mut self) {
        self.0 = None;
    }

    /// Appends `plain` to `out` as compressed packets numbered from `*seq`, leaving `*seq` at the
    /// next id. Short payloads, and those that would not shrink, go as they are.
    pub fn write(&mut self, out: &mut Vec<u8>, seq: &mut u8, plain: &[u8]) {
        for chunk in plain.chunks(MAX_PAYLOAD) {
            let start = out.len();
            out.extend_from_slice(&[0; HEADER_LEN]);
            let compressed = chunk.len() >= MIN_COMPRESS_LENGTH && self.deflate(chunk, out);
            if !compressed {
                out.truncate(start + HEADER_LEN);
                out.extend_from_slice(chunk);
            }
            let len = out.len() - start - HEADER_LEN;
            let uncompressed = if compressed { chunk.len() } else { 0 };
            out[start..start + 3].copy_from_slice(&(len as u32).to_le_bytes()[..3]);
            out[start + 3] = *seq;
            out[start + 4..start + 7].copy_from_slice(&(uncompressed as u32).to_le_bytes()[..3]);
            *seq = seq.wrapping_add(1);
        }
    }

    /// Deflates `chunk` onto `out`; false when the result would not be smaller.
    fn deflate(&mut self, chunk: &[u8], out: &mut Vec<u8>) -> bool {
        // The fastest level: the proxy compresses every answer of the session, on the host's CPU.
        let c = self
            .0
            .get_or_insert_with(|| Box::new(Compress::new(Compression::fast(), true)));
        c.reset();
        // Room for less than the chunk itself: a result that does not fit is not worth sending.
        out.reserve(chunk.len() - 1);
        let before = out.len();
        let ended = matches!(
            c.compress_vec(chunk, out, FlushCompress::Finish),
            Ok(Status::StreamEnd)
        );
        ended && out.len() - before < chunk.len()
    }
}

/// Finds the inner packets' headers in a packet stream that arrives in pieces cut anywhere, and
/// hands each header's sequence id to be rewritten.
#[derive(Debug, Default, Clone)]
pub struct Headers {
    /// Payload bytes left of the current packet.
    left: usize,
    /// Bytes of the next header seen so far (0..4), and the length they spell.
    seen: u8,
    len: usize,
}

impl Headers {
    /// Walks `bytes`, the next piece of the stream, calling `renumber` with each header's id
    /// and putting what it returns in its place.
    pub fn walk(&mut self, bytes: &mut [u8], mut renumber: impl FnMut(u8) -> u8) {
        let mut i = 0;
        while i < bytes.len() {
            if self.left > 0 {
                let n = self.left.min(bytes.len() - i);
                self.left -= n;
                i += n;
                continue;
            }
            match self.seen {
                0..=2 => self.len |= usize::from(bytes[i]) << (8 * self.seen),
                _ => bytes[i] = renumber(bytes[i]),
            }
            self.seen += 1;
            i += 1;
            if usize::from(self.seen) == PLAIN_HEADER_LEN {
                self.left = self.len;
                self.seen = 0;
                self.len = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn unpack(mut wire: &[u8]) -> (Vec<u8>, Vec<Header>) {
        let mut inflater = Inflater::default();
        let mut plain = Vec::new();
        let mut headers = Vec::new();
        while !wire.is_empty() {
            let h = Header::parse(wire).unwrap();
            inflater
                .inflate(&h, &wire[HEADER_LEN..h.total()], &mut plain)
                .unwrap();
            headers.push(h);
            wire = &wire[h.total()..];
        }
        (plain, headers)
    }

    #[test]
    fn short_payloads_go_uncompressed_and_long_ones_compressed() {
        let mut d = Deflater::default();
        let mut out = Vec::new();
        let mut seq = 3;
        d.write(&mut out, &mut seq, b"\x01\x00\x00\x00\x0e");
        assert_eq!(&out[..HEADER_LEN], &[5, 0, 0, 3, 0, 0, 0]);
        assert_eq!(seq, 4);
        let long = vec![b'x'; 10_000];
        let mut out = Vec::new();
        d.write(&mut out, &mut seq, &long);
        let h = Header::parse(&out).unwrap();
        assert_eq!((h.seq, h.uncompressed), (4, 10_000));
        assert!(h.len < 200, "{h:?}");
        assert_eq!(unpack(&out).0, long);
    }

    #[test]
    fn a_payload_that_would_grow_goes_as_it_is() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let noise: Vec<u8> = (0..4096)
            .map(|_| {
                // xorshift: bytes deflate cannot shrink.
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let mut out = Vec::new();
        Deflater::default().write(&mut out, &mut 0, &noise);
        let h = Header::parse(&out).unwrap();
        assert_eq!(h.uncompressed, 0);
        assert_eq!(&out[HEADER_LEN..], &noise[..]);
    }

    #[test]
    fn a_payload_that_inflates_to_another_length_is_malformed() {
        let mut out = Vec::new();
        Deflater::default().write(&mut out, &mut 0, &[7; 1000]);
        for claimed in [999usize, 1001, 0xff_ffff] {
            let mut wire = out.clone();
            wire[4..7].copy_from_slice(&(claimed as u32).to_le_bytes()[..3]);
            let h = Header::parse(&wire).unwrap();
            let mut plain = b"kept".to_vec();
            let got = Inflater::default().inflate(&h, &wire[HEADER_LEN..], &mut plain);
            assert!(got.is_err(), "claimed {claimed}");
            assert_eq!(plain, b"kept", "nothing appended");
        }
        let h = Header::parse(&[3, 0, 0, 0, 10, 0, 0]).unwrap();
        assert!(
            Inflater::default()
                .inflate(&h, b"abc", &mut Vec::new())
                .is_err()
        );
    }

    #[test]
    fn headers_are_found_across_pieces() {
        // Two packets: 2 payload bytes with id 0, then an empty one with id 1.
        let stream = [2u8, 0, 0, 0, b'a', b'b', 0, 0, 0, 1];
        for cut in 0..=stream.len() {
            let mut s = stream;
            let mut h = Headers::default();
            let mut ids = Vec::new();
            let (a, b) = s.split_at_mut(cut);
            h.walk(a, |id| {
                ids.push(id);
                id + 10
            });
            h.walk(b, |id| {
                ids.push(id);
                id + 10
            });
            assert_eq!(ids, [0, 1], "cut at {cut}");
            assert_eq!((s[3], s[9]), (10, 11));
            assert!(h.left == 0 && h.seen == 0, "ends on a packet's end");
        }
    }

    proptest! {
        #[test]
        fn what_is_written_reads_back(
            plain in proptest::collection::vec(prop_oneof![Just(b'a'), any::<u8>()], 0..6_000),
            seq in any::<u8>(),
        ) {
            let mut out = Vec::new();
            let mut next = seq;
            Deflater::default().write(&mut out, &mut next, &plain);
            let (back, headers) = unpack(&out);
            prop_assert_eq!(back, plain);
            for (i, h) in headers.iter().enumerate() {
                prop_assert_eq!(h.seq, seq.wrapping_add(i as u8));
            }
        }

        #[test]
        fn inflating_garbage_fails_cleanly(
            payload in proptest::collection::vec(any::<u8>(), 0..200),
            claimed in 1usize..5000,
        ) {
            let h = Header { len: payload.len(), seq: 0, uncompressed: claimed };
            let mut out = Vec::new();
            if Inflater::default().inflate(&h, &payload, &mut out).is_ok() {
                prop_assert_eq!(out.len(), claimed);
            } else {
                prop_assert!(out.is_empty());
            }
        }
    }
}
