//! A tenant's own replica through the proxy: change-data-capture tools (Debezium, Maxwell),
//! `mariadb-binlog --read-from-remote-server`, or a MariaDB replica of their own. The owner holds
//! `REPLICATION SLAVE` and may read its database's binary log (`SHOW BINLOG EVENTS` shows the
//! same), so the replication protocol is relayed: `COM_REGISTER_SLAVE`
//! (<https://mariadb.com/kb/en/com_register_slave/>) as any command, and from
//! `COM_BINLOG_DUMP` (<https://mariadb.com/kb/en/com_binlog_dump/>) on the connection is the
//! stream. Bytes go both ways as they are (events down, a semi-synchronous replica's
//! acknowledgements up) until either side closes; the server ends a connection once its dump is
//! over, and the session ends with it, as directly. A stream cannot move to another server, so
//! a park or a crash ends it, and the replica reconnects from where it was, as from any
//! server's restart; while it streams, the database counts a statement running and so does not
//! sleep.
//!
//! A replica may not take a server id Stratus's own replicas use
//! ([`stratus_core::replication`]): the server would kill theirs as a zombie.

use super::Session;
use crate::Directory;
use crate::error::SqlError;
use crate::relay::RelayError;
use crate::stream::End;
use bytes::BytesMut;
use std::sync::atomic::Ordering;
use std::time::Duration;
use stratus_core::replication::{STRATUS_REPLICA_IDS, reserved_replica_id};
use stratus_wire::command::{COM_BINLOG_DUMP, COM_REGISTER_SLAVE};
use stratus_wire::packet::{self, HEADER_LEN};
use stratus_wire::tracker::Expect;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The server id a `COM_REGISTER_SLAVE` or `COM_BINLOG_DUMP` payload names.
fn server_id(cmd: u8, payload: &[u8]) -> Option<u32> {
    let at = match cmd {
        COM_REGISTER_SLAVE => 1,
        // Position (4 bytes) and flags (2) first.
        COM_BINLOG_DUMP => 7,
        _ => return None,
    };
    let b = payload.get(at..at + 4)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// The refusal of a command whose server id is Stratus's, or that is too short to name one.
fn refusal(cmd: u8, payload: &[u8]) -> Option<SqlError> {
    match server_id(cmd, payload) {
        None => Some(SqlError::malformed_packet()),
        Some(id) if reserved_replica_id(id) => Some(SqlError::not_allowed(&format!(
            "server id {id} (Stratus's replicas use {} to {})",
            STRATUS_REPLICA_IDS.start(),
            STRATUS_REPLICA_IDS.end()
        ))),
        Some(_) => None,
    }
}

impl<D: Directory> Session<D> {
    /// `COM_REGISTER_SLAVE`: relayed; its connection then carries the registration (`SHOW
    /// SLAVE HOSTS` lists it until it closes), so it is never given to another session.
    pub(super) async fn register_replica(
        &mut self,
        raw: &[u8],
        lp: &packet::Logical,
        seq: u8,
    ) -> Result<(), End> {
        if let Some(e) = refusal(COM_REGISTER_SLAVE, &packet::payload(raw, lp)) {
            return self.client.send(seq, &e.packet()).await;
        }
        let r = self.forward(raw, seq, Expect::One).await?;
        if r.error.is_none()
            && let Some(b) = self.backend.as_mut()
        {
            b.replica = true;
        }
        Ok(())
    }

    /// `COM_BINLOG_DUMP`: relays the stream until either side closes, and the session ends
    /// then (`End::Client`). `Ok` when it was refused before the dump began (by the proxy or
    /// the server), and the session goes on.
    pub(super) async fn binlog_dump(
        &mut self,
        raw: &[u8],
        lp: &packet::Logical,
        seq: u8,
    ) -> Result<(), End> {
        if let Some(e) = refusal(COM_BINLOG_DUMP, &packet::payload(raw, lp)) {
            return self.client.send(seq, &e.packet()).await;
        }
        if let Err(e) = self.ensure_backend().await {
            return self.client.send(seq, &e.packet()).await;
        }
        self.share.running(&self.activity, true);
        self.activity.statements.fetch_add(1, Ordering::Relaxed);
        let started = self.start_dump(raw).await;
        if let Ok(Dump::Refused(err)) = &started {
            self.share.running(&self.activity, false);
            self.activity.errors.fetch_add(1, Ordering::Relaxed);
            return self.client.write(err).await;
        }
        let (link, proxy) = (self.link.clone(), self.proxy.clone());
        let streamed = match started {
            Ok(Dump::Failed(err)) => {
                self.activity.errors.fetch_add(1, Ordering::Relaxed);
                self.client
                    .write(&err)
                    .await
                    .map_err(|_| RelayError::Client)
            }
            // Until either side closes, or the session is killed, or the proxy shuts down
            // (the session's own wake-up is held by its command loop: looked at each second).
            Ok(_) => tokio::select! {
                r = self.stream_replication() => r,
                () = ended(&link, &proxy) => Err(RelayError::Client),
            },
            Err(e) => Err(e),
        };
        self.share.running(&self.activity, false);
        if let Err(e) = streamed {
            tracing::debug!(db = %self.service, "replication stream ended: {e:?}");
        }
        // The server closes its side once the dump ends; the connection serves no one else.
        self.drop_backend();
        self.report_state();
        // Whichever side closed first, the stream is over and so is the connection, as
        // directly.
        Err(End::Client)
    }

    /// Sends the dump request and reads the server's first packet. Refused before the dump
    /// began (no `REPLICATION SLAVE`, an expired password), the server goes on reading commands
    /// on that connection, so the session goes on as after any error. Otherwise the server is
    /// in the dump, reads nothing but acknowledgements from then on, and closes the connection
    /// when it ends (an error such as an unknown file ends it at once), so what the client
    /// sends can be passed on unread.
    async fn start_dump(&mut self, raw: &[u8]) -> Result<Dump, RelayError> {
        let Some(b) = self.backend.as_mut() else {
            return Err(RelayError::LostBeforeAnswer);
        };
        b.write(raw)
            .await
            .map_err(|_| RelayError::LostBeforeAnswer)?;
        let total = loop {
            if let Some(total) = packet::complete(&b.buf) {
                break total;
            }
            b.fill().await.map_err(|_| RelayError::LostBeforeAnswer)?;
        };
        if b.buf.get(HEADER_LEN) == Some(&0xff) {
            let code = b
                .buf
                .get(HEADER_LEN + 1..HEADER_LEN + 3)
                .map(|c| u16::from_le_bytes([c[0], c[1]]));
            let err = b.buf.split_to(total).to_vec();
            return Ok(match code {
                Some(ER_SPECIFIC_ACCESS_DENIED | ER_MUST_CHANGE_PASSWORD) => Dump::Refused(err),
                _ => Dump::Failed(err),
            });
        }
        Ok(Dump::Streaming)
    }

    /// Copies bytes both ways until one side closes: `Ok` when the server did. A client that
    /// takes nothing for its session's `net_write_timeout` is cut off, as the server cuts off
    /// a replica it cannot write to (which, through the proxy, would only see the proxy stop
    /// reading, and end its side while the proxy still waited on the client).
    async fn stream_replication(&mut self) -> Result<(), RelayError> {
        let stalled = self.timeout_variable("net_write_timeout", DEFAULT_NET_WRITE_TIMEOUT_SECS);
        let Some(b) = self.backend.as_mut() else {
            return Err(RelayError::LostBeforeAnswer);
        };
        self.client.streaming();
        // What the client sent after the dump request (a replica's first acknowledgements).
        let early = self.client.buf.split();
        if !early.is_empty() {
            b.write(&early).await.map_err(|_| RelayError::LostMidway)?;
        }
        let mut down = std::mem::take(&mut b.buf);
        let mut up = BytesMut::with_capacity(HEADER_LEN * 64);
        loop {
            // Each write must make progress within the timeout, as each of the server's must.
            let mut sent = 0;
            while sent < down.len() {
                match tokio::time::timeout(stalled, self.client.stream.write(&down[sent..])).await {
                    Ok(Ok(n)) if n > 0 => sent += n,
                    _ => return Err(RelayError::Client),
                }
            }
            if !down.is_empty() {
                match tokio::time::timeout(stalled, self.client.stream.flush()).await {
                    Ok(Ok(())) => down.clear(),
                    _ => return Err(RelayError::Client),
                }
            }
            crate::stream::make_room(&mut down, crate::relay::STREAM_CHUNK);
            tokio::select! {
                r = b.stream.read_buf(&mut down) => match r {
                    Ok(n) if n > 0 => {}
                    _ => return Ok(()),
                },
                r = self.client.stream.read_buf(&mut up) => match r {
                    Ok(n) if n > 0 => {
                        b.write(&up).await.map_err(|_| RelayError::LostMidway)?;
                        up.clear();
                    }
                    _ => return Err(RelayError::Client),
                },
            }
        }
    }
}

/// The server's default `net_write_timeout`
/// (<https://mariadb.com/kb/en/server-system-variables/#net_write_timeout>).
const DEFAULT_NET_WRITE_TIMEOUT_SECS: u64 = 60;

/// `check_global_access` refused the dump, or the account must change its password first:
/// the server reads commands again after these.
const ER_SPECIFIC_ACCESS_DENIED: u16 = 1227;
const ER_MUST_CHANGE_PASSWORD: u16 = 1820;

/// How a server took a dump request.
enum Dump {
    /// Refused before the dump began: its error packet, for the client.
    Refused(Vec<u8>),
    /// The dump began and ended at once with this error; the server closes the connection.
    Failed(Vec<u8>),
    Streaming,
}

/// Resolves once the session is killed or the proxy shuts down.
async fn ended<D: Directory>(link: &crate::SessionLink, proxy: &crate::Proxy<D>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        if link.killed.any() || proxy.shutting_down.load(Ordering::Relaxed) {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_ids_stratus_uses_are_refused_and_short_packets_are_malformed() {
        let dump = |id: u32| {
            let mut p = vec![COM_BINLOG_DUMP, 4, 0, 0, 0, 0, 0];
            p.extend_from_slice(&id.to_le_bytes());
            p.extend_from_slice(b"mariadb-bin.000001");
            p
        };
        assert!(refusal(COM_BINLOG_DUMP, &dump(42)).is_none());
        assert!(
            refusal(COM_BINLOG_DUMP, &dump(0)).is_none(),
            "mariadb-binlog's"
        );
        for id in [0x7000_0000, 0x7000_0002, 0x7fff_fffe, 0x7fff_ffff] {
            assert!(refusal(COM_BINLOG_DUMP, &dump(id)).is_some(), "{id:#x}");
        }
        let mut register = vec![COM_REGISTER_SLAVE];
        register.extend_from_slice(&0x7000_0004u32.to_le_bytes());
        assert!(refusal(COM_REGISTER_SLAVE, &register).is_some());
        register[1..5].copy_from_slice(&7u32.to_le_bytes());
        assert!(refusal(COM_REGISTER_SLAVE, &register).is_none());
        assert!(refusal(COM_BINLOG_DUMP, &[COM_BINLOG_DUMP, 4, 0]).is_some());
    }
}
