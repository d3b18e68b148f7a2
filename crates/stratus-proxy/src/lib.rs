//! The Stratus SQL proxy: every client talks only to it.
//!
//! It authenticates clients itself against the catalog (so it can answer while a database
//! sleeps), routes `<service>.<user>` to that database, wakes a database that is not running when
//! a statement arrives for it and holds the client meanwhile, and keeps each session's state so
//! any new backend connection (after a wake, a crash, a move) continues it.
//!
//! * [`client`]: one client session, from greeting to `COM_QUIT`: reading and dispatching the
//!   client's commands; its link to the backend (`client/backend_link.rs`: the connection, the
//!   exchange of a command and the relay of its answer, prepared statements' backend ids), its
//!   failover engine (`client/failover.rs`), its user variables and credentials. Its login is in
//!   `login`, the relaying rules in `relay`, its socket in `stream`.
//! * [`backend`]: connections to the databases' own servers.
//! * [`session`]: the state that is replayed on a new backend connection.
//! * [`password`]: new passwords read from the statements that set them, so a session that
//!   changes its own password logs in with it after a reconnect.
//! * [`replay`]: failover: statements retried and transactions replayed on a new backend.
//! * `recovery`: the order in which a database's sessions replay after its server was lost.
//! * [`activity`]: what the control plane is told about each database.
//! * [`hold`]: commands held while a database moves to another server.
//! * [`throttle`]: failed logins counted, and the delay they earn.
//! * [`storage_limit`]: what a database at its storage limit may still run, where no volume
//!   enforces the limit.
//! * `testkit` (test builds only): whole sessions in-process, an in-memory client and a scripted
//!   server on an in-memory network, for the failover tests beside `client/failover.rs`.

pub mod account_statement;
pub mod activity;
pub mod backend;
pub mod backend_tls;
pub mod backend_unix;
pub mod client;
mod compressed;
pub mod error;
pub mod hold;
mod idle;
pub mod kill;
mod login;
pub mod pool;
mod prepared;
mod recovery;
mod relay;
pub mod replay;
pub mod session;
pub mod storage_limit;
mod stream;
#[cfg(test)]
mod testkit;
pub mod throttle;
pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;
pub use stratus_core::Endpoint;
use tokio::net::TcpListener;

pub use activity::{Activity, ActivitySnapshot};

/// Where the proxy learns accounts and backend addresses: the control plane, in-process for
/// `stratus up`.
pub trait Directory: Send + Sync + 'static {
    /// `user` on `service`, if that account exists.
    fn account(&self, service: &str, user: &str) -> impl Future<Output = Option<Account>> + Send;

    /// The address of the service's server. With `wake`, starts it first if it is not running
    /// (and many callers waking one database cause one start); without, `Ok(None)` when it is
    /// not running. `Err` carries a message for the client.
    fn backend(
        &self,
        service: &str,
        wake: bool,
    ) -> impl Future<Output = Result<Option<Endpoint>, String>> + Send;

    /// The address of the service's server for a session that lost its backend and carries
    /// over a transaction before its client asks anything: the server is started again if it
    /// crashed, but not woken if it was put to sleep on purpose (suspended, parked), which
    /// gives `Ok(None)`; the client's next statement wakes it then.
    fn backend_after_loss(
        &self,
        service: &str,
    ) -> impl Future<Output = Result<Option<Endpoint>, String>> + Send {
        self.backend(service, true)
    }

    /// A connection to `addr`, which `backend` gave, was refused: returns once the directory
    /// knows whether that server is gone (then the next `backend` call starts another).
    fn unreachable(&self, service: &str, addr: &Endpoint) -> impl Future<Output = ()> + Send;

    /// A client changed accounts in SQL (`CREATE USER`, `SET PASSWORD`…) on `service`: the
    /// directory re-reads them, so the next login sees the change.
    fn accounts_changed(&self, service: &str) -> impl Future<Output = ()> + Send;

    /// A client session lived through the loss of its backend (how is in `report`). Recorded
    /// as an event; must not block the session.
    fn failover(&self, service: &str, report: replay::Failover);

    /// The storage limit `service` has reached where nothing below the server enforces it (no
    /// volume), if it has: its statements that add data are then refused
    /// ([`storage_limit`]). Called for such statements only; must be cheap.
    fn storage_full(&self, service: &str) -> Option<u64> {
        let _ = service;
        None
    }

    /// Failed logins from one source or for one account started being delayed (once per
    /// episode, not per failure). `service` is the database the triggering attempt named, when
    /// the account exists. Recorded as an event; must not block the login.
    fn login_throttled(&self, service: Option<&str>, report: throttle::Throttled) {
        let _ = (service, report);
    }
}

/// What the proxy needs to know of an account to let it in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Account {
    /// The stored `SHA1(SHA1(password))`.
    pub stage2: [u8; 20],
    /// The service accepts only TLS connections (`require_secure_transport`).
    pub require_tls: bool,
}

#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// The version string clients are greeted with (the backends' own).
    pub server_version: String,
    pub max_connections: u64,
    pub max_connections_per_service: u64,
    /// A client must finish logging in within this.
    pub handshake_timeout: Duration,
    /// A statement waits at most this long for its database to wake.
    pub wake_timeout: Duration,
    /// Largest packet accepted from a client.
    pub max_packet: usize,
    /// TLS for clients; `None`: plain TCP only.
    pub tls: Option<tls::Tls>,
    /// TLS to the servers for sessions whose client used TLS (`backend_tls`); `None`: backend
    /// connections are plain, and an account cannot be made to require TLS.
    pub backend_tls: Option<Arc<backend_tls::BackendTls>>,
    /// Backend connections kept per database (per session thread) after their clients left.
    pub pool_max_idle: usize,
    /// How long a kept backend connection may wait for a new client.
    pub pool_idle_timeout: Duration,
    /// A client silent this long gives its backend connection back to the pool when nothing
    /// ties its session to it (see `client::backend_link::release_idle`); zero: never.
    pub release_idle_after: Duration,
    /// Threads that run client sessions, each a single-threaded event loop (as HAProxy's
    /// threads are): sessions never migrate between cores, so relaying a statement takes no
    /// cross-thread wake-ups. 0: run sessions on the caller's runtime, which should then be a
    /// current-thread one (the pool of kept connections is per thread, and only the caller's
    /// own thread's is swept).
    pub threads: usize,
    /// Limits of statement retry and transaction replay after a lost backend.
    pub replay: replay::ReplayLimits,
    /// On shutdown, how long running statements and open transactions get to finish.
    pub shutdown_grace: Duration,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            server_version: "5.5.5-10.11.0-MariaDB".into(),
            max_connections: 10_000,
            max_connections_per_service: 2_000,
            handshake_timeout: Duration::from_secs(10),
            wake_timeout: Duration::from_secs(60),
            max_packet: 1 << 30,
            tls: None,
            backend_tls: None,
            pool_max_idle: 16,
            pool_idle_timeout: Duration::from_secs(60),
            release_idle_after: Duration::from_secs(10),
            threads: 1,
            replay: replay::ReplayLimits::default(),
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// The connection ids the proxy greets clients with: apart from the servers' own thread ids
/// (which count up from 1 at each start, and which `CONNECTION_ID()` and `SHOW PROCESSLIST`
/// show), so that a `KILL` of either kind of id names one session and never another
/// (`client::kill`). Below 2^31, for clients that read the id as a signed 32-bit number.
pub const GREETING_IDS: std::ops::Range<u32> = 1 << 30..1 << 31;

pub struct Proxy<D: Directory> {
    pub(crate) cfg: ProxyConfig,
    pub(crate) dir: D,
    pub activity: Activity,
    pub(crate) connections: AtomicU64,
    next_id: AtomicU32,
    /// Set once on shutdown: no new clients, and each session closes once it holds no
    /// transaction and runs no statement (sessions read `shutting_down`, woken through their
    /// link, so waiting for a client's next command registers nothing new per statement).
    pub(crate) draining: tokio::sync::watch::Sender<bool>,
    pub(crate) shutting_down: std::sync::atomic::AtomicBool,
    /// The order in which sessions carry on after a database's server was lost.
    pub(crate) recoveries: recovery::Recoveries,
    /// Every open session by the connection id it was greeted with, for `KILL`.
    pub(crate) sessions: std::sync::Mutex<std::collections::HashMap<u32, Arc<SessionLink>>>,
    /// The runtime `serve` runs on, where sessions' idle timers run (see [`idle`]).
    timers: std::sync::OnceLock<tokio::runtime::Handle>,
    /// Databases whose commands wait while they move (see [`hold`]).
    pub holds: Arc<hold::Holds>,
}

/// What other sessions may know of a session: enough to find and kill its current statement
/// or connection.
/// The `KILL CONNECTION`s standing against a session: a count, not a flag, so that a batch
/// taking its mark back (it failed before its `KILL` ran) leaves another session's standing.
#[derive(Default)]
pub(crate) struct KillMarks(AtomicU32);

impl KillMarks {
    /// Whether one stands: the session's client connection ends, and a lost backend is not
    /// failed over. `SeqCst` on every side: a `KILL` marks the session before it reads its
    /// backend thread, and a session clears that thread before it looks at its marks.
    pub(crate) fn any(&self) -> bool {
        self.0.load(Ordering::SeqCst) > 0
    }

    pub(crate) fn mark(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }

    /// Takes back a mark this session made.
    pub(crate) fn unmark(&self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

pub(crate) struct SessionLink {
    /// Whose session it is now: `COM_CHANGE_USER` may make it another database's.
    pub(crate) identity: std::sync::Mutex<Identity>,
    /// The thread id of its current backend connection; 0 while it has none.
    pub(crate) backend_thread: AtomicU32,
    /// The `KILL CONNECTION`s that named it.
    pub(crate) killed: KillMarks,
    /// Wakes it when it is killed, or the proxy shuts down, or its idle deadline passes, while
    /// it waits for its client.
    pub(crate) wake: tokio::sync::Notify,
    /// Its client's idleness, watched on the main runtime (see [`idle`]).
    pub(crate) idle: idle::IdleClock,
}

/// A session's database and account, as `KILL` from another session judges it.
pub(crate) struct Identity {
    pub(crate) service: String,
    pub(crate) user: Vec<u8>,
}

impl SessionLink {
    pub(crate) fn identity(&self) -> std::sync::MutexGuard<'_, Identity> {
        self.identity.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What a session thread is handed.
enum Work {
    Client(std::net::TcpStream, SocketAddr),
    /// Close the kept backend connections that outlived `pool_idle_timeout` (the pool is the
    /// thread's own: see [`pool`]).
    SweepPool,
}

type Handoff = tokio::sync::mpsc::UnboundedSender<Work>;

impl<D: Directory> Proxy<D> {
    /// Starts the session threads; each owns a current-thread runtime fed with accepted sockets.
    fn start_workers(self: &Arc<Self>) -> std::io::Result<Vec<Handoff>> {
        let mut senders = Vec::new();
        for i in 0..self.cfg.threads {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Work>();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let me = self.clone();
            std::thread::Builder::new()
                .name(format!("stratus-proxy-{i}"))
                .spawn(move || {
                    rt.block_on(async move {
                        while let Some(work) = rx.recv().await {
                            let (std_stream, peer) = match work {
                                Work::Client(s, peer) => (s, peer),
                                Work::SweepPool => {
                                    let me = me.clone();
                                    tokio::spawn(async move {
                                        pool::sweep(me.cfg.pool_idle_timeout, &me.activity).await
                                    });
                                    continue;
                                }
                            };
                            match tokio::net::TcpStream::from_std(std_stream) {
                                Ok(stream) => {
                                    tokio::spawn(client::run(me.clone(), stream, peer));
                                }
                                Err(e) => tracing::warn!("cannot adopt a client socket: {e}"),
                            }
                        }
                    });
                })?;
            senders.push(tx);
        }
        Ok(senders)
    }

    pub fn new(cfg: ProxyConfig, dir: D) -> Arc<Self> {
        Arc::new(Self {
            cfg,
            dir,
            activity: Activity::default(),
            connections: AtomicU64::new(0),
            next_id: AtomicU32::new(0),
            draining: tokio::sync::watch::Sender::new(false),
            shutting_down: std::sync::atomic::AtomicBool::new(false),
            recoveries: recovery::Recoveries::default(),
            sessions: std::sync::Mutex::new(std::collections::HashMap::new()),
            timers: std::sync::OnceLock::new(),
            holds: Arc::default(),
        })
    }

    /// Graceful shutdown: stops accepting clients, lets running statements and open
    /// transactions finish, closing each session with `ER_SERVER_SHUTDOWN` once it is idle,
    /// and returns when none is busy or `grace` has passed. Returns how many sessions were
    /// still busy (running a statement or in a transaction) at the end.
    pub async fn drain(&self, grace: Duration) -> u64 {
        self.shutting_down.store(true, Ordering::SeqCst);
        self.draining.send_replace(true);
        for link in self.sessions_lock().values() {
            link.wake.notify_one();
        }
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            let busy: u64 = self
                .activity
                .all()
                .iter()
                .map(|(_, a)| {
                    a.running.load(Ordering::Relaxed) + a.in_transaction.load(Ordering::Relaxed)
                })
                .sum();
            if busy == 0 || tokio::time::Instant::now() >= deadline {
                return busy;
            }
            // The counters have no waker; a short poll bounds the delay past the last commit.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn config(&self) -> &ProxyConfig {
        &self.cfg
    }

    pub(crate) fn sessions_lock(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<u32, Arc<SessionLink>>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts watching a session's idle deadline, on the runtime that accepts clients rather
    /// than the session's own thread (see [`idle`]).
    pub(crate) fn watch_idle(&self, link: Arc<SessionLink>) -> tokio::task::JoinHandle<()> {
        let rt = self
            .timers
            .get()
            .cloned()
            .unwrap_or_else(tokio::runtime::Handle::current);
        rt.spawn(idle::watch(link))
    }

    /// The id a new client is greeted with, from [`GREETING_IDS`].
    pub(crate) fn connection_id(&self) -> u32 {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        GREETING_IDS.start + n % (GREETING_IDS.end - GREETING_IDS.start)
    }

    /// Accepts clients until the listener fails; each session runs in its own task, and one
    /// client's failure never touches another's. Sessions are dealt round-robin to the
    /// configured session threads.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        let _ = self.timers.set(tokio::runtime::Handle::current());
        let workers = match self.start_workers() {
            Ok(w) => w,
            Err(e) => {
                tracing::error!("cannot start proxy threads, serving on the main runtime: {e}");
                Vec::new()
            }
        };
        // Timed here, not on the session threads (a timer there costs every statement: see
        // [`idle`]).
        let sweeps = workers.clone();
        let every = (self.cfg.pool_idle_timeout / 2).max(Duration::from_secs(1));
        let me = self.clone();
        let sweeper = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                for w in &sweeps {
                    let _ = w.send(Work::SweepPool);
                }
                // Sessions on this runtime (`threads = 0`, a current-thread runtime's): its
                // pool is this thread's.
                if sweeps.is_empty() {
                    pool::sweep(me.cfg.pool_idle_timeout, &me.activity).await;
                }
            }
        });
        let _sweeper = AbortOnDrop(sweeper);
        let mut next = 0usize;
        let mut draining = self.draining.subscribe();
        let mut refusal = Refusal::new();
        let mut warned = None;
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => Some(a),
                _ = draining.wait_for(|d| *d) => None,
            };
            let Some(accepted) = accepted else {
                tracing::info!("proxy: no longer accepting clients (shutting down)");
                drop(listener);
                // The session threads run for as long as their senders live: keep them, so
                // the sessions still open can finish their transactions.
                let _workers = workers;
                return std::future::pending().await;
            };
            match accepted {
                Ok((stream, peer)) => {
                    if workers.is_empty() {
                        let me = self.clone();
                        tokio::spawn(async move { client::run(me, stream, peer).await });
                        continue;
                    }
                    next = (next + 1) % workers.len();
                    match stream.into_std() {
                        Ok(std_stream) => {
                            let _ = workers[next].send(Work::Client(std_stream, peer));
                        }
                        Err(e) => tracing::warn!("cannot hand a connection to a proxy thread: {e}"),
                    }
                }
                Err(e) => {
                    // Out of file descriptors and the like: keep serving the sessions already
                    // open, and say so at most once a minute.
                    if warned.is_none_or(|at: std::time::Instant| at.elapsed() >= WARN_EVERY) {
                        warned = Some(std::time::Instant::now());
                        tracing::warn!(
                            "cannot accept SQL clients: {e} (said once a minute while it lasts)"
                        );
                    }
                    if out_of_descriptors(&e) && refusal.refuse(&listener).await {
                        continue;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

/// Stops a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How often a lasting failure to accept is logged.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// `EMFILE` or `ENFILE`: this process, or the whole host, has no file descriptor left.
pub(crate) fn out_of_descriptors(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(code) if code == rustix::io::Errno::MFILE.raw_os_error() || code == rustix::io::Errno::NFILE.raw_os_error())
}

/// A descriptor kept in reserve so that a client arriving when every other one is taken gets
/// `ER_CON_COUNT_ERROR` (1040, "Too many connections", as MariaDB answers past its
/// `max_connections`) instead of waiting in the listen queue until it times out.
struct Refusal(Option<std::fs::File>);

impl Refusal {
    fn new() -> Self {
        Self(std::fs::File::open("/dev/null").ok())
    }

    /// Frees the reserve, accepts the waiting client, answers it and closes it, and takes the
    /// reserve back. False if there was no reserve to free.
    async fn refuse(&mut self, listener: &TcpListener) -> bool {
        if self.0.take().is_none() {
            *self = Self::new();
            return false;
        }
        let waiting = tokio::time::timeout(Duration::from_millis(10), listener.accept()).await;
        if let Ok(Ok((stream, _))) = waiting {
            let mut out = Vec::new();
            let err = error::SqlError::too_many_connections("Stratus has no file descriptor left")
                .before_greeting();
            stratus_wire::packet::write(&mut out, &mut 0, &err.packet());
            // A few dozen bytes into an empty socket buffer: written at once (a new tokio
            // stream may not know yet that it is writable, so the plain socket writes them).
            if let Ok(mut plain) = stream.into_std() {
                let _ = std::io::Write::write(&mut plain, &out);
            }
        }
        *self = Self::new();
        true
    }
}

#[cfg(test)]
mod refusal_tests {
    use super::*;
    use std::io::Read;

    /// With every descriptor taken, a client that connects is answered `Too many connections`
    /// at once, twice in a row (the reserve is taken back each time), instead of waiting in
    /// the listen queue. It lowers its process's limit, so it runs in a process of its own:
    /// this test binary again, told by the environment to run the body.
    #[test]
    fn a_client_past_the_last_descriptor_is_told_too_many_connections() {
        const BODY: &str = "STRATUS_TEST_OUT_OF_DESCRIPTORS";
        if std::env::var_os(BODY).is_some() {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(out_of_descriptors_body());
            return;
        }
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "refusal_tests::a_client_past_the_last_descriptor_is_told_too_many_connections",
                "--nocapture",
            ])
            .env(BODY, "1")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{text}");
        assert!(text.contains("1 passed"), "the body did not run: {text}");
    }

    async fn out_of_descriptors_body() {
        use rustix::process::{Resource, getrlimit, setrlimit};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let clients: Vec<std::net::TcpStream> = (0..2)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect();
        let mut refusal = Refusal::new();
        let before = getrlimit(Resource::Nofile);
        let open = std::fs::read_dir("/proc/self/fd").unwrap().count() as u64;
        setrlimit(
            Resource::Nofile,
            rustix::process::Rlimit {
                current: Some(open + 8),
                ..before
            },
        )
        .unwrap();
        let mut taken = Vec::new();
        while let Ok(f) = std::fs::File::open("/dev/null") {
            taken.push(f);
        }
        // (Each client is kept open until the end: closing one would free a descriptor.)
        for client in &clients {
            let e = listener.accept().await.unwrap_err();
            assert!(out_of_descriptors(&e), "{e}");
            assert!(refusal.refuse(&listener).await);
            client
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let mut got = Vec::new();
            let mut reader = client;
            reader.read_to_end(&mut got).unwrap();
            // In place of a greeting, so with no SQL state, as MariaDB answers.
            let mut want = Vec::new();
            let err = b"\xff\x10\x04Too many connections (Stratus has no file descriptor left)";
            stratus_wire::packet::write(&mut want, &mut 0, err);
            assert_eq!(got, want);
        }
        drop(taken);
        setrlimit(Resource::Nofile, before).unwrap();
    }
}

#[cfg(test)]
mod kill_mark_tests {
    use super::KillMarks;

    #[test]
    fn a_mark_taken_back_leaves_another_sessions_standing() {
        let marks = KillMarks::default();
        assert!(!marks.any());
        marks.mark(); // a batch's KILL, not run yet
        marks.mark(); // another session's KILL, done
        marks.unmark(); // the batch failed before its KILL
        assert!(marks.any(), "the other session's KILL still stands");
    }
}
