//! `KILL [HARD | SOFT] [CONNECTION | QUERY] id` (<https://mariadb.com/kb/en/kill/>), recognised
//! so the proxy can act on the id it gave the client in its greeting: that id names the client's
//! session for as long as it lives, whichever backend connection (with its own thread id) serves
//! it now; so does the parameter of a prepared `KILL ?`. `KILL QUERY ID query_id` and
//! `KILL USER name` are not about connection ids and pass through unchanged.

/// What a `KILL` ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Connection,
    Query,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kill {
    pub scope: Scope,
    /// `HARD` or `SOFT`, when given.
    pub mode: Option<&'static str>,
    pub id: u64,
}

impl Kill {
    /// The statement for the server, naming the backend thread `thread` instead.
    pub fn for_thread(&self, thread: u32) -> String {
        self.naming(&thread.to_string())
    }

    /// The statement for the server when the session names itself: the connection the
    /// statement runs on, whichever that is by then.
    pub fn for_own_connection(&self) -> String {
        self.naming("CONNECTION_ID()")
    }

    fn naming(&self, thread: &str) -> String {
        let mode = self.mode.map(|m| format!("{m} ")).unwrap_or_default();
        let scope = match self.scope {
            Scope::Connection => "CONNECTION",
            Scope::Query => "QUERY",
        };
        format!("KILL {mode}{scope} {thread}")
    }
}

/// Parses a lone `KILL` of a connection id, comments around it allowed; anything else (other
/// forms, executable comments, trailing statements) is `None`, and is passed to the server as
/// it is.
pub fn parse(sql: &[u8]) -> Option<Kill> {
    let (scope, mode, id) = parse_form(sql)?;
    Some(Kill {
        scope,
        mode,
        id: id?,
    })
}

/// A prepared `KILL ?`, whose id each execute gives as its one parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PreparedKill {
    scope: Scope,
    mode: Option<&'static str>,
}

impl PreparedKill {
    pub fn with_id(self, id: u64) -> Kill {
        Kill {
            scope: self.scope,
            mode: self.mode,
            id,
        }
    }
}

/// Parses a lone `KILL … ?` as [`parse`] parses a `KILL` of a number.
pub fn parse_prepared(sql: &[u8]) -> Option<PreparedKill> {
    match parse_form(sql)? {
        (scope, mode, None) => Some(PreparedKill { scope, mode }),
        _ => None,
    }
}

/// A lone `KILL`'s scope, mode and id (`None`: a `?`).
fn parse_form(sql: &[u8]) -> Option<(Scope, Option<&'static str>, Option<u64>)> {
    // Every statement comes through here: decide on its first bytes before looking further.
    let s = skip_space(sql);
    let (kw, s) = word(s)?;
    if !kw.eq_ignore_ascii_case(b"KILL") {
        return None;
    }
    let (mut next, mut s) = word(skip_space(s)).unwrap_or((b"", s));
    let mode = ["HARD", "SOFT"]
        .into_iter()
        .find(|m| next.eq_ignore_ascii_case(m.as_bytes()));
    if mode.is_some() {
        (next, s) = word(skip_space(s)).unwrap_or((b"", s));
    }
    let mut scope = Scope::Connection;
    if next.eq_ignore_ascii_case(b"QUERY") {
        scope = Scope::Query;
    } else if !next.is_empty() && !next.eq_ignore_ascii_case(b"CONNECTION") {
        return None;
    }
    let s = skip_space(s);
    let (id, s) = match s.strip_prefix(b"?") {
        Some(after) => (None, after),
        None => {
            let digits = s.iter().take_while(|b| b.is_ascii_digit()).count();
            let id: u64 = std::str::from_utf8(&s[..digits]).ok()?.parse().ok()?;
            (Some(id), &s[digits..])
        }
    };
    let mut rest = skip_space(s);
    if let Some(after) = rest.strip_prefix(b";") {
        rest = skip_space(after);
    }
    rest.is_empty().then_some((scope, mode, id))
}

/// A bare word (letters and `_`) at the start, and what follows it; a word that runs on into a
/// digit or `$` is none (`KILL2`).
fn word(s: &[u8]) -> Option<(&[u8], &[u8])> {
    let n = s
        .iter()
        .take_while(|b| b.is_ascii_alphabetic() || **b == b'_')
        .count();
    let next = s.get(n).copied().unwrap_or(b' ');
    (n > 0 && !next.is_ascii_digit() && next != b'$').then(|| s.split_at(n))
}

/// Skips whitespace and comments (`/* … */`, `-- …`, `# …`), but not an executable comment
/// (`/*!…*/`, `/*M!…*/`), whose text the server runs.
fn skip_space(mut s: &[u8]) -> &[u8] {
    loop {
        let start = s.len();
        s = &s[s.iter().take_while(|b| b.is_ascii_whitespace()).count()..];
        if s.starts_with(b"/*") && !s.starts_with(b"/*!") && !s.starts_with(b"/*M!") {
            match s.windows(2).skip(2).position(|w| w == b"*/") {
                Some(i) => s = &s[i + 4..],
                None => return s,
            }
        } else if s.starts_with(b"#")
            || (s.starts_with(b"--") && s.get(2).is_none_or(|b| b.is_ascii_whitespace()))
        {
            s = &s[s.iter().position(|b| *b == b'\n').unwrap_or(s.len())..];
        }
        if s.len() == start {
            return s;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_forms_that_name_a_connection() {
        let k = |s: &str| parse(s.as_bytes());
        assert_eq!(
            k("KILL 42"),
            Some(Kill {
                scope: Scope::Connection,
                mode: None,
                id: 42
            })
        );
        assert_eq!(
            k(" kill query 7 ;"),
            Some(Kill {
                scope: Scope::Query,
                mode: None,
                id: 7
            })
        );
        assert_eq!(
            k("KILL HARD CONNECTION 9"),
            Some(Kill {
                scope: Scope::Connection,
                mode: Some("HARD"),
                id: 9
            })
        );
        assert_eq!(
            k("KILL SOFT QUERY 3").map(|k| k.for_thread(88)).as_deref(),
            Some("KILL SOFT QUERY 88")
        );
        assert_eq!(
            k("KILL 3").map(|k| k.for_own_connection()).as_deref(),
            Some("KILL CONNECTION CONNECTION_ID()")
        );
        // Prepared: the id is the parameter's.
        let p = |s: &str| parse_prepared(s.as_bytes()).map(|p| p.with_id(7));
        assert_eq!(p("KILL QUERY ?"), k("KILL QUERY 7"));
        assert_eq!(p("/* pool */ kill hard ?;"), k("KILL HARD 7"));
        assert_eq!(p("KILL 7"), None);
        assert_eq!(p("KILL ? ?"), None);
        assert_eq!(k("KILL ?"), None);
        for other in [
            "KILL QUERY ID 5",
            "KILL USER 'app'",
            "KILL 1; SELECT 1",
            "/*! KILL 1 */",
            "KILL 1 2",
            "KILL CONNECTION",
            "KILL 1x",
            "KILL HARD SOFT 1",
            "KILL",
            "KILL -1",
            "KILLS 1",
            "SELECT 1",
        ] {
            assert_eq!(k(other), None, "{other}");
        }
        // Comments around it, as ORMs and tracing libraries add them.
        for commented in [
            "/* c */ KILL 1",
            "-- c\nKILL/* x */QUERY 1 # end",
            "KILL 1; -- done",
            "/* app:shop */ KILL QUERY 1 -- cancel",
        ] {
            assert_eq!(k(commented).map(|k| k.id), Some(1), "{commented}");
        }
    }
}
