//! The embedded catalog: one SQLite file in WAL mode under the data directory.
//!
//! Statements are tiny and local, so they run inline under a mutex rather than on a blocking
//! pool. WAL makes every committed transaction survive a `kill -9` of `stratus up`
//! (<https://www.sqlite.org/wal.html>). The schema version lives in `PRAGMA user_version`;
//! [`MIGRATIONS`] only ever grows.

use crate::{EventFilter, Result, Store, StoreError};
use rusqlite::{Connection, OptionalExtension, Row, params};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use stratus_core::time::now_ms;
use stratus_core::token::{Role, Scope, TokenHash};
use stratus_core::usage::Interval;
use stratus_core::{
    ApiToken, BackupSchedule, DatabaseService, DbState, Event, EventKind, NativeHash,
    ScalingPolicy, ServiceName, ServiceSpec, Tier, User, UserName,
};

/// Schema migrations, in order; entry `i` takes the catalog from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE services (
    name              TEXT PRIMARY KEY,
    tier              TEXT    NOT NULL,
    min_scu           INTEGER NOT NULL,
    max_scu           INTEGER NOT NULL,
    storage_gb        INTEGER NOT NULL,
    state             TEXT    NOT NULL,
    scu               INTEGER NOT NULL,
    buffer_pool_bytes INTEGER NOT NULL,
    port              INTEGER NOT NULL,
    admin_password    TEXT    NOT NULL,
    created_at_ms     INTEGER NOT NULL,
    updated_at_ms     INTEGER NOT NULL
);
CREATE TABLE users (
    service       TEXT    NOT NULL REFERENCES services(name) ON DELETE CASCADE,
    name          TEXT    NOT NULL,
    hash          TEXT    NOT NULL,
    owner         INTEGER NOT NULL,
    created_at_ms INTEGER NOT NULL,
    PRIMARY KEY (service, name)
);
CREATE TABLE scaling_policies (
    service TEXT PRIMARY KEY REFERENCES services(name) ON DELETE CASCADE,
    policy  TEXT NOT NULL
);
CREATE TABLE backup_schedules (
    service  TEXT PRIMARY KEY REFERENCES services(name) ON DELETE CASCADE,
    schedule TEXT NOT NULL
);
CREATE TABLE events (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    time_ms INTEGER NOT NULL,
    db      TEXT    NOT NULL,
    kind    TEXT    NOT NULL,
    message TEXT    NOT NULL,
    data    TEXT    NOT NULL
);
CREATE INDEX events_by_db ON events (db, id);
"#,
    r#"
ALTER TABLE services ADD COLUMN require_tls INTEGER NOT NULL DEFAULT 0;
"#,
    r#"
CREATE TABLE api_tokens (
    id            TEXT    PRIMARY KEY,
    name          TEXT    NOT NULL,
    role          TEXT    NOT NULL,
    scope         TEXT    NOT NULL,
    hash          TEXT    NOT NULL,
    created_at_ms INTEGER NOT NULL
);
"#,
    // Servers are now reached over a private socket as Stratus's own OS user: no port to keep
    // and no password to store. Old passwords are overwritten before their column goes
    // (`secure_delete` zeroes the freed pages).
    r#"
UPDATE services SET admin_password = '';
ALTER TABLE services DROP COLUMN admin_password;
ALTER TABLE services DROP COLUMN port;
"#,
    r#"
ALTER TABLE services ADD COLUMN default_schema TEXT;
"#,
    // The node a database is placed on (#12); NULL for databases made before nodes.
    r#"
ALTER TABLE services ADD COLUMN node TEXT;
"#,
    // When the database's binary log began, where a move gave it a new one (#12).
    r#"
ALTER TABLE services ADD COLUMN log_epoch_ms INTEGER;
"#,
    // Usage metering (#13): each database's open interval, and the closed ones (kept after the
    // database is deleted). Databases made before it are metered from the migration on.
    r#"
CREATE TABLE usage_open (
    service TEXT PRIMARY KEY,
    since_ms INTEGER NOT NULL,
    state TEXT NOT NULL,
    scu INTEGER NOT NULL,
    storage_bytes INTEGER NOT NULL DEFAULT 0,
    stopped INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE usage_intervals (
    service TEXT NOT NULL,
    from_ms INTEGER NOT NULL,
    to_ms INTEGER NOT NULL,
    state TEXT NOT NULL,
    scu INTEGER NOT NULL,
    storage_bytes INTEGER NOT NULL,
    stopped INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX usage_intervals_by_service ON usage_intervals (service, to_ms);
INSERT INTO usage_open (service, since_ms, state, scu)
    SELECT name, CAST(strftime('%s', 'now') AS INTEGER) * 1000, state, scu FROM services;
"#,
    // What a database's buffer pool held when it was last emptied or parked, for its next wake
    // (`hydration`), kept across restarts of Stratus.
    r#"
CREATE TABLE hot_indexes (
    service TEXT PRIMARY KEY REFERENCES services(name) ON DELETE CASCADE,
    list    TEXT NOT NULL
);
"#,
];

pub struct SqliteStore {
    conn: Mutex<Connection>,
}

impl SqliteStore {
    /// Opens (creating if needed) the catalog at `path` and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Self> {
        let conn = Connection::open(path)?;
        Self::init(conn, &path.display().to_string())
    }

    /// A private in-memory catalog, for tests of code built on [`Store`].
    pub fn in_memory() -> Result<Self> {
        Self::init(Connection::open_in_memory()?, ":memory:")
    }

    fn init(mut conn: Connection, path: &str) -> Result<Self> {
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // Deleted rows (token hashes, old secrets) are zeroed on disk, not merely unlinked.
        conn.pragma_update(None, "secure_delete", "ON")?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        let known = MIGRATIONS.len() as i64;
        if version > known {
            return Err(StoreError::TooNew {
                path: path.to_owned(),
                found: version,
                known,
            });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", i as i64 + 1)?;
            tx.commit()?;
        }
        if version < known && path != ":memory:" {
            // Old page images of migrated rows must not linger in the write-ahead log.
            conn.pragma_update(None, "wal_checkpoint", "TRUNCATE")?;
        }
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    pub fn schema_version(&self) -> Result<i64> {
        Ok(self
            .lock()
            .pragma_query_value(None, "user_version", |r| r.get(0))?)
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent (transactions roll
        // back on drop), so a poisoned lock is still safe to use.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A per-service object kept as a JSON document: its table, column and name in messages. JSON
/// lets a policy gain fields without a migration (missing ones take their defaults).
struct Document {
    table: &'static str,
    column: &'static str,
    what: &'static str,
}

const POLICY: Document = Document {
    table: "scaling_policies",
    column: "policy",
    what: "scaling policy",
};
const SCHEDULE: Document = Document {
    table: "backup_schedules",
    column: "schedule",
    what: "backup schedule",
};

impl SqliteStore {
    fn get_document<T: serde::de::DeserializeOwned>(
        &self,
        doc: Document,
        service: &ServiceName,
    ) -> Result<T> {
        let json: Option<String> = self
            .lock()
            .query_row(
                &format!(
                    "SELECT {} FROM {} WHERE service = ?1",
                    doc.column, doc.table
                ),
                params![service.as_str()],
                |r| r.get(0),
            )
            .optional()?;
        let json =
            json.ok_or_else(|| StoreError::NotFound(format!("{} of {service}", doc.what)))?;
        serde_json::from_str(&json).map_err(|e| corrupt(doc.what, e))
    }

    fn set_document<T: serde::Serialize>(
        &self,
        doc: Document,
        service: &ServiceName,
        value: &T,
    ) -> Result<()> {
        let json = serde_json::to_string(value).map_err(|e| corrupt(doc.what, e))?;
        let n = self.lock().execute(
            &format!(
                "UPDATE {} SET {} = ?2 WHERE service = ?1",
                doc.table, doc.column
            ),
            params![service.as_str(), json],
        )?;
        if n == 0 {
            return Err(StoreError::NotFound(format!("database {service}")));
        }
        Ok(())
    }
}

const SERVICE_COLUMNS: &str = "name, tier, min_scu, max_scu, storage_gb, state, scu, buffer_pool_bytes, \
     created_at_ms, updated_at_ms, require_tls, default_schema, node, log_epoch_ms";

fn corrupt(what: &'static str, detail: impl ToString) -> StoreError {
    StoreError::Corrupt {
        what,
        detail: detail.to_string(),
    }
}

fn service_from_row(row: &Row<'_>) -> rusqlite::Result<Result<DatabaseService>> {
    let name: String = row.get(0)?;
    let tier: String = row.get(1)?;
    let state: String = row.get(5)?;
    let (min_scu, max_scu, storage_gb, scu): (u32, u32, u32, u32) =
        (row.get(2)?, row.get(3)?, row.get(4)?, row.get(6)?);
    let (buffer_pool_bytes, created_at_ms, updated_at_ms): (i64, i64, i64) =
        (row.get(7)?, row.get(8)?, row.get(9)?);
    let require_tls: bool = row.get(10)?;
    let default_schema: Option<String> = row.get(11)?;
    let node: Option<String> = row.get(12)?;
    let log_epoch_ms: Option<i64> = row.get(13)?;
    Ok((|| {
        let name = ServiceName::parse(&name).map_err(|e| corrupt("service name", e))?;
        let tier: Tier = tier.parse().map_err(|e| corrupt("tier", e))?;
        let state = DbState::parse(&state).ok_or_else(|| corrupt("state", &state))?;
        Ok(DatabaseService {
            spec: ServiceSpec {
                name,
                tier,
                min_scu,
                max_scu,
                storage_gb,
            },
            state,
            scu,
            buffer_pool_bytes: buffer_pool_bytes.max(0) as u64,
            require_tls,
            default_schema,
            node,
            log_epoch_ms,
            created_at_ms,
            updated_at_ms,
        })
    })())
}

fn user_from_row(row: &Row<'_>) -> rusqlite::Result<Result<User>> {
    let (service, name, hash, owner, created_at_ms): (String, String, String, bool, i64) = (
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
    );
    Ok((|| {
        Ok(User {
            service: ServiceName::parse(&service).map_err(|e| corrupt("user's service", e))?,
            name: UserName::parse(&name).map_err(|e| corrupt("user name", e))?,
            hash: NativeHash::parse(&hash)
                .ok_or_else(|| corrupt("password hash", "not *<40 hex>"))?,
            owner,
            created_at_ms,
        })
    })())
}

fn event_from_row(row: &Row<'_>) -> rusqlite::Result<Result<Event>> {
    let (id, time_ms, db, kind, message, data): (i64, i64, String, String, String, String) = (
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
    );
    Ok((|| {
        Ok(Event {
            id,
            time_ms,
            db,
            kind: EventKind::parse(&kind).ok_or_else(|| corrupt("event kind", &kind))?,
            message,
            data: serde_json::from_str(&data).map_err(|e| corrupt("event data", e))?,
        })
    })())
}

/// At most one new usage interval a minute is started by storage changes alone.
const STORAGE_INTERVAL_MS: i64 = 60_000;

/// A database's open usage interval.
struct Open {
    since_ms: i64,
    state: String,
    scu: u32,
    storage_bytes: i64,
    stopped: bool,
}

fn open_interval(conn: &Connection, service: &str) -> Result<Option<Open>> {
    Ok(conn
        .query_row(
            "SELECT since_ms, state, scu, storage_bytes, stopped FROM usage_open WHERE service = ?1",
            params![service],
            |r| {
                Ok(Open {
                    since_ms: r.get(0)?,
                    state: r.get(1)?,
                    scu: r.get(2)?,
                    storage_bytes: r.get(3)?,
                    stopped: r.get(4)?,
                })
            },
        )
        .optional()?)
}

/// Closes a database's open usage interval now, if it has one, and forgets it.
fn close_open(tx: &rusqlite::Transaction<'_>, service: &str) -> Result<()> {
    tx.execute(
        "INSERT INTO usage_intervals (service, from_ms, to_ms, state, scu, storage_bytes, stopped) \
         SELECT service, since_ms, ?2, state, scu, storage_bytes, stopped FROM usage_open WHERE service = ?1",
        params![service, now_ms()],
    )?;
    tx.execute(
        "DELETE FROM usage_open WHERE service = ?1",
        params![service],
    )?;
    Ok(())
}

/// Closes a database's open usage interval now and opens the next with `state`, `scu`,
/// `storage_bytes` and `stopped`.
fn turn_interval(
    tx: &rusqlite::Transaction<'_>,
    service: &str,
    state: &str,
    scu: u32,
    storage_bytes: i64,
    stopped: bool,
) -> Result<()> {
    let now = now_ms();
    tx.execute(
        "INSERT INTO usage_intervals (service, from_ms, to_ms, state, scu, storage_bytes, stopped) \
         SELECT service, since_ms, ?2, state, scu, storage_bytes, stopped FROM usage_open WHERE service = ?1",
        params![service, now],
    )?;
    tx.execute(
        "UPDATE usage_open SET since_ms = ?2, state = ?3, scu = ?4, storage_bytes = ?5, stopped = ?6 \
         WHERE service = ?1",
        params![service, now, state, scu, storage_bytes, stopped],
    )?;
    Ok(())
}

fn insert_event(
    conn: &Connection,
    db: &str,
    kind: EventKind,
    message: &str,
    data: serde_json::Value,
) -> Result<Event> {
    let time_ms = now_ms();
    conn.execute(
        "INSERT INTO events (time_ms, db, kind, message, data) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![time_ms, db, kind.as_str(), message, data.to_string()],
    )?;
    Ok(Event {
        id: conn.last_insert_rowid(),
        time_ms,
        db: db.to_owned(),
        kind,
        message: message.to_owned(),
        data,
    })
}

fn is_constraint(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation)
}

impl Store for SqliteStore {
    async fn create_service(
        &self,
        svc: &DatabaseService,
        owner: &User,
        message: &str,
    ) -> Result<Event> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let spec = &svc.spec;
        tx.execute(
            &format!("INSERT INTO services ({SERVICE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"),
            params![
                spec.name.as_str(),
                spec.tier.as_str(),
                spec.min_scu,
                spec.max_scu,
                spec.storage_gb,
                svc.state.as_str(),
                svc.scu,
                svc.buffer_pool_bytes as i64,
                svc.created_at_ms,
                svc.updated_at_ms,
                svc.require_tls,
                svc.default_schema,
                svc.node,
                svc.log_epoch_ms
            ],
        )
        .map_err(|e| if is_constraint(&e) { StoreError::AlreadyExists(format!("database {}", spec.name)) } else { e.into() })?;
        insert_user(&tx, owner)?;
        let policy =
            serde_json::to_string(&ScalingPolicy::default()).map_err(|e| corrupt("policy", e))?;
        tx.execute(
            "INSERT INTO scaling_policies (service, policy) VALUES (?1, ?2)",
            params![spec.name.as_str(), policy],
        )?;
        let schedule = serde_json::to_string(&BackupSchedule::default())
            .map_err(|e| corrupt("schedule", e))?;
        tx.execute(
            "INSERT INTO backup_schedules (service, schedule) VALUES (?1, ?2)",
            params![spec.name.as_str(), schedule],
        )?;
        let data = serde_json::json!({
            "tier": spec.tier, "min_scu": spec.min_scu, "max_scu": spec.max_scu, "scu": svc.scu,
            "owner": owner.name,
        });
        let event = insert_event(&tx, spec.name.as_str(), EventKind::Created, message, data)?;
        // A name used before starts a new life: its old intervals stay, closed (and one left open
        // by a deletion that did not finish is closed now, not dropped).
        close_open(&tx, spec.name.as_str())?;
        tx.execute(
            "INSERT INTO usage_open (service, since_ms, state, scu) VALUES (?1, ?2, ?3, ?4)",
            params![spec.name.as_str(), now_ms(), svc.state.as_str(), svc.scu],
        )?;
        tx.commit()?;
        Ok(event)
    }

    async fn service(&self, name: &ServiceName) -> Result<Option<DatabaseService>> {
        let conn = self.lock();
        let row = conn
            .query_row(
                &format!("SELECT {SERVICE_COLUMNS} FROM services WHERE name = ?1"),
                params![name.as_str()],
                service_from_row,
            )
            .optional()?;
        row.transpose()
    }

    async fn services(&self) -> Result<Vec<DatabaseService>> {
        let conn = self.lock();
        let mut stmt = conn.prepare(&format!(
            "SELECT {SERVICE_COLUMNS} FROM services ORDER BY name"
        ))?;
        let rows = stmt.query_map([], service_from_row)?;
        rows.map(|r| r?).collect()
    }

    async fn update_service(&self, svc: &DatabaseService) -> Result<()> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let spec = &svc.spec;
        let n = tx.execute(
            "UPDATE services SET tier = ?2, min_scu = ?3, max_scu = ?4, storage_gb = ?5, state = ?6, scu = ?7, \
             buffer_pool_bytes = ?8, updated_at_ms = ?9, require_tls = ?10, default_schema = ?11, \
             node = ?12, log_epoch_ms = ?13 WHERE name = ?1",
            params![
                spec.name.as_str(),
                spec.tier.as_str(),
                spec.min_scu,
                spec.max_scu,
                spec.storage_gb,
                svc.state.as_str(),
                svc.scu,
                svc.buffer_pool_bytes as i64,
                now_ms(),
                svc.require_tls,
                svc.default_schema,
                svc.node,
                svc.log_epoch_ms
            ],
        )?;
        if n == 0 {
            return Err(StoreError::NotFound(format!("database {}", spec.name)));
        }
        // A new state or size starts a new usage interval, in the same transaction.
        let open = open_interval(&tx, spec.name.as_str())?;
        let state = svc.state.as_str();
        match open {
            Some(o) if o.state == state && o.scu == svc.scu => {}
            Some(o) => {
                turn_interval(
                    &tx,
                    spec.name.as_str(),
                    state,
                    svc.scu,
                    o.storage_bytes,
                    o.stopped,
                )?;
            }
            None => {
                tx.execute(
                    "INSERT INTO usage_open (service, since_ms, state, scu) VALUES (?1, ?2, ?3, ?4)",
                    params![spec.name.as_str(), now_ms(), state, svc.scu],
                )?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    async fn delete_service(&self, name: &ServiceName) -> Result<()> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        if tx.execute(
            "DELETE FROM services WHERE name = ?1",
            params![name.as_str()],
        )? == 0
        {
            return Err(StoreError::NotFound(format!("database {name}")));
        }
        // The last interval closes; the closed ones stay for billing.
        close_open(&tx, name.as_str())?;
        tx.commit()?;
        Ok(())
    }

    async fn create_user(&self, user: &User) -> Result<()> {
        insert_user(&self.lock(), user)
    }

    async fn users(&self, service: &ServiceName) -> Result<Vec<User>> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT service, name, hash, owner, created_at_ms FROM users WHERE service = ?1 ORDER BY name",
        )?;
        let rows = stmt.query_map(params![service.as_str()], user_from_row)?;
        rows.map(|r| r?).collect()
    }

    async fn set_user_hash(
        &self,
        service: &ServiceName,
        user: &UserName,
        hash: &NativeHash,
    ) -> Result<()> {
        let n = self.lock().execute(
            "UPDATE users SET hash = ?3 WHERE service = ?1 AND name = ?2",
            params![service.as_str(), user.as_str(), hash.to_string()],
        )?;
        if n == 0 {
            return Err(StoreError::NotFound(format!(
                "user {user} of database {service}"
            )));
        }
        Ok(())
    }

    async fn delete_user(&self, service: &ServiceName, user: &UserName) -> Result<()> {
        let conn = self.lock();
        let n = conn.execute(
            "DELETE FROM users WHERE service = ?1 AND name = ?2",
            params![service.as_str(), user.as_str()],
        )?;
        if n == 0 {
            return Err(StoreError::NotFound(format!(
                "user {user} of database {service}"
            )));
        }
        Ok(())
    }

    async fn scaling_policy(&self, service: &ServiceName) -> Result<ScalingPolicy> {
        self.get_document(POLICY, service)
    }

    async fn set_scaling_policy(
        &self,
        service: &ServiceName,
        policy: &ScalingPolicy,
    ) -> Result<()> {
        self.set_document(POLICY, service, policy)
    }

    async fn backup_schedule(&self, service: &ServiceName) -> Result<BackupSchedule> {
        self.get_document(SCHEDULE, service)
    }

    async fn hot_indexes(&self, service: &ServiceName) -> Result<Option<String>> {
        Ok(self
            .lock()
            .query_row(
                "SELECT list FROM hot_indexes WHERE service = ?1",
                params![service.as_str()],
                |r| r.get(0),
            )
            .optional()?)
    }

    async fn set_hot_indexes(&self, service: &ServiceName, list: Option<&str>) -> Result<()> {
        let conn = self.lock();
        match list {
            // A database deleted meanwhile has nothing to keep (the reference refuses it).
            Some(list) => conn.execute(
                "INSERT INTO hot_indexes (service, list) SELECT name, ?2 FROM services \
                 WHERE name = ?1 ON CONFLICT (service) DO UPDATE SET list = excluded.list",
                params![service.as_str(), list],
            )?,
            None => conn.execute(
                "DELETE FROM hot_indexes WHERE service = ?1",
                params![service.as_str()],
            )?,
        };
        Ok(())
    }

    async fn set_backup_schedule(
        &self,
        service: &ServiceName,
        schedule: &BackupSchedule,
    ) -> Result<()> {
        self.set_document(SCHEDULE, service, schedule)
    }

    async fn record_event(
        &self,
        db: &str,
        kind: EventKind,
        message: &str,
        data: serde_json::Value,
    ) -> Result<Event> {
        insert_event(&self.lock(), db, kind, message, data)
    }

    async fn events(&self, filter: &EventFilter) -> Result<Vec<Event>> {
        let conn = self.lock();
        let limit = filter.limit.map_or(-1, |l| l as i64);
        // Scope entries are database names with at most a trailing `*`: GLOB patterns as
        // they are. An empty scope matches nothing.
        let scope_sql = match &filter.scope {
            None => String::new(),
            Some(entries) => {
                let ors: Vec<String> = (0..entries.len())
                    .map(|i| format!("db GLOB ?{}", i + 4))
                    .collect();
                if ors.is_empty() {
                    " AND 0".to_owned()
                } else {
                    format!(" AND ({})", ors.join(" OR "))
                }
            }
        };
        // The newest `limit` matching events, returned oldest first.
        let mut stmt = conn.prepare(&format!(
            "SELECT id, time_ms, db, kind, message, data FROM (
                 SELECT * FROM events WHERE (?1 IS NULL OR db = ?1) AND id > ?2{scope_sql} ORDER BY id DESC LIMIT ?3
             ) ORDER BY id"
        ))?;
        let mut values: Vec<rusqlite::types::Value> = vec![
            filter.db.clone().into(),
            filter.after_id.unwrap_or(0).into(),
            limit.into(),
        ];
        values.extend(filter.scope.iter().flatten().map(|e| e.clone().into()));
        let rows = stmt.query_map(rusqlite::params_from_iter(values), event_from_row)?;
        rows.map(|r| r?).collect()
    }

    async fn create_token(&self, token: &ApiToken) -> Result<()> {
        let scope = serde_json::to_string(&token.scope).map_err(|e| corrupt("token scope", e))?;
        self.lock()
            .execute(
                "INSERT INTO api_tokens (id, name, role, scope, hash, created_at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    token.id,
                    token.name,
                    token.role.as_str(),
                    scope,
                    token.hash.to_hex(),
                    token.created_at_ms
                ],
            )
            .map_err(|e| {
                if is_constraint(&e) {
                    StoreError::AlreadyExists(format!("token {}", token.id))
                } else {
                    e.into()
                }
            })?;
        Ok(())
    }

    async fn token(&self, id: &str) -> Result<Option<ApiToken>> {
        let conn = self.lock();
        let row = conn
            .query_row(
                &format!("SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE id = ?1"),
                params![id],
                token_from_row,
            )
            .optional()?;
        row.transpose()
    }

    async fn tokens(&self) -> Result<Vec<ApiToken>> {
        let conn = self.lock();
        let mut stmt = conn.prepare(&format!(
            "SELECT {TOKEN_COLUMNS} FROM api_tokens ORDER BY created_at_ms, id"
        ))?;
        let rows = stmt.query_map([], token_from_row)?;
        rows.map(|r| r?).collect()
    }

    async fn delete_token(&self, id: &str) -> Result<()> {
        if self
            .lock()
            .execute("DELETE FROM api_tokens WHERE id = ?1", params![id])?
            == 0
        {
            return Err(StoreError::NotFound(format!("token {id}")));
        }
        Ok(())
    }

    async fn usage_intervals(
        &self,
        service: Option<&ServiceName>,
        from_ms: i64,
        now_ms: i64,
    ) -> Result<Vec<(String, Interval)>> {
        let conn = self.lock();
        let name = service.map(ServiceName::as_str);
        let mut stmt = conn.prepare(
            "SELECT service, from_ms, to_ms, state, scu, storage_bytes, stopped FROM usage_intervals \
               WHERE (?1 IS NULL OR service = ?1) AND to_ms > ?2 \
             UNION ALL \
             SELECT service, since_ms, ?3, state, scu, storage_bytes, stopped FROM usage_open \
               WHERE (?1 IS NULL OR service = ?1) \
             ORDER BY 1, 2",
        )?;
        let rows = stmt.query_map(params![name, from_ms, now_ms], |r| {
            let state: String = r.get(3)?;
            let storage: i64 = r.get(5)?;
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
                state,
                r.get::<_, u32>(4)?,
                storage,
                r.get::<_, bool>(6)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (db, from_ms, to_ms, state, scu, storage, stopped) = row?;
            let state = DbState::parse(&state)
                .ok_or_else(|| corrupt("usage interval", format!("state {state:?}")))?;
            out.push((
                db,
                Interval {
                    from_ms,
                    to_ms,
                    state,
                    scu,
                    storage_bytes: u64::try_from(storage).unwrap_or(0),
                    stopped,
                },
            ));
        }
        Ok(out)
    }

    async fn record_storage(&self, service: &ServiceName, used_bytes: u64) -> Result<()> {
        // Called every second per database: read outside a transaction (the store's lock keeps
        // other writers out), and open one only to write.
        let mut conn = self.lock();
        let Some(o) = open_interval(&conn, service.as_str())? else {
            return Ok(());
        };
        if !stratus_core::usage::storage_changed(
            u64::try_from(o.storage_bytes).unwrap_or(0),
            used_bytes,
        ) {
            return Ok(());
        }
        let used = i64::try_from(used_bytes).unwrap_or(i64::MAX);
        let tx = conn.transaction()?;
        if now_ms() - o.since_ms >= STORAGE_INTERVAL_MS {
            turn_interval(&tx, service.as_str(), &o.state, o.scu, used, o.stopped)?;
        } else {
            // At most one interval a minute from storage alone (a use that swings back and forth
            // must not write a row a second): a younger interval takes the new figure whole.
            tx.execute(
                "UPDATE usage_open SET storage_bytes = ?2 WHERE service = ?1",
                params![service.as_str(), used],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    async fn usage_stopped(&self, service: &ServiceName, stopped: bool) -> Result<()> {
        let mut conn = self.lock();
        if let Some(o) = open_interval(&conn, service.as_str())?
            && o.stopped != stopped
        {
            let tx = conn.transaction()?;
            turn_interval(
                &tx,
                service.as_str(),
                &o.state,
                o.scu,
                o.storage_bytes,
                stopped,
            )?;
            tx.commit()?;
        }
        Ok(())
    }
}

const TOKEN_COLUMNS: &str = "id, name, role, scope, hash, created_at_ms";

fn token_from_row(row: &Row<'_>) -> rusqlite::Result<Result<ApiToken>> {
    let (id, name, role, scope, hash, created_at_ms): (
        String,
        String,
        String,
        String,
        String,
        i64,
    ) = (
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
    );
    Ok((|| {
        let entries: Vec<String> =
            serde_json::from_str(&scope).map_err(|e| corrupt("token scope", e))?;
        Ok(ApiToken {
            role: Role::parse(&role).ok_or_else(|| corrupt("token role", &role))?,
            scope: Scope::parse(&entries).map_err(|e| corrupt("token scope", e))?,
            hash: TokenHash::parse_hex(&hash)
                .ok_or_else(|| corrupt("token hash", "not 64 hex digits"))?,
            id,
            name,
            created_at_ms,
        })
    })())
}

fn insert_user(conn: &Connection, user: &User) -> Result<()> {
    conn.execute(
        "INSERT INTO users (service, name, hash, owner, created_at_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            user.service.as_str(),
            user.name.as_str(),
            user.hash.to_string(),
            user.owner,
            user.created_at_ms
        ],
    )
    .map_err(|e| {
        if is_constraint(&e) {
            StoreError::AlreadyExists(format!("user {} of database {}", user.name, user.service))
        } else {
            e.into()
        }
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(name: &str) -> DatabaseService {
        let spec = ServiceSpec::new(
            ServiceName::parse(name).unwrap(),
            Tier::Free,
            None,
            None,
            None,
        )
        .unwrap();
        DatabaseService {
            spec,
            state: DbState::Provisioning,
            scu: 1,
            buffer_pool_bytes: 1 << 30,
            require_tls: false,
            default_schema: None,
            node: None,
            log_epoch_ms: None,
            created_at_ms: 1,
            updated_at_ms: 1,
        }
    }

    fn owner(svc: &str, name: &str) -> User {
        User {
            service: ServiceName::parse(svc).unwrap(),
            name: UserName::parse(name).unwrap(),
            hash: NativeHash::of_password("secret"),
            owner: true,
            created_at_ms: 1,
        }
    }

    #[tokio::test]
    async fn services_users_and_events_round_trip() {
        let store = SqliteStore::in_memory().unwrap();
        let shop = service("shop");
        store
            .create_service(&shop, &owner("shop", "admin"), "created")
            .await
            .unwrap();
        assert!(matches!(
            store
                .create_service(&shop, &owner("shop", "admin"), "again")
                .await,
            Err(StoreError::AlreadyExists(_))
        ));
        let mut got = store.service(shop.name()).await.unwrap().unwrap();
        assert_eq!(got, shop);
        got.state = DbState::Active;
        got.scu = 2;
        store.update_service(&got).await.unwrap();
        assert_eq!(store.service(shop.name()).await.unwrap().unwrap().scu, 2);

        let app = User {
            owner: false,
            ..owner("shop", "app")
        };
        store.create_user(&app).await.unwrap();
        assert!(matches!(
            store.create_user(&app).await,
            Err(StoreError::AlreadyExists(_))
        ));
        assert_eq!(store.users(shop.name()).await.unwrap().len(), 2);
        assert_eq!(
            store.scaling_policy(shop.name()).await.unwrap(),
            ScalingPolicy::default()
        );

        store
            .record_event(
                "shop",
                EventKind::Parked,
                "parked",
                serde_json::json!({"x": 1}),
            )
            .await
            .unwrap();
        let events = store
            .events(&EventFilter {
                db: Some("shop".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(
            events.iter().map(|e| e.kind).collect::<Vec<_>>(),
            [EventKind::Created, EventKind::Parked]
        );
        let last = store
            .events(&EventFilter {
                limit: Some(1),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(last[0].kind, EventKind::Parked);

        store.delete_service(shop.name()).await.unwrap();
        assert!(store.service(shop.name()).await.unwrap().is_none());
        assert!(
            store.users(shop.name()).await.unwrap().is_empty(),
            "users cascade"
        );
        assert_eq!(
            store.events(&EventFilter::default()).await.unwrap().len(),
            2,
            "events stay"
        );
    }

    #[tokio::test]
    async fn a_hot_index_list_is_replaced_removed_and_goes_with_its_database() {
        let store = SqliteStore::in_memory().unwrap();
        let shop = service("shop");
        let name = shop.name();
        store
            .create_service(&shop, &owner("shop", "admin"), "created")
            .await
            .unwrap();
        assert_eq!(store.hot_indexes(name).await.unwrap(), None);
        store.set_hot_indexes(name, Some("[1]")).await.unwrap();
        store.set_hot_indexes(name, Some("[2]")).await.unwrap();
        assert_eq!(
            store.hot_indexes(name).await.unwrap().as_deref(),
            Some("[2]")
        );
        store.set_hot_indexes(name, None).await.unwrap();
        assert_eq!(store.hot_indexes(name).await.unwrap(), None);

        // Nothing is kept for a database the catalog does not hold.
        let gone = ServiceName::parse("gone").unwrap();
        store.set_hot_indexes(&gone, Some("[3]")).await.unwrap();
        assert_eq!(store.hot_indexes(&gone).await.unwrap(), None);
        store.set_hot_indexes(name, Some("[4]")).await.unwrap();
        store.delete_service(name).await.unwrap();
        assert_eq!(store.hot_indexes(name).await.unwrap(), None, "cascade");
    }

    #[tokio::test]
    async fn every_change_of_state_or_size_starts_a_usage_interval_in_its_transaction() {
        let store = SqliteStore::in_memory().unwrap();
        let mut shop = service("shop");
        let name = shop.spec.name.clone();
        store
            .create_service(&shop, &owner("shop", "admin"), "created")
            .await
            .unwrap();
        for (state, scu) in [
            (DbState::Active, 1),
            (DbState::Active, 1), // nothing metered changed: no new interval
            (DbState::Active, 2),
            (DbState::Suspended, 2),
            (DbState::Parked, 2),
        ] {
            shop.state = state;
            shop.scu = scu;
            store.update_service(&shop).await.unwrap();
        }
        store.record_storage(&name, 50 << 20).await.unwrap();
        store
            .record_storage(&name, (50 << 20) + 1000)
            .await
            .unwrap(); // a drift: ignored
        let far = now_ms() + 60_000;
        let got = store.usage_intervals(Some(&name), 0, far).await.unwrap();
        let seen: Vec<(DbState, u32, u64)> = got
            .iter()
            .map(|(_, i)| (i.state, i.scu, i.storage_bytes))
            .collect();
        assert_eq!(
            seen,
            [
                (DbState::Provisioning, 1, 0),
                (DbState::Active, 1, 0),
                (DbState::Active, 2, 0),
                (DbState::Suspended, 2, 0),
                // A storage change within a minute of the interval's start is taken by it whole.
                (DbState::Parked, 2, 50 << 20),
            ]
        );
        store.usage_stopped(&name, true).await.unwrap();
        store.usage_stopped(&name, true).await.unwrap(); // no change: no new interval
        let got = store.usage_intervals(Some(&name), 0, far).await.unwrap();
        assert_eq!(got.len(), 6);
        assert!(got[5].1.stopped && !got[4].1.stopped);
        let (_, open) = got.last().unwrap();
        assert_eq!(open.to_ms, far, "the open interval runs to now");
        assert!(
            got.windows(2).all(|w| w[0].1.to_ms == w[1].1.from_ms),
            "no gap, no overlap"
        );
        // Deleted, its intervals stay for billing; a new database of the same name starts anew.
        store.delete_service(&name).await.unwrap();
        let after = store.usage_intervals(None, 0, far + 1).await.unwrap();
        assert_eq!(after.len(), got.len());
        assert!(
            after.last().unwrap().1.to_ms < far,
            "closed at the deletion"
        );
        store
            .create_service(&service("shop"), &owner("shop", "admin"), "again")
            .await
            .unwrap();
        assert_eq!(
            store
                .usage_intervals(Some(&name), 0, far)
                .await
                .unwrap()
                .len(),
            got.len() + 1
        );
    }

    #[tokio::test]
    async fn survives_reopen_and_refuses_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.db");
        {
            let store = SqliteStore::open(&path).unwrap();
            store
                .create_service(&service("shop"), &owner("shop", "admin"), "c")
                .await
                .unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), MIGRATIONS.len() as i64);
        assert_eq!(store.services().await.unwrap().len(), 1);
        drop(store);
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 99)
            .unwrap();
        assert!(matches!(
            SqliteStore::open(&path),
            Err(StoreError::TooNew { found: 99, .. })
        ));
    }

    #[tokio::test]
    async fn tokens_round_trip_and_events_filter_by_scope() {
        use stratus_core::token;
        let store = SqliteStore::in_memory().unwrap();
        let scope = Scope::parse(&["shop".into(), "blog-*".into()]).unwrap();
        let t = token::generate("ci", Role::Developer, scope.clone(), 5);
        store.create_token(&t.record).await.unwrap();
        assert!(matches!(
            store.create_token(&t.record).await,
            Err(StoreError::AlreadyExists(_))
        ));
        let got = store.token(&t.record.id).await.unwrap().unwrap();
        assert_eq!(got, t.record);
        assert_eq!(store.tokens().await.unwrap(), vec![t.record.clone()]);
        store.delete_token(&t.record.id).await.unwrap();
        assert!(store.token(&t.record.id).await.unwrap().is_none());
        assert!(matches!(
            store.delete_token(&t.record.id).await,
            Err(StoreError::NotFound(_))
        ));

        for db in ["shop", "shop2", "blog-a", ""] {
            store
                .record_event(db, EventKind::Parked, "p", serde_json::json!({}))
                .await
                .unwrap();
        }
        let dbs = |scope: Option<Vec<String>>| {
            let store = &store;
            async move {
                store
                    .events(&EventFilter {
                        scope,
                        ..Default::default()
                    })
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|e| e.db)
                    .collect::<Vec<_>>()
            }
        };
        assert_eq!(
            dbs(Some(scope.entries().to_vec())).await,
            ["shop", "blog-a"]
        );
        assert_eq!(dbs(Some(vec![])).await, Vec::<String>::new());
        assert_eq!(dbs(None).await.len(), 4);
    }

    #[tokio::test]
    async fn corrupt_rows_are_errors_not_panics() {
        let store = SqliteStore::in_memory().unwrap();
        store
            .create_service(&service("shop"), &owner("shop", "admin"), "c")
            .await
            .unwrap();
        store
            .lock()
            .execute("UPDATE services SET state = 'bogus'", [])
            .unwrap();
        assert!(matches!(
            store.services().await,
            Err(StoreError::Corrupt { what: "state", .. })
        ));
    }
}
