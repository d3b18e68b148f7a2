//! In-process sessions for tests: a proxy whose client is an in-memory pipe and whose backend
//! is a scripted MariaDB server on an in-memory network, so that failover paths (a server lost
//! while idle, mid-statement, refusing to come back) run deterministically, on tokio's paused
//! clock, without `mariadbd`. The end-to-end tests with real servers remain the reference for
//! what a server does; these pin down what the proxy does about it, packet by packet.
//!
//! * `net`: the in-memory network and the proxy's end of a backend pipe.
//! * `scripted_backend`: the fake server.
//! * `client`: the client end.
//! * `directory`: the `Directory` the proxy is given.

pub(crate) mod client;
pub(crate) mod directory;
pub(crate) mod net;
pub(crate) mod scripted_backend;

use crate::stream::ClientStream;
use crate::{Proxy, ProxyConfig};
use client::TestClient;
use directory::TestDirectory;
use scripted_backend::{Query, Reply, ScriptedBackend};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

pub(crate) const SERVICE: &str = "shop";
pub(crate) const USER: &str = "app";
pub(crate) const PASSWORD: &str = "secret";

/// How long a test waits for anything, on the paused clock: longer than any wait of the
/// proxy's in these tests, so reaching it means something hangs.
pub(crate) const WITHIN: Duration = Duration::from_secs(600);

/// A proxy in front of one scripted server.
pub(crate) struct Harness {
    pub(crate) proxy: Arc<Proxy<TestDirectory>>,
    pub(crate) backend: ScriptedBackend,
}

impl Harness {
    pub(crate) fn new(script: impl Fn(&Query<'_>) -> Reply + Send + Sync + 'static) -> Self {
        Self::with_config(ProxyConfig::default(), script)
    }

    pub(crate) fn with_config(
        cfg: ProxyConfig,
        script: impl Fn(&Query<'_>) -> Reply + Send + Sync + 'static,
    ) -> Self {
        let backend = ScriptedBackend::start(PASSWORD, script);
        let dir = TestDirectory::new(SERVICE, USER, PASSWORD, backend.addr.clone());
        Self {
            proxy: Proxy::new(cfg, dir),
            backend,
        }
    }

    pub(crate) fn dir(&self) -> &TestDirectory {
        &self.proxy.dir
    }

    /// A client logged in through a new session of the proxy.
    pub(crate) async fn client(&self) -> TestClient {
        self.client_watched(None).await
    }

    /// A client, with `on_write` run each time the proxy writes to it (`net::ClientPipe`).
    pub(crate) async fn client_watched(
        &self,
        on_write: Option<Arc<dyn Fn() + Send + Sync>>,
    ) -> TestClient {
        let (client_end, proxy_end) = tokio::io::duplex(1 << 20);
        let peer = "127.0.0.1:40000".parse().expect("an address");
        tokio::spawn(crate::client::session(
            self.proxy.clone(),
            ClientStream::Memory(net::ClientPipe {
                stream: proxy_end,
                on_write,
            }),
            peer,
        ));
        TestClient::login(client_end, &format!("{SERVICE}.{USER}"), PASSWORD).await
    }

    /// Waits until no session holds a backend connection: each noticed that its server closed
    /// it.
    pub(crate) async fn sessions_lost_their_backend(&self) {
        self.until(
            "every session noticed its backend connection closed",
            || {
                !self
                    .proxy
                    .sessions_lock()
                    .values()
                    .any(|s| s.backend_thread.load(Ordering::Relaxed) != 0)
            },
        )
        .await;
    }

    /// Waits until `done` holds, for states of the proxy that nothing announces. Only tasks of
    /// this runtime can bring them about, and every wake-up in memory runs at once, so a
    /// bounded number of turns of the scheduler is enough; no clock is involved.
    pub(crate) async fn until(&self, what: &str, done: impl Fn() -> bool) {
        for _ in 0..1000 {
            if done() {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("never happened: {what}");
    }
}
