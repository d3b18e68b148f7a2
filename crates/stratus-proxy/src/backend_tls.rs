//! TLS from the proxy to a database's own server, for the sessions whose client used TLS, so
//! that the server sees the session as the client made it: `Ssl_version` and `Ssl_cipher` in
//! `SHOW STATUS` are the client's, an account that `REQUIRE SSL` or `REQUIRE CIPHER` logs in,
//! and one without TLS is refused as the server refuses it
//! (<https://mariadb.com/kb/en/securing-connections-for-client-and-server/#requiring-tls>).
//!
//! The servers get a certificate of their own, never the one clients see: its key is readable
//! by the servers' user, and a copy of the endpoint's key there would let anyone who reads a
//! server's files impersonate the endpoint. The proxy trusts only the CA that signed it. Each
//! backend connection offers the TLS version and cipher suite the client negotiated with the
//! proxy, so the server reports those.

use crate::tls::{CA_FILE, TlsError};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{CipherSuite, ProtocolVersion, SupportedCipherSuite};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// What a client's TLS session with the proxy negotiated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    pub version: ProtocolVersion,
    pub suite: CipherSuite,
}

impl std::hash::Hash for Negotiated {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (u16::from(self.version), u16::from(self.suite)).hash(state);
    }
}

/// The servers' certificate and what the proxy needs to reach them over TLS.
pub struct BackendTls {
    /// The certificate chain and key the servers are started with.
    pub cert: PathBuf,
    pub key: PathBuf,
    roots: Arc<rustls::RootCertStore>,
    configs: Mutex<HashMap<Negotiated, tokio_rustls::TlsConnector>>,
    /// Servers whose certificate was found untrusted, said once each rather than at every
    /// connection to them.
    untrusted: Mutex<HashSet<String>>,
}

impl std::fmt::Debug for BackendTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendTls")
            .field("cert", &self.cert)
            .finish_non_exhaustive()
    }
}

/// The name the servers' certificate carries and the proxy asks for.
const SERVER_NAME: &str = "localhost";

impl BackendTls {
    /// Whether this is the first time `server`'s certificate turned out untrusted since it was
    /// last trusted.
    pub(crate) fn first_untrusted(&self, server: &str) -> bool {
        self.untrusted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(server.to_owned())
    }

    /// `server`'s certificate is trusted (again, after its server started with the current one).
    pub(crate) fn trusted(&self, server: &str) {
        let mut untrusted = self.untrusted.lock().unwrap_or_else(|p| p.into_inner());
        if !untrusted.is_empty() {
            untrusted.remove(server);
        }
    }

    /// Loads the pair under `dir`, made there on first use (a CA of its own and a leaf it
    /// signs, as for clients, in a directory of its own).
    pub fn load_or_create(dir: &Path) -> Result<Self, TlsError> {
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        if !cert.exists() || !key.exists() || !dir.join(CA_FILE).exists() {
            crate::tls::make_pair(dir, None)?;
        }
        let ca_path = dir.join(CA_FILE);
        let mut roots = rustls::RootCertStore::empty();
        for ca in CertificateDer::pem_file_iter(&ca_path).map_err(|_| TlsError::Pem {
            path: ca_path.clone(),
            what: "certificate",
        })? {
            let ca = ca.map_err(|_| TlsError::Pem {
                path: ca_path.clone(),
                what: "certificate",
            })?;
            roots.add(ca).map_err(|e| TlsError::Config(e.to_string()))?;
        }
        Ok(Self {
            cert,
            key,
            roots: Arc::new(roots),
            configs: Mutex::new(HashMap::new()),
            untrusted: Mutex::new(HashSet::new()),
        })
    }

    /// A connector that offers only what `n` names. A TLS 1.2 suite names the key of the
    /// certificate; the servers' is ECDSA, so an RSA suite is offered as its ECDSA twin (the
    /// same key exchange and cipher).
    pub fn connector(&self, n: Negotiated) -> tokio_rustls::TlsConnector {
        if let Some(c) = self
            .configs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&n)
        {
            return c.clone();
        }
        let mut provider = rustls::crypto::ring::default_provider();
        let wanted = ecdsa_twin(n.suite);
        let all = provider.cipher_suites.clone();
        provider.cipher_suites.retain(|s| s.suite() == wanted);
        if provider.cipher_suites.is_empty() {
            provider.cipher_suites = all;
        }
        let version = match provider.cipher_suites.first() {
            Some(SupportedCipherSuite::Tls12(_)) if n.version == ProtocolVersion::TLSv1_2 => {
                &rustls::version::TLS12
            }
            _ => &rustls::version::TLS13,
        };
        let connector = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(&[version])
            .or_else(|_| {
                rustls::ClientConfig::builder_with_provider(Arc::new(
                    rustls::crypto::ring::default_provider(),
                ))
                .with_safe_default_protocol_versions()
            })
            .map(|b| {
                let config = b
                    .with_root_certificates(self.roots.clone())
                    .with_no_client_auth();
                tokio_rustls::TlsConnector::from(Arc::new(config))
            })
            .expect("the default provider supports the default versions");
        self.configs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(n, connector.clone());
        connector
    }

    pub fn server_name() -> ServerName<'static> {
        ServerName::try_from(SERVER_NAME).expect("a valid DNS name")
    }
}

/// The ECDSA suite with the key exchange and cipher of a TLS 1.2 RSA suite; others as they are.
fn ecdsa_twin(suite: CipherSuite) -> CipherSuite {
    use CipherSuite::*;
    match suite {
        TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256 => {
            TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server with the pair's leaf, the way `mariadbd` is given it, completes a handshake
    /// with each connector, at the version and suite asked for.
    #[tokio::test]
    async fn a_connector_negotiates_what_the_client_did() {
        let dir = tempfile::tempdir().unwrap();
        let tls = BackendTls::load_or_create(dir.path()).unwrap();
        let again = BackendTls::load_or_create(dir.path()).unwrap();
        assert_eq!(
            std::fs::read(&tls.cert).unwrap(),
            std::fs::read(&again.cert).unwrap(),
            "kept across starts"
        );
        let chain: Vec<_> = CertificateDer::pem_file_iter(&tls.cert)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let key = rustls::pki_types::PrivateKeyDer::from_pem_file(&tls.key).unwrap();
        let server = Arc::new(
            rustls::ServerConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap(),
        );
        use CipherSuite::*;
        for (version, suite, expect) in [
            (
                ProtocolVersion::TLSv1_3,
                TLS13_CHACHA20_POLY1305_SHA256,
                TLS13_CHACHA20_POLY1305_SHA256,
            ),
            (
                ProtocolVersion::TLSv1_3,
                TLS13_AES_128_GCM_SHA256,
                TLS13_AES_128_GCM_SHA256,
            ),
            (
                ProtocolVersion::TLSv1_2,
                TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
                TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            ),
        ] {
            let connector = tls.connector(Negotiated { version, suite });
            let acceptor = tokio_rustls::TlsAcceptor::from(server.clone());
            let (client_io, server_io) = tokio::io::duplex(64 * 1024);
            let served = tokio::spawn(async move {
                let mut s = acceptor.accept(server_io).await.unwrap();
                s.write_all(b"ok").await.unwrap();
                s.shutdown().await.unwrap();
            });
            let mut c = connector
                .connect(BackendTls::server_name(), client_io)
                .await
                .unwrap();
            let (v, s) = {
                let conn = c.get_ref().1;
                (
                    conn.protocol_version().unwrap(),
                    conn.negotiated_cipher_suite().unwrap().suite(),
                )
            };
            assert_eq!((v, s), (version, expect));
            let mut got = Vec::new();
            c.read_to_end(&mut got).await.unwrap();
            assert_eq!(got, b"ok");
            served.await.unwrap();
        }
    }

    /// The servers' certificate is not the one clients see, and the proxy trusts nothing else.
    #[tokio::test]
    async fn the_endpoints_certificate_is_not_trusted_for_a_server() {
        let dir = tempfile::tempdir().unwrap();
        let endpoint = crate::tls::load_or_create(dir.path(), None, None, None).unwrap();
        let backend = BackendTls::load_or_create(&dir.path().join("backend")).unwrap();
        let connector = backend.connector(Negotiated {
            version: ProtocolVersion::TLSv1_3,
            suite: CipherSuite::TLS13_AES_256_GCM_SHA384,
        });
        let (client_io, server_io) = tokio::io::duplex(64 * 1024);
        tokio::spawn(async move {
            let _ = endpoint.acceptor.accept(server_io).await;
        });
        assert!(
            connector
                .connect(BackendTls::server_name(), client_io)
                .await
                .is_err()
        );
    }
}
