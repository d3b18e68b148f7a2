//! Leader election, so that two operator replicas are safe: only the holder of a
//! [`Lease`](https://kubernetes.io/docs/concepts/architecture/leases/) runs the controllers.
//!
//! The holder renews the lease every third of its duration; another replica takes it over only
//! once it has seen the lease unchanged for the whole duration, timed by its own clock (as
//! client-go does: the holder's `renewTime` is another machine's clock, and skew between the two
//! would shorten the wait). Every write carries the version that was read, so of two replicas
//! racing for it exactly one wins (the other gets 409). A holder that cannot renew in time stops
//! leading before anyone else may start (`operator::run`). On shutdown the holder gives the lease
//! up, so its successor need not wait.

use crate::runtime::{KubeError, Result};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use std::time::Duration;

/// What to do about the lease, given what it says now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// There is none: create it, held by us.
    Create,
    /// Ours: renew it.
    Renew,
    /// Another's, unrenewed for its whole duration (or given up): take it over.
    TakeOver,
    /// Another's, and alive.
    Follow { holder: String },
}

/// Decides from the lease as read, and how long this replica has seen it unchanged (`None`: it
/// just changed, or was never seen before). Pure.
pub fn decide(lease: Option<&LeaseSpec>, me: &str, unchanged_for: Option<Duration>) -> Decision {
    let Some(spec) = lease else {
        return Decision::Create;
    };
    let holder = spec.holder_identity.clone().unwrap_or_default();
    if holder == me {
        return Decision::Renew;
    }
    if holder.is_empty() {
        return Decision::TakeOver;
    }
    let duration =
        Duration::from_secs(u64::try_from(spec.lease_duration_seconds.unwrap_or(0)).unwrap_or(0));
    match unchanged_for {
        Some(d) if d >= duration => Decision::TakeOver,
        _ => Decision::Follow { holder },
    }
}

/// One replica's view of the election.
pub struct Elector {
    api: Api<Lease>,
    name: String,
    /// This replica (its pod's name).
    pub identity: String,
    pub duration: Duration,
    /// The lease as last read (its version) and when this replica first saw it so.
    seen: std::sync::Mutex<Option<(String, tokio::time::Instant)>>,
}

impl Elector {
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
        duration: Duration,
    ) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.into(),
            identity: identity.into(),
            duration,
            seen: std::sync::Mutex::new(None),
        }
    }

    /// How long the lease has been seen at `version`; `None` when it just changed.
    fn unchanged_for(&self, version: Option<&str>) -> Option<Duration> {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let version = version.unwrap_or_default();
        match seen.as_ref() {
            Some((v, since)) if v == version => Some(since.elapsed()),
            _ => {
                *seen = Some((version.to_owned(), tokio::time::Instant::now()));
                None
            }
        }
    }

    /// Reads the lease and acts on it; returns whether this replica leads now. A write that
    /// loses a race (409) means another replica leads. `now` is what the lease records.
    pub async fn try_lead(&self, now: Timestamp) -> Result<bool> {
        let object = format!("lease {}", self.name);
        let current = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(|e| KubeError::of("read", object.clone(), e))?;
        let spec = current.as_ref().and_then(|l| l.spec.as_ref());
        let unchanged = self.unchanged_for(
            current
                .as_ref()
                .and_then(|l| l.metadata.resource_version.as_deref()),
        );
        let decision = decide(spec, &self.identity, unchanged);
        let lease = match (&decision, &current) {
            (Decision::Follow { .. }, _) => return Ok(false),
            (Decision::Create, _) => Lease {
                metadata: kube::api::ObjectMeta {
                    name: Some(self.name.clone()),
                    ..Default::default()
                },
                spec: Some(self.held(now, now, 0)),
            },
            (Decision::Renew, Some(old)) => {
                let spec = old.spec.clone().unwrap_or_default();
                let acquired = spec.acquire_time.map_or(now, |t| t.0);
                let mut lease = old.clone();
                lease.spec = Some(self.held(acquired, now, spec.lease_transitions.unwrap_or(0)));
                lease
            }
            (Decision::TakeOver, Some(old)) => {
                let transitions = old
                    .spec
                    .as_ref()
                    .and_then(|s| s.lease_transitions)
                    .unwrap_or(0);
                let mut lease = old.clone();
                lease.spec = Some(self.held(now, now, transitions + 1));
                lease
            }
            (Decision::Renew | Decision::TakeOver, None) => return Ok(false),
        };
        let written = if decision == Decision::Create {
            self.api.create(&PostParams::default(), &lease).await
        } else {
            // Carries the version read: a lease changed meanwhile is a 409.
            self.api
                .replace(&self.name, &PostParams::default(), &lease)
                .await
        };
        match written {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(KubeError::of("write", object, e)),
        }
    }

    /// Gives the lease up if this replica holds it (on shutdown): a successor need not wait
    /// for it to expire.
    pub async fn step_down(&self) -> Result<()> {
        let object = format!("lease {}", self.name);
        let Some(lease) = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(|e| KubeError::of("read", object.clone(), e))?
        else {
            return Ok(());
        };
        let ours = lease
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.as_deref())
            == Some(self.identity.as_str());
        if !ours {
            return Ok(());
        }
        let patch = json!({"metadata": {"resourceVersion": lease.resource_version()},
                           "spec": {"holderIdentity": null}});
        match self
            .api
            .patch(
                &self.name,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(patch),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
            Err(e) => Err(KubeError::of("give up", object, e)),
        }
    }

    fn held(&self, acquired: Timestamp, now: Timestamp, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.duration.as_secs().try_into().unwrap_or(i32::MAX)),
            acquire_time: Some(MicroTime(acquired)),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }
}

#[cfg(test)]
mod tests;
