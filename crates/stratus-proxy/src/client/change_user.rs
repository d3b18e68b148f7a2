//! `COM_CHANGE_USER` (<https://mariadb.com/kb/en/com_change_user/>): the session logs in again
//! as another account, of its database or (with a `<database>.` prefix) of another one.
//!
//! A change that stays on the session's database runs on the session's own backend connection,
//! so `CONNECTION_ID()` stays what it was, as on a server. There, as directly, the server
//! checks the new account's schema before the change takes: an unknown one (1049) or one the
//! account may not use (1044) is refused, and the session goes on as the old account in its old
//! schema, reset as by `COM_RESET_CONNECTION` (MariaDB resets the session before it finds the
//! schema wanting). Otherwise (another database's account, a session whose connection was
//! released while idle or holds a role) the schema is checked by a login to the database's
//! server, if it runs (a sleeping one is not woken for it: its first statement is refused once
//! instead, as after a login).
//!
//! A wrong password is answered as a server answers it too: 1045 after a second's pause, the
//! session reset and kept as it was; after three failed changes on a connection every further
//! one is refused (1047). Wrong passwords count with failed logins in [`crate::throttle`], so
//! guessing passwords this way is no faster than by logging in.

use super::Session;
use crate::Directory;
use crate::backend::{Backend, BackendError, Login};
use crate::error::SqlError;
use crate::session::BACKEND_TRACKING;
use crate::stream::End;
use bytes::BytesMut;
use std::time::Duration;
use stratus_wire::auth::{self, NATIVE_PLUGIN};
use stratus_wire::caps;
use stratus_wire::handshake::{ChangeUser, auth_switch_request};
use stratus_wire::packet;
use stratus_wire::response;

/// MariaDB's limit of failed changes of user on one connection, and its pause after each.
const MAX_FAILED_CHANGES: u8 = 3;
const FAILED_CHANGE_PAUSE: Duration = Duration::from_secs(1);

/// What the server said of the new account and its schema.
enum SchemaCheck {
    /// Usable; `kept`: said on the session's own connection, which now runs as the new account.
    Usable { kept: bool },
    /// Refused with the server's error, answered after `pause` (none where the server refused
    /// a change of user on the session's connection and has waited already).
    Refused { error: SqlError, pause: Duration },
    /// Not asked (no schema, or no server running or reachable): the next connection finds out.
    Unchecked,
}

impl<D: Directory> Session<D> {
    pub(super) async fn change_user(
        &mut self,
        raw: &BytesMut,
        lp: &packet::Logical,
        seq: u8,
    ) -> Result<(), End> {
        let payload = packet::payload(raw, lp).into_owned();
        let parsed = ChangeUser::decode(&payload[1..], self.client_caps());
        let Ok(ChangeUser {
            user,
            auth_response: mut reply,
            schema,
            charset,
            auth_plugin: plugin,
            ..
        }) = parsed
        else {
            self.client
                .send(
                    seq,
                    &SqlError::handshake("malformed COM_CHANGE_USER").packet(),
                )
                .await?;
            return Err(End::Protocol);
        };
        // Refused before any authentication, as the server refuses it.
        if self.failed_changes >= MAX_FAILED_CHANGES {
            return self
                .change_refused(seq, SqlError::changes_exhausted(), FAILED_CHANGE_PAUSE)
                .await;
        }
        let mut next = seq;
        if plugin
            .as_deref()
            .is_some_and(|p| p != NATIVE_PLUGIN.as_bytes())
        {
            self.client
                .send(next, &auth_switch_request(NATIVE_PLUGIN, &self.scramble))
                .await?;
            let lp = match self.client.read_reply(64 * 1024).await {
                Ok(Some(lp)) => lp,
                _ => return Err(End::Client),
            };
            let raw = self.client.buf.split_to(lp.consumed);
            reply = packet::payload(&raw, &lp).into_owned();
            next = lp.last_seq.wrapping_add(1);
        }
        let host = self.peer.ip().to_string();
        // A plain user name is an account of the database the session is on, as on a server.
        let sni = crate::login::sni_service(&self.client, self.proxy.cfg.tls.as_ref());
        let routed = crate::login::route(&user, sni.as_deref(), Some(&self.service))
            .map(|(s, u)| (s.to_owned(), u.to_owned()));
        // Counted and slowed down with logins: the same password guessed either way.
        let proxy = self.proxy.clone();
        let named = routed.as_ref().map(|(s, u)| (s.as_str(), u.as_str()));
        let attempt = crate::login::Attempt::new(&proxy, self.peer, named, &user);
        let account = match named {
            Some((svc, u)) => proxy.dir.account(svc, u).await,
            None => None,
        };
        let verified = account
            .as_ref()
            .filter(|a| !a.require_tls || self.client.stream.is_tls())
            .and_then(|a| auth::verify(&a.stage2, &self.scramble, &reply));
        let (Some((service, user_name)), Some(stage1)) = (routed.clone(), verified) else {
            attempt.failed(named.map(|(s, _)| s).filter(|_| account.is_some()));
            let denied = SqlError::access_denied(&user, &host, !reply.is_empty());
            let pause = attempt.delay.max(FAILED_CHANGE_PAUSE);
            return self.change_refused(next, denied, pause).await;
        };
        if !attempt.delay.is_zero() {
            tokio::time::sleep(attempt.delay).await;
        }
        attempt.succeeded();
        // Another database's account: a place among its connections, within its limit.
        let slot = if service == self.service {
            None
        } else {
            let (slot, n) = super::ServiceSlot::take(self.proxy.activity.service(&service));
            let limit = self.proxy.cfg.max_connections_per_service;
            if n > limit {
                let msg = format!("database {service} has {limit} connections, its limit");
                let full = SqlError::too_many_connections(&msg);
                return self.change_refused(next, full, Duration::ZERO).await;
            }
            Some(slot)
        };
        let login = Login {
            user: user_name.into_bytes(),
            stage1,
            charset: charset.map_or(self.login.charset, |cs| cs as u8),
            ..self.login.clone()
        };
        let schema = (!schema.is_empty()).then(|| String::from_utf8_lossy(&schema).into_owned());
        let check = self.log_in_again(&service, &login, schema.as_deref()).await;
        let kept = match check {
            SchemaCheck::Refused { error, pause } => {
                return self.change_refused(next, error, pause).await;
            }
            SchemaCheck::Usable { kept } => kept,
            SchemaCheck::Unchecked => false,
        };
        // A new identity: a fresh session, on the connection that checked it or on one made
        // when first needed.
        if !kept {
            self.drop_backend();
        }
        self.session_reset();
        self.state.schema = schema.clone();
        // A schema no server has confirmed yet is the client's error when the next connection
        // finds it unknown (its first statement is refused, once), as after a login.
        self.schema_unconfirmed = schema.is_some() && matches!(check, SchemaCheck::Unchecked);
        if let Some(slot) = slot {
            self.activity = slot;
            // Its place in recoveries is the new database's: the old one's order is not its.
            self.ticket = None;
            self.recovered = false;
            self.recovery = self.proxy.recoveries.of(&service);
            self.service = service;
        }
        self.login = login;
        // Others' `KILL` judges it as what it is now.
        *self.link.identity() = crate::Identity {
            service: self.service.clone(),
            user: self.login.user.clone(),
        };
        self.password_unknown = false;
        self.client
            .send(
                next,
                &response::ok(caps::STATUS_AUTOCOMMIT, 0, self.client_caps()),
            )
            .await
    }

    /// Changes the user of the session's own connection when the session stays on its database
    /// and that connection carries nothing the server keeps across a change of user (a role, a
    /// profile history), so the server checks `schema` and its thread stays. Otherwise a
    /// `schema` is checked by a login on a new connection, if the database runs.
    async fn log_in_again(
        &mut self,
        service: &str,
        login: &Login,
        schema: Option<&str>,
    ) -> SchemaCheck {
        let own = service == self.service && !self.holds_what_a_change_of_user_keeps();
        if own && let Some(b) = self.backend.as_mut() {
            // A role set unseen (a procedure, a dynamic statement) or the account's own
            // (`DEFAULT ROLE`) survives the change as well: asked, not assumed.
            if super::backend_link::no_role(b).await {
                match b.change_user(login, schema).await {
                    Ok(()) => match b.query(BACKEND_TRACKING).await {
                        Ok(_) => return SchemaCheck::Usable { kept: true },
                        // Changed, then lost: a new connection instead.
                        Err(_) => self.drop_backend(),
                    },
                    Err(BackendError::Server(error)) => {
                        let pause = Duration::ZERO;
                        return SchemaCheck::Refused { error, pause };
                    }
                    // Gone meanwhile: a new connection instead.
                    Err(_) => self.drop_backend(),
                }
            }
        }
        let Some(schema) = schema else {
            return SchemaCheck::Unchecked;
        };
        let Ok(Some(addr)) = self.proxy.dir.backend(service, false).await else {
            return SchemaCheck::Unchecked;
        };
        let timeout = self.proxy.cfg.wake_timeout;
        // Bounded as a whole: the login's reads have no deadline of their own.
        let probe = Backend::connect(addr, login, Some(schema), timeout);
        match tokio::time::timeout(timeout, probe).await {
            // The session's connection is made when first needed, as after any change of user.
            Ok(Ok(_)) => SchemaCheck::Usable { kept: false },
            Ok(Err(BackendError::Server(error))) => SchemaCheck::Refused {
                error,
                pause: FAILED_CHANGE_PAUSE,
            },
            Ok(Err(_)) | Err(_) => SchemaCheck::Unchecked,
        }
    }

    /// A change of user that failed, as on a server: the session is reset, its account and
    /// schema stay, and the answer comes after `pause` (a second, as the server waits, unless
    /// the server refused the change itself and has waited already).
    async fn change_refused(
        &mut self,
        seq: u8,
        error: SqlError,
        pause: Duration,
    ) -> Result<(), End> {
        self.failed_changes = self.failed_changes.saturating_add(1);
        self.drop_backend();
        self.session_reset();
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
        self.client.send(seq, &error.packet()).await
    }

    /// The server forgot the session (`COM_RESET_CONNECTION`, a change of user): so does the
    /// proxy, but for the schema.
    pub(super) fn session_reset(&mut self) {
        self.release_pins();
        self.state.reset();
        self.txlog.clear();
        self.stmts.clear();
        self.autocommit = true;
    }
}
