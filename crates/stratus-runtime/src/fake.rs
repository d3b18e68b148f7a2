//! An in-memory [`Runtime`] the controllers are tested against, as kube-rs controllers are
//! tested against a mocked API server: servers are records, starts and stops take no time, and
//! a test injects what real hosts do to servers (a crash, a failed start, a tenant locking
//! Stratus out). Every call is logged in order, so a test can assert the order a controller
//! acted in (a grow raises the limits before the buffer pool, a shrink the other way round).

use crate::admin::{Account, HotIndex, ServerAdmin, Warmed};
use crate::{
    ExitNotice, Instance, InstanceSpec, Observed, Result, Runtime, RuntimeError, RuntimeInfo,
    Spare, Usage,
};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use stratus_core::{Endpoint, Resources, ServiceName};
use tokio::sync::broadcast;

/// Operations a test can make fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Provision,
    Start,
    Stop,
    SetLimits,
    Freeze,
    Admin,
    ResizeBufferPool,
    ProvisionSpare,
    PresizeSpare,
    ClaimSpare,
    Backup,
    GrowStorage,
    /// A replica's start (the snapshot) fails.
    StartReplica,
    /// A replica does not reach the position it is asked to wait for.
    CatchUp,
    /// The source cannot hold its commits for a cut-over.
    BlockCommits,
}

/// One fake server, as a test inspects it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FakeServer {
    pub pid: u32,
    pub cpu_millis: u32,
    pub memory_bytes: u64,
    pub frozen: bool,
    pub buffer_pool_bytes: u64,
    /// `innodb_buffer_pool_size_max`: larger requests are cut to it, with a warning.
    pub buffer_pool_max: u64,
    /// When not 0, a resized pool is rounded up to a multiple of this, as a server with
    /// buffer-pool chunks does.
    pub buffer_pool_unit: u64,
    /// Client sessions open on it.
    pub sessions: u64,
    /// Transactions recovered at start and still rolling back; each look at them finds one
    /// fewer, as a rollback in progress would.
    pub recovered_transactions: u64,
    /// Stratus's own account was dropped or locked by a tenant: logins are refused until the
    /// next start restores it.
    pub account_refused: bool,
    pub hot_pages_dumped: bool,
    pub hot_pages_loading: bool,
    /// What `hot_indexes` finds in its buffer pool.
    pub hot_indexes: Vec<HotIndex>,
    /// Indexes read back by `warm_index`, in order (`schema.table.index`).
    pub warmed: Vec<String>,
    /// Statements run through [`ServerAdmin::exec`], in order.
    pub executed: Vec<String>,
    pub cpu_ns: u64,
    /// Its volume: bytes used and its size.
    pub storage_used: u64,
    pub storage_limit: u64,
    /// The node it runs on.
    pub node: String,
}

#[derive(Debug, Default)]
struct World {
    /// Databases' storage, with the node it is on.
    storage: BTreeMap<String, String>,
    /// The nodes, with their capacity: `(name, millicores, bytes)`.
    nodes: Vec<(String, u64, u64)>,
    servers: BTreeMap<String, FakeServer>,
    spares: BTreeMap<String, FakeServer>,
    next_pid: u32,
    failures: Vec<(Op, u32)>,
    cannot_freeze: bool,
    cannot_share: bool,
    /// What new spares round a buffer pool up to (0: nothing).
    spare_pool_unit: u64,
    /// How long a spare takes to start, on tokio's clock (a test's paused one).
    spare_start: Duration,
    calls: Vec<String>,
}

impl World {
    /// Takes one injected failure of `op`, if any is left.
    fn failing(&mut self, op: Op) -> bool {
        match self.failures.iter_mut().find(|(o, n)| *o == op && *n > 0) {
            Some((_, n)) => {
                *n -= 1;
                true
            }
            None => false,
        }
    }

    fn server(&mut self, name: &str) -> Result<&mut FakeServer> {
        self.servers
            .get_mut(name)
            .ok_or_else(|| RuntimeError::NotRunning(name.to_owned()))
    }

    fn new_server(&mut self, r: Resources, max: Resources, node: &str) -> FakeServer {
        self.next_pid += 1;
        FakeServer {
            pid: 1000 + self.next_pid,
            cpu_millis: r.cpu_millis,
            memory_bytes: r.memory_bytes,
            buffer_pool_bytes: r.buffer_pool_bytes,
            buffer_pool_max: max.buffer_pool_bytes.max(r.buffer_pool_bytes),
            storage_limit: 1 << 30,
            node: node.to_owned(),
            ..FakeServer::default()
        }
    }
}

/// The in-memory runtime. Clones share one world.
#[derive(Clone)]
pub struct FakeRuntime {
    world: Arc<Mutex<World>>,
    exits: broadcast::Sender<ExitNotice>,
}

impl Default for FakeRuntime {
    /// One node, `local`, of 8 CPUs and 64 GiB.
    fn default() -> Self {
        let world = World {
            nodes: vec![(crate::local::DEFAULT_NODE.to_owned(), 8000, 64 << 30)],
            ..World::default()
        };
        Self {
            world: Arc::new(Mutex::new(world)),
            exits: broadcast::channel(64).0,
        }
    }
}

impl World {
    fn check_node(&self, node: &str) -> Result<()> {
        if self.nodes.iter().any(|(n, _, _)| n == node) {
            Ok(())
        } else {
            Err(RuntimeError::Other(format!("no node {node}")))
        }
    }
}

fn injected(op: Op, name: &str) -> RuntimeError {
    RuntimeError::Other(format!("database {name}: injected failure of {op:?}"))
}

fn endpoint_of(name: &str) -> Endpoint {
    Endpoint::Unix(Path::new(&format!("/fake/{name}.sock")).into())
}

impl FakeRuntime {
    fn world(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn log(&self, call: String) {
        self.world().calls.push(call);
    }

    /// Makes the next `times` calls of `op` fail.
    pub fn fail(&self, op: Op, times: u32) {
        self.world().failures.push((op, times));
    }

    /// The host's storage cannot share blocks: branches go through a backup.
    pub fn set_cannot_share(&self) {
        self.world().cannot_share = true;
    }

    /// The host has no freezer: `freeze` answers false, as on hosts without one.
    pub fn set_cannot_freeze(&self) {
        self.world().cannot_freeze = true;
    }

    /// The server dies on its own: gone, and its exit reported.
    pub fn crash(&self, name: &str) {
        let gone = self.world().servers.remove(name);
        if let Some(s) = gone {
            self.log(format!("crash {name}"));
            let _ = self.exits.send(ExitNotice {
                name: ServiceName::parse(name).expect("a fake server has a valid name"),
                pid: s.pid,
                status: "signal 9 (SIGKILL)".to_owned(),
            });
        }
    }

    /// The server is gone without a word, as one that died while Stratus was not running.
    pub fn vanish(&self, name: &str) {
        self.world().servers.remove(name);
    }

    /// The running server of `name`, as it is now.
    pub fn server(&self, name: &str) -> Option<FakeServer> {
        self.world().servers.get(name).cloned()
    }

    /// Spares started from now on round their buffer pool up to a multiple of `unit`, as a
    /// server with another chunk size does.
    pub fn round_spare_pools_to(&self, unit: u64) {
        self.world().spare_pool_unit = unit;
    }

    /// Spares started from now on take `d` to start, as a real one takes a few hundred
    /// milliseconds.
    pub fn start_spares_in(&self, d: Duration) {
        self.world().spare_start = d;
    }

    /// Changes a running server (open sessions, a tenant's doing, CPU used).
    pub fn with_server(&self, name: &str, f: impl FnOnce(&mut FakeServer)) {
        if let Some(s) = self.world().servers.get_mut(name) {
            f(s);
        }
    }

    /// The replica of `name` on `node` during a migration, as it is now.
    pub fn replica(&self, name: &str, node: &str) -> Option<FakeServer> {
        self.world().servers.get(&replica_key(name, node)).cloned()
    }

    pub fn has_storage(&self, name: &str) -> bool {
        self.world().storage.contains_key(name)
    }

    /// Replaces the nodes: `(name, millicores, bytes)` each.
    pub fn set_nodes(&self, nodes: &[(&str, u64, u64)]) {
        self.world().nodes = nodes
            .iter()
            .map(|(n, c, m)| ((*n).to_owned(), *c, *m))
            .collect();
    }

    pub fn spares(&self) -> usize {
        self.world().spares.len()
    }

    /// Every call so far, oldest first, as `"<op> <name> <arguments>"`.
    pub fn calls(&self) -> Vec<String> {
        self.world().calls.clone()
    }

    /// The calls so far, forgotten.
    pub fn take_calls(&self) -> Vec<String> {
        std::mem::take(&mut self.world().calls)
    }
}

impl Runtime for FakeRuntime {
    type Admin = FakeAdmin;

    fn info(&self) -> RuntimeInfo {
        RuntimeInfo {
            kind: "fake",
            resource_control: "fake".to_owned(),
            resource_control_note: None,
            mariadb_version: "fake".to_owned(),
            encryption: None,
            storage: "fake volumes".to_owned(),
            storage_note: None,
        }
    }

    /// A node uses the memory limits of its servers and spares.
    fn nodes(&self) -> Vec<crate::NodeInfo> {
        let w = self.world();
        w.nodes
            .iter()
            .map(|(name, cpu, mem)| crate::NodeInfo {
                name: name.clone(),
                cpu_millis: *cpu,
                memory_bytes: *mem,
                storage: format!("/fake/{name}"),
                memory_used_bytes: w
                    .servers
                    .values()
                    .chain(w.spares.values())
                    .filter(|s| &s.node == name)
                    .map(|s| s.memory_bytes)
                    .sum(),
            })
            .collect()
    }

    fn node_of(&self, name: &ServiceName) -> Option<String> {
        self.world().storage.get(name.as_str()).cloned()
    }

    async fn admin(&self, name: &ServiceName, _timeout: Duration) -> Result<FakeAdmin> {
        let mut w = self.world();
        if w.failing(Op::Admin) {
            return Err(injected(Op::Admin, name.as_str()));
        }
        if w.server(name.as_str())?.account_refused {
            return Err(RuntimeError::AccessDenied {
                name: name.to_string(),
                reason: "account locked".to_owned(),
            });
        }
        Ok(FakeAdmin {
            world: self.world.clone(),
            name: name.to_string(),
        })
    }

    async fn provision(&self, spec: &InstanceSpec) -> Result<Instance> {
        let name = spec.name.as_str();
        let mut w = self.world();
        w.calls.push(format!("provision {name}"));
        w.check_node(&spec.node)?;
        if w.storage.contains_key(name) {
            return Err(RuntimeError::StorageExists(name.to_owned()));
        }
        if w.failing(Op::Provision) {
            return Err(injected(Op::Provision, name));
        }
        let s = w.new_server(spec.resources, spec.max_resources, &spec.node);
        let pid = s.pid;
        w.storage.insert(name.to_owned(), spec.node.clone());
        w.servers.insert(name.to_owned(), s);
        Ok(instance(pid, name, false))
    }

    async fn start(&self, spec: &InstanceSpec) -> Result<Instance> {
        let name = spec.name.as_str();
        let mut w = self.world();
        w.calls.push(format!("start {name}"));
        if w.storage.get(name) != Some(&spec.node) {
            return Err(RuntimeError::NoStorage(name.to_owned()));
        }
        if w.failing(Op::Start) {
            return Err(injected(Op::Start, name));
        }
        if let Some(s) = w.servers.get(name) {
            return Ok(instance(s.pid, name, true));
        }
        let s = w.new_server(spec.resources, spec.max_resources, &spec.node);
        let pid = s.pid;
        w.servers.insert(name.to_owned(), s);
        Ok(instance(pid, name, false))
    }

    async fn stop(&self, name: &ServiceName, _grace: Duration) -> Result<bool> {
        let mut w = self.world();
        w.calls.push(format!("stop {name}"));
        if w.failing(Op::Stop) {
            return Err(injected(Op::Stop, name.as_str()));
        }
        w.servers.remove(name.as_str());
        Ok(true)
    }

    async fn set_limits(
        &self,
        name: &ServiceName,
        cpu_millis: u32,
        memory_bytes: u64,
    ) -> Result<()> {
        let mut w = self.world();
        w.calls
            .push(format!("set_limits {name} {cpu_millis} {memory_bytes}"));
        if w.failing(Op::SetLimits) {
            return Err(injected(Op::SetLimits, name.as_str()));
        }
        if let Some(s) = w.servers.get_mut(name.as_str()) {
            s.cpu_millis = cpu_millis;
            s.memory_bytes = memory_bytes;
        }
        Ok(())
    }

    async fn observe(&self, name: &ServiceName) -> Observed {
        let w = self.world();
        let s = w.servers.get(name.as_str());
        Observed {
            pid: s.map(|s| s.pid),
            backend: s.map(|_| endpoint_of(name.as_str()).to_string()),
            cpu_limit_millis: s.map(|s| s.cpu_millis),
            memory_limit_bytes: s.map(|s| s.memory_bytes),
            cpu_usage_ns: s.map(|s| s.cpu_ns),
            memory_usage_bytes: s.map(|s| s.buffer_pool_bytes),
            frozen: s.is_some_and(|s| s.frozen),
            storage: w
                .storage
                .contains_key(name.as_str())
                .then(|| format!("/fake/{name}")),
        }
    }

    fn usage(&self, name: &ServiceName) -> Option<Usage> {
        let w = self.world();
        let s = w.servers.get(name.as_str())?;
        Some(Usage {
            cpu_ns: s.cpu_ns,
            memory_bytes: s.buffer_pool_bytes,
        })
    }

    async fn freeze(&self, name: &ServiceName) -> Result<bool> {
        let mut w = self.world();
        w.calls.push(format!("freeze {name}"));
        if w.failing(Op::Freeze) {
            return Err(injected(Op::Freeze, name.as_str()));
        }
        if w.cannot_freeze {
            return Ok(false);
        }
        w.server(name.as_str())?.frozen = true;
        Ok(true)
    }

    async fn thaw(&self, name: &ServiceName) -> Result<()> {
        let mut w = self.world();
        w.calls.push(format!("thaw {name}"));
        if let Some(s) = w.servers.get_mut(name.as_str()) {
            s.frozen = false;
        }
        Ok(())
    }

    fn endpoint(&self, name: &ServiceName) -> Option<Endpoint> {
        self.world()
            .servers
            .contains_key(name.as_str())
            .then(|| endpoint_of(name.as_str()))
    }

    async fn wait_gone(&self, name: &ServiceName, _limit: Duration) -> bool {
        !self.world().servers.contains_key(name.as_str())
    }

    async fn destroy(&self, name: &ServiceName) -> Result<()> {
        let mut w = self.world();
        w.calls.push(format!("destroy {name}"));
        w.servers.remove(name.as_str());
        w.storage.remove(name.as_str());
        Ok(())
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
        let start = {
            let mut w = self.world();
            w.calls.push(format!("spare_starting on {node}"));
            w.spare_start
        };
        if !start.is_zero() {
            tokio::time::sleep(start).await;
        }
        let mut w = self.world();
        w.check_node(node)?;
        if w.failing(Op::ProvisionSpare) {
            w.calls.push("provision_spare failed".into());
            return Err(injected(Op::ProvisionSpare, "spare"));
        }
        let floor = Resources {
            scu: 0,
            cpu_millis: 0,
            memory_bytes: 0,
            buffer_pool_bytes: 0,
        };
        let mut s = w.new_server(floor, max_resources, node);
        s.buffer_pool_unit = w.spare_pool_unit;
        s.executed.extend_from_slice(setup);
        let key = format!("spare-{}", s.pid);
        w.calls.push(format!("provision_spare {key}"));
        w.spares.insert(key.clone(), s);
        Ok(Spare {
            endpoint: endpoint_of(&key),
            key,
            node: node.to_owned(),
            buffer_pool_bytes: 0,
        })
    }

    async fn presize_spare(&self, spare: &Spare, resources: Resources) -> Result<u64> {
        let mut w = self.world();
        w.calls.push(format!(
            "presize_spare {} {}",
            spare.key, resources.buffer_pool_bytes
        ));
        if w.failing(Op::PresizeSpare) {
            return Err(injected(Op::PresizeSpare, &spare.key));
        }
        let Some(s) = w.spares.get_mut(&spare.key) else {
            return Err(RuntimeError::NotRunning(spare.key.clone()));
        };
        let bytes = resources.buffer_pool_bytes.min(s.buffer_pool_max);
        s.buffer_pool_bytes = match s.buffer_pool_unit {
            0 => bytes,
            unit => bytes.div_ceil(unit) * unit,
        };
        Ok(s.buffer_pool_bytes)
    }

    async fn claim_spare(&self, spare: &Spare, spec: &InstanceSpec) -> Result<Instance> {
        let name = spec.name.as_str();
        let mut w = self.world();
        w.calls.push(format!("claim_spare {} {name}", spare.key));
        if w.failing(Op::ClaimSpare) {
            return Err(injected(Op::ClaimSpare, name));
        }
        if spare.node != spec.node {
            return Err(RuntimeError::Other(format!(
                "spare {} is on node {}, not {}",
                spare.key, spare.node, spec.node
            )));
        }
        let Some(mut s) = w.spares.remove(&spare.key) else {
            return Err(RuntimeError::Other(format!("no spare {}", spare.key)));
        };
        s.cpu_millis = spec.resources.cpu_millis;
        s.memory_bytes = spec.resources.memory_bytes;
        let pid = s.pid;
        w.storage.insert(name.to_owned(), spec.node.clone());
        w.servers.insert(name.to_owned(), s);
        Ok(instance(pid, name, false))
    }

    async fn destroy_spare(&self, key: &str) -> Result<()> {
        let mut w = self.world();
        w.calls.push(format!("destroy_spare {key}"));
        w.spares.remove(key);
        Ok(())
    }

    fn unclaimed_spares(&self) -> Vec<String> {
        Vec::new()
    }

    async fn rotate_master_key(&self) -> Result<usize> {
        Ok(self.world().storage.len())
    }

    fn storage(&self, name: &ServiceName) -> Option<crate::StorageUse> {
        let w = self.world();
        let s = w.servers.get(name.as_str())?;
        Some(crate::StorageUse {
            used_bytes: s.storage_used,
            limit_bytes: s.storage_limit,
            volume_bytes: s.storage_limit,
            log_bytes: 0,
            measured: false,
        })
    }

    async fn grow_storage(&self, name: &ServiceName, bytes: u64) -> Result<u64> {
        let mut w = self.world();
        w.calls.push(format!("grow_storage {name} {bytes}"));
        if w.failing(Op::GrowStorage) {
            return Err(injected(Op::GrowStorage, name.as_str()));
        }
        let s = w.server(name.as_str())?;
        s.storage_limit = s.storage_limit.max(bytes);
        Ok(s.storage_limit)
    }

    async fn archive_logs(&self, name: &ServiceName, _dest: &Path) -> Result<u64> {
        self.log(format!("archive_logs {name}"));
        Ok(0)
    }

    fn shares_blocks(&self) -> bool {
        !self.world().cannot_share
    }

    /// A fake branch copies the source's record, statements and all.
    async fn branch(&self, source: &ServiceName, spec: &InstanceSpec) -> Result<Option<Instance>> {
        let name = spec.name.as_str();
        let mut w = self.world();
        w.calls.push(format!("branch {source} {name}"));
        if w.storage.contains_key(name) {
            return Err(RuntimeError::StorageExists(name.to_owned()));
        }
        let source = w.server(source.as_str())?;
        if source.node != spec.node {
            return Err(RuntimeError::Other(format!(
                "a branch shares its source's blocks: it must be on node {}",
                source.node
            )));
        }
        let copy = source.executed.clone();
        let mut s = w.new_server(spec.resources, spec.max_resources, &spec.node);
        s.executed = copy;
        let pid = s.pid;
        w.storage.insert(name.to_owned(), spec.node.clone());
        w.servers.insert(name.to_owned(), s);
        Ok(Some(instance(pid, name, false)))
    }

    /// A fake replica copies its source's record, statements and all.
    async fn start_replica(&self, spec: &InstanceSpec) -> Result<crate::ReplicaStarted> {
        let name = spec.name.as_str();
        let mut w = self.world();
        w.calls.push(format!("start_replica {name} {}", spec.node));
        w.check_node(&spec.node)?;
        if w.storage.get(name) == Some(&spec.node) {
            return Err(RuntimeError::Other(format!(
                "database {name} is already on node {}",
                spec.node
            )));
        }
        if w.failing(Op::StartReplica) {
            return Err(injected(Op::StartReplica, name));
        }
        let copy = w.server(name)?.executed.clone();
        let mut s = w.new_server(spec.resources, spec.max_resources, &spec.node);
        s.executed = copy;
        w.servers.insert(replica_key(name, &spec.node), s);
        Ok(crate::ReplicaStarted {
            snapshot_gtid: "0-1-1".to_owned(),
            copied_bytes: 1 << 20,
        })
    }

    async fn admin_on(
        &self,
        name: &ServiceName,
        node: &str,
        _timeout: Duration,
    ) -> Result<FakeAdmin> {
        let mut w = self.world();
        let key = if w.storage.get(name.as_str()).map(String::as_str) == Some(node) {
            name.to_string()
        } else {
            replica_key(name.as_str(), node)
        };
        w.server(&key)?;
        Ok(FakeAdmin {
            world: self.world.clone(),
            name: key,
        })
    }

    async fn promote_replica(&self, name: &ServiceName, node: &str) -> Result<()> {
        let mut w = self.world();
        w.calls.push(format!("promote_replica {name} {node}"));
        let Some(replica) = w.servers.remove(&replica_key(name.as_str(), node)) else {
            return Err(RuntimeError::Other(format!(
                "database {name} has no replica on {node}"
            )));
        };
        // The old server is kept apart until it is stopped.
        if let Some(old) = w.servers.remove(name.as_str()) {
            let key = replica_key(name.as_str(), &old.node);
            w.servers.insert(key, old);
        }
        w.servers.insert(name.to_string(), replica);
        w.storage.insert(name.to_string(), node.to_owned());
        Ok(())
    }

    async fn stop_copy(&self, name: &ServiceName, node: &str) -> Result<()> {
        let mut w = self.world();
        w.calls.push(format!("stop_copy {name} {node}"));
        w.servers.remove(&replica_key(name.as_str(), node));
        Ok(())
    }

    async fn remove_copy(&self, name: &ServiceName, node: &str) -> Result<()> {
        let mut w = self.world();
        w.calls.push(format!("remove_copy {name} {node}"));
        if w.storage.get(name.as_str()).map(String::as_str) == Some(node) {
            return Err(RuntimeError::Other(format!(
                "node {node} holds the server of {name}, not a copy"
            )));
        }
        w.servers.remove(&replica_key(name.as_str(), node));
        Ok(())
    }

    /// A fake backup is a directory with the statements the server ran, one per line in
    /// `data/statements`; its restore runs them on the new server.
    async fn backup(
        &self,
        name: &ServiceName,
        dest: &Path,
        base: Option<&Path>,
    ) -> Result<crate::BackupTaken> {
        let _ = base; // a fake backup holds everything: an incremental one too
        let statements = {
            let mut w = self.world();
            w.calls.push(format!("backup {name}"));
            if w.failing(Op::Backup) {
                return Err(injected(Op::Backup, name.as_str()));
            }
            w.server(name.as_str())?.executed.join("\n")
        };
        let data = dest.join("data");
        std::fs::create_dir_all(&data)
            .and_then(|()| std::fs::write(data.join("statements"), statements))
            .map_err(|e| RuntimeError::io(format!("cannot write {}", data.display()), e))?;
        // No binary log here: its backups are not a base for point-in-time restore.
        Ok(crate::BackupTaken {
            gtid: Some("0-1-1".to_owned()),
            binlog: None,
            log_tail: Vec::new(),
        })
    }

    async fn restore(&self, spec: &InstanceSpec, from: &crate::RestoreFrom) -> Result<Instance> {
        let name = spec.name.as_str();
        if let Some(r) = &from.replay {
            self.world()
                .calls
                .push(format!("replay {name} {}:{}", r.to.file, r.to.pos));
        }
        // The newest backup of the chain holds the fake's whole state.
        let from = from.incrementals.last().unwrap_or(&from.full);
        let statements =
            std::fs::read_to_string(from.join("data").join("statements")).map_err(|e| {
                RuntimeError::io(format!("cannot read the backup {}", from.display()), e)
            })?;
        let mut w = self.world();
        w.calls.push(format!("restore {name}"));
        w.check_node(&spec.node)?;
        if w.storage.contains_key(name) {
            return Err(RuntimeError::StorageExists(name.to_owned()));
        }
        let mut s = w.new_server(spec.resources, spec.max_resources, &spec.node);
        s.executed = statements.lines().map(str::to_owned).collect();
        let pid = s.pid;
        w.storage.insert(name.to_owned(), spec.node.clone());
        w.servers.insert(name.to_owned(), s);
        Ok(instance(pid, name, false))
    }
}

/// A replica's record among the servers: apart from the database's own until its promotion.
fn replica_key(name: &str, node: &str) -> String {
    format!("{name}@{node}")
}

fn instance(pid: u32, name: &str, adopted: bool) -> Instance {
    Instance {
        pid,
        endpoint: endpoint_of(name),
        adopted,
        access_restored: None,
        startup: Duration::ZERO,
    }
}

/// Stratus's connection to a fake server: each call acts on the server's record, and fails as
/// a lost connection would once the server is gone.
pub struct FakeAdmin {
    world: Arc<Mutex<World>>,
    name: String,
}

impl FakeAdmin {
    fn act<T>(&self, call: String, f: impl FnOnce(&mut World, &str) -> Result<T>) -> Result<T> {
        let mut w = self.world.lock().unwrap_or_else(|p| p.into_inner());
        w.calls.push(call);
        f(&mut w, &self.name)
    }
}

impl ServerAdmin for FakeAdmin {
    async fn exec(&mut self, sql: &str) -> Result<()> {
        self.act(format!("exec {}", self.name), |w, name| {
            w.server(name)?.executed.push(sql.to_owned());
            Ok(())
        })
    }

    async fn buffer_pool_size(&mut self) -> Result<u64> {
        self.act(format!("buffer_pool_size {}", self.name), |w, name| {
            Ok(w.server(name)?.buffer_pool_bytes)
        })
    }

    async fn resize_buffer_pool(&mut self, bytes: u64) -> Result<(u64, Vec<String>)> {
        self.act(
            format!("resize_buffer_pool {} {bytes}", self.name),
            |w, name| {
                if w.failing(Op::ResizeBufferPool) {
                    return Err(injected(Op::ResizeBufferPool, name));
                }
                let s = w.server(name)?;
                let mut warnings = Vec::new();
                s.buffer_pool_bytes = if bytes > s.buffer_pool_max {
                    warnings.push(format!(
                        "Warning 1292: Truncated incorrect innodb_buffer_pool_size value: '{bytes}'"
                    ));
                    s.buffer_pool_max
                } else if s.buffer_pool_unit > 0 {
                    bytes.div_ceil(s.buffer_pool_unit) * s.buffer_pool_unit
                } else {
                    bytes
                };
                Ok((s.buffer_pool_bytes, warnings))
            },
        )
    }

    async fn dump_buffer_pool(&mut self, _limit: Duration) -> Result<String> {
        self.act(format!("dump_buffer_pool {}", self.name), |w, name| {
            w.server(name)?.hot_pages_dumped = true;
            Ok("Buffer pool(s) dump completed".to_owned())
        })
    }

    async fn load_buffer_pool(&mut self) -> Result<()> {
        self.act(format!("load_buffer_pool {}", self.name), |w, name| {
            w.server(name)?.hot_pages_loading = true;
            Ok(())
        })
    }

    async fn hot_indexes(&mut self) -> Result<Vec<HotIndex>> {
        self.act(format!("hot_indexes {}", self.name), |w, name| {
            Ok(w.server(name)?.hot_indexes.clone())
        })
    }

    async fn warm_index(&mut self, index: &HotIndex, _limit_secs: u64) -> Result<Warmed> {
        self.act(format!("warm_index {}", self.name), |w, name| {
            let s = w.server(name)?;
            s.warmed.push(format!(
                "{}.{}.{}",
                index.table.schema, index.table.table, index.index
            ));
            Ok(Warmed {
                pages_accessed: index.size_pages,
                pages_read: 0,
                pages_prefetched: index.size_pages,
            })
        })
    }

    async fn close_sessions(&mut self) -> Result<u64> {
        self.act(format!("close_sessions {}", self.name), |w, name| {
            Ok(std::mem::take(&mut w.server(name)?.sessions))
        })
    }

    async fn recovered_transactions(&mut self) -> Result<u64> {
        self.act(
            format!("recovered_transactions {}", self.name),
            |w, name| {
                let s = w.server(name)?;
                let left = s.recovered_transactions;
                s.recovered_transactions = left.saturating_sub(1);
                Ok(left)
            },
        )
    }

    async fn client_activity(&mut self) -> Result<crate::admin::ClientActivity> {
        // No clients in the fake world; the local control plane learns activity from the proxy.
        self.act(format!("client_activity {}", self.name), |w, name| {
            w.server(name)
                .map(|_| crate::admin::ClientActivity::default())
        })
    }

    async fn buffer_pool_counters(&mut self) -> Result<(u64, u64)> {
        self.act(format!("buffer_pool_counters {}", self.name), |w, name| {
            w.server(name).map(|_| (0, 0))
        })
    }

    async fn pool_fillable_bytes(&mut self) -> Result<u64> {
        self.act(format!("pool_fillable_bytes {}", self.name), |w, name| {
            w.server(name).map(|s| s.storage_used)
        })
    }

    async fn accounts(&mut self) -> Result<Vec<Account>> {
        self.act(format!("accounts {}", self.name), |w, name| {
            w.server(name).map(|_| Vec::new())
        })
    }

    async fn free_in_tables(&mut self) -> Result<u64> {
        self.act(format!("free_in_tables {}", self.name), |w, name| {
            w.server(name).map(|_| 0)
        })
    }

    async fn block_commits(&mut self, _limit: Duration) -> Result<()> {
        self.act(format!("block_commits {}", self.name), |w, name| {
            if w.failing(Op::BlockCommits) {
                return Err(injected(Op::BlockCommits, name));
            }
            w.server(name).map(|_| ())
        })
    }

    async fn wait_for_gtid(&mut self, gtid_pos: &str, _limit: Duration) -> Result<bool> {
        self.act(
            format!("wait_for_gtid {} {gtid_pos}", self.name),
            |w, name| {
                w.server(name)?;
                Ok(!w.failing(Op::CatchUp))
            },
        )
    }

    async fn replica_state(&mut self) -> Result<crate::admin::ReplicaState> {
        self.act(format!("replica_state {}", self.name), |w, name| {
            w.server(name)?;
            Ok(crate::admin::ReplicaState {
                running: true,
                seconds_behind: Some(0),
                applied: "0-1-1".to_owned(),
                error: None,
            })
        })
    }

    async fn stop_replication(&mut self) -> Result<()> {
        self.act(format!("stop_replication {}", self.name), |w, name| {
            w.server(name).map(|_| ())
        })
    }

    async fn gtid_binlog_pos(&mut self) -> Result<String> {
        self.act(format!("gtid_binlog_pos {}", self.name), |w, name| {
            w.server(name).map(|_| String::new())
        })
    }

    async fn purge_binary_logs(&mut self) -> Result<u64> {
        self.act(format!("purge_binary_logs {}", self.name), |w, name| {
            w.server(name).map(|_| 1)
        })
    }

    async fn close(self) {}
}
