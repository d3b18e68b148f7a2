//! Stratus's own administrative connection to a database.
//!
//! Locally it is the account named after Stratus's OS user, authenticated by the kernel over the
//! server's private unix socket (see `local::server_user`): no password exists to be stored.

use crate::{Result, RuntimeError};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder};
use std::time::Duration;
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
        // 1045 access denied, 1698 socket user mismatch, 4151 account locked, 1862 expired,
        // 1226 a resource limit on the account.
        matches!(e, RuntimeError::Sql { source: mysql_async::Error::Server(s), .. }
            if matches!(s.code, 1045 | 1698 | 4151 | 1862 | 1820 | 1226 | 1044))
    }

    pub async fn close(self) {
        let _ = self.conn.disconnect().await;
    }
}

pub use stratus_core::sql::{quote_ident, quote_str};
