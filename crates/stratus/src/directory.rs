//! The proxy's view of the control plane, in-process for `stratus up`.

use std::sync::Arc;
use stratus_control::ControlPlane;
use stratus_core::Endpoint;
use stratus_core::EventKind;
use stratus_proxy::replay::Failover;
use stratus_proxy::throttle::Throttled;
use stratus_proxy::{Account, Directory};
use stratus_runtime::LocalNodes;
use stratus_store::SqliteStore;

/// Calls run on the control plane's runtime, whichever proxy thread asks: a wake starts
/// processes and tasks that belong there, not on a session thread.
pub struct ControlDirectory {
    cp: Arc<ControlPlane<SqliteStore, LocalNodes>>,
    runtime: tokio::runtime::Handle,
}

impl ControlDirectory {
    /// Must be called on the control plane's runtime.
    pub fn new(cp: Arc<ControlPlane<SqliteStore, LocalNodes>>) -> Self {
        Self {
            cp,
            runtime: tokio::runtime::Handle::current(),
        }
    }
}

impl Directory for ControlDirectory {
    async fn account(&self, service: &str, user: &str) -> Option<Account> {
        let (cp, service, user) = (self.cp.clone(), service.to_owned(), user.to_owned());
        let found = self
            .runtime
            .spawn(async move { cp.account_hash(&service, &user).await })
            .await
            .ok()??;
        Some(Account {
            stage2: found.0,
            require_tls: found.1,
        })
    }

    async fn backend(&self, service: &str, wake: bool) -> Result<Option<Endpoint>, String> {
        let (cp, service) = (self.cp.clone(), service.to_owned());
        self.runtime
            .spawn(async move {
                cp.backend_for_client(&service, wake)
                    .await
                    .map_err(|e| e.to_string())
            })
            .await
            .map_err(|e| format!("control plane task failed: {e}"))?
    }

    async fn backend_after_loss(&self, service: &str) -> Result<Option<Endpoint>, String> {
        let (cp, service) = (self.cp.clone(), service.to_owned());
        self.runtime
            .spawn(async move {
                cp.backend_after_loss(&service)
                    .await
                    .map_err(|e| e.to_string())
            })
            .await
            .map_err(|e| format!("control plane task failed: {e}"))?
    }

    async fn unreachable(&self, service: &str, addr: &Endpoint) {
        let (cp, service, addr) = (self.cp.clone(), service.to_owned(), addr.clone());
        let _ = self
            .runtime
            .spawn(async move { cp.server_unreachable(&service, &addr).await })
            .await;
    }

    async fn accounts_changed(&self, service: &str) {
        let (cp, service) = (self.cp.clone(), service.to_owned());
        let done = self
            .runtime
            .spawn(async move { cp.sync_accounts(&service).await })
            .await;
        if let Ok(Err(e)) = done {
            tracing::warn!("cannot re-read accounts: {e}");
        }
    }

    fn storage_full(&self, service: &str) -> Option<u64> {
        self.cp.storage_full(service)
    }

    fn failover(&self, service: &str, report: Failover) {
        let (cp, service) = (self.cp.clone(), service.to_owned());
        let ms = report.duration.as_millis() as u64;
        let message = report.summary();
        let data = serde_json::json!({
            "outcome": report.outcome.as_str(),
            "error": report.outcome.failed(),
            "attempts": report.attempts,
            "replayed_statements": report.replayed,
            "failover_ms": ms,
        });
        self.runtime
            .spawn(async move { cp.failover_event(&service, &message, data).await });
    }

    fn login_throttled(&self, service: Option<&str>, report: Throttled) {
        use stratus_store::Store;
        let cp = self.cp.clone();
        // A source's event goes under the database it was trying, when that account exists;
        // otherwise under no database (`stratus events` without `--db` shows it).
        let db = service.unwrap_or_default().to_owned();
        let message = format!(
            "{} failed logins in a row for {} {}: each further attempt waits {} ms, doubling per failure, until a success or {} s without failures",
            report.failures,
            report.key.kind(),
            report.key,
            report.delay.as_millis(),
            report.window.as_secs()
        );
        let data = serde_json::json!({
            "kind": report.key.kind(),
            "key": report.key.to_string(),
            "failures": report.failures,
            "delay_ms": report.delay.as_millis() as u64,
            "window_secs": report.window.as_secs(),
        });
        self.runtime.spawn(async move {
            if let Err(e) = cp
                .store()
                .record_event(&db, EventKind::LoginThrottled, &message, data)
                .await
            {
                tracing::warn!("cannot record a login_throttled event: {e}");
            }
        });
    }
}

/// The proxy's holds, as the control plane's cut-overs use them.
pub struct ProxyGate(pub Arc<stratus_proxy::hold::Holds>);

impl stratus_control::migrate::Gate for ProxyGate {
    fn hold(&self, db: &str) -> Option<Box<dyn Send>> {
        self.0.hold(db).map(|g| Box::new(g) as Box<dyn Send>)
    }
}
