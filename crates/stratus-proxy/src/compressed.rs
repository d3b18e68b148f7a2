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

use crate::stream::{CLIENT_READ, ClientStream, KEEP};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use stratus_wire::compressed::{Deflater, HEADER_LEN, Header, Headers, Inflater};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What is written goes out in compressed packets of at most this much: one deflate call is
/// then a fraction of a millisecond, and a large answer yields between its packets (each write
/// to the socket counts against the task's budget) instead of holding the session thread for
/// the tens of milliseconds a 16 MiB row takes.
const DEFLATE_CHUNK: usize = 64 * 1024;
/// A read asks for at most this much at once, however large the packet it is for.
const READ_MAX: usize = 1 << 20;

pub struct Compressed {
    pub(crate) inner: ClientStream,
    /// Compressed bytes read, `wire_in[wire_start..wire_end]`; the rest of it is initialised
    /// room, kept so that reads need not zero it each time.
    wire_in: Vec<u8>,
    wire_start: usize,
    wire_end: usize,
    /// Inflated bytes, read up to `plain_read`.
    plain_in: Vec<u8>,
    plain_read: usize,
    inflater: Inflater,
    /// Bytes written, deflated up to `plain_sent`.
    plain_out: Vec<u8>,
    plain_sent: usize,
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
    /// A replication stream: what the client sends (a replica's acknowledgements) does not
    /// start a new answer, and the events go on numbered as they were, as the server's dump
    /// thread numbers them.
    pub(crate) streaming: bool,
}

impl Compressed {
    /// Compression from now on; `read` holds what the client sent after its login, already
    /// compressed.
    pub(crate) fn new(inner: ClientStream, read: &[u8]) -> Self {
        Compressed {
            inner,
            wire_in: read.to_vec(),
            wire_start: 0,
            wire_end: read.len(),
            plain_in: Vec::new(),
            plain_read: 0,
            inflater: Inflater::default(),
            plain_out: Vec::new(),
            plain_sent: 0,
            out_headers: Headers::default(),
            deflater: Deflater::default(),
            wire_out: Vec::new(),
            wire_sent: 0,
            read_seq: 0,
            write_seq: 0,
            shift: None,
            next_plain: 0,
            streaming: false,
        }
    }

    /// Inflated bytes not read yet.
    pub(crate) fn unread(&self) -> usize {
        self.plain_in.len() - self.plain_read
    }

    /// Gives back what an idle session need not hold: the zlib states and empty buffers.
    pub(crate) fn rest(&mut self) {
        self.inflater.release();
        self.deflater.release();
        if self.plain_read == self.plain_in.len() {
            self.plain_in = Vec::new();
            self.plain_read = 0;
        }
        if self.plain_sent == self.plain_out.len() {
            self.plain_out = Vec::new();
            self.plain_sent = 0;
        }
        if self.wire_sent == self.wire_out.len() {
            self.wire_out = Vec::new();
            self.wire_sent = 0;
        }
        if self.wire_start == self.wire_end {
            self.wire_in = Vec::new();
            (self.wire_start, self.wire_end) = (0, 0);
        }
    }

    /// Sends what is written, a compressed packet at a time.
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
            if self.plain_sent == self.plain_out.len() {
                self.plain_sent = 0;
                shrink(&mut self.plain_out);
                return Poll::Ready(Ok(()));
            }
            let end = self.plain_out.len().min(self.plain_sent + DEFLATE_CHUNK);
            self.deflater.write(
                &mut self.wire_out,
                &mut self.write_seq,
                &self.plain_out[self.plain_sent..end],
            );
            self.plain_sent = end;
        }
    }

    /// Inflates the compressed packet at the front of what was read, if it is all there;
    /// `Ok(false)` when more must be read first.
    fn inflate_next(&mut self) -> io::Result<bool> {
        let wire = &self.wire_in[self.wire_start..self.wire_end];
        let Some(h) = Header::parse(wire).filter(|h| wire.len() >= h.total()) else {
            return Ok(false);
        };
        shrink(&mut self.plain_in);
        self.plain_read = 0;
        self.inflater
            .inflate(&h, &wire[HEADER_LEN..h.total()], &mut self.plain_in)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        self.wire_start += h.total();
        if self.wire_start == self.wire_end {
            (self.wire_start, self.wire_end) = (0, 0);
            if self.wire_in.len() > KEEP {
                self.wire_in = Vec::new();
            }
        }
        self.read_seq = h.seq;
        if !self.streaming {
            self.write_seq = h.seq.wrapping_add(1);
            self.shift = None;
        }
        Ok(true)
    }

    /// Makes initialised room after what was read for a read of `want` bytes, moving what is
    /// there to the front first when that makes it.
    fn make_room(&mut self, want: usize) {
        if self.wire_start > 0 && self.wire_in.len() - self.wire_end < want {
            self.wire_in.copy_within(self.wire_start..self.wire_end, 0);
            self.wire_end -= self.wire_start;
            self.wire_start = 0;
        }
        if self.wire_in.len() - self.wire_end < want {
            self.wire_in.resize(self.wire_end + want, 0);
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
                if this.plain_read == this.plain_in.len() {
                    shrink(&mut this.plain_in);
                    this.plain_read = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.inflate_next()? {
                continue;
            }
            // A few KiB, or what the packet still needs.
            let have = this.wire_end - this.wire_start;
            let want = Header::parse(&this.wire_in[this.wire_start..this.wire_end])
                .map_or(0, |h| h.total() - have)
                .clamp(CLIENT_READ, READ_MAX);
            this.make_room(want);
            let mut rb = ReadBuf::new(&mut this.wire_in[this.wire_end..]);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut rb))?;
            let n = rb.filled().len();
            if n == 0 {
                return if this.wire_start == this.wire_end {
                    Poll::Ready(Ok(()))
                } else {
                    Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()))
                };
            }
            this.wire_end += n;
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
        // Nothing more is taken while earlier packets wait for the socket, or once a packet's
        // worth waits: a slow client holds the writer back, as without compression.
        if this.wire_sent < this.wire_out.len()
            || this.plain_out.len() - this.plain_sent >= DEFLATE_CHUNK
        {
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
        let mut c = Compressed::new(ClientStream::Memory(pipe), &[]);
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
