//! Who may call the API: the `Host` header (against DNS rebinding), the bearer token, and what
//! its role and scope allow.
//!
//! A browser on the API's host can be made to send requests to `127.0.0.1` by a page whose DNS
//! name later resolves there; such requests carry the page's name in `Host`, so accepting only
//! the names the API listens as defeats it (and a token in a header is never sent by a browser
//! on its own, unlike a cookie).

use axum::http::StatusCode;
use std::net::{IpAddr, SocketAddr};
use stratus_core::token::{Action, Role, Scope};

/// How the API decides who is calling.
#[derive(Debug, Clone)]
pub struct Access {
    /// `Host` header values accepted, lower case (see [`allowed_hosts`]).
    pub hosts: Vec<String>,
    /// `/metrics` needs a token too (default: only when the API is not on loopback).
    pub metrics_auth: bool,
}

/// The `Host` values accepted for an API bound to `bind`: its IP literal with the port; for a
/// loopback or unspecified (`0.0.0.0`, `::`) bind also `localhost`, `127.0.0.1` and `[::1]`;
/// for an unspecified bind the host's own name; and each of `extra` (a name or address, with
/// the port added unless it has one). Without a port, a name is also accepted bare when the port
/// is the scheme's default (80, 443), as browsers then leave it out.
pub fn allowed_hosts(bind: SocketAddr, extra: &[String], hostname: Option<&str>) -> Vec<String> {
    let port = bind.port();
    let mut names: Vec<String> = vec![literal(bind.ip())];
    if bind.ip().is_loopback() || bind.ip().is_unspecified() {
        names.extend(["localhost", "127.0.0.1", "[::1]"].map(str::to_owned));
    }
    if bind.ip().is_unspecified() {
        names.extend(hostname.map(str::to_owned));
    }
    let mut out = Vec::new();
    let mut push = |h: String| {
        let h = h.to_ascii_lowercase();
        if !out.contains(&h) {
            out.push(h);
        }
    };
    for e in extra {
        let e = e.trim();
        if e.is_empty() {
            continue;
        }
        if has_port(e) {
            push(e.to_owned());
        } else {
            names.push(match e.parse::<IpAddr>() {
                Ok(ip) => literal(ip),
                Err(_) => e.to_owned(),
            });
        }
    }
    for n in names {
        push(format!("{n}:{port}"));
        if port == 80 || port == 443 {
            push(n);
        }
    }
    out
}

/// `10.0.0.5` or `[fe80::1]`: an address as it appears in a `Host` header.
fn literal(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

/// `name:port` or `[v6]:port` (a bare v6 literal has colons but no port).
fn has_port(h: &str) -> bool {
    match h.rsplit_once(':') {
        Some((host, port)) => {
            !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit())
                && (!host.contains(':') || (host.starts_with('[') && host.ends_with(']')))
        }
        None => false,
    }
}

/// Whether a request's `Host` header is one of `allowed` (names compare case-insensitively).
pub fn host_allowed(allowed: &[String], header: &str) -> bool {
    let h = header.trim().trim_end_matches('.');
    allowed.iter().any(|a| a.eq_ignore_ascii_case(h))
}

/// The token behind a request, once authenticated.
#[derive(Debug, Clone)]
pub struct Caller {
    pub token_id: String,
    pub role: Role,
    pub scope: Scope,
}

/// Why a request is refused: `(status, code, message)`.
pub type Refusal = (StatusCode, &'static str, String);

impl Caller {
    /// May this caller do `action`, on database `db` if it names one?
    pub fn check(&self, action: Action, db: Option<&str>) -> Result<(), Refusal> {
        if !self.role.allows(action) {
            let what = match action {
                Action::Read => "read",
                Action::Write => "change databases",
                Action::ManageTokens => "manage tokens",
                Action::ManageKeys => "rotate encryption keys",
            };
            return Err((
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("a {} token may not {what}", self.role),
            ));
        }
        if let Some(db) = db
            && !self.scope.covers(db)
        {
            return Err((
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("database {db} is outside this token's scope"),
            ));
        }
        Ok(())
    }

    /// Whether this caller sees database `db` in lists.
    pub fn sees(&self, db: &str) -> bool {
        self.scope.covers(db)
    }
}

/// The token in an `Authorization: Bearer …` header value.
pub fn bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(role: Role, scope: &[&str]) -> Caller {
        Caller {
            token_id: "x".into(),
            role,
            scope: Scope::parse(&scope.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap(),
        }
    }

    #[test]
    fn loopback_binds_accept_local_names_only() {
        let a = allowed_hosts("127.0.0.1:8033".parse().unwrap(), &[], None);
        for ok in [
            "127.0.0.1:8033",
            "localhost:8033",
            "LOCALHOST:8033",
            "[::1]:8033",
        ] {
            assert!(host_allowed(&a, ok), "{ok}");
        }
        for bad in [
            "evil.example:8033",
            "localhost",
            "127.0.0.1:80",
            "",
            "127.0.0.1:8033@evil",
        ] {
            assert!(!host_allowed(&a, bad), "{bad}");
        }
    }

    #[test]
    fn other_binds_accept_their_literal_and_configured_names() {
        let extra = vec![
            "api.example.com".to_owned(),
            "10.0.0.9".to_owned(),
            "proxy.example:9000".to_owned(),
            "fe80::1".to_owned(),
        ];
        let a = allowed_hosts("10.0.0.5:443".parse().unwrap(), &extra, Some("box"));
        for ok in [
            "10.0.0.5:443",
            "10.0.0.5",
            "api.example.com",
            "API.example.com:443",
            "10.0.0.9:443",
            "proxy.example:9000",
            "[fe80::1]:443",
        ] {
            assert!(host_allowed(&a, ok), "{ok}");
        }
        for bad in ["localhost:443", "box:443", "evil.example.com"] {
            assert!(!host_allowed(&a, bad), "{bad}");
        }
        let any = allowed_hosts("0.0.0.0:8033".parse().unwrap(), &[], Some("box"));
        assert!(host_allowed(&any, "box:8033") && host_allowed(&any, "localhost:8033"));
        let v6 = allowed_hosts("[::]:8033".parse().unwrap(), &[], None);
        assert!(host_allowed(&v6, "[::1]:8033") && host_allowed(&v6, "[::]:8033"));
    }

    #[test]
    fn roles_and_scopes_decide() {
        let viewer = caller(Role::Viewer, &["shop"]);
        assert!(viewer.check(Action::Read, Some("shop")).is_ok());
        assert_eq!(
            viewer.check(Action::Write, Some("shop")).unwrap_err().0,
            StatusCode::FORBIDDEN
        );
        assert!(viewer.check(Action::Read, Some("blog")).is_err());
        let dev = caller(Role::Developer, &["shop-*"]);
        assert!(dev.check(Action::Write, Some("shop-a")).is_ok());
        assert!(dev.check(Action::Write, Some("shop")).is_err());
        assert!(dev.check(Action::ManageTokens, None).is_err());
        assert!(dev.sees("shop-b") && !dev.sees("blog"));
        let admin = caller(Role::Admin, &[]);
        assert!(admin.check(Action::ManageTokens, None).is_ok());
        assert!(admin.check(Action::Write, Some("anything")).is_ok());
    }

    #[test]
    fn bearer_headers_parse() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer "), None);
        assert_eq!(bearer("Bearer"), None);
    }
}
