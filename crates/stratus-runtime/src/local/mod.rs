//! The local runtime: one `mariadbd` process per database on this machine, each in its own
//! cgroup, all under one data directory:
//!
//! ```text
//! <root>/template/            data directory every database is copied from (template.rs)
//! <root>/databases/<name>/    data/, my.cnf, init.sql, mariadbd.pid, mariadbd.sock, error.log,
//!                             tmp/, files/ — owned by the servers' OS user, mode 0700
//! <root>/plugins/             the only plugin directory servers see: the key plugin alone
//! ```
//!
//! Servers listen on their unix socket only, run as an unprivileged OS user
//! ([`server_user`]), and restore Stratus's own account at every start (`init_file`), so a
//! tenant can neither bypass the proxy nor lock Stratus out for good.
//!
//! Processes outlive a `kill -9` of Stratus (they run in their own process group); the next
//! runtime over the same root adopts them through their pid file, checked by pidfd.

mod archive;
mod backup;
mod commit_clock;
pub mod config;
pub mod keys;
mod nodes;
mod notify;
mod process;
pub mod server_user;
mod template;
pub mod volume;

pub use nodes::LocalNodes;
pub use server_user::{DEFAULT_SERVER_USER, ServerUser};
pub use template::{Access, RESTORED_TABLE, access_sql_for};

use crate::admin::{AdminConn, AdminLogin, ServerAdmin};
use crate::binaries::MariaDb;
use crate::{
    ExitNotice, Instance, InstanceSpec, Observed, Result, Runtime, RuntimeError, RuntimeInfo, Spare,
};
use process::Pidfd;
use rustix::process::Signal;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use stratus_cgroup::{Layout, Manager};
use stratus_core::{Endpoint, Resources, ServiceName};
use tokio::sync::{broadcast, watch};

/// How long the kernel gets to freeze or thaw a cgroup.
const FREEZE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a fresh server gets for its first login after `READY=1`.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a start waits for the commit clock to attach before it serves without it.
const COMMIT_CLOCK_ATTACH: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
pub struct LocalConfig {
    /// Holds `template/` and `databases/`.
    pub root: PathBuf,
    /// Where `mariadbd` and `mariadb-install-db` are; `PATH` when unset.
    pub bin_dir: Option<PathBuf>,
    /// The cgroup every database's group is created under.
    pub cgroup_parent: String,
    /// Set false to run without cgroups even where they are available.
    pub resource_control: bool,
    /// Upper bound on a start, crash recovery included.
    pub start_timeout: Duration,
    /// The OS user servers run as when Stratus runs as root.
    pub server_user: String,
    /// The master key ring for encryption at rest (outside the data directory); `None` runs
    /// servers unencrypted.
    pub master_key: Option<PathBuf>,
    /// Give each database a volume of its own where the host allows (`volume`).
    pub volumes: bool,
    /// Follow each server to note when its transactions commit (`commit_clock`), the times
    /// point-in-time restore needs.
    pub commit_clock: bool,
    /// Servers wait at each commit for the commit clock's acknowledgement (with `commit_clock`).
    pub exact_commit_times: bool,
    /// The node this runtime is ([`crate::NodeInfo`]): its name, and the CPU (millicores) and
    /// memory it offers databases, the host's own when unset.
    pub node: String,
    pub node_cpu_millis: Option<u64>,
    pub node_memory_bytes: Option<u64>,
    /// A certificate chain and its key (PEM) servers take TLS with, so that the proxy can
    /// repeat a client's TLS to its server; `None`: servers take no TLS. Held, not read at each
    /// start: a file gone missing must not keep databases from starting.
    pub server_tls: Option<ServerTls>,
}

/// The certificate chain and private key (PEM) servers take TLS with. Its `Debug` leaves the
/// key out, so that logging a configuration never logs it.
#[derive(Clone)]
pub struct ServerTls {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("cert_pem", &format_args!("{} bytes", self.cert_pem.len()))
            .field("key_pem", &format_args!("(not shown)"))
            .finish()
    }
}

/// The node of a single-node installation.
pub const DEFAULT_NODE: &str = "local";

impl LocalConfig {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            bin_dir: None,
            cgroup_parent: "stratus".into(),
            resource_control: true,
            start_timeout: Duration::from_secs(120),
            server_user: DEFAULT_SERVER_USER.into(),
            master_key: None,
            volumes: true,
            commit_clock: true,
            exact_commit_times: true,
            node: DEFAULT_NODE.into(),
            node_cpu_millis: None,
            node_memory_bytes: None,
            server_tls: None,
        }
    }
}

/// The master key ring, shared by the nodes of one host: a database's wrapped data key opens
/// on whichever node it moves to.
#[derive(Clone)]
pub struct SharedKeys(Arc<Mutex<keys::MasterKeys>>);

impl SharedKeys {
    pub fn open_or_create(path: &Path) -> Result<Self> {
        Ok(Self(Arc::new(Mutex::new(
            keys::MasterKeys::open_or_create(path)?,
        ))))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, keys::MasterKeys> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub struct LocalRuntime {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: LocalConfig,
    mariadb: MariaDb,
    template: template::Template,
    cgroups: Option<Manager>,
    resource_note: Option<String>,
    user: ServerUser,
    admin: AdminLogin,
    plugin_dir: PathBuf,
    /// Master keys, when data is encrypted at rest.
    keys: Option<SharedKeys>,
    /// Where a server's plain data key waits for its start: a private directory in memory.
    key_dir: PathBuf,
    /// Volumes, or why there are none.
    volumes: std::result::Result<volume::Volumes, String>,
    procs: Mutex<HashMap<String, Arc<Proc>>>,
    exits: broadcast::Sender<ExitNotice>,
    next_spare: std::sync::atomic::AtomicU32,
    /// Dropped with the runtime, which stops its commit clocks (never sent on).
    clocks: watch::Sender<()>,
    /// The statements that fill a server's time zone tables and how many zones they make,
    /// made when a database first turns out to lack some.
    time_zones: tokio::sync::OnceCell<(String, u64)>,
    /// How many zones a database should have: the template's, or fewer if the system's zones
    /// became fewer since it was made (so that no database is filled at every start).
    time_zones_expected: AtomicU64,
}

const STARTING: u8 = 0;
const READY: u8 = 1;
const STOPPING: u8 = 2;

/// A server this runtime watches.
struct Proc {
    /// Its key in `procs` (a database's name, or a spare's): changes when a spare is claimed.
    key: Mutex<String>,
    pidfd: Pidfd,
    endpoint: Endpoint,
    /// Only exits of a `READY` server are reported as crashes.
    phase: AtomicU8,
    exited: watch::Receiver<bool>,
}

impl Proc {
    async fn wait_exit(&self) {
        let mut rx = self.exited.clone();
        let _ = rx.wait_for(|gone| *gone).await;
    }
}

/// The files of one database.
struct DbPaths {
    dir: PathBuf,
    data: PathBuf,
    cnf: PathBuf,
    pid: PathBuf,
    log: PathBuf,
    socket: PathBuf,
    /// The server's `secure_file_priv`.
    files: PathBuf,
    tmp: PathBuf,
    /// The binary log, outside the volume (`config::ServerOptions::binlog_dir`).
    binlog: PathBuf,
    init: PathBuf,
}

impl LocalRuntime {
    /// Finds MariaDB, sets up resource control (or says why not) and builds the template if
    /// this root has none yet.
    pub async fn new(cfg: LocalConfig) -> Result<Self> {
        let keys = match &cfg.master_key {
            Some(path) => Some(SharedKeys::open_or_create(path)?),
            None => None,
        };
        Self::with_keys(cfg, keys).await
    }

    /// As [`LocalRuntime::new`], with the master key ring of other nodes (`cfg.master_key`
    /// only says that data is encrypted).
    pub async fn with_keys(cfg: LocalConfig, shared_keys: Option<SharedKeys>) -> Result<Self> {
        if cfg.root.to_string_lossy().contains(['\n', '"']) {
            return Err(RuntimeError::Other(format!(
                "data directory {:?} contains a newline or quote",
                cfg.root
            )));
        }
        let mariadb = MariaDb::locate(cfg.bin_dir.as_deref())?;
        let (cgroups, resource_note) = if !cfg.resource_control {
            (None, Some("disabled in the configuration".to_owned()))
        } else {
            match Manager::new(Layout::detect(), &cfg.cgroup_parent) {
                Ok(m) => (Some(m), None),
                Err(e) => {
                    tracing::warn!(
                        "running without resource control (no CPU or memory limits): {e}"
                    );
                    (None, Some(e.to_string()))
                }
            }
        };
        let user = ServerUser::resolve(&cfg.server_user)?;
        user.check_reachable(&cfg.root)?;
        let databases = cfg.root.join("databases");
        let plugin_dir = cfg.root.join("plugins");
        for dir in [&cfg.root, &databases, &plugin_dir] {
            std::fs::create_dir_all(dir)
                .map_err(|e| RuntimeError::io(format!("cannot create {}", dir.display()), e))?;
            user.share_dir(dir)?;
        }
        let keys = shared_keys;
        if keys.is_some() {
            allow_plugin(&mariadb, &plugin_dir, KEY_PLUGIN)?;
        }
        let key_dir = if Path::new("/dev/shm").is_dir() {
            Path::new("/dev/shm").join(format!(
                "stratus-{:08x}-keys",
                config::server_id(&cfg.root.to_string_lossy())
            ))
        } else {
            cfg.root.join("keys")
        };
        let template =
            template::ensure(&cfg.root.join("template"), &mariadb, &user, &plugin_dir).await?;
        let time_zones = template.time_zones;
        let admin = AdminLogin {
            user: user.admin_account.clone(),
            password: None,
        };
        let volumes = if cfg.volumes {
            let probed = volume::Volumes::probe(&cfg.root.join("volumes"));
            if let Err(why) = &probed {
                tracing::warn!(
                    "databases get plain directories, their size limits kept by measuring: {why}"
                );
            }
            probed
        } else {
            Err("volumes are turned off in the configuration".to_owned())
        };
        let (exits, _) = broadcast::channel(256);
        Ok(Self {
            inner: Arc::new(Inner {
                cfg,
                mariadb,
                template,
                cgroups,
                resource_note,
                user,
                admin,
                plugin_dir,
                keys,
                key_dir,
                volumes,
                procs: Mutex::new(HashMap::new()),
                exits,
                next_spare: std::sync::atomic::AtomicU32::new(1),
                clocks: watch::channel(()).0,
                time_zones: tokio::sync::OnceCell::new(),
                time_zones_expected: AtomicU64::new(time_zones),
            }),
        })
    }

    /// How Stratus logs into this runtime's servers.
    pub fn admin_login(&self) -> AdminLogin {
        self.inner.admin.clone()
    }

    pub fn mariadb(&self) -> &MariaDb {
        &self.inner.mariadb
    }

    /// How many named time zones a database has from the template (none without `tzdata`).
    pub fn time_zones(&self) -> u64 {
        self.inner.template.time_zones
    }

    /// After a clean shutdown, removes what the host holds for servers no longer running: their
    /// cgroups (the parent too if nothing is left), their volumes' mounts, and the in-memory key
    /// directory if empty (one per data directory on `/dev/shm`, which would otherwise outlive
    /// every run). The next start makes them again.
    pub fn release_after_shutdown(&self) {
        if let Some(m) = &self.inner.cgroups {
            m.remove_unused();
        }
        let _ = std::fs::remove_dir(&self.inner.key_dir);
        if let Ok(v) = &self.inner.volumes {
            let dbs = self.inner.cfg.root.join("databases");
            for e in std::fs::read_dir(&dbs).into_iter().flatten().flatten() {
                let data = e.path().join("data");
                let served = e
                    .file_name()
                    .to_str()
                    .is_some_and(|k| self.inner.running(k).is_some());
                if !served && e.file_type().is_ok_and(|t| t.is_dir()) {
                    v.unmount(&data);
                }
            }
            if self.inner.procs().is_empty() {
                v.unmount_pool();
            }
        }
    }

    /// A single node holds no copies: moves are between the nodes of [`LocalNodes`].
    fn one_node(&self, node: &str) -> RuntimeError {
        RuntimeError::Other(format!(
            "node {} is the only node of this runtime; there is no node {node} to move to",
            self.inner.cfg.node
        ))
    }

    /// Every database's directory (spares included), for a rotation of the master key.
    fn database_dirs(&self) -> Result<Vec<PathBuf>> {
        let databases = self.inner.cfg.root.join("databases");
        Ok(std::fs::read_dir(&databases)
            .map_err(|e| RuntimeError::io(format!("cannot read {}", databases.display()), e))?
            .flatten()
            // Links are claimed spares, whose directory is listed under its own name too.
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.path())
            .collect())
    }

    /// Removes the parent cgroup once no database group is left under it.
    pub fn remove_cgroup_parent(&self) -> Result<()> {
        match &self.inner.cgroups {
            Some(m) => Ok(m.remove_parent()?),
            None => Ok(()),
        }
    }
}

impl Inner {
    /// Refuses work meant for another node: a database's storage is where its node is.
    fn check_node(&self, node: &str) -> Result<()> {
        if node == self.cfg.node {
            return Ok(());
        }
        Err(RuntimeError::Other(format!(
            "node {node} is not this runtime's node ({})",
            self.cfg.node
        )))
    }

    fn paths(&self, key: &str) -> DbPaths {
        let dir = self.cfg.root.join("databases").join(key);
        let mut socket = dir.join("mariadbd.sock");
        // sun_path holds 108 bytes; deep data directories put the socket in a private directory
        // of its own under the temp dir (made by `private_dir`).
        if socket.as_os_str().len() > 100 {
            socket = short_socket_dir(&dir).join("mariadbd.sock");
        }
        DbPaths {
            data: dir.join("data"),
            cnf: dir.join("my.cnf"),
            pid: dir.join("mariadbd.pid"),
            log: dir.join("error.log"),
            files: dir.join("files"),
            tmp: dir.join("tmp"),
            binlog: dir.join("binlog"),
            init: dir.join("init.sql"),
            socket,
            dir,
        }
    }

    /// The key of the volume under `key`'s data: a claimed spare's directory is a link to the
    /// spare's, whose volume keeps the spare's name.
    fn volume_key(&self, key: &str) -> String {
        std::fs::read_link(self.paths(key).dir)
            .ok()
            .and_then(|t| t.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| key.to_owned())
    }

    /// Makes the (empty) data directory of a new database: a volume of `bytes` mounted there,
    /// or a plain directory where there are no volumes.
    /// Whether servers wait at each commit for the commit clock's acknowledgement.
    fn semi_sync(&self) -> bool {
        self.cfg.commit_clock && self.cfg.exact_commit_times
    }

    fn make_data_dir(&self, key: &str, bytes: u64, paths: &DbPaths) -> Result<()> {
        match &self.volumes {
            Ok(v) => {
                std::fs::create_dir(&paths.data).map_err(|e| {
                    RuntimeError::io(format!("cannot create {}", paths.data.display()), e)
                })?;
                v.create(key, bytes, &paths.data)
            }
            Err(_) => std::fs::create_dir(&paths.data).map_err(|e| {
                RuntimeError::io(format!("cannot create {}", paths.data.display()), e)
            }),
        }
    }

    fn procs(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Proc>>> {
        self.procs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What server `key` uses: its cgroup's charge, or without cgroups its process's CPU time
    /// and RSS. A read fails by itself for a group or process gone, so nothing is checked first
    /// (checking the cgroup's directories was a third of the monitor's time).
    /// `pid` is looked up only without cgroups: the monitor asks for every database each look.
    fn usage_of(&self, key: &str, pid: impl FnOnce() -> Option<u32>) -> Option<crate::Usage> {
        match &self.cgroups {
            Some(m) => m.named(key).ok()?.usage().ok(),
            None => stratus_cgroup::proc_usage(pid()?).ok(),
        }
    }

    /// The live server under `key`. One that has exited counts as gone at once, even before its
    /// watcher has been scheduled: the proxy asks right after its connections broke, and must
    /// not be handed the dead address.
    fn running(&self, key: &str) -> Option<Arc<Proc>> {
        self.procs()
            .get(key)
            .filter(|p| !*p.exited.borrow() && !p.pidfd.has_exited())
            .cloned()
    }

    /// Starts watching a process: when it exits, it is forgotten, and if it was serving, the
    /// exit is broadcast as a crash.
    fn watch(
        self: &Arc<Self>,
        key: &str,
        pidfd: Pidfd,
        endpoint: Endpoint,
        phase: u8,
    ) -> Arc<Proc> {
        let (tx, rx) = watch::channel(false);
        let proc = Arc::new(Proc {
            key: Mutex::new(key.to_owned()),
            pidfd,
            endpoint,
            phase: AtomicU8::new(phase),
            exited: rx,
        });
        self.procs().insert(key.to_owned(), proc.clone());
        let weak: Weak<Inner> = Arc::downgrade(self);
        let watched = proc.clone();
        tokio::spawn(async move {
            let status = watched.pidfd.exited().await;
            let _ = tx.send(true);
            let Some(inner) = weak.upgrade() else { return };
            let key = watched
                .key
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            {
                let mut procs = inner.procs();
                if procs.get(&key).is_some_and(|p| Arc::ptr_eq(p, &watched)) {
                    procs.remove(&key);
                }
            }
            // Spares belong to nobody: their exits are not crashes of a database.
            let Ok(name) = ServiceName::parse(&key) else {
                return;
            };
            if watched.phase.load(Ordering::SeqCst) == READY {
                tracing::warn!(db = %name, pid = watched.pidfd.pid, %status, "mariadbd exited unexpectedly");
                let _ = inner.exits.send(ExitNotice {
                    name,
                    pid: watched.pidfd.pid,
                    status,
                });
            }
        });
        proc
    }

    /// Writes the option file and the init file, and makes the directories the server writes
    /// in, owned by its user.
    fn write_cnf(&self, spec: &Launch, paths: &DbPaths) -> Result<()> {
        for dir in [&paths.tmp, &paths.files, &paths.binlog] {
            std::fs::create_dir_all(dir)
                .map_err(|e| RuntimeError::io(format!("cannot create {}", dir.display()), e))?;
            self.user.give(dir)?;
        }
        if let Some(dir) = paths.socket.parent().filter(|d| *d != paths.dir) {
            private_dir(dir, &self.user)?;
        }
        // Opened by Stratus for the server's output, reopened by the server as its own user.
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&paths.log)
            .map_err(|e| RuntimeError::io(format!("cannot open {}", paths.log.display()), e))?;
        self.user.give(&paths.log)?;
        let key_file = match &self.keys {
            Some(ring) => {
                let key = ring.lock().data_key(&paths.dir)?;
                private_dir(&self.key_dir, &self.user)?;
                let file = self.key_file(&spec.key);
                stratus_core::fs::write_private_new(&file, keys::plugin_key_file(&key).as_bytes())
                    .map_err(|e| RuntimeError::io(format!("cannot write {}", file.display()), e))?;
                self.user.give(&file)?;
                Some(file)
            }
            None => None,
        };
        // Copies for this start, as the data key: the server reads them before it is ready.
        let tls = match &self.cfg.server_tls {
            Some(t) => {
                private_dir(&self.key_dir, &self.user)?;
                let copies = self.tls_files(&spec.key);
                for (pem, to) in [(&t.cert_pem, &copies.0), (&t.key_pem, &copies.1)] {
                    stratus_core::fs::write_private_new(to, pem.as_bytes()).map_err(|e| {
                        RuntimeError::io(format!("cannot write {}", to.display()), e)
                    })?;
                    self.user.give(to)?;
                }
                Some(copies)
            }
            None => None,
        };
        let opts = config::ServerOptions {
            tls,
            key_file,
            datadir: paths.data.clone(),
            socket: paths.socket.clone(),
            port: None,
            pid_file: paths.pid.clone(),
            error_log: Some(paths.log.clone()),
            tmpdir: paths.tmp.clone(),
            // The real directory, not a claimed spare's name for it: the binary log index keeps
            // full paths, and a replica asking for a file finds it only under the same one.
            binlog_dir: Some(canonical(&paths.binlog)),
            user: self.user.os_user.as_ref().map(|a| a.name.clone()),
            secure_file_priv: paths.files.clone(),
            plugin_dir: self.plugin_dir.clone(),
            init_file: Some(paths.init.clone()),
            // Another node's copy of a database (a migration's replica) needs an id of its own.
            server_id: if self.cfg.node == DEFAULT_NODE {
                config::server_id(&spec.key)
            } else {
                config::server_id(&format!("{}/{}", self.cfg.node, spec.key))
            },
            semi_sync: self.semi_sync(),
            buffer_pool_bytes: spec.resources.buffer_pool_bytes,
            buffer_pool_max_bytes: self
                .mariadb
                .has_buffer_pool_size_max
                .then_some(spec.max_resources.buffer_pool_bytes),
        };
        template::write_private(&paths.cnf, &config::render(&opts))?;
        // The server reads its init file after it has become its own user.
        template::write_private(&paths.init, &template::access_sql(&self.admin.user))?;
        self.user.give(&paths.init)
    }

    fn apply_limits(&self, key: &str, cpu_millis: u32, memory_bytes: u64) -> Result<Vec<PathBuf>> {
        let Some(manager) = &self.cgroups else {
            return Ok(Vec::new());
        };
        let cg = manager.create(key)?;
        cg.set_cpu_limit(Some(cpu_millis))?;
        cg.set_memory_limit(Some(memory_bytes))?;
        Ok(cg.procs_files())
    }

    /// Starts (or adopts) the server and logs in as Stratus.
    async fn start_server(self: &Arc<Self>, spec: &Launch) -> Result<Instance> {
        let name = spec.key.as_str();
        let paths = self.paths(name);
        if let Ok(v) = &self.volumes {
            let key = self.volume_key(name);
            if v.exists(&key) {
                v.mount(&key, &paths.data)?;
            }
        }
        if !paths.data.is_dir() {
            return Err(RuntimeError::NoStorage(name.to_string()));
        }
        let begin = Instant::now();
        if let Some(proc) = self.running(name) {
            return Ok(self.instance(proc.pidfd.pid, &proc.endpoint, false, begin));
        }
        let endpoint = Endpoint::Unix(paths.socket.as_path().into());
        if let Some(pidfd) = process::adopt(&paths.pid, &paths.cnf) {
            let pid = pidfd.pid;
            let proc = self.watch(name, pidfd, endpoint.clone(), STARTING);
            let restored = self.login(name, &endpoint).await?;
            self.follow_commits(name, &proc, &paths).await;
            proc.phase.store(READY, Ordering::SeqCst);
            tracing::info!(db = %name, pid, "adopted running mariadbd");
            return Ok(Instance {
                access_restored: restored,
                ..self.instance(pid, &endpoint, true, begin)
            });
        }
        let procs_files =
            self.apply_limits(name, spec.resources.cpu_millis, spec.resources.memory_bytes)?;
        let (tls_cert, tls_key) = self.tls_files(name);
        let secrets = Removed(vec![self.key_file(name), tls_cert, tls_key]);
        self.write_cnf(spec, &paths)?;
        let notify =
            notify::NotifySocket::bind().map_err(|e| RuntimeError::io("notify socket", e))?;
        let pidfd = process::spawn(
            &self.mariadb.mariadbd,
            &paths.cnf,
            &paths.log,
            &procs_files,
            &notify.env,
        )?;
        let proc = self.watch(name, pidfd, endpoint.clone(), STARTING);
        let failure = tokio::select! {
            ready = notify.ready() => match ready {
                Ok(_) => None,
                Err(e) => Some(format!("readiness socket failed: {e}")),
            },
            () = proc.wait_exit() => Some("it exited during start-up".to_owned()),
            () = tokio::time::sleep(self.cfg.start_timeout) => {
                Some(format!("not ready within {:?}", self.cfg.start_timeout))
            }
        };
        // The key plugin has read its key: the plain key leaves memory-backed storage too, and
        // so does the TLS key the server has loaded.
        drop(secrets);
        if let Some(reason) = failure {
            self.kill(&proc).await;
            return Err(RuntimeError::StartFailed {
                name: name.to_string(),
                reason,
                log_tail: process::log_tail(&paths.log, 12),
            });
        }
        let restored = match self.login(name, &endpoint).await {
            Ok(r) => r,
            Err(e) => {
                self.kill(&proc).await;
                return Err(e);
            }
        };
        self.follow_commits(name, &proc, &paths).await;
        proc.phase.store(READY, Ordering::SeqCst);
        tracing::info!(db = %name, pid = proc.pidfd.pid, ms = begin.elapsed().as_millis() as u64, "mariadbd ready");
        Ok(Instance {
            access_restored: restored,
            ..self.instance(proc.pidfd.pid, &endpoint, false, begin)
        })
    }

    /// Starts recording the commit times of a server ([`commit_clock`]) for as long as it
    /// runs, and waits (briefly) until the server streams to it, so that the first commit a
    /// client makes is timed exactly too.
    async fn follow_commits(&self, name: &str, proc: &Arc<Proc>, paths: &DbPaths) {
        if !self.cfg.commit_clock {
            return;
        }
        let Endpoint::Unix(socket) = &proc.endpoint else {
            return;
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let watched = proc.clone();
        let mut runtime_gone = self.clocks.subscribe();
        tokio::spawn(commit_clock::follow(
            name.to_owned(),
            socket.to_path_buf(),
            self.admin.user.clone(),
            paths.binlog.clone(),
            tx,
            async move {
                tokio::select! {
                    () = watched.wait_exit() => {}
                    // Only ever an error: the runtime was dropped.
                    _ = runtime_gone.changed() => {}
                }
            },
        ));
        if tokio::time::timeout(COMMIT_CLOCK_ATTACH, rx).await.is_err() {
            tracing::warn!(db = %name, "commit clock not attached within {COMMIT_CLOCK_ATTACH:?}; commit times are to the second until it is");
        }
    }

    /// Where a server's plain data key is put for its start.
    fn key_file(&self, key: &str) -> PathBuf {
        self.key_dir.join(format!("{key}.key"))
    }

    /// Where a server's TLS certificate chain and key are put for its start.
    fn tls_files(&self, key: &str) -> (PathBuf, PathBuf) {
        (
            self.key_dir.join(format!("{key}.tls-cert.pem")),
            self.key_dir.join(format!("{key}.tls-key.pem")),
        )
    }

    fn instance(&self, pid: u32, endpoint: &Endpoint, adopted: bool, begin: Instant) -> Instance {
        Instance {
            pid,
            endpoint: endpoint.clone(),
            adopted,
            startup: begin.elapsed(),
            access_restored: None,
        }
    }

    /// Logs in as Stratus once the server is up: returns what its init file noted if it had to
    /// restore Stratus's account at this start (the row is removed once read), and has the time
    /// zone tables filled if they hold fewer zones than the template.
    async fn login(self: &Arc<Self>, name: &str, endpoint: &Endpoint) -> Result<Option<String>> {
        let mut conn = AdminConn::connect(name, endpoint, &self.admin, LOGIN_TIMEOUT).await?;
        let noted: Vec<String> = conn
            .query_rows(&format!("SELECT was FROM {}", template::RESTORED_TABLE))
            .await
            .unwrap_or_default();
        if !noted.is_empty() {
            conn.exec(&format!(
                "SET sql_log_bin = 0; DELETE FROM {}; SET sql_log_bin = 1",
                template::RESTORED_TABLE
            ))
            .await?;
        }
        // Databases made before the template had time zones (or restored from such a backup,
        // or stopped while being filled) get them at their next start, after it. Spares are
        // copies of the template.
        let expected = self.time_zones_expected.load(Ordering::Relaxed);
        if expected > 0 && ServiceName::parse(name).is_ok() {
            let have: Option<u64> = conn
                .query_value("SELECT COUNT(*) FROM mysql.time_zone_name")
                .await
                .unwrap_or(None);
            if let Some(have) = have.filter(|n| *n < expected) {
                tokio::spawn(
                    self.clone()
                        .fill_time_zones(name.to_owned(), endpoint.clone(), have),
                );
            }
        }
        conn.close().await;
        Ok(noted.into_iter().last())
    }

    /// Loads the system's time zones into a running server that lacks some, in the background.
    /// Outside the binary log, as Stratus's other writes of its own: a server replaying or
    /// replicating one (a point-in-time restore, a migration's copy) must see only its source's
    /// transactions, and tenants' replicas only the tenant's. Every server checks at its own
    /// start instead. It gives up after 10 s waiting for a lock (a tenant's transaction that read
    /// the tables) and tries again at the next start.
    async fn fill_time_zones(self: Arc<Self>, name: String, endpoint: Endpoint, have: u64) {
        let zones = self.cfg.root.join("template").join("zoneinfo");
        let Ok((sql, made)) = self
            .time_zones
            .get_or_try_init(|| async {
                let sql = template::time_zone_sql(&self.mariadb, &zones)
                    .await
                    .ok_or(())?;
                let made = template::time_zone_names(&sql);
                let expected = self.time_zones_expected.load(Ordering::Relaxed);
                if made < expected {
                    tracing::info!(
                        "the system has {made} named time zones, the template {expected}: databases with {made} are not filled again"
                    );
                    self.time_zones_expected.store(made, Ordering::Relaxed);
                    template::record_time_zones(&self.cfg.root.join("template"), made);
                }
                Ok::<_, ()>((
                    format!(
                        "SET SESSION sql_log_bin = 0; SET SESSION lock_wait_timeout = 10; \
                         USE mysql;\n{sql}"
                    ),
                    made,
                ))
            })
            .await
        else {
            return;
        };
        // Never fewer than it has.
        if have >= *made {
            return;
        }
        let loaded = async {
            let mut conn = AdminConn::connect(&name, &endpoint, &self.admin, LOGIN_TIMEOUT).await?;
            conn.exec(sql).await?;
            conn.close().await;
            Ok::<_, RuntimeError>(())
        };
        match loaded.await {
            Ok(()) => tracing::info!(db = %name, "time zone tables filled"),
            Err(e) => tracing::warn!(db = %name, "cannot fill the time zone tables: {e}"),
        }
    }

    async fn kill(&self, proc: &Proc) {
        proc.phase.store(STOPPING, Ordering::SeqCst);
        let _ = proc.pidfd.signal(Signal::KILL);
        proc.wait_exit().await;
    }

    /// The running server, adopting it first if an earlier runtime started it.
    fn find(self: &Arc<Self>, name: &str) -> Option<Arc<Proc>> {
        if let Some(p) = self.running(name) {
            return Some(p);
        }
        let paths = self.paths(name);
        let pidfd = process::adopt(&paths.pid, &paths.cnf)?;
        let endpoint = Endpoint::Unix(paths.socket.as_path().into());
        Some(self.watch(name, pidfd, endpoint, READY))
    }

    /// Thaws the database's cgroup if it is frozen (a frozen process cannot even die).
    fn thaw(&self, name: &str) -> Result<()> {
        if let Some(cg) = self.cgroups.as_ref().and_then(|m| m.open(name).ok()) {
            if cg.can_freeze() && cg.is_frozen().unwrap_or(false) {
                cg.thaw(FREEZE_TIMEOUT)?;
            }
        }
        Ok(())
    }

    async fn stop(self: &Arc<Self>, name: &str, grace: Duration) -> Result<bool> {
        let Some(proc) = self.find(name) else {
            return Ok(true);
        };
        self.thaw(name)?;
        proc.phase.store(STOPPING, Ordering::SeqCst);
        proc.pidfd
            .signal(Signal::TERM)
            .map_err(|e| RuntimeError::io("SIGTERM to mariadbd", e))?;
        if tokio::time::timeout(grace, proc.wait_exit()).await.is_ok() {
            return Ok(true);
        }
        tracing::warn!(db = %name, pid = proc.pidfd.pid, "mariadbd did not stop within {grace:?}; killing it");
        self.kill(&proc).await;
        Ok(false)
    }
}

impl Runtime for LocalRuntime {
    type Admin = AdminConn;

    fn info(&self) -> RuntimeInfo {
        RuntimeInfo {
            kind: "local",
            resource_control: self
                .inner
                .cgroups
                .as_ref()
                .map_or_else(|| "none".to_owned(), |m| m.kind().to_string()),
            resource_control_note: self.inner.resource_note.clone(),
            mariadb_version: self.inner.mariadb.version.clone(),
            encryption: self.inner.keys.as_ref().map(|k| {
                let k = k.lock();
                format!(
                    "file_key_management (AES-CTR), a key per database wrapped by master key {} in {}",
                    k.current_id(),
                    k.path().display()
                )
            }),
            storage: match &self.inner.volumes {
                Ok(_) => "a volume per database (XFS with reflink on a loop device)".to_owned(),
                Err(_) => "plain directories".to_owned(),
            },
            storage_note: self.inner.volumes.as_ref().err().cloned(),
        }
    }

    fn nodes(&self) -> Vec<crate::NodeInfo> {
        let cfg = &self.inner.cfg;
        // What `usage` reports for each server, so that placement adds to a node's use only
        // what its databases have not used yet.
        let memory_used_bytes = self
            .inner
            .procs()
            .iter()
            .filter_map(|(key, proc)| self.inner.usage_of(key, || Some(proc.pidfd.pid)))
            .map(|u| u.memory_bytes)
            .sum();
        vec![crate::NodeInfo {
            name: cfg.node.clone(),
            cpu_millis: cfg.node_cpu_millis.unwrap_or_else(host_cpu_millis),
            memory_bytes: cfg.node_memory_bytes.unwrap_or_else(host_memory_bytes),
            storage: cfg.root.display().to_string(),
            memory_used_bytes,
        }]
    }

    async fn start_replica(&self, spec: &InstanceSpec) -> Result<crate::ReplicaStarted> {
        Err(self.one_node(&spec.node))
    }

    async fn admin_on(
        &self,
        name: &ServiceName,
        node: &str,
        timeout: Duration,
    ) -> Result<AdminConn> {
        self.inner.check_node(node)?;
        self.admin(name, timeout).await
    }

    async fn promote_replica(&self, _name: &ServiceName, node: &str) -> Result<()> {
        Err(self.one_node(node))
    }

    async fn stop_copy(&self, _name: &ServiceName, node: &str) -> Result<()> {
        Err(self.one_node(node))
    }

    async fn remove_copy(&self, _name: &ServiceName, node: &str) -> Result<()> {
        Err(self.one_node(node))
    }

    fn node_of(&self, name: &ServiceName) -> Option<String> {
        std::fs::symlink_metadata(self.inner.paths(name.as_str()).dir)
            .is_ok()
            .then(|| self.inner.cfg.node.clone())
    }

    async fn rotate_master_key(&self) -> Result<usize> {
        let Some(keys) = &self.inner.keys else {
            return Err(RuntimeError::Other(
                "encryption at rest is off ([encryption] enabled = false)".into(),
            ));
        };
        let dirs = self.database_dirs()?;
        keys.lock().rotate(&dirs)
    }

    async fn admin(&self, name: &ServiceName, timeout: Duration) -> Result<AdminConn> {
        let endpoint = self
            .endpoint(name)
            .ok_or_else(|| RuntimeError::NotRunning(name.to_string()))?;
        AdminConn::connect(name.as_str(), &endpoint, &self.inner.admin, timeout).await
    }

    async fn provision(&self, spec: &InstanceSpec) -> Result<Instance> {
        self.inner.check_node(&spec.node)?;
        // Existing storage is refused and left alone; only what this call made is undone.
        if std::fs::symlink_metadata(self.inner.paths(spec.name.as_str()).dir).is_ok() {
            return Err(RuntimeError::StorageExists(spec.name.to_string()));
        }
        let launch = Launch::from(spec);
        let result = self.inner.provision_copy(&launch).await;
        if result.is_err() {
            let _ = self.destroy(&spec.name).await;
        }
        result
    }

    async fn start(&self, spec: &InstanceSpec) -> Result<Instance> {
        self.inner.check_node(&spec.node)?;
        self.inner.start_server(&Launch::from(spec)).await
    }

    async fn stop(&self, name: &ServiceName, grace: Duration) -> Result<bool> {
        self.inner.stop(name.as_str(), grace).await
    }

    async fn set_limits(
        &self,
        name: &ServiceName,
        cpu_millis: u32,
        memory_bytes: u64,
    ) -> Result<()> {
        self.inner
            .apply_limits(name.as_str(), cpu_millis, memory_bytes)
            .map(drop)
    }

    async fn observe(&self, name: &ServiceName) -> Observed {
        let inner = &self.inner;
        let paths = inner.paths(name.as_str());
        let proc = inner.find(name.as_str());
        let mut seen = Observed {
            pid: proc.as_ref().map(|p| p.pidfd.pid),
            backend: proc.as_ref().map(|p| p.endpoint.to_string()),
            storage: paths
                .data
                .canonicalize()
                .ok()
                .map(|d| d.display().to_string()),
            ..Observed::default()
        };
        if let Some(cg) = inner
            .cgroups
            .as_ref()
            .and_then(|m| m.open(name.as_str()).ok())
        {
            seen.cpu_limit_millis = cg.cpu_limit().ok().flatten();
            seen.memory_limit_bytes = cg.memory_limit().ok().flatten();
            seen.frozen = cg.is_frozen().unwrap_or(false);
            if let Ok(u) = cg.usage() {
                seen.cpu_usage_ns = Some(u.cpu_ns);
                seen.memory_usage_bytes = Some(u.memory_bytes);
            }
        } else if let Some(u) = seen
            .pid
            .and_then(|pid| stratus_cgroup::proc_usage(pid).ok())
        {
            seen.cpu_usage_ns = Some(u.cpu_ns);
            seen.memory_usage_bytes = Some(u.memory_bytes);
        }
        seen
    }

    fn usage(&self, name: &ServiceName) -> Option<crate::Usage> {
        let key = name.as_str();
        self.inner
            .usage_of(key, || Some(self.inner.running(key)?.pidfd.pid))
    }

    async fn freeze(&self, name: &ServiceName) -> Result<bool> {
        let Some(cg) = self
            .inner
            .cgroups
            .as_ref()
            .and_then(|m| m.open(name.as_str()).ok())
        else {
            return Ok(false);
        };
        if !cg.can_freeze() {
            return Ok(false);
        }
        cg.freeze(FREEZE_TIMEOUT)?;
        Ok(true)
    }

    async fn thaw(&self, name: &ServiceName) -> Result<()> {
        self.inner.thaw(name.as_str())
    }

    fn endpoint(&self, name: &ServiceName) -> Option<Endpoint> {
        let proc = self.inner.running(name.as_str())?;
        (proc.phase.load(Ordering::SeqCst) == READY).then(|| proc.endpoint.clone())
    }

    async fn wait_gone(&self, name: &ServiceName, limit: Duration) -> bool {
        let proc = self.inner.procs().get(name.as_str()).cloned();
        match proc {
            Some(p) => tokio::time::timeout(limit, p.wait_exit()).await.is_ok(),
            None => true,
        }
    }

    async fn destroy(&self, name: &ServiceName) -> Result<()> {
        self.inner.destroy(name.as_str()).await
    }

    fn exits(&self) -> broadcast::Receiver<ExitNotice> {
        self.inner.exits.subscribe()
    }

    async fn provision_spare(
        &self,
        max_resources: Resources,
        node: &str,
        setup: &[String],
    ) -> Result<Spare> {
        let inner = &self.inner;
        inner.check_node(node)?;
        let key = loop {
            let n = inner.next_spare.fetch_add(1, Ordering::Relaxed);
            // The node in the key keeps spares of different nodes apart.
            let key = format!("{SPARE_PREFIX}{}-{n}", inner.cfg.node);
            if !inner.paths(&key).dir.exists() {
                break key;
            }
        };
        // It starts with a core, and idles on its floor once ready: a start held to the idle
        // quota took ten times as long (0.15 s of CPU at 0.1 core, `bench/density`).
        let starting = Resources {
            scu: 0,
            cpu_millis: SPARE_START_CPU_MILLIS,
            memory_bytes: max_resources.memory_bytes,
            buffer_pool_bytes: SPARE_BUFFER_POOL,
        };
        let launch = Launch {
            key: key.clone(),
            resources: starting,
            max_resources,
            storage_bytes: SPARE_STORAGE_BYTES,
        };
        let made = async {
            let instance = inner.provision_copy(&launch).await?;
            // Still at its starting core.
            if !setup.is_empty() {
                let mut conn =
                    AdminConn::connect(&key, &instance.endpoint, &inner.admin, LOGIN_TIMEOUT)
                        .await?;
                for sql in setup {
                    conn.exec(sql).await?;
                }
                conn.close().await;
            }
            if let Some(cg) = inner.cgroups.as_ref().and_then(|m| m.open(&key).ok()) {
                cg.set_cpu_limit(Some(SPARE_CPU_MILLIS))?;
            }
            Ok(instance)
        }
        .await;
        match made {
            Ok(instance) => Ok(Spare {
                key,
                endpoint: instance.endpoint,
                node: inner.cfg.node.clone(),
                buffer_pool_bytes: SPARE_BUFFER_POOL,
            }),
            Err(e) => {
                let _ = inner.destroy(&key).await;
                Err(e)
            }
        }
    }

    async fn claim_spare(&self, spare: &Spare, spec: &InstanceSpec) -> Result<Instance> {
        self.inner.check_node(&spec.node)?;
        self.inner.check_node(&spare.node)?;
        self.inner.claim(spare, spec).await
    }

    async fn presize_spare(&self, spare: &Spare, resources: Resources) -> Result<u64> {
        let inner = &self.inner;
        inner.check_node(&spare.node)?;
        if !spare.key.starts_with(SPARE_PREFIX) || inner.running(&spare.key).is_none() {
            return Err(RuntimeError::NotRunning(spare.key.clone()));
        }
        // The kernel zeroes the pool's new memory as it grows: at a spare's floor quota that
        // takes ten times as long, so the spare gets a database's CPU while it grows.
        let cgroup = inner.cgroups.as_ref().and_then(|m| m.open(&spare.key).ok());
        if let Some(cg) = &cgroup {
            cg.set_cpu_limit(Some(resources.cpu_millis.max(SPARE_CPU_MILLIS)))?;
        }
        let grown = async {
            let mut conn =
                AdminConn::connect(&spare.key, &spare.endpoint, &inner.admin, LOGIN_TIMEOUT)
                    .await?;
            let (bytes, _) = conn.resize_buffer_pool(resources.buffer_pool_bytes).await?;
            conn.close().await;
            Ok(bytes)
        }
        .await;
        if let Some(cg) = &cgroup {
            cg.set_cpu_limit(Some(SPARE_CPU_MILLIS))?;
        }
        grown
    }

    async fn destroy_spare(&self, key: &str) -> Result<()> {
        if !key.starts_with(SPARE_PREFIX) {
            return Err(RuntimeError::Other(format!("{key} is not a spare")));
        }
        self.inner.destroy(key).await
    }

    fn storage(&self, name: &ServiceName) -> Option<crate::StorageUse> {
        let data = self.inner.paths(name.as_str()).data;
        if self.inner.volumes.is_err() {
            // Plain directories: measured, for the limit Stratus enforces itself.
            if !data.is_dir() {
                return None;
            }
            return Some(crate::StorageUse {
                used_bytes: volume::disk_use(&data),
                limit_bytes: 0,
                volume_bytes: 0,
                log_bytes: volume::disk_use(&self.inner.paths(name.as_str()).binlog),
                measured: true,
            });
        }
        if !volume::is_mounted(&data) {
            return None;
        }
        let (used_bytes, limit_bytes) = volume::usage(&data)?;
        let volume_bytes = self
            .inner
            .volumes
            .as_ref()
            .ok()?
            .size(&self.inner.volume_key(name.as_str()))?;
        let log_bytes = std::fs::read_dir(self.inner.paths(name.as_str()).binlog)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.metadata().ok())
            .map(|m| m.len())
            .sum();
        Some(crate::StorageUse {
            used_bytes,
            limit_bytes,
            volume_bytes,
            log_bytes,
            measured: false,
        })
    }

    async fn grow_storage(&self, name: &ServiceName, bytes: u64) -> Result<u64> {
        let v = self.inner.volumes.as_ref().map_err(|why| {
            RuntimeError::Other(format!("database {name} has no volume to grow: {why}"))
        })?;
        let data = self.inner.paths(name.as_str()).data;
        let key = self.inner.volume_key(name.as_str());
        // `xfs_growfs` on a mounted file system: off the runtime's threads.
        let v = v.clone();
        tokio::task::spawn_blocking(move || {
            v.grow(&key, bytes, &data)?;
            Ok(v.size(&key).unwrap_or(bytes))
        })
        .await
        .map_err(|e| RuntimeError::Other(format!("storage task: {e}")))?
    }

    fn shares_blocks(&self) -> bool {
        self.inner.volumes.is_ok()
    }

    async fn archive_logs(&self, name: &ServiceName, dest: &Path) -> Result<u64> {
        let from = self.inner.paths(name.as_str()).binlog;
        let dest = dest.to_owned();
        match tokio::task::spawn_blocking(move || archive::copy_new(&from, &dest)).await {
            Ok(copied) => copied,
            // Stratus is stopping and the copy never began: nothing was copied, and the next
            // run copies what is new then.
            Err(e) if e.is_cancelled() => Ok(0),
            Err(e) => Err(RuntimeError::Other(format!("archive task: {e}"))),
        }
    }

    async fn branch(&self, source: &ServiceName, spec: &InstanceSpec) -> Result<Option<Instance>> {
        self.inner.check_node(&spec.node)?;
        if !self
            .inner
            .branch_storage(source.as_str(), spec.name.as_str())
            .await?
        {
            return Ok(None);
        }
        let started = self.inner.start_server(&Launch::from(spec)).await;
        if started.is_err() {
            let _ = self.destroy(&spec.name).await;
        }
        started.map(Some)
    }

    async fn backup(
        &self,
        name: &ServiceName,
        dest: &Path,
        base: Option<&Path>,
    ) -> Result<crate::BackupTaken> {
        self.inner.backup(name.as_str(), dest, base).await
    }

    async fn restore(&self, spec: &InstanceSpec, from: &crate::RestoreFrom) -> Result<Instance> {
        self.inner.check_node(&spec.node)?;
        let key = spec.name.as_str();
        let replay = from.replay.as_ref();
        // Gigabytes copied (and a volume made): off the runtime's threads, whose other tasks
        // (a server's commit clock among them) must not wait for it.
        let (inner, owned_key, full, bytes, owned_replay) = (
            self.inner.clone(),
            key.to_owned(),
            from.full.clone(),
            spec.storage_bytes,
            from.replay.clone(),
        );
        tokio::task::spawn_blocking(move || {
            inner.restore_storage(&owned_key, &full, bytes, owned_replay.as_ref())
        })
        .await
        .map_err(|e| RuntimeError::Other(format!("restore task: {e}")))??;
        if let Err(e) = self.inner.apply_incrementals(key, &from.incrementals).await {
            let _ = self.destroy(&spec.name).await;
            return Err(e);
        }
        let mut started = self.inner.start_server(&Launch::from(spec)).await;
        if let (Ok(instance), Some(r)) = (&started, replay) {
            if let Err(e) = self.inner.replay(key, &instance.endpoint, r).await {
                started = Err(e);
            }
        }
        if started.is_err() {
            let _ = self.destroy(&spec.name).await;
        }
        started
    }

    fn unclaimed_spares(&self) -> Vec<String> {
        let databases = self.inner.cfg.root.join("databases");
        let Ok(entries) = std::fs::read_dir(&databases) else {
            return Vec::new();
        };
        let mut spares = Vec::new();
        let mut claimed = std::collections::HashSet::new();
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Ok(target) = std::fs::read_link(e.path()) {
                claimed.insert(target.to_string_lossy().into_owned());
            } else if name.starts_with(SPARE_PREFIX) {
                spares.push(name);
            }
        }
        spares.retain(|s| !claimed.contains(s));
        spares
    }
}

/// Spares live beside databases under a name no database can have (names start with a letter).
const SPARE_PREFIX: &str = "_spare-";
/// A spare idles on a small buffer pool and a small CPU quota until it is claimed.
const SPARE_BUFFER_POOL: u64 = 16 << 20;
const SPARE_CPU_MILLIS: u32 = 100;
/// A spare's quota while it starts: a core.
const SPARE_START_CPU_MILLIS: u32 = 1000;
/// A spare's volume: a new database's first size; the storage controller grows it.
const SPARE_STORAGE_BYTES: u64 = 1 << 30;

/// What starting a server needs, for a database or a spare.
struct Launch {
    /// Directory, cgroup and process-map key.
    key: String,
    resources: Resources,
    max_resources: Resources,
    storage_bytes: u64,
}

impl From<&InstanceSpec> for Launch {
    fn from(spec: &InstanceSpec) -> Self {
        Self {
            key: spec.name.to_string(),
            resources: spec.resources,
            max_resources: spec.max_resources,
            storage_bytes: spec.storage_bytes,
        }
    }
}

impl Inner {
    /// New storage from the template, given to the servers' user, and started.
    async fn provision_copy(self: &Arc<Self>, launch: &Launch) -> Result<Instance> {
        // A file system made and a template copied: off the runtime's threads.
        let (inner, key, bytes) = (self.clone(), launch.key.clone(), launch.storage_bytes);
        tokio::task::spawn_blocking(move || {
            let paths = inner.empty_storage(&key, bytes)?;
            let filled = template::copy_into(&inner.template.data, &paths.data).map_err(|e| {
                RuntimeError::io(
                    format!("cannot copy the template to {}", paths.data.display()),
                    e,
                )
            });
            inner.finish_storage(&key, &paths, filled)
        })
        .await
        .map_err(|e| RuntimeError::Other(format!("storage task: {e}")))??;
        self.start_server(launch).await
    }

    /// Makes a running spare the server of `spec.name`: its directory is linked under the
    /// database's name (the running process keeps its paths), and its processes move to the
    /// database's cgroup at the database's size.
    async fn claim(self: &Arc<Self>, spare: &Spare, spec: &InstanceSpec) -> Result<Instance> {
        let begin = Instant::now();
        let name = spec.name.as_str();
        let link = self.paths(name).dir;
        let proc = self
            .running(&spare.key)
            .ok_or_else(|| RuntimeError::NotRunning(spare.key.clone()))?;
        std::os::unix::fs::symlink(&spare.key, &link)
            .map_err(|e| RuntimeError::io(format!("cannot link {}", link.display()), e))?;
        let moved = async {
            if let Some(manager) = &self.cgroups {
                // The spare's group becomes the database's (cgroup v1): moving the server's
                // processes instead was most of a claim, 5–26 ms (`phases_ms.server` in the
                // `started` event), spent in the kernel's migration.
                let size = |cg: &stratus_cgroup::Cgroup| -> Result<()> {
                    cg.set_cpu_limit(Some(spec.resources.cpu_millis))?;
                    cg.set_memory_limit(Some(spec.resources.memory_bytes))?;
                    Ok(())
                };
                match manager.rename(&spare.key, name) {
                    Ok(to) => size(&to)?,
                    Err(e) => {
                        tracing::debug!(db = name, "moving the spare's processes: {e}");
                        let to = manager.create(name)?;
                        size(&to)?;
                        if let Ok(from) = manager.open(&spare.key) {
                            for pid in from.pids()? {
                                to.add_pid(pid)?;
                            }
                            let _ = from.remove();
                        }
                    }
                }
            }
            Ok::<_, RuntimeError>(())
        }
        .await;
        if let Err(e) = moved {
            let _ = std::fs::remove_file(&link);
            return Err(e);
        }
        {
            let mut procs = self.procs();
            procs.remove(&spare.key);
            procs.insert(name.to_owned(), proc.clone());
        }
        *proc.key.lock().unwrap_or_else(|p| p.into_inner()) = name.to_owned();
        Ok(self.instance(proc.pidfd.pid, &proc.endpoint, false, begin))
    }

    /// Stops the server and removes its storage and cgroup (a claimed spare's directory too).
    async fn destroy(self: &Arc<Self>, key: &str) -> Result<()> {
        self.stop(key, Duration::from_secs(30)).await?;
        if let Some(cg) = self.cgroups.as_ref().and_then(|m| m.open(key).ok()) {
            cg.remove()?;
        }
        // Unmounting a volume writes back what is dirty, and a data directory can hold
        // gigabytes: off the runtime's threads, whose other tasks (the proxy's sessions among
        // them) must not wait for it.
        let (inner, key) = (self.clone(), key.to_owned());
        tokio::task::spawn_blocking(move || inner.remove_files(&key))
            .await
            .map_err(|e| RuntimeError::Other(format!("removal task: {e}")))?
    }

    /// The files of a stopped server of `key`: its volume, socket and directory.
    fn remove_files(&self, key: &str) -> Result<()> {
        let paths = self.paths(key);
        if let Ok(v) = &self.volumes {
            v.remove(&self.volume_key(key), &paths.data)?;
        }
        let _ = std::fs::remove_file(&paths.socket);
        if let Some(dir) = paths.socket.parent().filter(|d| *d != paths.dir) {
            let _ = std::fs::remove_dir(dir);
        }
        let remove = |dir: &Path| match std::fs::remove_dir_all(dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(RuntimeError::io(
                format!("cannot remove {}", dir.display()),
                e,
            )),
            _ => Ok(()),
        };
        if let Ok(target) = std::fs::read_link(&paths.dir) {
            // A claimed spare: the link, then what it points to.
            let real = paths
                .dir
                .parent()
                .map(|p| p.join(&target))
                .unwrap_or(target);
            std::fs::remove_file(&paths.dir).map_err(|e| {
                RuntimeError::io(format!("cannot remove {}", paths.dir.display()), e)
            })?;
            return remove(&real);
        }
        remove(&paths.dir)
    }
}

/// The key-management plugin encryption at rest uses.
const KEY_PLUGIN: &str = "file_key_management.so";

/// Makes one of the distribution's plugins loadable by the servers: a link to it in their
/// otherwise empty plugin directory.
fn allow_plugin(mariadb: &MariaDb, plugin_dir: &Path, file: &str) -> Result<()> {
    let source = mariadb
        .plugin_dir
        .as_ref()
        .map(|d| d.join(file))
        .filter(|p| p.is_file())
        .ok_or_else(|| {
            RuntimeError::Other(format!(
                "encryption at rest needs MariaDB's {file}, not found in the server's plugin \
                 directory ({}); install it or set [encryption] enabled = false",
                mariadb
                    .plugin_dir
                    .as_ref()
                    .map_or_else(|| "unknown".to_owned(), |d| d.display().to_string())
            ))
        })?;
    let link = plugin_dir.join(file);
    if std::fs::read_link(&link).is_ok_and(|t| t == source) {
        return Ok(());
    }
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&source, &link)
        .map_err(|e| RuntimeError::io(format!("cannot link {}", link.display()), e))
}

/// Where a database's socket goes when its own directory's path is too long for one: a
/// directory named after it under the temp dir.
fn short_socket_dir(db_dir: &Path) -> PathBuf {
    std::env::temp_dir().join(format!(
        "stratus-{:08x}",
        config::server_id(&db_dir.to_string_lossy())
    ))
}

/// Makes (or checks) a directory in a shared place (the temp dir for long socket paths,
/// `/dev/shm` for keys at start): it must be ours, owned by the servers' user and closed to
/// everyone else, or another local user could have prepared it to intercept what goes there.
fn private_dir(dir: &Path, user: &ServerUser) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => user.give(dir)?,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => {
            return Err(RuntimeError::io(
                format!("cannot create {}", dir.display()),
                e,
            ));
        }
    }
    let meta = std::fs::symlink_metadata(dir)
        .map_err(|e| RuntimeError::io(format!("cannot inspect {}", dir.display()), e))?;
    let owner = user
        .uid()
        .map_or_else(|| rustix::process::geteuid().as_raw(), |u| u.as_raw());
    if !meta.is_dir() || meta.uid() != owner || meta.mode() & 0o077 != 0 {
        return Err(RuntimeError::Other(format!(
            "{} is not a private directory of the servers' user; remove it",
            dir.display()
        )));
    }
    Ok(())
}

/// `dir` with every symbolic link resolved (a claimed spare's database directory is a link to
/// the spare's), or `dir` itself if it cannot be resolved.
pub(crate) fn canonical(dir: &Path) -> PathBuf {
    dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf())
}

/// The host's CPUs, in millicores: a node's capacity unless configured.
pub fn host_cpu_millis() -> u64 {
    std::thread::available_parallelism().map_or(1000, |n| n.get() as u64 * 1000)
}

/// The host's memory (`MemTotal` in `/proc/meminfo`): a node's capacity unless configured.
pub fn host_memory_bytes() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            let line = m.lines().find(|l| l.starts_with("MemTotal:"))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib * 1024)
        })
        .unwrap_or(0)
}

/// Files holding a secret for one server start (its plain data key, its TLS key), removed when
/// the start has gone past needing them, however it ended: a failed write of its options or a
/// failed spawn must not leave a key behind either.
struct Removed(Vec<PathBuf>);

impl Drop for Removed {
    fn drop(&mut self) {
        for file in &self.0 {
            let _ = std::fs::remove_file(file);
        }
    }
}
