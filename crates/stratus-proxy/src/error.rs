//! Errors as clients see them: MariaDB error codes, SQL states and messages
//! (<https://mariadb.com/kb/en/mariadb-error-code-reference/>). A client of the proxy never sees
//! a Rust error string.

use stratus_wire::response;

/// An error the proxy itself answers a client with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlError {
    pub code: u16,
    pub state: &'static str,
    pub message: String,
}

/// `ER_LOCK_DEADLOCK`: the server rolled the whole transaction back.
pub const ER_LOCK_DEADLOCK: u16 = 1213;

/// The code of [`SqlError::unavailable`].
pub const ER_UNAVAILABLE: u16 = 1105;
/// What the server answers a connection it killed with, before it closes it.
pub const ER_CONNECTION_KILLED: u16 = 1927;

impl SqlError {
    pub fn packet(&self) -> Vec<u8> {
        response::err(self.code, self.state, &self.message)
    }

    /// A statement the server answers with this error (`SIGNAL` outside a stored program), for
    /// an answer the proxy must give in the middle of a multi-statement query. Only for the
    /// proxy's own messages, which hold no backslash (their meaning depends on `sql_mode`).
    pub fn signal(&self) -> String {
        debug_assert!(!self.message.contains('\\'), "{}", self.message);
        format!(
            "SIGNAL SQLSTATE '{}' SET MYSQL_ERRNO = {}, MESSAGE_TEXT = '{}'",
            self.state,
            self.code,
            self.message.replace('\'', "''")
        )
    }

    pub fn access_denied(user: &[u8], host: &str, password: bool) -> Self {
        Self {
            code: 1045,
            state: "28000",
            message: format!(
                "Access denied for user '{}'@'{host}' (using password: {})",
                String::from_utf8_lossy(user),
                if password { "YES" } else { "NO" }
            ),
        }
    }

    pub fn too_many_connections(scope: &str) -> Self {
        Self {
            code: 1040,
            state: "08004",
            message: format!("Too many connections ({scope})"),
        }
    }

    /// `ER_NOT_SUPPORTED_YET` for what an account cannot be made to require through the proxy:
    /// a client certificate (the proxy ends the client's TLS and cannot present its certificate
    /// to the server), or TLS at all where the servers take none from the proxy. The server
    /// would refuse every login of the account.
    pub fn tls_ends_at_the_proxy(servers_take_tls: bool) -> Self {
        let message = match servers_take_tls {
            true => {
                "This version of MariaDB doesn't yet support 'REQUIRE X509, ISSUER or SUBJECT \
                     through Stratus: TLS ends at its proxy, which cannot show the client's \
                     certificate to the server, so the server would refuse every login of the \
                     account. REQUIRE SSL and REQUIRE CIPHER work'"
            }
            false => {
                "This version of MariaDB doesn't yet support 'REQUIRE SSL, X509, ISSUER, \
                      SUBJECT or CIPHER through Stratus: TLS ends at its proxy, so the server would \
                      refuse every login of the account. A database created with --require-tls \
                      refuses clients without TLS'"
            }
        };
        Self {
            code: 1235,
            state: "42000",
            message: message.into(),
        }
    }

    /// The error as a server sends it in place of its greeting: with no SQL state, since the
    /// client has not said yet that it speaks protocol 4.1.
    pub fn before_greeting(self) -> Self {
        Self { state: "", ..self }
    }

    pub fn packet_too_large(limit: usize) -> Self {
        Self {
            code: 1153,
            state: "08S01",
            message: format!("Got a packet bigger than 'max_allowed_packet' bytes ({limit})"),
        }
    }

    /// A compressed packet still coming in, past what compressed sessions may hold together
    /// (`stream::INFLATED_BUDGET`).
    pub fn inflated_budget() -> Self {
        Self {
            code: 1041,
            state: "HY000",
            message: format!(
                "Out of memory: compressed clients' packets being received hold the proxy's {} MiB; send this one uncompressed, or later",
                crate::stream::INFLATED_BUDGET >> 20
            ),
        }
    }

    pub fn unknown_command(cmd: u8) -> Self {
        Self {
            code: 1047,
            state: "08S01",
            message: format!("Unknown command 0x{cmd:02x}"),
        }
    }

    /// MariaDB answers every `COM_CHANGE_USER` after three that failed on a connection so,
    /// whatever it names: guessing passwords costs a connection per three guesses.
    pub fn changes_exhausted() -> Self {
        Self {
            code: 1047,
            state: "08S01",
            message: "Unknown command".into(),
        }
    }

    pub fn not_allowed(what: &str) -> Self {
        Self {
            code: 1227,
            state: "42000",
            message: format!(
                "Access denied; {what} is managed by Stratus and not available to clients"
            ),
        }
    }

    pub fn unsupported_plugin(plugin: &[u8]) -> Self {
        Self {
            code: 1251,
            state: "08004",
            message: format!(
                "Client does not support authentication protocol requested by server; Stratus supports mysql_native_password, not {}",
                String::from_utf8_lossy(plugin)
            ),
        }
    }

    pub fn unknown_statement(id: u32) -> Self {
        Self {
            code: 1243,
            state: "HY000",
            message: format!(
                "Unknown prepared statement handler ({id}) given to mysqld_stmt_execute"
            ),
        }
    }

    /// A `KILL CONNECTION` ended this session (`ER_CONNECTION_KILLED`).
    pub fn connection_killed() -> Self {
        Self {
            code: ER_CONNECTION_KILLED,
            state: "70100",
            message: "Connection was killed".to_owned(),
        }
    }

    /// `KILL` of an id that is no session of this database (`ER_NO_SUCH_THREAD`).
    pub fn no_such_thread(id: u64) -> Self {
        Self {
            code: 1094,
            state: "HY000",
            message: format!("Unknown thread id: {id}"),
        }
    }

    /// `KILL CONNECTION` of another account's session (`ER_KILL_DENIED_ERROR`).
    pub fn not_owner_of_thread(id: u64) -> Self {
        Self {
            code: 1095,
            state: "HY000",
            message: format!("You are not owner of thread {id}"),
        }
    }

    /// Sent to a session the proxy closes because it is shutting down, as the server does
    /// (`ER_SERVER_SHUTDOWN`).
    pub fn shutting_down() -> Self {
        Self {
            code: 1053,
            state: "08S01",
            message: "Server shutdown in progress".to_owned(),
        }
    }

    /// The database could not be woken or reached.
    pub fn unavailable(db: &str, why: &str) -> Self {
        Self {
            code: ER_UNAVAILABLE,
            state: "HY000",
            message: format!("Stratus: database {db} is unavailable: {why}"),
        }
    }

    /// The server's own deadlock error: its transaction was rolled back.
    pub fn deadlock() -> Self {
        Self {
            code: ER_LOCK_DEADLOCK,
            state: "40001",
            message: "Deadlock found when trying to get lock; try restarting transaction".into(),
        }
    }

    /// A transaction that could not be carried over a failover: rolled back, in the terms of a
    /// deadlock, whose remedy (run it again) is the same.
    pub fn rolled_back_by_failover(db: &str, why: &str) -> Self {
        Self {
            message: format!(
                "Transaction rolled back by failover: the server of database {db} was lost and {why}; try restarting transaction"
            ),
            ..Self::deadlock()
        }
    }

    /// `ER_CONNECTION_KILLED`, for a statement its server never answered.
    pub fn connection_lost(db: &str, why: &str) -> Self {
        Self {
            code: 1927,
            state: "70100",
            message: format!("Connection to database {db} was lost during the statement; {why}"),
        }
    }

    /// `ER_CONNECTION_KILLED`, for the command after a backend connection was lost while the
    /// user variables its last statement assigned had not been read back.
    pub fn user_vars_lost(db: &str) -> Self {
        Self {
            code: 1927,
            state: "70100",
            message: format!(
                "Connection to database {db} was lost; the user variables assigned by the last statement \
                 were not carried over to the new connection and keep their earlier values"
            ),
        }
    }

    /// `ER_CONNECTION_KILLED`, for the execute of a prepared statement whose long data was sent
    /// to a backend connection since lost: run without it, its parameters would be misread.
    pub fn long_data_lost(db: &str) -> Self {
        Self {
            code: 1927,
            state: "70100",
            message: format!(
                "Connection to database {db} was lost after long data was sent for this statement; \
                 send it again and execute"
            ),
        }
    }

    pub fn secure_transport_required() -> Self {
        Self {
            code: 3159,
            state: "08004",
            message: "Connections using insecure transport are prohibited for this database; connect with TLS".into(),
        }
    }

    /// `ER_MALFORMED_PACKET`, for a command too short for what it must carry.
    pub fn malformed_packet() -> Self {
        Self {
            code: 1835,
            state: "HY000",
            message: "Malformed communication packet".into(),
        }
    }

    pub fn handshake(why: &str) -> Self {
        Self {
            code: 1043,
            state: "08S01",
            message: format!("Bad handshake: {why}"),
        }
    }
}

impl std::fmt::Display for SqlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.state {
            "" => write!(f, "ERROR {}: {}", self.code, self.message),
            state => write!(f, "ERROR {} ({state}): {}", self.code, self.message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::SqlError;

    #[test]
    fn a_signal_carries_the_code_state_and_message_quoted() {
        let e = SqlError {
            code: 1095,
            state: "HY000",
            message: "not 'yours'".into(),
        };
        assert_eq!(
            e.signal(),
            "SIGNAL SQLSTATE 'HY000' SET MYSQL_ERRNO = 1095, MESSAGE_TEXT = 'not ''yours'''"
        );
    }
}
