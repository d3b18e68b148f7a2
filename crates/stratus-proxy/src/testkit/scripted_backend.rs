//! A scripted MariaDB server, in the same process as the proxy under test: it greets, checks the
//! native-password login as a server does, answers `COM_QUERY` from a script (OK, result sets,
//! errors), `COM_CHANGE_USER`, `COM_RESET_CONNECTION`, `COM_PING` and prepared statements
//! without parameters or columns, and goes away on cue:
//! without answering a statement, partway through an answer, or with every connection at once
//! while they sit idle. It keeps the transaction status flags a server would send, and a log of
//! every connection and statement, which is how tests see what the proxy replayed.

use super::net;
use crate::session::BACKEND_TRACKING;
use std::sync::{Arc, Mutex, MutexGuard};
use stratus_core::Endpoint;
use stratus_wire::auth::{self, NATIVE_PLUGIN};
use stratus_wire::caps;
use stratus_wire::command::{
    COM_CHANGE_USER, COM_PING, COM_QUERY, COM_QUIT, COM_RESET_CONNECTION, COM_STMT_CLOSE,
    COM_STMT_EXECUTE, COM_STMT_PREPARE, COM_STMT_RESET, COM_STMT_SEND_LONG_DATA,
};
use stratus_wire::handshake::{ChangeUser, Greeting, HandshakeResponse};
use stratus_wire::lenenc::put_lenenc_bytes;
use stratus_wire::packet;
use stratus_wire::response::{self, OkPacket};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::watch;

/// The one account the server knows: the proxy logs in as the client's user.
const USER: &[u8] = super::USER.as_bytes();

/// What a statement gets.
#[derive(Debug, Clone)]
pub(crate) enum Reply {
    Ok {
        affected: u64,
        warnings: u16,
    },
    Rows {
        columns: Vec<String>,
        rows: Vec<Vec<Option<String>>>,
    },
    Err {
        code: u16,
        message: String,
    },
    /// The connection closes without an answer: the server died with the statement running.
    Drop,
    /// Every connection closes without an answer: the whole server died with the statement
    /// running (what `kill -9` of `mariadbd` does to every session at once).
    Crash,
    /// `answer`, once `gate` gives a permit: a statement that waits (for a lock, say) until
    /// the test lets it go.
    Held {
        gate: Arc<tokio::sync::Semaphore>,
        answer: Box<Reply>,
    },
    /// The first `packets` packets of `answer` are sent, then the connection closes.
    Cut {
        packets: usize,
        answer: Box<Reply>,
    },
}

impl Reply {
    pub(crate) fn ok() -> Self {
        Reply::Ok {
            affected: 0,
            warnings: 0,
        }
    }

    /// Success with notes or warnings (`DROP ... IF EXISTS` of nothing, say).
    pub(crate) fn warned(warnings: u16) -> Self {
        Reply::Ok {
            affected: 0,
            warnings,
        }
    }

    pub(crate) fn affected(n: u64) -> Self {
        Reply::Ok {
            affected: n,
            warnings: 0,
        }
    }

    pub(crate) fn rows(columns: &[&str], rows: &[&[&str]]) -> Self {
        Reply::Rows {
            columns: columns.iter().map(|c| (*c).to_owned()).collect(),
            rows: rows
                .iter()
                .map(|r| r.iter().map(|v| Some((*v).to_owned())).collect())
                .collect(),
        }
    }

    /// The answer's packets (payloads) as a server sends them on a connection with `caps`,
    /// its status flags being `status` after the statement.
    pub(crate) fn packets(&self, caps: u64, status: u16) -> Vec<Vec<u8>> {
        match self {
            Reply::Ok { affected, warnings } => vec![
                OkPacket {
                    header: 0,
                    affected_rows: *affected,
                    last_insert_id: 0,
                    status,
                    warnings: *warnings,
                    info: &[],
                    session_state: &[],
                }
                .encode(caps),
            ],
            Reply::Err { code, message } => vec![response::err(*code, "HY000", message)],
            Reply::Rows { columns, rows } => {
                let deprecate_eof = caps & caps::DEPRECATE_EOF != 0;
                let mut out = vec![vec![u8::try_from(columns.len()).expect("few columns")]];
                out.extend(columns.iter().map(|c| column_definition(c)));
                if !deprecate_eof {
                    out.push(response::eof(status));
                }
                for row in rows {
                    let mut p = Vec::new();
                    for v in row {
                        match v {
                            Some(v) => put_lenenc_bytes(&mut p, v.as_bytes()),
                            None => p.push(0xfb),
                        }
                    }
                    out.push(p);
                }
                out.push(if deprecate_eof {
                    OkPacket {
                        header: 0xfe,
                        affected_rows: 0,
                        last_insert_id: 0,
                        status,
                        warnings: 0,
                        info: &[],
                        session_state: &[],
                    }
                    .encode(caps)
                } else {
                    response::eof(status)
                });
                out
            }
            Reply::Cut { answer, .. } | Reply::Held { answer, .. } => answer.packets(caps, status),
            Reply::Drop | Reply::Crash => Vec::new(),
        }
    }
}

/// A text column of no table.
fn column_definition(name: &str) -> Vec<u8> {
    let mut p = Vec::new();
    for field in [&b"def"[..], b"", b"", b"", name.as_bytes(), name.as_bytes()] {
        put_lenenc_bytes(&mut p, field);
    }
    p.push(0x0c);
    p.extend_from_slice(&45u16.to_le_bytes()); // utf8mb4
    p.extend_from_slice(&1024u32.to_le_bytes());
    p.push(0xfd); // VAR_STRING
    p.extend_from_slice(&0u16.to_le_bytes());
    p.extend_from_slice(&[0, 0, 0]); // decimals, filler
    p
}

/// A statement as the script sees it: on which connection (numbered from 1 in the order the
/// server accepted them) and its text.
pub(crate) struct Query<'a> {
    pub(crate) conn: u32,
    pub(crate) sql: &'a str,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Event {
    Connected(u32),
    Query(u32, String),
    ChangeUser(u32),
    Reset(u32),
    /// `COM_STMT_PREPARE` of this text (every statement has no parameters and no columns).
    Prepared(u32, String),
    /// `COM_STMT_SEND_LONG_DATA` (kept by a server until the statement's execute).
    LongData(u32),
    /// `COM_STMT_EXECUTE`, answered OK.
    Executed(u32),
    /// The server's end of the connection is gone.
    Closed(u32),
}

type Script = dyn Fn(&Query<'_>) -> Reply + Send + Sync;

struct Shared {
    script: Box<Script>,
    stage2: [u8; 20],
    log: watch::Sender<Vec<Event>>,
    /// Bumped to close every open connection.
    kill: watch::Sender<u64>,
    /// What a new connection gets.
    accepting: Mutex<Accepting>,
}

#[derive(Debug, Clone)]
enum Accepting {
    Greet,
    /// An error in place of the greeting, as a server at its connection limit answers.
    Refuse {
        code: u16,
        message: String,
    },
    /// Nothing, ever: a server stuck while starting.
    Silence,
}

pub(crate) struct ScriptedBackend {
    pub(crate) addr: Endpoint,
    shared: Arc<Shared>,
}

impl ScriptedBackend {
    /// Starts listening; `script` answers every statement but the proxy's session setup
    /// (`BACKEND_TRACKING`), which gets OK.
    pub(crate) fn start(
        password: &str,
        script: impl Fn(&Query<'_>) -> Reply + Send + Sync + 'static,
    ) -> Self {
        let (addr, mut accept) = net::listen();
        let shared = Arc::new(Shared {
            script: Box::new(script),
            stage2: auth::stage2_of(&auth::stage1_of(password.as_bytes())),
            log: watch::Sender::new(Vec::new()),
            kill: watch::Sender::new(0),
            accepting: Mutex::new(Accepting::Greet),
        });
        let s = shared.clone();
        tokio::spawn(async move {
            let mut n = 0;
            while let Some(stream) = accept.recv().await {
                n += 1;
                s.log.send_modify(|l| l.push(Event::Connected(n)));
                let s = s.clone();
                tokio::spawn(async move {
                    serve(s.clone(), n, stream).await;
                    s.log.send_modify(|l| l.push(Event::Closed(n)));
                });
            }
        });
        Self { addr, shared }
    }

    /// Closes every open connection, as a server that crashed or was stopped.
    pub(crate) fn drop_connections(&self) {
        self.shared.kill.send_modify(|k| *k += 1);
    }

    /// Refuses every connection from now on, as when nothing listens any more.
    pub(crate) fn refuse(&self) {
        net::unlisten(&self.addr);
    }

    /// Accepts new connections but never greets them, as a server stuck while starting.
    pub(crate) fn go_silent(&self) {
        *self.shared.accepting() = Accepting::Silence;
    }

    /// Greets new connections again (after `go_silent` or `refuse_with`).
    pub(crate) fn accept(&self) {
        *self.shared.accepting() = Accepting::Greet;
    }

    /// Answers new connections with an error instead of a greeting.
    pub(crate) fn refuse_with(&self, code: u16, message: &str) {
        *self.shared.accepting() = Accepting::Refuse {
            code,
            message: message.to_owned(),
        };
    }

    pub(crate) fn log(&self) -> Vec<Event> {
        self.shared.log.borrow().clone()
    }

    /// The statements connection `conn` received, in order.
    pub(crate) fn queries(&self, conn: u32) -> Vec<String> {
        self.log()
            .into_iter()
            .filter_map(|e| match e {
                Event::Query(c, sql) if c == conn => Some(sql),
                _ => None,
            })
            .collect()
    }

    pub(crate) fn connections(&self) -> u32 {
        self.log()
            .iter()
            .filter(|e| matches!(e, Event::Connected(_)))
            .count() as u32
    }

    /// Waits until the log shows `event`.
    pub(crate) async fn seen(&self, event: Event) {
        let mut log = self.shared.log.subscribe();
        let waited = log.wait_for(|l| l.contains(&event));
        tokio::time::timeout(super::WITHIN, waited)
            .await
            .unwrap_or_else(|_| panic!("the backend never saw {event:?}; it saw {:?}", self.log()))
            .expect("the backend's log lives as long as the backend");
    }
}

impl Shared {
    fn accepting(&self) -> MutexGuard<'_, Accepting> {
        self.accepting.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for ScriptedBackend {
    fn drop(&mut self) {
        net::unlisten(&self.addr);
    }
}

/// The greeting's scramble: printable and NUL-free, like a server's.
const SCRAMBLE: [u8; 20] = *b"abcdefghijklmnopqrst";

async fn serve(shared: Arc<Shared>, conn: u32, mut s: DuplexStream) {
    let mut kill = shared.kill.subscribe();
    kill.borrow_and_update();
    let accepting = shared.accepting().clone();
    match accepting {
        Accepting::Greet => {}
        Accepting::Refuse { code, message } => {
            // In place of the greeting, so with no SQL state, as MariaDB sends it.
            let _ = send(&mut s, 0, &[response::err(code, "", &message)]).await;
            return;
        }
        Accepting::Silence => {
            let _ = kill.changed().await;
            return;
        }
    }
    let greeting = Greeting {
        server_version: b"11.4.0-MariaDB-scripted".to_vec(),
        connection_id: conn,
        scramble: SCRAMBLE,
        capabilities: caps::PROXY_OFFERS,
        charset: 45,
        status: caps::STATUS_AUTOCOMMIT,
        auth_plugin: NATIVE_PLUGIN.as_bytes().to_vec(),
    };
    if send(&mut s, 0, &[greeting.encode()]).await.is_err() {
        return;
    }
    let Some((_, login)) = read(&mut s).await else {
        return;
    };
    let Ok(login) = HandshakeResponse::decode(&login) else {
        return;
    };
    let caps = login.capabilities;
    let answer = if login.user == USER
        && auth::verify(&shared.stage2, &SCRAMBLE, &login.auth_response).is_some()
    {
        response::ok(caps::STATUS_AUTOCOMMIT, 0, caps)
    } else {
        response::err(1045, "28000", "Access denied")
    };
    if send(&mut s, 2, &[answer]).await.is_err() {
        return;
    }
    let mut in_trans = false;
    let mut prepared = 0u32;
    loop {
        let payload = tokio::select! {
            biased;
            _ = kill.changed() => return,
            p = read(&mut s) => match p {
                Some((_, p)) => p,
                None => return,
            },
        };
        let status = |in_trans: bool| {
            caps::STATUS_AUTOCOMMIT | if in_trans { caps::STATUS_IN_TRANS } else { 0 }
        };
        let answer = match payload.first().copied() {
            Some(COM_QUERY) => {
                let sql = String::from_utf8_lossy(&payload[1..]).into_owned();
                shared
                    .log
                    .send_modify(|l| l.push(Event::Query(conn, sql.clone())));
                let reply = if sql == BACKEND_TRACKING {
                    Reply::ok()
                } else {
                    (shared.script)(&Query { conn, sql: &sql })
                };
                if !matches!(reply, Reply::Err { .. }) {
                    in_trans = transaction_after(&sql, in_trans);
                }
                let packets = reply.packets(caps, status(in_trans));
                match reply {
                    Reply::Drop => return,
                    Reply::Crash => {
                        shared.kill.send_modify(|k| *k += 1);
                        return;
                    }
                    Reply::Held { gate, .. } => {
                        let _ = gate.acquire().await.map(|p| p.forget());
                        packets
                    }
                    Reply::Cut { packets: n, .. } => {
                        let _ = send(&mut s, 1, &packets[..n.min(packets.len())]).await;
                        return;
                    }
                    _ => packets,
                }
            }
            Some(COM_CHANGE_USER) => {
                shared.log.send_modify(|l| l.push(Event::ChangeUser(conn)));
                in_trans = false;
                match ChangeUser::decode(&payload[1..], caps) {
                    Ok(c)
                        if c.user == USER
                            && auth::verify(&shared.stage2, &SCRAMBLE, &c.auth_response)
                                .is_some() =>
                    {
                        vec![response::ok(status(false), 0, caps)]
                    }
                    _ => vec![response::err(1045, "28000", "Access denied")],
                }
            }
            Some(COM_RESET_CONNECTION) => {
                shared.log.send_modify(|l| l.push(Event::Reset(conn)));
                in_trans = false;
                vec![response::ok(status(false), 0, caps)]
            }
            Some(COM_PING) => vec![response::ok(status(in_trans), 0, caps)],
            Some(COM_STMT_PREPARE) => {
                let sql = String::from_utf8_lossy(&payload[1..]).into_owned();
                shared
                    .log
                    .send_modify(|l| l.push(Event::Prepared(conn, sql)));
                prepared += 1;
                let mut ok = vec![0x00];
                ok.extend_from_slice(&prepared.to_le_bytes());
                ok.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0]); // columns, params, filler, warnings
                vec![ok]
            }
            Some(COM_STMT_SEND_LONG_DATA) => {
                shared.log.send_modify(|l| l.push(Event::LongData(conn)));
                continue;
            }
            Some(COM_STMT_CLOSE) => continue,
            Some(COM_STMT_EXECUTE) => {
                shared.log.send_modify(|l| l.push(Event::Executed(conn)));
                vec![response::ok(status(in_trans), 0, caps)]
            }
            Some(COM_STMT_RESET) => vec![response::ok(status(in_trans), 0, caps)],
            Some(COM_QUIT) | None => return,
            Some(_) => vec![response::err(1047, "08S01", "Unknown command")],
        };
        if send(&mut s, 1, &answer).await.is_err() {
            return;
        }
    }
}

/// Whether a transaction is open after `sql` succeeded (explicit transactions only: the
/// scripted server runs with autocommit on).
fn transaction_after(sql: &str, before: bool) -> bool {
    let word = sql.split_whitespace().next().unwrap_or_default();
    if word.eq_ignore_ascii_case("BEGIN")
        || sql.to_ascii_uppercase().starts_with("START TRANSACTION")
    {
        true
    } else if word.eq_ignore_ascii_case("COMMIT") || word.eq_ignore_ascii_case("ROLLBACK") {
        false
    } else {
        before
    }
}

/// Reads one packet: its sequence id and payload; `None` at the end of the stream.
pub(crate) async fn read(s: &mut DuplexStream) -> Option<(u8, Vec<u8>)> {
    let mut header = [0u8; 4];
    s.read_exact(&mut header).await.ok()?;
    let len = usize::from(header[0]) | usize::from(header[1]) << 8 | usize::from(header[2]) << 16;
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload).await.ok()?;
    Some((header[3], payload))
}

/// Sends payloads as consecutive packets from sequence id `seq`, in one write.
pub(crate) async fn send(
    s: &mut DuplexStream,
    seq: u8,
    payloads: &[Vec<u8>],
) -> std::io::Result<()> {
    let mut out = Vec::new();
    let mut seq = seq;
    for p in payloads {
        packet::write(&mut out, &mut seq, p);
    }
    s.write_all(&out).await
}
