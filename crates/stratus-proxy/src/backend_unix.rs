//! The connection to a server's unix socket, registered with the reactor for readability only.
//!
//! A unix stream socket signals writability to its pollers each time its peer reads from it
//! (`unix_write_space` in the kernel), not only when a full buffer drains as TCP does. Tokio
//! registers its `UnixStream` for both directions, edge-triggered, so every statement the proxy
//! sent woke its thread once more when the server read it, with nothing to do: three sleeps of
//! the proxy thread per statement instead of two (`strace` of a `sysbench` run: an `epoll_wait`
//! returning only `EPOLLOUT` for the server's socket after each `sendto`). HAProxy asks for
//! writability only while it has something it could not write; so does this: writes go
//! straight to the socket, and only one that finds it full registers a second descriptor of
//! the same socket for writability until it gets through.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf, Ready};

/// The most a read asks for at once: as much as the backend buffer keeps room for
/// (`backend::BACKEND_READ`).
const READ_AT_ONCE: usize = 16 * 1024;

pub struct BackendUnix {
    read: AsyncFd<UnixStream>,
    /// Registered for writability only while a write waits for room.
    write: Option<AsyncFd<UnixStream>>,
}

impl BackendUnix {
    pub async fn connect(path: &Path) -> io::Result<Self> {
        let stream = tokio::net::UnixStream::connect(path).await?.into_std()?;
        Ok(Self {
            read: register(stream, Interest::READABLE)?,
            write: None,
        })
    }

    /// Waits for readability (the only interest registered); the readiness stays set.
    pub async fn readable(&self) -> io::Result<Ready> {
        let mut guard = self.read.ready(Interest::READABLE).await?;
        let ready = guard.ready();
        guard.retain_ready();
        Ok(ready)
    }

    /// Runs a read-side operation if the socket is readable; `WouldBlock` from it clears that.
    pub fn try_read_io<R>(&self, f: impl FnOnce() -> io::Result<R>) -> io::Result<R> {
        self.read.try_io(Interest::READABLE, |_| f())
    }

    /// Whether anything waits to be read (or the peer closed), without reading it: `Ok(1)`
    /// then, `WouldBlock` when nothing does. For a socket carrying TLS, whose bytes belong to
    /// records.
    pub fn try_peek(&self, _buf: &mut [u8]) -> io::Result<usize> {
        use rustix::event::{PollFd, PollFlags, Timespec, poll};
        let mut fds = [PollFd::new(self.read.get_ref(), PollFlags::IN)];
        match poll(&mut fds, Some(&Timespec::default()))? {
            0 => Err(io::ErrorKind::WouldBlock.into()),
            _ => Ok(1),
        }
    }

    pub fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.read
            .try_io(Interest::READABLE, |s| (&mut &*s).read(buf))
    }
}

/// Registers `stream` with the reactor for `interest` only.
#[allow(unsafe_code)]
fn register(stream: UnixStream, interest: Interest) -> io::Result<AsyncFd<UnixStream>> {
    // SAFETY: a `UnixStream` owns its descriptor: it stays open, and `as_raw_fd` returns that
    // same descriptor, for as long as the `AsyncFd` holds the stream.
    Ok(unsafe { AsyncFd::register_with_interest(stream, interest) }?)
}

/// Reads straight into the buffer's unfilled room, as the kernel allows (`read(2)` writes
/// before it is read), without zeroing it first: a `BytesMut` hands each read fresh,
/// uninitialised room, and zeroing 16 KiB per answer was a measurable share of the proxy's
/// CPU per statement.
impl AsyncRead for BackendUnix {
    #[allow(unsafe_code)]
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let mut guard = ready!(self.read.poll_read_ready(cx))?;
            let room = buf.remaining().min(READ_AT_ONCE);
            // SAFETY: nothing initialised is de-initialised: only `read(2)` writes here.
            let into = unsafe { &mut buf.unfilled_mut()[..room] };
            match guard.try_io(|s| {
                rustix::io::read(s.get_ref(), into)
                    .map(|(filled, _)| filled.len())
                    .map_err(io::Error::from)
            }) {
                Ok(Ok(n)) => {
                    // SAFETY: `read(2)` wrote the first `n` bytes of the unfilled room.
                    unsafe { buf.assume_init(n) };
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for BackendUnix {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let me = self.get_mut();
        loop {
            match (&mut me.read.get_ref()).write(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let waiting = match &mut me.write {
                        Some(w) => w,
                        None => me.write.insert(register(
                            me.read.get_ref().try_clone()?,
                            Interest::WRITABLE,
                        )?),
                    };
                    ready!(waiting.poll_write_ready(cx))?.clear_ready();
                }
                done => {
                    // Through: stop listening for room, or every read by the server wakes us.
                    me.write = None;
                    return Poll::Ready(done);
                }
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.read.get_ref().shutdown(std::net::Shutdown::Write))
    }
}
