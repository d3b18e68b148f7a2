//! A compressed session's stream (<https://mariadb.com/kb/en/0-packet/>, "compressed packet"):
//! the client's compressed packets inflated into the packet stream the rest of the proxy reads,
//! and what the proxy writes deflated into compressed packets. The backend connection stays
//! uncompressed: it is local, and deflating for it would only spend the host's CPU twice.
//!
//! The packets inside carry sequence ids that clients set each in their own way, so they are
//! renumbered both ways. Towards the proxy, a command's packets count from 0 and a reply
//! continues from the last packet written, as an uncompressed client numbers them
//! ([`crate::stream::ClientIo`] does this, since only it knows a command from a reply); towards
//! the client, an answer starts at the id after the last compressed packet read, as the server
//! numbers it (`net_serv.cc`), and mysql_common, for one, checks.

use crate::stream::{CLIENT_READ, ClientStream};
use bytes::{Buf, BytesMut};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use stratus_wire::compressed::{Deflater, HEADER_LEN, Header, Headers, Inflater};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Deflate what is written once this much is waiting, rather than holding it to the flush.
const DEFLATE_AT: usize = 64 * 1024;
/// Buffers larger than this (a large answer went through) are given back once empty.
const KEEP: usize = 64 * 1024;

pub struct Compressed {
    pub(crate) inner: ClientStream,
    /// Compressed packets read, the last one possibly incomplete.
    wire_in: BytesMut,
    /// Inflated bytes, read up to `plain_read`.
    plain_in: Vec<u8>,
    plain_read: usize,
    inflater: Inflater,
    /// Bytes written, not deflated yet.
    plain_out: Vec<u8>,
    /// Finds the headers in what is written, for their ids.
    out_headers: Headers,
    deflater: Deflater,
    /// Compressed packets not written yet, from `wire_sent`.
    wire_out: Vec<u8>,
    wire_sent: usize,
    /// The id of the last compressed packet read.
    read_seq: u8,
    /// The id of the next compressed packet written.
    write_seq: u8,
    /// Added to the ids of the packets written, from the first one after a read.
    shift: Option<u8>,
    /// The id (before the shift) a client's reply continues from.
    pub(crate) next_plain: u8,
}

impl Compressed {
    /// Compression from now on; `read` holds what the client sent after its login, already
    /// compressed.
    pub(crate) fn new(inner: ClientStream, read: BytesMut) -> Self {
        Compressed {
            inner,
            wire_in: read,
            plain_in: Vec::new(),
            plain_read: 0,
            inflater: Inflater::default(),
            plain_out: Vec::new(),
            out_headers: Headers::default(),
            deflater: Deflater::default(),
            wire_out: Vec::new(),
            wire_sent: 0,
            read_seq: 0,
            write_seq: 0,
            shift: None,
            next_plain: 0,
        }
    }

    /// Gives back what an idle session need not hold: the zlib states and empty buffers.
    pub(crate) fn rest(&mut self) {
        self.inflater.release();
        self.deflater.release();
        if self.plain_read == self.plain_in.len() {
            self.plain_in = Vec::new();
            self.plain_read = 0;
        }
        for v in [&mut self.plain_out, &mut self.wire_out] {
            if v.is_empty() {
                *v = Vec::new();
            }
        }
        if self.wire_in.is_empty() {
            self.wire_in = BytesMut::new();
        }
    }

    /// Deflates what is written and sends it all.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            while self.wire_sent < self.wire_out.len() {
                let n = ready!(
                    Pin::new(&mut self.inner).poll_write(cx, &self.wire_out[self.wire_sent..])
                )?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.wire_sent += n;
            }
            self.wire_sent = 0;
            shrink(&mut self.wire_out);
            if self.plain_out.is_empty() {
                return Poll::Ready(Ok(()));
            }
            self.deflater
                .write(&mut self.wire_out, &mut self.write_seq, &self.plain_out);
            shrink(&mut self.plain_out);
        }
    }
}

/// Empties `v`, giving its memory back if a large packet grew it.
fn shrink(v: &mut Vec<u8>) {
    if v.capacity() > KEEP {
        *v = Vec::new();
    } else {
        v.clear();
    }
}

impl AsyncRead for Compressed {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.plain_read < this.plain_in.len() {
                let n = (this.plain_in.len() - this.plain_read).min(buf.remaining());
                buf.put_slice(&this.plain_in[this.plain_read..][..n]);
                this.plain_read += n;
                return Poll::Ready(Ok(()));
            }
            let header = Header::parse(&this.wire_in);
            if let Some(h) = header
                && this.wire_in.len() >= h.total()
            {
                shrink(&mut this.plain_in);
                this.plain_read = 0;
                this.inflater
                    .inflate(&h, &this.wire_in[HEADER_LEN..h.total()], &mut this.plain_in)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                this.wire_in.advance(h.total());
                if this.wire_in.is_empty() && this.wire_in.capacity() > KEEP {
                    this.wire_in = BytesMut::new();
                }
                this.read_seq = h.seq;
                this.write_seq = h.seq.wrapping_add(1);
                this.shift = None;
                continue;
            }
            // Read into zeroed room (no unsafe code): a few KiB, or what the packet still needs.
            let len = this.wire_in.len();
            let want = header
                .map_or(0, |h| h.total() - len)
                .clamp(CLIENT_READ, 1 << 20);
            this.wire_in.resize(len + want, 0);
            let mut rb = ReadBuf::new(&mut this.wire_in[len..]);
            let polled = Pin::new(&mut this.inner).poll_read(cx, &mut rb);
            let n = rb.filled().len();
            this.wire_in.truncate(len + n);
            ready!(polled)?;
            if n == 0 {
                return if this.wire_in.is_empty() {
                    Poll::Ready(Ok(()))
                } else {
                    Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()))
                };
            }
        }
    }
}

impl AsyncWrite for Compressed {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.plain_out.len() >= DEFLATE_AT {
            ready!(this.poll_send(cx))?;
        }
        let start = this.plain_out.len();
        this.plain_out.extend_from_slice(buf);
        let first = this.read_seq.wrapping_add(1);
        let (shift, next_plain) = (&mut this.shift, &mut this.next_plain);
        this.out_headers.walk(&mut this.plain_out[start..], |id| {
            *next_plain = id.wrapping_add(1);
            id.wrapping_add(*shift.get_or_insert(first.wrapping_sub(id)))
        });
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::net::ClientPipe;
    use stratus_wire::compressed::Header;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Reads one compressed packet: its id and what it carries.
    async fn compressed(client: &mut tokio::io::DuplexStream) -> (u8, Vec<u8>) {
        let mut head = [0; HEADER_LEN];
        client.read_exact(&mut head).await.unwrap();
        let h = Header::parse(&head).unwrap();
        let mut payload = vec![0; h.len];
        client.read_exact(&mut payload).await.unwrap();
        let mut plain = Vec::new();
        Inflater::default()
            .inflate(&h, &payload, &mut plain)
            .unwrap();
        (h.seq, plain)
    }

    #[tokio::test]
    async fn answers_count_from_the_compressed_packet_they_answer_and_survive_a_rest() {
        let (mut client, proxy_end) = tokio::io::duplex(1 << 20);
        let pipe = ClientPipe {
            stream: proxy_end,
            on_write: None,
        };
        let mut c = Compressed::new(ClientStream::Memory(pipe), BytesMut::new());
        let select = b"\x09\x00\x00\x00\x03SELECT 1";
        // A command over compressed packets 3 and 4, the packet inside cut in two.
        for (seq, part) in [(3u8, &select[..6]), (4, &select[6..])] {
            let mut p = vec![part.len() as u8, 0, 0, seq, 0, 0, 0];
            p.extend_from_slice(part);
            client.write_all(&p).await.unwrap();
        }
        let mut got = [0; 13];
        c.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, select);
        for round in 0..2 {
            // An answer of two packets the proxy numbers 1 and 2, written in three pieces.
            let mut answer = Vec::new();
            stratus_wire::packet::write(&mut answer, &mut 1, &[b'a'; 200]);
            stratus_wire::packet::write(&mut answer, &mut 2, b"ok");
            for piece in [&answer[..2], &answer[2..150], &answer[150..]] {
                c.write_all(piece).await.unwrap();
            }
            c.flush().await.unwrap();
            let (seq, plain) = compressed(&mut client).await;
            let first = if round == 0 { 5 } else { 1 };
            assert_eq!(seq, first, "after the last compressed packet read");
            assert_eq!((plain[3], plain[4 + 200 + 3]), (first, first + 1));
            assert_eq!(plain.len(), answer.len());
            c.rest();
            // The next command, in one compressed packet 0, deflated.
            let mut next = Vec::new();
            Deflater::default().write(&mut next, &mut 0, &[select.as_slice(); 8].concat());
            client.write_all(&next).await.unwrap();
            let mut got = [0; 13 * 8];
            c.read_exact(&mut got).await.unwrap();
            assert_eq!(&got[..13], select);
        }
    }
}
