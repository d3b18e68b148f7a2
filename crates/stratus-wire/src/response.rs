//! OK, ERR and EOF packets (<https://mariadb.com/kb/en/ok_packet/>,
//! <https://mariadb.com/kb/en/err_packet/>, <https://mariadb.com/kb/en/eof_packet/>), and the
//! session state changes an OK can carry when `CLIENT_SESSION_TRACK` is on
//! (<https://mariadb.com/kb/en/ok_packet/#session-change-type>).

use crate::caps::{self, STATUS_SESSION_STATE_CHANGED};
use crate::lenenc::{Reader, put_lenenc, put_lenenc_bytes};
use crate::{Malformed, malformed};

/// An OK packet; `header` is 0x00, or 0xfe where it ends a result set under `DEPRECATE_EOF`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OkPacket<'a> {
    pub header: u8,
    pub affected_rows: u64,
    pub last_insert_id: u64,
    pub status: u16,
    pub warnings: u16,
    pub info: &'a [u8],
    /// The raw session state block (entries, without its length prefix); empty if none.
    pub session_state: &'a [u8],
}

impl<'a> OkPacket<'a> {
    /// Decodes an OK sent to a client with capabilities `caps`.
    pub fn decode(payload: &'a [u8], caps: u64) -> Result<Self, Malformed> {
        let mut r = Reader::new(payload, "OK");
        let header = r.u8()?;
        if header != 0x00 && header != 0xfe {
            return Err(malformed("OK"));
        }
        let affected_rows = r.lenenc()?;
        let last_insert_id = r.lenenc()?;
        let status = r.u16()?;
        let warnings = r.u16()?;
        let (mut info, mut session_state): (&[u8], &[u8]) = (&[], &[]);
        // `info` is length-encoded whether or not the client tracks sessions: the protocol
        // documents "string<EOF>" without tracking, but MariaDB's `net_send_ok` (and MySQL's)
        // store it length-encoded, and clients (libmariadb, mysql_common) read it so.
        if !r.is_empty() {
            info = r.lenenc_bytes()?;
        }
        if caps & caps::SESSION_TRACK != 0
            && status & STATUS_SESSION_STATE_CHANGED != 0
            && !r.is_empty()
        {
            session_state = r.lenenc_bytes()?;
        }
        Ok(Self {
            header,
            affected_rows,
            last_insert_id,
            status,
            warnings,
            info,
            session_state,
        })
    }

    /// Encodes for a client with capabilities `caps`, as the server would: the session block is
    /// kept only if that client tracks sessions and there is one; `info` is length-encoded
    /// either way (see [`OkPacket::decode`]).
    pub fn encode(&self, caps: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + self.info.len() + self.session_state.len());
        out.push(self.header);
        put_lenenc(&mut out, self.affected_rows);
        put_lenenc(&mut out, self.last_insert_id);
        let tracked = caps & caps::SESSION_TRACK != 0;
        let with_state = tracked && !self.session_state.is_empty();
        let status = if with_state {
            self.status
        } else {
            self.status & !STATUS_SESSION_STATE_CHANGED
        };
        out.extend_from_slice(&status.to_le_bytes());
        out.extend_from_slice(&self.warnings.to_le_bytes());
        if with_state || !self.info.is_empty() {
            put_lenenc_bytes(&mut out, self.info);
        }
        if with_state {
            put_lenenc_bytes(&mut out, self.session_state);
        }
        out
    }
}

/// A plain OK for a command the proxy answers itself.
pub fn ok(status: u16, affected_rows: u64, caps: u64) -> Vec<u8> {
    OkPacket {
        header: 0,
        affected_rows,
        last_insert_id: 0,
        status,
        warnings: 0,
        info: &[],
        session_state: &[],
    }
    .encode(caps)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrPacket<'a> {
    pub code: u16,
    pub sql_state: Option<&'a [u8]>,
    pub message: &'a [u8],
}

impl<'a> ErrPacket<'a> {
    pub fn decode(payload: &'a [u8]) -> Result<Self, Malformed> {
        let mut r = Reader::new(payload, "ERR");
        if r.u8()? != 0xff {
            return Err(malformed("ERR"));
        }
        let code = r.u16()?;
        let sql_state = if payload.get(3) == Some(&b'#') {
            r.u8()?;
            Some(r.bytes(5)?)
        } else {
            None
        };
        Ok(Self {
            code,
            sql_state,
            message: r.rest(),
        })
    }
}

/// An ERR packet with a SQL state, as sent after the handshake. An empty `sql_state` writes
/// none, as a server does before it knows the client speaks protocol 4.1: in place of its
/// greeting (`Too many connections`; `net_send_error_packet` in MariaDB's `sql/protocol.cc`).
pub fn err(code: u16, sql_state: &str, message: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(9 + message.len());
    out.push(0xff);
    out.extend_from_slice(&code.to_le_bytes());
    if !sql_state.is_empty() {
        out.push(b'#');
        let state = sql_state.as_bytes();
        out.extend_from_slice(&state[..state.len().min(5)]);
        out.resize(9, b'0');
    }
    out.extend_from_slice(message.as_bytes());
    out
}

/// Whether the server closes the connection after sending this error: its network errors
/// (`ER_NET_PACKET_TOO_LARGE` 1153 to `ER_NET_WRITE_INTERRUPTED` 1161: a command past
/// `max_allowed_packet`, packets out of order, a read or write that failed), after which
/// `do_command` in MariaDB's `sql/sql_parse.cc` ends the connection
/// (<https://mariadb.com/kb/en/mariadb-error-code-reference/>).
pub fn closes_connection(code: u16) -> bool {
    (1153..=1161).contains(&code)
}

/// Whether a payload is a classic EOF packet (0xfe, shorter than 9 bytes).
#[inline]
pub fn is_eof(payload: &[u8]) -> bool {
    payload.first() == Some(&0xfe) && payload.len() < 9
}

/// Status flags of a classic EOF packet.
#[inline]
pub fn eof_status(payload: &[u8]) -> u16 {
    match payload {
        [0xfe, _, _, lo, hi, ..] => u16::from_le_bytes([*lo, *hi]),
        _ => 0,
    }
}

pub fn eof(status: u16) -> Vec<u8> {
    let mut out = vec![0xfe, 0, 0];
    out.extend_from_slice(&status.to_le_bytes());
    out
}

/// Session state change types.
pub const TRACK_SYSTEM_VARIABLES: u8 = 0;
pub const TRACK_SCHEMA: u8 = 1;
pub const TRACK_STATE_CHANGE: u8 = 2;
pub const TRACK_GTIDS: u8 = 3;
pub const TRACK_TRANSACTION_CHARACTERISTICS: u8 = 4;
pub const TRACK_TRANSACTION_STATE: u8 = 5;

/// One entry of a session state block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change<'a> {
    pub kind: u8,
    /// The entry's data, undecoded.
    pub data: &'a [u8],
}

impl<'a> Change<'a> {
    /// `(name, value)` of a system variable entry.
    pub fn system_variable(&self) -> Option<(&'a [u8], &'a [u8])> {
        if self.kind != TRACK_SYSTEM_VARIABLES {
            return None;
        }
        let mut r = Reader::new(self.data, "session variable");
        Some((r.lenenc_bytes().ok()?, r.lenenc_bytes().ok()?))
    }

    /// The single length-encoded string of schema, state-change and transaction entries.
    pub fn text(&self) -> Option<&'a [u8]> {
        Reader::new(self.data, "session change").lenenc_bytes().ok()
    }
}

/// The entries of a session state block.
pub fn changes(block: &[u8]) -> Result<Vec<Change<'_>>, Malformed> {
    let mut r = Reader::new(block, "session state");
    let mut out = Vec::new();
    while !r.is_empty() {
        let kind = r.u8()?;
        let data = r.lenenc_bytes()?;
        out.push(Change { kind, data });
    }
    Ok(out)
}

/// Re-encodes entries into a session state block.
pub fn encode_changes(entries: &[Change<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        out.push(e.kind);
        put_lenenc_bytes(&mut out, e.data);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::caps::*;
    use proptest::prelude::*;

    #[test]
    fn ok_with_session_state_round_trips() {
        let mut var = Vec::new();
        put_lenenc_bytes(&mut var, b"sql_mode");
        put_lenenc_bytes(&mut var, b"ANSI");
        let mut schema = Vec::new();
        put_lenenc_bytes(&mut schema, b"shop");
        let block = encode_changes(&[
            Change {
                kind: TRACK_SYSTEM_VARIABLES,
                data: &var,
            },
            Change {
                kind: TRACK_SCHEMA,
                data: &schema,
            },
        ]);
        let ok = OkPacket {
            header: 0,
            affected_rows: 3,
            last_insert_id: 300,
            status: STATUS_AUTOCOMMIT | STATUS_SESSION_STATE_CHANGED,
            warnings: 1,
            info: b"Rows matched: 3",
            session_state: &block,
        };
        let caps = SESSION_TRACK | PROTOCOL_41;
        let bytes = ok.encode(caps);
        let back = OkPacket::decode(&bytes, caps).unwrap();
        assert_eq!(back, ok);
        let entries = changes(back.session_state).unwrap();
        assert_eq!(
            entries[0].system_variable(),
            Some((&b"sql_mode"[..], &b"ANSI"[..]))
        );
        assert_eq!(entries[1].text(), Some(&b"shop"[..]));

        // For a client without session tracking: no state, flag cleared, info still
        // length-encoded, exactly as MariaDB sends it (captured from a 10.11 server).
        let plain = ok.encode(PROTOCOL_41);
        let back = OkPacket::decode(&plain, PROTOCOL_41).unwrap();
        assert_eq!(back.info, b"Rows matched: 3");
        assert_eq!(back.status & STATUS_SESSION_STATE_CHANGED, 0);
        let server = b"\x00\x02\x00\x02\x00\x00\x00\x26Records: 2  Duplicates: 0  Warnings: 0";
        let insert = OkPacket::decode(server, PROTOCOL_41).unwrap();
        assert_eq!(insert.affected_rows, 2);
        assert_eq!(
            insert.encode(PROTOCOL_41),
            server.to_vec(),
            "relayed byte for byte"
        );
    }

    #[test]
    fn err_and_eof() {
        let e = err(1045, "28000", "Access denied");
        let d = ErrPacket::decode(&e).unwrap();
        assert_eq!(
            (d.code, d.sql_state, d.message),
            (1045, Some(&b"28000"[..]), &b"Access denied"[..])
        );
        assert!(is_eof(&eof(STATUS_AUTOCOMMIT)));
        assert_eq!(eof_status(&eof(STATUS_MORE_RESULTS)), STATUS_MORE_RESULTS);
        assert!(!is_eof(&[0xfe; 9]));
    }

    /// What MariaDB 10.11 sends in place of its greeting past `max_connections`, byte for
    /// byte: no SQL state, since it does not know yet whether the client speaks 4.1.
    #[test]
    fn an_error_before_the_greeting_has_no_sql_state() {
        let server = b"\xff\x10\x04Too many connections";
        assert_eq!(err(1040, "", "Too many connections"), server);
        let d = ErrPacket::decode(server).unwrap();
        assert_eq!(
            (d.code, d.sql_state, d.message),
            (1040, None, &b"Too many connections"[..])
        );
    }

    proptest! {
        /// Whatever the proxy rewrites in an OK (the session block, for what the client
        /// tracks), every other field reaches the client as the server sent it.
        #[test]
        fn a_rewritten_ok_keeps_every_other_field(
            affected in any::<u64>(),
            insert_id in any::<u64>(),
            status in any::<u16>(),
            warnings in any::<u16>(),
            info in proptest::collection::vec(any::<u8>(), 0..80),
            var in proptest::collection::vec(any::<u8>(), 0..20),
            client_tracks in any::<bool>(),
        ) {
            let mut entry = Vec::new();
            put_lenenc_bytes(&mut entry, b"sql_mode");
            put_lenenc_bytes(&mut entry, &var);
            let block = encode_changes(&[Change { kind: TRACK_SYSTEM_VARIABLES, data: &entry }]);
            let server_caps = SESSION_TRACK | PROTOCOL_41;
            let from_server = OkPacket {
                header: 0,
                affected_rows: affected,
                last_insert_id: insert_id,
                status: status | STATUS_SESSION_STATE_CHANGED,
                warnings,
                info: &info,
                session_state: &block,
            }
            .encode(server_caps);
            let seen = OkPacket::decode(&from_server, server_caps).unwrap();
            let client_caps = if client_tracks { server_caps } else { PROTOCOL_41 };
            let dropped = OkPacket { session_state: &[], ..seen.clone() }.encode(client_caps);
            let back = OkPacket::decode(&dropped, client_caps).unwrap();
            prop_assert_eq!(back.affected_rows, affected);
            prop_assert_eq!(back.last_insert_id, insert_id);
            prop_assert_eq!(back.warnings, warnings);
            prop_assert_eq!(back.info, &info[..]);
            prop_assert_eq!(back.status, status & !STATUS_SESSION_STATE_CHANGED);
            prop_assert!(back.session_state.is_empty());
        }

        #[test]
        fn decoders_never_panic(buf in proptest::collection::vec(any::<u8>(), 0..64), caps in any::<u64>()) {
            let _ = OkPacket::decode(&buf, caps);
            let _ = ErrPacket::decode(&buf);
            if let Ok(entries) = changes(&buf) {
                for e in &entries { let _ = e.system_variable(); let _ = e.text(); }
            }
            let _ = eof_status(&buf);
        }
    }
}
