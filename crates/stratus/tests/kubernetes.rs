//! What can be checked of Stratus on Kubernetes without a cluster (none can run here): the
//! custom resource definitions `stratus operator crds` prints and the objects the operator makes
//! for a database, against the API schemas of every Kubernetes version Stratus supports, with
//! `kubernetes-validate` (PyPI; `./dev test` installs it).

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

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
    let docs = [
        serde_json::to_string(&objects::stateful_set(&spec, &settings)),
        serde_json::to_string(&objects::service(&spec.name, &settings)),
        serde_json::to_string(&objects::config_map(&spec, &settings)),
        serde_json::to_string(&objects::secret(
            &spec.name,
            &settings,
            "not-a-real-password",
        )),
    ];
    let yaml: String = docs
        .into_iter()
        .map(|d| format!("---\n{}\n", d.unwrap()))
        .collect();
    validate(&yaml, 4);
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
