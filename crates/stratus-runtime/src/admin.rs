//! Stratus's own administrative connection to a database, as the `stratus_admin` account.

use crate::{Result, RuntimeError};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder};
use std::time::Duration;

/// The account Stratus manages each server with. Never routed to by the proxy.
pub const ADMIN_USER: &str = "stratus_admin";

/// A connection as [`ADMIN_USER`] over loopback TCP.
pub struct AdminConn {
    name: String,
    conn: Conn,
}

impl AdminConn {
    /// Connects, giving up after `timeout`.
    pub async fn connect(
        name: &str,
        host: &str,
        port: u16,
        password: &str,
        timeout: Duration,
    ) -> Result<Self> {
        let opts = OptsBuilder::default()
            .ip_or_hostname(host.to_owned())
            .tcp_port(port)
            .user(Some(ADMIN_USER))
            .pass(Some(password.to_owned()))
            .prefer_socket(false);
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

    pub async fn close(self) {
        let _ = self.conn.disconnect().await;
    }
}

pub use stratus_core::sql::{quote_ident, quote_str};
