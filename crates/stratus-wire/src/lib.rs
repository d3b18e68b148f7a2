//! The MariaDB client/server protocol, pure: no sockets, no policy, nothing that panics on
//! input. Reference: <https://mariadb.com/kb/en/clientserver-protocol/>.
//!
//! * [`packet`]: framing (3-byte length, sequence id, 16 MiB continuation).
//! * [`compressed`]: the compressed protocol's framing around it (zlib).
//! * [`handshake`]: the server greeting and the client's answer, both directions.
//! * [`auth`]: `mysql_native_password` scrambles, and recovering `SHA1(password)` from a reply.
//! * [`response`]: OK, ERR and EOF packets, with session state tracking.
//! * [`tracker`]: where one command's response ends, from a stream of packets.
//! * [`command`]: command bytes and the prepared-statement packets the proxy rewrites.
//! * [`classify`]: a hand lexer that tells what an SQL statement does to a session.

pub mod auth;
pub mod caps;
pub mod classify;
pub mod command;
pub mod compressed;
pub mod handshake;
pub mod lenenc;
pub mod packet;
pub mod response;
pub mod tracker;

/// A packet that does not follow the protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed {what} packet")]
pub struct Malformed {
    pub what: &'static str,
}

pub(crate) fn malformed(what: &'static str) -> Malformed {
    Malformed { what }
}
