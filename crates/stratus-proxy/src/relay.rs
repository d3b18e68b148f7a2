//! Relaying a backend's answer: the pieces of it that are not the session's own logic. Rewrites
//! of OK packets whose client view differs, the `LOCAL INFILE` hand-over, and noticing that an
//! idle backend connection went away.

use crate::backend::Backend;
use crate::session::SessionState;
use crate::stream::{ClientIo, ClientStream};
use bytes::{Buf, BytesMut};
use stratus_wire::caps;
use stratus_wire::packet::{self, HEADER_LEN};
use stratus_wire::response::{self, Change, OkPacket};
use tokio::io::AsyncWriteExt;

/// Flush a large response to the client once this much is buffered, rather than holding it.
pub(crate) const STREAM_CHUNK: usize = 64 * 1024;

#[derive(Debug)]
pub(crate) enum RelayError {
    /// The backend went away before anything of its answer reached the client.
    LostBeforeAnswer,
    /// It went away midway: the client cannot be answered consistently any more.
    LostMidway,
    Client,
}

/// The part of a response that has been rewritten, for the rare responses with a packet the
/// client must see differently; otherwise empty, and packets go out from the read buffer.
#[derive(Default)]
pub(crate) struct Pending {
    pub(crate) out: Vec<u8>,
    /// `buf[..copied]` is already in `out`.
    pub(crate) copied: usize,
}

impl Pending {
    /// Puts `new` in place of `buf[start..end]`.
    pub(crate) fn replace(&mut self, buf: &[u8], start: usize, end: usize, new: &[u8]) {
        self.out.extend_from_slice(&buf[self.copied..start]);
        self.out.extend_from_slice(new);
        self.copied = end;
    }

    /// Takes `buf[..end]` (with replacements) out of the buffer.
    pub(crate) fn take(&mut self, buf: &mut BytesMut, end: usize) -> Vec<u8> {
        self.out.extend_from_slice(&buf[self.copied..end]);
        buf.advance(end);
        self.copied = 0;
        std::mem::take(&mut self.out)
    }

    /// Sends `buf[..end]` (with replacements) to the client and drops it from the buffer.
    pub(crate) async fn send(
        &mut self,
        client: &mut ClientStream,
        buf: &mut BytesMut,
        end: usize,
        flush: bool,
    ) -> Result<(), RelayError> {
        let bytes: &[u8] = if self.out.is_empty() {
            &buf[..end]
        } else {
            self.out.extend_from_slice(&buf[self.copied..end]);
            &self.out
        };
        client
            .write_all(bytes)
            .await
            .map_err(|_| RelayError::Client)?;
        // The client waits for this: TLS holds records until flushed, and compression holds
        // a large answer's chunks until then too (the rows after them may be slow to come).
        if flush || matches!(client, ClientStream::Compressed(_)) {
            client.flush().await.map_err(|_| RelayError::Client)?;
        }
        buf.advance(end);
        self.out.clear();
        self.copied = 0;
        Ok(())
    }
}

/// Learns the session changes of an OK packet (header included) and, when the client's view
/// of it differs (it tracks less, or not at all), returns the packet to send instead. Also
/// says whether the client touched its own tracking settings.
pub(crate) fn learn_ok(
    state: &mut SessionState,
    client_caps: u64,
    backend_caps: u64,
    packet: &[u8],
) -> (Option<Vec<u8>>, bool) {
    let Some(&seq) = packet.get(3) else {
        return (None, false);
    };
    let Ok(ok) = OkPacket::decode(&packet[HEADER_LEN..], backend_caps) else {
        return (None, false);
    };
    let mut keep: Vec<Change<'_>> = Vec::new();
    let mut dropped = false;
    let mut touched = false;
    if let Ok(changes) = response::changes(ok.session_state) {
        for c in changes {
            let wanted = match c.kind {
                response::TRACK_SYSTEM_VARIABLES => match c.system_variable() {
                    Some((n, v)) => {
                        let name = String::from_utf8_lossy(n);
                        touched |= name.to_ascii_lowercase().starts_with("session_track_");
                        state.variable_changed(&name, &String::from_utf8_lossy(v))
                    }
                    None => false,
                },
                response::TRACK_SCHEMA => {
                    if let Some(s) = c.text() {
                        state.schema =
                            (!s.is_empty()).then(|| String::from_utf8_lossy(s).into_owned());
                    }
                    state.tracking.schema
                }
                response::TRACK_STATE_CHANGE => state.tracking.state_change,
                response::TRACK_TRANSACTION_CHARACTERISTICS | response::TRACK_TRANSACTION_STATE => {
                    state.tracking.transaction_info
                }
                _ => false,
            };
            if wanted {
                keep.push(c);
            } else {
                dropped = true;
            }
        }
    }
    let same_format = client_caps & caps::SESSION_TRACK != 0;
    if same_format && !dropped {
        return (None, touched);
    }
    let block = response::encode_changes(&keep);
    let new = OkPacket {
        session_state: &block,
        ..ok.clone()
    }
    .encode(client_caps);
    let mut out = Vec::with_capacity(new.len() + HEADER_LEN);
    packet::write(&mut out, &mut { seq }, &new);
    (Some(out), touched)
}

/// Relays a local file from the client to the backend, up to and including its empty packet.
pub(crate) async fn forward_infile(
    client: &mut ClientIo,
    b: &mut Backend,
    limit: usize,
) -> Result<(), RelayError> {
    loop {
        let lp = match client.read_reply(limit).await {
            Ok(Some(lp)) => lp,
            _ => return Err(RelayError::Client),
        };
        let chunk = client.buf.split_to(lp.consumed);
        b.write(&chunk).await.map_err(|_| RelayError::LostMidway)?;
        if lp.consumed == HEADER_LEN {
            return Ok(());
        }
    }
}

/// Resolves when an idle backend connection is closed by its server (or sends anything, which
/// an idle server does only to say it is going away). Never resolves without a backend.
pub(crate) async fn idle_backend_closed(backend: Option<&mut Backend>) {
    let Some(b) = backend else {
        return std::future::pending().await;
    };
    loop {
        match b.stream.ready(tokio::io::Interest::READABLE).await {
            Err(_) => return,
            Ok(r) if r.is_read_closed() || r.is_error() => return,
            Ok(_) => {
                // Plain readability here is nearly always left over from reading the last
                // response to its end: clear it without a syscall and wait for the next event.
                // A server that goes away signals it with the peer's close (EPOLLRDHUP).
                let _ = b.stream.try_io(tokio::io::Interest::READABLE, || {
                    Err::<(), _>(std::io::ErrorKind::WouldBlock.into())
                });
            }
        }
    }
}
