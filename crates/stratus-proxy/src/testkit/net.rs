//! An in-memory network for backends: a scripted server listens on a name, the proxy dials it
//! through the same `BackendStream::connect` as a real server's socket, and the two ends are a
//! `tokio::io::duplex` pipe. Nothing goes through the kernel, so tests run on tokio's paused
//! clock: the runtime only moves the clock when every task waits, never while bytes are in
//! flight (a socket's readiness arrives through the I/O driver, which the paused clock does not
//! count as work, so a timeout would fire while an answer sat unread).

use bytes::{Buf, BytesMut};
use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use stratus_core::Endpoint;
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, Interest, ReadBuf, Ready};
use tokio::sync::mpsc;

/// Where in-memory servers are named; no real socket lives there.
const PREFIX: &str = "/nonexistent/stratus-memory";

/// Bytes a pipe holds before its writer waits: more than any scripted answer.
const PIPE: usize = 1 << 20;

type Accept = mpsc::UnboundedSender<DuplexStream>;

static LISTENERS: LazyLock<Mutex<HashMap<Arc<Path>, Accept>>> = LazyLock::new(Default::default);

fn listeners() -> MutexGuard<'static, HashMap<Arc<Path>, Accept>> {
    LISTENERS.lock().unwrap_or_else(|p| p.into_inner())
}

/// A new name to listen on, and the server ends of the connections made to it.
pub(crate) fn listen() -> (Endpoint, mpsc::UnboundedReceiver<DuplexStream>) {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let path: Arc<Path> = Path::new(&format!("{PREFIX}/{n}")).into();
    let (tx, rx) = mpsc::unbounded_channel();
    listeners().insert(path.clone(), tx);
    (Endpoint::Unix(path), rx)
}

/// Stops listening on `addr`: connections are refused from now on, as by a server that is gone.
pub(crate) fn unlisten(addr: &Endpoint) {
    if let Endpoint::Unix(path) = addr {
        listeners().remove(path);
    }
}

/// A connection to an in-memory server; `None` if `addr` is not one of their names.
pub(crate) fn dial(addr: &Endpoint) -> Option<io::Result<MemoryStream>> {
    let Endpoint::Unix(path) = addr else {
        return None;
    };
    if !path.starts_with(PREFIX) {
        return None;
    }
    let refused = || io::Error::from(io::ErrorKind::ConnectionRefused);
    let Some(accept) = listeners().get(path).cloned() else {
        return Some(Err(refused()));
    };
    let (proxy_end, server_end) = tokio::io::duplex(PIPE);
    Some(match accept.send(server_end) {
        Ok(()) => Ok(MemoryStream(Mutex::new(Pipe {
            pipe: proxy_end,
            ahead: BytesMut::new(),
        }))),
        Err(_) => Err(refused()),
    })
}

/// The proxy's end of an in-memory backend connection. A socket reports readiness without
/// reading; a pipe cannot, so [`MemoryStream::ready`] reads ahead, and reads are served from
/// what it read first. Readiness takes `&self` (as a socket's does), hence the lock: tests only.
pub struct MemoryStream(Mutex<Pipe>);

struct Pipe {
    pipe: DuplexStream,
    ahead: BytesMut,
}

impl MemoryStream {
    fn lock(&self) -> MutexGuard<'_, Pipe> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Resolves when bytes arrive (`READABLE`) or the server closed its end (`READ_CLOSED`),
    /// as the relay's idle watch needs. Unlike a socket it does not report bytes that arrived
    /// before the call, so calling it again after `READABLE` waits for the next event, which is
    /// what the relay gets from a socket by clearing its readiness.
    pub(crate) async fn ready(&self, interest: Interest) -> io::Result<Ready> {
        if !interest.is_readable() {
            return Ok(Ready::WRITABLE);
        }
        std::future::poll_fn(|cx| {
            let mut p = self.lock();
            let Pipe { pipe, ahead } = &mut *p;
            let mut chunk = [0u8; 4096];
            let mut read = ReadBuf::new(&mut chunk);
            match Pin::new(pipe).poll_read(cx, &mut read) {
                Poll::Ready(Ok(())) if read.filled().is_empty() => {
                    Poll::Ready(Ok(Ready::READ_CLOSED))
                }
                Poll::Ready(Ok(())) => {
                    ahead.extend_from_slice(read.filled());
                    Poll::Ready(Ok(Ready::READABLE))
                }
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            }
        })
        .await
    }

    /// A read that never waits: `WouldBlock` when nothing is there (the pool's liveness probe).
    /// It must not be used while a task waits to read this stream: that task's wake-up is lost.
    pub(crate) fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        let mut p = self.lock();
        if !p.ahead.is_empty() {
            let n = p.ahead.len().min(buf.len());
            buf[..n].copy_from_slice(&p.ahead[..n]);
            p.ahead.advance(n);
            return Ok(n);
        }
        let mut read = ReadBuf::new(buf);
        let mut cx = Context::from_waker(Waker::noop());
        match Pin::new(&mut p.pipe).poll_read(&mut cx, &mut read) {
            Poll::Ready(Ok(())) => Ok(read.filled().len()),
            Poll::Ready(Err(e)) => Err(e),
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl AsyncRead for MemoryStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let p = self
            .get_mut()
            .0
            .get_mut()
            .unwrap_or_else(|p| p.into_inner());
        if !p.ahead.is_empty() {
            let n = p.ahead.len().min(buf.remaining());
            buf.put_slice(&p.ahead[..n]);
            p.ahead.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut p.pipe).poll_read(cx, buf)
    }
}

impl AsyncWrite for MemoryStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let p = self
            .get_mut()
            .0
            .get_mut()
            .unwrap_or_else(|p| p.into_inner());
        Pin::new(&mut p.pipe).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let p = self
            .get_mut()
            .0
            .get_mut()
            .unwrap_or_else(|p| p.into_inner());
        Pin::new(&mut p.pipe).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let p = self
            .get_mut()
            .0
            .get_mut()
            .unwrap_or_else(|p| p.into_inner());
        Pin::new(&mut p.pipe).poll_shutdown(cx)
    }
}

/// The proxy's end of a client's pipe, which can run a check each time the proxy writes: what
/// the proxy has published by then is what a client could see on receiving those bytes,
/// whichever thread it runs on.
pub(crate) struct ClientPipe {
    pub(crate) stream: DuplexStream,
    pub(crate) on_write: Option<Arc<dyn Fn() + Send + Sync>>,
}

impl AsyncRead for ClientPipe {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for ClientPipe {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let me = self.get_mut();
        if let Some(check) = &me.on_write {
            check();
        }
        Pin::new(&mut me.stream).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn pair() -> (MemoryStream, DuplexStream, Endpoint) {
        let (addr, mut accept) = listen();
        let proxy_end = dial(&addr).expect("a memory name").expect("listening");
        let server_end = accept.recv().await.expect("accepted");
        (proxy_end, server_end, addr)
    }

    #[tokio::test]
    async fn readiness_reports_new_bytes_then_the_close_and_reads_keep_the_order() {
        let (mut proxy_end, mut server_end, _) = pair().await;
        server_end.write_all(b"ab").await.unwrap();
        assert_eq!(
            proxy_end.ready(Interest::READABLE).await.unwrap(),
            Ready::READABLE
        );
        server_end.write_all(b"c").await.unwrap();
        drop(server_end);
        assert_eq!(
            proxy_end.ready(Interest::READABLE).await.unwrap(),
            Ready::READABLE
        );
        let closed = proxy_end.ready(Interest::READABLE).await.unwrap();
        assert!(closed.is_read_closed());
        let mut all = Vec::new();
        proxy_end.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, b"abc");
    }

    #[tokio::test]
    async fn try_read_never_waits() {
        let (proxy_end, mut server_end, _) = pair().await;
        let mut buf = [0u8; 8];
        let idle = proxy_end.try_read(&mut buf).unwrap_err();
        assert_eq!(idle.kind(), io::ErrorKind::WouldBlock);
        server_end.write_all(b"x").await.unwrap();
        assert_eq!(proxy_end.try_read(&mut buf).unwrap(), 1);
        drop(server_end);
        assert_eq!(proxy_end.try_read(&mut buf).unwrap(), 0, "end of stream");
    }

    #[tokio::test]
    async fn names_nobody_listens_on_refuse_and_real_addresses_are_not_memory() {
        let (_, _, addr) = pair().await;
        unlisten(&addr);
        let refused = dial(&addr).expect("a memory name").err().expect("refused");
        assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused);
        assert!(dial(&Endpoint::Unix(Path::new("/run/mysqld/mysqld.sock").into())).is_none());
        assert!(dial(&Endpoint::Tcp("127.0.0.1:3306".parse().unwrap())).is_none());
    }
}
