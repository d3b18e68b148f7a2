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

/// The certificate clients trust for the pair Stratus makes: `<dir>/ca.pem`.
pub const CA_FILE: &str = "ca.pem";

/// Loads `cert`/`key` if given; otherwise the pair under `dir` that Stratus made (a leaf
/// `cert.pem`/`key.pem` signed by its own CA, `ca.pem`), made on first use and made again when
/// it does not carry the names clients verify (a pair from an older version, or a new domain).
pub fn load_or_create(
    dir: &Path,
    cert: Option<&Path>,
    key: Option<&Path>,
    domain: Option<&str>,
) -> Result<Tls, TlsError> {
    let domain = domain
        .map(|d| d.trim_matches('.').to_ascii_lowercase())
        .filter(|d| !d.is_empty());
    let (cert_path, key_path) = match (cert, key) {
        (Some(c), Some(k)) => (c.to_owned(), k.to_owned()),
        (None, None) => {
            let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
            if !c.exists() || !k.exists() {
                make_pair(dir, domain.as_deref())?;
            } else if made_by_stratus(&c) && !carries_names(dir, domain.as_deref()) {
                tracing::info!(
                    "the certificate under {} lacks names clients verify: making a new one",
                    dir.display()
                );
                make_pair(dir, domain.as_deref())?;
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
        domain,
    })
}

/// Common names of what [`make_pair`] writes, and of the self-signed certificate earlier versions
/// made: how a certificate in the data directory is known to be Stratus's own to replace.
const CA_NAME: &str = "Stratus CA";
const LEAF_NAME: &str = "Stratus SQL endpoint";
const OLD_SELF_SIGNED_NAME: &str = "rcgen self signed cert";

/// The names the certificate must carry: the domain and its databases, and loopback as clients
/// on this host spell it.
fn required_names(domain: Option<&str>) -> Vec<String> {
    let mut names: Vec<String> = ["localhost", "127.0.0.1", "::1"].map(str::to_owned).into();
    if let Some(d) = domain {
        names.push(d.to_owned());
        names.push(format!("*.{d}"));
    }
    names
}

/// A CA and a leaf it signs. The CA's key signs once and is never written: a copy of the data
/// directory cannot mint certificates that clients of this installation trust. A change of names
/// makes a new CA, which clients then fetch again.
pub(crate) fn make_pair(dir: &Path, domain: Option<&str>) -> Result<(), TlsError> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let config = |e: rcgen::Error| TlsError::Config(e.to_string());
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(config)?;
    ca.distinguished_name.push(DnType::CommonName, CA_NAME);
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate().map_err(config)?;
    let ca_cert = ca.self_signed(&ca_key).map_err(config)?;
    let issuer = Issuer::new(ca, ca_key);

    let mut leaf = CertificateParams::new(required_names(domain)).map_err(config)?;
    leaf.distinguished_name.push(DnType::CommonName, LEAF_NAME);
    leaf.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.use_authority_key_identifier_extension = true;
    let leaf_key = KeyPair::generate().map_err(config)?;
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).map_err(config)?;

    std::fs::create_dir_all(dir).map_err(|source| TlsError::Write {
        path: dir.to_owned(),
        source,
    })?;
    let write = |name: &str, contents: String, private: bool| {
        let path = dir.join(name);
        let done = if private {
            stratus_core::fs::write_private(&path, contents.as_bytes())
        } else {
            std::fs::write(&path, contents)
        };
        done.map_err(|source| TlsError::Write { path, source })
    };
    // The key first: a crash in between leaves a pair that is made again, never a stale key.
    write("key.pem", leaf_key.serialize_pem(), true)?;
    write(CA_FILE, ca_cert.pem(), false)?;
    write("cert.pem", leaf_cert.pem() + &ca_cert.pem(), false)
}

/// Whether the certificate at `cert` is one Stratus made (never replace a user's own).
fn made_by_stratus(cert: &Path) -> bool {
    let Some(Ok(der)) = CertificateDer::pem_file_iter(cert)
        .ok()
        .and_then(|mut it| it.next())
    else {
        return false;
    };
    [LEAF_NAME, OLD_SELF_SIGNED_NAME]
        .iter()
        .any(|n| der.windows(n.len()).any(|w| w == n.as_bytes()))
}

/// Whether `dir`'s leaf verifies, against `dir`'s CA file, for every name it must carry (a
/// sample database stands for the wildcard).
fn carries_names(dir: &Path, domain: Option<&str>) -> bool {
    let mut names = required_names(domain);
    if let Some(d) = domain {
        names.push(format!("db.{d}"));
    }
    names.retain(|n| !n.starts_with('*'));
    names.iter().all(|n| verify_name(dir, n).is_ok())
}

/// Verifies `dir`'s certificate for `server_name` against `dir`'s CA file, as a client that
/// trusts that file would.
pub fn verify_name(dir: &Path, server_name: &str) -> Result<(), TlsError> {
    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::{ServerName, UnixTime};
    let pem = |name: &str| -> Result<Vec<CertificateDer<'static>>, TlsError> {
        let path = dir.join(name);
        let certs: Vec<_> = CertificateDer::pem_file_iter(&path)
            .map_err(|_| TlsError::Pem {
                path: path.clone(),
                what: "certificate",
            })?
            .filter_map(Result::ok)
            .collect();
        if certs.is_empty() {
            return Err(TlsError::Pem {
                path,
                what: "certificate",
            });
        }
        Ok(certs)
    };
    let mut roots = rustls::RootCertStore::empty();
    for ca in pem(CA_FILE)? {
        roots.add(ca).map_err(|e| TlsError::Config(e.to_string()))?;
    }
    let chain = pem("cert.pem")?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| TlsError::Config(e.to_string()))?;
    let name = ServerName::try_from(server_name.to_owned())
        .map_err(|e| TlsError::Config(e.to_string()))?;
    verifier
        .verify_server_cert(&chain[0], &chain[1..], &name, &[], UnixTime::now())
        .map(drop)
        .map_err(|e| TlsError::Config(format!("{server_name}: {e}")))
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

    #[test]
    fn the_pair_names_the_domain_its_databases_and_loopback() {
        let dir = tempfile::tempdir().unwrap();
        load_or_create(dir.path(), None, None, Some("db.test")).unwrap();
        for ok in ["shop.db.test", "db.test", "localhost", "127.0.0.1", "::1"] {
            verify_name(dir.path(), ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in ["a.shop.db.test", "example.com", "10.0.0.1"] {
            assert!(verify_name(dir.path(), bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_older_pair_is_made_again_but_never_a_users_own() {
        let dir = tempfile::tempdir().unwrap();
        // What earlier versions made: a self-signed leaf, no CA file, no IP names.
        let old = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        std::fs::write(dir.path().join("cert.pem"), old.cert.pem()).unwrap();
        std::fs::write(dir.path().join("key.pem"), old.signing_key.serialize_pem()).unwrap();
        load_or_create(dir.path(), None, None, None).unwrap();
        verify_name(dir.path(), "127.0.0.1").unwrap();
        // A new domain: made again, for the new names.
        load_or_create(dir.path(), None, None, Some("db.test")).unwrap();
        verify_name(dir.path(), "shop.db.test").unwrap();

        // Someone's own certificate placed in the directory is loaded as it is.
        let mine = tempfile::tempdir().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["db.example.com".to_owned()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "db.example.com");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap().pem();
        std::fs::write(mine.path().join("cert.pem"), &cert).unwrap();
        std::fs::write(mine.path().join("key.pem"), key.serialize_pem()).unwrap();
        load_or_create(mine.path(), None, None, Some("db.test")).unwrap();
        assert_eq!(
            std::fs::read_to_string(mine.path().join("cert.pem")).unwrap(),
            cert
        );
        assert!(!mine.path().join(CA_FILE).exists());
    }

    /// A rustls client that trusts only `ca.pem` completes a handshake for a database's name.
    #[tokio::test]
    async fn a_client_trusting_the_ca_file_connects_by_database_name() {
        use rustls::pki_types::ServerName;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let dir = tempfile::tempdir().unwrap();
        let tls = load_or_create(dir.path(), None, None, Some("db.test")).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        for ca in CertificateDer::pem_file_iter(dir.path().join(CA_FILE)).unwrap() {
            roots.add(ca.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let (client_io, server_io) = tokio::io::duplex(64 * 1024);
        let server = tokio::spawn(async move {
            let mut s = tls.acceptor.accept(server_io).await.unwrap();
            let name = s.get_ref().1.server_name().map(str::to_owned);
            s.write_all(b"ok").await.unwrap();
            s.shutdown().await.unwrap();
            name
        });
        let name = ServerName::try_from("shop.db.test").unwrap();
        let mut c = connector.connect(name, client_io).await.unwrap();
        let mut got = Vec::new();
        c.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"ok");
        let sni = server.await.unwrap();
        assert_eq!(
            service_from_server_name(sni.as_deref().unwrap(), "db.test"),
            Some("shop")
        );
    }
}
