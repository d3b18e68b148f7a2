//! A client's side of a session: its byte stream (plain TCP, or TLS after the `CLIENT_SSL`
//! upgrade, either of them compressed after a login with `CLIENT_COMPRESS`) and the buffered
//! reading and writing of whole packets on it.

use crate::compressed::Compressed;
use bytes::{Buf, BytesMut};
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use stratus_wire::packet::{self, HEADER_LEN};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub enum ClientStream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<Prefixed>>),
    /// Either of the above, carrying the compressed protocol.
    Compressed(Box<Compressed>),
    /// Only while the stream is being upgraded.
    Gone,
    /// A client in the same process, for tests of whole sessions (`crate::testkit`). Absent
    /// from other builds, so the relay's matches compile as they would without it.
    #[cfg(test)]
    Memory(crate::testkit::net::ClientPipe),
}

impl ClientStream {
    pub fn is_tls(&self) -> bool {
        match self {
            ClientStream::Tls(_) => true,
            ClientStream::Compressed(c) => c.inner.is_tls(),
            _ => false,
        }
    }

    /// The version and cipher suite of the client's TLS, if it used TLS.
    pub fn negotiated(&self) -> Option<crate::backend_tls::Negotiated> {
        match self {
            ClientStream::Tls(t) => {
                let c = t.get_ref().1;
                Some(crate::backend_tls::Negotiated {
                    version: c.protocol_version()?,
                    suite: c.negotiated_cipher_suite()?.suite(),
                })
            }
            ClientStream::Compressed(c) => c.inner.negotiated(),
            _ => None,
        }
    }

    /// The TLS server name the client asked for (SNI).
    pub fn server_name(&self) -> Option<&str> {
        match self {
            ClientStream::Tls(t) => t.get_ref().1.server_name(),
            ClientStream::Compressed(c) => c.inner.server_name(),
            _ => None,
        }
    }
}

/// A TCP stream that first yields bytes already read from it: the client may send its TLS
/// hello right behind the SSL request, into the proxy's buffer.
pub struct Prefixed {
    pub prefix: BytesMut,
    pub inner: TcpStream,
}

fn gone() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "stream taken for a TLS upgrade",
    )
}

impl AsyncRead for Prefixed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl AsyncRead for ClientStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            ClientStream::Compressed(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            ClientStream::Gone => Poll::Ready(Err(gone())),
            #[cfg(test)]
            ClientStream::Memory(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            ClientStream::Compressed(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            ClientStream::Gone => Poll::Ready(Err(gone())),
            #[cfg(test)]
            ClientStream::Memory(s) => Pin::new(s).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_flush(cx),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            ClientStream::Compressed(s) => Pin::new(s.as_mut()).poll_flush(cx),
            ClientStream::Gone => Poll::Ready(Err(gone())),
            #[cfg(test)]
            ClientStream::Memory(s) => Pin::new(s).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            ClientStream::Compressed(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            ClientStream::Gone => Poll::Ready(Err(gone())),
            #[cfg(test)]
            ClientStream::Memory(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// Why a session ends.
#[derive(Debug)]
pub(crate) enum End {
    /// The client left (EOF or `COM_QUIT`) or its socket failed.
    Client,
    /// The client broke the protocol; it has been told.
    Protocol,
    /// The client sent nothing for its session's `wait_timeout` (`interactive_timeout`), and
    /// was disconnected as the server would.
    Idle,
    /// The proxy is shutting down; the client was told so.
    Shutdown,
    /// A `KILL CONNECTION` named this session (closed without a word, unless it killed itself).
    Killed,
}

/// Makes sure a read into `buf` has room for at least `want` bytes. Consumed bytes are dropped
/// from a `BytesMut`'s front without giving their room back, so a buffer read to the end and
/// consumed has only its tail left: the next read would fetch a few hundred bytes of a
/// 13 KiB answer and need another system call (and often another wake-up) for the rest.
/// `reserve` moves what is left to the front when that makes the room, and allocates only
/// when the data itself needs it.
pub(crate) fn make_room(buf: &mut BytesMut, want: usize) {
    if buf.capacity() - buf.len() < want {
        buf.reserve(want);
    }
}

/// Room for a read of the client's commands.
pub(crate) const CLIENT_READ: usize = 8 * 1024;

/// The client side: its socket and what it has sent that is not consumed yet.
pub(crate) struct ClientIo {
    pub(crate) stream: ClientStream,
    pub(crate) buf: BytesMut,
    /// What this session counts in [`INFLATED`].
    pub(crate) inflated: usize,
}

/// Inflated bytes that compressed sessions hold, across the proxy: packets coming in, the
/// command being answered, what is inflated and not read yet. A few KiB of zlib inflate to
/// 16 MiB, so without a bound a few clients could make the proxy hold gigabytes (a packet may
/// be up to `max_packet`, and wait `wait_timeout` for its end, or hold its command for as long
/// as a `SLEEP` in it) for megabytes sent. A session holding up to [`INFLATED_FREE`] does not
/// count.
static INFLATED: AtomicUsize = AtomicUsize::new(0);
const INFLATED_FREE: usize = 1 << 20;
pub(crate) const INFLATED_BUDGET: usize = 256 << 20;
/// A buffer larger than this (a large packet went through) is given back once empty.
pub(crate) const KEEP: usize = 256 * 1024;

impl Drop for ClientIo {
    fn drop(&mut self) {
        INFLATED.fetch_sub(self.inflated, Ordering::Relaxed);
    }
}

impl ClientIo {
    /// Waits for a command: one whole logical packet; `Ok(None)` at a clean end of stream.
    pub(crate) async fn read(
        &mut self,
        limit: usize,
    ) -> Result<Option<packet::Logical>, ReadError> {
        self.read_packet(limit, false).await
    }

    /// Waits for a packet that answers the proxy's last one (an authentication reply, a local
    /// file's contents).
    pub(crate) async fn read_reply(
        &mut self,
        limit: usize,
    ) -> Result<Option<packet::Logical>, ReadError> {
        self.read_packet(limit, true).await
    }

    async fn read_packet(
        &mut self,
        limit: usize,
        reply: bool,
    ) -> Result<Option<packet::Logical>, ReadError> {
        // The last command is over: a buffer a large one grew is given back (a command's bytes
        // are split off it, and share its memory until then).
        if self.buf.is_empty() && self.buf.capacity() > KEEP {
            self.buf = BytesMut::with_capacity(CLIENT_READ);
        }
        loop {
            // Counted until the next read, so through the command this returns.
            if !self.count_inflated() {
                return Err(ReadError::Inflated);
            }
            match packet::logical(&self.buf, limit) {
                Ok(Some(lp)) => return Ok(Some(self.renumber(lp, reply))),
                Ok(None) => {}
                Err(e) => return Err(ReadError::TooLarge(e.limit)),
            }
            make_room(&mut self.buf, CLIENT_READ);
            if self
                .stream
                .read_buf(&mut self.buf)
                .await
                .map_err(|_| ReadError::Io)?
                == 0
            {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(ReadError::Io)
                };
            }
        }
    }

    /// Counts what a compressed session holds inflated in [`INFLATED`]; false when that goes
    /// past the budget.
    fn count_inflated(&mut self) -> bool {
        let ClientStream::Compressed(c) = &self.stream else {
            return true;
        };
        let held = self.buf.len() + c.unread();
        self.hold_inflated(if held > INFLATED_FREE { held } else { 0 })
    }

    /// Counts `held` bytes of this session in [`INFLATED`] in place of what it counted; false
    /// when that goes past the budget (they are counted until the session ends).
    fn hold_inflated(&mut self, held: usize) -> bool {
        let before = std::mem::replace(&mut self.inflated, held);
        if held >= before {
            INFLATED.fetch_add(held - before, Ordering::Relaxed) + held - before <= INFLATED_BUDGET
        } else {
            INFLATED.fetch_sub(before - held, Ordering::Relaxed);
            true
        }
    }

    /// In a compressed session, numbers the packet at the front of the buffer as an
    /// uncompressed client would have: from 0 for a command, else from the packet before.
    /// Clients number what travels inside compressed packets each in their own way (MariaDB
    /// Connector/C sends every packet of a command as 0), and the backend checks.
    fn renumber(&mut self, lp: packet::Logical, reply: bool) -> packet::Logical {
        let ClientStream::Compressed(c) = &mut self.stream else {
            return lp;
        };
        let first = if reply { c.next_plain } else { 0 };
        let mut id = first;
        let mut pos = 0;
        while let Some(total) = packet::complete(&self.buf[pos..lp.consumed]) {
            self.buf[pos + 3] = id;
            id = id.wrapping_add(1);
            pos += total;
        }
        c.next_plain = id;
        packet::Logical {
            seq: first,
            last_seq: id.wrapping_sub(1),
            ..lp
        }
    }

    /// Gives back what an idle session need not hold (a compressed stream's zlib states).
    pub(crate) fn rest(&mut self) {
        if let ClientStream::Compressed(c) = &mut self.stream {
            c.rest();
        }
    }

    /// The connection carries a replication stream from now on (`Compressed::streaming`).
    pub(crate) fn streaming(&mut self) {
        if let ClientStream::Compressed(c) = &mut self.stream {
            c.streaming = true;
        }
    }

    /// Speaks the compressed protocol from here on (after the login's OK).
    pub(crate) fn compress(&mut self) {
        let inner = std::mem::replace(&mut self.stream, ClientStream::Gone);
        let sent = self.buf.split();
        self.stream = ClientStream::Compressed(Box::new(Compressed::new(inner, &sent)));
    }

    /// Writes and flushes: TLS buffers records until flushed, and the client is waiting.
    pub(crate) async fn write(&mut self, bytes: &[u8]) -> Result<(), End> {
        self.stream
            .write_all(bytes)
            .await
            .map_err(|_| End::Client)?;
        self.stream.flush().await.map_err(|_| End::Client)
    }

    /// Sends one payload as the packet(s) with sequence id `seq`.
    pub(crate) async fn send(&mut self, seq: u8, payload: &[u8]) -> Result<(), End> {
        let mut out = Vec::with_capacity(payload.len() + HEADER_LEN);
        packet::write(&mut out, &mut { seq }, payload);
        self.write(&out).await
    }
}

#[derive(Debug)]
pub(crate) enum ReadError {
    Io,
    TooLarge(usize),
    /// Compressed sessions hold [`INFLATED_BUDGET`] of packets still coming in.
    Inflated,
}

impl ReadError {
    /// What the client is told before its connection is closed; nothing when it is gone.
    pub(crate) fn refusal(&self) -> Option<crate::error::SqlError> {
        match self {
            ReadError::Io => None,
            ReadError::TooLarge(limit) => Some(crate::error::SqlError::packet_too_large(*limit)),
            ReadError::Inflated => Some(crate::error::SqlError::inflated_budget()),
        }
    }
}
