//! Quoting for the SQL Stratus writes itself (accounts, session replay): string literals and
//! identifiers as MariaDB reads them (<https://mariadb.com/kb/en/string-literals/>,
//! <https://mariadb.com/kb/en/identifier-names/>).

/// `'text'` with MariaDB string-literal escaping (backslash and quote).
pub fn quote_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            '\0' => out.push_str("\\0"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// `` `ident` `` with embedded backticks doubled.
pub fn quote_ident(s: &str) -> String {
    format!("`{}`", s.replace('`', "``"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote_str("it's \\ ok"), "'it''s \\\\ ok'");
        assert_eq!(quote_ident("my-db`x"), "`my-db``x`");
    }
}
