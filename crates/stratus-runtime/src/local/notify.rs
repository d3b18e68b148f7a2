//! Readiness through the `sd_notify` protocol: mariadbd (built with systemd support, as the
//! distributions build it) sends `READY=1` on the datagram socket named by `NOTIFY_SOCKET` the
//! moment it accepts connections, and `STATUS=` lines while it recovers or shuts down
//! (<https://www.freedesktop.org/software/systemd/man/latest/sd_notify.html>). An abstract
//! socket keeps it off the file system and clear of the 108-byte path limit.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::net::UnixDatagram;

pub struct NotifySocket {
    /// The value for `NOTIFY_SOCKET` (`@name` for the abstract namespace).
    pub env: String,
    sock: UnixDatagram,
}

impl NotifySocket {
    pub fn bind() -> std::io::Result<Self> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        // Unique per process and call; the clock keeps a restarted Stratus with a recycled pid
        // from meeting a socket a lingering server still writes to.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let name = format!(
            "stratus-notify-{}-{}-{nanos}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let addr = SocketAddr::from_abstract_name(name.as_bytes())?;
        let std_sock = std::os::unix::net::UnixDatagram::bind_addr(&addr)?;
        std_sock.set_nonblocking(true)?;
        Ok(Self {
            env: format!("@{name}"),
            sock: UnixDatagram::from_std(std_sock)?,
        })
    }

    /// Waits for `READY=1`; returns the last `STATUS=` seen before it.
    pub async fn ready(&self) -> std::io::Result<Option<String>> {
        let mut buf = vec![0u8; 4096];
        let mut status = None;
        loop {
            let n = self.sock.recv(&mut buf).await?;
            let msg = String::from_utf8_lossy(&buf[..n]);
            let mut ready = false;
            for line in msg.lines() {
                if line == "READY=1" {
                    ready = true;
                } else if let Some(s) = line.strip_prefix("STATUS=") {
                    status = Some(s.to_owned());
                }
            }
            if ready {
                return Ok(status);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ready_after_status_lines() {
        let n = NotifySocket::bind().unwrap();
        let addr = SocketAddr::from_abstract_name(&n.env.as_bytes()[1..]).unwrap();
        let client = std::os::unix::net::UnixDatagram::unbound().unwrap();
        client
            .send_to_addr(b"STATUS=InnoDB: recovering\n", &addr)
            .unwrap();
        client
            .send_to_addr(b"READY=1\nSTATUS=Taking your SQL requests now...\n", &addr)
            .unwrap();
        assert_eq!(
            n.ready().await.unwrap().as_deref(),
            Some("Taking your SQL requests now...")
        );
    }
}
