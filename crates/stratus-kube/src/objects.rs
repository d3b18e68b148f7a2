//! The Kubernetes objects that run one database: a StatefulSet of one replica with its volume
//! claim, a headless Service, a ConfigMap with the server's option file and a Secret with
//! Stratus's own login. Pure functions of the database's [`InstanceSpec`] and the operator's
//! [`Settings`], so what the operator sends is tested without a cluster.
//!
//! References: [StatefulSet](https://kubernetes.io/docs/concepts/workloads/controllers/statefulset/),
//! [in-place pod resize](https://kubernetes.io/docs/tasks/configure-pod-container/resize-container-resources/)
//! (the `resize` subresource, Kubernetes 1.33+),
//! [volume expansion](https://kubernetes.io/docs/concepts/storage/persistent-volumes/#expanding-persistent-volumes-claims),
//! [pod security standards](https://kubernetes.io/docs/concepts/security/pod-security-standards/)
//! (every database pod meets "restricted").

use crate::instance::Instance;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use serde_json::{Value, json};
use stratus_core::password::NativeHash;
use stratus_core::{Resources, ServiceName};
use stratus_runtime::InstanceSpec;
use stratus_runtime::local::config::{self, ServerOptions};
use stratus_runtime::local::{Access, access_sql_for};

/// The port every database server listens on inside its pod.
pub const PORT: u16 = 3306;

/// Stratus's own account in every server (as on one machine).
pub const ADMIN_USER: &str = "stratus_admin";

/// The label that names the database an object belongs to.
pub const DATABASE_LABEL: &str = "stratus.dev/database";

/// Where the volume is mounted: the data directory and the binary log live under it.
pub(crate) const VOLUME_MOUNT: &str = "/var/lib/stratus";
/// The server's socket, for the readiness probe only (Stratus and the proxy use TCP).
const SOCKET: &str = "/run/mysqld/mysqld.sock";
/// The option file, from the ConfigMap.
pub(crate) const OPTION_FILE: &str = "/etc/stratus/my.cnf";
/// The init file, from the Secret: restores Stratus's account at every start.
const INIT_FILE: &str = "/etc/stratus/secret/init.sql";
/// The uid and gid of `mysql` in the official image.
pub(crate) const MYSQL_UID: i64 = 999;
/// The server's pid file, in the run directory the agent may read.
const PID_FILE: &str = "/run/mysqld/mysqld.pid";
/// The uid of Stratus's image (distroless `nonroot`): the agent is not the server's user, so it
/// cannot trace or signal it; the pod's `fsGroup` lets it read the pid file.
const AGENT_UID: i64 = 65532;

/// What the operator is configured with (the Helm chart's values).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The namespace databases run in.
    pub namespace: String,
    /// A MariaDB image with `mariadbd` and `mariadb-install-db` (the official `mariadb` image).
    pub image: String,
    /// The storage class of database volumes (`None`: the cluster's default). It must allow
    /// expansion for storage to grow.
    pub storage_class: Option<String>,
    /// Stratus's own image, which runs the agent beside each server ([`crate::agent`]).
    pub agent_image: String,
}

/// Stratus's image of this build, the default for [`Settings::agent_image`].
pub const STRATUS_IMAGE: &str = concat!("ghcr.io/stratus-db/stratus:", env!("CARGO_PKG_VERSION"));

impl Default for Settings {
    fn default() -> Self {
        Self {
            namespace: "stratus".into(),
            image: "mariadb:10.11".into(),
            storage_class: None,
            agent_image: STRATUS_IMAGE.into(),
        }
    }
}

/// `requests` and `limits` of the server's container: equal, so the pod is in the Guaranteed
/// QoS class and its memory limit is the SCU's.
pub fn container_resources(r: &Resources) -> Value {
    let amounts =
        json!({"cpu": format!("{}m", r.cpu_millis), "memory": r.memory_bytes.to_string()});
    json!({"requests": amounts, "limits": amounts})
}

/// The agent's CPU and memory: fixed, small, and equal in requests and limits so the pod stays
/// Guaranteed.
fn agent_resources() -> Value {
    json!({"cpu": "20m", "memory": "64Mi"})
}

/// The body of `PATCH pods/NAME/resize`: the new size of the server's container, applied in
/// place (no restart: both resources are `NotRequired` in its resize policy).
pub fn resize_patch(r: &Resources) -> Value {
    json!({"spec": {"containers": [{"name": "mariadb", "resources": container_resources(r)}]}})
}

/// The body of `PATCH statefulsets/NAME/scale`: 0 parks (the claim is kept), 1 wakes.
pub fn scale_patch(replicas: i32) -> Value {
    json!({"spec": {"replicas": replicas}})
}

/// The body of `PATCH persistentvolumeclaims/NAME`: the volume's new size.
pub fn expand_patch(bytes: u64) -> Value {
    json!({"spec": {"resources": {"requests": {"storage": bytes.to_string()}}}})
}

/// The server's option file: the one `stratus up` writes, with the paths of the pod and a
/// TCP port.
pub fn option_file(spec: &InstanceSpec) -> String {
    config::render(&ServerOptions {
        datadir: format!("{VOLUME_MOUNT}/data").into(),
        socket: SOCKET.into(),
        port: Some(PORT),
        pid_file: PID_FILE.into(),
        // Standard error: the container's log, which `kubectl logs` shows.
        error_log: None,
        tmpdir: "/tmp".into(),
        binlog_dir: Some(format!("{VOLUME_MOUNT}/binlog").into()),
        user: None,
        secure_file_priv: format!("{VOLUME_MOUNT}/files").into(),
        plugin_dir: "/usr/lib/mysql/plugin".into(),
        init_file: Some(INIT_FILE.into()),
        key_file: None,
        tls: None,
        server_id: config::server_id(spec.name.as_str()),
        semi_sync: false,
        buffer_pool_bytes: spec.resources.buffer_pool_bytes,
        // Room to grow in place to the largest size it may be scaled to.
        buffer_pool_max_bytes: Some(spec.max_resources.buffer_pool_bytes),
    })
}

pub fn config_map(inst: &Instance, spec: &InstanceSpec, s: &Settings) -> ConfigMap {
    typed(json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(inst, s),
        "data": {"my.cnf": option_file(spec)},
    }))
}

/// Stratus's login to one database: the password (for the operator and the proxy) and the init
/// file that restores the account at every start (for the server). Made once, when the
/// database is created; only the operator's service account may read it.
pub fn secret(inst: &Instance, s: &Settings, password: &str) -> Secret {
    let init = access_sql_for(
        ADMIN_USER,
        &Access::Password(NativeHash::of_password(password)),
    );
    typed(json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata(inst, s),
        "type": "Opaque",
        "stringData": {"password": password, "init.sql": init},
    }))
}

/// The Secret of a database's owner account when the resource names none (`ownerSecret`).
pub fn owner_secret_name(db: &ServiceName) -> String {
    format!("{db}-owner")
}

/// The owner's login, made by the operator when the resource names no Secret of its own: a
/// `kubernetes.io/basic-auth` Secret, owned by the resource so it goes with it. The database
/// gets only the password's hash.
pub fn owner_secret(
    db: &ServiceName,
    s: &Settings,
    user: &str,
    password: &str,
    owner: &OwnerReference,
) -> Secret {
    let mut meta = metadata(&Instance::of(db), s);
    meta["name"] = json!(owner_secret_name(db));
    meta["ownerReferences"] = json!([owner]);
    typed(json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": meta,
        "type": "kubernetes.io/basic-auth",
        "stringData": {"username": user, "password": password},
    }))
}

/// A headless Service: the pod's stable DNS name, `db-NAME-0.db-NAME.NAMESPACE.svc` (or
/// `spare-ID-0.spare-ID…` for a database that claimed a spare).
pub fn service(inst: &Instance, s: &Settings) -> Service {
    typed(json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(inst, s),
        "spec": {
            "clusterIP": "None",
            "selector": inst.selector(),
            "ports": [{"name": "mariadb", "port": PORT, "targetPort": PORT}],
            // Stratus waits for a server itself; the name must resolve before it is ready.
            "publishNotReadyAddresses": true,
        },
    }))
}

/// The annotation on a database's StatefulSet that records what was applied: a hash of its
/// ConfigMap, Service and StatefulSet as this operator makes them. A look that would apply
/// the same objects again writes nothing.
pub const APPLIED: &str = "stratus.dev/applied";

/// A backup a new database is made from: `<claim>/<source>/<backup>/`, as a backup Job wrote it
/// ([`crate::backup_job`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restore {
    /// The volume claim the backups are on.
    pub claim: String,
    /// The database the backup is of.
    pub source: ServiceName,
    /// The backup's id.
    pub backup: String,
}

/// Where the backup volume is mounted (read-only) in the `restore` init container. The whole
/// claim, not the backup's directory as a `subPath`: a pod that runs its init containers again
/// (a node's restart) after retention deleted the backup must still start, and the script looks
/// at the backup only when the volume has no data yet.
const RESTORE_MOUNT: &str = "/restore";

/// The `restore` init container's script: unless the volume has a data directory already, the
/// backup in directory `backup` must be a verified one whose files match its checksum list;
/// its prepared `data/` is then copied under a temporary name, flushed to disk and renamed into
/// place, so a copy cut short (even by a crash of the node) is never taken for the data.
pub fn restore_script(volume: &str, backup: &str) -> String {
    [
        "set -eu".to_owned(),
        format!("cd '{volume}'"),
        "if [ -d data ]; then exit 0; fi".to_owned(),
        "rm -rf restoring".to_owned(),
        format!("cd '{backup}'"),
        format!(
            "grep -q '\"verified\": true' backup.json || \
             {{ echo '{backup} is not a verified backup' >&2; exit 1; }}"
        ),
        "sha256sum -c --quiet --strict SHA256SUMS".to_owned(),
        format!("cp -a data '{volume}/restoring'"),
        "sync".to_owned(),
        format!("mv '{volume}/restoring' '{volume}/data'"),
        "sync".to_owned(),
    ]
    .join("\n")
        + "\n"
}

/// The database's StatefulSet: one replica, on the node the placement chose, with its claim,
/// annotated with [`applied_hash`].
pub fn stateful_set(inst: &Instance, spec: &InstanceSpec, s: &Settings) -> StatefulSet {
    stateful_set_from(inst, spec, s, None)
}

/// The same, for a database made from a backup: until its first server has run, the pod's
/// first init container fills its volume from `restore`.
pub fn stateful_set_from(
    inst: &Instance,
    spec: &InstanceSpec,
    s: &Settings,
    restore: Option<&Restore>,
) -> StatefulSet {
    let mut set = plain_stateful_set(inst, spec, s, restore);
    set.metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(
            APPLIED.into(),
            format!("{:016x}", applied_hash_from(inst, spec, s, restore)),
        );
    set
}

/// What [`APPLIED`] records for `spec`. Stable for one build of the operator; an operator
/// built otherwise may hash differently, which costs one more apply.
pub fn applied_hash(inst: &Instance, spec: &InstanceSpec, s: &Settings) -> u64 {
    applied_hash_from(inst, spec, s, None)
}

/// [`applied_hash`] of the objects of a database made from `restore`.
pub fn applied_hash_from(
    inst: &Instance,
    spec: &InstanceSpec,
    s: &Settings,
    restore: Option<&Restore>,
) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for text in [
        serde_json::to_string(&config_map(inst, spec, s)),
        serde_json::to_string(&service(inst, s)),
        serde_json::to_string(&plain_stateful_set(inst, spec, s, restore)),
    ] {
        text.unwrap_or_default().hash(&mut h);
    }
    h.finish()
}

/// The StatefulSet without its [`APPLIED`] annotation.
fn plain_stateful_set(
    inst: &Instance,
    spec: &InstanceSpec,
    s: &Settings,
    restore: Option<&Restore>,
) -> StatefulSet {
    let name = inst.name();
    let mut claim = json!({
        "metadata": {"name": "data", "labels": inst.claim_labels()},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": spec.storage_bytes.to_string()}},
        },
    });
    if let Some(class) = &s.storage_class {
        claim["spec"]["storageClassName"] = json!(class);
    }
    let restricted = restricted();
    let mounts = json!([
        {"name": "data", "mountPath": VOLUME_MOUNT},
        {"name": "run", "mountPath": "/run/mysqld"},
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "config", "mountPath": "/etc/stratus", "readOnly": true},
        {"name": "init", "mountPath": "/etc/stratus/secret", "readOnly": true},
    ]);
    let mut agent_context = restricted.clone();
    agent_context["runAsUser"] = json!(AGENT_UID);
    agent_context["runAsGroup"] = json!(AGENT_UID);
    let mut pod = json!({
        "metadata": {"labels": inst.labels()},
        "spec": {
            // A tenant's server has no business with the Kubernetes API.
            "automountServiceAccountToken": false,
            // The agent reads the server's CPU time from `/proc/PID/stat`.
            "shareProcessNamespace": true,
            "enableServiceLinks": false,
            "terminationGracePeriodSeconds": 60,
            "securityContext": {
                "runAsNonRoot": true,
                "runAsUser": MYSQL_UID,
                "runAsGroup": MYSQL_UID,
                "fsGroup": MYSQL_UID,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "initContainers": [{
                "name": "init-datadir",
                "image": s.image,
                "command": ["sh", "-c", format!(
                    "mkdir -p {VOLUME_MOUNT}/binlog {VOLUME_MOUNT}/files && \
                     if [ ! -d {VOLUME_MOUNT}/data/mysql ]; then \
                     mariadb-install-db --defaults-file={OPTION_FILE} --skip-test-db \
                     --auth-root-authentication-method=socket; fi"
                )],
                // The same as the server's: a pod is Guaranteed only if every container is.
                "resources": container_resources(&spec.resources),
                "securityContext": restricted,
                "volumeMounts": mounts,
            }],
            "containers": [{
                "name": "mariadb",
                "image": s.image,
                "command": ["mariadbd", format!("--defaults-file={OPTION_FILE}")],
                "ports": [{"name": "mariadb", "containerPort": PORT}],
                "resources": container_resources(&spec.resources),
                "resizePolicy": [
                    {"resourceName": "cpu", "restartPolicy": "NotRequired"},
                    {"resourceName": "memory", "restartPolicy": "NotRequired"},
                ],
                // Answers (even "access denied") once the server takes connections.
                "readinessProbe": {
                    "exec": {"command": ["mariadb-admin", format!("--socket={SOCKET}"), "ping"]},
                    "periodSeconds": 2,
                },
                "securityContext": restricted,
                "volumeMounts": mounts,
            }, {
                // Samples the server's CPU every 200 ms for the operator's autoscaler.
                "name": "agent",
                "image": s.agent_image,
                "args": ["operator", "agent", "--pid-file", PID_FILE,
                         "--listen", format!("[::]:{}", crate::agent::PORT)],
                "ports": [{"name": "agent", "containerPort": crate::agent::PORT}],
                "resources": {"requests": agent_resources(), "limits": agent_resources()},
                "securityContext": agent_context,
                "volumeMounts": [{"name": "run", "mountPath": "/run/mysqld", "readOnly": true}],
            }],
            "volumes": [
                {"name": "run", "emptyDir": {"medium": "Memory"}},
                {"name": "tmp", "emptyDir": {}},
                {"name": "config", "configMap": {"name": name, "items": [{"key": "my.cnf", "path": "my.cnf"}]}},
                {"name": "init", "secret": {"secretName": name, "defaultMode": 0o400,
                    "items": [{"key": "init.sql", "path": "init.sql"}]}},
            ],
        },
    });
    if let Some(r) = restore {
        let container = json!({
            "name": "restore",
            "image": s.image,
            "command": ["sh", "-c", restore_script(
                VOLUME_MOUNT,
                &format!("{RESTORE_MOUNT}/{}/{}", r.source, r.backup),
            )],
            "resources": container_resources(&spec.resources),
            "securityContext": restricted.clone(),
            "terminationMessagePolicy": "FallbackToLogsOnError",
            "volumeMounts": [
                {"name": "data", "mountPath": VOLUME_MOUNT},
                {"name": "restore", "mountPath": RESTORE_MOUNT, "readOnly": true},
            ],
        });
        if let Some(inits) = pod["spec"]["initContainers"].as_array_mut() {
            inits.insert(0, container);
        }
        if let Some(volumes) = pod["spec"]["volumes"].as_array_mut() {
            volumes.push(json!({"name": "restore", "persistentVolumeClaim": {
                "claimName": r.claim, "readOnly": true}}));
        }
    }
    if !spec.node.is_empty() {
        pod["spec"]["affinity"] = json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            // The Node object's name, which is what a pod's `nodeName` holds; the
            // `kubernetes.io/hostname` label is not always the same.
            "nodeSelectorTerms": [{"matchFields": [
                {"key": "metadata.name", "operator": "In", "values": [spec.node]},
            ]}],
        }}});
    }
    typed(json!({
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": metadata(inst, s),
        "spec": {
            // No `replicas`: it defaults to 1, and leaving it out of what the operator applies
            // leaves it to the scale subresource (park and wake), which a later apply must not
            // undo.
            "serviceName": name,
            "selector": {"matchLabels": inst.selector()},
            // Parked (0 replicas): the claim stays. Deleted: the operator removes the claim
            // itself, last of the database's objects.
            "persistentVolumeClaimRetentionPolicy": {"whenScaled": "Retain", "whenDeleted": "Retain"},
            // The pod is resized in place and the template follows; a changed template must not
            // replace the pod (a restart the client would see). A new pod takes the template.
            "updateStrategy": {"type": "OnDelete"},
            "template": pod,
            "volumeClaimTemplates": [claim],
        },
    }))
}

/// The security context of every container Stratus runs beside a tenant's data: the "restricted"
/// pod security standard, with a read-only root file system.
pub(crate) fn restricted() -> Value {
    json!({
        "allowPrivilegeEscalation": false,
        "readOnlyRootFilesystem": true,
        "runAsNonRoot": true,
        "capabilities": {"drop": ["ALL"]},
    })
}

fn metadata(inst: &Instance, s: &Settings) -> Value {
    json!({"name": inst.name(), "namespace": s.namespace, "labels": inst.labels()})
}

/// The typed object of a literal that is built right here: a failure is a bug in this file,
/// which the tests catch.
pub(crate) fn typed<T: serde::de::DeserializeOwned>(v: Value) -> T {
    match serde_json::from_value(v) {
        Ok(t) => t,
        Err(e) => unreachable!("a malformed object literal in stratus-kube: {e}"),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use stratus_core::ScuSize;

    /// The objects of database `name`, made for it.
    pub(crate) fn own(name: &str) -> Instance {
        Instance::of(&ServiceName::parse(name).unwrap())
    }

    pub(crate) fn spec(name: &str, node: &str) -> InstanceSpec {
        let scu = ScuSize::default();
        InstanceSpec {
            name: ServiceName::parse(name).unwrap(),
            resources: scu.resources(1),
            max_resources: scu.resources(4),
            storage_bytes: 10 << 30,
            node: node.into(),
        }
    }

    #[test]
    fn a_database_runs_as_one_guaranteed_pod_resized_in_place() {
        let sts = serde_json::to_value(stateful_set(
            &own("shop"),
            &spec("shop", "node-a"),
            &Settings::default(),
        ))
        .unwrap();
        assert_eq!(sts["metadata"]["name"], "db-shop");
        assert!(
            sts["spec"].get("replicas").is_none(),
            "owned by park and wake, not by apply"
        );
        let c = &sts["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["resources"]["limits"], c["resources"]["requests"]);
        let init = &sts["spec"]["template"]["spec"]["initContainers"][0];
        assert_eq!(
            init["resources"], c["resources"],
            "Guaranteed QoS counts init containers"
        );
        assert_eq!(c["resources"]["limits"]["cpu"], "500m");
        assert_eq!(c["resizePolicy"][0]["restartPolicy"], "NotRequired");
        assert_eq!(c["resizePolicy"][1]["restartPolicy"], "NotRequired");
        let node = &sts["spec"]["template"]["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
            ["nodeSelectorTerms"][0]["matchFields"][0];
        assert_eq!(
            (&node["key"], &node["values"][0]),
            (&json!("metadata.name"), &json!("node-a"))
        );
        assert_eq!(
            sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"],
            (10u64 << 30).to_string()
        );
        assert_eq!(
            sts["spec"]["persistentVolumeClaimRetentionPolicy"]["whenScaled"],
            "Retain"
        );
    }

    #[test]
    fn a_database_made_from_a_backup_checks_and_copies_it_before_anything_else() {
        let restore = Restore {
            claim: "stratus-backups".into(),
            source: ServiceName::parse("orders").unwrap(),
            backup: "orders-20261130T030005000Z".into(),
        };
        let spec = spec("shop", "");
        let s = Settings::default();
        let sts = serde_json::to_value(stateful_set_from(&own("shop"), &spec, &s, Some(&restore)))
            .unwrap();
        let pod = &sts["spec"]["template"]["spec"];
        let first = &pod["initContainers"][0];
        assert_eq!(first["name"], "restore");
        assert_eq!(pod["initContainers"][1]["name"], "init-datadir");
        assert_eq!(
            first["volumeMounts"][1],
            json!({"name": "restore", "mountPath": "/restore", "readOnly": true}),
            "no subPath: a restart after retention deleted the backup must still start"
        );
        assert_eq!(first["securityContext"], restricted());
        let volume = pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "restore")
            .unwrap();
        assert_eq!(
            volume["persistentVolumeClaim"],
            json!({"claimName": "stratus-backups", "readOnly": true})
        );
        let script = first["command"][2].as_str().unwrap();
        assert!(script.contains("sha256sum -c"), "{script}");
        assert!(
            script.contains("cd '/restore/orders/orders-20261130T030005000Z'"),
            "{script}"
        );
        assert!(
            script.find("if [ -d data ]; then exit 0; fi") < script.find("sha256sum"),
            "a volume with data is never restored over: {script}"
        );
        // The server's container never sees the backups.
        assert!(
            !pod["containers"][0]["volumeMounts"]
                .to_string()
                .contains("restore")
        );
        // Dropping the restore (its first server ran) is a change to apply.
        assert_ne!(
            applied_hash_from(&own("shop"), &spec, &s, Some(&restore)),
            applied_hash(&own("shop"), &spec, &s)
        );
    }

    #[test]
    fn a_tenants_pod_gets_no_api_token_and_no_privileges() {
        let sts = serde_json::to_value(stateful_set(
            &own("shop"),
            &spec("shop", ""),
            &Settings::default(),
        ))
        .unwrap();
        let pod = &sts["spec"]["template"]["spec"];
        assert_eq!(pod["automountServiceAccountToken"], false);
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
        for c in [
            &pod["containers"][0],
            &pod["containers"][1],
            &pod["initContainers"][0],
        ] {
            assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
            assert_eq!(c["securityContext"]["capabilities"]["drop"][0], "ALL");
            assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
        }
        assert!(
            pod.get("affinity").is_none(),
            "no node chosen: the scheduler places it"
        );
    }

    #[test]
    fn an_agent_beside_the_server_reads_its_cpu_as_another_user() {
        let settings = Settings {
            agent_image: "registry.example/stratus:9.9.9".into(),
            ..Settings::default()
        };
        let sts =
            serde_json::to_value(stateful_set(&own("shop"), &spec("shop", ""), &settings)).unwrap();
        let pod = &sts["spec"]["template"]["spec"];
        assert_eq!(
            pod["shareProcessNamespace"], true,
            "it sees the server's /proc"
        );
        let agent = &pod["containers"][1];
        assert_eq!(agent["name"], "agent");
        assert_eq!(agent["image"], "registry.example/stratus:9.9.9");
        assert_eq!(
            agent["args"],
            json!([
                "operator",
                "agent",
                "--pid-file",
                "/run/mysqld/mysqld.pid",
                "--listen",
                "[::]:9104"
            ])
        );
        assert!(
            option_file(&spec("shop", "")).contains("pid-file = \"/run/mysqld/mysqld.pid\""),
            "the pid file it reads is the server's"
        );
        assert_eq!(agent["resources"]["limits"], agent["resources"]["requests"]);
        assert_eq!(agent["securityContext"]["runAsUser"], AGENT_UID);
        assert_ne!(agent["securityContext"]["runAsUser"], MYSQL_UID);
        assert_eq!(
            agent["volumeMounts"],
            json!([{"name": "run", "mountPath": "/run/mysqld", "readOnly": true}])
        );
        // A resize names the server's container only: the agent keeps its size.
        assert_eq!(
            resize_patch(&ScuSize::default().resources(2))["spec"]["containers"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
    }

    /// On a real server: the pool can grow in place up to the largest size the database may
    /// be scaled to (without `innodb_buffer_pool_size_max`, MariaDB 10.11.12+ would cap it at
    /// its size at start and only warn).
    #[tokio::test]
    async fn the_option_file_lets_the_pool_grow_in_place_to_the_largest_size() {
        use stratus_runtime::admin::ServerAdmin;
        // Small SCUs, so the test allocates little.
        let scu = ScuSize {
            memory_bytes: 128 << 20,
            ..ScuSize::default()
        };
        let spec = InstanceSpec {
            resources: scu.resources(1),
            max_resources: scu.resources(4),
            ..spec("shop", "")
        };
        let cnf = option_file(&spec);
        // The lines that size the pool, as options of a test server.
        let pool: Vec<String> = cnf
            .lines()
            .filter(|l| l.contains("innodb_buffer_pool_size"))
            .map(|l| format!("--{}", l.replace(" = ", "=")))
            .collect();
        assert_eq!(pool.len(), 2, "{cnf}");
        let server = crate::test_server::mariadbd(&pool).await;
        let mut conn = crate::test_server::setup_login(&server.socket).await;
        assert_eq!(
            conn.buffer_pool_size().await.unwrap(),
            spec.resources.buffer_pool_bytes
        );
        let largest = spec.max_resources.buffer_pool_bytes;
        let (actual, warnings) = conn.resize_buffer_pool(largest).await.unwrap();
        assert_eq!((actual, warnings), (largest, Vec::<String>::new()));
        conn.close().await;
    }

    #[test]
    fn the_server_listens_on_its_port_with_the_pods_paths() {
        let cnf = option_file(&spec("shop", ""));
        for want in [
            "port = 3306",
            "bind_address = 0.0.0.0",
            "datadir = \"/var/lib/stratus/data\"",
            "init_file = \"/etc/stratus/secret/init.sql\"",
            "symbolic-links = 0",
        ] {
            assert!(cnf.contains(want), "missing {want:?} in\n{cnf}");
        }
        assert!(!cnf.contains("skip-networking"));
        assert!(
            !cnf.contains("log-error"),
            "standard error, the container's log"
        );
    }

    #[test]
    fn the_secret_holds_the_password_and_the_account_as_a_hash() {
        let s = secret(&own("shop"), &Settings::default(), "pw123");
        let data = s.string_data.unwrap();
        assert_eq!(data["password"], "pw123");
        assert!(
            !data["init.sql"].contains("pw123"),
            "the init file has only the hash"
        );
        assert!(data["init.sql"].contains(&NativeHash::of_password("pw123").to_string()));
    }

    #[test]
    fn patches_carry_the_new_size_only() {
        let r = ScuSize::default().resources(2);
        assert_eq!(
            resize_patch(&r),
            json!({"spec": {"containers": [{"name": "mariadb", "resources": {
                "requests": {"cpu": "1000m", "memory": r.memory_bytes.to_string()},
                "limits": {"cpu": "1000m", "memory": r.memory_bytes.to_string()},
            }}]}})
        );
        assert_eq!(scale_patch(0), json!({"spec": {"replicas": 0}}));
        assert_eq!(
            expand_patch(20 << 30),
            json!({"spec": {"resources": {"requests": {"storage": "21474836480"}}}})
        );
    }
}
