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
}

pub struct ApiClient {
    base: String,
    http: reqwest::Client,
}

impl ApiClient {
    pub fn new(base: &str) -> Self {
        Self {
            base: base.trim_end_matches('/').to_owned(),
            http: reqwest::Client::new(),
        }
    }

    async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, ClientError> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method, &url);
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
}

/// The innermost cause: "connection refused" rather than "error sending request".
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}
