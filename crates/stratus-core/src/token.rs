//! API tokens: roles, per-database scope, and the SHA-256 form the catalog keeps.
//!
//! A token reads `stratus_<id>_<secret>`: the prefix makes a leaked one recognisable (secret
//! scanners, logs), the 12-hex-digit `id` names it in `token list` / `token delete` and finds its
//! row, and the 24-character secret (about 142 bits) is what makes it unguessable. The catalog
//! keeps only `SHA-256(token)`; a fast hash is enough for a random secret of that size, where a
//! password would need a slow one.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;

/// What every token starts with.
pub const TOKEN_PREFIX: &str = "stratus_";

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything, including token management; always every database.
    Admin,
    /// Create, change, connect to and delete the databases in its scope.
    Developer,
    /// Read only: list, show, users, events, status of the databases in its scope.
    Viewer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Developer => "developer",
            Role::Viewer => "viewer",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "admin" => Some(Role::Admin),
            "developer" => Some(Role::Developer),
            "viewer" => Some(Role::Viewer),
            _ => None,
        }
    }

    /// Whether this role may perform `action` (on a database its scope covers).
    pub fn allows(self, action: Action) -> bool {
        match self {
            Role::Admin => true,
            Role::Developer => !matches!(action, Action::ManageTokens | Action::ManageKeys),
            Role::Viewer => action == Action::Read,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The kinds of request the roles are defined by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Anything that only reads.
    Read,
    /// Creating, changing or deleting a database or its users.
    Write,
    /// Creating, listing and deleting tokens.
    ManageTokens,
    /// Rotating the master key of encryption at rest.
    ManageKeys,
}

/// The databases a token reaches: names, `prefix*` patterns, or `*` for all.
///
/// Patterns let a developer create the databases of a project (`shop-*`) without an admin
/// issuing a token per database; a pattern is a literal prefix and one trailing `*`, nothing more
/// (no `?`, no `*` inside), so what it covers is obvious when read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Scope(Vec<String>);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid database scope {0:?}: use a database name, a prefix ending in '*' (shop-*), or '*'"
)]
pub struct ScopeError(pub String);

impl Scope {
    /// Every database.
    pub fn all() -> Self {
        Self(vec!["*".to_owned()])
    }

    /// Validates each entry; an empty list means every database.
    pub fn parse(entries: &[String]) -> Result<Self, ScopeError> {
        if entries.is_empty() {
            return Ok(Self::all());
        }
        let mut out: Vec<String> = Vec::with_capacity(entries.len());
        for e in entries {
            if !valid_entry(e) {
                return Err(ScopeError(e.clone()));
            }
            if !out.contains(e) {
                out.push(e.clone());
            }
        }
        if out.iter().any(|e| e == "*") {
            return Ok(Self::all());
        }
        Ok(Self(out))
    }

    pub fn entries(&self) -> &[String] {
        &self.0
    }

    pub fn is_all(&self) -> bool {
        self.0.iter().any(|e| e == "*")
    }

    /// Whether the database named `db` is within this scope.
    pub fn covers(&self, db: &str) -> bool {
        self.0.iter().any(|e| match e.strip_suffix('*') {
            Some(prefix) => db.starts_with(prefix),
            None => e == db,
        })
    }
}

/// A name (`shop`), a prefix pattern (`shop-*`, `s*`) or `*`: the characters of database names,
/// so an entry is also a valid SQLite `GLOB` pattern.
fn valid_entry(e: &str) -> bool {
    let body = e.strip_suffix('*').unwrap_or(e);
    if body.is_empty() {
        return e == "*";
    }
    let wildcard = body.len() != e.len();
    body.len() <= 40
        && body.as_bytes()[0].is_ascii_lowercase()
        && body
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && (wildcard || crate::ServiceName::parse(body).is_ok())
}

/// `SHA-256(token)`: what the catalog keeps.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TokenHash(pub [u8; 32]);

impl TokenHash {
    pub fn of(token: &str) -> Self {
        Self(Sha256::digest(token.as_bytes()).into())
    }

    /// Compares in time independent of where the hashes differ, so response times reveal
    /// nothing about a stored hash.
    pub fn matches(&self, other: &TokenHash) -> bool {
        let diff = self
            .0
            .iter()
            .zip(other.0.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        std::hint::black_box(diff) == 0
    }

    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn parse_hex(text: &str) -> Option<Self> {
        if text.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(Self(out))
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenHash(..)")
    }
}

/// A token as the catalog keeps it: never the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiToken {
    /// Public: 12 lowercase hex digits, also inside the token itself.
    pub id: String,
    /// A label for people (`ci`, `alice's laptop`).
    pub name: String,
    pub role: Role,
    /// Always [`Scope::all`] for admins.
    pub scope: Scope,
    pub hash: TokenHash,
    pub created_at_ms: i64,
}

/// A newly made token: the record to store and the secret to show once.
pub struct NewToken {
    pub record: ApiToken,
    pub secret: String,
}

impl fmt::Debug for NewToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewToken")
            .field("record", &self.record)
            .finish_non_exhaustive()
    }
}

/// Makes a token with a fresh id and secret.
pub fn generate(name: &str, role: Role, scope: Scope, now_ms: i64) -> NewToken {
    let id = crate::password::random_hex(6);
    let secret = format!("{TOKEN_PREFIX}{id}_{}", crate::random_password());
    let scope = if role == Role::Admin {
        Scope::all()
    } else {
        scope
    };
    NewToken {
        record: ApiToken {
            id,
            name: name.to_owned(),
            role,
            scope,
            hash: TokenHash::of(&secret),
            created_at_ms: now_ms,
        },
        secret,
    }
}

/// The id inside a presented token, if it has the shape of one (nothing is looked up).
pub fn token_id(token: &str) -> Option<&str> {
    let rest = token.strip_prefix(TOKEN_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    (id.len() == 12
        && id
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        && !secret.is_empty())
    .then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(entries: &[&str]) -> Result<Scope, ScopeError> {
        Scope::parse(&entries.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn roles_allow_what_they_say() {
        use Action::*;
        assert!(Role::Admin.allows(ManageTokens));
        assert!(Role::Developer.allows(Write) && !Role::Developer.allows(ManageTokens));
        assert!(Role::Admin.allows(ManageKeys) && !Role::Developer.allows(ManageKeys));
        assert!(Role::Viewer.allows(Read) && !Role::Viewer.allows(Write));
        for r in [Role::Admin, Role::Developer, Role::Viewer] {
            assert_eq!(Role::parse(r.as_str()), Some(r));
        }
        assert_eq!(Role::parse("root"), None);
    }

    #[test]
    fn scopes_cover_names_and_prefixes_only() {
        let s = scope(&["shop", "blog-*"]).unwrap();
        assert!(s.covers("shop") && s.covers("blog-a") && s.covers("blog-"));
        assert!(!s.covers("shop2") && !s.covers("blog") && !s.covers("sho"));
        assert!(!s.is_all());
        assert!(scope(&[]).unwrap().is_all());
        assert!(scope(&["shop", "*"]).unwrap().covers("anything"));
        for bad in [
            "", "Shop", "a*b", "**", "*shop", "shop-", "sh op", "1db", "a'b",
        ] {
            assert!(scope(&[bad]).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn tokens_have_their_shape_and_only_their_hash_matches() {
        let t = generate("ci", Role::Viewer, scope(&["shop"]).unwrap(), 1);
        assert!(t.secret.starts_with("stratus_"));
        assert_eq!(token_id(&t.secret), Some(t.record.id.as_str()));
        assert!(TokenHash::of(&t.secret).matches(&t.record.hash));
        assert!(!TokenHash::of(&format!("{}x", t.secret)).matches(&t.record.hash));
        assert_eq!(
            TokenHash::parse_hex(&t.record.hash.to_hex()),
            Some(t.record.hash)
        );
        assert!(!format!("{:?}", t).contains(&t.secret));
        let admin = generate("a", Role::Admin, scope(&["shop"]).unwrap(), 1);
        assert!(admin.record.scope.is_all(), "admins reach every database");
        for bad in [
            "",
            "stratus_",
            "stratus_abc_x",
            "stratus_0123456789AB_x",
            "stratus_0123456789ab_",
            "xstratus_0123456789ab_x",
        ] {
            assert_eq!(token_id(bad), None, "{bad:?}");
        }
    }
}
