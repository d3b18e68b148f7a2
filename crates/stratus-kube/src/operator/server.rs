//! What the operator does inside a database's server, through SQL: emptying it for suspend and
//! filling it again on wake, the same two steps as `stratus up`'s
//! ([`stratus_control::suspend`]), reached over the pod's address as Stratus's own account.
//!
//! A trait, so the controller's tests script it beside the mocked API server: no server runs
//! in them.

use crate::objects::ADMIN_USER;
use crate::runtime::{KubeError, KubeRuntime, PodView};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::time::Duration;
use stratus_control::accounts::provision_sql;
use stratus_control::suspend::BUFFER_POOL_FLOOR;
use stratus_core::{Endpoint, NativeHash, ServiceName, UserName};
use stratus_runtime::admin::{Account, AdminConn, AdminLogin, ClientActivity, ServerAdmin};

pub type Pending<'a, T> = Pin<Box<dyn Future<Output = Result<T, KubeError>> + Send + 'a>>;

/// The server's port in its pod (`objects`).
const PORT: u16 = 3306;
/// Longest wait for a login, and for the hot page list to be written.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(10);
const DUMP_TIMEOUT: Duration = Duration::from_secs(30);

/// SQL run in a database's server.
pub trait ServerSql: Send + Sync {
    /// Dumps the hot page list, closes the clients' sessions and shrinks the buffer pool to its
    /// floor. Returns how many sessions were closed.
    fn empty<'a>(&'a self, db: &'a ServiceName, pod: &'a PodView) -> Pending<'a, u64>;
    /// Gives the buffer pool `bytes` again and starts reloading the hot pages.
    fn fill<'a>(&'a self, db: &'a ServiceName, pod: &'a PodView, bytes: u64) -> Pending<'a, ()>;
    /// Sets the buffer pool to `bytes`, for a new size (nothing is reloaded). Returns the size
    /// the server took, which may be less (`innodb_buffer_pool_size_max` of a server started
    /// from an older option file).
    fn pool<'a>(&'a self, db: &'a ServiceName, pod: &'a PodView, bytes: u64) -> Pending<'a, u64>;
    /// Makes the database ready for its owner, as `stratus db create` does
    /// ([`provision_sql`]): safe to run again. Returns whether the owner's account was made
    /// (false: it existed and kept its password).
    fn provision<'a>(
        &'a self,
        db: &'a ServiceName,
        pod: &'a PodView,
        owner: &'a UserName,
        hash: &'a NativeHash,
    ) -> Pending<'a, bool>;
    /// The server's `'%'` accounts, for [`crate::accounts`].
    fn accounts<'a>(&'a self, db: &'a ServiceName, pod: &'a PodView) -> Pending<'a, Vec<Account>>;
    /// What its clients are doing: how the operator tells it is idle.
    fn activity<'a>(&'a self, db: &'a ServiceName, pod: &'a PodView)
    -> Pending<'a, ClientActivity>;
}

/// A failure of SQL in `db`'s server, as the operator reports it (the runtime's error names the
/// database already).
fn sql_failed(db: &ServiceName) -> impl Fn(stratus_runtime::RuntimeError) -> KubeError + Copy + '_ {
    move |e| KubeError::Server {
        db: db.to_string(),
        message: e.to_string(),
    }
}

/// The real one: a connection to the pod as `stratus_admin`, with the password from the
/// database's Secret.
pub struct AdminSql {
    pub runtime: KubeRuntime,
}

impl AdminSql {
    async fn connect(&self, db: &ServiceName, pod: &PodView) -> Result<AdminConn, KubeError> {
        let unreachable = |why: &str| KubeError::Server {
            db: db.to_string(),
            message: format!("database {db}: {why}"),
        };
        let ip: IpAddr = pod
            .ip
            .as_deref()
            .and_then(|ip| ip.parse().ok())
            .ok_or_else(|| unreachable("its pod has no address yet"))?;
        // The pod's own Secret: a spare it claimed keeps the spare's.
        let inst = crate::instance::Instance::of_database(db, pod.instance.as_deref());
        let password = self
            .runtime
            .password(&inst)
            .await?
            .ok_or_else(|| KubeError::NoPassword(inst.name()))?;
        let login = AdminLogin {
            user: ADMIN_USER.into(),
            password: Some(password),
        };
        let endpoint = Endpoint::Tcp(SocketAddr::new(ip, pod.port.unwrap_or(PORT)));
        AdminConn::connect(db.as_str(), &endpoint, &login, LOGIN_TIMEOUT)
            .await
            .map_err(sql_failed(db))
    }
}

impl ServerSql for AdminSql {
    fn empty<'a>(&'a self, db: &'a ServiceName, pod: &'a PodView) -> Pending<'a, u64> {
        Box::pin(async move {
            let failed = sql_failed(db);
            let mut conn = self.connect(db, pod).await?;
            // Already emptied (an earlier attempt stopped after this): its list is kept.
            if conn.buffer_pool_size().await.map_err(failed)? > BUFFER_POOL_FLOOR {
                conn.dump_buffer_pool(DUMP_TIMEOUT).await.map_err(failed)?;
            }
            let closed = conn.close_sessions().await.map_err(failed)?;
            conn.resize_buffer_pool(BUFFER_POOL_FLOOR)
                .await
                .map_err(failed)?;
            conn.close().await;
            Ok(closed)
        })
    }

    fn fill<'a>(&'a self, db: &'a ServiceName, pod: &'a PodView, bytes: u64) -> Pending<'a, ()> {
        Box::pin(async move {
            let failed = sql_failed(db);
            let mut conn = self.connect(db, pod).await?;
            conn.resize_buffer_pool(bytes).await.map_err(failed)?;
            conn.load_buffer_pool().await.map_err(failed)?;
            conn.close().await;
            Ok(())
        })
    }

    fn pool<'a>(&'a self, db: &'a ServiceName, pod: &'a PodView, bytes: u64) -> Pending<'a, u64> {
        Box::pin(async move {
            let failed = sql_failed(db);
            let mut conn = self.connect(db, pod).await?;
            let (took, _) = conn.resize_buffer_pool(bytes).await.map_err(failed)?;
            conn.close().await;
            Ok(took)
        })
    }

    fn provision<'a>(
        &'a self,
        db: &'a ServiceName,
        pod: &'a PodView,
        owner: &'a UserName,
        hash: &'a NativeHash,
    ) -> Pending<'a, bool> {
        Box::pin(async move {
            let failed = sql_failed(db);
            let mut conn = self.connect(db, pod).await?;
            let exists = conn
                .accounts()
                .await
                .map_err(failed)?
                .iter()
                .any(|a| a.user == owner.as_str());
            for sql in provision_sql(db, owner, hash, exists) {
                conn.exec(&sql).await.map_err(failed)?;
            }
            conn.close().await;
            Ok(!exists)
        })
    }

    fn accounts<'a>(&'a self, db: &'a ServiceName, pod: &'a PodView) -> Pending<'a, Vec<Account>> {
        Box::pin(async move {
            let mut conn = self.connect(db, pod).await?;
            let rows = conn.accounts().await.map_err(sql_failed(db))?;
            conn.close().await;
            Ok(rows)
        })
    }

    fn activity<'a>(
        &'a self,
        db: &'a ServiceName,
        pod: &'a PodView,
    ) -> Pending<'a, ClientActivity> {
        Box::pin(async move {
            let mut conn = self.connect(db, pod).await?;
            let seen = conn.client_activity().await.map_err(sql_failed(db))?;
            conn.close().await;
            Ok(seen)
        })
    }
}
