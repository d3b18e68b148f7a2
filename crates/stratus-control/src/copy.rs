//! A new database that is a copy of another (a restore from a backup, a branch): its catalog
//! entry made from the source's settings and accounts, its storage made by the runtime, and on
//! failure nothing kept but the event that says why.

use crate::{ControlError, ControlPlane, Result};
use serde_json::json;
use std::future::Future;
use stratus_core::time::now_ms;
use stratus_core::{
    DatabaseService, DbState, EventKind, NativeHash, ServiceName, ServiceSpec, Tier, User, UserName,
};
use stratus_runtime::{Instance, InstanceSpec, Runtime};
use stratus_store::Store;

/// What a copy takes from its source (and what a backup records of it).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Source {
    pub tier: Tier,
    pub min_scu: u32,
    pub max_scu: u32,
    pub storage_gb: u32,
    pub require_tls: bool,
    /// The schema the source's clients use: the copy's clients find their tables under it.
    pub schema: String,
    /// Name, `SHA1(SHA1(password))` as the catalog writes it, owner.
    pub users: Vec<(String, String, bool)>,
}

impl Source {
    /// The settings and accounts of `svc`.
    pub fn of(svc: &DatabaseService, users: &[User]) -> Self {
        Self {
            tier: svc.spec.tier,
            min_scu: svc.spec.min_scu,
            max_scu: svc.spec.max_scu,
            storage_gb: svc.spec.storage_gb,
            require_tls: svc.require_tls,
            schema: svc.schema().to_owned(),
            users: users
                .iter()
                .map(|u| (u.name.to_string(), u.hash.to_string(), u.owner))
                .collect(),
        }
    }
}

impl<S: Store, R: Runtime> ControlPlane<S, R> {
    /// Records `to` as a copy of `source` on `node` and has `make` (given the copy's instance
    /// spec) make its storage and start it. Caller holds `to`'s lock.
    pub(crate) async fn make_copy<F, Fut>(
        &self,
        to: &ServiceName,
        source: &Source,
        node: String,
        message: &str,
        make: F,
    ) -> Result<(DatabaseService, Instance)>
    where
        F: FnOnce(InstanceSpec) -> Fut,
        Fut: Future<Output = stratus_runtime::Result<Instance>>,
    {
        let spec = ServiceSpec::new(
            to.clone(),
            source.tier,
            Some(source.min_scu),
            Some(source.max_scu),
            Some(source.storage_gb),
        )?;
        let now = now_ms();
        let mut users = Vec::new();
        for (n, h, owner) in &source.users {
            let hash = NativeHash::parse(h)
                .ok_or_else(|| ControlError::Internal(format!("a bad hash for user {n}")))?;
            users.push(User {
                service: to.clone(),
                name: UserName::parse(n)?,
                hash,
                owner: *owner,
                created_at_ms: now,
            });
        }
        let Some(owner) = users.iter().find(|u| u.owner).cloned() else {
            return Err(ControlError::Internal("the source has no owner".into()));
        };
        let mut svc = self.new_service(
            spec,
            source.require_tls,
            (source.schema != to.as_str()).then(|| source.schema.clone()),
        );
        svc.node = Some(node);
        self.store.create_service(&svc, &owner, message).await?;
        let made = async {
            for u in users.iter().filter(|u| !u.owner) {
                self.store.create_user(u).await?;
            }
            let instance = make(self.instance_spec(&svc)).await?;
            svc.state = DbState::Active;
            self.store.update_service(&svc).await?;
            Ok::<_, ControlError>(instance)
        }
        .await;
        match made {
            Ok(instance) => Ok((svc, instance)),
            Err(e) => {
                let _ = self.runtime.destroy(to).await;
                let _ = self.store.delete_service(to).await;
                self.event(
                    to,
                    EventKind::StartFailed,
                    &format!("{message}: failed, nothing kept: {e}"),
                    json!({}),
                )
                .await;
                Err(e)
            }
        }
    }
}
