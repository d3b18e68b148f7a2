//! The commit marker table, `stratus_meta.commits`: one row per client session that committed a
//! write transaction through the proxy, holding the number of its last such transaction. The
//! proxy writes it inside each write transaction, just before `COMMIT`; after a crash the row
//! tells whether that `COMMIT` happened (see `stratus-proxy`'s `replay` module). The control
//! plane creates the table, grants each account its use, and prunes rows of sessions long gone.

/// The schema that holds it; tenants may use it but not drop it.
pub const SCHEMA: &str = "stratus_meta";

/// The table, qualified.
pub const TABLE: &str = "stratus_meta.commits";

/// Creates the table where it is missing (every new server has it from its template).
pub const DDL: [&str; 2] = [
    "CREATE DATABASE IF NOT EXISTS stratus_meta",
    "CREATE TABLE IF NOT EXISTS stratus_meta.commits (\
     session BIGINT UNSIGNED NOT NULL PRIMARY KEY, \
     txn BIGINT UNSIGNED NOT NULL, \
     at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP) ENGINE=InnoDB",
];

/// Removes rows no session can still ask about: a session deletes its own row when it ends,
/// so these are left by proxies that were killed.
pub const PRUNE: &str = "DELETE FROM stratus_meta.commits WHERE at < NOW() - INTERVAL 1 DAY";

/// What every account needs on the table (`account` quoted, as `'name'@'%'`).
pub fn grant(account: &str) -> String {
    format!("GRANT SELECT, INSERT, UPDATE, DELETE ON {TABLE} TO {account}")
}
