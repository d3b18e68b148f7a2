//! What can be checked of Stratus on Kubernetes without a cluster (none can run here): the
//! custom resource definitions `stratus operator crds` prints, against the API schemas of every
//! Kubernetes version Stratus supports, with `kubernetes-validate` (PyPI; `./dev test`
//! installs it).

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
            .write_all(crds.as_bytes())
            .unwrap();
        let done = child.wait_with_output().unwrap();
        let report = String::from_utf8_lossy(&done.stdout).into_owned()
            + &String::from_utf8_lossy(&done.stderr);
        assert!(done.status.success(), "Kubernetes {version}: {report}");
        assert_eq!(report.matches("passed for resource").count(), 3, "{report}");
    }
}
