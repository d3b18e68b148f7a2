//! The narrow interface the proxy uses (DESIGN.md: wake, activity, redirect): account lookup and
//! the address of a database's server, waking it when asked.

use crate::{ControlPlane, Result};
use stratus_core::Endpoint;
use stratus_core::{DbState, EventKind, ServiceName, UserName};
use stratus_runtime::Runtime;
use stratus_store::Store;

/// How long a refused connection waits for the server's exit to be observed; a server that is
/// still alive after this is handed out again.
const UNREACHABLE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

impl<S: Store, R: Runtime> ControlPlane<S, R> {
    /// The stored `SHA1(SHA1(password))` of a routed user, and whether its database requires TLS.
    pub async fn account_hash(&self, service: &str, user: &str) -> Option<([u8; 20], bool)> {
        let service = ServiceName::parse(service).ok()?;
        let user = UserName::parse(user).ok()?;
        let svc = self.store.service(&service).await.ok()??;
        let users = self.store.users(&service).await.ok()?;
        users
            .into_iter()
            .find(|u| u.name == user)
            .map(|u| (u.hash.0, svc.require_tls))
    }

    /// A client could not connect to `addr`: if that is the server's address, wait (briefly) for
    /// the runtime to see it gone, so the next lookup starts a new one rather than handing out
    /// the dying one again.
    pub async fn server_unreachable(&self, service: &str, addr: &Endpoint) {
        let Ok(name) = ServiceName::parse(service) else {
            return;
        };
        if self.runtime.endpoint(&name).as_ref() == Some(addr) {
            let gone = self.runtime.wait_gone(&name, UNREACHABLE_WAIT).await;
            tracing::info!(db = %name, %addr, gone, "server refused a connection");
        }
    }

    /// The server's address if it runs; with `wake`, starts it first (one start however many
    /// clients ask at once: they queue on the database's lock and find it running).
    pub async fn backend_for_client(&self, service: &str, wake: bool) -> Result<Option<Endpoint>> {
        let wake = if wake { Wake::Always } else { Wake::Never };
        self.backend_waking(service, wake).await
    }

    /// The server's address for a session carrying over a transaction on its own, before its
    /// client asks anything: started again if it crashed, but a database put to sleep on purpose
    /// (suspended, parked, being moved) stays asleep, `Ok(None)`, until a client's statement.
    pub async fn backend_after_loss(&self, service: &str) -> Result<Option<Endpoint>> {
        self.backend_waking(service, Wake::UnlessAsleep).await
    }

    async fn backend_waking(&self, service: &str, wake: Wake) -> Result<Option<Endpoint>> {
        let name = ServiceName::parse(service)?;
        let ready = |cp: &Self| {
            cp.runtime
                .endpoint(&name)
                .filter(|_| !cp.is_suspended(&name) && !cp.is_settling(&name))
        };
        if let Some(addr) = ready(self) {
            return Ok(Some(addr));
        }
        if wake == Wake::Never {
            return Ok(None);
        }
        // A start holds the lock until the server is settled.
        let _guard = self.lock(&name).await;
        if let Some(addr) = ready(self) {
            return Ok(Some(addr));
        }
        let svc = self.load(&name).await?;
        if svc.state == DbState::Provisioning {
            return Err(crate::ControlError::WrongState(format!(
                "database {name} is still being created"
            )));
        }
        // Suspend and park change the state under the lock this waited for.
        if wake == Wake::UnlessAsleep && (svc.state != DbState::Active || self.is_suspended(&name))
        {
            return Ok(None);
        }
        self.ensure_running(&name, EventKind::Woken, "for a waiting client")
            .await?;
        Ok(self.runtime.endpoint(&name))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wake {
    Never,
    Always,
    /// Only a server that stopped by itself (a crash), not one put to sleep.
    UnlessAsleep,
}
