//! `stratus operator run`: the Kubernetes operator's process (`stratus_kube::operator`), and
//! `stratus operator proxy`: the proxy Deployment's (`stratus_proxy` over
//! `stratus_kube::directory`).

use crate::cli::{OperatorProxy, OperatorRun};
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
    let ctx = Arc::new(Context::new(client, settings, sizes, &args.identity));
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
