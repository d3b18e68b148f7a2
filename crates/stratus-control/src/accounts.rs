//! A service's schema and accounts inside its server.
//!
//! Accounts are created from the stored `mysql_native_password` hash (`IDENTIFIED VIA
//! mysql_native_password USING '*…'`, <https://mariadb.com/kb/en/create-user/>), so a password
//! never appears in a statement the server could log. Privileges
//! (<https://mariadb.com/kb/en/grant/>):
//! * the **owner**, made with the service, gets every privilege on every schema with GRANT
//!   OPTION, as a database-level grant on the pattern `%`, plus the global privileges an RDS
//!   master user has that do not manage the server (`PROCESS`, `SHOW DATABASES`, `CREATE USER`,
//!   replication monitoring). Two exact-name grants take precedence over the pattern, because
//!   MariaDB uses the most specific matching database-level grant, not the union
//!   (<https://mariadb.com/kb/en/grant/#database-privileges>): `mysql` is read-only, so the
//!   tables that define accounts cannot be written (a `GRANT` re-reads its row, so a written row
//!   would take effect at once), and `stratus_meta` can be used but not dropped. No `FILE`,
//!   `SUPER`, `SET USER`, `RELOAD`, `SHUTDOWN`, binary-log or replica administration;
//! * **other users** get every privilege on the service's schema;
//! * every account may use the commit marker table ([`commit_marker`]), through which the proxy
//!   answers a `COMMIT` cut off by a crash truthfully.

use crate::view::{CreatedUser, UserView, connection_string};
use crate::{ControlError, ControlPlane, Result};
use stratus_core::commit_marker;
use stratus_core::time::{now_ms, rfc3339};
use stratus_core::{EventKind, NativeHash, ServiceName, User, UserName, random_password};
use stratus_runtime::Runtime;
use stratus_runtime::admin::{ServerAdmin, quote_ident, quote_str};
use stratus_store::Store;

/// How long Stratus waits for its own login to a running server.
const ADMIN_LOGIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The owner's global privileges: those of an RDS master user that neither manage the server
/// nor act as another account.
const OWNER_GLOBAL: &str =
    "PROCESS, SHOW DATABASES, CREATE USER, REPLICATION SLAVE, BINLOG MONITOR, SLAVE MONITOR";

fn account(user: &UserName) -> String {
    format!("{}@'%'", quote_str(user.as_str()))
}

/// Statements that create the service's schema.
pub fn schema_sql(db: &ServiceName) -> String {
    format!(
        "CREATE DATABASE IF NOT EXISTS {} CHARACTER SET utf8mb4",
        quote_ident(db.as_str())
    )
}

/// Statements that make a new database ready for its owner: its schema, the commit marker
/// table and the owner's account with its grants. With `owner_exists` the account is left as it
/// is (the owner may have changed its password) and only granted again, so the statements can
/// run again after a partial attempt.
pub fn provision_sql(
    db: &ServiceName,
    owner: &UserName,
    hash: &NativeHash,
    owner_exists: bool,
) -> Vec<String> {
    let mut sql = vec![schema_sql(db)];
    sql.extend(commit_marker::DDL.iter().map(|s| s.to_string()));
    // The first of `user_sql` creates the account; the rest grant.
    let grants = user_sql(db, owner, hash, true);
    sql.extend(grants.into_iter().skip(usize::from(owner_exists)));
    sql
}

/// The account a spare's owner waits under until a create names it ([`spare_sql`]); a
/// reserved user name, so no tenant's account is ever called so.
const SPARE_OWNER: &str = "'stratus_spare_owner'@'%'";

/// Keeps the session's statements out of the binary log, so none waits for its sync and the
/// commit clock's acknowledgement. Only for a server no tenant has used yet: nothing is ever
/// replayed from before its first backup (a point-in-time restore and a move both start from
/// a copy of the data, which holds what these statements made), and the log stays the
/// tenant's own.
pub const UNLOGGED: &str = "SET SESSION sql_log_bin = 0";

/// What a spare of the warm pool is given while nobody waits for it: the commit marker table
/// and an owner account with the owner's grants, locked and without a password, under
/// [`SPARE_OWNER`]. A create of the default size then runs [`claim_sql`]: three statements on
/// its path instead of the eight of [`provision_sql`]. Both run [`UNLOGGED`].
pub fn spare_sql() -> Vec<String> {
    let mut sql = vec![UNLOGGED.to_owned()];
    sql.extend(commit_marker::DDL.iter().map(|s| s.to_string()));
    sql.push(format!("CREATE USER {SPARE_OWNER} ACCOUNT LOCK"));
    sql.extend(owner_grants(SPARE_OWNER));
    sql
}

/// [`provision_sql`] for a spare that ran [`spare_sql`]: the schema, and the waiting owner
/// account renamed (its grants go with it, <https://mariadb.com/kb/en/rename-user/>), given
/// the owner's password and unlocked.
pub fn claim_sql(db: &ServiceName, owner: &UserName, hash: &NativeHash) -> Vec<String> {
    let acct = account(owner);
    vec![
        UNLOGGED.to_owned(),
        schema_sql(db),
        format!("RENAME USER {SPARE_OWNER} TO {acct}"),
        format!(
            "ALTER USER {acct} IDENTIFIED VIA mysql_native_password USING {} ACCOUNT UNLOCK",
            quote_str(&hash.to_string())
        ),
    ]
}

/// The owner's grants, to the quoted account `acct`.
fn owner_grants(acct: &str) -> [String; 4] {
    [
        format!("GRANT {OWNER_GLOBAL} ON *.* TO {acct} WITH GRANT OPTION"),
        format!("GRANT ALL PRIVILEGES ON `%`.* TO {acct} WITH GRANT OPTION"),
        format!("GRANT SELECT ON mysql.* TO {acct}"),
        format!(
            "GRANT SELECT, INSERT, UPDATE, DELETE ON {}.* TO {acct}",
            commit_marker::SCHEMA
        ),
    ]
}

/// Statements that create `user` with the privileges its role gets: the first creates the
/// account, the others grant.
pub fn user_sql(db: &ServiceName, user: &UserName, hash: &NativeHash, owner: bool) -> Vec<String> {
    let acct = account(user);
    let mut sql = vec![format!(
        "CREATE USER {acct} IDENTIFIED VIA mysql_native_password USING {}",
        quote_str(&hash.to_string())
    )];
    if owner {
        sql.extend(owner_grants(&acct));
    } else {
        sql.push(format!(
            "GRANT ALL PRIVILEGES ON {}.* TO {acct}",
            quote_ident(db.as_str())
        ));
        sql.push(commit_marker::grant(&acct));
    }
    sql
}

impl<S: Store, R: Runtime> ControlPlane<S, R> {
    /// Brings the catalog's users in line with the server's `'%'` accounts after a client
    /// managed accounts in SQL (`CREATE USER`, `ALTER USER`, `DROP USER`, `SET PASSWORD`,
    /// `RENAME USER`), so the proxy lets in exactly who the server would.
    pub async fn sync_accounts(&self, db: &str) -> Result<()> {
        let name = ServiceName::parse(db)?;
        let _guard = self.lock(&name).await;
        self.load(&name).await?;
        if self.runtime.endpoint(&name).is_none() || self.is_suspended(&name) {
            return Ok(());
        }
        let mut conn = self.admin(&name).await?;
        let rows = conn.accounts().await?;
        conn.close().await;
        let known = self.store.users(&name).await?;
        let mut seen = Vec::new();
        let mut new_users = Vec::new();
        for stratus_runtime::admin::Account { user, plugin, auth } in rows {
            let Ok(user) = UserName::parse(&user) else {
                continue;
            };
            seen.push(user.clone());
            let hash = match (
                plugin.as_deref(),
                auth.as_deref().and_then(NativeHash::parse),
            ) {
                (Some("mysql_native_password"), Some(h)) => h,
                _ => {
                    if !known.iter().any(|u| u.name == user) {
                        self.event(&name, EventKind::UserCreated,
                            &format!("user {user} was created in SQL with a plugin other than mysql_native_password; the proxy cannot log it in"),
                            serde_json::json!({"user": user, "plugin": plugin})).await;
                    }
                    continue;
                }
            };
            match known.iter().find(|u| u.name == user) {
                None => {
                    let u = User {
                        service: name.clone(),
                        name: user.clone(),
                        hash,
                        owner: false,
                        created_at_ms: now_ms(),
                    };
                    self.store.create_user(&u).await?;
                    new_users.push(user.clone());
                    self.event(
                        &name,
                        EventKind::UserCreated,
                        &format!("user {user} created in SQL"),
                        serde_json::json!({"user": user, "via": "sql"}),
                    )
                    .await;
                }
                Some(k) if k.hash != hash => {
                    self.store.set_user_hash(&name, &user, &hash).await?;
                    self.event(
                        &name,
                        EventKind::UserCreated,
                        &format!("password of user {user} changed in SQL"),
                        serde_json::json!({"user": user, "via": "sql", "changed": "password"}),
                    )
                    .await;
                }
                Some(_) => {}
            }
        }
        if !new_users.is_empty() {
            let mut conn = self.admin(&name).await?;
            for user in &new_users {
                if let Err(e) = conn.exec(&commit_marker::grant(&account(user))).await {
                    tracing::warn!(db = %name, %user, "cannot grant the commit marker table: {e}");
                }
            }
            conn.close().await;
        }
        for gone in known.iter().filter(|u| !seen.contains(&u.name)) {
            self.store.delete_user(&name, &gone.name).await?;
            self.event(
                &name,
                EventKind::UserDeleted,
                &format!("user {} dropped in SQL", gone.name),
                serde_json::json!({"user": gone.name, "via": "sql", "owner": gone.owner}),
            )
            .await;
        }
        Ok(())
    }

    /// Stratus's own connection to a running server. If the server refuses Stratus's account
    /// (a tenant dropped, locked or changed it, which its `CREATE USER` privilege allows),
    /// the server is restarted, which restores the account before any client can connect
    /// (its `init_file`), and the login is tried once more. Callers hold the database's lock,
    /// so nothing else acts on the server meanwhile.
    pub(crate) async fn admin(&self, name: &ServiceName) -> Result<R::Admin> {
        match self.admin_login(name).await {
            Err(e) if e.is_access_denied() => {
                self.restore_access(name, &e).await?;
                Ok(self.admin_login(name).await?)
            }
            other => Ok(other?),
        }
    }

    /// [`Self::admin`] for callers that do not hold the database's lock (the monitor): a
    /// refused login takes the lock before the server is restarted.
    pub(crate) async fn admin_unlocked(&self, name: &ServiceName) -> Result<R::Admin> {
        match self.admin_login(name).await {
            Err(e) if e.is_access_denied() => {
                let _guard = self.lock(name).await;
                self.admin(name).await
            }
            other => Ok(other?),
        }
    }

    pub(crate) async fn admin_login(
        &self,
        name: &ServiceName,
    ) -> stratus_runtime::Result<R::Admin> {
        self.runtime.admin(name, ADMIN_LOGIN_TIMEOUT).await
    }

    /// Starts (or adopts) a database's server; if the start had to restore Stratus's account,
    /// which a tenant changed while Stratus was not looking (before a park, a crash), says so
    /// in an event.
    pub(crate) async fn start_server(
        &self,
        svc: &stratus_core::DatabaseService,
    ) -> Result<stratus_runtime::Instance> {
        let name = svc.name();
        self.set_settling(name, true);
        let started = self.runtime.start(&self.instance_spec(svc)).await;
        let settled = match &started {
            Ok(_) => match self.admin_login(name).await {
                Ok(mut conn) => {
                    let waited = self.await_recovered_rollback(name, &mut conn).await;
                    conn.close().await;
                    waited
                }
                Err(e) => Err(e.into()),
            },
            Err(_) => Ok(None),
        };
        self.set_settling(name, false);
        let instance = started?;
        match settled {
            Ok(Some(waited)) if waited >= std::time::Duration::from_millis(1) => {
                tracing::info!(db = %name, ms = waited.as_millis() as u64, "recovered transactions rolled back before clients were let in");
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(db = %name, "cannot tell whether recovered transactions were rolled back: {e}")
            }
        }
        if let Some(was) = &instance.access_restored {
            self.event(
                svc.name(),
                EventKind::AccessRestored,
                &format!("Stratus's account in the server had been removed, locked or changed ({was}); restored as the server started"),
                serde_json::json!({"cause": was, "restored": true, "at": "start"}),
            )
            .await;
        }
        Ok(instance)
    }

    /// Restarts a server that refuses Stratus: its start restores Stratus's account.
    async fn restore_access(
        &self,
        name: &ServiceName,
        cause: &stratus_runtime::RuntimeError,
    ) -> Result<()> {
        let begin = std::time::Instant::now();
        tracing::warn!(db = %name, "the server refuses Stratus's account ({cause}); restarting it to restore the account");
        let svc = self.load(name).await?;
        self.runtime.stop(name, self.cfg.stop_grace).await?;
        let restored = self.runtime.start(&self.instance_spec(&svc)).await;
        let ms = begin.elapsed().as_millis() as u64;
        let (message, ok) = match &restored {
            Ok(_) => (
                format!(
                    "Stratus's account in the server had been removed, locked or changed ({cause}); the server was restarted and the account restored in {ms} ms"
                ),
                true,
            ),
            Err(e) => (
                format!(
                    "Stratus's account in the server had been removed, locked or changed ({cause}); restarting the server to restore it failed: {e}"
                ),
                false,
            ),
        };
        self.event(
            name,
            EventKind::AccessRestored,
            &message,
            serde_json::json!({"cause": cause.to_string(), "restored": ok, "ms": ms}),
        )
        .await;
        restored?;
        Ok(())
    }

    /// Adds a user to a database, in its server and in the catalog. A parked database is
    /// resumed for it, as any statement would.
    pub async fn create_user(
        &self,
        db: &str,
        user: &str,
        password: Option<String>,
    ) -> Result<CreatedUser> {
        let name = ServiceName::parse(db)?;
        let user_name = UserName::parse(user)?;
        if password.as_deref().is_some_and(str::is_empty) {
            return Err(ControlError::Invalid("password must not be empty".into()));
        }
        let _guard = self.lock(&name).await;
        let svc = self
            .ensure_running(&name, EventKind::Resumed, "for user create")
            .await?;
        if self
            .store
            .users(&name)
            .await?
            .iter()
            .any(|u| u.name == user_name)
        {
            return Err(ControlError::AlreadyExists(format!(
                "user {user_name} of database {name}"
            )));
        }
        let password = password.unwrap_or_else(random_password);
        let user = User {
            service: name.clone(),
            name: user_name.clone(),
            hash: NativeHash::of_password(&password),
            owner: false,
            created_at_ms: now_ms(),
        };
        let mut conn = self.admin(&name).await?;
        for sql in user_sql(&name, &user.name, &user.hash, false) {
            conn.exec(&sql).await?;
        }
        conn.close().await;
        self.store.create_user(&user).await?;
        self.event(
            &name,
            EventKind::UserCreated,
            &format!("user {user_name} created"),
            serde_json::json!({"user": user_name}),
        )
        .await;
        let (host, port) = self.endpoint();
        let user = self.client_user(&name, &user_name);
        Ok(CreatedUser {
            database: name.to_string(),
            connection_string: connection_string(&user, &password, &host, port, svc.schema()),
            user,
            password,
            host,
            port,
        })
    }

    pub async fn users(&self, db: &str) -> Result<Vec<UserView>> {
        let name = ServiceName::parse(db)?;
        self.load(&name).await?;
        Ok(self
            .store
            .users(&name)
            .await?
            .into_iter()
            .map(|u| UserView {
                database: u.service.to_string(),
                name: u.name.to_string(),
                owner: u.owner,
                created_at: rfc3339(u.created_at_ms),
            })
            .collect())
    }

    /// Removes a user. The owner stays: it is how the service is administered.
    pub async fn delete_user(&self, db: &str, user: &str) -> Result<()> {
        let name = ServiceName::parse(db)?;
        let user_name = UserName::parse(user)?;
        let _guard = self.lock(&name).await;
        let existing = self.store.users(&name).await?;
        let Some(found) = existing.iter().find(|u| u.name == user_name) else {
            return Err(ControlError::NotFound(format!(
                "user {user_name} of database {name}"
            )));
        };
        if found.owner {
            return Err(ControlError::WrongState(format!(
                "user {user_name} owns database {name} and cannot be deleted"
            )));
        }
        self.ensure_running(&name, EventKind::Resumed, "for user delete")
            .await?;
        let mut conn = self.admin(&name).await?;
        conn.exec(&format!("DROP USER IF EXISTS {}", account(&user_name)))
            .await?;
        conn.close().await;
        self.store.delete_user(&name, &user_name).await?;
        self.event(
            &name,
            EventKind::UserDeleted,
            &format!("user {user_name} deleted"),
            serde_json::json!({"user": user_name}),
        )
        .await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_and_user_privileges() {
        let db = ServiceName::parse("my-shop").unwrap();
        let hash = NativeHash::of_password("x");
        let owner = user_sql(&db, &UserName::parse("admin").unwrap(), &hash, true);
        assert!(
            owner[0].starts_with(
                "CREATE USER 'admin'@'%' IDENTIFIED VIA mysql_native_password USING '*"
            )
        );
        assert!(owner[1].starts_with("GRANT PROCESS, SHOW DATABASES, CREATE USER,"));
        for global in ["FILE", "SUPER", "SET USER", "RELOAD", "SHUTDOWN", "ALL"] {
            assert!(
                !owner[1].contains(global),
                "owner gets {global} in {}",
                owner[1]
            );
        }
        assert_eq!(
            owner[2],
            "GRANT ALL PRIVILEGES ON `%`.* TO 'admin'@'%' WITH GRANT OPTION"
        );
        assert_eq!(owner[3], "GRANT SELECT ON mysql.* TO 'admin'@'%'");
        assert_eq!(
            owner[4],
            "GRANT SELECT, INSERT, UPDATE, DELETE ON stratus_meta.* TO 'admin'@'%'"
        );
        let app = user_sql(&db, &UserName::parse("app").unwrap(), &hash, false);
        assert_eq!(app[1], "GRANT ALL PRIVILEGES ON `my-shop`.* TO 'app'@'%'");
        assert_eq!(
            app[2],
            "GRANT SELECT, INSERT, UPDATE, DELETE ON stratus_meta.commits TO 'app'@'%'"
        );
        assert_eq!(
            schema_sql(&db),
            "CREATE DATABASE IF NOT EXISTS `my-shop` CHARACTER SET utf8mb4"
        );
    }

    #[test]
    fn a_spares_waiting_owner_has_the_owners_grants_and_no_way_in() {
        let db = ServiceName::parse("shop").unwrap();
        let (admin, hash) = (
            UserName::parse("admin").unwrap(),
            NativeHash::of_password("x"),
        );
        let spare = spare_sql();
        assert_eq!(spare[0], UNLOGGED);
        assert_eq!(spare[1..3], commit_marker::DDL.map(String::from));
        assert_eq!(
            spare[3],
            "CREATE USER 'stratus_spare_owner'@'%' ACCOUNT LOCK"
        );
        let direct = user_sql(&db, &admin, &hash, true);
        assert_eq!(
            spare[4..],
            direct[1..]
                .iter()
                .map(|g| g.replace("'admin'@'%'", SPARE_OWNER))
                .collect::<Vec<_>>()
        );
        assert!(UserName::parse("stratus_spare_owner").is_err(), "reserved");
        let claim = claim_sql(&db, &admin, &hash);
        assert_eq!(claim[0], UNLOGGED);
        assert_eq!(claim[1], schema_sql(&db));
        assert_eq!(
            claim[2],
            "RENAME USER 'stratus_spare_owner'@'%' TO 'admin'@'%'"
        );
        assert_eq!(
            claim[3],
            format!(
                "ALTER USER 'admin'@'%' IDENTIFIED VIA mysql_native_password USING '{hash}' ACCOUNT UNLOCK"
            )
        );
    }

    #[test]
    fn provisioning_again_grants_again_but_never_recreates_the_owner() {
        let db = ServiceName::parse("shop").unwrap();
        let (admin, hash) = (
            UserName::parse("admin").unwrap(),
            NativeHash::of_password("x"),
        );
        let first = provision_sql(&db, &admin, &hash, false);
        let again = provision_sql(&db, &admin, &hash, true);
        assert_eq!(first[0], schema_sql(&db));
        assert_eq!(first[1..3], commit_marker::DDL.map(String::from));
        assert!(first[3].starts_with("CREATE USER 'admin'@'%'"));
        assert!(!again.iter().any(|s| s.starts_with("CREATE USER")));
        assert_eq!(again.len(), first.len() - 1);
        assert!(
            again[3..]
                .iter()
                .all(|s| s.starts_with("GRANT") && !s.contains("IDENTIFIED")),
            "{again:?}"
        );
    }
}
