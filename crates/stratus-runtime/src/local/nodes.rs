//! Several nodes on one host (#12, `docs/placement.md`): each node is a [`LocalRuntime`] with a
//! data root and a cgroup parent of its own, so two nodes are two disks and two resource
//! budgets of one machine. [`LocalNodes`] is the runtime `stratus up` drives: every call about a
//! database goes to the node that holds it, every call that makes one to the node its spec
//! names. The nodes share one master key ring, so a database's data key opens on whichever node
//! it moves to.

use super::{LocalConfig, LocalRuntime, SharedKeys};
use crate::admin::AdminConn;
use crate::{
    BackupTaken, ExitNotice, Instance, InstanceSpec, NodeInfo, Observed, ReplicaStarted,
    RestoreFrom, Result, Runtime, RuntimeError, RuntimeInfo, Spare, StorageUse, Usage,
};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use stratus_core::{Endpoint, Resources, ServiceName};
use tokio::sync::broadcast;

pub struct LocalNodes {
    nodes: Vec<LocalRuntime>,
    keys: Option<SharedKeys>,
    /// The node each database is on, as far as calls have said; others are looked for.
    homes: Arc<Mutex<HashMap<String, usize>>>,
    /// Every node's unasked-for exits, in one channel.
    exits: broadcast::Sender<ExitNotice>,
    /// Copies of databases replicating from their server on another node (live migration).
    replicas: Mutex<HashMap<String, Replica>>,
}

/// A database's copy on another node, replicating from its server.
struct Replica {
    node: usize,
    /// Carries the replica's connection (TCP: a server's replication client speaks nothing
    /// else) to the source's private socket; stops with the replica.
    relay: tokio::task::JoinHandle<()>,
}

/// The account a replica logs in to its source with, for the time of a migration.
const REPLICATION_USER: &str = "stratus_replication";

impl LocalNodes {
    /// Opens every node (building each one's template if it has none). Node names must be
    /// distinct; the master key ring is the first node's `master_key`, shared by all.
    pub async fn new(configs: Vec<LocalConfig>) -> Result<Self> {
        let Some(first) = configs.first() else {
            return Err(RuntimeError::Other("no node to run databases on".into()));
        };
        let keys = match &first.master_key {
            Some(path) => Some(SharedKeys::open_or_create(path)?),
            None => None,
        };
        let mut nodes: Vec<LocalRuntime> = Vec::with_capacity(configs.len());
        for cfg in configs {
            if nodes.iter().any(|n| n.inner.cfg.node == cfg.node) {
                return Err(RuntimeError::Other(format!(
                    "node {} is named twice",
                    cfg.node
                )));
            }
            nodes.push(LocalRuntime::with_keys(cfg, keys.clone()).await?);
        }
        let (exits, _) = broadcast::channel(256);
        let homes: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        for (i, node) in nodes.iter().enumerate() {
            let mut from = node.exits();
            let to = exits.clone();
            let homes = homes.clone();
            tokio::spawn(async move {
                loop {
                    match from.recv().await {
                        // The exit of a copy that is not the database's server (a migration's
                        // replica) is the migration's business, not a crash of the database.
                        Ok(notice) => {
                            let home = homes
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .get(notice.name.as_str())
                                .copied();
                            if home.is_none_or(|h| h == i) {
                                let _ = to.send(notice);
                            }
                        }
                        Err(broadcast::error::RecvError::Lagged(_)) => {}
                        Err(broadcast::error::RecvError::Closed) => return,
                    }
                }
            });
        }
        Ok(Self {
            nodes,
            keys,
            homes,
            exits,
            replicas: Mutex::new(HashMap::new()),
        })
    }

    /// The nodes' runtimes, in configuration order.
    pub fn runtimes(&self) -> &[LocalRuntime] {
        &self.nodes
    }

    pub fn admin_login(&self) -> crate::admin::AdminLogin {
        self.nodes[0].admin_login()
    }

    pub fn mariadb(&self) -> &crate::binaries::MariaDb {
        self.nodes[0].mariadb()
    }

    /// [`LocalRuntime::release_after_shutdown`] on every node.
    pub fn release_after_shutdown(&self) {
        for n in &self.nodes {
            n.release_after_shutdown();
        }
    }

    fn replicas(&self) -> std::sync::MutexGuard<'_, HashMap<String, Replica>> {
        self.replicas.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// [`LocalRuntime::remove_cgroup_parent`] on every node.
    pub fn remove_cgroup_parents(&self) -> Result<()> {
        self.nodes.iter().try_for_each(|n| n.remove_cgroup_parent())
    }

    fn homes(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.homes.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn index(&self, node: &str) -> Result<usize> {
        self.nodes
            .iter()
            .position(|n| n.inner.cfg.node == node)
            .ok_or_else(|| RuntimeError::Other(format!("there is no node {node}")))
    }

    /// The node a call that makes `name` goes to, remembered as its home.
    fn place(&self, name: &str, node: &str) -> Result<&LocalRuntime> {
        let i = self.index(node)?;
        self.homes().insert(name.to_owned(), i);
        Ok(&self.nodes[i])
    }

    /// The node holding `key` (a database or a spare): the one a call named, else the one its
    /// directory is on, else the first (where a call about nothing does nothing).
    fn home(&self, key: &str) -> &LocalRuntime {
        if let Some(&i) = self.homes().get(key) {
            return &self.nodes[i];
        }
        let found = self
            .nodes
            .iter()
            .position(|n| std::fs::symlink_metadata(n.inner.paths(key).dir).is_ok());
        match found {
            Some(i) => {
                self.homes().insert(key.to_owned(), i);
                &self.nodes[i]
            }
            None => &self.nodes[0],
        }
    }
}

impl Runtime for LocalNodes {
    type Admin = AdminConn;

    fn info(&self) -> RuntimeInfo {
        self.nodes[0].info()
    }

    fn nodes(&self) -> Vec<NodeInfo> {
        self.nodes.iter().flat_map(|n| n.nodes()).collect()
    }

    fn node_of(&self, name: &ServiceName) -> Option<String> {
        self.home(name.as_str()).node_of(name)
    }

    async fn admin(&self, name: &ServiceName, timeout: Duration) -> Result<AdminConn> {
        self.home(name.as_str()).admin(name, timeout).await
    }

    async fn provision(&self, spec: &InstanceSpec) -> Result<Instance> {
        self.place(spec.name.as_str(), &spec.node)?
            .provision(spec)
            .await
    }

    async fn start(&self, spec: &InstanceSpec) -> Result<Instance> {
        self.place(spec.name.as_str(), &spec.node)?
            .start(spec)
            .await
    }

    async fn stop(&self, name: &ServiceName, grace: Duration) -> Result<bool> {
        self.home(name.as_str()).stop(name, grace).await
    }

    async fn set_limits(
        &self,
        name: &ServiceName,
        cpu_millis: u32,
        memory_bytes: u64,
    ) -> Result<()> {
        self.home(name.as_str())
            .set_limits(name, cpu_millis, memory_bytes)
            .await
    }

    async fn observe(&self, name: &ServiceName) -> Observed {
        self.home(name.as_str()).observe(name).await
    }

    fn usage(&self, name: &ServiceName) -> Option<Usage> {
        self.home(name.as_str()).usage(name)
    }

    async fn freeze(&self, name: &ServiceName) -> Result<bool> {
        self.home(name.as_str()).freeze(name).await
    }

    async fn thaw(&self, name: &ServiceName) -> Result<()> {
        self.home(name.as_str()).thaw(name).await
    }

    fn endpoint(&self, name: &ServiceName) -> Option<Endpoint> {
        self.home(name.as_str()).endpoint(name)
    }

    async fn wait_gone(&self, name: &ServiceName, limit: Duration) -> bool {
        self.home(name.as_str()).wait_gone(name, limit).await
    }

    async fn destroy(&self, name: &ServiceName) -> Result<()> {
        let result = self.home(name.as_str()).destroy(name).await;
        if result.is_ok() {
            self.homes().remove(name.as_str());
        }
        result
    }

    fn exits(&self) -> broadcast::Receiver<ExitNotice> {
        self.exits.subscribe()
    }

    async fn provision_spare(
        &self,
        max_resources: Resources,
        node: &str,
        setup: &[String],
    ) -> Result<Spare> {
        let n = &self.nodes[self.index(node)?];
        n.provision_spare(max_resources, node, setup).await
    }

    async fn claim_spare(&self, spare: &Spare, spec: &InstanceSpec) -> Result<Instance> {
        if spare.node != spec.node {
            return Err(RuntimeError::Other(format!(
                "spare {} is on node {}, not {}",
                spare.key, spare.node, spec.node
            )));
        }
        self.place(spec.name.as_str(), &spec.node)?
            .claim_spare(spare, spec)
            .await
    }

    async fn presize_spare(&self, spare: &Spare, resources: Resources) -> Result<u64> {
        self.home(&spare.key).presize_spare(spare, resources).await
    }

    async fn destroy_spare(&self, key: &str) -> Result<()> {
        let result = self.home(key).destroy_spare(key).await;
        self.homes().remove(key);
        result
    }

    fn unclaimed_spares(&self) -> Vec<String> {
        self.nodes
            .iter()
            .flat_map(|n| n.unclaimed_spares())
            .collect()
    }

    /// One new master key wraps the data keys of every node's databases.
    async fn rotate_master_key(&self) -> Result<usize> {
        let Some(keys) = &self.keys else {
            return Err(RuntimeError::Other(
                "encryption at rest is off ([encryption] enabled = false)".into(),
            ));
        };
        let mut dirs = Vec::new();
        for n in &self.nodes {
            dirs.extend(n.database_dirs()?);
        }
        keys.lock().rotate(&dirs)
    }

    fn storage(&self, name: &ServiceName) -> Option<StorageUse> {
        self.home(name.as_str()).storage(name)
    }

    async fn grow_storage(&self, name: &ServiceName, bytes: u64) -> Result<u64> {
        self.home(name.as_str()).grow_storage(name, bytes).await
    }

    async fn archive_logs(&self, name: &ServiceName, dest: &Path) -> Result<u64> {
        self.home(name.as_str()).archive_logs(name, dest).await
    }

    fn shares_blocks(&self) -> bool {
        self.nodes[0].shares_blocks()
    }

    /// A branch shares its source's blocks, so it is made on the source's node; elsewhere the
    /// caller copies through a backup (`Ok(None)`).
    async fn branch(&self, source: &ServiceName, spec: &InstanceSpec) -> Result<Option<Instance>> {
        let on = self.home(source.as_str());
        if on.inner.cfg.node != spec.node {
            return Ok(None);
        }
        self.place(spec.name.as_str(), &spec.node)?;
        on.branch(source, spec).await
    }

    async fn backup(
        &self,
        name: &ServiceName,
        dest: &Path,
        base: Option<&Path>,
    ) -> Result<BackupTaken> {
        self.home(name.as_str()).backup(name, dest, base).await
    }

    /// Live migration, first step: a copy of the running database `spec.name` on `spec.node`,
    /// replicating from its server. A physical snapshot is taken without stopping the source
    /// (`mariadb-backup`, into the target node's storage), prepared, started there, and made a
    /// replica by GTID from the snapshot's position
    /// (<https://mariadb.com/kb/en/setting-up-a-replica-with-mariadb-backup/>). Calls about the
    /// database still go to its source until [`Runtime::promote_replica`]. On failure
    /// nothing is left on the target.
    async fn start_replica(&self, spec: &InstanceSpec) -> Result<ReplicaStarted> {
        let name = spec.name.as_str();
        let source = self.home(name);
        let to = self.index(&spec.node)?;
        let target = &self.nodes[to];
        if std::ptr::eq(source, target) {
            return Err(RuntimeError::Other(format!(
                "database {name} is already on node {}",
                spec.node
            )));
        }
        if self.replicas().contains_key(name) {
            return Err(RuntimeError::Other(format!(
                "database {name} already has a replica"
            )));
        }
        let Some(Endpoint::Unix(socket)) = source.endpoint(&spec.name) else {
            return Err(RuntimeError::NotRunning(name.to_owned()));
        };
        let password = stratus_core::random_password();
        let mut admin = source.admin(&spec.name, Duration::from_secs(10)).await?;
        // Made outside the binary log: the snapshot carries it, nothing replays it.
        let account = format!(
            "{}@'localhost'",
            stratus_core::sql::quote_str(REPLICATION_USER)
        );
        for sql in [
            "SET SESSION sql_log_bin = 0".to_owned(),
            format!("DROP USER IF EXISTS {account}"),
            format!(
                "CREATE USER {account} IDENTIFIED BY {}",
                stratus_core::sql::quote_str(&password)
            ),
            format!("GRANT REPLICATION SLAVE ON *.* TO {account}"),
        ] {
            admin.exec(&sql).await?;
        }
        admin.close().await;
        let made = async {
            // The copy's volume as large as the source's (which the storage controller grew
            // with its data), and never smaller than the data with room to replicate into.
            let used = source.storage(&spec.name);
            let mut sized = spec.clone();
            sized.storage_bytes = spec
                .storage_bytes
                .max(used.as_ref().map_or(0, |u| u.volume_bytes))
                .max(used.as_ref().map_or(0, |u| u.used_bytes + u.used_bytes / 4));
            // The backup is written straight into the copy's data directory and prepared there:
            // the data crosses once.
            let inner = target.inner.clone();
            let (key, bytes) = (name.to_owned(), sized.storage_bytes);
            let paths = tokio::task::spawn_blocking(move || inner.empty_storage(&key, bytes))
                .await
                .map_err(|e| RuntimeError::Other(format!("storage task: {e}")))??;
            let taken = source.backup(&spec.name, &paths.dir, None).await;
            let taken = target.inner.finish_storage(name, &paths, taken)?;
            let snapshot_gtid = taken.gtid.clone().unwrap_or_default();
            // Measured, and written back before it serves: otherwise the copy's first commit
            // that waits for the disk (after its promotion, the catch-up does not) waits for all
            // of it. Both off the runtime's threads.
            let data = paths.data.clone();
            let copied_bytes = tokio::task::spawn_blocking(move || {
                let dir = std::fs::File::open(&data)?;
                rustix::fs::syncfs(&dir).map_err(std::io::Error::from)?;
                Ok::<_, std::io::Error>(super::volume::disk_use(&data))
            })
            .await
            .map_err(|e| RuntimeError::Other(format!("sync task: {e}")))?
            .map_err(|e| RuntimeError::io("cannot write the copy back to its disk", e))?;
            target.start(&sized).await?;
            // Catching up is a burst: the copy may use the CPU of the database's largest size
            // until it is promoted (the promotion sets its size).
            target
                .set_limits(
                    &spec.name,
                    spec.max_resources.cpu_millis,
                    spec.resources.memory_bytes,
                )
                .await?;
            crate::failpoint::reached("migrate-replica-started").await;
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
                .await
                .map_err(|e| RuntimeError::io("cannot listen for a replica", e))?;
            let port = listener
                .local_addr()
                .map_err(|e| RuntimeError::io("replica relay", e))?
                .port();
            let pid = target
                .inner
                .running(name)
                .map(|p| p.pidfd.pid)
                .ok_or_else(|| RuntimeError::NotRunning(name.to_owned()))?;
            let relay = tokio::spawn(relay(listener, socket.to_path_buf(), pid));
            self.replicas()
                .insert(name.to_owned(), Replica { node: to, relay });
            let mut replica = target.admin(&spec.name, Duration::from_secs(10)).await?;
            for sql in [
                // Transactions applied in parallel where they do not conflict, committed in
                // the source's order (<https://mariadb.com/kb/en/parallel-replication/>).
                "SET GLOBAL slave_parallel_threads = 4".to_owned(),
                "SET GLOBAL slave_parallel_mode = 'optimistic'".to_owned(),
                // A copy that fails while it catches up is thrown away, never recovered: until
                // its promotion makes it durable again, it writes its redo log to the file
                // system once a second rather than at each commit, and its commits do not wait
                // for its commit clock.
                "SET GLOBAL innodb_flush_log_at_trx_commit = 2".to_owned(),
                "SET GLOBAL rpl_semi_sync_master_enabled = OFF".to_owned(),
                format!(
                    "SET GLOBAL gtid_slave_pos = {}",
                    stratus_core::sql::quote_str(&snapshot_gtid)
                ),
                format!(
                    "CHANGE MASTER TO MASTER_HOST = '127.0.0.1', MASTER_PORT = {port}, \
                     MASTER_USER = {}, MASTER_PASSWORD = {}, MASTER_USE_GTID = slave_pos, \
                     MASTER_CONNECT_RETRY = 1",
                    stratus_core::sql::quote_str(REPLICATION_USER),
                    stratus_core::sql::quote_str(&password)
                ),
                "START SLAVE".to_owned(),
            ] {
                replica.exec(&sql).await?;
            }
            replica.close().await;
            Ok::<_, RuntimeError>(ReplicaStarted {
                snapshot_gtid,
                copied_bytes,
            })
        }
        .await;
        if made.is_err() {
            let _ = self.remove_copy(&spec.name, &spec.node).await;
        }
        made
    }

    /// Stratus's login to the copy of `name` on `node` (a replica, before its promotion).
    async fn admin_on(
        &self,
        name: &ServiceName,
        node: &str,
        timeout: Duration,
    ) -> Result<AdminConn> {
        self.nodes[self.index(node)?].admin(name, timeout).await
    }

    /// Makes the copy of `name` on `node` its server: every call about it goes there from now
    /// on. Its replication must be stopped first; the old server keeps running until
    /// [`Runtime::stop_copy`] removes it.
    async fn promote_replica(&self, name: &ServiceName, node: &str) -> Result<()> {
        let i = self.index(node)?;
        let Some(replica) = self.replicas().remove(name.as_str()) else {
            return Err(RuntimeError::Other(format!(
                "database {name} has no replica"
            )));
        };
        replica.relay.abort();
        if replica.node != i {
            return Err(RuntimeError::Other(format!(
                "database {name} has no replica on node {node}"
            )));
        }
        // Durable as any server before it serves: what it applied reaches the disk now.
        let mut admin = self.nodes[i].admin(name, Duration::from_secs(10)).await?;
        let semi_sync = if self.nodes[i].inner.semi_sync() {
            "ON"
        } else {
            "OFF"
        };
        for sql in [
            "SET GLOBAL innodb_flush_log_at_trx_commit = 1".to_owned(),
            format!("SET GLOBAL rpl_semi_sync_master_enabled = {semi_sync}"),
            "FLUSH NO_WRITE_TO_BINLOG ENGINE LOGS".to_owned(),
        ] {
            admin.exec(&sql).await?;
        }
        admin.close().await;
        self.homes().insert(name.as_str().to_owned(), i);
        // Its source's replication account came with the snapshot; nothing logs in with it now.
        drop_replication_account(&self.nodes[i], name).await;
        Ok(())
    }

    async fn stop_copy(&self, name: &ServiceName, node: &str) -> Result<()> {
        let i = self.index(node)?;
        if std::ptr::eq(self.home(name.as_str()), &self.nodes[i]) {
            return Err(RuntimeError::Other(format!(
                "node {node} holds the server of {name}, not a copy"
            )));
        }
        // SIGKILL at once, not a shutdown: nothing held at a commit may commit on the way out.
        let inner = &self.nodes[i].inner;
        let _ = inner.thaw(name.as_str());
        let Some(proc) = inner.find(name.as_str()) else {
            return Ok(());
        };
        if tokio::time::timeout(Duration::from_secs(10), inner.kill(&proc))
            .await
            .is_err()
        {
            return Err(RuntimeError::Other(format!(
                "the server of {name} on node {node} did not die within 10 s of SIGKILL"
            )));
        }
        Ok(())
    }

    /// Stops and removes the copy of `name` on `node`, which must not be its server: an
    /// abandoned replica, or the old server after a promotion.
    async fn remove_copy(&self, name: &ServiceName, node: &str) -> Result<()> {
        let i = self.index(node)?;
        if std::ptr::eq(self.home(name.as_str()), &self.nodes[i]) {
            return Err(RuntimeError::Other(format!(
                "node {node} holds the server of {name}, not a copy"
            )));
        }
        let stale = {
            let mut replicas = self.replicas();
            match replicas.get(name.as_str()) {
                Some(r) if r.node == i => replicas.remove(name.as_str()),
                _ => None,
            }
        };
        if let Some(r) = stale {
            r.relay.abort();
        }
        // A move ends either way: its account goes from the server, which serves on.
        drop_replication_account(self.home(name.as_str()), name).await;
        self.nodes[i].destroy(name).await
    }

    async fn restore(&self, spec: &InstanceSpec, from: &RestoreFrom) -> Result<Instance> {
        self.place(spec.name.as_str(), &spec.node)?
            .restore(spec, from)
            .await
    }
}

/// Drops the account a replica logged in to its source with, from `node`'s server of `name`,
/// outside the binary log. Best effort: a server that cannot be reached keeps it, and says so.
async fn drop_replication_account(node: &LocalRuntime, name: &ServiceName) {
    let dropped = async {
        let mut admin = node.admin(name, Duration::from_secs(10)).await?;
        admin.exec("SET SESSION sql_log_bin = 0").await?;
        admin
            .exec(&format!(
                "DROP USER IF EXISTS {}@'localhost'",
                stratus_core::sql::quote_str(REPLICATION_USER)
            ))
            .await?;
        admin.close().await;
        Ok::<_, RuntimeError>(())
    };
    if let Err(e) = dropped.await {
        tracing::warn!(db = %name, "the replication account stays on its server: {e}");
    }
}

/// Carries each connection to `listener` from the replica's own server (process `pid`) to the
/// source's socket, both ways, until either side closes. Anyone else, other servers included, is
/// turned away: on the socket, the source takes its peer for Stratus itself (`unix_socket`
/// authentication).
async fn relay(listener: tokio::net::TcpListener, socket: std::path::PathBuf, pid: u32) {
    let Ok(local) = listener.local_addr() else {
        return;
    };
    loop {
        let Ok((mut tcp, peer)) = listener.accept().await else {
            return;
        };
        if !tcp_peer_is(peer, local, pid) {
            tracing::warn!(%peer, "a connection to a replica's relay from another user, refused");
            continue;
        }
        let socket = socket.clone();
        tokio::spawn(async move {
            if let Ok(mut unix) = tokio::net::UnixStream::connect(&socket).await {
                let _ = tokio::io::copy_bidirectional(&mut tcp, &mut unix).await;
            }
        });
    }
}

/// Whether the TCP socket `peer` connected to `local` is one of process `pid`'s: its inode (from
/// `/proc/net/tcp`) is among the process's open files.
fn tcp_peer_is(peer: std::net::SocketAddr, local: std::net::SocketAddr, pid: u32) -> bool {
    let Some((_, inode)) = tcp_peer(peer, local) else {
        return false;
    };
    let want = format!("socket:[{inode}]");
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| std::fs::read_link(e.path()).is_ok_and(|l| l.as_os_str() == want.as_str()))
}

/// The owner's uid and the inode of the TCP socket `peer` connected to `local`, from
/// `/proc/net/tcp` (<https://www.kernel.org/doc/Documentation/networking/proc_net_tcp.txt>):
/// its line has `peer` as local and `local` as remote address.
fn tcp_peer(peer: std::net::SocketAddr, local: std::net::SocketAddr) -> Option<(u32, u64)> {
    fn hex(a: std::net::SocketAddr) -> Option<String> {
        match a {
            std::net::SocketAddr::V4(v4) => Some(format!(
                "{:08X}:{:04X}",
                u32::from_le_bytes(v4.ip().octets()),
                v4.port()
            )),
            std::net::SocketAddr::V6(_) => None,
        }
    }
    let (peer, local) = (hex(peer)?, hex(local)?);
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        (f.get(1) == Some(&peer.as_str()) && f.get(2) == Some(&local.as_str()))
            .then(|| Some((f.get(7)?.parse().ok()?, f.get(9)?.parse().ok()?)))
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    /// A connection of this process's own is found as this process's, owned by its user.
    #[tokio::test]
    async fn the_peer_of_a_local_connection_is_found_in_its_process() {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .unwrap();
        let local = listener.local_addr().unwrap();
        let _client = tokio::net::TcpStream::connect(local).await.unwrap();
        let (_server, peer) = listener.accept().await.unwrap();
        let (uid, _) = super::tcp_peer(peer, local).unwrap();
        assert_eq!(uid, rustix::process::geteuid().as_raw());
        assert!(super::tcp_peer_is(peer, local, std::process::id()));
        assert!(!super::tcp_peer_is(peer, local, 1), "not init's");
        let elsewhere: std::net::SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert!(!super::tcp_peer_is(peer, elsewhere, std::process::id()));
    }
}
