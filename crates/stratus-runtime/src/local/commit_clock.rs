//! Stratus as a semi-synchronous replica of each local server, recording when every
//! transaction committed ([`crate::commit_times`]).
//!
//! Protocol: `COM_BINLOG_DUMP` (<https://mariadb.com/kb/en/com_binlog_dump/>) after announcing
//! a checksum-aware, GTID-aware, semi-synchronous replica; each event that asks for it is
//! acknowledged with the semi-synchronous reply (`0xEF`, position, file name,
//! <https://mariadb.com/kb/en/semisynchronous-replication/>), once its time is written. Events
//! arrive decrypted (the server decrypts its binary log for replicas); only their headers and
//! a few fixed fields are read.

use crate::commit_times::{self, BinlogPos, Commit, Kind, SUFFIX};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;
use stratus_wire::caps;
use stratus_wire::handshake::{Greeting, HandshakeResponse};
use stratus_wire::packet;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// Connections made so far, for their replica server ids (`replica_id`).
static CONNECTIONS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// A server id for one replica connection: even, so no database's (always odd,
/// `config::server_id`) is it, below the restore's (`0x7ffffffe`), new for every connection, and
/// in the range a tenant's replica may not take (`stratus_core::replication`).
/// A dump request with the id of a dump thread still running makes the server kill that thread
/// as a zombie, and with semi-synchronous replication on, MariaDB 10.11 can deadlock there
/// (`kill_zombie_dump_threads` waits in `Ack_receiver::remove_slave` while holding the old
/// thread's lock), which later hangs its shutdown. A reconnecting clock (or a second `stratus
/// up` adopting the server while the first one's connection is still open) never reuses an id.
fn replica_id() -> u32 {
    let n = CONNECTIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    0x7000_0000 | (std::process::id().wrapping_mul(0x1_0000).wrapping_add(n) << 1) & 0x07ff_fffe
}

const COM_QUERY: u8 = 0x03;
const COM_BINLOG_DUMP: u8 = 0x12;
const ROTATE_EVENT: u8 = 4;
const QUERY_EVENT: u8 = 2;
const XID_EVENT: u8 = 16;
const XA_PREPARE_EVENT: u8 = 38;
const GTID_EVENT: u8 = 162;
/// `FL_STANDALONE` of a GTID event: the group is one statement, ended by its query event.
const GTID_STANDALONE: u8 = 1;
const SEMI_SYNC_MAGIC: u8 = 0xef;
const HEADER: usize = 19;

#[derive(Debug, thiserror::Error)]
enum ClockError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("server: {code} {message}")]
    Server { code: u16, message: String },
    #[error("protocol: {0}")]
    Protocol(&'static str),
}

/// Follows the server at `socket` until `gone` resolves (its process exited), reconnecting
/// after a lost connection; times go beside its binary log in `binlog_dir`. `attached` is
/// sent once the server streams to it, from when on it waits for its acknowledgements.
pub(super) async fn follow(
    name: String,
    socket: PathBuf,
    user: String,
    binlog_dir: PathBuf,
    attached: tokio::sync::oneshot::Sender<()>,
    gone: impl std::future::Future<Output = ()>,
) {
    let run = async {
        let mut delay = Duration::from_millis(50);
        let mut attached = Some(attached);
        let mut resume = true;
        loop {
            match session(&socket, &user, &binlog_dir, &mut attached, resume).await {
                Ok(()) => {
                    delay = Duration::from_millis(50);
                    resume = true;
                }
                // ER_MASTER_FATAL_ERROR_READING_BINLOG: the file asked for is not in its index.
                Err(e @ ClockError::Server { code: 1236, .. }) if resume => {
                    // The server cannot stream from where the times stop: follow from its end
                    // rather than never again; what committed in between has no times.
                    tracing::warn!(db = %name, error = %e, "commit clock: cannot resume where its times stop; following from the end of the binary log");
                    resume = false;
                    continue;
                }
                Err(e) => {
                    tracing::debug!(db = %name, error = %e, "commit clock: connection lost");
                    resume = true;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
            }
            tokio::time::sleep(delay).await;
        }
    };
    tokio::select! {
        () = run => {}
        () = gone => {}
    }
}

/// Where to start: right after the last line recorded, so that what was committed while no
/// replica was connected is caught up (its times then bounds), with that line's lower bound;
/// `None` when there is none or its log is gone.
fn resume_point(dir: &Path) -> Option<(BinlogPos, i64)> {
    let (file, last) = commit_times::last(dir)?;
    dir.join(&file).exists().then(|| {
        (
            BinlogPos {
                file,
                pos: last.end,
            },
            last.not_before_us(),
        )
    })
}

struct Conn {
    s: UnixStream,
    buf: bytes::BytesMut,
}

impl Conn {
    async fn read(&mut self) -> Result<Vec<u8>, ClockError> {
        loop {
            if let Ok(Some(lp)) = packet::logical(&self.buf, usize::MAX) {
                let p = packet::payload(&self.buf, &lp).into_owned();
                let _ = self.buf.split_to(lp.consumed);
                return Ok(p);
            }
            if self.s.read_buf(&mut self.buf).await? == 0 {
                return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
            }
        }
    }

    async fn write(&mut self, seq: u8, payload: &[u8]) -> Result<(), ClockError> {
        let mut out = Vec::with_capacity(payload.len() + 4);
        packet::write(&mut out, &mut { seq }, payload);
        self.s.write_all(&out).await?;
        Ok(())
    }

    async fn ok(&mut self) -> Result<(), ClockError> {
        let p = self.read().await?;
        match p.first() {
            Some(0x00) => Ok(()),
            Some(0xff) => Err(server_error(&p)),
            _ => Err(ClockError::Protocol("expected OK")),
        }
    }

    async fn command(&mut self, command: u8, body: &[u8]) -> Result<(), ClockError> {
        let mut p = Vec::with_capacity(body.len() + 1);
        p.push(command);
        p.extend_from_slice(body);
        self.write(0, &p).await
    }
}

fn server_error(p: &[u8]) -> ClockError {
    let code = p.get(1..3).map_or(0, |b| u16::from_le_bytes([b[0], b[1]]));
    let text = p.get(9..).unwrap_or_default();
    ClockError::Server {
        code,
        message: String::from_utf8_lossy(text).into_owned(),
    }
}

/// Logs in over the socket: Stratus's account authenticates by the socket's peer, so no
/// password goes with it.
async fn login(socket: &Path, user: &str) -> Result<Conn, ClockError> {
    let s = UnixStream::connect(socket).await?;
    let mut c = Conn {
        s,
        buf: bytes::BytesMut::with_capacity(64 * 1024),
    };
    let g = c.read().await?;
    if g.first() == Some(&0xff) {
        return Err(server_error(&g));
    }
    let g = Greeting::decode(&g).map_err(|_| ClockError::Protocol("malformed greeting"))?;
    let want = caps::PROTOCOL_41
        | caps::SECURE_CONNECTION
        | caps::PLUGIN_AUTH
        | caps::LONG_FLAG
        | caps::TRANSACTIONS;
    let response = HandshakeResponse {
        capabilities: want & g.capabilities,
        max_packet: 1 << 30,
        charset: 33,
        user: user.as_bytes().to_vec(),
        auth_response: Vec::new(),
        database: None,
        auth_plugin: Some(g.auth_plugin),
        attributes: None,
    };
    c.write(1, &response.encode()).await?;
    loop {
        let p = c.read().await?;
        match p.first() {
            Some(0x00) => return Ok(c),
            Some(0xff) => return Err(server_error(&p)),
            // An auth switch: the socket plugin needs no data from the client.
            Some(0xfe) => c.write(3, &[]).await?,
            _ => return Err(ClockError::Protocol("unexpected packet during login")),
        }
    }
}

/// The open `.commits` file of the binary log file being received.
struct Times {
    dir: PathBuf,
    log: String,
    file: Option<std::fs::File>,
}

impl Times {
    fn rotate(&mut self, log: String) {
        if log != self.log {
            self.log = log;
            self.file = None;
            self.forget_purged();
        }
    }

    fn append(&mut self, c: &Commit) -> std::io::Result<()> {
        if self.file.is_none() {
            let path = self.dir.join(format!("{}{SUFFIX}", self.log));
            self.file = Some(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            );
        }
        match &mut self.file {
            Some(f) => f.write_all(c.line().as_bytes()),
            None => Ok(()),
        }
    }

    /// Times of binary log files the server has purged go with them (the archive keeps its
    /// own copies).
    fn forget_purged(&self) {
        for (log, path) in commit_times::files(&self.dir) {
            if !self.dir.join(&log).exists() {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

async fn session(
    socket: &Path,
    user: &str,
    dir: &Path,
    attached: &mut Option<tokio::sync::oneshot::Sender<()>>,
    resume: bool,
) -> Result<(), ClockError> {
    let mut c = login(socket, user).await?;
    c.command(
        COM_QUERY,
        b"SET @master_binlog_checksum = @@global.binlog_checksum, \
          @mariadb_slave_capability = 4, @rpl_semi_sync_slave = 1",
    )
    .await?;
    c.ok().await?;
    let (crc, waits) = {
        c.command(
            COM_QUERY,
            b"SELECT @@global.binlog_checksum, @@global.rpl_semi_sync_master_enabled",
        )
        .await?;
        let row = read_text_result(&mut c).await?;
        (
            row.first().is_some_and(|v| v.eq_ignore_ascii_case("CRC32")),
            row.get(1).is_some_and(|v| v == "1"),
        )
    };
    // Everything up to the server's end now was committed while no one followed it.
    let end_now = master_end(&mut c).await?;
    let mut times = Times {
        dir: dir.to_owned(),
        log: end_now.file.clone(),
        file: None,
    };
    let (start, mut floor_us, caught_up_to, mut gap) =
        match resume.then(|| resume_point(dir)).flatten() {
            Some((from, floor)) => (from, floor, Some(end_now), None),
            None => {
                // What ends before here, after the last line (if any), will never have times.
                // Noted once the server answers the dump, so that the time is after the
                // commits of everything it wrote before (the engine commits after the write).
                let floor = commit_times::last(dir).map_or(0, |(_, c)| c.not_before_us());
                // The GTIDs written by then (read after the position, so never short of it):
                // what a restore checks the lines against (`commit_times::covers`).
                c.command(COM_QUERY, b"SELECT @@global.gtid_binlog_pos")
                    .await?;
                let written = read_text_result(&mut c).await?;
                let state = written.first().map(String::as_str).unwrap_or_default();
                let gap = Commit {
                    end: end_now.pos,
                    at_us: 0,
                    gtid: if state.is_empty() { "-" } else { state }.to_owned(),
                    kind: Kind::Gap {
                        not_before_us: floor,
                    },
                };
                (end_now, floor, None, Some(gap))
            }
        };
    times.rotate(start.file.clone());
    let (file, pos) = (start.file, start.pos);
    let mut body = Vec::with_capacity(10 + file.len());
    body.extend_from_slice(&u32::try_from(pos.max(4)).unwrap_or(u32::MAX).to_le_bytes());
    body.extend_from_slice(&0u16.to_le_bytes());
    body.extend_from_slice(&replica_id().to_le_bytes());
    body.extend_from_slice(file.as_bytes());
    c.command(COM_BINLOG_DUMP, &body).await?;
    let mut gtid = String::new();
    let mut standalone = false;
    loop {
        let p = c.read().await?;
        if let Some(mut gap) = gap.take() {
            gap.at_us = now_us();
            times.append(&gap)?;
        }
        if let Some(tx) = attached.take() {
            let _ = tx.send(());
        }
        match p.first() {
            Some(0x00) => {}
            Some(0xff) => return Err(server_error(&p)),
            Some(0xfe) if p.len() < 9 => return Ok(()),
            _ => {
                return Err(ClockError::Protocol(
                    "unexpected packet in the event stream",
                ));
            }
        }
        let (need_ack, ev) = match p.get(1) {
            Some(&SEMI_SYNC_MAGIC) => (p.get(2) == Some(&1), &p[3.min(p.len())..]),
            _ => (false, &p[1..]),
        };
        if ev.len() < HEADER {
            return Err(ClockError::Protocol("short event"));
        }
        let u32_at = |at: usize| u32::from_le_bytes([ev[at], ev[at + 1], ev[at + 2], ev[at + 3]]);
        let (kind, server_id, end) = (ev[4], u32_at(5), u32_at(13));
        let trailer = if crc { 4 } else { 0 };
        let body = ev
            .get(HEADER..ev.len().saturating_sub(trailer))
            .unwrap_or_default();
        let ends_group = match kind {
            ROTATE_EVENT => {
                if body.len() >= 8 {
                    times.rotate(String::from_utf8_lossy(&body[8..]).into_owned());
                }
                false
            }
            GTID_EVENT if body.len() >= 13 => {
                let seq = u64::from_le_bytes(body[..8].try_into().unwrap_or_default());
                let domain = u32::from_le_bytes(body[8..12].try_into().unwrap_or_default());
                gtid = format!("{domain}-{server_id}-{seq}");
                standalone = body[12] & GTID_STANDALONE != 0;
                false
            }
            XID_EVENT | XA_PREPARE_EVENT => true,
            QUERY_EVENT => standalone || query_text(body) == Some(b"COMMIT".as_slice()),
            _ => false,
        };
        if (ends_group || need_ack) && end > 0 && !gtid.is_empty() {
            let here = BinlogPos {
                file: times.log.clone(),
                pos: u64::from(end),
            };
            let caught_up = caught_up_to.as_ref().is_some_and(|to| !to.before(&here));
            let kind = if need_ack {
                // The server waits for it: not committed yet.
                Kind::Exact
            } else if caught_up || waits {
                // Committed while no one followed, or without waiting where the server
                // normally waits (it gave up on a slow clock): some time after the line
                // before it and before now. (Not bounded by the event's own time: any
                // client can set that with `SET timestamp`.)
                Kind::CaughtUp {
                    not_before_us: floor_us,
                }
            } else {
                Kind::Arrival
            };
            let commit = Commit {
                end: u64::from(end),
                at_us: now_us(),
                gtid: std::mem::take(&mut gtid),
                kind,
            };
            floor_us = commit.not_before_us();
            standalone = false;
            if need_ack {
                // Timed already: the server may go on while the line is written.
                ack(&mut c, end, &times.log).await?;
            }
            times.append(&commit)?;
        } else if need_ack {
            ack(&mut c, end, &times.log).await?;
        }
    }
}

/// The semi-synchronous acknowledgement of the event ending at `end` of `log`.
async fn ack(c: &mut Conn, end: u32, log: &str) -> Result<(), ClockError> {
    let mut ack = Vec::with_capacity(9 + log.len());
    ack.push(SEMI_SYNC_MAGIC);
    ack.extend_from_slice(&u64::from(end).to_le_bytes());
    ack.extend_from_slice(log.as_bytes());
    c.write(0, &ack).await
}

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// The statement of a query event: after thread id (4), time (4), schema length (1), error
/// code (2), status-variables length (2), the variables and the NUL-terminated schema.
fn query_text(body: &[u8]) -> Option<&[u8]> {
    let db_len = usize::from(*body.get(8)?);
    let vars = usize::from(u16::from_le_bytes([*body.get(11)?, *body.get(12)?]));
    body.get(13 + vars + db_len + 1..)
}

/// The server's current binary log end (`SHOW MASTER STATUS`).
async fn master_end(c: &mut Conn) -> Result<BinlogPos, ClockError> {
    c.command(COM_QUERY, b"SHOW MASTER STATUS").await?;
    let row = read_text_result(c).await?;
    match (row.first(), row.get(1).and_then(|p| p.parse().ok())) {
        (Some(f), Some(pos)) => Ok(BinlogPos {
            file: f.clone(),
            pos,
        }),
        _ => Err(ClockError::Protocol("the binary log is off")),
    }
}

/// The first row of a text result (its values as strings; NULL as empty), or the error.
async fn read_text_result(c: &mut Conn) -> Result<Vec<String>, ClockError> {
    let first = c.read().await?;
    if first.first() == Some(&0xff) {
        return Err(server_error(&first));
    }
    let columns = usize::from(*first.first().unwrap_or(&0));
    // The column definitions, then their EOF.
    for _ in 0..=columns {
        c.read().await?;
    }
    let mut row = None;
    loop {
        let p = c.read().await?;
        match p.first() {
            Some(0xfe) if p.len() < 9 => return Ok(row.unwrap_or_default()),
            Some(0xff) => return Err(server_error(&p)),
            _ if row.is_none() => row = Some(text_values(&p, columns)),
            _ => {}
        }
    }
}

fn text_values(p: &[u8], columns: usize) -> Vec<String> {
    let mut r = stratus_wire::lenenc::Reader::new(p, "row");
    (0..columns)
        .map(|_| {
            if p.get(r.pos()) == Some(&0xfb) {
                let _ = r.u8();
                String::new()
            } else {
                r.lenenc_bytes()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default()
            }
        })
        .collect()
}

#[cfg(test)]
mod replica_id_tests {
    #[test]
    fn the_clock_takes_its_ids_from_the_range_tenants_may_not_use() {
        for _ in 0..1000 {
            let id = super::replica_id();
            assert!(
                stratus_core::replication::reserved_replica_id(id),
                "{id:#x}"
            );
            assert_eq!(id % 2, 0);
        }
    }
}
