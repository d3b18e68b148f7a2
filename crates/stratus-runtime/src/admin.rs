//! Stratus's own administrative connection to a database.
//!
//! Locally it is the account named after Stratus's OS user, authenticated by the kernel over the
//! server's private unix socket (see `local::server_user`): no password exists to be stored.

use crate::{Result, RuntimeError};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder};
use std::future::Future;
use std::time::{Duration, Instant};
use stratus_core::Endpoint;

/// How a runtime's servers are logged into by Stratus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminLogin {
    pub user: String,
    /// `None` for socket authentication.
    pub password: Option<String>,
}

/// A connection as Stratus's own account.
pub struct AdminConn {
    name: String,
    /// The account it logged in as (its own sessions are not clients').
    user: String,
    conn: Conn,
}

impl AdminConn {
    /// Connects, giving up after `timeout`.
    pub async fn connect(
        name: &str,
        endpoint: &Endpoint,
        login: &AdminLogin,
        timeout: Duration,
    ) -> Result<Self> {
        let opts = OptsBuilder::default()
            .user(Some(login.user.clone()))
            .pass(login.password.clone());
        let opts = match endpoint {
            Endpoint::Unix(path) => opts.socket(Some(path.to_string_lossy().into_owned())),
            Endpoint::Tcp(addr) => opts
                .ip_or_hostname(addr.ip().to_string())
                .tcp_port(addr.port())
                .prefer_socket(false),
        };
        let conn = tokio::time::timeout(timeout, Conn::new(opts))
            .await
            .map_err(|_| {
                RuntimeError::Other(format!("database {name}: no login within {timeout:?}"))
            })?
            .map_err(|source| RuntimeError::Sql {
                name: name.to_owned(),
                source,
            })?;
        Ok(Self {
            name: name.to_owned(),
            user: login.user.clone(),
            conn,
        })
    }

    pub async fn exec(&mut self, sql: &str) -> Result<()> {
        self.conn
            .query_drop(sql)
            .await
            .map_err(|source| RuntimeError::Sql {
                name: self.name.clone(),
                source,
            })
    }

    /// Runs a statement and returns the server's warnings about it (`SHOW WARNINGS`), which is
    /// how MariaDB says it adjusted or refused part of a `SET GLOBAL`.
    pub async fn exec_with_warnings(&mut self, sql: &str) -> Result<Vec<String>> {
        self.exec(sql).await?;
        if self.conn.get_warnings() == 0 {
            return Ok(Vec::new());
        }
        let rows: Vec<(String, u32, String)> =
            self.conn
                .query("SHOW WARNINGS")
                .await
                .map_err(|source| RuntimeError::Sql {
                    name: self.name.clone(),
                    source,
                })?;
        Ok(rows
            .into_iter()
            .map(|(level, code, msg)| format!("{level} {code}: {msg}"))
            .collect())
    }

    /// All rows of a result.
    pub async fn query_rows<T: mysql_async::prelude::FromRow + Send + 'static>(
        &mut self,
        sql: &str,
    ) -> Result<Vec<T>> {
        self.conn
            .query(sql)
            .await
            .map_err(|source| RuntimeError::Sql {
                name: self.name.clone(),
                source,
            })
    }

    /// First column of the first row, if any.
    pub async fn query_value<T: mysql_async::prelude::FromValue + Send + 'static>(
        &mut self,
        sql: &str,
    ) -> Result<Option<T>> {
        self.conn
            .query_first::<T, _>(sql)
            .await
            .map_err(|source| RuntimeError::Sql {
                name: self.name.clone(),
                source,
            })
    }

    /// The server refused the login itself (as opposed to being unreachable): someone removed,
    /// locked or changed Stratus's account.
    pub fn is_access_denied(e: &RuntimeError) -> bool {
        e.is_access_denied()
    }

    pub async fn close(self) {
        let _ = self.conn.disconnect().await;
    }
}

pub use crate::hot_pages::{HotIndex, Warmed};
pub use stratus_core::sql::{quote_ident, quote_str};

/// What the control plane does inside a running server, the same on every runtime: the buffer
/// pool (<https://mariadb.com/kb/en/innodb-buffer-pool/>), sessions, recovered transactions,
/// and the schema and account statements it writes itself (`exec`). A runtime hands these out
/// ([`crate::Runtime::admin`]); [`AdminConn`] is the one real implementation, and
/// `fake::FakeAdmin` the in-memory one controllers are tested against.
pub trait ServerAdmin: Send + Sized {
    /// Runs a statement that answers no rows (schema, accounts, grants).
    fn exec(&mut self, sql: &str) -> impl Future<Output = Result<()>> + Send;

    /// The buffer pool's current size in bytes.
    fn buffer_pool_size(&mut self) -> impl Future<Output = Result<u64>> + Send;

    /// Asks for a buffer pool of `bytes`; returns the size the server really took and its
    /// warnings (it rounds, and refuses sizes beyond `innodb_buffer_pool_size_max`).
    fn resize_buffer_pool(
        &mut self,
        bytes: u64,
    ) -> impl Future<Output = Result<(u64, Vec<String>)>> + Send;

    /// Writes the list of hot pages and waits, at most `limit`, for the server to finish;
    /// returns its status line.
    fn dump_buffer_pool(&mut self, limit: Duration) -> impl Future<Output = Result<String>> + Send;

    /// Starts reloading the dumped hot pages in the background.
    fn load_buffer_pool(&mut self) -> impl Future<Output = Result<()>> + Send;

    /// The indexes filling the buffer pool now whose pages `load_buffer_pool` cannot bring back
    /// (those of encrypted tablespaces, [`crate::hot_pages`]), hottest first.
    fn hot_indexes(&mut self) -> impl Future<Output = Result<Vec<HotIndex>>> + Send;

    /// Reads one index whole into the buffer pool, giving up after `limit_secs`.
    fn warm_index(
        &mut self,
        index: &HotIndex,
        limit_secs: u64,
    ) -> impl Future<Output = Result<Warmed>> + Send;

    /// Closes every client session (not Stratus's, not the server's own threads); returns how
    /// many were closed.
    fn close_sessions(&mut self) -> impl Future<Output = Result<u64>> + Send;

    /// Transactions recovered at start-up and still being rolled back.
    fn recovered_transactions(&mut self) -> impl Future<Output = Result<u64>> + Send;

    /// What the clients' sessions are doing, from the process list
    /// (<https://mariadb.com/kb/en/information-schema-processlist-table/>).
    fn client_activity(&mut self) -> impl Future<Output = Result<ClientActivity>> + Send;

    /// `Innodb_buffer_pool_read_requests` and `Innodb_buffer_pool_reads`.
    fn buffer_pool_counters(&mut self) -> impl Future<Output = Result<(u64, u64)>> + Send;

    /// What the buffer pool could come to hold of the server's tablespaces: every page of each
    /// file at the full page size, and a compressed table's page (`ROW_FORMAT=COMPRESSED`) twice,
    /// compressed and not (<https://mariadb.com/kb/en/innodb-compressed-row-format/>). The
    /// files' logical sizes (`FILE_SIZE` of `INNODB_SYS_TABLESPACES`), so that pages stored
    /// smaller on disk (`PAGE_COMPRESSED`, holes punched) count at what they take in memory.
    fn pool_fillable_bytes(&mut self) -> impl Future<Output = Result<u64>> + Send;

    /// The server's `'%'` accounts: name, authentication plugin, authentication string.
    fn accounts(&mut self) -> impl Future<Output = Result<Vec<Account>>> + Send;

    /// Starts a new binary log and deletes the older ones, to make room on a full volume
    /// (<https://mariadb.com/kb/en/purge-binary-logs/>). Returns how many were deleted.
    fn purge_binary_logs(&mut self) -> impl Future<Output = Result<u64>> + Send;

    /// The GTIDs written to the binary log so far (`@@gtid_binlog_pos`,
    /// <https://mariadb.com/kb/en/gtid/#gtid_binlog_pos>).
    fn gtid_binlog_pos(&mut self) -> impl Future<Output = Result<String>> + Send;

    /// Bytes inside the tables' files that are free for new rows (`DATA_FREE`,
    /// <https://mariadb.com/kb/en/information-schema-tables-table/>): what a `DELETE` gave back
    /// without shrinking a file.
    fn free_in_tables(&mut self) -> impl Future<Output = Result<u64>> + Send;

    /// Holds every commit until this connection ends (`BACKUP STAGE BLOCK_COMMIT`,
    /// <https://mariadb.com/kb/en/backup-stage/>): the binary log position read after it is
    /// final. Waits at most `limit` for running DDL.
    fn block_commits(&mut self, limit: Duration) -> impl Future<Output = Result<()>> + Send;

    /// On a replica: waits at most `limit` until it has applied `gtid_pos`
    /// (<https://mariadb.com/kb/en/master_gtid_wait/>); false if it has not by then.
    fn wait_for_gtid(
        &mut self,
        gtid_pos: &str,
        limit: Duration,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// On a replica: how far it is and whether it still replicates.
    fn replica_state(&mut self) -> impl Future<Output = Result<ReplicaState>> + Send;

    /// On a replica: stops replicating and forgets its source, for good.
    fn stop_replication(&mut self) -> impl Future<Output = Result<()>> + Send;

    fn close(self) -> impl Future<Output = ()> + Send;
}

/// A replica's progress (`SHOW SLAVE STATUS`, <https://mariadb.com/kb/en/show-replica-status/>).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReplicaState {
    /// Both its threads run.
    pub running: bool,
    /// `Seconds_Behind_Master`, when it knows.
    pub seconds_behind: Option<u64>,
    /// The GTIDs it has applied (`@@gtid_slave_pos`).
    pub applied: String,
    /// Its last I/O or SQL error, if any.
    pub error: Option<String>,
}

/// What a server's client sessions are doing (not Stratus's own, nor the server's threads):
/// how the operator on Kubernetes tells an idle database, where each proxy replica sees only
/// its own sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ClientActivity {
    pub connections: u64,
    /// A client statement runs, or a client transaction is open.
    pub busy: bool,
    /// Milliseconds since the latest end of a client's command (a sleeping session's `TIME_MS`);
    /// `None` when no client is connected.
    pub idle_ms: Option<u64>,
}

/// An account as the server holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub user: String,
    pub plugin: Option<String>,
    pub auth: Option<String>,
}

impl ServerAdmin for AdminConn {
    async fn exec(&mut self, sql: &str) -> Result<()> {
        AdminConn::exec(self, sql).await
    }

    async fn buffer_pool_size(&mut self) -> Result<u64> {
        let v: Option<u64> = self
            .query_value("SELECT @@GLOBAL.innodb_buffer_pool_size")
            .await?;
        Ok(v.unwrap_or(0))
    }

    async fn resize_buffer_pool(&mut self, bytes: u64) -> Result<(u64, Vec<String>)> {
        let warnings = self
            .exec_with_warnings(&format!("SET GLOBAL innodb_buffer_pool_size = {bytes}"))
            .await?;
        Ok((self.buffer_pool_size().await?, warnings))
    }

    async fn dump_buffer_pool(&mut self, limit: Duration) -> Result<String> {
        AdminConn::exec(self, "SET GLOBAL innodb_buffer_pool_dump_now = ON").await?;
        let begin = Instant::now();
        loop {
            let status: Option<String> = self
                .query_value(
                    "SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS \
                     WHERE VARIABLE_NAME = 'INNODB_BUFFER_POOL_DUMP_STATUS'",
                )
                .await?;
            let status = status.unwrap_or_default();
            if status.contains("completed") || begin.elapsed() > limit {
                return Ok(status);
            }
            // Polling the server's own progress report: the dump has no completion signal.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn load_buffer_pool(&mut self) -> Result<()> {
        // Asynchronous in the server: queries run while the pages come back.
        AdminConn::exec(self, "SET GLOBAL innodb_buffer_pool_load_now = ON").await
    }

    async fn hot_indexes(&mut self) -> Result<Vec<HotIndex>> {
        let rows = self.query_rows(crate::hot_pages::HOT_INDEXES).await?;
        Ok(crate::hot_pages::hot_indexes(rows))
    }

    async fn warm_index(&mut self, index: &HotIndex, limit_secs: u64) -> Result<Warmed> {
        let json: Option<String> = self
            .query_value(&crate::hot_pages::warm_statement(index, limit_secs))
            .await?;
        json.as_deref()
            .and_then(Warmed::from_analyze)
            .ok_or_else(|| {
                RuntimeError::Other(format!("ANALYZE of {} answered no figures", index.table))
            })
    }

    async fn close_sessions(&mut self) -> Result<u64> {
        let ids: Vec<u64> = self
            .query_rows(&format!(
                "SELECT ID FROM information_schema.PROCESSLIST WHERE ID <> CONNECTION_ID() \
                 AND USER NOT IN ({}, 'system user', 'event_scheduler')",
                quote_str(&self.user)
            ))
            .await?;
        let mut closed = 0;
        for id in ids {
            // Gone already is fine.
            if AdminConn::exec(self, &format!("KILL CONNECTION {id}"))
                .await
                .is_ok()
            {
                closed += 1;
            }
        }
        Ok(closed)
    }

    async fn recovered_transactions(&mut self) -> Result<u64> {
        let v: Option<u64> = self.query_value(RECOVERED_TRANSACTIONS).await?;
        Ok(v.unwrap_or(0))
    }

    async fn client_activity(&mut self) -> Result<ClientActivity> {
        // A session in a transaction is busy even while it sleeps between statements.
        let rows: Vec<(u64, u64, Option<u64>)> = self
            .query_rows(&format!(
                "SELECT COUNT(*), \
                 CAST(COALESCE(SUM(p.COMMAND <> 'Sleep' OR t.trx_id IS NOT NULL), 0) AS UNSIGNED), \
                 CAST(MIN(IF(p.COMMAND = 'Sleep', p.TIME_MS, NULL)) AS UNSIGNED) \
                 FROM information_schema.PROCESSLIST p \
                 LEFT JOIN information_schema.INNODB_TRX t ON t.trx_mysql_thread_id = p.ID \
                 WHERE p.ID <> CONNECTION_ID() \
                 AND p.USER NOT IN ({}, 'system user', 'event_scheduler', 'unauthenticated user') \
                 AND p.COMMAND NOT IN ('Daemon', 'Binlog Dump', 'Killed')",
                quote_str(&self.user)
            ))
            .await?;
        let (connections, busy, idle_ms) = rows.first().copied().unwrap_or_default();
        Ok(ClientActivity {
            connections,
            busy: busy > 0,
            idle_ms: idle_ms.filter(|_| connections > 0),
        })
    }

    async fn buffer_pool_counters(&mut self) -> Result<(u64, u64)> {
        let rows: Vec<(String, u64)> = self
            .query_rows(
                "SELECT VARIABLE_NAME, VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS \
                 WHERE VARIABLE_NAME IN ('INNODB_BUFFER_POOL_READ_REQUESTS', 'INNODB_BUFFER_POOL_READS')",
            )
            .await?;
        let get = |n: &str| rows.iter().find(|(k, _)| k == n).map_or(0, |(_, v)| *v);
        Ok((
            get("INNODB_BUFFER_POOL_READ_REQUESTS"),
            get("INNODB_BUFFER_POOL_READS"),
        ))
    }

    async fn pool_fillable_bytes(&mut self) -> Result<u64> {
        // Since 10.6 `PAGE_SIZE` is a tablespace's physical page size, its compressed one for
        // `ROW_FORMAT=COMPRESSED` (<https://mariadb.com/kb/en/information-schema-innodb_sys_tablespaces-table/>).
        let bytes: Option<u64> = self
            .query_value(
                "SELECT CAST(COALESCE(SUM(FILE_SIZE DIV PAGE_SIZE * (@@innodb_page_size \
                 + IF(ROW_FORMAT = 'Compressed', PAGE_SIZE, 0))), 0) AS UNSIGNED) \
                 FROM information_schema.INNODB_SYS_TABLESPACES WHERE PAGE_SIZE > 0",
            )
            .await?;
        Ok(bytes.unwrap_or(0))
    }

    async fn accounts(&mut self) -> Result<Vec<Account>> {
        let rows: Vec<(String, Option<String>, Option<String>)> = self
            .query_rows(
                "SELECT User, JSON_VALUE(Priv, '$.plugin'), JSON_VALUE(Priv, '$.authentication_string') \
                 FROM mysql.global_priv WHERE Host = '%'",
            )
            .await?;
        Ok(rows
            .into_iter()
            .map(|(user, plugin, auth)| Account { user, plugin, auth })
            .collect())
    }

    async fn free_in_tables(&mut self) -> Result<u64> {
        let free: Option<u64> = self
            .query_value("SELECT CAST(COALESCE(SUM(DATA_FREE), 0) AS UNSIGNED) FROM information_schema.TABLES")
            .await?;
        Ok(free.unwrap_or(0))
    }

    async fn gtid_binlog_pos(&mut self) -> Result<String> {
        let pos: Option<String> = self.query_value("SELECT @@global.gtid_binlog_pos").await?;
        Ok(pos.unwrap_or_default())
    }

    async fn purge_binary_logs(&mut self) -> Result<u64> {
        // Rows as rows: the column count of these statements varies between versions.
        let before: Vec<mysql_async::Row> = self.query_rows("SHOW BINARY LOGS").await?;
        AdminConn::exec(self, "FLUSH BINARY LOGS").await?;
        let status: Vec<mysql_async::Row> = self.query_rows("SHOW MASTER STATUS").await?;
        let Some(current) = status.first().and_then(|r| r.get_opt::<String, _>(0)?.ok()) else {
            return Ok(0);
        };
        AdminConn::exec(
            self,
            &format!("PURGE BINARY LOGS TO {}", quote_str(&current)),
        )
        .await?;
        Ok(before.len() as u64)
    }

    async fn block_commits(&mut self, limit: Duration) -> Result<()> {
        let secs = limit.as_secs().max(1);
        AdminConn::exec(self, &format!("SET SESSION lock_wait_timeout = {secs}")).await?;
        AdminConn::exec(self, "BACKUP STAGE START").await?;
        AdminConn::exec(self, "BACKUP STAGE BLOCK_COMMIT").await
    }

    async fn wait_for_gtid(&mut self, gtid_pos: &str, limit: Duration) -> Result<bool> {
        let secs = limit.as_secs_f64();
        let r: Option<i64> = self
            .query_value(&format!(
                "SELECT MASTER_GTID_WAIT({}, {secs:.3})",
                quote_str(gtid_pos)
            ))
            .await?;
        Ok(r == Some(0))
    }

    async fn replica_state(&mut self) -> Result<ReplicaState> {
        let rows: Vec<mysql_async::Row> = self.query_rows("SHOW SLAVE STATUS").await?;
        let applied: Option<String> = self.query_value("SELECT @@global.gtid_slave_pos").await?;
        let Some(row) = rows.first() else {
            return Ok(ReplicaState {
                applied: applied.unwrap_or_default(),
                ..ReplicaState::default()
            });
        };
        let text = |col: &str| -> Option<String> {
            row.get_opt::<Option<String>, _>(col)
                .and_then(|v| v.ok())
                .flatten()
                .filter(|s| !s.is_empty())
        };
        let yes = |col: &str| text(col).as_deref() == Some("Yes");
        Ok(ReplicaState {
            running: yes("Slave_IO_Running") && yes("Slave_SQL_Running"),
            seconds_behind: text("Seconds_Behind_Master").and_then(|s| s.parse().ok()),
            applied: applied.unwrap_or_default(),
            error: text("Last_IO_Error").or_else(|| text("Last_SQL_Error")),
        })
    }

    async fn stop_replication(&mut self) -> Result<()> {
        AdminConn::exec(self, "STOP SLAVE").await?;
        AdminConn::exec(self, "RESET SLAVE ALL").await
    }

    async fn close(self) {
        AdminConn::close(self).await
    }
}

/// The number of transactions a server recovered at start-up and has not finished rolling back:
/// the rows of `INNODB_TRX` no client thread owns
/// (<https://mariadb.com/kb/en/information-schema-innodb_trx-table/>).
pub const RECOVERED_TRANSACTIONS: &str =
    "SELECT COUNT(*) FROM information_schema.INNODB_TRX WHERE trx_mysql_thread_id = 0";
