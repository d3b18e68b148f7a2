//! Applying a size to a running server.
//!
//! Growing: the cgroup first, so the larger buffer pool never meets the old memory limit.
//! Shrinking: the buffer pool first, so the smaller limit never meets the old pool.
//! `SET GLOBAL innodb_buffer_pool_size` may be adjusted or refused by the server (rounding,
//! `innodb_buffer_pool_size_max`; <https://mariadb.com/kb/en/innodb-buffer-pool/>), so its
//! warnings and the resulting size are read back and recorded, never assumed.

use crate::{ControlPlane, Result};
use stratus_core::{DatabaseService, Resources};
use stratus_runtime::Runtime;
use stratus_runtime::admin::AdminConn;
use stratus_store::Store;

/// What a resize really did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Applied {
    pub buffer_pool_requested: u64,
    pub buffer_pool_actual: u64,
    pub warnings: Vec<String>,
}

impl<S: Store, R: Runtime> ControlPlane<S, R> {
    /// Moves a running server from `from` to `to`, whole or not at all: Stratus logs in before
    /// anything changes (a server that refuses it is restarted at `from` to restore its
    /// account), and a grown cgroup is put back if the server then refuses the new pool.
    pub(crate) async fn apply_size(
        &self,
        svc: &DatabaseService,
        from: Resources,
        to: Resources,
    ) -> Result<Applied> {
        let name = svc.name();
        let mut conn = self.admin(name).await?;
        let grow = to.memory_bytes >= from.memory_bytes;
        if grow {
            self.runtime
                .set_limits(name, to.cpu_millis, to.memory_bytes)
                .await?;
        }
        let resized = resize_buffer_pool(&mut conn, to.buffer_pool_bytes).await;
        conn.close().await;
        let (actual, warnings) = match resized {
            Ok(r) => r,
            Err(e) => {
                if grow {
                    let _ = self
                        .runtime
                        .set_limits(name, from.cpu_millis, from.memory_bytes)
                        .await;
                }
                return Err(e);
            }
        };
        if !grow {
            self.runtime
                .set_limits(name, to.cpu_millis, to.memory_bytes)
                .await?;
        }
        Ok(Applied {
            buffer_pool_requested: to.buffer_pool_bytes,
            buffer_pool_actual: actual,
            warnings,
        })
    }

    /// Asks the server for a buffer pool of `bytes`; returns the size it really took and its
    /// warnings.
    pub(crate) async fn set_buffer_pool(
        &self,
        svc: &DatabaseService,
        bytes: u64,
    ) -> Result<(u64, Vec<String>)> {
        let mut conn = self.admin(svc.name()).await?;
        let resized = resize_buffer_pool(&mut conn, bytes).await;
        conn.close().await;
        resized
    }
}

async fn resize_buffer_pool(conn: &mut AdminConn, bytes: u64) -> Result<(u64, Vec<String>)> {
    let warnings = conn
        .exec_with_warnings(&format!("SET GLOBAL innodb_buffer_pool_size = {bytes}"))
        .await?;
    let actual: Option<u64> = conn
        .query_value("SELECT @@GLOBAL.innodb_buffer_pool_size")
        .await?;
    Ok((actual.unwrap_or(0), warnings))
}
