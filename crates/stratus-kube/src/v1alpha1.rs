//! Version `v1alpha1` of the Stratus resources, in group [`stratus.dev`](crate::GROUP).
//!
//! The objects are the ones `stratus up` keeps in its catalog, with the same fields as its API
//! and its TOML configuration, spelled the Kubernetes way (camelCase: `minScu` for `min_scu`),
//! as every other resource a `kubectl` user meets is. Each spec converts to and from its core
//! type ([`stratus_core`]), and tests pin that every core field has its field here. Every field
//! a user may leave out is optional, so objects written for this version keep parsing when
//! `v1beta1` is added beside it and converted from it
//! ([versioning](https://kubernetes.io/docs/tasks/extend-kubernetes/custom-resources/custom-resource-definition-versioning/)).
//!
//! What the API server checks, written into the schema: names a database can take, ranges,
//! `minScu ≤ maxScu` and the tier's cap (CEL rules, the same bounds as
//! [`stratus_core::ServiceSpec::validate`], which a test compares case by case); the operator
//! checks everything again.

// Each `printcolumn(...)` says `type_ = …` for its own column; clippy reads them as one list.
#![allow(clippy::duplicated_attributes)]

use kube::core::Message;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};
use stratus_core::names::SERVICE_NAME_MAX;
use stratus_core::{ServiceName, Tier};

/// A database: one `mariadbd` with its volume, grown and shrunk between its minimum and maximum
/// size, suspended when idle, parked after a while, woken by any statement.
#[derive(CustomResource, KubeSchema, Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[kube(
    group = "stratus.dev",
    version = "v1alpha1",
    kind = "DatabaseService",
    namespaced,
    shortname = "sdb",
    category = "stratus",
    status = "DatabaseServiceStatus",
    doc = "A serverless MariaDB database",
    printcolumn(name = "Tier", type_ = "string", json_path = ".spec.tier"),
    printcolumn(name = "State", type_ = "string", json_path = ".status.state"),
    printcolumn(name = "SCU", type_ = "integer", json_path = ".status.scu",
        description = "Size now, in Stratus compute units"),
    printcolumn(name = "Min", type_ = "integer", json_path = ".spec.minScu", priority = 1),
    printcolumn(name = "Max", type_ = "integer", json_path = ".spec.maxScu", priority = 1),
    printcolumn(name = "Node", type_ = "string", json_path = ".status.node"),
    printcolumn(name = "Clients", type_ = "integer", json_path = ".status.clients"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new(name_rule()).message(name_message()),
)]
#[x_kube(validation = Rule::new(
    "!has(self.minScu) || !has(self.maxScu) || self.minScu <= self.maxScu"
).message("minScu must not be greater than maxScu"))]
#[x_kube(validation = Rule::new(free_cap_rule()).message(free_cap_message()))]
#[x_kube(validation = Rule::new(
    "has(self.restoreFrom) == has(oldSelf.restoreFrom) && \
     (!has(self.restoreFrom) || self.restoreFrom == oldSelf.restoreFrom)"
).message("restoreFrom is given when a database is made, and cannot change"))]
#[x_kube(validation = Rule::new("!has(self.restoreFrom) || !has(self.ownerSecret)")
    .message("a database made from a backup has the backup's accounts: restoreFrom and ownerSecret exclude each other"))]
#[serde(rename_all = "camelCase")]
pub struct DatabaseServiceSpec {
    /// What the database may grow to: `free` (at most 2 SCU) or `standard` (at most 16).
    #[serde(default)]
    pub tier: Tier,
    /// Smallest size, in SCU; 1 when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = Tier::STANDARD_MAX_SCU))]
    pub min_scu: Option<u32>,
    /// Largest size, in SCU; the tier's cap when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = Tier::STANDARD_MAX_SCU))]
    pub max_scu: Option<u32>,
    /// Storage limit in GB; 10 when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65536))]
    pub storage_gb: Option<u32>,
    /// Clients must use TLS.
    #[serde(default)]
    pub require_tls: bool,
    /// A Secret of type `kubernetes.io/basic-auth` in the same namespace whose `username` and
    /// `password` are the owner's account; when left out the operator makes `<name>-owner` with
    /// a random password. Only the password's hash reaches the database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub owner_secret: Option<String>,
    /// `active` when left out; `suspended` keeps the server but empties it (sessions closed,
    /// buffer pool and CPU at their floors); `parked` keeps only the volume. What `stratus db
    /// suspend`, `db park` and `db resume` ask for on one machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<Lifecycle>,
    /// The node (the Node object's name) to run on; changing it moves the database there.
    /// Left out, the scheduler places it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub node: Option<String>,
    /// Make the database from a backup a `BackupSchedule` took: its data, schema and accounts
    /// as they were then (the owner logs in with the source's password). Given when the
    /// database is made; it cannot change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_from: Option<RestoreFrom>,
}

/// A backup on a backup volume: `<claim>/<database>/<backup>/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[x_kube(validation = Rule::new("!self.claim.startsWith('data-db-') && !self.claim.startsWith('data-spare-')")
    .message("claim names a backup volume, never a database's own"))]
#[serde(rename_all = "camelCase")]
pub struct RestoreFrom {
    /// The PersistentVolumeClaim the backup is on (a schedule's `target`).
    #[schemars(length(min = 1, max = 253))]
    pub claim: String,
    /// The backup's id, as its schedule's `status.lastBackup` or the directory names it:
    /// `<database>-<UTC time>`, e.g. `shop-20261130T030005000Z`.
    #[schemars(length(min = 1, max = 80))]
    pub backup: String,
}

/// The state a user asks a database to be in.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Lifecycle {
    #[default]
    Active,
    Suspended,
    Parked,
}

impl DatabaseServiceSpec {
    /// The core spec of database `name`, with the defaults `stratus db create` gives and its
    /// checks: what the operator provisions.
    pub fn service_spec(
        &self,
        name: ServiceName,
    ) -> Result<stratus_core::ServiceSpec, stratus_core::service::SpecError> {
        stratus_core::ServiceSpec::new(name, self.tier, self.min_scu, self.max_scu, self.storage_gb)
    }
}

/// What `stratus db show` shows, kept up to date by the operator.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseServiceStatus {
    /// `provisioning`, `active`, `suspended`, `parked`, `migrating` or `deleted`.
    #[serde(default)]
    pub state: String,
    /// Size now, in SCU.
    #[serde(default)]
    pub scu: u32,
    /// The node its server runs on.
    #[serde(default)]
    pub node: String,
    /// Where clients connect (the proxy's Service), and the schema to use.
    #[serde(default)]
    pub host: String,
    #[serde(default)]
    pub port: u16,
    #[serde(default)]
    pub database: String,
    /// CPU quota in vCPU and memory limit in bytes, as enforced.
    #[serde(default)]
    pub cpu_limit: f64,
    #[serde(default)]
    pub memory_limit_bytes: u64,
    /// InnoDB buffer pool size the server was given (on Kubernetes: set through SQL by the
    /// operator, and read back; a server that took less says so in a `BufferPoolLimited` Event).
    #[serde(default)]
    pub buffer_pool_bytes: u64,
    /// Bytes in use on its volume, and the volume's size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_used_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_limit_bytes: Option<u64>,
    /// Client connections through the proxy (on Kubernetes not yet counted: each proxy
    /// replica's `/metrics` has its own).
    #[serde(default)]
    pub clients: u64,
    /// Its schema and its owner's account were made (once, when its server first ran).
    #[serde(default)]
    pub owner_created: bool,
    /// When it was suspended (RFC 3339): the start of its time to park.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspended_at: Option<String>,
    /// A move to another node under way: the node, and the phase it is in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moving: Option<Moving>,
    /// The spec's `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Why the operator cannot do what the spec asks, in one line (state `invalid` or
    /// `failed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The warm pool's server it took (`spare-<id>`): the name of its StatefulSet, pod and
    /// volume claim. Left out when they are named after the database (`db-<name>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Moving {
    pub to: String,
    /// `starting`, `copy`, `catch-up`, `cut-over` or `clean-up`.
    pub phase: String,
}

impl From<&stratus_control::DatabaseView> for DatabaseServiceStatus {
    fn from(v: &stratus_control::DatabaseView) -> Self {
        Self {
            state: v.state.clone(),
            scu: v.scu,
            node: v.node.clone(),
            host: v.host.clone(),
            port: v.port,
            database: v.database.clone(),
            cpu_limit: v.cpu_limit,
            memory_limit_bytes: v.memory_limit,
            buffer_pool_bytes: v.buffer_pool_size,
            storage_used_bytes: v.storage_used_bytes,
            storage_limit_bytes: v.storage_limit_bytes,
            clients: v.activity.connections,
            // A database `stratus up` shows was made with its owner.
            owner_created: true,
            suspended_at: None,
            moving: v.moving.as_ref().map(|m| Moving {
                to: m.to.clone(),
                phase: m.phase.clone(),
            }),
            observed_generation: None,
            message: None,
            instance: None,
        }
    }
}

/// How one database is scaled, suspended and parked (like a HorizontalPodAutoscaler, it names
/// its target): [`stratus_core::ScalingPolicy`], whose defaults fill what is left out. A
/// database without one gets the installation's default policy.
#[derive(CustomResource, KubeSchema, Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[kube(
    group = "stratus.dev",
    version = "v1alpha1",
    kind = "ScalingPolicy",
    namespaced,
    shortname = "ssp",
    category = "stratus",
    doc = "How a Stratus database is scaled, suspended and parked",
    printcolumn(name = "Database", type_ = "string", json_path = ".spec.database"),
    printcolumn(
        name = "Up %",
        type_ = "integer",
        json_path = ".spec.scaleUpThresholdPct"
    ),
    printcolumn(
        name = "Down %",
        type_ = "integer",
        json_path = ".spec.scaleDownThresholdPct"
    ),
    printcolumn(
        name = "Suspend after ms",
        type_ = "integer",
        json_path = ".spec.idleToSuspendMs"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new(thresholds_rule())
    .message("scaleDownThresholdPct must be below scaleUpThresholdPct (defaults 20 and 90)"))]
#[serde(rename_all = "camelCase")]
pub struct ScalingPolicySpec {
    /// The DatabaseService it applies to, in the same namespace.
    #[schemars(length(min = 1, max = 40))]
    pub database: String,
    /// How often the CPU use of the database is sampled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 10))]
    pub sample_interval_ms: Option<u64>,
    /// CPU use, in percent of the allocation, at or above which the database grows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub scale_up_threshold_pct: Option<u32>,
    /// How long the use must stay at or above that.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_up_window_ms: Option<u64>,
    /// CPU use, in percent of the allocation, at or below which the database shrinks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 100))]
    pub scale_down_threshold_pct: Option<u32>,
    /// How long the use must stay at or below that.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_down_window_ms: Option<u64>,
    /// Idle time (no statement running, no transaction, no pinned session) before suspending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_to_suspend_ms: Option<u64>,
    /// Time suspended before parking (the server stops, its volume is kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend_to_park_ms: Option<u64>,
}

impl ScalingPolicySpec {
    /// The policy it asks for, the core's defaults where it says nothing.
    pub fn policy(&self) -> stratus_core::ScalingPolicy {
        let d = stratus_core::ScalingPolicy::default();
        stratus_core::ScalingPolicy {
            sample_interval_ms: self.sample_interval_ms.unwrap_or(d.sample_interval_ms),
            scale_up_threshold_pct: self
                .scale_up_threshold_pct
                .unwrap_or(d.scale_up_threshold_pct),
            scale_up_window_ms: self.scale_up_window_ms.unwrap_or(d.scale_up_window_ms),
            scale_down_threshold_pct: self
                .scale_down_threshold_pct
                .unwrap_or(d.scale_down_threshold_pct),
            scale_down_window_ms: self.scale_down_window_ms.unwrap_or(d.scale_down_window_ms),
            idle_to_suspend_ms: self.idle_to_suspend_ms.unwrap_or(d.idle_to_suspend_ms),
            suspend_to_park_ms: self.suspend_to_park_ms.unwrap_or(d.suspend_to_park_ms),
        }
    }

    /// `policy` for `database`, every field written out.
    pub fn of(database: &str, policy: &stratus_core::ScalingPolicy) -> Self {
        Self {
            database: database.to_owned(),
            sample_interval_ms: Some(policy.sample_interval_ms),
            scale_up_threshold_pct: Some(policy.scale_up_threshold_pct),
            scale_up_window_ms: Some(policy.scale_up_window_ms),
            scale_down_threshold_pct: Some(policy.scale_down_threshold_pct),
            scale_down_window_ms: Some(policy.scale_down_window_ms),
            idle_to_suspend_ms: Some(policy.idle_to_suspend_ms),
            suspend_to_park_ms: Some(policy.suspend_to_park_ms),
        }
    }
}

/// When one database is backed up, and how long backups are kept (it names its target, as a
/// CronJob names its job): [`stratus_core::BackupSchedule`], whose defaults fill what is left
/// out.
#[derive(CustomResource, KubeSchema, Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[kube(
    group = "stratus.dev",
    version = "v1alpha1",
    kind = "BackupSchedule",
    namespaced,
    shortname = "sbs",
    category = "stratus",
    status = "BackupScheduleStatus",
    doc = "When a Stratus database is backed up, and for how long backups are kept",
    printcolumn(name = "Database", type_ = "string", json_path = ".spec.database"),
    printcolumn(name = "Cron", type_ = "string", json_path = ".spec.cron"),
    printcolumn(
        name = "Retention days",
        type_ = "integer",
        json_path = ".spec.retentionDays"
    ),
    printcolumn(
        name = "Last backup",
        type_ = "string",
        json_path = ".status.lastBackup"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new(
    "!has(self.target) || (!self.target.startsWith('data-db-') && !self.target.startsWith('data-spare-'))"
).message("target names the claim backups go to, never a database's own volume"))]
#[serde(rename_all = "camelCase")]
pub struct BackupScheduleSpec {
    /// The DatabaseService it applies to, in the same namespace.
    #[schemars(length(min = 1, max = 40))]
    pub database: String,
    /// Cron expression in UTC (five fields, or six with seconds); empty turns scheduled
    /// backups off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    /// Backups older than this are deleted, except the newest verified one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub retention_days: Option<u32>,
    /// At most this many backups are kept, the newest (0: no limit but their age).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_last: Option<u32>,
    /// The PersistentVolumeClaim backups go to (`ReadWriteMany`: every database's node mounts
    /// it), `backups` when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub target: Option<String>,
    /// Cron expression in UTC for incremental backups between the full ones; empty: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incremental_cron: Option<String>,
}

impl BackupScheduleSpec {
    /// The schedule it asks for, the core's defaults where it says nothing.
    pub fn schedule(&self) -> stratus_core::BackupSchedule {
        let d = stratus_core::BackupSchedule::default();
        stratus_core::BackupSchedule {
            cron: self.cron.clone().unwrap_or(d.cron),
            retention_days: self.retention_days.unwrap_or(d.retention_days),
            keep_last: self.keep_last.unwrap_or(d.keep_last),
            target: self.target.clone().unwrap_or(d.target),
            incremental_cron: self.incremental_cron.clone().unwrap_or(d.incremental_cron),
        }
    }

    /// `schedule` for `database`, every field written out.
    pub fn of(database: &str, schedule: &stratus_core::BackupSchedule) -> Self {
        Self {
            database: database.to_owned(),
            cron: Some(schedule.cron.clone()),
            retention_days: Some(schedule.retention_days),
            keep_last: Some(schedule.keep_last),
            target: Some(schedule.target.clone()),
            incremental_cron: Some(schedule.incremental_cron.clone()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupScheduleStatus {
    /// The id of the newest verified backup the schedule made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup: Option<String>,
    /// When the next one is due (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_run: Option<String>,
    /// When the last backup was started (RFC 3339): the next is due at the schedule's first
    /// time after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<String>,
    /// The backup under way, if any (its Job is `<database>-backup-<time>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running: Option<String>,
    /// The id of the newest backup that failed, while no later one succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<String>,
    /// Why that backup failed, or why none can be taken now, in one line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// A database name as [`stratus_core::ServiceName::parse_new`] takes it: lowercase letters,
/// digits and `-`, starting with a letter, not ending with `-`, at most 40 characters (a subset
/// of the DNS labels Kubernetes names already are), and not a reserved name.
fn name_rule() -> String {
    let reserved: Vec<String> = stratus_core::names::reserved_database_names()
        .map(|n| format!("'{n}'"))
        .collect();
    format!(
        "self.metadata.name.matches('^[a-z]([-a-z0-9]{{0,{}}}[a-z0-9])?$') && \
         !(self.metadata.name in [{}])",
        SERVICE_NAME_MAX - 2,
        reserved.join(", ")
    )
}

fn name_message() -> Message {
    Message::Message(format!(
        "a database name is 1 to {SERVICE_NAME_MAX} lowercase letters, digits and '-', starting \
         with a letter and not ending with '-', and not one Stratus or MariaDB uses itself"
    ))
}

/// Scale-down below scale-up, each left out being the core's default.
fn thresholds_rule() -> String {
    let d = stratus_core::ScalingPolicy::default();
    format!(
        "(has(self.scaleDownThresholdPct) ? self.scaleDownThresholdPct : {}) < \
         (has(self.scaleUpThresholdPct) ? self.scaleUpThresholdPct : {})",
        d.scale_down_threshold_pct, d.scale_up_threshold_pct
    )
}

/// The free tier's cap, on the size asked for (a left-out `maxScu` is the cap itself).
fn free_cap_rule() -> String {
    format!(
        "self.tier != 'free' || ((!has(self.maxScu) || self.maxScu <= {cap}) && \
         (!has(self.minScu) || self.minScu <= {cap}))",
        cap = Tier::Free.max_scu()
    )
}

fn free_cap_message() -> Message {
    Message::Message(format!(
        "the free tier's databases grow to at most {} SCU",
        Tier::Free.max_scu()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;
    use serde_json::{Value, json};

    fn schema(crd: &crate::CustomResourceDefinition) -> Value {
        let v = &crd.spec.versions[0];
        serde_json::to_value(&v.schema.as_ref().unwrap().open_api_v3_schema).unwrap()
    }

    /// The API server's verdict on an object, as far as the schema's CEL rules go.
    fn admitted(schema: &Value, object: &Value) -> Result<(), String> {
        kube_cel::validate(schema, object, None).map_err(|e| format!("{e:?}"))
    }

    fn db(name: &str, spec: Value) -> Value {
        json!({"apiVersion": "stratus.dev/v1alpha1", "kind": "DatabaseService",
               "metadata": {"name": name}, "spec": spec})
    }

    /// For every tier and size a user could write, the schema's rules admit exactly what
    /// `stratus db create` accepts.
    #[test]
    fn the_schema_admits_exactly_the_sizes_the_core_accepts() {
        let schema = schema(&DatabaseService::crd());
        let sizes = || std::iter::once(None).chain((1..=17).map(Some));
        let mut checked = 0;
        for tier in [Tier::Free, Tier::Standard] {
            for min in sizes() {
                for max in sizes() {
                    let spec = DatabaseServiceSpec {
                        tier,
                        min_scu: min,
                        max_scu: max,
                        ..DatabaseServiceSpec::default()
                    };
                    let core = spec.service_spec(ServiceName::parse("shop").unwrap());
                    // Ranges are the schema's `minimum`/`maximum`, which the API server
                    // checks before any rule; only sizes inside them reach the rules.
                    let in_range = |v: Option<u32>| v.is_none_or(|v| v <= Tier::STANDARD_MAX_SCU);
                    if !in_range(min) || !in_range(max) {
                        assert!(core.is_err(), "{spec:?}");
                        continue;
                    }
                    let object = db("shop", serde_json::to_value(&spec).unwrap());
                    let verdict = admitted(&schema, &object);
                    assert_eq!(
                        verdict.is_ok(),
                        core.is_ok(),
                        "{spec:?}: {verdict:?} / {core:?}"
                    );
                    checked += 1;
                }
            }
        }
        assert!(checked > 500, "{checked}");
    }

    /// What a user may ask a database to be, and where: the API server refuses anything else
    /// before the operator sees it.
    #[test]
    fn the_state_and_node_a_user_asks_for_are_checked_by_the_schema() {
        let schema = schema(&DatabaseService::crd());
        let spec = &schema["properties"]["spec"]["properties"];
        // Left out is `active`; kube marks an optional field nullable, and lists null with it.
        assert_eq!(
            (&spec["state"]["enum"], &spec["state"]["nullable"]),
            (
                &json!(["active", "suspended", "parked", null]),
                &json!(true)
            ),
            "{spec}"
        );
        assert_eq!(
            (&spec["node"]["minLength"], &spec["node"]["maxLength"]),
            (&json!(1), &json!(253))
        );
        let parsed: DatabaseServiceSpec =
            serde_json::from_value(json!({"tier": "free", "state": "parked", "node": "node-b"}))
                .unwrap();
        assert_eq!(
            (parsed.state, parsed.node.as_deref()),
            (Some(Lifecycle::Parked), Some("node-b"))
        );
        assert!(serde_json::from_value::<DatabaseServiceSpec>(json!({"state": "asleep"})).is_err());
    }

    #[test]
    fn a_name_no_database_can_take_is_refused_with_the_reason() {
        let schema = schema(&DatabaseService::crd());
        let spec = json!({"tier": "free"});
        for good in ["shop", "a", "shop-2", &"a".repeat(40)] {
            assert_eq!(admitted(&schema, &db(good, spec.clone())), Ok(()), "{good}");
            assert!(ServiceName::parse(good).is_ok());
        }
        for bad in ["2shop", "shop-", &"a".repeat(41), "-shop", "shop.eu"] {
            let why = admitted(&schema, &db(bad, spec.clone())).unwrap_err();
            assert!(why.contains("lowercase letters"), "{bad}: {why}");
            assert!(ServiceName::parse(bad).is_err(), "{bad}");
        }
        for reserved in ["mysql", "sys", "stratus", "template", "tls", "databases"] {
            let why = admitted(&schema, &db(reserved, spec.clone())).unwrap_err();
            assert!(why.contains("uses itself"), "{reserved}: {why}");
            assert!(ServiceName::parse_new(reserved).is_err(), "{reserved}");
        }
    }

    #[test]
    fn a_policy_that_would_scale_down_above_its_scale_up_is_refused() {
        let schema = schema(&ScalingPolicy::crd());
        let policy = |spec: Value| {
            json!({"apiVersion": "stratus.dev/v1alpha1", "kind": "ScalingPolicy",
                   "metadata": {"name": "p"}, "spec": spec})
        };
        let ok = [
            json!({"database": "shop", "scaleUpThresholdPct": 90, "scaleDownThresholdPct": 20}),
            json!({"database": "shop"}),
            json!({"database": "shop", "scaleDownThresholdPct": 50}),
        ];
        for spec in ok {
            assert_eq!(admitted(&schema, &policy(spec.clone())), Ok(()), "{spec}");
        }
        let refused = [
            json!({"database": "shop", "scaleUpThresholdPct": 50, "scaleDownThresholdPct": 60}),
            // Against the defaults: scale-up at 90 %, scale-down at 20 %.
            json!({"database": "shop", "scaleDownThresholdPct": 95}),
            json!({"database": "shop", "scaleUpThresholdPct": 15}),
        ];
        for spec in refused {
            let why = admitted(&schema, &policy(spec.clone())).unwrap_err();
            assert!(why.contains("below scaleUpThresholdPct"), "{spec}: {why}");
        }
    }

    /// `restoreFrom` says what a database is made from: given at creation, never changed after,
    /// and never a database's own volume.
    #[test]
    fn a_restore_is_given_once_and_only_from_a_backup_volume() {
        let schema = schema(&DatabaseService::crd());
        let from = |claim: &str| {
            db(
                "shop-copy",
                json!({"restoreFrom": {"claim": claim, "backup": "shop-20261130T030005000Z"}}),
            )
        };
        assert_eq!(admitted(&schema, &from("stratus-backups")), Ok(()));
        // A database's own volume, or a spare's (which a database may have claimed).
        for volume in ["data-db-shop-0", "data-spare-1a2b3c4d-0"] {
            let why = admitted(&schema, &from(volume)).unwrap_err();
            assert!(why.contains("never a database's own"), "{why}");
        }
        let update = |new: &Value, old: &Value| {
            kube_cel::validate(&schema, new, Some(old)).map_err(|e| format!("{e:?}"))
        };
        let with_owner = db(
            "shop-copy",
            json!({"ownerSecret": "login",
                   "restoreFrom": {"claim": "stratus-backups", "backup": "shop-20261130T030005000Z"}}),
        );
        let why = admitted(&schema, &with_owner).unwrap_err();
        assert!(why.contains("exclude each other"), "{why}");
        let plain = db("shop-copy", json!({}));
        assert_eq!(
            update(&from("stratus-backups"), &from("stratus-backups")),
            Ok(())
        );
        assert_eq!(update(&plain, &plain), Ok(()));
        for (new, old) in [
            (from("other-backups"), from("stratus-backups")),
            (from("stratus-backups"), plain.clone()),
            (plain.clone(), from("stratus-backups")),
        ] {
            let why = update(&new, &old).unwrap_err();
            assert!(why.contains("cannot change"), "{why}");
        }
    }

    /// A schedule's `target` is written to by every backup Job (and pruned): never a database's
    /// own volume, which a Job on that node could otherwise mount read-write.
    #[test]
    fn a_backup_target_that_is_a_databases_volume_is_refused() {
        let schema = schema(&BackupSchedule::crd());
        let schedule = |spec: Value| {
            json!({"apiVersion": "stratus.dev/v1alpha1", "kind": "BackupSchedule",
                   "metadata": {"name": "nightly"}, "spec": spec})
        };
        for spec in [
            json!({"database": "shop"}),
            json!({"database": "shop", "target": "stratus-backups"}),
        ] {
            assert_eq!(admitted(&schema, &schedule(spec.clone())), Ok(()), "{spec}");
        }
        for volume in ["data-db-other-0", "data-spare-1a2b3c4d-0"] {
            let why = admitted(
                &schema,
                &schedule(json!({"database": "shop", "target": volume})),
            )
            .unwrap_err();
            assert!(why.contains("never a database's own volume"), "{why}");
        }
    }

    /// Every field of the core objects is a field of the resource, and comes back unchanged.
    #[test]
    fn specs_carry_every_field_of_the_core_objects() {
        let policy = stratus_core::ScalingPolicy {
            sample_interval_ms: 100,
            scale_up_threshold_pct: 80,
            scale_up_window_ms: 2_000,
            scale_down_threshold_pct: 10,
            scale_down_window_ms: 60_000,
            idle_to_suspend_ms: 5_000,
            suspend_to_park_ms: 1_000,
        };
        let spec = ScalingPolicySpec::of("shop", &policy);
        let json = serde_json::to_value(&spec).unwrap();
        let back: ScalingPolicySpec = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(back.policy(), policy);
        let core_fields = |v: Value| v.as_object().unwrap().len();
        assert_eq!(
            json.as_object().unwrap().len() - 1,
            core_fields(serde_json::to_value(&policy).unwrap()),
            "{json}"
        );
        let schedule = stratus_core::BackupSchedule {
            cron: "0 4 * * *".into(),
            retention_days: 3,
            keep_last: 5,
            target: "elsewhere".into(),
            incremental_cron: "0 * * * *".into(),
        };
        let spec = BackupScheduleSpec::of("shop", &schedule);
        let json = serde_json::to_value(&spec).unwrap();
        let back: BackupScheduleSpec = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(back.schedule(), schedule);
        assert_eq!(
            json.as_object().unwrap().len() - 1,
            core_fields(serde_json::to_value(&schedule).unwrap()),
            "{json}"
        );
        // What is left out is the core's default.
        let bare: ScalingPolicySpec = serde_json::from_value(json!({"database": "shop"})).unwrap();
        assert_eq!(bare.policy(), stratus_core::ScalingPolicy::default());
        let bare: BackupScheduleSpec = serde_json::from_value(json!({"database": "shop"})).unwrap();
        assert_eq!(bare.schedule(), stratus_core::BackupSchedule::default());
    }

    #[test]
    fn definitions_carry_status_columns_and_one_stored_version() {
        for crd in crate::crds() {
            let s = &crd.spec;
            assert_eq!(s.group, crate::GROUP);
            assert_eq!(s.scope, "Namespaced");
            assert_eq!(s.versions.len(), 1);
            let v = &s.versions[0];
            assert_eq!(
                (v.name.as_str(), v.served, v.storage),
                ("v1alpha1", true, true)
            );
            let columns: Vec<_> = v
                .additional_printer_columns
                .iter()
                .flatten()
                .map(|c| c.name.as_str())
                .collect();
            assert!(columns.contains(&"Age"), "{columns:?}");
            assert!(
                s.names
                    .categories
                    .as_ref()
                    .unwrap()
                    .contains(&"stratus".to_owned())
            );
        }
        let db = DatabaseService::crd();
        let v = &db.spec.versions[0];
        assert!(v.subresources.as_ref().unwrap().status.is_some());
        let columns: Vec<_> = v
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| (c.name.as_str(), c.json_path.as_str()))
            .collect();
        for want in [
            ("State", ".status.state"),
            ("SCU", ".status.scu"),
            ("Node", ".status.node"),
        ] {
            assert!(columns.contains(&want), "{columns:?}");
        }
    }

    #[test]
    fn the_status_shows_what_db_show_shows() {
        let view: stratus_control::DatabaseView = serde_json::from_value(json!({
            "name": "shop", "state": "active", "tier": "free", "scu": 2, "min_scu": 1,
            "max_scu": 2, "storage_gb": 10, "host": "stratus-proxy", "port": 3306,
            "database": "shop", "cpu_limit": 1.0, "memory_limit": 4294967296u64,
            "limits_enforced": true, "buffer_pool_size": 2147483648u64, "data_dir": null,
            "node": "n1", "pid": 7, "backend": null, "cpu_usage_seconds": 1.5,
            "memory_usage": 1, "storage_used_bytes": 5, "storage_limit_bytes": 10,
            "activity": {"connections": 3, "statements_running": 0, "open_transactions": 0,
                         "pinned_sessions": 0, "last_statement_ms": 0},
            "moving": {"to": "n2", "phase": "copy", "since_ms": 0},
            "created_at": "2026-12-01T00:00:00Z", "updated_at": "2026-12-01T00:00:00Z"
        }))
        .unwrap();
        let status = DatabaseServiceStatus::from(&view);
        assert_eq!(
            (
                status.state.as_str(),
                status.scu,
                status.node.as_str(),
                status.clients
            ),
            ("active", 2, "n1", 3)
        );
        assert_eq!(status.buffer_pool_bytes, 2 << 30);
        assert_eq!(status.moving.unwrap().phase, "copy");
    }
}
