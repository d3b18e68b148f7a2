//! The proxy's view of the control plane, in-process for `stratus up`.

use std::net::SocketAddr;
use std::sync::Arc;
use stratus_control::ControlPlane;
use stratus_proxy::{Account, Directory};
use stratus_runtime::LocalRuntime;
use stratus_store::SqliteStore;

pub struct ControlDirectory(pub Arc<ControlPlane<SqliteStore, LocalRuntime>>);

impl Directory for ControlDirectory {
    async fn account(&self, service: &str, user: &str) -> Option<Account> {
        let (stage2, require_tls) = self.0.account_hash(service, user).await?;
        Some(Account {
            stage2,
            require_tls,
        })
    }

    async fn backend(&self, service: &str, wake: bool) -> Result<Option<SocketAddr>, String> {
        self.0
            .backend_for_client(service, wake)
            .await
            .map_err(|e| e.to_string())
    }
}
