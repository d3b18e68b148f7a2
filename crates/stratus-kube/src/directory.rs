//! The proxy on Kubernetes: [`KubeDirectory`] is its [`Directory`], read from the same
//! resources the operator reconciles, so the proxy Deployment routes and wakes without a
//! control plane of its own.
//!
//! * **Logins** are checked against the accounts the operator publishes in each database's
//!   Secret ([`crate::accounts`]), so a parked database needs no wake to check a password.
//!   They are read again after [`FRESH`], and at once when a client manages accounts in SQL
//!   ([`Directory::accounts_changed`]: read from the server itself, and the operator asked to
//!   publish them through an annotation).
//! * **Routes**: a database serves when its spec and status both say `active` and its pod is
//!   ready; the proxy then connects to the pod's address. The pod is looked up again for every
//!   new backend connection, so a pod made again elsewhere (a move, a drain) is found at once.
//! * **Wakes**: a statement for a suspended or parked database sets its `spec.state` back to
//!   `active`, as `stratus db resume` does, and waits for the operator to report it active.
//!
//! References: [`Directory`] (the proxy's one interface to the control plane),
//! [merge patch](https://kubernetes.io/docs/tasks/manage-kubernetes-objects/update-api-object-kubectl-patch/).

use crate::instance::Instance;
use crate::operator::server::{AdminSql, ServerSql};
use crate::runtime::{KubeRuntime, PodView};
use crate::v1alpha1::{DatabaseService, Lifecycle};
use crate::{accounts, objects};
use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use stratus_core::{Endpoint, NativeHash, ServiceName};
use stratus_proxy::replay::Failover;
use stratus_proxy::throttle::Throttled;
use stratus_proxy::{Account, Directory};
use tokio::time::Instant;

/// How long published accounts are used before they are read again: how soon a login made on
/// another proxy replica, or a password changed there, is seen here.
pub const FRESH: Duration = Duration::from_secs(5);
/// How often a wake, or a lost server, is looked at again.
pub const POLL: Duration = Duration::from_millis(200);
/// How long [`Directory::unreachable`] waits for the cluster to notice a lost server (a
/// readiness probe's failures).
pub const NOTICE: Duration = Duration::from_secs(10);
/// The annotation through which the proxy asks the operator to publish accounts again.
pub const ACCOUNTS_CHANGED: &str = "stratus.dev/accounts-changed";

/// The logins of one database, as last read.
struct Known {
    at: Instant,
    require_tls: bool,
    logins: BTreeMap<String, NativeHash>,
}

pub struct KubeDirectory {
    runtime: KubeRuntime,
    resources: Api<DatabaseService>,
    servers: Arc<dyn ServerSql>,
    known: Mutex<HashMap<String, Known>>,
    /// When each database's accounts were last read after a change in SQL.
    changed: Mutex<HashMap<String, Instant>>,
    /// Kubernetes Events on a database's resource for what its sessions lived through.
    recorder: Recorder,
    namespace: String,
}

impl KubeDirectory {
    /// `identity`: this replica (its pod's name), named in its Events.
    pub fn new(client: Client, settings: objects::Settings, identity: &str) -> Self {
        let runtime = KubeRuntime::new(client.clone(), settings.clone());
        let reporter = Reporter {
            controller: "stratus-proxy".into(),
            instance: Some(identity.into()),
        };
        Self {
            resources: Api::namespaced(client.clone(), &settings.namespace),
            servers: Arc::new(AdminSql {
                runtime: runtime.clone(),
            }),
            runtime,
            known: Mutex::default(),
            changed: Mutex::default(),
            recorder: Recorder::new(client, reporter),
            namespace: settings.namespace,
        }
    }

    /// Publishes an Event on `db`'s resource, in the background: a session never waits for it,
    /// and a refused Event is only logged.
    fn publish(&self, db: &ServiceName, event: Event) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let recorder = self.recorder.clone();
        let regarding = ObjectReference {
            api_version: Some(format!("{}/v1alpha1", crate::GROUP)),
            kind: Some("DatabaseService".into()),
            name: Some(db.to_string()),
            namespace: Some(self.namespace.clone()),
            ..ObjectReference::default()
        };
        let db = db.to_string();
        runtime.spawn(async move {
            if let Err(e) = recorder.publish(&event, &regarding).await {
                tracing::warn!(database = %db, reason = %event.reason, "event not recorded: {e}");
            }
        });
    }

    /// The same, with other hands for SQL in the servers (tests script them).
    pub fn with_servers(mut self, servers: Arc<dyn ServerSql>) -> Self {
        self.servers = servers;
        self
    }

    fn known(&self) -> std::sync::MutexGuard<'_, HashMap<String, Known>> {
        self.known.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The resource of a database; `Err` is a message for the client.
    async fn resource(&self, db: &ServiceName) -> Result<Option<DatabaseService>, String> {
        self.resources.get_opt(db.as_str()).await.map_err(|e| {
            tracing::warn!(database = %db, "cannot read its DatabaseService: {e}");
            "its resource cannot be read from the cluster".to_owned()
        })
    }

    /// The pod to connect to, if the database serves: spec and status `active`, pod ready.
    async fn serving(
        &self,
        db: &ServiceName,
        ds: &DatabaseService,
    ) -> Result<Option<(PodView, Endpoint)>, String> {
        let active = ds.spec.state.unwrap_or_default() == Lifecycle::Active
            && ds.status.as_ref().is_some_and(|s| s.state == "active");
        if !active {
            return Ok(None);
        }
        let pod = self
            .runtime
            .observe(&instance_of(db, ds))
            .await
            .map_err(|e| {
                tracing::warn!(database = %db, "cannot read its pod: {e}");
                "its pod cannot be read from the cluster".to_owned()
            })?;
        Ok(pod.and_then(|p| {
            let ip: IpAddr = p.ip.as_deref()?.parse().ok()?;
            let serving = p.ready && !p.deleting;
            let port = p.port.unwrap_or(objects::PORT);
            serving.then(|| (p, Endpoint::Tcp(SocketAddr::new(ip, port))))
        }))
    }

    /// Asks for the database to be active again (what `db resume` does).
    async fn wake(&self, db: &ServiceName) -> Result<(), String> {
        let patch = serde_json::json!({"spec": {"state": "active"}});
        self.resources
            .patch(db.as_str(), &PatchParams::default(), &Patch::Merge(patch))
            .await
            .map(|_| tracing::info!(database = %db, "woken: spec.state set to active"))
            .map_err(|e| {
                tracing::warn!(database = %db, "cannot wake it: {e}");
                "it cannot be woken: the cluster refused".to_owned()
            })
    }

    /// Waits until the database serves. With `wake`, a database asked to sleep is woken first;
    /// without, `None` is the answer for it. The caller bounds the wait.
    async fn wait_serving(&self, service: &str, wake: bool) -> Result<Option<Endpoint>, String> {
        let db = ServiceName::parse(service).map_err(|e| e.to_string())?;
        // Asked again if the spec goes back to sleep meanwhile (an idle suspend the operator
        // had asked for just before), at most once a second.
        let mut woken: Option<Instant> = None;
        loop {
            let ds = self
                .resource(&db)
                .await?
                .ok_or_else(|| format!("database {db} does not exist"))?;
            if let Some((_, endpoint)) = self.serving(&db, &ds).await? {
                return Ok(Some(endpoint));
            }
            if ds.spec.state.unwrap_or_default() != Lifecycle::Active {
                if !wake {
                    return Ok(None);
                }
                if woken.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
                    self.wake(&db).await?;
                    woken = Some(Instant::now());
                }
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Reads the database's logins: from its server when it serves and `from_server`, else as
    /// published. `Ok(None)`: no such database; `Err`: they could not be read (the cluster or
    /// the server did not answer), which leaves what was known before in place.
    async fn read_logins(&self, db: &ServiceName, from_server: bool) -> Result<Option<Known>, ()> {
        let Some(ds) = self.resource(db).await.map_err(|_| ())? else {
            return Ok(None);
        };
        let require_tls = ds.spec.require_tls;
        let pod = match from_server {
            true => self
                .serving(db, &ds)
                .await
                .ok()
                .flatten()
                .map(|(pod, _)| pod),
            false => None,
        };
        let logins = match pod {
            Some(pod) => match self.servers.accounts(db, &pod).await {
                Ok(rows) => accounts::decode(&accounts::encode(&rows)),
                Err(e) => {
                    tracing::warn!(database = %db, "cannot read its accounts: {e}");
                    return Err(());
                }
            },
            None => match self.runtime.published_accounts(&instance_of(db, &ds)).await {
                Ok(text) => accounts::decode(text.as_deref().unwrap_or_default()),
                Err(e) => {
                    tracing::warn!(database = %db, "cannot read its accounts: {e}");
                    return Err(());
                }
            },
        };
        Ok(Some(Known {
            at: Instant::now(),
            require_tls,
            logins,
        }))
    }

    /// Keeps what was read; a failed read keeps what was known (a short outage of the API
    /// server must not lock every client out).
    fn remember(&self, db: &ServiceName, read: Result<Option<Known>, ()>) {
        let mut all = self.known();
        match read {
            Ok(Some(k)) => {
                all.insert(db.to_string(), k);
            }
            Ok(None) => {
                all.remove(db.as_str());
            }
            Err(()) => {}
        }
    }
}

/// The server `db` runs as: a spare it claimed, as its status names it, else its own objects.
/// The runtime reads a pooled server's pod and Secret only when they are labelled for `db`, so
/// a status naming another database's server routes nowhere and lets no one in.
fn instance_of(db: &ServiceName, ds: &DatabaseService) -> Instance {
    Instance::of_database(db, ds.status.as_ref().and_then(|s| s.instance.as_deref()))
}

impl Directory for KubeDirectory {
    async fn account(&self, service: &str, user: &str) -> Option<Account> {
        // A name no database can have never reaches the API.
        let db = ServiceName::parse(service).ok()?;
        let lookup = |k: &Known| {
            k.logins.get(user).map(|h| Account {
                stage2: h.0,
                require_tls: k.require_tls,
            })
        };
        if let Some(k) = self
            .known()
            .get(db.as_str())
            .filter(|k| k.at.elapsed() < FRESH)
        {
            return lookup(k);
        }
        let read = self.read_logins(&db, false).await;
        self.remember(&db, read);
        self.known().get(db.as_str()).and_then(lookup)
    }

    async fn backend(&self, service: &str, wake: bool) -> Result<Option<Endpoint>, String> {
        self.wait_serving(service, wake).await
    }

    async fn backend_after_loss(&self, service: &str) -> Result<Option<Endpoint>, String> {
        // Restarted after a crash by the kubelet; asked to sleep: not woken for it.
        self.wait_serving(service, false).await
    }

    async fn unreachable(&self, service: &str, addr: &Endpoint) {
        let Ok(db) = ServiceName::parse(service) else {
            return;
        };
        // Until the cluster shows the server gone: not ready, restarted, or elsewhere.
        let Ok(Some(ds)) = self.resource(&db).await else {
            return;
        };
        let inst = instance_of(&db, &ds);
        let start = Instant::now();
        let mut first_restarts = None;
        while start.elapsed() < NOTICE {
            let Ok(Some(pod)) = self.runtime.observe(&inst).await else {
                return;
            };
            let at = pod.ip.as_deref().and_then(|ip| ip.parse::<IpAddr>().ok());
            let same = matches!(addr, Endpoint::Tcp(a) if Some(a.ip()) == at);
            let restarts = *first_restarts.get_or_insert(pod.restarts);
            if !pod.ready || pod.deleting || !same || pod.restarts != restarts {
                return;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn accounts_changed(&self, service: &str) {
        let Ok(db) = ServiceName::parse(service) else {
            return;
        };
        // Read from the server at once: this replica must let the new login in.
        let known = self.read_logins(&db, true).await;
        self.remember(&db, known);
        // The operator is asked to publish them at most once a second per database: a client
        // looping over `CREATE USER` must not load the API server. The last change of a burst
        // is published at the operator's next look.
        {
            let mut last = self.changed.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            if last
                .get(db.as_str())
                .is_some_and(|at| now.duration_since(*at) < Duration::from_secs(1))
            {
                return;
            }
            last.insert(db.to_string(), now);
        }
        // The operator publishes them for the other replicas and for while it sleeps.
        let stamp = stratus_core::time::now_ms().to_string();
        let patch = serde_json::json!({"metadata": {"annotations": {ACCOUNTS_CHANGED: stamp}}});
        if let Err(e) = self
            .resources
            .patch(db.as_str(), &PatchParams::default(), &Patch::Merge(patch))
            .await
        {
            tracing::warn!(database = %db, "cannot ask for its accounts to be published: {e}");
        }
    }

    fn failover(&self, service: &str, report: Failover) {
        let note = report.summary();
        tracing::info!(
            database = service,
            outcome = report.outcome.as_str(),
            "{note}"
        );
        let Ok(db) = ServiceName::parse(service) else {
            return;
        };
        let failed = report.outcome.failed();
        self.publish(
            &db,
            Event {
                type_: if failed {
                    EventType::Warning
                } else {
                    EventType::Normal
                },
                reason: "Failover".into(),
                note: Some(note),
                action: "CarryOver".into(),
                secondary: None,
            },
        );
    }

    fn login_throttled(&self, service: Option<&str>, report: Throttled) {
        let note = format!(
            "{} failed logins in a row for {} {}: each further attempt waits {} ms, doubling per failure",
            report.failures,
            report.key.kind(),
            report.key,
            report.delay.as_millis()
        );
        tracing::warn!(database = service.unwrap_or_default(), "{note}");
        // Only on a database the attempt named and that exists (the proxy checked the account).
        if let Some(db) = service.and_then(|s| ServiceName::parse(s).ok()) {
            self.publish(
                &db,
                Event {
                    type_: EventType::Warning,
                    reason: "LoginsThrottled".into(),
                    note: Some(note),
                    action: "Throttle".into(),
                    secondary: None,
                },
            );
        }
    }
}

#[cfg(test)]
mod end_to_end;
#[cfg(test)]
mod tests;
