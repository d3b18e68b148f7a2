//! A database's accounts as the proxy needs them to let clients in while the server sleeps:
//! each login's `mysql_native_password` hash (`SHA1(SHA1(password))`, all the proxy checks a
//! login against, as on one machine). The operator reads them from the running server and
//! publishes them in the database's Secret under [`KEY`]; the proxy reads them there, so a
//! parked database needs no wake to check a password. Only the `'%'` accounts a client may log
//! in as are published: never Stratus's own (a reserved name), nor accounts of another plugin,
//! which the proxy cannot log in.

use std::collections::BTreeMap;
use stratus_core::{NativeHash, UserName};
use stratus_runtime::admin::Account;

/// The Secret's key.
pub const KEY: &str = "accounts";

/// The published form: one `user *HASH` per line, sorted, so an unchanged list is the same text
/// and is not written again.
pub fn encode(rows: &[Account]) -> String {
    let logins: BTreeMap<&str, NativeHash> = rows
        .iter()
        .filter(|a| a.plugin.as_deref() == Some("mysql_native_password"))
        .filter(|a| UserName::parse(&a.user).is_ok())
        .filter_map(|a| Some((a.user.as_str(), NativeHash::parse(a.auth.as_deref()?)?)))
        .collect();
    logins
        .into_iter()
        .map(|(user, hash)| format!("{user} {hash}\n"))
        .collect()
}

/// The logins in a published list. A line that does not parse (someone edited the Secret) is
/// left out: that account cannot log in, and no other is affected.
pub fn decode(text: &str) -> BTreeMap<String, NativeHash> {
    text.lines()
        .filter_map(|line| {
            let (user, hash) = line.split_once(' ')?;
            UserName::parse(user).ok()?;
            Some((user.to_owned(), NativeHash::parse(hash)?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(user: &str, plugin: &str, auth: &str) -> Account {
        Account {
            user: user.into(),
            plugin: Some(plugin.into()),
            auth: Some(auth.into()),
        }
    }

    #[test]
    fn only_logins_a_client_may_use_are_published_and_read_back() {
        let (a, b) = (NativeHash::of_password("a"), NativeHash::of_password("b"));
        let rows = [
            row("app", "mysql_native_password", &b.to_string()),
            row("admin", "mysql_native_password", &a.to_string()),
            row("stratus_admin", "mysql_native_password", &a.to_string()),
            row("root", "mysql_native_password", &a.to_string()),
            row("ed", "ed25519", "ZmFrZQ"),
            row("nopw", "mysql_native_password", ""),
        ];
        let text = encode(&rows);
        assert_eq!(text, format!("admin {a}\napp {b}\n"));
        let back = decode(&text);
        assert_eq!(back.len(), 2);
        assert_eq!((back["admin"].0, back["app"].0), (a.0, b.0));
    }

    #[test]
    fn an_edited_list_loses_only_the_lines_that_do_not_parse() {
        let a = NativeHash::of_password("a");
        let text = format!("admin {a}\nstratus_admin {a}\nbad line\napp *XYZ\n\nx;y {a}\n");
        let back = decode(&text);
        assert_eq!(back.keys().collect::<Vec<_>>(), ["admin"]);
    }
}
