//! Branches: a writable, independent database with another's data as it is now, made in about a
//! second whatever its size where the runtime shares blocks between volumes
//! ([`Runtime::branch`]), and through a backup where it cannot. A branch is a full database: its
//! own size, lifecycle and accounts (the source's, with their passwords, as its server has
//! them), deleted without touching the source.

use crate::backup::RestoreRequest;
use crate::{ControlPlane, Result};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::time::Instant;
use stratus_core::{EventKind, ServiceName};
use stratus_runtime::Runtime;
use stratus_store::Store;

/// A request to branch a database.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BranchRequest {
    /// The branch's name.
    pub to: String,
    /// A past time (RFC 3339) instead of now: the branch is then a point-in-time restore.
    #[serde(default)]
    pub time: Option<String>,
}

impl<S: Store, R: Runtime> ControlPlane<S, R> {
    pub async fn branch(&self, source: &str, req: BranchRequest) -> Result<crate::DatabaseView> {
        let source = ServiceName::parse(source)?;
        let to = ServiceName::parse_new(&req.to)?;
        let begin = Instant::now();
        if let Some(time) = &req.time {
            // The past is only in backups and the archived log: a point-in-time restore.
            let view = self
                .restore(
                    source.as_str(),
                    RestoreRequest {
                        to: to.to_string(),
                        backup: None,
                        time: Some(time.clone()),
                    },
                )
                .await?;
            let ms = begin.elapsed().as_millis() as u64;
            self.event(
                &to,
                EventKind::Branched,
                &format!("branched from {source} as of {time} in {ms} ms, through a point-in-time restore"),
                json!({"source": source, "ms": ms, "shared_blocks": false, "time": time}),
            )
            .await;
            return Ok(view);
        }
        if !self.runtime.shares_blocks() {
            // Without volumes that share blocks: a backup now, restored.
            let b = self.create_backup(source.as_str()).await?;
            let view = self
                .restore(
                    source.as_str(),
                    RestoreRequest {
                        to: to.to_string(),
                        backup: Some(b.id.clone()),
                        time: None,
                    },
                )
                .await?;
            let ms = begin.elapsed().as_millis() as u64;
            self.event(
                &to,
                EventKind::Branched,
                &format!("branched from {source} in {ms} ms, copied through backup {} (this host's storage cannot share blocks)", b.id),
                json!({"source": source, "ms": ms, "shared_blocks": false, "backup": b.id}),
            )
            .await;
            return Ok(view);
        }
        let _source_lock = self.lock(&source).await;
        let svc = self
            .ensure_running(&source, EventKind::Resumed, "for a branch")
            .await?;
        let users = self.store.users(&source).await?;
        let like = crate::copy::Source::of(&svc, &users);
        let _to_lock = self.lock(&to).await;
        let message = format!("database {to} requested as a branch of {source}");
        // Blocks are shared only within a node's storage.
        let node = self.node_of(&svc);
        let (svc, instance) = self
            .make_copy(&to, &like, node, &message, |spec| {
                let runtime = &self.runtime;
                let source = source.clone();
                async move {
                    runtime.branch(&source, &spec).await?.ok_or_else(|| {
                        stratus_runtime::RuntimeError::Other(
                            "this host's storage cannot share blocks".into(),
                        )
                    })
                }
            })
            .await?;
        let ms = begin.elapsed().as_millis() as u64;
        self.event(
            &to,
            EventKind::Branched,
            &format!("branched from {source} in {ms} ms (blocks shared until written)"),
            json!({"source": source, "ms": ms, "shared_blocks": true, "pid": instance.pid}),
        )
        .await;
        Ok(self.view(&svc).await)
    }
}
