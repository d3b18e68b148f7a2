//! What the operator asks of the Kubernetes API for one database: make its objects, resize its
//! pod in place, park and wake it by scaling its StatefulSet, grow its volume, observe its pod,
//! and remove it all. Each operation is a short, fixed sequence of requests, which the tests
//! assert one by one against a mocked API server.
//!
//! Objects are written with [server-side apply](https://kubernetes.io/docs/reference/using-api/server-side-apply/)
//! as field manager `stratus`, so applying again is harmless and a concurrent writer of other
//! fields is left alone. The Secret is the exception: it is created once and never rewritten,
//! since it holds the password the running server already knows.

use crate::instance::Instance;
use crate::objects::{self, Settings};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Secret, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use stratus_control::lifecycle::DEFAULT_OWNER;
use stratus_core::{Resources, ServiceName, UserName};
use stratus_runtime::InstanceSpec;

/// The field manager of everything Stratus writes.
pub const MANAGER: &str = "stratus";

#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// The API server answered with an error status.
    #[error("Kubernetes refused to {action} {object}: {message} ({code} {reason})")]
    Refused {
        action: &'static str,
        object: String,
        code: u16,
        reason: String,
        message: String,
    },
    /// No answer, or one that could not be read.
    #[error("cannot {action} {object}: {source}")]
    Failed {
        action: &'static str,
        object: String,
        #[source]
        source: kube::Error,
    },
    /// The Secret exists but does not hold a password (someone edited it).
    #[error("secret {0} holds no password for Stratus's login")]
    NoPassword(String),
    /// The owner's Secret is missing or does not hold a usable login.
    #[error("secret {secret}: {why}")]
    Owner { secret: String, why: String },
    /// SQL in the database's server failed, or the server could not be reached; `message`
    /// names the database.
    #[error("{message}")]
    Server { db: String, message: String },
}

impl KubeError {
    pub(crate) fn of(action: &'static str, object: impl Into<String>, e: kube::Error) -> Self {
        let object = object.into();
        match e {
            kube::Error::Api(s) => KubeError::Refused {
                action,
                object,
                code: s.code,
                reason: s.reason,
                message: s.message,
            },
            source => KubeError::Failed {
                action,
                object,
                source,
            },
        }
    }

    /// The HTTP status the API server answered with, if it answered.
    pub fn code(&self) -> Option<u16> {
        match self {
            KubeError::Refused { code, .. } => Some(*code),
            _ => None,
        }
    }
}

pub type Result<T> = std::result::Result<T, KubeError>;

/// What the pod of a database is doing, as its status says.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PodView {
    /// `Pending`, `Running`, `Failed`, …
    pub phase: String,
    pub ready: bool,
    /// The node it was scheduled to.
    pub node: Option<String>,
    /// The server container's CPU and memory as the kubelet applied them (they lag a resize).
    pub cpu_limit_millis: Option<u32>,
    pub memory_limit_bytes: Option<u64>,
    /// A resize the kubelet has not carried out: why (`Infeasible`, `Deferred`, or in progress).
    pub resize_pending: Option<String>,
    /// How often the server container was restarted (crashes).
    pub restarts: i32,
    /// Its address in the cluster, where the operator and the proxy reach the server, and the
    /// port its server container declares (`mariadb`).
    pub ip: Option<String>,
    pub port: Option<u16>,
    /// Being deleted (evicted, or its node drained).
    pub deleting: bool,
    /// Why the scheduler cannot place it (no node fits: a node named for a move that does not
    /// exist or is full, a volume the node cannot mount).
    pub unschedulable: Option<String>,
    /// The pooled server it belongs to (its [`crate::instance::INSTANCE_LABEL`]); `None` for a
    /// database's own pod.
    pub instance: Option<String>,
    /// Why its `restore` init container (a database made from a backup) failed or cannot
    /// start: its message (a checksum that failed, a backup not verified), or the kubelet's
    /// reason (a backup volume it cannot mount).
    pub restore_failed: Option<String>,
}

/// A database's StatefulSet, as far as the operator acts on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SetView {
    /// The size in its claim template, fixed when the StatefulSet was made.
    pub claim_template_bytes: u64,
    /// Pods asked for: 0 parked, 1 otherwise.
    pub replicas: i32,
    /// What was last applied ([`objects::APPLIED`]); `None` for a StatefulSet without it.
    pub applied: Option<u64>,
    /// A pooled server labelled for another database than the one it was read for, or for
    /// none: not this database's to touch.
    pub foreign: bool,
}

/// One of the warm pool's unclaimed servers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpareView {
    pub instance: Instance,
    /// Its StatefulSet's version as listed: a claim is made against it.
    pub resource_version: String,
    /// When its StatefulSet was made (Unix ms).
    pub made_ms: i64,
    pub deleting: bool,
    /// What was applied ([`objects::APPLIED`]): whether it is what this operator makes now.
    pub applied: Option<u64>,
    pub claim_template_bytes: u64,
    /// Its pod, once made.
    pub pod: Option<PodView>,
}

/// A database's volume claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ClaimView {
    pub requested_bytes: u64,
    /// Being deleted (it goes once no pod uses it).
    pub deleting: bool,
}

/// A Secret's value under `key`, as text.
fn text_of(secret: &Secret, key: &str) -> Option<String> {
    let bytes = secret.data.as_ref()?.get(key)?;
    String::from_utf8(bytes.0.clone()).ok()
}

/// The Kubernetes API, as the operator uses it for databases.
#[derive(Clone)]
pub struct KubeRuntime {
    client: Client,
    settings: Settings,
}

impl KubeRuntime {
    pub fn new(client: Client, settings: Settings) -> Self {
        Self { client, settings }
    }

    fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.settings.namespace)
    }

    /// Makes (or brings up to date) every object of a database, the Secret first since the pod
    /// mounts it. Returns Stratus's password for it.
    pub async fn apply(&self, inst: &Instance, spec: &InstanceSpec) -> Result<String> {
        self.apply_from(inst, spec, None).await
    }

    /// [`Self::apply`] for a database made from a backup ([`objects::stateful_set_from`]).
    pub async fn apply_from(
        &self,
        inst: &Instance,
        spec: &InstanceSpec,
        restore: Option<&objects::Restore>,
    ) -> Result<String> {
        let password = self.ensure_secret(inst).await?;
        let s = &self.settings;
        self.apply_one(&objects::config_map(inst, spec, s)).await?;
        self.apply_one(&objects::service(inst, s)).await?;
        self.apply_one(&objects::stateful_set_from(inst, spec, s, restore))
            .await?;
        Ok(password)
    }

    /// The password in the database's Secret, made (with a new random password) if there is
    /// none. Two operators racing here both end with the one that was created first.
    async fn ensure_secret(&self, inst: &Instance) -> Result<String> {
        if let Some(p) = self.password(inst).await? {
            return Ok(p);
        }
        let password = stratus_core::random_password();
        let secret = objects::secret(inst, &self.settings, &password);
        let name = inst.name();
        match self
            .api::<Secret>()
            .create(&PostParams::default(), &secret)
            .await
        {
            Ok(_) => Ok(password),
            Err(kube::Error::Api(s)) if s.code == 409 => self
                .password(inst)
                .await?
                .ok_or(KubeError::NoPassword(name)),
            Err(e) => Err(KubeError::of("create", format!("secret {name}"), e)),
        }
    }

    /// Stratus's password for a database, `None` when its Secret does not exist.
    pub async fn password(&self, inst: &Instance) -> Result<Option<String>> {
        let name = inst.name();
        let Some(secret) = self.secret(inst).await? else {
            return Ok(None);
        };
        let password = text_of(&secret, "password").filter(|p| !p.is_empty());
        password.map(Some).ok_or(KubeError::NoPassword(name))
    }

    /// The `ScalingPolicy` that names the database, or the default policy when none does (as
    /// on one machine). Of several, the oldest counts.
    pub async fn scaling_policy(&self, db: &ServiceName) -> Result<stratus_core::ScalingPolicy> {
        use crate::v1alpha1::ScalingPolicy;
        let all = self
            .api::<ScalingPolicy>()
            .list(&kube::api::ListParams::default())
            .await
            .map_err(|e| KubeError::of("list", "scalingpolicies", e))?;
        let mut mine: Vec<&ScalingPolicy> = all
            .items
            .iter()
            .filter(|p| p.spec.database == db.as_str())
            .collect();
        mine.sort_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0));
        Ok(mine
            .first()
            .map_or_else(Default::default, |p| p.spec.policy()))
    }

    /// The database's Secret, `None` when it does not exist, or when it is a pooled server's
    /// that is labelled for another database (or for none).
    pub async fn secret(&self, inst: &Instance) -> Result<Option<Secret>> {
        let name = inst.name();
        let secret = self
            .api::<Secret>()
            .get_opt(&name)
            .await
            .map_err(|e| KubeError::of("read", format!("secret {name}"), e))?;
        Ok(secret.filter(|s| !foreign(inst, &s.metadata)))
    }

    /// The accounts published for the proxy ([`crate::accounts`]); `None` before the first
    /// publication.
    pub async fn published_accounts(&self, inst: &Instance) -> Result<Option<String>> {
        Ok(self
            .secret(inst)
            .await?
            .and_then(|s| text_of(&s, crate::accounts::KEY)))
    }

    /// Publishes the accounts for the proxy in the database's Secret, unless it holds them
    /// already. Returns whether it wrote.
    pub async fn publish_accounts(&self, inst: &Instance, text: &str) -> Result<bool> {
        let name = inst.name();
        let Some(secret) = self.secret(inst).await? else {
            // None, or not this database's: nothing is written to it.
            return Err(KubeError::NoPassword(name));
        };
        if text_of(&secret, crate::accounts::KEY).as_deref() == Some(text) {
            return Ok(false);
        }
        let patch = serde_json::json!({"stringData": {crate::accounts::KEY: text}});
        self.api::<Secret>()
            .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .map_err(|e| KubeError::of("update", format!("secret {name}"), e))?;
        Ok(true)
    }

    /// The owner's login from Secret `name`: the one the resource names, or (`make`) the one
    /// the operator makes with a random password when it names none, owned by `owner`.
    /// Returns the user name and the password.
    pub async fn owner_login(
        &self,
        name: &str,
        make: bool,
        owner: &OwnerReference,
        db: &ServiceName,
    ) -> Result<(UserName, String)> {
        let name = name.to_owned();
        let read = |secret: Secret| -> Result<(UserName, String)> {
            let field = |key: &str| {
                text_of(&secret, key)
                    .filter(|v| !v.is_empty())
                    .ok_or_else(|| KubeError::Owner {
                        secret: name.clone(),
                        why: format!("it has no {key}"),
                    })
            };
            let user = UserName::parse(&field("username")?).map_err(|e| KubeError::Owner {
                secret: name.clone(),
                why: format!("its username cannot be a database account: {e}"),
            })?;
            Ok((user, field("password")?))
        };
        let get = || async {
            self.api::<Secret>()
                .get_opt(&name)
                .await
                .map_err(|e| KubeError::of("read", format!("secret {name}"), e))
        };
        if let Some(secret) = get().await? {
            // Left by an earlier database of the same name, not yet collected with it: its
            // password is not this database's to take.
            let stale = secret
                .metadata
                .owner_references
                .iter()
                .flatten()
                .any(|r| r.kind == "DatabaseService" && r.uid != owner.uid);
            if make && stale {
                return Err(KubeError::Owner {
                    secret: name,
                    why: "it belongs to an earlier database of this name and is being removed; \
                          it is made again once it is gone"
                        .into(),
                });
            }
            return read(secret);
        }
        if !make {
            return Err(KubeError::Owner {
                secret: name,
                why: "it does not exist (the resource's ownerSecret names it)".into(),
            });
        }
        let password = stratus_core::random_password();
        let secret = objects::owner_secret(db, &self.settings, DEFAULT_OWNER, &password, owner);
        match self
            .api::<Secret>()
            .create(&PostParams::default(), &secret)
            .await
        {
            Ok(_) => {
                let user = UserName::parse(DEFAULT_OWNER).map_err(|e| KubeError::Owner {
                    secret: name.clone(),
                    why: e.to_string(),
                })?;
                Ok((user, password))
            }
            // Made meanwhile (by another attempt): that one counts.
            Err(kube::Error::Api(s)) if s.code == 409 => match get().await? {
                Some(secret) => read(secret),
                None => Err(KubeError::Owner {
                    secret: name,
                    why: "it was made and removed at once".into(),
                }),
            },
            Err(e) => Err(KubeError::of("create", format!("secret {name}"), e)),
        }
    }

    async fn apply_one<K>(&self, obj: &K) -> Result<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Serialize
            + DeserializeOwned
            + Clone
            + Debug,
        <K as Resource>::DynamicType: Default,
    {
        let name = obj.meta().name.clone().unwrap_or_default();
        let kind = K::kind(&Default::default()).to_lowercase();
        self.api::<K>()
            .patch(
                &name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(obj),
            )
            .await
            .map_err(|e| KubeError::of("apply", format!("{kind} {name}"), e))
    }

    /// Resizes the server's container in place (the pod's `resize` subresource), then records
    /// the size in the StatefulSet's template so a recreated pod starts at it. The StatefulSet
    /// updates `OnDelete`, so that change restarts nothing. The buffer pool is the caller's, in
    /// the order `stratus_control::sizing` gives (grow the pod before the pool, shrink it after).
    pub async fn resize(&self, inst: &Instance, r: &Resources) -> Result<()> {
        let pod = inst.pod();
        self.api::<Pod>()
            .patch_subresource(
                "resize",
                &pod,
                &PatchParams::default(),
                &Patch::Strategic(objects::resize_patch(r)),
            )
            .await
            .map_err(|e| KubeError::of("resize", format!("pod {pod}"), e))?;
        let sts = inst.name();
        let template = serde_json::json!({"spec": {"template": objects::resize_patch(r)}});
        self.api::<StatefulSet>()
            .patch(&sts, &PatchParams::default(), &Patch::Strategic(template))
            .await
            .map_err(|e| KubeError::of("record the size in", format!("statefulset {sts}"), e))?;
        Ok(())
    }

    /// Parks (0) or wakes (1) a database: its StatefulSet's scale. Parked, the pod is gone and
    /// the claim stays.
    pub async fn set_replicas(&self, inst: &Instance, replicas: i32) -> Result<()> {
        let sts = inst.name();
        self.api::<StatefulSet>()
            .patch_scale(
                &sts,
                &PatchParams::default(),
                &Patch::Merge(objects::scale_patch(replicas)),
            )
            .await
            .map_err(|e| KubeError::of("scale", format!("statefulset {sts}"), e))?;
        Ok(())
    }

    /// Grows the database's volume (the storage class must allow expansion; volumes never
    /// shrink).
    pub async fn grow_storage(&self, inst: &Instance, bytes: u64) -> Result<()> {
        let pvc = inst.claim();
        self.api::<PersistentVolumeClaim>()
            .patch(
                &pvc,
                &PatchParams::default(),
                &Patch::Merge(objects::expand_patch(bytes)),
            )
            .await
            .map_err(|e| KubeError::of("expand", format!("persistentvolumeclaim {pvc}"), e))?;
        Ok(())
    }

    /// What the database's pod is doing; `None` when it has none (parked, or not scheduled yet).
    /// A pooled server's pod labelled for another database than `inst`'s is none of its.
    pub async fn observe(&self, inst: &Instance) -> Result<Option<PodView>> {
        let name = inst.pod();
        let pod = self
            .api::<Pod>()
            .get_opt(&name)
            .await
            .map_err(|e| KubeError::of("read", format!("pod {name}"), e))?;
        Ok(pod
            .filter(|p| !foreign(inst, &p.metadata))
            .map(|p| pod_view(&p)))
    }

    /// The database's StatefulSet, `None` when there is none.
    pub async fn stateful_set(&self, inst: &Instance) -> Result<Option<SetView>> {
        let name = inst.name();
        let set = self
            .api::<StatefulSet>()
            .get_opt(&name)
            .await
            .map_err(|e| KubeError::of("read", format!("statefulset {name}"), e))?;
        let applied = set
            .as_ref()
            .and_then(|set| set.metadata.annotations.as_ref())
            .and_then(|a| a.get(objects::APPLIED))
            .and_then(|hex| u64::from_str_radix(hex, 16).ok());
        let foreign = set.as_ref().is_some_and(|set| foreign(inst, &set.metadata));
        Ok(set.and_then(|set| set.spec).map(|spec| SetView {
            applied,
            foreign,
            // A StatefulSet without `replicas` has one, as the API server defaults it.
            replicas: spec.replicas.unwrap_or(1),
            claim_template_bytes: spec
                .volume_claim_templates
                .and_then(|t| t.into_iter().next())
                .and_then(|c| storage_requested(c.spec?))
                .unwrap_or(0),
        }))
    }

    /// Moves the database's pod off its node through the
    /// [eviction API](https://kubernetes.io/docs/concepts/scheduling-eviction/api-eviction/), so
    /// the server shuts down cleanly and disruption budgets are honoured; its StatefulSet makes
    /// it again where the template's node affinity now says, with the same volume. A pod
    /// already gone is no error.
    pub async fn evict(&self, inst: &Instance) -> Result<()> {
        let pod = inst.pod();
        match self.api::<Pod>().evict(&pod, &Default::default()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(KubeError::of("evict", format!("pod {pod}"), e)),
        }
    }

    /// The database's volume claim: the size asked for, `None` when there is none (or, for a
    /// pooled server, when it is not labelled for the database).
    pub async fn claim(&self, inst: &Instance) -> Result<Option<ClaimView>> {
        let name = inst.claim();
        let claim = self
            .api::<PersistentVolumeClaim>()
            .get_opt(&name)
            .await
            .map_err(|e| KubeError::of("read", format!("persistentvolumeclaim {name}"), e))?;
        Ok(claim
            .filter(|c| !foreign(inst, &c.metadata))
            .map(|c| ClaimView {
                requested_bytes: c.spec.and_then(storage_requested).unwrap_or(0),
                deleting: c.metadata.deletion_timestamp.is_some(),
            }))
    }

    /// Removes every object of a database, its volume claim last (the data goes with it).
    /// Objects already gone are no error, so a removal cut short can be run again.
    pub async fn destroy(&self, inst: &Instance) -> Result<()> {
        let name = inst.name();
        self.delete::<StatefulSet>(&name).await?;
        self.delete::<Service>(&name).await?;
        self.delete::<ConfigMap>(&name).await?;
        self.delete::<Secret>(&name).await?;
        self.delete::<PersistentVolumeClaim>(&inst.claim()).await
    }

    /// The warm pool's unclaimed servers: their StatefulSets, each with its pod as far as it
    /// is made ([`crate::operator::pool`]).
    pub async fn spares(&self) -> Result<Vec<SpareView>> {
        let params = ListParams::default().labels(crate::instance::SPARE_SELECTOR);
        let sets = self
            .api::<StatefulSet>()
            .list(&params)
            .await
            .map_err(|e| KubeError::of("list", "the warm pool's statefulsets", e))?;
        let pods = self
            .api::<Pod>()
            .list(&params)
            .await
            .map_err(|e| KubeError::of("list", "the warm pool's pods", e))?;
        let mut out = Vec::new();
        for set in sets.items {
            let name = set.metadata.name.clone().unwrap_or_default();
            // A claim relabels the StatefulSet first: one that is no longer a spare is not,
            // whatever its pod still says.
            let spare = set.metadata.labels.as_ref().is_some_and(|l| {
                l.get(crate::instance::SPARE_LABEL).map(String::as_str) == Some("true")
            });
            let Some(instance) = Instance::pooled(&name, None).filter(|_| spare) else {
                continue;
            };
            let pod = pods
                .items
                .iter()
                .find(|p| p.metadata.name.as_deref() == Some(instance.pod().as_str()))
                .map(pod_view);
            out.push(SpareView {
                resource_version: set.metadata.resource_version.clone().unwrap_or_default(),
                made_ms: set
                    .metadata
                    .creation_timestamp
                    .as_ref()
                    .map_or(0, |t| t.0.as_millisecond()),
                deleting: set.metadata.deletion_timestamp.is_some(),
                applied: set
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(objects::APPLIED))
                    .and_then(|hex| u64::from_str_radix(hex, 16).ok()),
                claim_template_bytes: set
                    .spec
                    .and_then(|s| s.volume_claim_templates)
                    .and_then(|t| t.into_iter().next())
                    .and_then(|c| storage_requested(c.spec?))
                    .unwrap_or(0),
                instance,
                pod,
            });
        }
        Ok(out)
    }

    /// The pooled server claimed by the resource `uid` of database `db`, if one is: a claim
    /// whose record in the status was lost (the operator stopped in between). Of several, none is taken (`None`): that is no
    /// state a claim leaves.
    pub async fn claimed_by(&self, db: &ServiceName, uid: &str) -> Result<Option<Instance>> {
        let selector = format!(
            "{}={db},{}",
            objects::DATABASE_LABEL,
            crate::instance::INSTANCE_LABEL
        );
        let sets = self
            .api::<StatefulSet>()
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|e| KubeError::of("list", format!("the statefulsets of {db}"), e))?;
        let mut found = sets
            .items
            .iter()
            .filter(|s| s.metadata.deletion_timestamp.is_none())
            // Claimed by this resource, not by an earlier one of the same name.
            .filter(|s| {
                s.metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(CLAIMED_BY))
                    .map(String::as_str)
                    == Some(uid)
            })
            .filter_map(|s| Instance::pooled(s.metadata.name.as_deref()?, Some(db.clone())));
        Ok(match (found.next(), found.next()) {
            (Some(one), None) => Some(one),
            _ => None,
        })
    }

    /// Claims `spare` for the database `db` (resource uid `uid`) by relabelling its
    /// StatefulSet, with the version it was listed at: a spare claimed meanwhile for another
    /// database is a 409, and `false`. The StatefulSet is the record (its annotation names the
    /// resource, so a later database of the same name never takes it up); the pod, the Secret
    /// and the volume claim follow ([`Self::finish_claim`] ends a claim cut short), then the
    /// status.
    pub async fn claim_spare(
        &self,
        spare: &SpareView,
        db: &ServiceName,
        uid: &str,
    ) -> Result<bool> {
        let name = spare.instance.name();
        let set = serde_json::json!({"metadata": {
            "resourceVersion": spare.resource_version,
            "labels": claim_labels(db),
            "annotations": {CLAIMED_BY: uid},
        }});
        match self
            .api::<StatefulSet>()
            .patch(&name, &PatchParams::default(), &Patch::Merge(set))
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => return Ok(false),
            Err(e) => return Err(KubeError::of("claim", format!("statefulset {name}"), e)),
        }
        let inst = spare.instance.claimed_by(db);
        self.relabel::<Pod>(&inst.pod(), db).await?;
        self.relabel::<Secret>(&name, db).await?;
        self.relabel::<PersistentVolumeClaim>(&inst.claim(), db)
            .await?;
        Ok(true)
    }

    /// Ends a claim cut short (the operator stopped after relabelling the StatefulSet, or a
    /// pod was made again from the spare's template before the database's was applied): the
    /// pod, Secret and volume claim of `inst` that carry no database label get its database's.
    /// For a pooled server whose StatefulSet is labelled for that database only; one labelled
    /// for another is left alone. Returns how many it relabelled.
    pub async fn finish_claim(&self, inst: &Instance) -> Result<usize> {
        let Some(db) = inst.database().filter(|_| inst.is_pooled()) else {
            return Ok(0);
        };
        let unlabelled = |meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
            let labels = meta.labels.as_ref();
            labels
                .and_then(|l| l.get(objects::DATABASE_LABEL))
                .is_none()
        };
        let mut done = 0;
        let pod = inst.pod();
        if self
            .get::<Pod>(&pod)
            .await?
            .is_some_and(|p| unlabelled(&p.metadata))
        {
            self.relabel::<Pod>(&pod, db).await?;
            done += 1;
        }
        let name = inst.name();
        if self
            .get::<Secret>(&name)
            .await?
            .is_some_and(|s| unlabelled(&s.metadata))
        {
            self.relabel::<Secret>(&name, db).await?;
            done += 1;
        }
        let claim = inst.claim();
        if self
            .get::<PersistentVolumeClaim>(&claim)
            .await?
            .is_some_and(|c| unlabelled(&c.metadata))
        {
            self.relabel::<PersistentVolumeClaim>(&claim, db).await?;
            done += 1;
        }
        Ok(done)
    }

    /// Labels object `name` for database `db` (the spare label goes); one that is gone is no
    /// error.
    async fn relabel<K>(&self, name: &str, db: &ServiceName) -> Result<()>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope> + DeserializeOwned + Clone + Debug,
        <K as Resource>::DynamicType: Default,
    {
        let patch = serde_json::json!({"metadata": {"labels": claim_labels(db)}});
        match self
            .api::<K>()
            .patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => {
                let kind = K::kind(&Default::default()).to_lowercase();
                Err(KubeError::of("claim", format!("{kind} {name}"), e))
            }
        }
    }

    async fn get<K>(&self, name: &str) -> Result<Option<K>>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope> + DeserializeOwned + Clone + Debug,
        <K as Resource>::DynamicType: Default,
    {
        self.api::<K>().get_opt(name).await.map_err(|e| {
            let kind = K::kind(&Default::default()).to_lowercase();
            KubeError::of("read", format!("{kind} {name}"), e)
        })
    }

    /// Makes a spare for the warm pool: its Secret, ConfigMap and StatefulSet (no Service:
    /// the database that claims it applies one).
    pub async fn make_spare(&self, inst: &Instance, spec: &InstanceSpec) -> Result<()> {
        self.ensure_secret(inst).await?;
        let s = &self.settings;
        self.apply_one(&objects::config_map(inst, spec, s)).await?;
        self.apply_one(&objects::stateful_set(inst, spec, s))
            .await?;
        Ok(())
    }

    /// Removes a spare with its volume, unless it was claimed since it was listed (its
    /// StatefulSet is deleted against the version listed; `false` then, and nothing else is).
    pub async fn remove_spare(&self, spare: &SpareView) -> Result<bool> {
        let name = spare.instance.name();
        let params = DeleteParams {
            preconditions: Some(kube::api::Preconditions {
                resource_version: Some(spare.resource_version.clone()),
                uid: None,
            }),
            ..DeleteParams::background()
        };
        match self.api::<StatefulSet>().delete(&name, &params).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => return Ok(false),
            Err(e) => return Err(KubeError::of("delete", format!("statefulset {name}"), e)),
        }
        self.delete::<ConfigMap>(&name).await?;
        self.delete::<Secret>(&name).await?;
        self.delete::<PersistentVolumeClaim>(&spare.instance.claim())
            .await?;
        Ok(true)
    }

    async fn delete<K>(&self, name: &str) -> Result<()>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope> + DeserializeOwned + Clone + Debug,
        <K as Resource>::DynamicType: Default,
    {
        match self
            .api::<K>()
            .delete(name, &DeleteParams::background())
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => {
                let kind = K::kind(&Default::default()).to_lowercase();
                Err(KubeError::of("delete", format!("{kind} {name}"), e))
            }
        }
    }
}

/// The annotation on a claimed spare's StatefulSet: the uid of the resource that claimed it.
pub const CLAIMED_BY: &str = "stratus.dev/claimed-by";

/// The labels a claim sets: the database's, and no more the spare's.
fn claim_labels(db: &ServiceName) -> serde_json::Value {
    serde_json::json!({
        crate::instance::SPARE_LABEL: null,
        objects::DATABASE_LABEL: db.to_string(),
    })
}

/// Whether an object read for `inst` belongs to another database: a pooled server's objects
/// count only when labelled for the database `inst` names ([`crate::instance`]). A database's
/// own objects are found by their name alone, as they always were.
fn foreign(
    inst: &Instance,
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> bool {
    if !inst.is_pooled() {
        return false;
    }
    let label = meta
        .labels
        .as_ref()
        .and_then(|l| l.get(objects::DATABASE_LABEL));
    label.map(String::as_str) != inst.database().map(|d| d.as_str())
}

/// The storage a claim (or claim template) asks for.
fn storage_requested(spec: k8s_openapi::api::core::v1::PersistentVolumeClaimSpec) -> Option<u64> {
    let q = spec.resources?.requests?.remove("storage")?;
    quantity::bytes(&q.0)
}

/// The parts of a pod's status Stratus acts on.
fn pod_view(p: &Pod) -> PodView {
    let status = p.status.as_ref();
    let server = status
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.name == "mariadb"));
    let limits = server
        .and_then(|c| c.resources.as_ref())
        .and_then(|r| r.limits.as_ref());
    let conditions = status.and_then(|s| s.conditions.as_ref());
    let condition_is = |kind: &str, value: &str| {
        conditions.and_then(|cs| cs.iter().find(|c| c.type_ == kind && c.status == value))
    };
    let condition = |kind: &str| condition_is(kind, "True");
    let resize_pending = condition("PodResizePending")
        .map(|c| c.reason.clone().unwrap_or_else(|| "pending".into()))
        .or_else(|| condition("PodResizeInProgress").map(|_| "in progress".into()));
    PodView {
        phase: status.and_then(|s| s.phase.clone()).unwrap_or_default(),
        ready: condition("Ready").is_some(),
        node: p.spec.as_ref().and_then(|s| s.node_name.clone()),
        cpu_limit_millis: limits
            .and_then(|l| l.get("cpu"))
            .and_then(|q| quantity::millicores(&q.0)),
        memory_limit_bytes: limits
            .and_then(|l| l.get("memory"))
            .and_then(|q| quantity::bytes(&q.0)),
        resize_pending,
        restarts: server.map_or(0, |c| c.restart_count),
        ip: status.and_then(|s| s.pod_ip.clone()),
        port: p
            .spec
            .as_ref()
            .and_then(|s| s.containers.iter().find(|c| c.name == "mariadb"))
            .and_then(|c| c.ports.as_ref())
            .and_then(|ps| ps.iter().find(|p| p.name.as_deref() == Some("mariadb")))
            .and_then(|p| u16::try_from(p.container_port).ok()),
        deleting: p.metadata.deletion_timestamp.is_some(),
        unschedulable: condition_is("PodScheduled", "False")
            .map(|c| c.message.clone().or(c.reason.clone()).unwrap_or_default()),
        instance: p
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(crate::instance::INSTANCE_LABEL))
            .cloned(),
        restore_failed: status
            .and_then(|s| s.init_container_statuses.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.name == "restore"))
            .and_then(restore_failure),
    }
}

/// Why a `restore` init container failed, from its state or its last one: an exit with an error
/// (its log's tail, the termination message), or a wait for a reason other than its turn.
fn restore_failure(c: &k8s_openapi::api::core::v1::ContainerStatus) -> Option<String> {
    let failed = |s: &k8s_openapi::api::core::v1::ContainerState| {
        let t = s.terminated.as_ref().filter(|t| t.exit_code != 0)?;
        let text = t.message.clone().or(t.reason.clone()).unwrap_or_default();
        let last: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        Some(last[last.len().saturating_sub(3)..].join(" / "))
    };
    let stuck = |s: &k8s_openapi::api::core::v1::ContainerState| {
        let w = s.waiting.as_ref()?;
        let reason = w.reason.as_deref().unwrap_or_default();
        (reason != "PodInitializing" && reason != "ContainerCreating" && !reason.is_empty())
            .then(|| format!("{reason}: {}", w.message.clone().unwrap_or_default()))
    };
    let now = c.state.as_ref();
    now.and_then(failed)
        .or_else(|| c.last_state.as_ref().and_then(failed))
        .or_else(|| now.and_then(stuck))
}

/// Reading Kubernetes [quantities](https://kubernetes.io/docs/reference/kubernetes-api/common-definitions/quantity/)
/// as the API server writes them back: CPU in cores or millicores, memory in bytes with an
/// optional binary or decimal suffix. Anything else is `None`, never a guess.
pub mod quantity {
    pub fn millicores(q: &str) -> Option<u32> {
        if let Some(m) = q.strip_suffix('m') {
            return m.parse().ok();
        }
        let cores: f64 = q.parse().ok()?;
        let m = (cores * 1000.0).round();
        (m >= 0.0 && m <= f64::from(u32::MAX)).then_some(m as u32)
    }

    pub fn bytes(q: &str) -> Option<u64> {
        const SUFFIXES: [(&str, u64); 10] = [
            ("Ki", 1 << 10),
            ("Mi", 1 << 20),
            ("Gi", 1 << 30),
            ("Ti", 1 << 40),
            ("Pi", 1 << 50),
            ("k", 1_000),
            ("M", 1_000_000),
            ("G", 1_000_000_000),
            ("T", 1_000_000_000_000),
            ("P", 1_000_000_000_000_000),
        ];
        for (suffix, unit) in SUFFIXES {
            if let Some(n) = q.strip_suffix(suffix) {
                return n.parse::<u64>().ok()?.checked_mul(unit);
            }
        }
        q.parse().ok()
    }
}

#[cfg(test)]
mod tests;
