//! `stratus operator run`: the Kubernetes operator's process (`stratus_kube::operator`).

use crate::cli::OperatorRun;
use crate::up::{init_logging, shutdown_signal};
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
    match operator::run(ctx, elector, shutdown_signal()).await {
        Stopped::Shutdown => {
            tracing::info!("operator stopped");
            Ok(())
        }
        Stopped::LostLease => anyhow::bail!("no longer the leader; exiting so a restart follows"),
    }
}
