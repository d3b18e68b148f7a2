//! `stratus operator run`: the Kubernetes operator's process (`stratus_kube::operator`).

use crate::cli::OperatorRun;
use crate::up::{init_logging, shutdown_signal};
use std::sync::Arc;
use stratus_kube::objects::Settings;
use stratus_kube::operator::{self, Context, database::Sizes};

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
    tracing::info!(namespace = %settings.namespace, image = %settings.image, "operator running");
    let ctx = Arc::new(Context::new(client, settings, sizes));
    operator::run(ctx, shutdown_signal()).await;
    tracing::info!("operator stopped");
    Ok(())
}
