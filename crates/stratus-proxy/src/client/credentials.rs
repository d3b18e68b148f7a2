//! The session's own credentials for its backend logins. The proxy logs in as the client with
//! the `SHA1(password)` learnt at the client's login, so when the client changes its own password
//! in SQL, the next backend connection (after a suspend, a park, a crash) must use the new one.

use super::Session;
use crate::Directory;
use crate::account_statement::{self, Account, NewPassword};
use crate::error::SqlError;
use stratus_wire::auth;
use stratus_wire::classify::{Kind, Statement};

impl<D: Directory> Session<D> {
    /// After account statements succeeded (and the catalog re-read the accounts): a new
    /// password of the session's own account, where the statement says it, is the one its next
    /// backend login uses; one it does not say (a hash, another plugin) is remembered, so that
    /// the login's refusal can say why. A said password is taken only once the catalog holds
    /// its hash: the server may have ignored the statement (MariaDB 10.11 answers
    /// `ALTER USER CURRENT_USER() IDENTIFIED BY …` with OK and changes nothing).
    pub(super) async fn learn_own_password(&mut self, sql: &[u8], stmts: &[Statement]) {
        let escapes = self.backslash_escapes();
        let mut candidates = Vec::new();
        for s in stmts.iter().filter(|s| s.kind == Kind::AccountManagement) {
            let text = sql.get(s.span.clone()).unwrap_or_default();
            for change in account_statement::changes(text, escapes) {
                if !self.is_own(&change.account) {
                    continue;
                }
                match change.password {
                    NewPassword::Known(pw) => candidates.push(auth::stage1_of(&pw)),
                    NewPassword::Unknown => self.password_unknown = true,
                }
            }
        }
        if candidates.is_empty() {
            return;
        }
        let user = String::from_utf8_lossy(&self.login.user).into_owned();
        let Some(account) = self.proxy.dir.account(&self.service, &user).await else {
            return;
        };
        if let Some(stage1) = candidates
            .into_iter()
            .rev()
            .find(|c| auth::stage2_of(c) == account.stage2)
        {
            self.login.stage1 = stage1;
            self.password_unknown = false;
        }
    }

    /// Before account statements run: one that would make the server require TLS or a client
    /// certificate of an account is refused, since the proxy could then never log that account
    /// in (`account_statement::requires_tls`). The whole batch is refused, before any of it runs.
    pub(super) fn requires_tls_refused(&self, sql: &[u8], stmts: &[Statement]) -> Option<SqlError> {
        let mut accounts = stmts
            .iter()
            .filter(|s| s.kind == Kind::AccountManagement)
            .peekable();
        accounts.peek()?;
        let escapes = self.backslash_escapes();
        // Not a server still running from before it was given a certificate.
        let servers_take_tls = self.proxy.cfg.backend_tls.is_some()
            && self.backend.as_ref().is_none_or(|b| b.offers_tls);
        accounts
            .any(|s| {
                account_statement::requires_tls(
                    sql.get(s.span.clone()).unwrap_or_default(),
                    escapes,
                    servers_take_tls,
                )
            })
            .then(|| SqlError::tls_ends_at_the_proxy(servers_take_tls))
    }

    /// Whether a backslash escapes in string literals: the session's `sql_mode` lacks
    /// `NO_BACKSLASH_ESCAPES`.
    fn backslash_escapes(&self) -> bool {
        !self
            .state
            .variables
            .iter()
            .rev()
            .find(|(n, _)| n == "sql_mode")
            .is_some_and(|(_, v)| {
                (v.as_bytes().windows(20)).any(|w| w.eq_ignore_ascii_case(b"NO_BACKSLASH_ESCAPES"))
            })
    }

    /// Whether `account` is the one this session is logged in as. Stratus's accounts are
    /// `user@'%'` (the catalog knows no other host, and the server logs the proxy in as that).
    fn is_own(&self, account: &Account) -> bool {
        match account {
            Account::Current => true,
            Account::Named { user, host } => {
                *user == self.login.user && host.as_deref().is_none_or(|h| h == b"%")
            }
        }
    }

    /// A backend login was refused: when the session's password is no longer the account's
    /// (changed in a form the proxy could not learn, or by another session), the client is
    /// told that, rather than a bare denial on a connection it thinks is logged in.
    pub(super) async fn login_refused(&self, e: SqlError) -> SqlError {
        if e.code != 1045 {
            return e;
        }
        let user = String::from_utf8_lossy(&self.login.user).into_owned();
        let stale = self.password_unknown
            || self
                .proxy
                .dir
                .account(&self.service, &user)
                .await
                .is_some_and(|a| a.stage2 != auth::stage2_of(&self.login.stage1));
        if !stale {
            return e;
        }
        let how = if self.password_unknown {
            " by a statement that does not say it (a hash or another authentication plugin)"
        } else {
            ""
        };
        SqlError {
            message: format!(
                "Access denied for user '{user}' to database {}: the account's password was changed{how} \
                 after this session logged in, and the session had to connect to the server again; \
                 log in again with the new password",
                self.service
            ),
            ..e
        }
    }

    /// Whether a new backend connection would accept this session's login: its password is
    /// still the account's. An idle session whose password was changed keeps its connection
    /// rather than give it up (a server keeps such sessions logged in).
    pub(super) async fn login_still_valid(&self) -> bool {
        if self.password_unknown {
            return false;
        }
        let user = String::from_utf8_lossy(&self.login.user).into_owned();
        self.proxy
            .dir
            .account(&self.service, &user)
            .await
            .is_some_and(|a| a.stage2 == auth::stage2_of(&self.login.stage1))
    }
}
