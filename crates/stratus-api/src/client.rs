//! The API client used by the CLI.

use crate::types::*;
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use stratus_core::names::percent_encode;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The API answered with an error.
    #[error("{message}")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    #[error(
        "cannot reach the Stratus API at {url}: {reason} (is `stratus up` running? --api or STRATUS_API select another)"
    )]
    Unreachable { url: String, reason: String },
    #[error("unexpected answer from the Stratus API at {url}: {reason}")]
    Protocol { url: String, reason: String },
    #[error("API client: {0}")]
    Config(String),
}

pub struct ApiClient {
    base: String,
    http: reqwest::Client,
    /// Sent as `Authorization: Bearer …`.
    token: Option<String>,
}

impl ApiClient {
    /// A client for a plain-HTTP API (or one whose certificate is trusted some other way).
    pub fn new(base: &str) -> Self {
        Self {
            base: base.trim_end_matches('/').to_owned(),
            http: reqwest::Client::new(),
            token: None,
        }
    }

    /// This client, sending `token` as `Authorization: Bearer …`.
    pub fn bearer(mut self, token: String) -> Self {
        self.token = Some(token);
        self
    }

    /// A client that sends `token` and, for `https://`, trusts the PEM certificates in `ca`
    /// (the API's own self-signed certificate, or the CA that signed it). No public roots are
    /// built in: the CLI talks to one known server.
    pub fn with_auth(
        base: &str,
        token: Option<String>,
        ca_pem: Option<&[u8]>,
    ) -> Result<Self, ClientError> {
        let mut builder = reqwest::Client::builder().use_rustls_tls();
        if let Some(pem) = ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(|e| {
                ClientError::Config(format!("the CA file holds no usable PEM certificate: {e}"))
            })?;
            if certs.is_empty() {
                return Err(ClientError::Config(
                    "the CA file holds no PEM certificate".into(),
                ));
            }
            for c in certs {
                builder = builder.add_root_certificate(c);
            }
        }
        let http = builder
            .build()
            .map_err(|e| ClientError::Config(root_cause(&e)))?;
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            http,
            token,
        })
    }

    async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, ClientError> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method, &url);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(|e| ClientError::Unreachable {
            url: self.base.clone(),
            reason: root_cause(&e),
        })?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| ClientError::Unreachable {
            url: self.base.clone(),
            reason: root_cause(&e),
        })?;
        if !status.is_success() {
            return Err(match serde_json::from_slice::<ErrorBody>(&bytes) {
                Ok(b) => ClientError::Api {
                    status: status.as_u16(),
                    code: b.error.code,
                    message: b.error.message,
                },
                Err(_) => ClientError::Protocol {
                    url,
                    reason: format!("HTTP {status}"),
                },
            });
        }
        let bytes = if status == StatusCode::NO_CONTENT {
            &b"null"[..]
        } else {
            &bytes[..]
        };
        serde_json::from_slice(bytes).map_err(|e| ClientError::Protocol {
            url,
            reason: e.to_string(),
        })
    }

    pub async fn status(&self) -> Result<StatusView, ClientError> {
        self.call::<(), _>(Method::GET, "/v1/status", None).await
    }

    pub async fn create(&self, req: &CreateRequest) -> Result<CreatedDatabase, ClientError> {
        self.call(Method::POST, "/v1/databases", Some(req)).await
    }

    pub async fn list(&self) -> Result<Vec<DatabaseView>, ClientError> {
        self.call::<(), _>(Method::GET, "/v1/databases", None).await
    }

    pub async fn migrate(
        &self,
        name: &str,
        req: &stratus_control::migrate::MigrateRequest,
    ) -> Result<stratus_control::migrate::MigrationReport, ClientError> {
        self.call(
            Method::POST,
            &format!("/v1/databases/{}/migrate", percent_encode(name)),
            Some(req),
        )
        .await
    }

    pub async fn nodes(&self) -> Result<Vec<stratus_control::nodes::NodeView>, ClientError> {
        self.call::<(), _>(Method::GET, "/v1/nodes", None).await
    }

    pub async fn show(&self, name: &str) -> Result<DatabaseView, ClientError> {
        self.call::<(), _>(
            Method::GET,
            &format!("/v1/databases/{}", percent_encode(name)),
            None,
        )
        .await
    }

    pub async fn delete(&self, name: &str) -> Result<(), ClientError> {
        self.call::<(), ()>(
            Method::DELETE,
            &format!("/v1/databases/{}", percent_encode(name)),
            None,
        )
        .await
    }

    pub async fn scale(&self, name: &str, scu: u32) -> Result<DatabaseView, ClientError> {
        self.call(
            Method::POST,
            &format!("/v1/databases/{}/scale", percent_encode(name)),
            Some(&ScaleRequest { scu }),
        )
        .await
    }

    pub async fn park(&self, name: &str, force: bool) -> Result<DatabaseView, ClientError> {
        self.call(
            Method::POST,
            &format!("/v1/databases/{}/park", percent_encode(name)),
            Some(&ParkRequest { force }),
        )
        .await
    }

    pub async fn suspend(&self, name: &str, force: bool) -> Result<DatabaseView, ClientError> {
        self.call(
            Method::POST,
            &format!("/v1/databases/{}/suspend", percent_encode(name)),
            Some(&ParkRequest { force }),
        )
        .await
    }

    pub async fn resume(&self, name: &str) -> Result<DatabaseView, ClientError> {
        self.call::<(), _>(
            Method::POST,
            &format!("/v1/databases/{}/resume", percent_encode(name)),
            None,
        )
        .await
    }

    pub async fn backups(&self, db: &str) -> Result<Vec<BackupView>, ClientError> {
        self.call::<(), _>(
            Method::GET,
            &format!("/v1/databases/{}/backups", percent_encode(db)),
            None,
        )
        .await
    }

    pub async fn create_backup(
        &self,
        db: &str,
        req: &BackupRequest,
    ) -> Result<BackupView, ClientError> {
        self.call(
            Method::POST,
            &format!("/v1/databases/{}/backups", percent_encode(db)),
            Some(req),
        )
        .await
    }

    pub async fn backup_schedule(&self, db: &str) -> Result<BackupSchedule, ClientError> {
        self.call::<(), _>(
            Method::GET,
            &format!("/v1/databases/{}/backup-schedule", percent_encode(db)),
            None,
        )
        .await
    }

    pub async fn set_backup_schedule(
        &self,
        db: &str,
        schedule: &BackupSchedule,
    ) -> Result<BackupSchedule, ClientError> {
        self.call(
            Method::PUT,
            &format!("/v1/databases/{}/backup-schedule", percent_encode(db)),
            Some(schedule),
        )
        .await
    }

    pub async fn verify_backup(&self, id: &str) -> Result<BackupView, ClientError> {
        self.call::<(), _>(
            Method::POST,
            &format!("/v1/backups/{}/verify", percent_encode(id)),
            None,
        )
        .await
    }

    pub async fn delete_backup(&self, id: &str) -> Result<(), ClientError> {
        self.call::<(), ()>(
            Method::DELETE,
            &format!("/v1/backups/{}", percent_encode(id)),
            None,
        )
        .await
    }

    pub async fn restore(
        &self,
        source: &str,
        req: &RestoreRequest,
    ) -> Result<DatabaseView, ClientError> {
        self.call(
            Method::POST,
            &format!("/v1/databases/{}/restore", percent_encode(source)),
            Some(req),
        )
        .await
    }

    pub async fn branch(
        &self,
        source: &str,
        req: &BranchRequest,
    ) -> Result<DatabaseView, ClientError> {
        self.call(
            Method::POST,
            &format!("/v1/databases/{}/branch", percent_encode(source)),
            Some(req),
        )
        .await
    }

    pub async fn users(&self, db: &str) -> Result<Vec<UserView>, ClientError> {
        self.call::<(), _>(
            Method::GET,
            &format!("/v1/databases/{}/users", percent_encode(db)),
            None,
        )
        .await
    }

    pub async fn create_user(
        &self,
        db: &str,
        req: &CreateUserRequest,
    ) -> Result<CreatedUser, ClientError> {
        self.call(
            Method::POST,
            &format!("/v1/databases/{}/users", percent_encode(db)),
            Some(req),
        )
        .await
    }

    pub async fn delete_user(&self, db: &str, user: &str) -> Result<(), ClientError> {
        self.call::<(), ()>(
            Method::DELETE,
            &format!(
                "/v1/databases/{}/users/{}",
                percent_encode(db),
                percent_encode(user)
            ),
            None,
        )
        .await
    }

    pub async fn rotate_keys(&self) -> Result<KeyRotation, ClientError> {
        self.call::<(), _>(Method::POST, "/v1/keys/rotate", None)
            .await
    }

    pub async fn tokens(&self) -> Result<Vec<TokenView>, ClientError> {
        self.call::<(), _>(Method::GET, "/v1/tokens", None).await
    }

    pub async fn create_token(
        &self,
        req: &CreateTokenRequest,
    ) -> Result<CreatedToken, ClientError> {
        self.call(Method::POST, "/v1/tokens", Some(req)).await
    }

    pub async fn delete_token(&self, id: &str) -> Result<(), ClientError> {
        self.call::<(), ()>(
            Method::DELETE,
            &format!("/v1/tokens/{}", percent_encode(id)),
            None,
        )
        .await
    }

    pub async fn events(
        &self,
        db: Option<&str>,
        after: Option<i64>,
        limit: Option<usize>,
    ) -> Result<Vec<EventView>, ClientError> {
        let mut q = Vec::new();
        if let Some(db) = db {
            q.push(format!("db={}", percent_encode(db)));
        }
        if let Some(a) = after {
            q.push(format!("after={a}"));
        }
        if let Some(l) = limit {
            q.push(format!("limit={l}"));
        }
        let path = if q.is_empty() {
            "/v1/events".to_owned()
        } else {
            format!("/v1/events?{}", q.join("&"))
        };
        self.call::<(), _>(Method::GET, &path, None).await
    }

    /// What each database used since `since_ms` (their whole lives when `None`).
    pub async fn usage(
        &self,
        db: Option<&str>,
        since_ms: Option<i64>,
    ) -> Result<Vec<stratus_core::usage::Usage>, ClientError> {
        let mut q = Vec::new();
        if let Some(db) = db {
            q.push(format!("db={}", percent_encode(db)));
        }
        if let Some(s) = since_ms {
            q.push(format!("since_ms={s}"));
        }
        let path = if q.is_empty() {
            "/v1/usage".to_owned()
        } else {
            format!("/v1/usage?{}", q.join("&"))
        };
        self.call::<(), _>(Method::GET, &path, None).await
    }
}

/// The innermost cause: "connection refused" rather than "error sending request".
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}
