//! Validated names for services and users.
//!
//! A service name is used as a DNS label (TLS server name `<service>.<domain>`, Kubernetes object
//! names, [RFC 1123](https://www.rfc-editor.org/rfc/rfc1123#page-13)), as the MariaDB schema
//! created for it, and as the prefix of routed user names `<service>.<user>`; so it is the
//! intersection of those grammars. A user name never contains `.`, so `<service>.<user>` splits
//! unambiguously at the first dot.

use std::fmt;

/// Longest service name: leaves room in a 63-byte DNS label / Kubernetes name for suffixes.
pub const SERVICE_NAME_MAX: usize = 40;
/// Longest user name: MariaDB allows 128 characters, but routed names carry the service prefix.
pub const USER_NAME_MAX: usize = 32;

/// User names Stratus keeps for itself or MariaDB reserves.
const RESERVED_USERS: &[&str] = &[
    "root",
    "stratus_admin",
    // The owner account a spare of the warm pool is given before a create names it.
    "stratus_spare_owner",
    "mariadb.sys",
    "mysql",
    "public",
    "none",
];

/// Database names a new database may not take, with why: each database's name is also a schema
/// on its own server and a directory under the data directory. Most of MariaDB's and Stratus's
/// own names (`information_schema`, `stratus_meta`, `_spare-N`) fail the grammar anyway; they are
/// listed so the error says "reserved" rather than "use only…". `test` is allowed: the template
/// is made with `--skip-test-db` and without anonymous accounts, and each database has a server
/// of its own, so a database called `test` is an ordinary schema.
const RESERVED_DATABASES: &[(&str, &str)] = &[
    ("mysql", "MariaDB's system schema"),
    ("information_schema", "MariaDB's system schema"),
    ("performance_schema", "MariaDB's system schema"),
    ("sys", "MariaDB's system schema"),
    ("mariadb_schema", "MariaDB's system schema"),
    ("stratus_meta", "Stratus's schema inside every database"),
    ("stratus", "used by Stratus itself"),
    ("template", "Stratus's template data directory"),
    ("tls", "Stratus's certificate directory"),
    ("databases", "Stratus's directory of databases"),
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("invalid {what} name {name:?}: {reason}")]
    Invalid {
        what: &'static str,
        name: String,
        reason: &'static str,
    },
    #[error("user name {0:?} is reserved")]
    Reserved(String),
    #[error("database name {name:?} is reserved ({why}); choose another name")]
    ReservedDatabase { name: String, why: &'static str },
}

/// A database service name: 1–40 of `a-z 0-9 -`, starting with a letter, not ending with `-`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceName(String);

/// Names no new database can take (case-insensitively), for checks made elsewhere (the
/// Kubernetes schema).
pub fn reserved_database_names() -> impl Iterator<Item = &'static str> {
    RESERVED_DATABASES.iter().map(|(name, _)| *name)
}

impl ServiceName {
    pub fn parse(name: &str) -> Result<Self, NameError> {
        let invalid = |reason| NameError::Invalid {
            what: "database",
            name: name.to_owned(),
            reason,
        };
        if name.is_empty() || name.len() > SERVICE_NAME_MAX {
            return Err(invalid("must be 1 to 40 characters"));
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(invalid("use only lowercase letters, digits and '-'"));
        }
        if !name.as_bytes()[0].is_ascii_lowercase() {
            return Err(invalid("must start with a lowercase letter"));
        }
        if name.ends_with('-') {
            return Err(invalid("must not end with '-'"));
        }
        Ok(Self(name.to_owned()))
    }

    /// [`parse`](Self::parse) for a name a new database is to take: also refuses reserved
    /// names (and names starting `_spare`, the warm pool's directories). Only creation checks
    /// this, so a catalog written before a name was reserved still loads.
    pub fn parse_new(name: &str) -> Result<Self, NameError> {
        let reserved = RESERVED_DATABASES
            .iter()
            .find(|(r, _)| r.eq_ignore_ascii_case(name))
            .map(|(_, why)| *why)
            .or_else(|| {
                name.starts_with("_spare")
                    .then_some("the warm pool's directories")
            });
        if let Some(why) = reserved {
            return Err(NameError::ReservedDatabase {
                name: name.to_owned(),
                why,
            });
        }
        Self::parse(name)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A database user name: 1–32 of `A-Z a-z 0-9 _`, not starting with a digit, not reserved.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UserName(String);

impl UserName {
    pub fn parse(name: &str) -> Result<Self, NameError> {
        let invalid = |reason| NameError::Invalid {
            what: "user",
            name: name.to_owned(),
            reason,
        };
        if name.is_empty() || name.len() > USER_NAME_MAX {
            return Err(invalid("must be 1 to 32 characters"));
        }
        if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(invalid("use only letters, digits and '_'"));
        }
        if name.as_bytes()[0].is_ascii_digit() {
            return Err(invalid("must not start with a digit"));
        }
        if RESERVED_USERS.iter().any(|r| r.eq_ignore_ascii_case(name)) {
            return Err(NameError::Reserved(name.to_owned()));
        }
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters: for names in URL paths and
/// for the user and password of `mysql://` connection strings.
pub fn percent_encode(s: &str) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            _ => {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    out
}

macro_rules! name_impls {
    ($t:ty) => {
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl AsRef<str> for $t {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }
        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}
name_impls!(ServiceName);
name_impls!(UserName);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn percent_encoding_keeps_only_unreserved() {
        assert_eq!(percent_encode("shop.admin"), "shop.admin");
        assert_eq!(percent_encode("p@ss:w/rd é"), "p%40ss%3Aw%2Frd%20%C3%A9");
    }

    #[test]
    fn service_names() {
        for ok in ["shop", "a", "shop-2", "a1b2"] {
            assert!(ServiceName::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "Shop",
            "2shop",
            "shop-",
            "sh_op",
            "sh.op",
            "shöp",
            &"a".repeat(41),
        ] {
            assert!(ServiceName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn reserved_database_names_are_refused_at_creation_only() {
        for r in [
            "mysql",
            "MySQL",
            "information_schema",
            "performance_schema",
            "sys",
            "template",
            "stratus_meta",
            "tls",
            "_spare-1",
        ] {
            let err = ServiceName::parse_new(r).unwrap_err();
            assert!(
                matches!(err, NameError::ReservedDatabase { .. }),
                "{r}: {err}"
            );
            assert!(err.to_string().contains("is reserved"), "{err}");
        }
        // Existing catalogs keep loading.
        assert!(ServiceName::parse("mysql").is_ok());
        for ok in ["test", "shop", "mysql2", "system"] {
            assert!(ServiceName::parse_new(ok).is_ok(), "{ok}");
        }
        assert!(ServiceName::parse_new("Shop").is_err());
    }

    #[test]
    fn user_names() {
        for ok in ["admin", "app_user", "A1", "_x"] {
            assert!(UserName::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "1app",
            "a.b",
            "a-b",
            "root",
            "ROOT",
            "stratus_admin",
            &"u".repeat(33),
        ] {
            assert!(UserName::parse(bad).is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn service_name_is_a_dns_label_and_never_panics(s in "\\PC{0,50}") {
            if let Ok(n) = ServiceName::parse(&s) {
                prop_assert!(n.as_str().len() <= 63);
                prop_assert!(!n.as_str().contains('.'));
            }
        }

        #[test]
        fn user_name_never_contains_a_dot(s in "\\PC{0,40}") {
            if let Ok(n) = UserName::parse(&s) {
                prop_assert!(!n.as_str().contains('.'));
            }
        }
    }
}
