//! What can be checked of Stratus on Kubernetes without a cluster (none can run here): the
//! custom resource definitions `stratus operator crds` prints, the objects the operator makes
//! for a database and the Helm chart as rendered, against the API schemas of every Kubernetes
//! version Stratus supports, with `kubernetes-validate` (PyPI); the chart with `helm lint
//! --strict`; the operator's Role against what the operator does. `./dev test` installs both
//! tools.

mod common;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use stratus_kube::instance::Instance;

/// The oldest and newest Kubernetes Stratus supports, and the one the issue names.
const VERSIONS: [&str; 3] = ["1.33.0", "1.35.0", "1.37.0"];

#[test]
fn the_crds_validate_against_every_supported_kubernetes() {
    let out = Command::new(common::BIN)
        .args(["operator", "crds"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let crds = String::from_utf8(out.stdout).unwrap();
    for kind in ["DatabaseService", "ScalingPolicy", "BackupSchedule"] {
        assert!(crds.contains(&format!("\"kind\": \"{kind}\"")), "{kind}");
    }
    validate(&crds, 3);
}

/// The objects the operator makes for one database (`stratus_kube::objects`), with a node
/// chosen and a storage class set, so that every optional part is checked too.
#[test]
fn a_databases_objects_validate_against_every_supported_kubernetes() {
    use stratus_kube::objects;
    let scu = stratus_core::ScuSize::default();
    let spec = stratus_runtime::InstanceSpec {
        name: stratus_core::ServiceName::parse("shop").unwrap(),
        resources: scu.resources(1),
        max_resources: scu.resources(4),
        storage_bytes: 10 << 30,
        node: "node-a".into(),
    };
    let settings = objects::Settings {
        storage_class: Some("fast-expandable".into()),
        ..objects::Settings::default()
    };
    let spare = Instance::new_spare();
    let spare_spec = stratus_kube::operator::pool::spare_spec(
        &spare,
        &stratus_kube::operator::database::Sizes {
            scu,
            proxy_host: "stratus-proxy".into(),
            proxy_port: 3306,
        },
    );
    let docs = [
        serde_json::to_string(&objects::stateful_set(
            &Instance::of(&spec.name),
            &spec,
            &settings,
        )),
        serde_json::to_string(&objects::service(&Instance::of(&spec.name), &settings)),
        serde_json::to_string(&objects::config_map(
            &Instance::of(&spec.name),
            &spec,
            &settings,
        )),
        serde_json::to_string(&objects::secret(
            &Instance::of(&spec.name),
            &settings,
            "not-a-real-password",
        )),
        serde_json::to_string(&backup_job(&spec.name, &settings)),
        // A database made from a backup: its pod's `restore` init container and volume.
        serde_json::to_string(&objects::stateful_set_from(
            &Instance::of(&spec.name),
            &spec,
            &settings,
            Some(&objects::Restore {
                claim: "stratus-backups".into(),
                source: stratus_core::ServiceName::parse("orders").unwrap(),
                backup: "orders-20261130T030005000Z".into(),
            }),
        )),
        // A spare of the warm pool, and the same server once a database claimed it.
        serde_json::to_string(&objects::stateful_set(&spare, &spare_spec, &settings)),
        serde_json::to_string(&objects::stateful_set(
            &spare.claimed_by(&spec.name),
            &spec,
            &settings,
        )),
        serde_json::to_string(&objects::service(&spare.claimed_by(&spec.name), &settings)),
    ];
    let yaml: String = docs
        .into_iter()
        .map(|d| format!("---\n{}\n", d.unwrap()))
        .collect();
    validate(&yaml, 9);
}

/// The Job of one of its backups, as the backup controller makes it.
fn backup_job(
    db: &stratus_core::ServiceName,
    settings: &stratus_kube::objects::Settings,
) -> k8s_openapi::api::batch::v1::Job {
    use stratus_kube::backup_job;
    let schedule = stratus_core::BackupSchedule::default();
    let started = 1_796_000_000_123;
    let id = stratus_control::backup::backup_id(db, started);
    backup_job::job(
        &backup_job::JobSpec {
            database: db,
            instance: &stratus_kube::instance::Instance::of(db),
            id: &id,
            started_at_ms: started,
            schedule: &schedule,
            schedule_name: "nightly",
            image: &settings.image,
            source: stratus_control::copy::Source {
                tier: stratus_core::Tier::Standard,
                min_scu: 1,
                max_scu: 4,
                storage_gb: 10,
                require_tls: false,
                schema: db.to_string(),
                users: Vec::new(),
            },
            owner: k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                api_version: "stratus.dev/v1alpha1".into(),
                kind: "BackupSchedule".into(),
                name: "nightly".into(),
                uid: "0c4f6a52-9d1e-4c55-8f0e-3c1f3b0a7d21".into(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            },
        },
        settings,
    )
}

/// Runs `kubernetes-validate --strict` on a YAML stream for every supported version; `count`
/// documents must pass.
fn validate(yaml: &str, count: usize) {
    for version in VERSIONS {
        let mut child = Command::new("kubernetes-validate")
            .args(["--strict", "-k", version, "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect(
                "kubernetes-validate (pip install kubernetes-validate; ./dev test installs it)",
            );
        child
            .stdin
            .take()
            .unwrap()
            .write_all(yaml.as_bytes())
            .unwrap();
        let done = child.wait_with_output().unwrap();
        let report = String::from_utf8_lossy(&done.stdout).into_owned()
            + &String::from_utf8_lossy(&done.stderr);
        assert!(done.status.success(), "Kubernetes {version}: {report}");
        assert_eq!(
            report.matches("passed for resource").count(),
            count,
            "{report}"
        );
    }
}

fn chart() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/helm/stratus")
}

fn helm(args: &[&str]) -> String {
    let out = Command::new("helm")
        .args(args)
        .output()
        .expect("helm (./dev test installs it)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "helm {args:?}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// The chart as `helm install` would send it, CRDs included.
fn rendered(extra: &[&str]) -> String {
    let chart = chart();
    let mut args = vec![
        "template",
        "stratus",
        chart.to_str().unwrap(),
        "--namespace",
        "stratus",
        "--include-crds",
    ];
    args.extend_from_slice(extra);
    helm(&args)
}

#[test]
fn the_chart_lints_and_renders_to_objects_every_supported_kubernetes_accepts() {
    let chart = chart();
    let lint = helm(&["lint", "--strict", chart.to_str().unwrap()]);
    assert!(lint.contains("0 chart(s) failed"), "{lint}");
    // 3 CRDs, the network policies (databases, backups), the operator's account, role, binding, deployment and
    // metrics Service, and the proxy's account, role, binding, deployment, Service and metrics
    // Service.
    validate(&rendered(&[]), 16);
    let other = rendered(&[
        "--set",
        "networkPolicy.enabled=false",
        "--set",
        "databases.storageClass=fast",
    ]);
    assert!(other.contains("value: \"fast\""), "{other}");
    validate(&other, 14);
}

/// The ServiceMonitor (a Prometheus Operator kind, so not one `kubernetes-validate` knows)
/// selects the metrics Service by its labels and scrapes the port the operator's container
/// names `metrics`, where `stratus operator run` serves `/metrics`.
#[test]
fn the_service_monitor_scrapes_the_operators_metrics_port() {
    assert!(
        !rendered(&[]).contains("kind: ServiceMonitor"),
        "off unless asked for"
    );
    let yaml = rendered(&[
        "--set",
        "serviceMonitor.enabled=true",
        "--set",
        "serviceMonitor.labels.release=prom",
    ]);
    let doc = |kind: &str| {
        yaml.split("\n---")
            .find(|d| d.contains(&format!("\nkind: {kind}\n")) && d.contains("metrics"))
            .unwrap_or_else(|| panic!("a {kind} in {yaml}"))
            .to_owned()
    };
    let monitor = doc("ServiceMonitor");
    let service = doc("Service");
    let deployment = doc("Deployment");
    assert!(service.contains("app.kubernetes.io/component: operator-metrics"));
    assert!(
        monitor.contains(r#"values: ["operator-metrics", "proxy-metrics"]"#),
        "{monitor}"
    );
    assert!(service.contains("app.kubernetes.io/instance: stratus"));
    assert!(monitor.contains("app.kubernetes.io/instance: stratus"));
    assert!(monitor.contains("release: prom"), "{monitor}");
    assert!(monitor.contains("- port: metrics") && monitor.contains("path: /metrics"));
    assert!(service.contains("targetPort: metrics"));
    assert!(deployment.contains("- name: metrics\n              containerPort: 9090"));
    assert!(
        deployment.contains("value: \"0.0.0.0:9090\""),
        "{deployment}"
    );
    // Everything but the ServiceMonitor is still what every supported Kubernetes accepts.
    let known: Vec<&str> = yaml
        .split("\n---")
        .filter(|d| !d.contains("\nkind: ServiceMonitor\n"))
        .collect();
    validate(&known.join("\n---"), 16);
}

/// The agent in each database pod runs the operator's image, and only the operator may reach
/// it: tenants' clients come through the proxy, on the server's port only.
#[test]
fn the_agent_runs_the_operators_image_and_only_the_operator_reaches_it() {
    let yaml = rendered(&["--set", "image.tag=1.2.3"]);
    let doc = |kind: &str, has: &str| {
        yaml.split("\n---")
            .find(|d| d.contains(&format!("\nkind: {kind}\n")) && d.contains(has))
            .unwrap_or_else(|| panic!("a {kind} with {has} in {yaml}"))
            .to_owned()
    };
    let operator = doc("Deployment", "args: [\"operator\", \"run\"]");
    assert!(
        operator.contains(
            "- name: STRATUS_AGENT_IMAGE\n              value: \"ghcr.io/stratus-db/stratus:1.2.3\""
        ),
        "{operator}"
    );
    assert!(operator.contains("image: \"ghcr.io/stratus-db/stratus:1.2.3\""));
    let policy = doc("NetworkPolicy", "databases");
    let rules: Vec<&str> = policy.split("- from:").skip(1).collect();
    assert_eq!(rules.len(), 2, "{policy}");
    let agent = rules
        .iter()
        .find(|r| r.contains("port: 9104"))
        .expect("a rule for the agent's port");
    assert!(agent.contains("app.kubernetes.io/component: operator"));
    assert!(!agent.contains("component: proxy"), "{agent}");
    assert!(!agent.contains("port: 3306"), "{agent}");
}

#[test]
fn the_charts_crds_are_the_ones_the_binary_prints() {
    let out = Command::new(common::BIN)
        .args(["operator", "crds"])
        .output()
        .unwrap();
    let printed = String::from_utf8(out.stdout).unwrap();
    let file = std::fs::read_to_string(chart().join("crds/stratus.dev.yaml")).unwrap();
    assert!(
        file == printed,
        "deploy/helm/stratus/crds/stratus.dev.yaml is stale: stratus operator crds > deploy/helm/stratus/crds/stratus.dev.yaml"
    );
}

/// Least privilege that cannot drift: the Role grants exactly `stratus_kube::rbac::PERMISSIONS`,
/// which the operator's mocked-API tests hold every request to.
#[test]
fn the_operators_role_grants_exactly_what_the_operator_uses() {
    assert_eq!(
        role_rules("templates/operator-rbac.yaml"),
        rules_of(stratus_kube::rbac::PERMISSIONS)
    );
}

/// The same for the proxy's Role and `PROXY_PERMISSIONS`, which its directory's tests hold
/// every request to; and the proxy can never list, delete or make anything but Events.
#[test]
fn the_proxys_role_grants_exactly_what_the_proxy_uses() {
    let rules = role_rules("templates/proxy-rbac.yaml");
    assert_eq!(rules, rules_of(stratus_kube::rbac::PROXY_PERMISSIONS));
    for (group, resource, verbs, _) in &rules {
        for verb in [
            "list",
            "watch",
            "create",
            "delete",
            "update",
            "deletecollection",
        ] {
            let events =
                (group.as_str(), resource.as_str(), verb) == ("events.k8s.io", "events", "create");
            assert!(
                events || !verbs.iter().any(|v| v == verb),
                "{verb} on {resource}"
            );
        }
    }
}

type Rule = (String, String, Vec<String>, Vec<String>);

fn rules_of(permissions: &[stratus_kube::rbac::Permission]) -> Vec<Rule> {
    let mut wanted: Vec<Rule> = permissions
        .iter()
        .map(|p| {
            let mut verbs: Vec<String> = p.verbs.iter().map(|v| v.to_string()).collect();
            verbs.sort();
            let names = p.names.iter().map(|n| n.to_string()).collect();
            (p.group.to_owned(), p.resource.to_owned(), verbs, names)
        })
        .collect();
    wanted.sort();
    wanted
}

/// The rules of the one Role in a template, sorted.
fn role_rules(template: &str) -> Vec<Rule> {
    let yaml = rendered(&["--show-only", template]);
    let role = yaml
        .split("\n---")
        .find(|doc| doc.contains("\nkind: Role\n"))
        .expect("a Role");
    let list = |line: &str, key: &str| -> Option<Vec<String>> {
        let value = line.trim().trim_start_matches("- ").strip_prefix(key)?;
        Some(serde_json::from_str(value.trim()).expect("a flow list"))
    };
    let mut granted = Vec::new();
    let mut group = Vec::new();
    let mut resources = Vec::new();
    let mut names = Vec::new();
    for line in role.lines() {
        if let Some(g) = list(line, "apiGroups:") {
            (group, names) = (g, Vec::new());
        } else if let Some(r) = list(line, "resources:") {
            resources = r;
        } else if let Some(n) = list(line, "resourceNames:") {
            names = n;
        } else if let Some(verbs) = list(line, "verbs:") {
            for g in &group {
                for r in &resources {
                    let mut verbs = verbs.clone();
                    verbs.sort();
                    granted.push((g.clone(), r.clone(), verbs, names.clone()));
                }
            }
        }
    }
    granted.sort();
    granted
}

/// Every setting the chart gives the proxy and the operator (their containers' `STRATUS_*`
/// variables) is one the binary reads: a value the chart offers is never silently ignored.
#[test]
fn every_setting_the_chart_passes_is_one_the_binary_reads() {
    let yaml = rendered(&["--set", "proxy.releaseIdleAfterMs=0"]);
    assert!(
        yaml.contains("- name: STRATUS_RELEASE_IDLE_AFTER_MS\n              value: \"0\""),
        "{yaml}"
    );
    for (args, has) in [
        (["operator", "proxy"], "args: [\"operator\", \"proxy\"]"),
        (["operator", "run"], "args: [\"operator\", \"run\"]"),
    ] {
        let deployment = yaml
            .split("\n---")
            .find(|d| d.contains("\nkind: Deployment\n") && d.contains(has))
            .unwrap_or_else(|| panic!("a Deployment with {has}"))
            .to_owned();
        let help = Command::new(env!("CARGO_BIN_EXE_stratus"))
            .args(args)
            .arg("--help")
            .output()
            .unwrap();
        let help = String::from_utf8_lossy(&help.stdout);
        let names: Vec<&str> = deployment
            .lines()
            .filter_map(|l| l.trim().strip_prefix("- name: STRATUS_"))
            .collect();
        assert!(!names.is_empty(), "{deployment}");
        for name in names {
            assert!(
                help.contains(&format!("[env: STRATUS_{name}")),
                "`stratus {}` does not read STRATUS_{name}:\n{help}",
                args.join(" ")
            );
        }
    }
}
