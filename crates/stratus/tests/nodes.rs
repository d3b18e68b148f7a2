//! Nodes of one `stratus up` (#12): each its own data root and cgroup parent, databases placed
//! by the memory left on each, found again on their node after a restart.

mod common;

use common::Stratus;
use mysql_async::prelude::*;
use serde_json::Value;

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

/// Writes the two nodes, `local` (the data directory) and `n2` (a second "disk"), with the
/// memory each offers.
fn nodes(s: &Stratus, local_bytes: u64, n2_bytes: u64) {
    let cfg = std::fs::read_to_string(&s.config).unwrap();
    let cfg = cfg.split("[[nodes]]").next().unwrap().to_owned();
    let disk2 = s.dir.path().join("disk2");
    std::fs::write(
        &s.config,
        format!(
            "{cfg}[[nodes]]\nname = \"local\"\nmemory_bytes = {}\n\
             [[nodes]]\nname = \"n2\"\ndata_dir = \"{}\"\nmemory_bytes = {}\n",
            local_bytes,
            disk2.display(),
            n2_bytes
        ),
    )
    .unwrap();
}

/// The cgroup a server runs in, as `/proc/<pid>/cgroup` names it for the memory controller.
fn memory_cgroup(pid: u64) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    text.lines()
        .find_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            (controllers.split(',').any(|c| c == "memory") || controllers.is_empty())
                .then(|| path.to_owned())
        })
        .unwrap()
}

async fn query_on(s: &Stratus, db: &str, password: &str) -> u64 {
    let opts = s.sql_opts(&format!("{db}.admin"), password, Some(db));
    let mut conn = mysql_async::Conn::new(opts).await.unwrap();
    let one: Option<u64> = conn.query_first("SELECT 1").await.unwrap();
    conn.disconnect().await.unwrap();
    one.unwrap()
}

fn node<'a>(list: &'a Value, name: &str) -> &'a Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == name)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn databases_go_to_the_node_with_room_and_stay_there_across_restarts() {
    let mut s = Stratus::new("nodes");
    s.nodes.push("n2".to_owned());
    let resources_on = std::path::Path::new("/sys/fs/cgroup/memory").is_dir();
    // `local` has far more memory left: the first database goes there.
    nodes(&s, 64 * GIB, 4 * GIB);
    s.start();
    let a = s.json(&["db", "create", "a", "--password", "pw-a"]);
    assert_eq!(a["name"], "a");
    let shown = s.json(&["db", "show", "a"]);
    assert_eq!(shown["node"], "local");
    let data = shown["data_dir"].as_str().unwrap();
    assert!(
        data.starts_with(s.data_dir().join("databases").to_str().unwrap()),
        "{data}"
    );

    // Restarted with the sizes the other way round: `a` is found on `local`, a new one goes
    // to `n2`, on its own disk and under its own cgroup parent.
    s.stop();
    nodes(&s, 4 * GIB, 64 * GIB);
    s.start();
    let shown = s.json(&["db", "show", "a"]);
    assert_eq!(shown["node"], "local");
    assert_eq!(shown["state"], "active");
    s.json(&["db", "create", "b", "--password", "pw-b"]);
    let b = s.json(&["db", "show", "b"]);
    assert_eq!(b["node"], "n2");
    let data = b["data_dir"].as_str().unwrap();
    let disk2 = s.dir.path().join("disk2").join("databases").join("b");
    assert!(data.starts_with(disk2.to_str().unwrap()), "{data}");
    if resources_on {
        let a_group = memory_cgroup(shown["pid"].as_u64().unwrap());
        let b_group = memory_cgroup(b["pid"].as_u64().unwrap());
        assert!(
            a_group.ends_with(&format!("/{}/a", s.cgroup_parent)),
            "{a_group}"
        );
        assert!(
            b_group.ends_with(&format!("/{}-n2/b", s.cgroup_parent)),
            "{b_group}"
        );
    }
    assert_eq!(query_on(&s, "a", "pw-a").await, 1);
    assert_eq!(query_on(&s, "b", "pw-b").await, 1);

    // The event says where and why.
    let events = s.json(&["events", "--db", "b"]);
    let started = events
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "started")
        .unwrap();
    let message = started["message"].as_str().unwrap();
    assert!(
        message.contains("on node n2 (most memory left under the 70 % watermark"),
        "{message}"
    );
    assert_eq!(started["data"]["node"], "n2");

    // `node list`: capacity as configured, the databases on each, memory measured.
    let list = s.json(&["node", "list"]);
    let (local, n2) = (node(&list, "local"), node(&list, "n2"));
    assert_eq!(local["memory_bytes"], 4 * GIB);
    assert_eq!(n2["memory_bytes"], 64 * GIB);
    assert_eq!(local["databases"], serde_json::json!(["a"]));
    assert_eq!(n2["databases"], serde_json::json!(["b"]));
    assert_eq!(n2["allocated_memory_bytes"], 2 * GIB);
    assert_eq!(n2["storage"], s.dir.path().join("disk2").to_str().unwrap());
    if resources_on {
        assert!(n2["memory_used_bytes"].as_u64().unwrap() > 0, "{n2}");
    }
    let text = s.cli(&["node", "list"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("NODE") && text.contains("n2"), "{text}");
    // What placement weighs, beside what the servers use.
    assert!(text.contains("LOAD"), "{text}");

    // A token for one database does not see the host's nodes (they name every tenant's).
    let (_, dev) = s.token(&["--role", "developer", "--db", "a"]);
    let err = s.refused(&dev, &["node", "list"]);
    assert!(err.contains("only to a token for all databases"), "{err}");

    // With no node that has room, a create is refused with the figures, and nothing is made:
    // 70 % of 320 MiB is 224, room for a new database (192 MiB) on an empty node, not beside
    // one that weighs its files (165 MiB).
    s.stop();
    nodes(&s, 320 * MIB, 320 * MIB);
    s.start();
    let err = s.fails(&["db", "create", "c"]);
    assert!(err.contains("no node has room for 192 MiB more"), "{err}");
    assert!(
        err.contains("local uses") && err.contains("n2 uses"),
        "{err}"
    );
    assert!(s.fails(&["db", "show", "c"]).contains("not found"));
    assert_eq!(query_on(&s, "b", "pw-b").await, 1, "the others serve on");
    s.stop();
}

/// A hostile owner cannot make a database weigh less than its pool will hold by storing it
/// compressed: a `ROW_FORMAT=COMPRESSED KEY_BLOCK_SIZE=1` table takes 1 KiB a page on disk and
/// 16 KiB (and the 1 KiB copy) in the pool, and the node's load counts it so, from what the
/// server says of its tablespaces, not from the volume's use.
#[tokio::test(flavor = "multi_thread")]
async fn compressed_tables_weigh_what_they_take_in_the_pool() {
    let mut s = Stratus::new("compressed");
    s.start();
    s.json(&["db", "create", "z", "--password", "pw-z"]);
    let opts = s.sql_opts("z.admin", "pw-z", Some("z"));
    let mut conn = mysql_async::Conn::new(opts).await.unwrap();
    conn.query_drop(
        "CREATE TABLE packed (id INT PRIMARY KEY, v VARBINARY(200)) \
         ROW_FORMAT=COMPRESSED KEY_BLOCK_SIZE=1",
    )
    .await
    .unwrap();
    // Random bytes do not compress: about 20 MB of rows, some 30 MiB of 1 KiB pages.
    for part in 0..4 {
        conn.query_drop(format!(
            "INSERT INTO packed SELECT seq, RANDOM_BYTES(200) FROM seq_{}_to_{}",
            part * 25_000 + 1,
            (part + 1) * 25_000
        ))
        .await
        .unwrap();
    }
    conn.disconnect().await.unwrap();
    let mut root = s.direct("z").await;
    let file: u64 = root
        .query_first(
            "SELECT FILE_SIZE FROM information_schema.INNODB_SYS_TABLESPACES WHERE NAME = 'z/packed'",
        )
        .await
        .unwrap()
        .unwrap();
    drop(root);
    let shown = s.json(&["db", "show", "z"]);
    let on_disk = shown["storage_used_bytes"].as_u64().unwrap();
    // Its pages in the pool: 16 times the file, well beyond the whole volume's use (and within
    // the 1 GiB pool of one SCU).
    let in_pool = file * 16;
    assert!(in_pool > on_disk + 100 * MIB, "{file} {on_disk}");
    assert!(in_pool < GIB, "{file}");
    // Writing the rows put their pages in the pool. Started again, the server's pool holds
    // none of them (an encrypted table's pages are not reloaded at start), and a full scan
    // would bring them all back: the load must count them before.
    s.stop();
    s.start();
    // The monitor asks the server at its first look (every few seconds).
    let begin = std::time::Instant::now();
    loop {
        let list = s.json(&["node", "list"]);
        let local = node(&list, "local");
        let load = local["memory_load_bytes"].as_u64().unwrap();
        let used = local["memory_used_bytes"].as_u64().unwrap();
        if load >= in_pool {
            assert!(used < in_pool, "the pool filled by itself: {local}");
            // (without a measure of the files the whole 1 GiB pool would count, and pass)
            let shown = s.json(&["db", "show", "z"]);
            assert!(shown["storage_used_bytes"].as_u64().is_some(), "{shown}");
            break;
        }
        assert!(
            begin.elapsed() < std::time::Duration::from_secs(60),
            "load {load}, the table's pages {in_pool}, its volume {on_disk}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    s.stop();
}
