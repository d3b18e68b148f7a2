//! `stratus operator run`: the Kubernetes operator's process (`stratus_kube::operator`), and
//! `stratus operator proxy`: the proxy Deployment's (`stratus_proxy` over
//! `stratus_kube::directory`); `stratus operator agent` and `backup-record`, run in database
//! pods and backup Jobs.

use crate::cli::{OperatorAgent, OperatorBackupRecord, OperatorProxy, OperatorRun};
use crate::up::{greeting_version, init_logging, shutdown_signal};
use std::sync::Arc;
use stratus_kube::objects::Settings;
use stratus_kube::operator::leader::Elector;
use stratus_kube::operator::{self, Context, Stopped, database::Sizes};

pub async fn run(args: OperatorRun) -> anyhow::Result<()> {
    init_logging();
    // One line: kube's own error already says what it tried (in-cluster, then kubeconfig).
    let client = stratus_kube::Client::try_default()
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach the Kubernetes API: {e}"))?;
    let settings = Settings {
        namespace: args.namespace,
        image: args.mariadb_image,
        storage_class: args.storage_class,
        agent_image: args.agent_image,
    };
    let sizes = Sizes {
        scu: stratus_core::ScuSize::default(),
        proxy_host: args.proxy_host,
        proxy_port: args.proxy_port,
    };
    let elector = Elector::new(
        client.clone(),
        &settings.namespace,
        stratus_kube::rbac::LEASE,
        &args.identity,
        std::time::Duration::from_secs(15),
    );
    tracing::info!(namespace = %settings.namespace, image = %settings.image, identity = %args.identity,
        "operator started; waiting to lead");
    if args.pool_min > args.pool_max {
        anyhow::bail!(
            "--pool-min {} is above --pool-max {}",
            args.pool_min,
            args.pool_max
        );
    }
    let pool = stratus_control::pool::PoolConfig {
        min: args.pool_min,
        max: args.pool_max,
        // Kubernetes sizes a claimed spare in place; no spare is kept pre-grown.
        presized: 0,
    };
    let ctx = Arc::new(Context::new(client, settings, sizes, &args.identity).with_pool(pool));
    let listener = tokio::net::TcpListener::bind(args.metrics)
        .await
        .map_err(|e| anyhow::anyhow!("cannot serve metrics on {}: {e}", args.metrics))?;
    let metrics = ctx.metrics.clone();
    tokio::spawn(serve_metrics(listener, move || metrics.render()));
    match operator::run(ctx, elector, shutdown_signal()).await {
        Stopped::Shutdown => {
            tracing::info!("operator stopped");
            Ok(())
        }
        Stopped::LostLease => anyhow::bail!("no longer the leader; exiting so a restart follows"),
    }
}

/// The `record` container of a backup Job (`stratus_kube::backup_job::record`).
pub fn backup_record(args: OperatorBackupRecord) -> anyhow::Result<()> {
    use stratus_kube::backup_job::{RecordArgs, record};
    let database = stratus_core::ServiceName::parse(&args.database)
        .map_err(|e| anyhow::anyhow!("--database: {e}"))?;
    let source =
        serde_json::from_str(&args.source).map_err(|e| anyhow::anyhow!("--source: {e}"))?;
    let done = record(&RecordArgs {
        dir: args.dir,
        database,
        id: args.id.clone(),
        started_at_ms: args.started_at_ms,
        retention_days: args.retention_days,
        keep_last: args.keep_last,
        schedule: args.schedule,
        source,
    })
    .map_err(|e| anyhow::anyhow!("backup {}: {e}", args.id))?;
    for warning in &done.warnings {
        eprintln!("warning: {warning}");
    }
    let view = stratus_control::backup::BackupView::from(&done.record);
    println!(
        "{}",
        serde_json::json!({"backup": view, "deleted": done.deleted, "warnings": done.warnings})
    );
    if !done.record.verified {
        anyhow::bail!(
            "backup {} failed verification: {}",
            args.id,
            done.record.verification
        );
    }
    Ok(())
}

/// The proxy Deployment's process: SQL clients on `--listen`, routed and woken through the
/// cluster's resources; on SIGTERM, no new clients, and running work gets the grace period.
pub async fn proxy(args: OperatorProxy) -> anyhow::Result<()> {
    init_logging();
    let client = stratus_kube::Client::try_default()
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach the Kubernetes API: {e}"))?;
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(
            // Both files given: nothing is created in the (unused) directory.
            stratus_proxy::tls::load_or_create(
                std::path::Path::new("/"),
                Some(cert),
                Some(key),
                None,
            )
            .map_err(|e| anyhow::anyhow!("TLS for SQL clients: {e}"))?,
        ),
        _ => None,
    };
    let settings = Settings {
        namespace: args.namespace,
        ..Settings::default()
    };
    let grace = std::time::Duration::from_secs(args.shutdown_grace_secs);
    let proxy = stratus_proxy::Proxy::new(
        stratus_proxy::ProxyConfig {
            server_version: greeting_version(&args.server_version),
            tls,
            shutdown_grace: grace,
            release_idle_after: std::time::Duration::from_millis(args.release_idle_after_ms),
            ..stratus_proxy::ProxyConfig::default()
        },
        stratus_kube::directory::KubeDirectory::new(client, settings.clone(), &args.identity),
    );
    let sql = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen for SQL clients on {}: {e}", args.listen))?;
    let metrics = tokio::net::TcpListener::bind(args.metrics)
        .await
        .map_err(|e| anyhow::anyhow!("cannot serve metrics on {}: {e}", args.metrics))?;
    let activity = proxy.clone();
    tokio::spawn(serve_metrics(metrics, move || activity.activity.render()));
    tokio::spawn(proxy.clone().serve(sql));
    tracing::info!(namespace = %settings.namespace, listen = %args.listen, "proxy started");
    shutdown_signal().await;
    let busy = proxy.drain(grace).await;
    if busy > 0 {
        tracing::warn!("{busy} session(s) still busy after {grace:?}; closed");
    }
    tracing::info!("proxy stopped");
    Ok(())
}

/// The agent in a database's pod: the server's CPU sampled every 200 ms
/// ([`stratus_kube::agent::Sampler`]) and served on `GET /cpu?after=MS`, until SIGTERM.
pub async fn agent(args: OperatorAgent) -> anyhow::Result<()> {
    init_logging();
    let listener = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(l) => l,
        // `[::]` (both families, for IPv6 clusters) on a node without IPv6: IPv4 alone.
        Err(e)
            if args.listen.ip() == std::net::Ipv6Addr::UNSPECIFIED
                && e.raw_os_error() == Some(libc::EAFNOSUPPORT) =>
        {
            let v4 =
                std::net::SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, args.listen.port()));
            tokio::net::TcpListener::bind(v4)
                .await
                .map_err(|e| anyhow::anyhow!("cannot serve CPU samples on {v4}: {e}"))?
        }
        Err(e) => anyhow::bail!("cannot serve CPU samples on {}: {e}", args.listen),
    };
    let bound = listener.local_addr().unwrap_or(args.listen);
    tracing::info!(listen = %bound, pid_file = %args.pid_file.display(), "agent started");
    tokio::select! {
        () = serve_cpu_samples(listener, &args.pid_file) => {}
        () = shutdown_signal() => tracing::info!("agent stopped"),
    }
    Ok(())
}

/// Samples the process of `pid_file` and answers `GET /cpu?after=MS` on `listener`.
async fn serve_cpu_samples(listener: tokio::net::TcpListener, pid_file: &std::path::Path) {
    use stratus_kube::agent::{SAMPLE_EVERY_MS, Sampler};
    let sampler = Arc::new(std::sync::Mutex::new(Sampler::new(pid_file)));
    let sampling = {
        let sampler = sampler.clone();
        async move {
            let mut every =
                tokio::time::interval(std::time::Duration::from_millis(SAMPLE_EVERY_MS));
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                let now = stratus_core::time::now_ms();
                sampler
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .sample(now);
            }
        }
    };
    #[derive(serde::Deserialize)]
    struct After {
        #[serde(default)]
        after: i64,
    }
    let app = axum::Router::new().route(
        "/cpu",
        axum::routing::get(move |q: axum::extract::Query<After>| async move {
            let now = stratus_core::time::now_ms();
            axum::Json(
                sampler
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .since(q.after, now),
            )
        }),
    );
    tokio::select! {
        () = sampling => {}
        r = async { axum::serve(listener, app).await } => {
            if let Err(e) = r {
                tracing::warn!("agent server stopped: {e}");
            }
        }
    }
}

/// `GET /metrics` on `listener` (Prometheus text from `render`), until the process ends.
async fn serve_metrics(
    listener: tokio::net::TcpListener,
    render: impl Fn() -> String + Clone + Send + Sync + 'static,
) {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || async move {
            (
                [(
                    axum::http::header::CONTENT_TYPE,
                    "text/plain; version=0.0.4; charset=utf-8",
                )],
                render(),
            )
        }),
    );
    if let Err(e) = axum::serve(listener, app).await {
        tracing::warn!("metrics server stopped: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;
    use stratus_kube::operator::metrics::OperatorMetrics;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_busy_process_seen_by_the_agent_is_scaled_up_by_the_operators_decision() {
        use stratus_kube::operator::scaler::{Scaling, Serving, fetch};
        /// The busy process, killed however the test ends.
        struct Busy(std::process::Child);
        impl Drop for Busy {
            fn drop(&mut self) {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
        let busy = Busy(
            std::process::Command::new("sh")
                .args(["-c", "while :; do :; done"])
                .spawn()
                .unwrap(),
        );
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("mysqld.pid");
        std::fs::write(&pid_file, format!("{}\n", busy.0.id())).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move { serve_cpu_samples(listener, &pid_file).await });
        // 10 millicores per SCU: whatever share of the machine the loop gets, it is pinned.
        let serving = Serving {
            ip: "127.0.0.1".into(),
            scu: 1,
            bounds: stratus_control::scaler::Bounds {
                min_scu: 1,
                max_scu: 4,
                cpu_millis_per_scu: 10,
            },
            policy: stratus_core::ScalingPolicy::default(),
        };
        let scaling = Scaling::default();
        scaling.serve("shop", Some(serving.clone()));
        let http = reqwest::Client::new();
        let mut after = 0;
        let mut pids = std::collections::BTreeSet::new();
        // What the operator's loop does every second, here every 200 ms, until it decides
        // (at most 30 s, for a machine that starves the test).
        let chosen = 'decided: {
            for _ in 0..150 {
                let got = fetch(&http, &addr, after).await.unwrap();
                assert!(
                    got.samples.iter().all(|&(at, _)| at > after),
                    "only new samples"
                );
                if !got.samples.is_empty() {
                    pids.insert(got.pid);
                }
                after = got.samples.last().map_or(after, |&(at, _)| at);
                if let Some(s) = scaling.observe("shop", &serving, &got) {
                    break 'decided s;
                }
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            panic!("no decision from the agent's samples");
        };
        assert_eq!((chosen.from, chosen.to), (1, 2), "{chosen:?}");
        assert!(chosen.usage_pct >= 98.0, "{chosen:?}");
        assert_eq!(
            pids,
            [Some(busy.0.id())].into(),
            "the process of the pid file"
        );
        drop(busy);
    }

    #[tokio::test]
    async fn metrics_are_served_as_prometheus_text() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let metrics = Arc::new(OperatorMetrics::default());
        metrics.leading.store(true, Ordering::Relaxed);
        tokio::spawn(serve_metrics(listener, move || metrics.render()));
        let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
        conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        conn.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(
            answer.contains("content-type: text/plain; version=0.0.4"),
            "{answer}"
        );
        assert!(
            answer.contains("\nstratus_operator_leading 1\n"),
            "{answer}"
        );
    }
}
