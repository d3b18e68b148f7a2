//! Several nodes on one host (#12, `docs/placement.md`): each node is a [`LocalRuntime`] with a
//! data root and a cgroup parent of its own, so two nodes are two disks and two resource
//! budgets of one machine. [`LocalNodes`] is the runtime `stratus up` drives: every call about a
//! database goes to the node that holds it, every call that makes one to the node its spec
//! names. The nodes share one master key ring, so a database's data key opens on whichever node
//! it moves to.

use super::{LocalConfig, LocalRuntime, SharedKeys};
use crate::admin::AdminConn;
use crate::{
    BackupTaken, ExitNotice, Instance, InstanceSpec, NodeInfo, Observed, RestoreFrom, Result,
    Runtime, RuntimeError, RuntimeInfo, Spare, StorageUse, Usage,
};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;
use stratus_core::{Endpoint, Resources, ServiceName};
use tokio::sync::broadcast;

pub struct LocalNodes {
    nodes: Vec<LocalRuntime>,
    keys: Option<SharedKeys>,
    /// The node each database is on, as far as calls have said; others are looked for.
    homes: Mutex<HashMap<String, usize>>,
    /// Every node's unasked-for exits, in one channel.
    exits: broadcast::Sender<ExitNotice>,
}

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
        for node in &nodes {
            let mut from = node.exits();
            let to = exits.clone();
            tokio::spawn(async move {
                loop {
                    match from.recv().await {
                        Ok(notice) => {
                            let _ = to.send(notice);
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
            homes: Mutex::new(HashMap::new()),
            exits,
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

    async fn provision_spare(&self, max_resources: Resources, node: &str) -> Result<Spare> {
        let n = &self.nodes[self.index(node)?];
        n.provision_spare(max_resources, node).await
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

    async fn restore(&self, spec: &InstanceSpec, from: &RestoreFrom) -> Result<Instance> {
        self.place(spec.name.as_str(), &spec.node)?
            .restore(spec, from)
            .await
    }
}
