//! Backend connections kept after their client left, for the next client of the same database,
//! user and connection settings: reusing one costs a login on an open connection instead of a
//! connect, a greeting and a login.
//!
//! Each session thread keeps its own pool (a socket belongs to the event loop that registered
//! it). A connection is reset (`COM_RESET_CONNECTION`,
//! <https://mariadb.com/kb/en/com_reset_connection/>) before it is kept, so nothing it held
//! (locks, temporary tables) outlives its client; checked alive before it is reused, and logged
//! in again then (`COM_CHANGE_USER`, in `client.rs`), so an account locked, dropped or stripped
//! of privileges meanwhile is refused as on a new connection; closed after `idle` unused (by
//! [`sweep`], which the proxy asks of each session thread), and at most `cap` wait per database.
//! A database that is parked or suspended closes its connections; they are found dead and
//! dropped on the next look.

use crate::activity::Activity;
use crate::backend::Backend;
use crate::session::BACKEND_TRACKING;
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;
// Tokio's clock, so tests can move it.
use stratus_core::Endpoint;
use stratus_wire::command::{COM_QUIT, COM_RESET_CONNECTION};
use tokio::time::Instant;

/// What must match for a kept connection to serve a new session.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    pub service: String,
    pub addr: Endpoint,
    pub user: Vec<u8>,
    /// `SHA1(password)`: a connection made with an old password is not handed to a new one.
    pub stage1: [u8; 20],
    pub caps: u64,
    pub charset: u8,
    /// The schema stays selected across a reset.
    pub schema: Option<String>,
    /// The TLS the connection repeats (`backend_tls`): a session's server sees its client's.
    pub tls: Option<crate::backend_tls::Negotiated>,
}

struct Idle {
    backend: Backend,
    since: Instant,
}

thread_local! {
    static IDLE: RefCell<HashMap<Key, Vec<Idle>>> = RefCell::new(HashMap::new());
}

/// A live kept connection for `key`, if there is one.
pub fn take(key: &Key, idle: Duration, activity: &Activity) -> Option<Backend> {
    IDLE.with(|pool| {
        let mut pool = pool.borrow_mut();
        let list = pool.get_mut(key)?;
        let pooled = &activity.service(&key.service).pooled;
        while let Some(entry) = list.pop() {
            pooled.fetch_sub(1, Ordering::Relaxed);
            if entry.since.elapsed() <= idle && alive(&entry.backend) {
                return Some(entry.backend);
            }
        }
        None
    })
}

/// Resets `backend` and keeps it for the next session with `key`.
pub async fn give_back(
    key: Key,
    mut backend: Backend,
    idle: Duration,
    cap: usize,
    activity: &Activity,
) {
    let (stale, full) = IDLE.with(|pool| {
        let mut pool = pool.borrow_mut();
        let stale = expire(&mut pool, idle, activity);
        (stale, kept(&pool, &key.service) >= cap)
    });
    close(stale).await;
    // Not worth a reset when it would not be kept (the usual case when many idle clients give
    // their connections back at once).
    if full {
        close([backend]).await;
        return;
    }
    if !backend.buf.is_empty() || reset(&mut backend).await.is_err() {
        return;
    }
    // Other sessions of this thread may have filled the pool during the reset.
    let refused = IDLE.with(|pool| {
        let mut pool = pool.borrow_mut();
        if kept(&pool, &key.service) >= cap {
            return Some(backend);
        }
        activity
            .service(&key.service)
            .pooled
            .fetch_add(1, Ordering::Relaxed);
        pool.entry(key).or_default().push(Idle {
            backend,
            since: Instant::now(),
        });
        None
    });
    close(refused).await;
}

/// Closes this thread's kept connections that waited longer than `idle`.
pub async fn sweep(idle: Duration, activity: &Activity) {
    let stale = IDLE.with(|pool| expire(&mut pool.borrow_mut(), idle, activity));
    close(stale).await;
}

/// How many connections `pool` keeps for `service`.
fn kept(pool: &HashMap<Key, Vec<Idle>>, service: &str) -> usize {
    pool.iter()
        .filter(|(k, _)| k.service == service)
        .map(|(_, l)| l.len())
        .sum()
}

/// Takes the connections that waited longer than `idle` out of `pool`.
fn expire(pool: &mut HashMap<Key, Vec<Idle>>, idle: Duration, activity: &Activity) -> Vec<Backend> {
    let mut stale = Vec::new();
    for (k, list) in pool.iter_mut() {
        let before = stale.len();
        let (old, young) = std::mem::take(list)
            .into_iter()
            .partition(|e: &Idle| e.since.elapsed() > idle);
        *list = young;
        stale.extend(old.into_iter().map(|e| e.backend));
        activity
            .service(&k.service)
            .pooled
            .fetch_sub((stale.len() - before) as u64, Ordering::Relaxed);
    }
    pool.retain(|_, list| !list.is_empty());
    stale
}

/// Says goodbye on each connection (`COM_QUIT`) before it closes, so the server counts no
/// aborted client; one that is gone already is just dropped.
async fn close(backends: impl IntoIterator<Item = Backend>) {
    for mut b in backends {
        let _ = b.send(COM_QUIT, &[]).await;
    }
}

async fn reset(b: &mut Backend) -> Result<(), crate::backend::BackendError> {
    b.send(COM_RESET_CONNECTION, &[]).await?;
    let answer = b.read_packet().await?;
    if answer.first() != Some(&0x00) {
        return Err(crate::backend::BackendError::Protocol("reset refused"));
    }
    // A reset forgets the session's tracking settings too.
    b.query(BACKEND_TRACKING).await?;
    Ok(())
}

/// An idle connection has nothing to read: anything there (or an end of stream) means its
/// server is going or gone.
fn alive(b: &Backend) -> bool {
    let mut probe = [0u8; 1];
    matches!(b.stream.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

#[cfg(test)]
mod tests;
