//! Transactions a server recovers when it starts after a crash: those open when it died. InnoDB
//! rolls them back in the background while the server already accepts connections
//! (<https://mariadb.com/kb/en/innodb-recovery-modes/>); until it is done they are the rows of
//! `INFORMATION_SCHEMA.INNODB_TRX` with `trx_mysql_thread_id = 0`. Clients are handed the
//! server only once there are none: the rows those transactions changed hold their uncommitted
//! values and locks until then (and see `docs/dirty-read.md`).

use crate::{ControlPlane, Result};
use std::time::{Duration, Instant};
use stratus_core::ServiceName;
use stratus_runtime::Runtime;
use stratus_runtime::admin::ServerAdmin;
use stratus_store::Store;

/// Longest wait; a server still rolling back after this is handed out anyway (the row locks
/// still protect writers) and the wait is reported.
const LIMIT: Duration = Duration::from_secs(30);

/// How often the server is asked: it has no way to tell when its rollback ends. More than
/// 0.1 s apart: InnoDB refreshes `INNODB_TRX` only once it went unread that long
/// (`CACHE_MIN_IDLE_TIME_NS` in `storage/innobase/trx/trx0i_s.cc`), so a faster poll reads the
/// rows of its first answer forever and waited out the whole [`LIMIT`] whenever a recovered
/// transaction was left at the first look.
const POLL: Duration = Duration::from_millis(150);

impl<S: Store, R: Runtime> ControlPlane<S, R> {
    /// Waits until the just-started server of `name` has rolled back what it recovered; the
    /// time waited, or `None` if it could not be asked or did not finish within the limit.
    pub(crate) async fn await_recovered_rollback(
        &self,
        name: &ServiceName,
        conn: &mut R::Admin,
    ) -> Result<Option<Duration>> {
        let begin = Instant::now();
        loop {
            let left = conn.recovered_transactions().await?;
            if left == 0 {
                return Ok(Some(begin.elapsed()));
            }
            if begin.elapsed() > LIMIT {
                tracing::warn!(db = %name, left, "recovered transactions still rolling back after {LIMIT:?}; handing the server out anyway");
                return Ok(None);
            }
            // Polling the server's own table: nothing notifies the end of its rollback.
            tokio::time::sleep(POLL).await;
        }
    }

    /// Whether clients must not be handed the server yet: it is starting, or rolling back
    /// what it recovered.
    pub(crate) fn is_settling(&self, name: &ServiceName) -> bool {
        self.settling
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(name)
    }

    pub(crate) fn set_settling(&self, name: &ServiceName, on: bool) {
        let mut set = self.settling.lock().unwrap_or_else(|p| p.into_inner());
        if on {
            set.insert(name.clone());
        } else {
            set.remove(name);
        }
    }
}
