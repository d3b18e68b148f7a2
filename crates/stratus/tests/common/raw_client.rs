//! A minimal client that speaks the protocol by hand, for commands no client library in this
//! repository sends: MariaDB's `COM_STMT_BULK_EXECUTE`
//! (<https://mariadb.com/kb/en/com_stmt_bulk_execute/>). The same code talks to the proxy and
//! to a server's own socket, so a test compares the two answers byte for byte where it can.

use std::io::{Read, Write};
use stratus_wire::auth::{scramble_reply, stage1_of};
use stratus_wire::caps;
use stratus_wire::command::{COM_QUERY, COM_STMT_BULK_EXECUTE, COM_STMT_PREPARE};
use stratus_wire::handshake::{Greeting, HandshakeResponse};
use stratus_wire::packet;

pub trait Stream: Read + Write {}
impl<T: Read + Write> Stream for T {}

pub struct RawClient {
    stream: Box<dyn Stream>,
    seq: u8,
    /// The greeting's server version, without the `5.5.5-` that MariaDB 10 puts before it
    /// for old replicas (clients drop it too).
    pub server_version: String,
}

/// A server's answer that ends a command: an OK's affected rows and insert id, or an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Ok { affected: u64, insert_id: u64 },
    Err { code: u16, message: String },
}

/// One parameter of a bulk row, with its indicator.
pub enum Value<'a> {
    Int(i32),
    Text(&'a str),
    Null,
    Default,
}

fn lenenc(b: &[u8]) -> (u64, usize) {
    match b[0] {
        0xfc => (u64::from(u16::from_le_bytes([b[1], b[2]])), 3),
        0xfd => (u64::from_le_bytes([b[1], b[2], b[3], 0, 0, 0, 0, 0]), 4),
        0xfe => (u64::from_le_bytes(b[1..9].try_into().unwrap()), 9),
        n => (u64::from(n), 1),
    }
}

impl RawClient {
    /// Logs in as `user` with `password` and the schema `db`, offering MariaDB's bulk
    /// operations (and not `DEPRECATE_EOF`, so results end with EOF packets).
    pub fn login(stream: impl Stream + 'static, user: &str, password: &str, db: &str) -> Self {
        match Self::try_login(stream, user, password, db, 0) {
            Ok(c) => c,
            Err(e) => panic!("logged in: {e:?}"),
        }
    }

    /// [`Self::login`], asking for `more` capabilities too; the server's error, if it refuses.
    pub fn try_login(
        stream: impl Stream + 'static,
        user: &str,
        password: &str,
        db: &str,
        more: u64,
    ) -> Result<Self, Answer> {
        let mut c = Self {
            stream: Box::new(stream),
            seq: 0,
            server_version: String::new(),
        };
        let greeting = Greeting::decode(&c.read()).expect("a greeting");
        let version = String::from_utf8_lossy(&greeting.server_version).into_owned();
        c.server_version = version
            .strip_prefix("5.5.5-")
            .unwrap_or(&version)
            .to_owned();
        assert!(
            greeting.capabilities & caps::MARIADB_STMT_BULK_OPERATIONS != 0,
            "bulk operations offered"
        );
        let response = HandshakeResponse {
            capabilities: caps::PROTOCOL_41
                | caps::SECURE_CONNECTION
                | caps::PLUGIN_AUTH
                | caps::TRANSACTIONS
                | caps::MULTI_RESULTS
                | caps::CONNECT_WITH_DB
                | caps::MARIADB_STMT_BULK_OPERATIONS
                | more,
            max_packet: 1 << 24,
            charset: 45,
            user: user.as_bytes().to_vec(),
            auth_response: scramble_reply(&stage1_of(password.as_bytes()), &greeting.scramble)
                .to_vec(),
            database: Some(db.as_bytes().to_vec()),
            auth_plugin: Some(b"mysql_native_password".to_vec()),
            attributes: None,
        };
        c.write(&response.encode());
        match c.answer() {
            Answer::Ok { .. } => Ok(c),
            refused => Err(refused),
        }
    }

    fn read(&mut self) -> Vec<u8> {
        let mut header = [0u8; 4];
        self.stream.read_exact(&mut header).expect("a packet");
        let len =
            usize::from(header[0]) | usize::from(header[1]) << 8 | usize::from(header[2]) << 16;
        self.seq = header[3].wrapping_add(1);
        let mut payload = vec![0; len];
        self.stream.read_exact(&mut payload).expect("its payload");
        payload
    }

    fn write(&mut self, payload: &[u8]) {
        let mut out = Vec::new();
        packet::write(&mut out, &mut self.seq, payload);
        self.stream.write_all(&out).unwrap();
    }

    fn command(&mut self, payload: &[u8]) {
        self.seq = 0;
        self.write(payload);
    }

    fn answer(&mut self) -> Answer {
        let p = self.read();
        match p[0] {
            0x00 => {
                let (affected, n) = lenenc(&p[1..]);
                let (insert_id, _) = lenenc(&p[1 + n..]);
                Answer::Ok {
                    affected,
                    insert_id,
                }
            }
            // An EOF ends a command too (`COM_SET_OPTION`'s answer, without `DEPRECATE_EOF`).
            0xfe if p.len() < 9 => Answer::Ok {
                affected: 0,
                insert_id: 0,
            },
            0xff => Answer::Err {
                code: u16::from_le_bytes([p[1], p[2]]),
                message: String::from_utf8_lossy(&p[9..]).into_owned(),
            },
            other => panic!("not an OK or an error: {other:#x}"),
        }
    }

    /// The answer to the next statement of a multi-statement query.
    pub fn next_answer(&mut self) -> Answer {
        self.answer()
    }

    /// Sends a command as given; its answer (an OK or an error).
    pub fn raw(&mut self, payload: &[u8]) -> Answer {
        self.raw_numbered(0, payload)
    }

    /// Sends a command and reads nothing of its answer.
    pub fn send(&mut self, payload: &[u8]) {
        self.command(payload);
    }

    /// Sends a command with its first packet numbered `seq` (a command starts at 0); its answer.
    pub fn raw_numbered(&mut self, seq: u8, payload: &[u8]) -> Answer {
        self.seq = seq;
        self.write(payload);
        self.answer()
    }

    /// Whether the other end has closed the connection: a read finds its end (or a reset)
    /// rather than a packet, or than the stream's read timeout.
    pub fn closed(&mut self) -> bool {
        use std::io::ErrorKind::{TimedOut, WouldBlock};
        let mut byte = [0u8; 1];
        match self.stream.read(&mut byte) {
            Ok(n) => n == 0,
            Err(e) => !matches!(e.kind(), WouldBlock | TimedOut),
        }
    }

    /// Runs a statement that returns no rows.
    pub fn exec(&mut self, sql: &str) -> Answer {
        self.command(&[&[COM_QUERY], sql.as_bytes()].concat());
        self.answer()
    }

    /// The first column of the first row of a text query, as text.
    pub fn value(&mut self, sql: &str) -> String {
        self.command(&[&[COM_QUERY], sql.as_bytes()].concat());
        let columns = self.read();
        assert_ne!(columns[0], 0xff, "{}", String::from_utf8_lossy(&columns));
        for _ in 0..lenenc(&columns).0 {
            self.read();
        }
        assert_eq!(self.read()[0], 0xfe, "EOF after the columns");
        let row = self.read();
        let (len, n) = lenenc(&row);
        let value = String::from_utf8_lossy(&row[n..n + len as usize]).into_owned();
        while self.read()[0] != 0xfe {}
        value
    }

    /// Prepares `sql`; its statement id and parameter count.
    pub fn prepare(&mut self, sql: &str) -> (u32, u16) {
        self.command(&[&[COM_STMT_PREPARE], sql.as_bytes()].concat());
        let p = self.read();
        assert_eq!(p[0], 0, "{}", String::from_utf8_lossy(&p));
        let id = u32::from_le_bytes(p[1..5].try_into().unwrap());
        let columns = u16::from_le_bytes([p[5], p[6]]);
        let params = u16::from_le_bytes([p[7], p[8]]);
        for count in [params, columns] {
            if count > 0 {
                for _ in 0..count {
                    self.read();
                }
                assert_eq!(self.read()[0], 0xfe, "EOF after the definitions");
            }
        }
        (id, params)
    }

    /// Prepares `sql`, which the server must refuse; its error.
    pub fn prepare_error(&mut self, sql: &str) -> Answer {
        self.command(&[&[COM_STMT_PREPARE], sql.as_bytes()].concat());
        let answer = self.answer();
        assert!(matches!(answer, Answer::Err { .. }), "{answer:?}");
        answer
    }

    /// `COM_STMT_BULK_EXECUTE` of `rows` of (INT, VARCHAR) parameters; with `types` it
    /// carries their types, without it relies on those bound before.
    pub fn bulk(&mut self, id: u32, rows: &[[Value; 2]], types: bool) -> Answer {
        const LONG: u8 = 3;
        const VAR_STRING: u8 = 253;
        let mut p = vec![COM_STMT_BULK_EXECUTE];
        p.extend_from_slice(&id.to_le_bytes());
        let flags: u16 = if types { 128 } else { 0 };
        p.extend_from_slice(&flags.to_le_bytes());
        if types {
            p.extend_from_slice(&[LONG, 0, VAR_STRING, 0]);
        }
        for row in rows {
            for v in row {
                match v {
                    Value::Int(n) => {
                        p.push(0);
                        p.extend_from_slice(&n.to_le_bytes());
                    }
                    Value::Text(s) => {
                        p.push(0);
                        p.push(s.len() as u8);
                        p.extend_from_slice(s.as_bytes());
                    }
                    Value::Null => p.push(1),
                    Value::Default => p.push(2),
                }
            }
        }
        self.command(&p);
        self.answer()
    }
}
