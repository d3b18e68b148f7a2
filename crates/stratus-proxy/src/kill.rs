//! `KILL [HARD | SOFT] [CONNECTION | QUERY] id` (<https://mariadb.com/kb/en/kill/>), recognised
//! so the proxy can act on the id it gave the client in its greeting: that id names the client's
//! session for as long as it lives, whichever backend connection (with its own thread id) serves
//! it now. `KILL QUERY ID query_id` and `KILL USER name` are not about connection ids and pass
//! through unchanged.

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
        let mode = self.mode.map(|m| format!("{m} ")).unwrap_or_default();
        let scope = match self.scope {
            Scope::Connection => "CONNECTION",
            Scope::Query => "QUERY",
        };
        format!("KILL {mode}{scope} {thread}")
    }
}

/// Parses a lone `KILL` of a connection id; anything else (comments, other forms, trailing
/// statements) is `None`, and is passed to the server as it is.
pub fn parse(sql: &[u8]) -> Option<Kill> {
    // Every statement comes through here: decide on its first bytes before looking further.
    let start = sql.iter().position(|b| !b.is_ascii_whitespace())?;
    if !sql[start..].get(..4)?.eq_ignore_ascii_case(b"KILL") {
        return None;
    }
    let text = std::str::from_utf8(sql).ok()?;
    let text = text.trim().trim_end_matches(';').trim_end();
    let mut words = text.split_ascii_whitespace().peekable();
    if !words.next()?.eq_ignore_ascii_case("KILL") {
        return None;
    }
    let mut mode = None;
    if let Some(w) = words.peek() {
        if w.eq_ignore_ascii_case("HARD") {
            mode = Some("HARD");
        } else if w.eq_ignore_ascii_case("SOFT") {
            mode = Some("SOFT");
        }
        if mode.is_some() {
            words.next();
        }
    }
    let mut scope = Scope::Connection;
    if let Some(w) = words.peek() {
        if w.eq_ignore_ascii_case("CONNECTION") {
            words.next();
        } else if w.eq_ignore_ascii_case("QUERY") {
            scope = Scope::Query;
            words.next();
        }
    }
    let id: u64 = words.next()?.parse().ok()?;
    if words.next().is_some() {
        return None;
    }
    Some(Kill { scope, mode, id })
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
        for other in [
            "KILL QUERY ID 5",
            "KILL USER 'app'",
            "KILL 1; SELECT 1",
            "/* c */ KILL 1",
            "KILL",
            "KILL -1",
            "KILLS 1",
            "SELECT 1",
        ] {
            assert_eq!(k(other), None, "{other}");
        }
    }
}
