//! Routes of the HTTP API:
//!
//! | method | path | body → answer |
//! |---|---|---|
//! | GET | `/v1/status` | → [`StatusView`] |
//! | GET | `/v1/databases` | → `[DatabaseView]` |
//! | POST | `/v1/databases` | [`CreateRequest`] → `CreatedDatabase` (201) |
//! | GET / DELETE | `/v1/databases/{name}` | → `DatabaseView` / 204 |
//! | POST | `/v1/databases/{name}/scale` | [`ScaleRequest`] → `DatabaseView` |
//! | POST | `/v1/databases/{name}/park`, `/suspend` | optional `{"force": true}` → `DatabaseView` |
//! | POST | `/v1/databases/{name}/resume` | → `DatabaseView` |
//! | GET / POST | `/v1/databases/{name}/users` | [`CreateUserRequest`] → `CreatedUser` (201) |
//! | DELETE | `/v1/databases/{name}/users/{user}` | → 204 |
//! | GET | `/v1/events?db=&after=&limit=` | → `[EventView]` |
//! | GET / POST | `/v1/tokens` | [`CreateTokenRequest`] → `CreatedToken` (201); admin only |
//! | DELETE | `/v1/tokens/{id}` | → 204; admin only |
//! | GET | `/metrics` | Prometheus text: per database size and state, proxy figures |
//!
//! Every request must name the API by one of its own names in `Host` (else 421), and every
//! route but `/metrics` (unless [`Access::metrics_auth`]) needs `Authorization: Bearer <token>`
//! (else 401); a token whose role or scope does not cover the request gets 403. Lists and events
//! show only the databases a token's scope covers.

use crate::auth::{Access, Caller, bearer, host_allowed};
use crate::types::*;
use axum::Extension;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use stratus_control::{ControlError, ControlPlane};
use stratus_core::metrics;
use stratus_core::time::now_ms;
use stratus_core::token::{self, Action, Role, Scope, TokenHash};
use stratus_runtime::Runtime;
use stratus_store::{EventFilter, Store};

/// Facts about this installation that the control plane does not know.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    pub version: String,
    pub data_dir: String,
    pub api: String,
    pub sql_listen: String,
}

/// Renders the data plane's metrics (the proxy's) in Prometheus text format.
pub type MetricsSource = Arc<dyn Fn() -> String + Send + Sync>;

struct AppState<S: Store, R: Runtime> {
    cp: Arc<ControlPlane<S, R>>,
    info: ServerInfo,
    metrics: MetricsSource,
    access: Access,
}

type Shared<S, R> = State<Arc<AppState<S, R>>>;

/// An error as the API reports it.
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
}

impl From<crate::auth::Refusal> for ApiError {
    fn from((status, code, message): crate::auth::Refusal) -> Self {
        Self::new(status, code, message)
    }
}

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> Self {
        let status = match e {
            ControlError::Invalid(_) => StatusCode::BAD_REQUEST,
            ControlError::NotFound(_) => StatusCode::NOT_FOUND,
            ControlError::AlreadyExists(_) | ControlError::WrongState(_) => StatusCode::CONFLICT,
            ControlError::Runtime(_) | ControlError::NoCapacity(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ControlError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self::new(status, e.code(), e.to_string())
    }
}

impl From<JsonRejection> for ApiError {
    fn from(e: JsonRejection) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_argument",
            format!("bad request body: {}", e.body_text()),
        )
    }
}

impl From<stratus_store::StoreError> for ApiError {
    fn from(e: stratus_store::StoreError) -> Self {
        ControlError::from(e).into()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: self.message,
            },
        };
        (self.status, Json(body)).into_response()
    }
}

type ApiResult<T> = Result<T, ApiError>;

pub fn router<S: Store, R: Runtime>(
    cp: Arc<ControlPlane<S, R>>,
    info: ServerInfo,
    metrics: MetricsSource,
    access: Access,
) -> Router {
    let state = Arc::new(AppState {
        cp,
        info,
        metrics,
        access,
    });
    let console = |req: Request| async move {
        crate::console::file(req.uri().path()).unwrap_or_else(|| {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such file").into_response()
        })
    };
    Router::new()
        .route("/", get(console))
        .route("/console/{file}", get(console))
        .route("/metrics", get(metrics_text::<S, R>))
        .route("/v1/status", get(status::<S, R>))
        .route("/v1/databases", get(list::<S, R>).post(create::<S, R>))
        .route(
            "/v1/databases/{name}",
            get(show::<S, R>).delete(delete::<S, R>),
        )
        .route("/v1/databases/{name}/scale", post(scale::<S, R>))
        .route("/v1/databases/{name}/park", post(park::<S, R>))
        .route("/v1/databases/{name}/suspend", post(suspend::<S, R>))
        .route("/v1/databases/{name}/resume", post(resume::<S, R>))
        .route(
            "/v1/databases/{name}/backups",
            get(backups::<S, R>).post(create_backup::<S, R>),
        )
        .route("/v1/databases/{name}/restore", post(restore::<S, R>))
        .route("/v1/databases/{name}/branch", post(branch::<S, R>))
        .route("/v1/databases/{name}/migrate", post(migrate::<S, R>))
        .route(
            "/v1/databases/{name}/backup-schedule",
            get(backup_schedule::<S, R>).put(set_backup_schedule::<S, R>),
        )
        .route(
            "/v1/backups/{id}",
            axum::routing::delete(delete_backup::<S, R>),
        )
        .route("/v1/backups/{id}/verify", post(verify_backup::<S, R>))
        .route(
            "/v1/databases/{name}/users",
            get(users::<S, R>).post(create_user::<S, R>),
        )
        .route(
            "/v1/databases/{name}/users/{user}",
            axum::routing::delete(delete_user::<S, R>),
        )
        .route("/v1/events", get(events::<S, R>))
        .route("/v1/usage", get(usage::<S, R>))
        .route("/v1/databases/{name}/history", get(history::<S, R>))
        .route("/v1/tokens", get(tokens::<S, R>).post(create_token::<S, R>))
        .route("/v1/keys/rotate", post(rotate_keys::<S, R>))
        .route("/v1/nodes", get(nodes::<S, R>))
        .route(
            "/v1/tokens/{id}",
            axum::routing::delete(delete_token::<S, R>),
        )
        .fallback(|| async {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such API route")
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed on this route",
            )
        })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            guard::<S, R>,
        ))
        .with_state(state)
}

/// Checks `Host`, then the bearer token, before any route runs; the route checks role and scope
/// with the [`Caller`] this leaves in the request.
async fn guard<S: Store, R: Runtime>(
    State(st): Shared<S, R>,
    mut req: Request,
    next: Next,
) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok());
    if !host.is_some_and(|h| host_allowed(&st.access.hosts, h)) {
        return ApiError::new(
            StatusCode::MISDIRECTED_REQUEST,
            "wrong_host",
            format!(
                "this API does not answer to the host name {:?}; add it to http.hosts if it names this server",
                host.unwrap_or("")
            ),
        )
        .into_response();
    }
    let metrics = req.uri().path() == "/metrics";
    if metrics && !st.access.metrics_auth {
        return next.run(req).await;
    }
    // The console's files hold no data; what the console shows, it asks with a token.
    if req.method() == axum::http::Method::GET && crate::console::is_console(req.uri().path()) {
        return next.run(req).await;
    }
    let caller = match authenticate(&st, req.headers()).await {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    if metrics && !caller.scope.is_all() {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "/metrics covers every database; this token's scope does not",
        )
        .into_response();
    }
    req.extensions_mut().insert(caller);
    next.run(req).await
}

/// The token of a request, checked against its stored hash.
async fn authenticate<S: Store, R: Runtime>(
    st: &AppState<S, R>,
    headers: &axum::http::HeaderMap,
) -> Result<Caller, Response> {
    let unauthorized = |message: &str| {
        let mut resp =
            ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message).into_response();
        resp.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        resp
    };
    let Some(presented) = headers
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(bearer)
    else {
        return Err(unauthorized(
            "this API needs a token: send Authorization: Bearer <token> (the CLI reads --token, STRATUS_TOKEN or <data dir>/admin.token)",
        ));
    };
    let invalid = "the token is not valid (unknown, deleted, or mistyped)";
    let Some(id) = token::token_id(presented) else {
        return Err(unauthorized(invalid));
    };
    let stored = match st.cp.store().token(id).await {
        Ok(t) => t,
        Err(e) => return Err(ApiError::from(e).into_response()),
    };
    match stored {
        Some(t) if TokenHash::of(presented).matches(&t.hash) => Ok(Caller {
            token_id: t.id,
            role: t.role,
            scope: t.scope,
        }),
        _ => Err(unauthorized(invalid)),
    }
}

async fn status<S: Store, R: Runtime>(
    State(st): Shared<S, R>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<StatusView>> {
    caller.check(Action::Read, None)?;
    let mut services = st.cp.store().services().await?;
    services.retain(|s| caller.sees(s.name().as_str()));
    let mut by_state = BTreeMap::new();
    for svc in &services {
        *by_state.entry(svc.state.to_string()).or_insert(0) += 1;
    }
    let rt = st.cp.runtime().info();
    Ok(Json(StatusView {
        version: st.info.version.clone(),
        uptime_seconds: st.cp.uptime().as_secs(),
        data_dir: st.info.data_dir.clone(),
        api: st.info.api.clone(),
        sql_listen: st.info.sql_listen.clone(),
        runtime: rt.kind.to_owned(),
        mariadb_version: rt.mariadb_version,
        resource_control: rt.resource_control,
        resource_control_note: rt.resource_control_note,
        databases: services.len(),
        databases_by_state: by_state,
        warm_pool: st.cp.pool_status(),
        encryption: rt.encryption,
        storage: rt.storage,
        storage_note: rt.storage_note,
    }))
}

/// One metric family with a sample per database (label `db`); databases without a value are
/// left out.
fn per_db(out: &mut String, name: &str, kind: &str, help: &str, rows: Vec<(&str, Option<String>)>) {
    use std::fmt::Write;
    metrics::header(out, name, kind, help);
    for (db, value) in rows {
        if let Some(v) = value {
            let _ = writeln!(out, "{name}{{db=\"{db}\"}} {v}");
        }
    }
}

async fn metrics_text<S: Store, R: Runtime>(State(st): Shared<S, R>) -> ApiResult<Response> {
    use std::fmt::Write;
    let mut out = String::new();
    let services = st.cp.store().services().await?;
    let each = |f: &dyn Fn(&stratus_core::DatabaseService) -> Option<String>| {
        services
            .iter()
            .map(|s| (s.name().as_str(), f(s)))
            .collect::<Vec<_>>()
    };
    per_db(
        &mut out,
        "stratus_database_scu",
        "gauge",
        "Current size in SCU.",
        each(&|s| Some(s.scu.to_string())),
    );
    per_db(
        &mut out,
        "stratus_database_min_scu",
        "gauge",
        "Smallest size the autoscaler may give, in SCU.",
        each(&|s| Some(s.spec.min_scu.to_string())),
    );
    per_db(
        &mut out,
        "stratus_database_max_scu",
        "gauge",
        "Largest size the autoscaler may give, in SCU.",
        each(&|s| Some(s.spec.max_scu.to_string())),
    );
    per_db(
        &mut out,
        "stratus_database_crashes_total",
        "counter",
        "Unexpected exits of the database's server since Stratus started.",
        each(&|s| Some(st.cp.crashes(s.name()).to_string())),
    );
    per_db(
        &mut out,
        "stratus_database_down",
        "gauge",
        "1 while the database's state wants a running server and none runs (crashed, failing to start).",
        each(&|s| Some(u8::from(st.cp.is_down(s.name())).to_string())),
    );
    metrics::header(
        &mut out,
        "stratus_database_state",
        "gauge",
        "1 for the state each database is in.",
    );
    for svc in &services {
        let _ = writeln!(
            out,
            "stratus_database_state{{db=\"{}\",state=\"{}\"}} 1",
            svc.name(),
            svc.state
        );
    }
    let measured: Vec<_> = services
        .iter()
        .map(|s| (s.name().as_str(), st.cp.measured(s.name())))
        .collect();
    let of_measured = |f: &dyn Fn(&stratus_control::monitor::Measured) -> Option<String>| {
        measured
            .iter()
            .map(|(name, m)| (*name, m.as_ref().and_then(f)))
            .collect::<Vec<_>>()
    };
    per_db(
        &mut out,
        "stratus_database_cpu_millicores",
        "gauge",
        "CPU use over the last second.",
        of_measured(&|m| m.cpu_millis.map(|c| format!("{c:.1}"))),
    );
    per_db(
        &mut out,
        "stratus_database_memory_bytes",
        "gauge",
        "Memory in use.",
        of_measured(&|m| Some(m.memory_bytes.to_string())),
    );
    per_db(
        &mut out,
        "stratus_database_buffer_pool_hit_ratio",
        "gauge",
        "InnoDB buffer-pool hit ratio between the last two samples.",
        of_measured(&|m| m.buffer_pool_hit_ratio.map(|r| format!("{r:.4}"))),
    );
    let storage: Vec<_> = services
        .iter()
        .map(|s| (s.name().as_str(), st.cp.runtime().storage(s.name())))
        .collect();
    per_db(
        &mut out,
        "stratus_database_storage_used_bytes",
        "gauge",
        "Bytes in use on the database's volume.",
        storage
            .iter()
            .map(|(n, u)| (*n, u.map(|u| u.used_bytes.to_string())))
            .collect(),
    );
    per_db(
        &mut out,
        "stratus_database_storage_limit_bytes",
        "gauge",
        "Size of the database's volume (it grows up to its storage_gb).",
        storage
            .iter()
            .map(|(n, u)| (*n, u.map(|u| u.limit_bytes.to_string())))
            .collect(),
    );
    per_db(
        &mut out,
        "stratus_database_storage_max_bytes",
        "gauge",
        "The database's storage limit (storage_gb): its volume grows up to this.",
        each(&|s| Some(stratus_control::storage::max_bytes(s.spec.storage_gb).to_string())),
    );
    let pool = st.cp.pool_status();
    metrics::header(
        &mut out,
        "stratus_warm_pool_ready",
        "gauge",
        "Spare servers ready for new databases.",
    );
    let _ = writeln!(out, "stratus_warm_pool_ready {}", pool.ready);
    metrics::header(
        &mut out,
        "stratus_warm_pool_presized",
        "gauge",
        "Ready spares whose buffer pool is already a new database's.",
    );
    let _ = writeln!(out, "stratus_warm_pool_presized {}", pool.presized);
    metrics::header(
        &mut out,
        "stratus_warm_pool_target",
        "gauge",
        "Spare servers the pool aims for.",
    );
    let _ = writeln!(out, "stratus_warm_pool_target {}", pool.target);
    out.push_str(&(st.metrics)());
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        out,
    )
        .into_response())
}

async fn list<S: Store, R: Runtime>(
    State(st): Shared<S, R>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<Vec<DatabaseView>>> {
    caller.check(Action::Read, None)?;
    let mut all = st.cp.list().await?;
    all.retain(|d| caller.sees(&d.name));
    Ok(Json(all))
}

async fn create<S: Store, R: Runtime>(
    State(st): Shared<S, R>,
    Extension(caller): Extension<Caller>,
    body: Result<Json<CreateRequest>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<CreatedDatabase>)> {
    let Json(req) = body?;
    caller.check(Action::Write, Some(&req.name))?;
    Ok((StatusCode::CREATED, Json(st.cp.create(req).await?)))
}

async fn show<S: Store, R: Runtime>(
    State(st): Shared<S, R>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> ApiResult<Json<DatabaseView>> {
    caller.check(Action::Read, Some(&name))?;
    Ok(Json(st.cp.show(&name).await?))
}

async fn delete<S: Store, R: Runtime>(
    State(st): Shared<S, R>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    caller.check(Action::Write, Some(&name))?;
    st.cp.delete(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn scale<S: Store, R: Runtime>(
    State(st): Shared<S, R>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    body: Result<Json<ScaleRequest>, JsonRejection>,
) -> ApiResult<Json<DatabaseView>> {
    caller.check(Action::Write, Some(&name))?;
    let Json(req) = body?;
    Ok(Json(st.cp.scale(&name, req.scu).await?))
}

async fn suspend<S: Store, R: Runtime>(
    State(st): Shared<S, R>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<Json<DatabaseView>> {
    caller.check(Action::Write, Some(&name))?;
    let req = force_body(&body)?;
    Ok(Json(st.cp.suspend(&name, req.force, "by request").await?))
}

/// The optional `{"force": bool}` body of park and suspend.
fn force_body(body: &[u8]) -> ApiResult<ParkRequest> {
    if body.is_empty() {
        return Ok(ParkRequest::default());
    }
    serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_argument",
            format!("bad request body: {e}"),
        )
    })
}

async fn park<S: Store, R: Runtime>(
    State(st): Shared<S, R>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<Json<DatabaseView>> {
    caller.check(Action::Write, Some(&name))?;
    let req = force_body(&body)?;
    Ok(Json(st.cp.park(&name, req.force).await?))
}

async fn resume<S: Store, R: Runtime>(
    State(st): Shared<S, R>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> ApiResult<Json<DatabaseView>> {
    caller.check(Action::Write, Some(&name))?;
    Ok(Json(st.cp.resume(&name).await?))
}

async fn backups<S: Store, R: Runtime>(
    State(st): Shared<S, R>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> ApiResult<Json<Vec<BackupView>>> {
    caller.check(Action::Read, Some(&name))?;
    Ok(Json(st.cp.backups(Some(&name))?))
}

async fn create_backup<S: Store, R: Runtime>(
    State(st): Shared<S, R>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<(StatusCode, Json<BackupView>)> {
    caller.check(Action::Write, Some(&name))?;
    // No body is a full backup, as before there were incremental ones.
    let req: BackupRequest = if body.iter().all(u8::is_ascii_whitespace) {
        BackupRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::from(ControlError::Invalid(format!("bad backup request: {e}")))
        })?
    };
    Ok((
        StatusCode::CREATED,
        Json(st.cp.take_backup(&name, req).await?),
    ))
}

async fn backup_schedule<S: Store, R: Runtime>(
    State(st): Shared<S, R>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> ApiResult<Json<BackupSchedule>> {
    caller.check(Action::Read, Some(&name))?;
    Ok(Json(st.cp.backup_schedule(&name).await?))
}

async fn set_backup_schedule<S: Store, R: Runtime>(
    State(st): Shared<S, R>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    body: Result<Json<BackupSchedule>, JsonRejection>,
) -> ApiResult<Json<BackupSchedule>> {
    caller.check(Action::Write, Some(&name))?;
    let Json(schedule) = body?;
    Ok(Json(st.cp.set_backup_schedule(&name, schedule).await?))
}

/// Restoring reads the source's data into the new database: the token must be able to change
/// both.
async fn restore<S: Store, R: Runtime>(
    State(st): Shared<S, R>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    body: Result<Json<RestoreRequest>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<DatabaseView>)> {
    let Json(req) = body?;
    caller.check(Action::Write, Some(&name))?;
    caller.check(Action::Write, Some(&req.to))?;
    Ok((StatusCode::CREATED, Json(st.cp.restore(&name, req).await?)))
}

async fn verify_backup<S: Store, R: Runtime>(
    State(st): Shared<S, R>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<BackupView>> {
    let db = ControlPlane::<S, R>::backup_database(&id).ok_or_else(|| {
        ApiError::from(ControlError::Invalid(format!("{id:?} is not a backup id")))
    })?;
    caller.check(Action::Read, Some(db.as_str()))?;
    Ok(Json(st.cp.verify_backup(&id).await?))
}

/// A branch holds the source's data: the token must be able to change both.
async fn branch<S: Store, R: Runtime>(
    State(st): Shared<S, R>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    body: Result<Json<BranchRequest>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<DatabaseView>)> {
    let Json(req) = body?;
    caller.check(Action::Write, Some(&name))?;
    caller.check(Action::Write, Some(&req.to))?;
    Ok((StatusCode::CREATED, Json(st.cp.branch(&name, req).await?)))
}

/// Moving a database is the host's business: it takes a token for all databases.
async fn migrate<S: Store, R: Runtime>(
    State(st): Shared<S, R>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    body: Result<Json<stratus_control::migrate::MigrateRequest>, JsonRejection>,
) -> ApiResult<Json<stratus_control::migrate::MigrationReport>> {
    let Json(req) = body?;
    caller.check(Action::Write, Some(&name))?;
    if !caller.scope.is_all() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "moving a database between nodes takes a token for all databases",
        ));
    }
    // A move runs to its end even if the client goes away: cut short between the promotion and
    // the old server's stop, it would leave two servers taking commits.
    let cp = st.cp.clone();
    let moved = tokio::spawn(async move { cp.migrate(&name, req.to.as_deref()).await })
        .await
        .map_err(|e| ControlError::Internal(format!("the move's task: {e}")))?;
    Ok(Json(moved?))
}

async fn delete_backup<S: Store, R: Runtime>(
    State(st): Shared<S, R>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let db = ControlPlane::<S, R>::backup_database(&id).ok_or_else(|| {
        ApiError::from(ControlError::Invalid(format!("{id:?} is not a backup id")))
    })?;
    caller.check(Action::Write, Some(db.as_str()))?;
    st.cp.delete_backup(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn users<S: Store, R: Runtime>(
    State(st): Shared<S, R>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> ApiResult<Json<Vec<UserView>>> {
    caller.check(Action::Read, Some(&name))?;
    Ok(Json(st.cp.users(&name).await?))
}

async fn create_user<S: Store, R: Runtime>(
    State(st): Shared<S, R>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    body: Result<Json<CreateUserRequest>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<CreatedUser>)> {
    caller.check(Action::Write, Some(&name))?;
    let Json(req) = body?;
    Ok((
        StatusCode::CREATED,
        Json(st.cp.create_user(&name, &req.name, req.password).await?),
    ))
}

async fn delete_user<S: Store, R: Runtime>(
    State(st): Shared<S, R>,
    Extension(caller): Extension<Caller>,
    Path((name, user)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    caller.check(Action::Write, Some(&name))?;
    st.cp.delete_user(&name, &user).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A query string as the route's type, or the client's error for one that is not.
fn query_of<T>(query: Result<Query<T>, axum::extract::rejection::QueryRejection>) -> ApiResult<T> {
    query.map(|Query(q)| q).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_argument",
            format!("bad query: {}", e.body_text()),
        )
    })
}

#[derive(Debug, Deserialize)]
struct EventsQuery {
    db: Option<String>,
    after: Option<i64>,
    limit: Option<usize>,
}

async fn events<S: Store, R: Runtime>(
    State(st): Shared<S, R>,
    Extension(caller): Extension<Caller>,
    query: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Vec<EventView>>> {
    let q = query_of(query)?;
    caller.check(Action::Read, q.db.as_deref())?;
    let filter = EventFilter {
        db: q.db,
        after_id: q.after,
        limit: Some(q.limit.unwrap_or(100).min(10_000)),
        scope: (!caller.scope.is_all()).then(|| caller.scope.entries().to_vec()),
    };
    let events = st.cp.store().events(&filter).await?;
    Ok(Json(events.into_iter().map(EventView::from).collect()))
}

/// The last hour of a database's samples (`stratus_control::history`), oldest first.
async fn history<S: Store, R: Runtime>(
    State(st): Shared<S, R>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    caller.check(Action::Read, Some(&name))?;
    let view = st.cp.show(&name).await?;
    let db = stratus_core::ServiceName::parse(&view.name)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_argument", e.to_string()))?;
    Ok(Json(serde_json::json!({
        "db": view.name,
        "interval_ms": stratus_control::history::INTERVAL.as_millis() as u64,
        "samples": st.cp.history(&db),
    })))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct UsageQuery {
    db: Option<String>,
    /// Milliseconds since the Unix epoch; the databases' whole lives when left out.
    since_ms: Option<i64>,
}

/// What each database used (`stratus_core::usage`), deleted ones included.
async fn usage<S: Store, R: Runtime>(
    State(st): Shared<S, R>,
    Extension(caller): Extension<Caller>,
    query: Result<Query<UsageQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Vec<stratus_core::usage::Usage>>> {
    let q = query_of(query)?;
    caller.check(Action::Read, q.db.as_deref())?;
    let db = q
        .db
        .as_deref()
        .map(stratus_core::ServiceName::parse)
        .transpose()
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_argument", e.to_string()))?;
    let now = stratus_core::time::now_ms();
    let since = q.since_ms.unwrap_or(0);
    let intervals = st
        .cp
        .store()
        .usage_intervals(db.as_ref(), since, now)
        .await?;
    let mut by_db: std::collections::BTreeMap<String, Vec<stratus_core::usage::Interval>> =
        std::collections::BTreeMap::new();
    for (name, i) in intervals {
        if caller.sees(&name) {
            by_db.entry(name).or_default().push(i);
        }
    }
    Ok(Json(
        by_db
            .iter()
            .map(|(name, life)| stratus_core::usage::total(name, life, since, now))
            .collect(),
    ))
}

/// The host's nodes name every tenant's databases: only a token for all databases sees them.
async fn nodes<S: Store, R: Runtime>(
    State(st): Shared<S, R>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<Vec<stratus_control::nodes::NodeView>>> {
    caller.check(Action::Read, None)?;
    if !caller.scope.is_all() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "nodes are shown only to a token for all databases",
        ));
    }
    Ok(Json(st.cp.nodes_view().await?))
}

async fn rotate_keys<S: Store, R: Runtime>(
    State(st): Shared<S, R>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<KeyRotation>> {
    caller.check(Action::ManageKeys, None)?;
    let wrapped = st.cp.rotate_master_key().await?;
    Ok(Json(KeyRotation {
        wrapped,
        encryption: st.cp.runtime().info().encryption,
    }))
}

async fn tokens<S: Store, R: Runtime>(
    State(st): Shared<S, R>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<Vec<TokenView>>> {
    caller.check(Action::ManageTokens, None)?;
    let all = st.cp.store().tokens().await?;
    Ok(Json(all.iter().map(TokenView::from).collect()))
}

async fn create_token<S: Store, R: Runtime>(
    State(st): Shared<S, R>,
    Extension(caller): Extension<Caller>,
    body: Result<Json<CreateTokenRequest>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<CreatedToken>)> {
    caller.check(Action::ManageTokens, None)?;
    let Json(req) = body?;
    let invalid = |m: String| ApiError::new(StatusCode::BAD_REQUEST, "invalid_argument", m);
    let role = Role::parse(&req.role).ok_or_else(|| {
        invalid(format!(
            "unknown role {:?}: use admin, developer or viewer",
            req.role
        ))
    })?;
    if role == Role::Admin && !req.databases.is_empty() {
        return Err(invalid(
            "admin tokens cover every database; leave out the databases".into(),
        ));
    }
    let scope = Scope::parse(&req.databases).map_err(|e| invalid(e.to_string()))?;
    let name = req.name.unwrap_or_default();
    if name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(invalid(
            "a token's name is at most 100 printable characters".into(),
        ));
    }
    let made = token::generate(&name, role, scope, now_ms());
    st.cp.store().create_token(&made.record).await?;
    tracing::info!(id = %made.record.id, role = %role, by = %caller.token_id, "API token created");
    Ok((
        StatusCode::CREATED,
        Json(CreatedToken {
            token: TokenView::from(&made.record),
            secret: made.secret,
        }),
    ))
}

async fn delete_token<S: Store, R: Runtime>(
    State(st): Shared<S, R>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    caller.check(Action::ManageTokens, None)?;
    let all = st.cp.store().tokens().await?;
    let Some(target) = all.iter().find(|t| t.id == id) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("token {id} not found"),
        ));
    };
    // Without an admin token nobody could manage tokens again short of a restart.
    if target.role == Role::Admin && all.iter().filter(|t| t.role == Role::Admin).count() == 1 {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "failed_precondition",
            "this is the last admin token; create another admin token first",
        ));
    }
    st.cp.store().delete_token(&id).await?;
    tracing::info!(id = %id, by = %caller.token_id, "API token deleted");
    Ok(StatusCode::NO_CONTENT)
}
