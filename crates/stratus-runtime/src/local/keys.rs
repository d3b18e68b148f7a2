//! Encryption at rest: each database's data key, wrapped by the installation's master key.
//!
//! MariaDB encrypts InnoDB data, redo and undo, temporary files and tables, Aria tables and the
//! binary log with keys from a key-management plugin
//! (<https://mariadb.com/kb/en/data-at-rest-encryption-overview/>). Stratus uses the stock
//! `file_key_management` plugin (<https://mariadb.com/kb/en/file-key-management-encryption-plugin/>)
//! with one 256-bit data key per database. At rest that key exists only wrapped
//! (AES-256-GCM) by a master key kept outside the data directory, so a copy of the data
//! directory (a stolen disk, a backup) is unreadable without it. The plain key is written for the
//! plugin just before its server starts, into a private directory on a memory file system
//! (`/dev/shm`), and removed as soon as the server is up: the plugin reads it once, at start.
//!
//! Rotation replaces the master key: every database's key is wrapped again, under a new master
//! key added to the key ring, before the old one is dropped, so each wrapped key always opens
//! with a master key in the ring (a crash midway loses nothing). The data keys themselves, with
//! which pages are encrypted, stay: rotating them would mean rewriting every table.

use crate::{Result, RuntimeError};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use std::path::{Path, PathBuf};

/// The file in a database's directory that holds its wrapped data key.
pub const WRAPPED_KEY_FILE: &str = "data-key.wrapped";
const FORMAT: &str = "stratus-data-key-v1";

/// The master keys: the newest wraps, any opens.
pub struct MasterKeys {
    path: PathBuf,
    /// `(id, key)`, oldest first. The id is the first 8 bytes of SHA-256 of the key, in hex.
    keys: Vec<(String, [u8; 32])>,
}

fn io(context: String) -> impl FnOnce(std::io::Error) -> RuntimeError {
    move |e| RuntimeError::io(context, e)
}

fn random32() -> Result<[u8; 32]> {
    let mut k = [0u8; 32];
    getrandom::fill(&mut k)
        .map_err(|e| RuntimeError::Other(format!("no random numbers for a key: {e}")))?;
    Ok(k)
}

fn key_id(key: &[u8; 32]) -> String {
    hex(&ring::digest::digest(&ring::digest::SHA256, key).as_ref()[..8])
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

impl MasterKeys {
    /// Loads the key ring at `path`, making it (with one new key) if it does not exist. The file
    /// must be its owner's alone: a looser one is refused, not used.
    pub fn open_or_create(path: &Path) -> Result<Self> {
        use std::os::unix::fs::PermissionsExt;
        if !path.exists() {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)
                    .map_err(io(format!("cannot create {}", dir.display())))?;
            }
            let ring = Self {
                path: path.to_owned(),
                keys: vec![{
                    let k = random32()?;
                    (key_id(&k), k)
                }],
            };
            ring.save()?;
            tracing::info!(
                "made the master key for encryption at rest: {}",
                path.display()
            );
            return Ok(ring);
        }
        let meta =
            std::fs::metadata(path).map_err(io(format!("cannot read {}", path.display())))?;
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(RuntimeError::Other(format!(
                "the master key {} is readable by other users (mode {:o}); make it 0600",
                path.display(),
                meta.permissions().mode() & 0o777
            )));
        }
        let text =
            std::fs::read_to_string(path).map_err(io(format!("cannot read {}", path.display())))?;
        let mut keys = Vec::new();
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let key: [u8; 32] = line
                .split_whitespace()
                .last()
                .and_then(unhex)
                .and_then(|k| k.try_into().ok())
                .ok_or_else(|| {
                    RuntimeError::Other(format!("{} holds a malformed key line", path.display()))
                })?;
            keys.push((key_id(&key), key));
        }
        if keys.is_empty() {
            return Err(RuntimeError::Other(format!(
                "{} holds no master key",
                path.display()
            )));
        }
        Ok(Self {
            path: path.to_owned(),
            keys,
        })
    }

    /// Writes the ring atomically (a new file renamed over the old), mode 0600.
    fn save(&self) -> Result<()> {
        let text: String = self
            .keys
            .iter()
            .map(|(id, k)| format!("{id} {}\n", hex(k)))
            .collect();
        let tmp = self.path.with_extension("new");
        stratus_core::fs::write_private(&tmp, text.as_bytes())
            .map_err(io(format!("cannot write {}", tmp.display())))?;
        std::fs::rename(&tmp, &self.path)
            .map_err(io(format!("cannot replace {}", self.path.display())))
    }

    /// The id of the key that wraps new data keys.
    pub fn current_id(&self) -> &str {
        &self.keys.last().expect("never empty").0
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn cipher(key: &[u8; 32]) -> LessSafeKey {
        LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).expect("32 bytes is an AES-256 key"))
    }

    /// Wraps a data key under the newest master key; the text names the master key used.
    fn wrap(&self, data_key: &[u8; 32]) -> Result<String> {
        let (id, master) = self.keys.last().expect("never empty");
        let mut nonce = [0u8; 12];
        getrandom::fill(&mut nonce)
            .map_err(|e| RuntimeError::Other(format!("no random numbers for a nonce: {e}")))?;
        let mut sealed = data_key.to_vec();
        Self::cipher(master)
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(FORMAT.as_bytes()),
                &mut sealed,
            )
            .map_err(|_| RuntimeError::Other("cannot wrap a data key".into()))?;
        Ok(format!("{FORMAT} {id} {} {}\n", hex(&nonce), hex(&sealed)))
    }

    fn unwrap(&self, text: &str, what: &Path) -> Result<[u8; 32]> {
        let bad = || RuntimeError::Other(format!("{} is not a wrapped data key", what.display()));
        let mut f = text.split_whitespace();
        if f.next() != Some(FORMAT) {
            return Err(bad());
        }
        let id = f.next().ok_or_else(bad)?;
        let nonce: [u8; 12] = f
            .next()
            .and_then(unhex)
            .and_then(|n| n.try_into().ok())
            .ok_or_else(bad)?;
        let mut sealed = f.next().and_then(unhex).ok_or_else(bad)?;
        let (_, master) = self.keys.iter().find(|(k, _)| k == id).ok_or_else(|| {
            RuntimeError::Other(format!(
                "{} is wrapped by master key {id}, which {} does not hold",
                what.display(),
                self.path.display()
            ))
        })?;
        let plain = Self::cipher(master)
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(FORMAT.as_bytes()),
                &mut sealed,
            )
            .map_err(|_| {
                RuntimeError::Other(format!(
                    "{} does not open with master key {id}: damaged or not ours",
                    what.display()
                ))
            })?;
        plain.try_into().map_err(|_| bad())
    }

    /// The data key of the database in `dir`, made (and stored wrapped) on first use.
    pub fn data_key(&self, dir: &Path) -> Result<[u8; 32]> {
        let path = dir.join(WRAPPED_KEY_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => self.unwrap(&text, &path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = random32()?;
                stratus_core::fs::write_private(&path, self.wrap(&key)?.as_bytes())
                    .map_err(io(format!("cannot write {}", path.display())))?;
                Ok(key)
            }
            Err(e) => Err(RuntimeError::io(
                format!("cannot read {}", path.display()),
                e,
            )),
        }
    }

    /// Replaces the master key: adds a new one, wraps every database's data key under it
    /// (each file replaced atomically), then drops the old keys. Returns how many were wrapped.
    pub fn rotate(&mut self, database_dirs: &[PathBuf]) -> Result<usize> {
        let k = random32()?;
        self.keys.push((key_id(&k), k));
        self.save()?;
        let mut n = 0;
        for dir in database_dirs {
            let path = dir.join(WRAPPED_KEY_FILE);
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            let key = self.unwrap(&text, &path)?;
            let tmp = path.with_extension("new");
            stratus_core::fs::write_private(&tmp, self.wrap(&key)?.as_bytes())
                .map_err(io(format!("cannot write {}", tmp.display())))?;
            std::fs::rename(&tmp, &path)
                .map_err(io(format!("cannot replace {}", path.display())))?;
            n += 1;
        }
        let newest = self.keys.pop().expect("just pushed");
        self.keys = vec![newest];
        self.save()?;
        Ok(n)
    }
}

/// The key file `file_key_management` reads at start: `id;hex-key`, key id 1.
pub fn plugin_key_file(data_key: &[u8; 32]) -> String {
    format!("1;{}\n", hex(data_key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_unwrap_rotate_and_refuse_tampering() {
        let dir = tempfile::tempdir().unwrap();
        let ring_path = dir.path().join("keys/master.key");
        let db = dir.path().join("db");
        std::fs::create_dir(&db).unwrap();
        let mut ring = MasterKeys::open_or_create(&ring_path).unwrap();
        let key = ring.data_key(&db).unwrap();
        assert_eq!(ring.data_key(&db).unwrap(), key, "made once, then read");
        let wrapped = std::fs::read_to_string(db.join(WRAPPED_KEY_FILE)).unwrap();
        assert!(!wrapped.contains(&hex(&key)), "stored wrapped");

        let old_id = ring.current_id().to_owned();
        assert_eq!(ring.rotate(std::slice::from_ref(&db)).unwrap(), 1);
        assert_ne!(ring.current_id(), old_id);
        let reopened = MasterKeys::open_or_create(&ring_path).unwrap();
        assert_eq!(
            reopened.data_key(&db).unwrap(),
            key,
            "same data key, new wrap"
        );
        assert_eq!(reopened.keys.len(), 1, "the old master key is gone");

        let mut text = std::fs::read_to_string(db.join(WRAPPED_KEY_FILE)).unwrap();
        let last = text.pop().map(|_| text.pop().unwrap()).unwrap();
        text.push(if last == '0' { '1' } else { '0' });
        std::fs::write(db.join(WRAPPED_KEY_FILE), text).unwrap();
        assert!(
            reopened.data_key(&db).is_err(),
            "a changed wrap does not open"
        );

        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&ring_path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(
            MasterKeys::open_or_create(&ring_path).is_err(),
            "a loose master key is refused"
        );
        assert_eq!(plugin_key_file(&[0xab; 32]).len(), 2 + 64 + 1);
    }
}
