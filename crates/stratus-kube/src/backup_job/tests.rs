//! The backup Job's object, then its two containers' work done here as the pod does it: the
//! pod's own init script makes the server's data directory, a real `mariadbd` runs on the pod's
//! option file, the `copy` script backs it up over TCP as Stratus, [`record`] seals it, and a
//! server started on the copy has the data.

use super::*;
use crate::test_server;
use serde_json::Value;
use std::process::Command;
use stratus_core::Tier;

fn db(name: &str) -> ServiceName {
    ServiceName::parse(name).unwrap()
}

pub(crate) fn source() -> Source {
    Source {
        tier: Tier::Standard,
        min_scu: 1,
        max_scu: 4,
        storage_gb: 10,
        require_tls: false,
        schema: "shop".into(),
        users: Vec::new(),
    }
}

fn owner() -> OwnerReference {
    OwnerReference {
        api_version: "stratus.dev/v1alpha1".into(),
        kind: "BackupSchedule".into(),
        name: "shop-nightly".into(),
        uid: "7d1e-shop-nightly".into(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

fn job_of(name: &ServiceName) -> Value {
    job_on(name, &Instance::of(name))
}

/// The Job for a database whose server runs as `instance`.
fn job_on(name: &ServiceName, instance: &Instance) -> Value {
    let schedule = BackupSchedule {
        target: "stratus-backups".into(),
        ..BackupSchedule::default()
    };
    let spec = JobSpec {
        database: name,
        instance,
        id: &stratus_control::backup::backup_id(name, 1_796_000_000_123),
        started_at_ms: 1_796_000_000_123,
        schedule: &schedule,
        schedule_name: "shop-nightly",
        image: "mariadb:10.11.9",
        source: source(),
        owner: owner(),
    };
    serde_json::to_value(job(&spec, &Settings::default())).unwrap()
}

/// A database that claimed a spare of the warm pool: its server's objects keep the spare's name.
#[test]
fn the_job_of_a_database_on_a_claimed_spare_copies_that_servers_volume() {
    let name = db("shop");
    let spare = Instance::pooled("spare-00aa11bb", Some(name.clone())).unwrap();
    let job = job_on(&name, &spare);
    let pod = &job["spec"]["template"]["spec"];
    let term = &pod["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0];
    assert_eq!(
        term["labelSelector"]["matchLabels"][objects::DATABASE_LABEL],
        "shop",
        "the claim relabelled its pod"
    );
    let volumes = pod["volumes"].as_array().unwrap();
    let volume = |n: &str| volumes.iter().find(|v| v["name"] == n).unwrap().clone();
    assert_eq!(
        volume("data")["persistentVolumeClaim"]["claimName"],
        "data-spare-00aa11bb-0"
    );
    assert_eq!(volume("config")["configMap"]["name"], "spare-00aa11bb");
    let text = job.to_string();
    assert!(
        text.contains("spare-00aa11bb-0.spare-00aa11bb"),
        "its server's address"
    );
    assert!(
        !text.contains("db-shop"),
        "nothing of a server named after the database"
    );
}

#[test]
fn the_job_runs_on_the_databases_node_and_reads_its_volume_read_only() {
    let name = db("shop");
    let job = job_of(&name);
    assert_eq!(job["metadata"]["name"], "shop-backup-20261130005320");
    assert_eq!(
        job["metadata"]["annotations"][ID_ANNOTATION],
        "shop-20261130T005320123Z"
    );
    assert_eq!(
        job["metadata"]["ownerReferences"][0]["kind"],
        "BackupSchedule"
    );
    assert_eq!(
        job["spec"]["backoffLimit"], 0,
        "a failed copy is not retried"
    );
    assert_eq!(job["spec"]["activeDeadlineSeconds"], DEADLINE_SECS);
    let pod = &job["spec"]["template"]["spec"];
    assert_eq!(pod["restartPolicy"], "Never");
    let term = &pod["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0];
    assert_eq!(term["topologyKey"], "kubernetes.io/hostname");
    assert_eq!(
        term["labelSelector"]["matchLabels"][objects::DATABASE_LABEL],
        "shop"
    );
    let volumes = pod["volumes"].as_array().unwrap();
    let data = volumes.iter().find(|v| v["name"] == "data").unwrap();
    assert_eq!(
        data["persistentVolumeClaim"],
        json!({"claimName": "data-db-shop-0", "readOnly": true})
    );
    let target = volumes.iter().find(|v| v["name"] == "backups").unwrap();
    assert_eq!(
        target["persistentVolumeClaim"]["claimName"],
        "stratus-backups"
    );
    let copy = &pod["initContainers"][0];
    assert_eq!(
        copy["image"], "mariadb:10.11.9",
        "the running server's own version"
    );
    assert_eq!(
        job["metadata"]["annotations"][STARTED_ANNOTATION],
        "2026-11-30T00:53:20.123Z"
    );
    assert_eq!(
        pod["securityContext"]["fsGroupChangePolicy"], "OnRootMismatch",
        "the backup volume is not walked at every backup"
    );
    let data_mount = copy["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "data")
        .unwrap();
    assert_eq!(data_mount["readOnly"], true);
    let record = &pod["containers"][0];
    assert_eq!(record["image"], Settings::default().agent_image);
    assert_eq!(record["args"][1], "backup-record");
    assert!(
        record["volumeMounts"].as_array().unwrap().len() == 1,
        "the record step sees the backups only, not the database's volume"
    );
}

#[test]
fn the_password_is_in_neither_the_jobs_spec_nor_a_command_line() {
    let job = job_of(&db("shop"));
    let copy = &job["spec"]["template"]["spec"]["initContainers"][0];
    assert_eq!(
        copy["env"],
        json!([{"name": "MYSQL_PWD", "valueFrom": {"secretKeyRef": {"name": "db-shop", "key": "password"}}}])
    );
    let script = copy["command"][2].as_str().unwrap();
    assert!(!script.contains("--password"), "{script}");
    assert_eq!(
        job["spec"]["template"]["spec"]["automountServiceAccountToken"],
        false
    );
    for c in [copy, &job["spec"]["template"]["spec"]["containers"][0]] {
        assert_eq!(c["securityContext"], objects::restricted());
        assert_eq!(c["terminationMessagePolicy"], "FallbackToLogsOnError");
    }
}

#[test]
fn a_backups_pod_is_never_one_of_the_databases_pods() {
    let job = job_of(&db("shop"));
    let labels = &job["spec"]["template"]["metadata"]["labels"];
    assert!(
        labels.get(objects::DATABASE_LABEL).is_none(),
        "the database's Service selects by that label: {labels}"
    );
    assert_eq!(labels[BACKUP_OF_LABEL], "shop");
    assert_eq!(labels["app.kubernetes.io/component"], "backup");
}

#[test]
fn the_longest_database_name_still_makes_a_valid_job_name() {
    let long = "a".repeat(stratus_core::names::SERVICE_NAME_MAX);
    let name = job_name(&db(&long), i64::from(i32::MAX) * 1000);
    assert!(name.len() <= 63, "{name} ({} characters)", name.len());
}

#[test]
fn a_copy_that_never_happened_is_not_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let args = RecordArgs {
        dir: dir.path().join("shop"),
        database: db("shop"),
        id: "shop-20261130T005320123Z".into(),
        started_at_ms: 1_796_000_000_123,
        retention_days: 7,
        keep_last: 0,
        schedule: "shop-nightly".into(),
        source: source(),
    };
    let e = record(&args).unwrap_err();
    assert!(e.to_string().contains("holds no prepared copy"), "{e}");
    assert!(!dir.path().join("shop").join(&args.id).exists());
}

/// The pod's paths under `root`, in a text that names them (the option file, the init script).
fn localized(text: &str, root: &Path, port: u16) -> String {
    text.replace(VOLUME_MOUNT, &root.join("volume").display().to_string())
        .replace("/run/mysqld", &root.join("run").display().to_string())
        .replace("/etc/stratus", &root.join("etc").display().to_string())
        .replace("/tmp\"", &format!("{}\"", root.join("tmp").display()))
        .replace(&format!("port = {PORT}"), &format!("port = {port}"))
        .replace("bind_address = 0.0.0.0", "bind_address = 127.0.0.1")
}

/// A server made and started as the pod of database `name` makes and starts it: its init
/// containers' scripts in order (with `restore`, the backup in directory `backup`), its option
/// file, its Secret's init file (Stratus's account, with `password`).
async fn pod_server(
    root: &Path,
    name: &str,
    password: &str,
    restore: Option<(&objects::Restore, &Path)>,
) -> (test_server::Server, std::path::PathBuf) {
    let spec = crate::objects::tests::spec(name, "");
    let settings = Settings::default();
    let port = test_server::free_port();
    for d in ["volume", "run", "etc/secret", "tmp"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    let mut cnf = localized(&objects::option_file(&spec), root, port);
    if test_server::as_root() {
        cnf = cnf.replacen("[mariadbd]\n", "[mariadbd]\nuser = root\n", 1);
    }
    assert!(
        cnf.contains("user = root") || !test_server::as_root(),
        "{cnf}"
    );
    let option_file = root.join("etc/my.cnf");
    std::fs::write(&option_file, &cnf).unwrap();
    let secret = objects::secret(&Instance::of(&spec.name), &settings, password);
    std::fs::write(
        root.join("etc/secret/init.sql"),
        &secret.string_data.unwrap()["init.sql"],
    )
    .unwrap();
    let sts = serde_json::to_value(objects::stateful_set_from(
        &Instance::of(&spec.name),
        &spec,
        &settings,
        restore.map(|(r, _)| r),
    ))
    .unwrap();
    for init in sts["spec"]["template"]["spec"]["initContainers"]
        .as_array()
        .unwrap()
    {
        let mut script = localized(init["command"][2].as_str().unwrap(), root, port);
        if let Some((_, backups)) = restore {
            script = script.replace("'/restore/", &format!("'{}/", backups.display()));
        }
        let lock = test_server::install_lock();
        let out = Command::new("sh").args(["-c", &script]).output().unwrap();
        drop(lock);
        assert!(
            out.status.success(),
            "{}: {}",
            init["name"],
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mariadb = stratus_runtime::binaries::MariaDb::locate(None).unwrap();
    let mut cmd = Command::new(&mariadb.mariadbd);
    cmd.arg(format!("--defaults-file={}", option_file.display()));
    let socket = root.join("run/mysqld.sock");
    let server = test_server::spawn(tempfile::tempdir().unwrap(), cmd, socket, port);
    (server, option_file)
}

#[tokio::test]
async fn the_jobs_copy_of_a_running_server_restores_to_the_same_data() {
    let root = tempfile::tempdir().unwrap();
    let (server, option_file) = pod_server(root.path(), "shop", "pw", None).await;
    let mut conn = test_server::setup_login(&server.socket).await;
    for sql in [
        "CREATE DATABASE shop",
        "CREATE TABLE shop.orders (id INT PRIMARY KEY, item VARCHAR(20)) ENGINE=InnoDB",
        "INSERT INTO shop.orders VALUES (1, 'tea'), (2, 'cake')",
    ] {
        conn.exec(sql).await.unwrap();
    }
    conn.close().await;

    let name = db("shop");
    let backups = root.path().join("backups");
    let paths = CopyPaths {
        option_file: option_file.display().to_string(),
        backups: backups.display().to_string(),
        host: "127.0.0.1".into(),
        port: server.port,
    };
    let mut ids = Vec::new();
    // Two by one schedule keeping its newest backup, one by another schedule between them.
    for (started, schedule) in [
        (1_796_000_000_123_i64, "shop-nightly"),
        (1_796_000_030_000, "shop-monthly"),
        (1_796_000_060_456, "shop-nightly"),
    ] {
        let id = stratus_control::backup::backup_id(&name, started);
        let out = Command::new("sh")
            .args(["-c", &copy_script(&name, &id, &paths)])
            .env("MYSQL_PWD", "pw")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "the copy failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let args = RecordArgs {
            dir: backups.join("shop"),
            database: name.clone(),
            id: id.clone(),
            started_at_ms: started,
            retention_days: 36500,
            keep_last: 1,
            schedule: schedule.into(),
            source: source(),
        };
        let done = record(&args).unwrap();
        assert_eq!(done.warnings, Vec::<String>::new());
        assert_eq!(done.record.schedule.as_deref(), Some(schedule));
        assert!(done.record.verified, "{}", done.record.verification);
        assert!(
            done.record.gtid.is_some(),
            "the binary log's position is recorded"
        );
        assert!(done.record.bytes > 0);
        ids.push((id, done.deleted));
    }
    // The nightly schedule's second backup deleted its first (it keeps its newest one), and
    // left the monthly one alone.
    assert_eq!(ids[2].1, vec![ids[0].0.clone()]);
    assert!(ids[0].1.is_empty() && ids[1].1.is_empty());
    let kept = backups.join("shop").join(&ids[2].0);
    assert!(!backups.join("shop").join(&ids[0].0).exists());
    assert!(!backups.join("shop").join(partial_name(&ids[2].0)).exists());
    stratus_control::backup::verify_files(&kept).unwrap();
    let records = stratus_control::backup::records_in(&backups.join("shop"), "shop");
    let left: Vec<&str> = records.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(left, vec![ids[1].0.as_str(), ids[2].0.as_str()]);
    assert_eq!(records[1].source, source());
    drop(server);

    // A database made from it, as its pod makes it (the `restore` init container, then the
    // usual one, which finds the data there): the data, and Stratus's account with the new
    // database's own password.
    let restore = objects::Restore {
        claim: "stratus-backups".into(),
        source: name.clone(),
        backup: ids[2].0.clone(),
    };
    let root2 = tempfile::tempdir().unwrap();
    let (copy, _) = pod_server(root2.path(), "shop-copy", "pw2", Some((&restore, &backups))).await;
    let _ = test_server::setup_login(&copy.socket).await;
    let stratus = stratus_runtime::admin::AdminLogin {
        user: ADMIN_USER.into(),
        password: Some("pw2".into()),
    };
    let endpoint = stratus_core::Endpoint::Tcp(([127, 0, 0, 1], copy.port).into());
    let mut conn = stratus_runtime::admin::AdminConn::connect(
        "shop-copy",
        &endpoint,
        &stratus,
        std::time::Duration::from_secs(10),
    )
    .await
    .unwrap();
    let items: Option<String> = conn
        .query_value("SELECT GROUP_CONCAT(item ORDER BY id) FROM shop.orders")
        .await
        .unwrap();
    assert_eq!(items.as_deref(), Some("tea,cake"));
    conn.close().await;
    drop(copy);

    // A backup its record does not call verified is refused.
    let root4 = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root4.path().join("volume")).unwrap();
    let record_file = kept.join("backup.json");
    let good = std::fs::read_to_string(&record_file).unwrap();
    std::fs::write(
        &record_file,
        good.replace("\"verified\": true", "\"verified\": false"),
    )
    .unwrap();
    let script = objects::restore_script(
        &root4.path().join("volume").display().to_string(),
        &kept.display().to_string(),
    );
    let out = Command::new("sh").args(["-c", &script]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a verified backup"));
    assert!(!root4.path().join("volume/data").exists());
    std::fs::write(&record_file, good).unwrap();

    // A damaged backup is refused: nothing restored, and the pod does not start.
    let victim = std::fs::read_dir(kept.join("data/shop"))
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().ends_with(".ibd"))
        .unwrap()
        .path();
    let mut bytes = std::fs::read(&victim).unwrap();
    bytes[20_000] ^= 0xff;
    std::fs::write(&victim, bytes).unwrap();
    let root3 = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root3.path().join("volume")).unwrap();
    let script = objects::restore_script(
        &root3.path().join("volume").display().to_string(),
        &kept.display().to_string(),
    );
    let out = Command::new("sh").args(["-c", &script]).output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("FAILED"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(!root3.path().join("volume/data").exists());
}
