//! TLS for clients: the `CLIENT_SSL` upgrade (<https://mariadb.com/kb/en/connection/#sslrequest-packet>)
//! with a certificate from the configuration, or a self-signed one made on first start and kept.
//! The TLS server name can carry the database: `<service>.<domain>` routes like a
//! `<service>.<user>` user name.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} holds no usable PEM {what}")]
    Pem { path: PathBuf, what: &'static str },
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// What the proxy needs to speak TLS.
#[derive(Clone)]
pub struct Tls {
    pub acceptor: tokio_rustls::TlsAcceptor,
    /// Server names `<service>.<domain>` route to `<service>`.
    pub domain: Option<String>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("domain", &self.domain)
            .finish_non_exhaustive()
    }
}

/// Loads `cert`/`key` if given; otherwise the self-signed pair under `dir`, made on first use.
pub fn load_or_create(
    dir: &Path,
    cert: Option<&Path>,
    key: Option<&Path>,
    domain: Option<&str>,
) -> Result<Tls, TlsError> {
    let (cert_path, key_path) = match (cert, key) {
        (Some(c), Some(k)) => (c.to_owned(), k.to_owned()),
        (None, None) => {
            let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
            if !c.exists() || !k.exists() {
                self_signed(dir, &c, &k, domain)?;
            }
            (c, k)
        }
        _ => return Err(TlsError::Config("tls.cert and tls.key go together".into())),
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_path)
        .map_err(|_| TlsError::Pem {
            path: cert_path.clone(),
            what: "certificate",
        })?
        .collect::<Result<_, _>>()
        .map_err(|_| TlsError::Pem {
            path: cert_path.clone(),
            what: "certificate",
        })?;
    if chain.is_empty() {
        return Err(TlsError::Pem {
            path: cert_path,
            what: "certificate",
        });
    }
    let key = PrivateKeyDer::from_pem_file(&key_path).map_err(|_| TlsError::Pem {
        path: key_path,
        what: "private key",
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    Ok(Tls {
        acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        domain: domain.map(|d| d.trim_matches('.').to_ascii_lowercase()),
    })
}

fn self_signed(dir: &Path, cert: &Path, key: &Path, domain: Option<&str>) -> Result<(), TlsError> {
    let mut names = vec!["localhost".to_owned()];
    if let Some(d) = domain {
        names.push(d.to_owned());
        names.push(format!("*.{d}"));
    }
    let made =
        rcgen::generate_simple_self_signed(names).map_err(|e| TlsError::Config(e.to_string()))?;
    std::fs::create_dir_all(dir).map_err(|source| TlsError::Write {
        path: dir.to_owned(),
        source,
    })?;
    stratus_core::fs::write_private(key, made.signing_key.serialize_pem().as_bytes()).map_err(
        |source| TlsError::Write {
            path: key.to_owned(),
            source,
        },
    )?;
    std::fs::write(cert, made.cert.pem()).map_err(|source| TlsError::Write {
        path: cert.to_owned(),
        source,
    })
}

/// The service a TLS server name routes to: `shop.db.example.com` with domain `db.example.com`.
pub fn service_from_server_name<'a>(name: &'a str, domain: &str) -> Option<&'a str> {
    let prefix = name.strip_suffix(domain)?.strip_suffix('.')?;
    (!prefix.is_empty() && !prefix.contains('.')).then_some(prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_route() {
        assert_eq!(
            service_from_server_name("shop.db.example.com", "db.example.com"),
            Some("shop")
        );
        assert_eq!(
            service_from_server_name("db.example.com", "db.example.com"),
            None
        );
        assert_eq!(
            service_from_server_name("a.b.db.example.com", "db.example.com"),
            None
        );
        assert_eq!(
            service_from_server_name("shopdb.example.com", "db.example.com"),
            None
        );
    }

    #[test]
    fn self_signed_pair_is_made_once_and_loads() {
        let dir = tempfile::tempdir().unwrap();
        load_or_create(dir.path(), None, None, Some("db.test")).unwrap();
        let first = std::fs::read(dir.path().join("cert.pem")).unwrap();
        load_or_create(dir.path(), None, None, Some("db.test")).unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("cert.pem")).unwrap(),
            first,
            "kept across starts"
        );
        std::fs::write(dir.path().join("bad.pem"), "nonsense").unwrap();
        let err = load_or_create(
            dir.path(),
            Some(&dir.path().join("bad.pem")),
            Some(&dir.path().join("key.pem")),
            None,
        );
        assert!(matches!(err, Err(TlsError::Pem { .. })));
    }
}
