//! `stratus up`: everything on one machine. Takes the data directory, opens the catalog,
//! starts the local runtime, recovers the databases it finds, serves the API, and on SIGINT or
//! SIGTERM stops every server cleanly before exiting.

use crate::cli::{Global, UpArgs};
use crate::config::{Settings, TlsSettings};
use crate::directory::ControlDirectory;
use anyhow::{Context, bail};
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use stratus_api::ServerInfo;
use stratus_control::{ControlConfig, ControlPlane};
use stratus_core::token::{self, Role, Scope};
use stratus_proxy::{Proxy, ProxyConfig};
use stratus_runtime::{LocalConfig, LocalNodes, Runtime};
use stratus_store::{SqliteStore, Store};
use tokio::net::TcpListener;

const CATALOG: &str = "catalog.db";

/// Each SQL client takes two descriptors (its socket and its server's), so the soft limit a
/// login starts with (often 1,024) would cap the proxy at a few hundred clients: take the hard
/// limit, as a proxy should (HAProxy sizes its own the same way). Returns the limit now in
/// force (`None`: unlimited).
fn raise_open_files_limit() -> Option<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        let raised = rustix::process::Rlimit {
            current: limit.maximum,
            ..limit
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => return limit.maximum,
            Err(e) => tracing::warn!("cannot raise the open files limit: {e}"),
        }
    }
    limit.current
}

/// The SQL clients `open_files` descriptors carry: one each, after a tenth kept for everything
/// else (the catalog, logs, the servers' pipes, API clients). A client with a server session
/// takes a second one; clients of a suspended database, or waiting for it, do not. Past the
/// descriptors left, a new client or session gets `Too many connections` (1040).
fn clients_for(open_files: u64) -> u64 {
    open_files.saturating_sub((open_files / 10).max(64))
}

/// Runs `task` on a thread of its own named `name`, with a runtime of its own: the monitor's
/// tick over every database never waits behind the API or the other controllers (what it
/// decides runs on the main runtime), and its CPU is a line of its own in `top -H` and
/// `/proc/<pid>/task` (`bench/density` reads it there).
fn on_own_thread(
    name: &str,
    task: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name(name)
        .build()?;
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || runtime.block_on(task))
        .with_context(|| format!("cannot start the thread {name}"))?;
    Ok(())
}
/// The first admin token, for the CLI on this host (see [`first_admin_token`]).
pub const ADMIN_TOKEN_FILE: &str = "admin.token";

pub async fn run(args: UpArgs, global: &Global) -> anyhow::Result<()> {
    init_logging();
    let settings = Settings::resolve(
        args.config.as_deref(),
        global.data_dir.clone(),
        args.listen,
        global.api.clone(),
    )?;
    let data_dir = claim_data_dir(&settings.data_dir)?;
    // Everything Stratus writes from here on is its own alone (the catalog, tokens, keys),
    // unless it hands it to the servers' user on purpose.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    let _lock = lock_data_dir(&data_dir)?;
    let open_files = raise_open_files_limit();

    // Bind both addresses before the slow work, so a taken port fails at once.
    let api_listener = TcpListener::bind(settings.api)
        .await
        .with_context(|| format!("cannot listen on {} for the API", settings.api))?;
    let sql_listener = TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("cannot listen on {} for SQL clients", settings.listen))?;

    let store = SqliteStore::open(&data_dir.join(CATALOG))?;
    let new_token = first_admin_token(&store, &data_dir).await?;
    let mut local = LocalConfig::new(&data_dir);
    local.bin_dir = settings.bin_dir.clone();
    local.cgroup_parent = if settings.cgroup_parent.is_empty() {
        default_cgroup_parent(&data_dir)
    } else {
        settings.cgroup_parent.clone()
    };
    local.resource_control = settings.cgroups;
    local.volumes = settings.volumes;
    local.commit_clock = settings.commit_clock;
    local.exact_commit_times = settings.exact_commit_times;
    local.start_timeout = settings.start_timeout;
    local.server_user = settings.server_user.clone();
    // Servers take TLS from the proxy for the sessions whose client used it, with a
    // certificate of their own (`stratus_proxy::backend_tls`).
    let backend_tls = match &settings.tls {
        Some(_) => {
            let t = stratus_proxy::backend_tls::BackendTls::load_or_create(
                &data_dir.join("tls").join("servers"),
            )
            .context("TLS for the servers")?;
            let read = |p: &std::path::Path| {
                std::fs::read_to_string(p)
                    .with_context(|| format!("TLS for the servers: {}", p.display()))
            };
            local.server_tls = Some(stratus_runtime::ServerTls {
                cert_pem: read(&t.cert)?,
                key_pem: read(&t.key)?,
            });
            Some(Arc::new(t))
        }
        None => None,
    };
    local.master_key = settings
        .master_key
        .as_deref()
        .map(std::path::absolute)
        .transpose()
        .context("master key path")?;
    if let Some(key) = &local.master_key
        && key.starts_with(&data_dir)
    {
        anyhow::bail!(
            "the master key {} must live outside the data directory, or a copy of the directory holds the key to its data",
            key.display()
        );
    }
    if !data_dir.join("template/READY").exists() {
        eprintln!("Preparing the MariaDB template data directory (first start only)…");
    }
    let mut configs = Vec::new();
    for (node, root) in node_roots(&settings.nodes, &data_dir)? {
        let mut cfg = local.clone();
        if node.name != stratus_runtime::local::DEFAULT_NODE {
            // A sibling of the first node's group: a database may be named like a node.
            cfg.cgroup_parent = format!("{}-{}", local.cgroup_parent, node.name);
        }
        cfg.root = root;
        cfg.node = node.name.clone();
        cfg.node_cpu_millis = node.cpu_millis;
        cfg.node_memory_bytes = node.memory_bytes;
        configs.push(cfg);
    }
    let runtime = LocalNodes::new(configs).await?;
    let info = runtime.info();
    let cp = ControlPlane::new(
        store,
        runtime,
        ControlConfig {
            scu: settings.scu,
            stop_grace: settings.stop_grace,
            endpoint: (settings.listen.ip().to_string(), settings.listen.port()),
            default_policy: settings.policy.clone(),
            pool: settings.pool,
            hydrate: settings.hydrate,
            resync_every: settings.resync_every,
            backup_dir: settings.data_dir.join("backups"),
            watermarks: settings.watermarks,
            rebalance_every: settings.rebalance_every,
            move_cooldown: settings.move_cooldown,
            ..ControlConfig::default()
        },
    );
    cp.recover().await?;
    tokio::spawn(cp.clone().supervise());
    on_own_thread(
        "stratus-monitor",
        cp.clone()
            .monitor_acting_on(tokio::runtime::Handle::current()),
    )?;
    tokio::spawn(cp.clone().run_pool());
    tokio::spawn(cp.clone().run_backups());
    tokio::spawn(cp.clone().run_storage());
    tokio::spawn(cp.clone().run_resync());
    tokio::spawn(cp.clone().run_rebalance());
    tokio::spawn(cp.clone().run_history());
    let tls = match &settings.tls {
        Some(t) => Some(
            stratus_proxy::tls::load_or_create(
                &data_dir.join("tls"),
                t.cert.as_deref(),
                t.key.as_deref(),
                t.domain.as_deref(),
            )
            .context("TLS for SQL clients")?,
        ),
        None => None,
    };
    check_private_files(&data_dir);
    let mut max_connections = settings.proxy.max_connections;
    if let Some(fits) = open_files.map(clients_for)
        && fits < max_connections
    {
        tracing::warn!(
            "proxy max_connections lowered from {max_connections} to {fits}: this process may open {} files (raise its limit, e.g. LimitNOFILE, to allow more)",
            open_files.unwrap_or_default()
        );
        max_connections = fits;
    }
    let proxy = Proxy::new(
        ProxyConfig {
            // Stratus's servers always keep a binary log, and a server with one says so in its
            // version (`VERSION()`, the greeting): `-log`.
            server_version: greeting_version(&match info.mariadb_version.ends_with("-log") {
                true => info.mariadb_version.clone(),
                false => format!("{}-log", info.mariadb_version),
            }),
            tls,
            backend_tls,
            max_connections,
            ..settings.proxy.clone()
        },
        ControlDirectory::new(cp.clone()),
    );
    cp.set_activity_source({
        let proxy = proxy.clone();
        Arc::new(move |db: &str| {
            let a = proxy.activity.snapshot(db);
            stratus_core::ActivityView {
                connections: a.connections,
                statements_running: a.running,
                open_transactions: a.in_transaction,
                pinned_sessions: a.pinned,
                unread_user_variables: a.unread_vars,
                last_statement_ms: a.last_statement_ms,
                statements_total: a.statements,
            }
        })
    });
    cp.set_gate(Arc::new(crate::directory::ProxyGate(proxy.holds.clone())));
    tokio::spawn(proxy.clone().serve(sql_listener));

    let api_tls = if settings.api_tls {
        let (cert, key, domain) = match &settings.tls {
            Some(t) => (t.cert.as_deref(), t.key.as_deref(), t.domain.as_deref()),
            None => (None, None, None),
        };
        Some(
            stratus_proxy::tls::load_or_create(&data_dir.join("tls"), cert, key, domain)
                .context("TLS for the API")?,
        )
    } else {
        None
    };
    let scheme = if api_tls.is_some() { "https" } else { "http" };
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").ok();
    let access = stratus_api::Access {
        hosts: stratus_api::auth::allowed_hosts(
            settings.api,
            &settings.api_hosts,
            hostname.as_deref().map(str::trim),
        ),
        metrics_auth: settings.metrics_auth,
    };
    let router = stratus_api::router(
        cp.clone(),
        ServerInfo {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            data_dir: data_dir.display().to_string(),
            api: format!("{scheme}://{}", settings.api),
            sql_listen: settings.listen.to_string(),
        },
        {
            let proxy = proxy.clone();
            Arc::new(move || proxy.activity.render())
        },
        access,
    );
    let shutdown = shutdown_signal();
    println!("Stratus {} is up", env!("CARGO_PKG_VERSION"));
    println!(
        "  SQL:              {} (user <database>.<user>)",
        settings.listen
    );
    match (&api_tls, &settings.tls) {
        (None, _) => println!("  API:              http://{}", settings.api),
        (Some(_), Some(TlsSettings { cert: Some(c), .. })) => println!(
            "  API:              https://{} (TLS with {})",
            settings.api,
            c.display()
        ),
        (Some(_), _) => println!(
            "  API:              https://{} (TLS, self-signed: clients trust {})",
            settings.api,
            data_dir
                .join("tls")
                .join(stratus_proxy::tls::CA_FILE)
                .display()
        ),
    }
    match &new_token {
        Some(path) => println!(
            "  API token:        {} (admin; made now, the catalog had none)",
            path.display()
        ),
        None if data_dir.join(ADMIN_TOKEN_FILE).exists() => println!(
            "  API token:        {} (admin)",
            data_dir.join(ADMIN_TOKEN_FILE).display()
        ),
        None => println!("  API token:        required (from `stratus token create`)"),
    }
    println!("  data:             {}", data_dir.display());
    println!("  MariaDB:          {}", info.mariadb_version);
    match &info.resource_control_note {
        None => println!("  resource control: {}", info.resource_control),
        Some(why) => println!("  resource control: none ({why})"),
    }
    match &info.storage_note {
        None => println!("  storage:          {}", info.storage),
        Some(why) => println!("  storage:          {} ({why})", info.storage),
    }
    match api_tls {
        Some(tls) => {
            let listener = crate::api_tls::TlsListener::new(api_listener, tls.acceptor)
                .context("API listener")?;
            axum::serve(listener, router)
                .with_graceful_shutdown(shutdown)
                .await
        }
        None => {
            axum::serve(api_listener, router)
                .with_graceful_shutdown(shutdown)
                .await
        }
    }
    .context("API server failed")?;
    eprintln!("Letting running statements and transactions finish…");
    let busy = proxy.drain(proxy.config().shutdown_grace).await;
    if busy > 0 {
        tracing::warn!(
            "{busy} session(s) still running a statement or holding a transaction after {:?}; closing them",
            proxy.config().shutdown_grace
        );
    }
    eprintln!("Stopping databases…");
    cp.drain_pool().await;
    cp.shutdown().await;
    cp.runtime().release_after_shutdown();
    eprintln!("Stratus stopped.");
    Ok(())
}

/// Makes the first admin token when the catalog holds none (first start, or every token was
/// deleted by hand) and writes it alone on one line to `admin.token`, mode 0600, where the CLI
/// on this host finds it. The file is written before the catalog so a failure never leaves a
/// token nobody has.
async fn first_admin_token(
    store: &SqliteStore,
    data_dir: &Path,
) -> anyhow::Result<Option<PathBuf>> {
    if !store.tokens().await?.is_empty() {
        return Ok(None);
    }
    let made = token::generate(
        "admin (first start)",
        Role::Admin,
        Scope::all(),
        stratus_core::time::now_ms(),
    );
    let path = data_dir.join(ADMIN_TOKEN_FILE);
    // An old file may carry other permissions; write_private sets 0600 only when it creates.
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot replace {}", path.display())),
    }
    stratus_core::fs::write_private(&path, format!("{}\n", made.secret).as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    store.create_token(&made.record).await?;
    Ok(Some(path))
}

pub(crate) fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,mysql_async=warn,hyper=warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}

/// Resolves on SIGINT or SIGTERM. The handlers are installed when this is called, not when the
/// future is first polled: `stratus up` calls it before it says it is up, so a SIGTERM sent
/// right after that line (a supervisor, a test) never meets the default action, which kills
/// without a clean stop. (A CI run caught exactly that once.)
pub(crate) fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let handlers = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    );
    async move {
        let (Ok(mut int), Ok(mut term)) = handlers else {
            // Without signal handlers there is no clean way to be told to stop; run until killed.
            return std::future::pending().await;
        };
        tokio::select! {
            _ = int.recv() => {},
            _ = term.recv() => {},
        }
    }
}

/// The data directory as an absolute path, created if missing. An existing directory must be
/// empty or already hold a Stratus catalog: Stratus never writes into somebody else's files.
fn claim_data_dir(dir: &Path) -> anyhow::Result<PathBuf> {
    if !dir.exists() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create data directory {}", dir.display()))?;
    } else if !dir.is_dir() {
        bail!("data directory {} is not a directory", dir.display());
    } else if !dir.join(CATALOG).exists()
        && std::fs::read_dir(dir)
            .with_context(|| format!("cannot read {}", dir.display()))?
            .next()
            .is_some()
    {
        bail!(
            "{} is not a Stratus data directory: it is not empty and holds no {CATALOG}; choose an empty or new directory",
            dir.display()
        );
    }
    dir.canonicalize()
        .with_context(|| format!("cannot resolve {}", dir.display()))
}

/// Files under the data directory that hold secrets, or lead to them.
const PRIVATE_FILES: &[&str] = &[
    "catalog.db",
    "catalog.db-wal",
    "catalog.db-shm",
    ADMIN_TOKEN_FILE,
    "tls/key.pem",
    "tls",
];

/// Checks at every start that no secret is open to other users (a data directory made by an
/// older Stratus, or changed by hand): each is tightened to its owner alone, with a warning.
fn check_private_files(data_dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    for name in PRIVATE_FILES {
        let path = data_dir.join(name);
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 == 0 {
            continue;
        }
        let private = if meta.is_dir() { 0o700 } else { 0o600 };
        match std::fs::set_permissions(&path, std::fs::Permissions::from_mode(private)) {
            Ok(()) => tracing::warn!(
                "{} was mode {mode:o}, readable by other users; now {private:o}",
                path.display()
            ),
            Err(e) => tracing::error!(
                "{} is mode {mode:o}, readable by other users, and cannot be tightened: {e}",
                path.display()
            ),
        }
    }
}

/// An exclusive lock on the data directory for as long as this process lives, holding its pid.
fn lock_data_dir(dir: &Path) -> anyhow::Result<File> {
    let path = dir.join("stratus.lock");
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    if rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err() {
        let mut pid = String::new();
        let _ = f.read_to_string(&mut pid);
        bail!(
            "another `stratus up` (pid {}) is using {}",
            pid.trim(),
            dir.display()
        );
    }
    f.set_len(0)?;
    f.rewind()?;
    write!(f, "{}", std::process::id())?;
    Ok(f)
}

/// `stratus/<8 hex digits>` from the data directory's path: stable across restarts of one
/// installation, distinct between installations (FNV-1a).
/// Each node's data root: as configured, else the data directory itself for the node `local`
/// and `<data_dir>/nodes/<name>` for the others. Roots are distinct and none lies inside
/// another's, but for the nodes under the data directory's `nodes/`.
fn node_roots<'a>(
    nodes: &'a [crate::config::NodeSection],
    data_dir: &Path,
) -> anyhow::Result<Vec<(&'a crate::config::NodeSection, std::path::PathBuf)>> {
    let mut roots: Vec<(&crate::config::NodeSection, std::path::PathBuf)> = Vec::new();
    for n in nodes {
        let root = match &n.data_dir {
            Some(d) => std::path::absolute(d).with_context(|| format!("node {}", n.name))?,
            None if n.name == stratus_runtime::local::DEFAULT_NODE => data_dir.to_owned(),
            None => data_dir.join("nodes").join(&n.name),
        };
        for (m, other) in &roots {
            let nested = |inner: &Path, outer: &Path| {
                inner.starts_with(outer)
                    && !(outer == data_dir && inner.starts_with(data_dir.join("nodes")))
            };
            if nested(&root, other) || nested(other, &root) {
                anyhow::bail!(
                    "nodes {} and {} would share data: {} and {}",
                    m.name,
                    n.name,
                    other.display(),
                    root.display()
                );
            }
        }
        if root != data_dir && nested_in_data_dir(&root, data_dir) {
            anyhow::bail!(
                "node {}: data_dir {} is inside the data directory; leave it unset for {}",
                n.name,
                root.display(),
                data_dir.join("nodes").join(&n.name).display()
            );
        }
        roots.push((n, root));
    }
    Ok(roots)
}

/// A directory under `data_dir` that is not the default place of a node.
fn nested_in_data_dir(root: &Path, data_dir: &Path) -> bool {
    root.starts_with(data_dir) && root.parent() != Some(&data_dir.join("nodes"))
}

fn default_cgroup_parent(data_dir: &Path) -> String {
    let h = data_dir
        .as_os_str()
        .as_encoded_bytes()
        .iter()
        .fold(0x811c_9dc5_u32, |h, b| {
            (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
        });
    format!("stratus/{h:08x}")
}

/// The version string a MariaDB 10.x server greets with: `5.5.5-` first, which old clients
/// need to tell it from MySQL 5.5. MariaDB 11 dropped the prefix.
pub(crate) fn greeting_version(version: &str) -> String {
    if version.starts_with("10.") {
        format!("5.5.5-{version}")
    } else {
        version.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::clients_for;

    #[test]
    fn a_tenth_of_the_descriptors_is_kept_for_the_rest() {
        assert_eq!(clients_for(20_000), 18_000);
        assert_eq!(clients_for(1_024), 922);
        assert_eq!(clients_for(10), 0);
    }
}
