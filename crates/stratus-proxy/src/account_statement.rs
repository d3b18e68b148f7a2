//! What account statements say that the proxy must know.
//!
//! **New passwords**, where the statement says them: the proxy logs in to the backend with
//! `SHA1(password)`, so a session that changes its own password must log in with the new one
//! after its next reconnect.
//!
//! Statements (<https://mariadb.com/kb/en/set-password/>, <https://mariadb.com/kb/en/alter-user/>,
//! <https://mariadb.com/kb/en/grant/>):
//! * `SET PASSWORD [FOR account] = PASSWORD('new')`: known; `= 'hash'` or `OLD_PASSWORD(…)`: not;
//! * `ALTER USER [IF EXISTS] account IDENTIFIED BY 'new' [, …]`: known;
//!   `IDENTIFIED BY PASSWORD 'hash'`, `IDENTIFIED VIA|WITH plugin …`: not, except
//!   `VIA mysql_native_password USING PASSWORD('new')`;
//! * `GRANT … TO account IDENTIFIED …`: as `ALTER USER`.
//!
//! **TLS requirements** (`REQUIRE SSL|X509|ISSUER|SUBJECT|CIPHER`, see
//! <https://mariadb.com/kb/en/securing-connections-for-client-and-server/#requiring-tls>): TLS
//! ends at the proxy, which reaches the server over a local socket, so the server would refuse
//! every login of such an account ([`requires_tls`]).
//!
//! A small lexer of its own (strings with their escapes, quoted names, comments, executable
//! comments); anything it does not follow yields no change, or an unknown one.

/// Whose password a statement changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Account {
    /// `CURRENT_USER`, `CURRENT_USER()`, or no `FOR` in `SET PASSWORD`.
    Current,
    /// A named account; `host` is `None` when not given (`'%'` for the server).
    Named {
        user: Vec<u8>,
        host: Option<Vec<u8>>,
    },
}

/// The new password, if the statement says it. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub enum NewPassword {
    Known(Vec<u8>),
    /// A hash, another plugin, or a form this parser does not follow.
    Unknown,
}

impl std::fmt::Debug for NewPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NewPassword::Known(_) => "Known(..)",
            NewPassword::Unknown => "Unknown",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub account: Account,
    pub password: NewPassword,
}

/// The password changes of one statement. `backslash_escapes`: the session's `sql_mode` lacks
/// `NO_BACKSLASH_ESCAPES`.
pub fn changes(sql: &[u8], backslash_escapes: bool) -> Vec<Change> {
    let toks = lex(sql, backslash_escapes);
    let mut p = Parser { toks: &toks, i: 0 };
    let mut out = Vec::new();
    if p.word("SET") && p.word("PASSWORD") {
        let account = if p.word("FOR") {
            match p.account() {
                Some(a) => a,
                None => return out,
            }
        } else {
            Account::Current
        };
        if !p.punct(b'=') {
            return out;
        }
        let password = match p.password_call() {
            Some(pw) if p.at_end() => known(pw),
            _ => NewPassword::Unknown,
        };
        out.push(Change { account, password });
    } else if p.at(0, "ALTER") && p.at(1, "USER") {
        p.i = 2;
        if p.at(0, "IF") && p.at(1, "EXISTS") {
            p.i += 2;
        }
        p.accounts(&mut out);
    } else if p.word("GRANT") {
        // The account list follows the first top-level `TO`.
        let mut depth = 0i32;
        while let Some(t) = p.toks.get(p.i) {
            match t {
                Tok::Punct(b'(') => depth += 1,
                Tok::Punct(b')') => depth -= 1,
                Tok::Word(w) if depth == 0 && w.eq_ignore_ascii_case(b"TO") => {
                    p.i += 1;
                    p.accounts(&mut out);
                    break;
                }
                _ => {}
            }
            p.i += 1;
        }
    }
    out
}

/// Whether a `CREATE USER`, `ALTER USER` or `GRANT` asks the server for what the proxy cannot
/// give it: a client certificate (`REQUIRE X509`, `ISSUER` or `SUBJECT`: the proxy ends the
/// client's TLS and holds no key for its certificate), or, where the servers take no TLS
/// (`servers_take_tls` false), TLS at all (`SSL`, `CIPHER`). `REQUIRE NONE` asks nothing. A
/// text match: the same statement run by `EXECUTE IMMEDIATE` or a procedure is not seen, and
/// only locks the account out, as it would be here.
pub fn requires_tls(sql: &[u8], backslash_escapes: bool, servers_take_tls: bool) -> bool {
    // A versioned comment (`/*!NNNNN …*/`) is code on a server of that version or later and
    // skipped, to its `*/`, on an older one: both readings are checked.
    asks_for_tls(sql, backslash_escapes, servers_take_tls)
        || without_versioned_comments(sql)
            .is_some_and(|s| asks_for_tls(&s, backslash_escapes, servers_take_tls))
}

fn asks_for_tls(sql: &[u8], backslash_escapes: bool, servers_take_tls: bool) -> bool {
    let toks = lex(sql, backslash_escapes);
    let p = Parser { toks: &toks, i: 0 };
    let account_statement = (p.at(0, "CREATE") || p.at(0, "ALTER"))
        && (p.at(1, "USER") || (p.at(1, "OR") && p.at(2, "REPLACE") && p.at(3, "USER")))
        || p.at(0, "GRANT");
    let cannot: &[&[u8]] = match servers_take_tls {
        true => &[b"X509", b"ISSUER", b"SUBJECT"],
        false => &[b"SSL", b"X509", b"ISSUER", b"SUBJECT", b"CIPHER"],
    };
    // The clause is outside parentheses: `GRANT SELECT (`require`, `subject`) ON …` names
    // columns.
    let mut depth = 0usize;
    let top: Vec<&Tok> = toks
        .iter()
        .filter(|t| match t {
            Tok::Punct(b'(') => {
                depth += 1;
                false
            }
            Tok::Punct(b')') => {
                depth = depth.saturating_sub(1);
                false
            }
            _ => depth == 0,
        })
        .collect();
    let Some(require) = top
        .iter()
        .position(|t| matches!(t, Tok::Word(w) if w.eq_ignore_ascii_case(b"REQUIRE")))
    else {
        return false;
    };
    // `REQUIRE SSL AND X509`, `REQUIRE ISSUER '…' SUBJECT '…'`: every option after it.
    account_statement
        && top[require + 1..]
            .iter()
            .any(|t| matches!(t, Tok::Word(w) if cannot.iter().any(|k| w.eq_ignore_ascii_case(k))))
}

/// `sql` as a server too old for its versioned comments reads it: each `/*!NNNNN` or
/// `/*M!NNNNN` up to the next `*/` is a space (quotes inside do not count). `None` without one.
fn without_versioned_comments(sql: &[u8]) -> Option<Vec<u8>> {
    let opens = |i: usize| {
        let rest = sql[i..].strip_prefix(b"/*")?;
        let marker = executable_marker(rest);
        (marker > 0 && rest.get(marker).is_some_and(u8::is_ascii_digit)).then_some(2 + marker)
    };
    let mut out = Vec::with_capacity(sql.len());
    let mut found = false;
    let mut i = 0;
    while i < sql.len() {
        match opens(i) {
            Some(marker) => {
                found = true;
                out.push(b' ');
                i = sql[i + marker..]
                    .windows(2)
                    .position(|w| w == b"*/")
                    .map_or(sql.len(), |end| i + marker + end + 2);
            }
            None => {
                out.push(sql[i]);
                i += 1;
            }
        }
    }
    found.then_some(out)
}

/// An empty password logs in with an empty reply, which the proxy does not do.
fn known(pw: Vec<u8>) -> NewPassword {
    if pw.is_empty() {
        NewPassword::Unknown
    } else {
        NewPassword::Known(pw)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    /// A bare or backquoted name, or a keyword.
    Word(Vec<u8>),
    /// A quoted string, unescaped.
    Str(Vec<u8>),
    Punct(u8),
}

struct Parser<'a> {
    toks: &'a [Tok],
    i: usize,
}

impl Parser<'_> {
    fn at(&self, ahead: usize, kw: &str) -> bool {
        matches!(self.toks.get(self.i + ahead), Some(Tok::Word(w)) if w.eq_ignore_ascii_case(kw.as_bytes()))
    }

    /// Consumes the keyword if it is next.
    fn word(&mut self, kw: &str) -> bool {
        let hit = self.at(0, kw);
        self.i += usize::from(hit);
        hit
    }

    fn punct(&mut self, c: u8) -> bool {
        let hit = self.toks.get(self.i) == Some(&Tok::Punct(c));
        self.i += usize::from(hit);
        hit
    }

    fn at_end(&self) -> bool {
        self.i >= self.toks.len()
    }

    /// A name or a string: a user or host name.
    fn name(&mut self) -> Option<Vec<u8>> {
        match self.toks.get(self.i)? {
            Tok::Word(w) | Tok::Str(w) => {
                self.i += 1;
                Some(w.clone())
            }
            Tok::Punct(_) => None,
        }
    }

    /// A string literal, after an optional character set introducer (`_utf8mb4'…'`).
    fn string(&mut self) -> Option<Vec<u8>> {
        if matches!(self.toks.get(self.i), Some(Tok::Word(w)) if w.first() == Some(&b'_'))
            && matches!(self.toks.get(self.i + 1), Some(Tok::Str(_)))
        {
            self.i += 1;
        }
        match self.toks.get(self.i)? {
            Tok::Str(s) => {
                self.i += 1;
                Some(s.clone())
            }
            _ => None,
        }
    }

    fn account(&mut self) -> Option<Account> {
        if self.word("CURRENT_USER") {
            if self.punct(b'(') && !self.punct(b')') {
                return None;
            }
            return Some(Account::Current);
        }
        let user = self.name()?;
        let host = if self.punct(b'@') {
            Some(self.name()?)
        } else {
            None
        };
        Some(Account::Named { user, host })
    }

    /// `PASSWORD('new')`.
    fn password_call(&mut self) -> Option<Vec<u8>> {
        if !(self.word("PASSWORD") && self.punct(b'(')) {
            return None;
        }
        let pw = self.string()?;
        self.punct(b')').then_some(pw)
    }

    /// `account [auth] [, account [auth]] …`, recording those with an `IDENTIFIED` clause.
    fn accounts(&mut self, out: &mut Vec<Change>) {
        loop {
            let Some(account) = self.account() else {
                return;
            };
            if self.word("IDENTIFIED") {
                let password = self.auth();
                out.push(Change { account, password });
            }
            // Whatever else this account's part says, up to the next one.
            let mut depth = 0i32;
            loop {
                match self.toks.get(self.i) {
                    None => return,
                    Some(Tok::Punct(b',')) if depth == 0 => {
                        self.i += 1;
                        break;
                    }
                    Some(Tok::Punct(b'(')) => depth += 1,
                    Some(Tok::Punct(b')')) => depth -= 1,
                    _ => {}
                }
                self.i += 1;
            }
        }
    }

    /// After `IDENTIFIED`.
    fn auth(&mut self) -> NewPassword {
        if self.word("BY") {
            if self.at(0, "PASSWORD") {
                return NewPassword::Unknown; // a hash
            }
            return match self.string() {
                Some(pw) if !self.at(0, "OR") => known(pw),
                _ => NewPassword::Unknown,
            };
        }
        if !(self.word("VIA") || self.word("WITH")) {
            return NewPassword::Unknown;
        }
        let native =
            matches!(self.name(), Some(p) if p.eq_ignore_ascii_case(b"mysql_native_password"));
        if native && (self.word("USING") || self.word("AS")) {
            if let Some(pw) = self.password_call() {
                if !self.at(0, "OR") {
                    return known(pw);
                }
            }
        }
        NewPassword::Unknown
    }
}

/// The length of an executable comment's marker (`!`, `M!`) at the start of what follows a
/// `/*`; 0 for a plain comment.
fn executable_marker(after_open: &[u8]) -> usize {
    if after_open.starts_with(b"!") {
        1
    } else if after_open.starts_with(b"M!") {
        2
    } else {
        0
    }
}

fn lex(sql: &[u8], backslash_escapes: bool) -> Vec<Tok> {
    let mut out = Vec::new();
    let mut i = 0;
    let word_byte = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80;
    while let Some(&c) = sql.get(i) {
        match c {
            b'-' if sql.get(i + 1) == Some(&b'-')
                && sql.get(i + 2).is_none_or(|b| b.is_ascii_whitespace()) =>
            {
                i = skip_line(sql, i);
            }
            b'#' => i = skip_line(sql, i),
            b'/' if sql.get(i + 1) == Some(&b'*') => {
                // Executable comments are code: drop the marker and version, keep the inside.
                let marker = executable_marker(&sql[i + 2..]);
                if marker > 0 {
                    i += 2 + marker;
                    while sql.get(i).is_some_and(u8::is_ascii_digit) {
                        i += 1;
                    }
                } else {
                    i = sql[i + 2..]
                        .windows(2)
                        .position(|w| w == b"*/")
                        .map_or(sql.len(), |p| i + 2 + p + 2);
                }
            }
            b'*' if sql.get(i + 1) == Some(&b'/') => i += 2, // the end of an executable comment
            b'\'' | b'"' => {
                let (s, next) = string(sql, i, backslash_escapes);
                out.push(Tok::Str(s));
                i = next;
            }
            b'`' => {
                let mut s = Vec::new();
                i += 1;
                while let Some(&b) = sql.get(i) {
                    i += 1;
                    if b == b'`' {
                        if sql.get(i) == Some(&b'`') {
                            i += 1;
                        } else {
                            break;
                        }
                    }
                    s.push(b);
                }
                out.push(Tok::Word(s));
            }
            _ if word_byte(c) => {
                let start = i;
                while sql.get(i).is_some_and(|&b| word_byte(b)) {
                    i += 1;
                }
                out.push(Tok::Word(sql[start..i].to_vec()));
            }
            _ if c.is_ascii_whitespace() || c == b';' => i += 1,
            _ => {
                out.push(Tok::Punct(c));
                i += 1;
            }
        }
    }
    out
}

fn skip_line(sql: &[u8], i: usize) -> usize {
    sql[i..]
        .iter()
        .position(|&b| b == b'\n')
        .map_or(sql.len(), |p| i + p + 1)
}

/// A quoted string starting at `start`: its value and the index after it
/// (<https://mariadb.com/kb/en/string-literals/>).
fn string(sql: &[u8], start: usize, backslash_escapes: bool) -> (Vec<u8>, usize) {
    let quote = sql[start];
    let mut s = Vec::new();
    let mut i = start + 1;
    while let Some(&b) = sql.get(i) {
        i += 1;
        if b == quote {
            if sql.get(i) == Some(&quote) {
                s.push(quote);
                i += 1;
                continue;
            }
            return (s, i);
        }
        if b == b'\\' && backslash_escapes {
            let Some(&e) = sql.get(i) else { break };
            i += 1;
            match e {
                b'0' => s.push(0),
                b'b' => s.push(8),
                b'n' => s.push(b'\n'),
                b'r' => s.push(b'\r'),
                b't' => s.push(b'\t'),
                b'Z' => s.push(26),
                // Kept with their backslash, for LIKE patterns.
                b'%' | b'_' => s.extend_from_slice(&[b'\\', e]),
                _ => s.push(e),
            }
            continue;
        }
        s.push(b);
    }
    (s, i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(user: &str, host: Option<&str>) -> Account {
        Account::Named {
            user: user.into(),
            host: host.map(Into::into),
        }
    }

    fn known(pw: &str) -> NewPassword {
        NewPassword::Known(pw.into())
    }

    fn one(sql: &str) -> Option<Change> {
        let mut all = changes(sql.as_bytes(), true);
        assert!(all.len() <= 1, "{sql}: {all:?}");
        all.pop()
    }

    #[test]
    fn tls_requirements() {
        for required in [
            "CREATE USER app REQUIRE SSL",
            "create or replace user 'app'@'%' identified by 'x' require x509",
            "CREATE USER IF NOT EXISTS app REQUIRE ISSUER '/C=FI' AND SUBJECT '/CN=a'",
            "ALTER USER app REQUIRE CIPHER 'EDH-RSA-DES-CBC3-SHA'",
            "GRANT SELECT ON shop.* TO app REQUIRE SSL",
            "/*!50706 ALTER USER app REQUIRE SSL */",
            "GRANT SELECT (`require`) ON shop.t TO app REQUIRE SSL",
        ] {
            assert!(requires_tls(required.as_bytes(), true, false), "{required}");
        }
        // Servers that take TLS: only a client certificate is out of reach.
        for cert in [
            "create or replace user 'app'@'%' identified by 'x' require x509",
            "CREATE USER IF NOT EXISTS app REQUIRE ISSUER '/C=FI' AND SUBJECT '/CN=a'",
            "ALTER USER app REQUIRE SSL AND X509",
            "GRANT SELECT ON shop.* TO app REQUIRE SUBJECT '/CN=a'",
            "ALTER USER app /*!999999 ( */ REQUIRE X509",
            "ALTER USER app /*M!999999 ( */ REQUIRE X509",
            "ALTER USER app /*!999999 # */ REQUIRE X509",
            "ALTER USER app /*!999999 ' */ REQUIRE X509 -- '",
            "ALTER USER app /*!100000 REQUIRE X509 */",
        ] {
            assert!(requires_tls(cert.as_bytes(), true, true), "{cert}");
        }
        for tls in [
            "CREATE USER app REQUIRE SSL",
            "ALTER USER app REQUIRE CIPHER 'TLS_AES_256_GCM_SHA384'",
            "GRANT SELECT ON shop.* TO x509 REQUIRE SSL",
            "/*!50706 ALTER USER app REQUIRE SSL */",
        ] {
            assert!(!requires_tls(tls.as_bytes(), true, true), "{tls}");
        }
        for not in [
            "CREATE USER app REQUIRE NONE",
            "ALTER USER app IDENTIFIED BY 'REQUIRE SSL'",
            "CREATE USER app -- REQUIRE SSL",
            "GRANT SELECT ON shop.* TO app",
            "SELECT 'x' REQUIRE, 1 SSL",
            "DROP USER app",
            "CREATE TABLE t (require int, ssl int)",
            "GRANT SELECT (`require`, `ssl`, `subject`) ON shop.t TO app",
            "GRANT UPDATE (`require`) ON shop.t TO app REQUIRE NONE",
            "ALTER USER app /*!999999 REQUIRE NONE",
            "/*!",
            "/*M!1",
        ] {
            assert!(!requires_tls(not.as_bytes(), true, false), "{not}");
        }
    }

    #[test]
    fn set_password() {
        let c = |account, password| Some(Change { account, password });
        assert_eq!(
            one("SET PASSWORD = PASSWORD('new')"),
            c(Account::Current, known("new"))
        );
        assert_eq!(
            one("set password for current_user() = password(\"n'w\")"),
            c(Account::Current, known("n'w"))
        );
        assert_eq!(
            one("SET PASSWORD FOR CURRENT_USER = PASSWORD('it''s')"),
            c(Account::Current, known("it's"))
        );
        assert_eq!(
            one("SET PASSWORD FOR 'app'@'%' = PASSWORD('a\\\\b\\'c')"),
            c(named("app", Some("%")), known("a\\b'c"))
        );
        assert_eq!(
            one("SET PASSWORD FOR app = PASSWORD(_utf8mb4'x') -- done"),
            c(named("app", None), known("x"))
        );
        assert_eq!(
            one("/*!40101 SET PASSWORD FOR `app`@localhost = PASSWORD('y') */"),
            c(named("app", Some("localhost")), known("y"))
        );
        for unknown in [
            "SET PASSWORD = '*E56A114692FE0DE073F9A1DD68A00EEB9703F3F1'",
            "SET PASSWORD = OLD_PASSWORD('x')",
            "SET PASSWORD = PASSWORD(CONCAT('a', 'b'))",
            "SET PASSWORD = PASSWORD('')",
        ] {
            assert_eq!(
                one(unknown).map(|c| c.password),
                Some(NewPassword::Unknown),
                "{unknown}"
            );
        }
    }

    #[test]
    fn alter_user_and_grant() {
        assert_eq!(
            changes(
                b"ALTER USER IF EXISTS CURRENT_USER() IDENTIFIED BY 'new' REQUIRE NONE",
                true
            ),
            [Change {
                account: Account::Current,
                password: known("new")
            }]
        );
        assert_eq!(
            changes(
                b"ALTER USER 'app'@'%' IDENTIFIED BY 'a', bob IDENTIFIED BY PASSWORD '*00', carl ACCOUNT LOCK",
                true
            ),
            [
                Change {
                    account: named("app", Some("%")),
                    password: known("a")
                },
                Change {
                    account: named("bob", None),
                    password: NewPassword::Unknown
                },
            ]
        );
        assert_eq!(
            one("ALTER USER app IDENTIFIED VIA mysql_native_password USING PASSWORD('p')")
                .map(|c| c.password),
            Some(known("p"))
        );
        for unknown in [
            "ALTER USER app IDENTIFIED VIA mysql_native_password USING '*00'",
            "ALTER USER app IDENTIFIED VIA ed25519 USING PASSWORD('p')",
            "ALTER USER app IDENTIFIED VIA unix_socket OR mysql_native_password USING PASSWORD('p')",
            "ALTER USER app IDENTIFIED WITH unix_socket",
        ] {
            assert_eq!(
                one(unknown).map(|c| c.password),
                Some(NewPassword::Unknown),
                "{unknown}"
            );
        }
        assert_eq!(
            one("GRANT SELECT (a, b) ON db.t TO 'app'@'%' IDENTIFIED BY 'g'"),
            Some(Change {
                account: named("app", Some("%")),
                password: known("g")
            })
        );
        assert_eq!(one("GRANT SELECT ON *.* TO app"), None);
        assert_eq!(one("ALTER USER app ACCOUNT LOCK"), None);
        assert_eq!(one("CREATE USER app IDENTIFIED BY 'x'"), None);
        assert_eq!(one("SELECT PASSWORD('x')"), None);
    }

    #[test]
    fn escapes_follow_the_sql_mode() {
        let sql = b"SET PASSWORD = PASSWORD('a\\nb')";
        assert_eq!(changes(sql, true)[0].password, known("a\nb"));
        assert_eq!(changes(sql, false)[0].password, known("a\\nb"));
    }

    #[test]
    fn passwords_are_not_printed() {
        let c = one("SET PASSWORD = PASSWORD('hunter2')").unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn any_input_is_safe() {
        for sql in [
            "SET PASSWORD FOR",
            "SET PASSWORD = PASSWORD('unterminated",
            "ALTER USER",
            "ALTER USER 'a'@",
            "GRANT ALL ON *.* TO",
            "/*! SET PASSWORD",
            "SET PASSWORD = PASSWORD('x'\\",
        ] {
            let _ = changes(sql.as_bytes(), true);
        }
    }
}
