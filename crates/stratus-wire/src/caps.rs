//! Capability and status flags (<https://mariadb.com/kb/en/connection/#capabilities>).
//! MariaDB's own capabilities sit above bit 31, sent in the handshake's reserved bytes when
//! `CLIENT_MYSQL` is not set.

pub const CLIENT_MYSQL: u64 = 1;
pub const FOUND_ROWS: u64 = 2;
pub const LONG_FLAG: u64 = 4;
pub const CONNECT_WITH_DB: u64 = 8;
pub const NO_SCHEMA: u64 = 1 << 4;
pub const COMPRESS: u64 = 1 << 5;
pub const ODBC: u64 = 1 << 6;
pub const LOCAL_FILES: u64 = 1 << 7;
pub const IGNORE_SPACE: u64 = 1 << 8;
pub const PROTOCOL_41: u64 = 1 << 9;
pub const INTERACTIVE: u64 = 1 << 10;
pub const SSL: u64 = 1 << 11;
pub const TRANSACTIONS: u64 = 1 << 13;
pub const SECURE_CONNECTION: u64 = 1 << 15;
pub const MULTI_STATEMENTS: u64 = 1 << 16;
pub const MULTI_RESULTS: u64 = 1 << 17;
pub const PS_MULTI_RESULTS: u64 = 1 << 18;
pub const PLUGIN_AUTH: u64 = 1 << 19;
pub const CONNECT_ATTRS: u64 = 1 << 20;
pub const PLUGIN_AUTH_LENENC_CLIENT_DATA: u64 = 1 << 21;
pub const CAN_HANDLE_EXPIRED_PASSWORDS: u64 = 1 << 22;
pub const SESSION_TRACK: u64 = 1 << 23;
pub const DEPRECATE_EOF: u64 = 1 << 24;
pub const SSL_VERIFY_SERVER_CERT: u64 = 1 << 30;
pub const REMEMBER_OPTIONS: u64 = 1 << 31;
pub const MARIADB_PROGRESS: u64 = 1 << 32;
pub const MARIADB_COM_MULTI: u64 = 1 << 33;
pub const MARIADB_STMT_BULK_OPERATIONS: u64 = 1 << 34;
pub const MARIADB_EXTENDED_TYPE_INFO: u64 = 1 << 35;
pub const MARIADB_CACHE_METADATA: u64 = 1 << 36;

/// What the proxy offers clients. Left out, because a relayed session could not honour them
/// across backends: progress reports, COM_MULTI and cached metadata (whose skipped column
/// definitions would not survive a re-prepare). Bulk execution is offered: every backend
/// connection of a session is made with the client's capabilities (pooled ones too: the pool's
/// key holds them), and an execute that relied on types bound on another connection is given
/// them. Compression is the proxy's own, between it and the client. `SSL` is added when TLS is
/// configured.
pub const PROXY_OFFERS: u64 = LONG_FLAG
    | FOUND_ROWS
    | COMPRESS
    | CONNECT_WITH_DB
    | NO_SCHEMA
    | ODBC
    | LOCAL_FILES
    | IGNORE_SPACE
    | PROTOCOL_41
    | INTERACTIVE
    | TRANSACTIONS
    | SECURE_CONNECTION
    | MULTI_STATEMENTS
    | MULTI_RESULTS
    | PS_MULTI_RESULTS
    | PLUGIN_AUTH
    | CONNECT_ATTRS
    | PLUGIN_AUTH_LENENC_CLIENT_DATA
    | CAN_HANDLE_EXPIRED_PASSWORDS
    | SESSION_TRACK
    | DEPRECATE_EOF
    | REMEMBER_OPTIONS
    | MARIADB_STMT_BULK_OPERATIONS
    | MARIADB_EXTENDED_TYPE_INFO;

// Server status flags.
pub const STATUS_IN_TRANS: u16 = 1;
pub const STATUS_AUTOCOMMIT: u16 = 2;
pub const STATUS_MORE_RESULTS: u16 = 8;
pub const STATUS_CURSOR_EXISTS: u16 = 0x40;
pub const STATUS_LAST_ROW_SENT: u16 = 0x80;
pub const STATUS_IN_TRANS_READONLY: u16 = 0x2000;
pub const STATUS_SESSION_STATE_CHANGED: u16 = 0x4000;
