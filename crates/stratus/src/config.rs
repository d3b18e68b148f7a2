//! Settings of `stratus up`: defaults, then the TOML file (`--config`), then flags.

use anyhow::{Context, bail};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use stratus_core::ScuSize;

pub const DEFAULT_API: &str = "127.0.0.1:8033";
pub const DEFAULT_LISTEN: &str = "127.0.0.1:6033";

/// The TOML file. Every key is optional; unknown keys are an error, so a typo is not ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub data_dir: Option<PathBuf>,
    pub listen: Option<String>,
    pub api: Option<String>,
    #[serde(default)]
    pub scu: Option<ScuSize>,
    #[serde(default)]
    pub mariadb: MariaDbSection,
    #[serde(default)]
    pub resources: ResourcesSection,
    #[serde(default)]
    pub tls: TlsSection,
    #[serde(default)]
    pub http: HttpSection,
    #[serde(default)]
    pub encryption: EncryptionSection,
    #[serde(default)]
    pub proxy: ProxySection,
    /// The scaling policy new databases get (`ScalingPolicy`'s fields, in milliseconds).
    #[serde(default)]
    pub policy: Option<stratus_core::ScalingPolicy>,
    /// The warm pool of spare servers: `min`, `max`.
    #[serde(default)]
    pub pool: Option<stratus_control::pool::PoolConfig>,
    /// Reload hot pages after a suspend (`false` only to measure what hydration is worth).
    pub hydrate: Option<bool>,
    /// How often the reconciler looks at every database for what no notice told of (a server
    /// gone, a size changed) [default: 30].
    pub resync_every_secs: Option<u64>,
    /// Places databases run (`[[nodes]]`) [default: one node, `local`, in `data_dir`].
    #[serde(default)]
    pub nodes: Vec<NodeSection>,
    #[serde(default)]
    pub placement: PlacementSection,
}

/// Placement and rebalancing (`[placement]`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlacementSection {
    /// Node memory watermarks, in percent: no placement above `high_pct`, where rebalancing
    /// starts; rebalancing stops at `low_pct` [default: 70 and 60].
    pub high_pct: Option<u32>,
    pub low_pct: Option<u32>,
    /// How often rebalancing looks at the nodes [default: 10].
    pub rebalance_every_secs: Option<u64>,
    /// How long a moved database stays where it went [default: 600].
    pub move_cooldown_secs: Option<u64>,
}

/// One node (`[[nodes]]`): a data root and a resource budget of this host.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSection {
    pub name: String,
    /// Where its databases' data goes [default: `data_dir` for the node `local`,
    /// `<data_dir>/nodes/<name>` for the others].
    pub data_dir: Option<PathBuf>,
    /// CPU (millicores) and memory (bytes) it offers databases [default: the host's].
    pub cpu_millis: Option<u64>,
    pub memory_bytes: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncryptionSection {
    /// Encrypt every database's data at rest [default: true].
    pub enabled: Option<bool>,
    /// The master key ring, outside the data directory [default: /etc/stratus/master.key as
    /// root, else ~/.config/stratus/master.key].
    pub master_key_file: Option<PathBuf>,
}

/// Where the master key lives unless configured: a system path for a system service, the
/// user's configuration directory otherwise.
fn default_master_key() -> PathBuf {
    if rustix::process::geteuid().is_root() {
        return PathBuf::from("/etc/stratus/master.key");
    }
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
        .join(".config/stratus/master.key")
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxySection {
    /// Session threads (single-threaded event loops).
    pub threads: Option<usize>,
    pub max_connections: Option<u64>,
    pub max_connections_per_database: Option<u64>,
    /// How long a statement waits for its database to wake.
    pub wake_timeout_secs: Option<u64>,
    /// How long a client has to log in.
    pub handshake_timeout_secs: Option<u64>,
    /// Backend connections kept per database (per thread) for reuse, and for how long.
    pub pool_max_idle: Option<usize>,
    pub pool_idle_timeout_secs: Option<u64>,
    /// A client silent this long gives its backend connection back to the pool, when nothing
    /// ties its session to it; 0: never.
    pub release_idle_after_ms: Option<u64>,
    /// Transaction replay after a lost server: bytes of statements kept per session (a larger
    /// transaction is not replayed), new servers tried per statement, and the time allowed.
    pub replay_max_bytes: Option<usize>,
    pub replay_attempts: Option<u32>,
    pub replay_timeout_secs: Option<u64>,
    /// On SIGTERM, how long running statements and open transactions get to finish.
    pub shutdown_grace_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// false: plain TCP only.
    pub enabled: Option<bool>,
    /// PEM certificate chain; with `key`. Without both, a self-signed pair is made once under
    /// the data directory.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// Server names `<database>.<domain>` route to `<database>`.
    pub domain: Option<String>,
}

/// The API's front door.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSection {
    /// More names (or addresses) clients reach the API by, accepted in the `Host` header.
    pub hosts: Option<Vec<String>>,
    /// HTTPS for the API [default: on exactly when `api` is not a loopback address]; `false`
    /// with a non-loopback `api` is refused. Uses `tls.cert`/`tls.key` or the self-signed pair.
    pub tls: Option<bool>,
    /// `/metrics` needs a token [default: only when `api` is not a loopback address].
    pub metrics_auth: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MariaDbSection {
    /// Where `mariadbd` and `mariadb-install-db` are.
    pub bin_dir: Option<PathBuf>,
    pub start_timeout_secs: Option<u64>,
    pub stop_grace_secs: Option<u64>,
    /// The OS user servers run as when Stratus runs as root [default: `stratus-db`].
    pub user: Option<String>,
    /// Stratus notes when each transaction commits, which point-in-time restore needs
    /// [default: true].
    pub commit_clock: Option<bool>,
    /// Every commit waits for Stratus to note its time (semi-synchronous replication), so
    /// point-in-time restore is exact to the transaction [default: true; docs/storage.md says
    /// what it costs].
    pub exact_commit_times: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourcesSection {
    /// false: run without cgroups even where they exist.
    pub cgroups: Option<bool>,
    /// false: plain data directories even where volumes can be mounted.
    pub volumes: Option<bool>,
    /// Parent cgroup of every database's group [default: `stratus/<id of the data directory>`,
    /// so two installations on one host never share a group].
    pub cgroup_parent: Option<String>,
}

/// The resolved settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub api: SocketAddr,
    pub scu: ScuSize,
    pub bin_dir: Option<PathBuf>,
    pub start_timeout: Duration,
    pub stop_grace: Duration,
    pub server_user: String,
    /// The master key ring, when data is encrypted at rest.
    pub master_key: Option<PathBuf>,
    pub cgroups: bool,
    pub volumes: bool,
    pub commit_clock: bool,
    pub exact_commit_times: bool,
    /// Empty: derived from the data directory once it is resolved.
    pub cgroup_parent: String,
    pub tls: Option<TlsSettings>,
    /// Extra `Host` names of the API.
    pub api_hosts: Vec<String>,
    /// Serve the API over HTTPS.
    pub api_tls: bool,
    /// `/metrics` needs a token.
    pub metrics_auth: bool,
    pub proxy: stratus_proxy::ProxyConfig,
    pub policy: stratus_core::ScalingPolicy,
    pub pool: stratus_control::pool::PoolConfig,
    pub hydrate: bool,
    pub resync_every: Duration,
    /// At least one; names distinct.
    pub nodes: Vec<NodeSection>,
    pub watermarks: stratus_control::placement::Watermarks,
    pub rebalance_every: Duration,
    pub move_cooldown: Duration,
}

#[derive(Debug, Clone)]
pub struct TlsSettings {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub domain: Option<String>,
}

impl Settings {
    pub fn resolve(
        file: Option<&Path>,
        data_dir: Option<PathBuf>,
        listen: Option<String>,
        api: Option<String>,
    ) -> anyhow::Result<Self> {
        let fc: FileConfig = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                toml::from_str(&text)
                    .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.message()))?
            }
            None => FileConfig::default(),
        };
        let scu = fc.scu.unwrap_or_default();
        if let Err(e) = scu.validate() {
            bail!("invalid SCU size: {e}");
        }
        let nodes = nodes(fc.nodes)?;
        let default = stratus_control::placement::Watermarks::default();
        let watermarks = stratus_control::placement::Watermarks {
            high_pct: fc.placement.high_pct.unwrap_or(default.high_pct),
            low_pct: fc.placement.low_pct.unwrap_or(default.low_pct),
        };
        if let Err(e) = watermarks.validate() {
            bail!("[placement]: {e}");
        }
        let rebalance_every_secs = fc.placement.rebalance_every_secs.unwrap_or(10);
        if rebalance_every_secs == 0 {
            bail!("[placement] rebalance_every_secs must be at least 1");
        }
        if fc.proxy.threads == Some(0) {
            bail!("[proxy] threads must be at least 1");
        }
        let resync_every_secs = fc.resync_every_secs.unwrap_or(30);
        if resync_every_secs == 0 {
            bail!("resync_every_secs must be at least 1");
        }
        let listen = listen
            .or(fc.listen)
            .unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
        let api = api.or(fc.api).unwrap_or_else(|| DEFAULT_API.to_owned());
        let api_addr = parse_addr("--api", &api)?;
        let loopback = api_addr.ip().is_loopback();
        if !loopback && fc.http.tls == Some(false) {
            bail!(
                "the API would listen on {api_addr}, which is not a loopback address, without TLS: tokens would cross the network in clear; remove http.tls = false (HTTPS is the default there) or bind the API to 127.0.0.1"
            );
        }
        let settings = Self {
            data_dir: data_dir
                .or(fc.data_dir)
                .unwrap_or_else(|| PathBuf::from("stratus-data")),
            listen: parse_addr("--listen", &listen)?,
            api: api_addr,
            api_hosts: fc.http.hosts.unwrap_or_default(),
            api_tls: fc.http.tls.unwrap_or(!loopback),
            metrics_auth: fc.http.metrics_auth.unwrap_or(!loopback),
            scu,
            bin_dir: fc.mariadb.bin_dir,
            start_timeout: Duration::from_secs(fc.mariadb.start_timeout_secs.unwrap_or(120)),
            stop_grace: Duration::from_secs(fc.mariadb.stop_grace_secs.unwrap_or(60)),
            server_user: fc
                .mariadb
                .user
                .unwrap_or_else(|| stratus_runtime::local::DEFAULT_SERVER_USER.to_owned()),
            master_key: fc.encryption.enabled.unwrap_or(true).then(|| {
                fc.encryption
                    .master_key_file
                    .clone()
                    .unwrap_or_else(default_master_key)
            }),
            cgroups: fc.resources.cgroups.unwrap_or(true),
            volumes: fc.resources.volumes.unwrap_or(true),
            commit_clock: fc.mariadb.commit_clock.unwrap_or(true),
            exact_commit_times: fc.mariadb.exact_commit_times.unwrap_or(true),
            cgroup_parent: fc.resources.cgroup_parent.unwrap_or_default(),
            policy: fc.policy.clone().unwrap_or_default(),
            pool: fc.pool.unwrap_or_default(),
            hydrate: fc.hydrate.unwrap_or(true),
            resync_every: Duration::from_secs(resync_every_secs),
            nodes,
            watermarks,
            rebalance_every: Duration::from_secs(rebalance_every_secs),
            move_cooldown: Duration::from_secs(fc.placement.move_cooldown_secs.unwrap_or(600)),
            proxy: {
                let d = stratus_proxy::ProxyConfig::default();
                let p = &fc.proxy;
                let secs = Duration::from_secs;
                stratus_proxy::ProxyConfig {
                    threads: p.threads.unwrap_or(d.threads),
                    max_connections: p.max_connections.unwrap_or(d.max_connections),
                    max_connections_per_service: p
                        .max_connections_per_database
                        .unwrap_or(d.max_connections_per_service),
                    wake_timeout: p.wake_timeout_secs.map_or(d.wake_timeout, secs),
                    handshake_timeout: p.handshake_timeout_secs.map_or(d.handshake_timeout, secs),
                    pool_max_idle: p.pool_max_idle.unwrap_or(d.pool_max_idle),
                    pool_idle_timeout: p.pool_idle_timeout_secs.map_or(d.pool_idle_timeout, secs),
                    release_idle_after: p
                        .release_idle_after_ms
                        .map_or(d.release_idle_after, Duration::from_millis),
                    replay: stratus_proxy::replay::ReplayLimits {
                        max_bytes: p.replay_max_bytes.unwrap_or(d.replay.max_bytes),
                        attempts: p.replay_attempts.unwrap_or(d.replay.attempts).max(1),
                        timeout: p.replay_timeout_secs.map_or(d.replay.timeout, secs),
                    },
                    shutdown_grace: p.shutdown_grace_secs.map_or(d.shutdown_grace, secs),
                    ..d
                }
            },
            tls: fc.tls.enabled.unwrap_or(true).then_some(TlsSettings {
                cert: fc.tls.cert,
                key: fc.tls.key,
                domain: fc.tls.domain,
            }),
        };
        if settings.listen == settings.api {
            bail!(
                "--listen and --api are both {}; they need different ports",
                settings.api
            );
        }
        Ok(settings)
    }
}

/// The nodes of `[[nodes]]`, checked; none configured is one node, `local`.
fn nodes(mut nodes: Vec<NodeSection>) -> anyhow::Result<Vec<NodeSection>> {
    if nodes.is_empty() {
        nodes.push(NodeSection {
            name: stratus_runtime::local::DEFAULT_NODE.to_owned(),
            data_dir: None,
            cpu_millis: None,
            memory_bytes: None,
        });
    }
    for (i, n) in nodes.iter().enumerate() {
        let valid = n.name.len() <= 32
            && n.name.starts_with(|c: char| c.is_ascii_lowercase())
            && n.name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !valid {
            bail!(
                "[[nodes]] name {:?}: use 1 to 32 lowercase letters, digits and '-', starting with a letter",
                n.name
            );
        }
        if nodes[..i].iter().any(|m| m.name == n.name) {
            bail!("[[nodes]] name {:?} is used twice", n.name);
        }
        if n.cpu_millis == Some(0) || n.memory_bytes == Some(0) {
            bail!(
                "[[nodes]] {}: cpu_millis and memory_bytes must be above 0",
                n.name
            );
        }
        if let Some(d) = &n.data_dir
            && nodes[..i].iter().any(|m| m.data_dir.as_ref() == Some(d))
        {
            bail!(
                "[[nodes]] {}: data_dir {} is another node's",
                n.name,
                d.display()
            );
        }
    }
    Ok(nodes)
}

/// `127.0.0.1:8033` or `http://127.0.0.1:8033/`; the API's address reads the same for the server
/// and for the CLI.
pub fn parse_addr(what: &str, text: &str) -> anyhow::Result<SocketAddr> {
    let bare = text
        .strip_prefix("http://")
        .or_else(|| text.strip_prefix("https://"))
        .unwrap_or(text)
        .trim_end_matches('/');
    let bare = bare.replace("localhost:", "127.0.0.1:");
    bare.parse()
        .map_err(|_| anyhow::anyhow!("{what} {text:?} is not an address like 127.0.0.1:8033"))
}

/// The URL the CLI calls: as given with a scheme; without one, `http://` for a loopback address
/// or `localhost` and `https://` otherwise, as `stratus up` serves it.
pub fn api_url(global: Option<&str>) -> String {
    let text = global.unwrap_or(DEFAULT_API);
    if text.starts_with("http://") || text.starts_with("https://") {
        return text.to_owned();
    }
    let host = text.rsplit_once(':').map_or(text, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let local = host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if local {
        format!("http://{text}")
    } else {
        format!("https://{text}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_file_over_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("s.toml");
        std::fs::write(
            &f,
            "api = \"127.0.0.1:9000\"\nlisten = \"127.0.0.1:9001\"\n[scu]\ncpu_millis = 1000\n",
        )
        .unwrap();
        let s = Settings::resolve(Some(&f), None, Some("127.0.0.1:7000".into()), None).unwrap();
        assert_eq!(s.api.port(), 9000);
        assert_eq!(s.listen.port(), 7000);
        assert_eq!(s.scu.cpu_millis, 1000);
        assert_eq!(s.scu.memory_bytes, ScuSize::default().memory_bytes);
    }

    #[test]
    fn typos_and_bad_values_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("s.toml");
        std::fs::write(&f, "dta_dir = \"x\"\n").unwrap();
        assert!(
            Settings::resolve(Some(&f), None, None, None)
                .unwrap_err()
                .to_string()
                .contains("dta_dir")
        );
        std::fs::write(&f, "[scu]\nbuffer_pool_fraction = 2.0\n").unwrap();
        assert!(Settings::resolve(Some(&f), None, None, None).is_err());
        std::fs::write(&f, "resync_every_secs = 0\n").unwrap();
        let err = Settings::resolve(Some(&f), None, None, None).unwrap_err();
        assert!(err.to_string().contains("resync_every_secs"), "{err}");
        // Sessions on the main runtime would keep pooled connections no sweep reaches.
        std::fs::write(&f, "[proxy]\nthreads = 0\n").unwrap();
        let err = Settings::resolve(Some(&f), None, None, None).unwrap_err();
        assert!(err.to_string().contains("threads"), "{err}");
        std::fs::write(&f, "resync_every_secs = 5\n").unwrap();
        let s = Settings::resolve(Some(&f), None, None, None).unwrap();
        assert_eq!(s.resync_every, Duration::from_secs(5));
        assert!(Settings::resolve(None, None, Some("nonsense".into()), None).is_err());
        assert!(
            Settings::resolve(
                None,
                None,
                Some("127.0.0.1:1".into()),
                Some("http://127.0.0.1:1/".into())
            )
            .is_err()
        );
    }

    #[test]
    fn nodes_default_to_one_and_bad_ones_are_refused() {
        let s = Settings::resolve(None, None, None, None).unwrap();
        assert_eq!(s.nodes.len(), 1);
        assert_eq!(s.nodes[0].name, "local");
        assert_eq!(s.watermarks.high_pct, 70);
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("s.toml");
        let two = "[[nodes]]\nname = \"n1\"\nmemory_bytes = 4294967296\n\
                   [[nodes]]\nname = \"n2\"\ndata_dir = \"/srv/n2\"\n\
                   [placement]\nhigh_pct = 80\nlow_pct = 50\n";
        std::fs::write(&f, two).unwrap();
        let s = Settings::resolve(Some(&f), None, None, None).unwrap();
        assert_eq!(s.nodes.len(), 2);
        assert_eq!(s.nodes[0].memory_bytes, Some(4 << 30));
        assert_eq!(s.nodes[1].data_dir.as_deref(), Some(Path::new("/srv/n2")));
        assert_eq!((s.watermarks.high_pct, s.watermarks.low_pct), (80, 50));
        for (bad, says) in [
            ("[[nodes]]\nname = \"N1\"\n", "lowercase"),
            ("[[nodes]]\nname = \"../x\"\n", "lowercase"),
            (
                "[[nodes]]\nname = \"a\"\n[[nodes]]\nname = \"a\"\n",
                "twice",
            ),
            ("[[nodes]]\nname = \"a\"\nmemory_bytes = 0\n", "above 0"),
            (
                "[[nodes]]\nname = \"a\"\ndata_dir = \"/x\"\n[[nodes]]\nname = \"b\"\ndata_dir = \"/x\"\n",
                "another node's",
            ),
            ("[[nodes]]\nname = \"a\"\nram = 1\n", "ram"),
            ("[placement]\nhigh_pct = 50\nlow_pct = 60\n", "low_pct"),
            (
                "[placement]\nrebalance_every_secs = 0\n",
                "rebalance_every_secs",
            ),
            ("[placement]\nwatermark = 1\n", "watermark"),
        ] {
            std::fs::write(&f, bad).unwrap();
            let err = Settings::resolve(Some(&f), None, None, None).unwrap_err();
            assert!(err.to_string().contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn api_addresses_read_both_ways() {
        assert_eq!(
            parse_addr("--api", "http://localhost:8033/")
                .unwrap()
                .port(),
            8033
        );
        assert_eq!(api_url(Some("127.0.0.1:9")), "http://127.0.0.1:9");
        assert_eq!(api_url(None), "http://127.0.0.1:8033");
        assert_eq!(api_url(Some("localhost:9")), "http://localhost:9");
        assert_eq!(api_url(Some("[::1]:9")), "http://[::1]:9");
        assert_eq!(api_url(Some("10.0.0.5:9")), "https://10.0.0.5:9");
        assert_eq!(api_url(Some("https://x:9")), "https://x:9");
    }

    #[test]
    fn a_non_loopback_api_needs_tls() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("s.toml");
        std::fs::write(&f, "[http]\ntls = false\n").unwrap();
        let err = Settings::resolve(Some(&f), None, None, Some("0.0.0.0:8033".into()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a loopback address"), "{err}");
        let local = Settings::resolve(Some(&f), None, None, None).unwrap();
        assert!(!local.api_tls && !local.metrics_auth);
        let open = Settings::resolve(None, None, None, Some("0.0.0.0:8033".into())).unwrap();
        assert!(open.api_tls && open.metrics_auth);
    }
}
