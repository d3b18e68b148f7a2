//! The proxy's directory for tests: one account on one database, whose server is the scripted
//! backend and always "runs" (it is never woken); failovers are recorded for the tests to read.

use crate::replay::{Failover, Outcome};
use crate::{Account, Directory, Endpoint};
use std::sync::Mutex;
use stratus_wire::auth::{stage1_of, stage2_of};

pub(crate) struct TestDirectory {
    service: String,
    user: String,
    account: Mutex<Account>,
    addr: Endpoint,
    failovers: Mutex<Vec<Failover>>,
    unreachable: Mutex<u32>,
}

impl TestDirectory {
    pub(crate) fn new(service: &str, user: &str, password: &str, addr: Endpoint) -> Self {
        Self {
            service: service.to_owned(),
            user: user.to_owned(),
            account: Mutex::new(Account {
                stage2: stage2_of(&stage1_of(password.as_bytes())),
                require_tls: false,
            }),
            addr,
            failovers: Mutex::default(),
            unreachable: Mutex::default(),
        }
    }

    /// The account's password changes, as another session's `ALTER USER` would change it.
    pub(crate) fn set_password(&self, password: &str) {
        self.account.lock().unwrap().stage2 = stage2_of(&stage1_of(password.as_bytes()));
    }

    /// The outcomes of the failovers reported so far.
    pub(crate) fn outcomes(&self) -> Vec<Outcome> {
        let f = self.failovers.lock().unwrap();
        f.iter().map(|f| f.outcome).collect()
    }

    /// How often a connection to the server was reported refused.
    pub(crate) fn unreachable_reports(&self) -> u32 {
        *self.unreachable.lock().unwrap()
    }
}

impl Directory for TestDirectory {
    async fn account(&self, service: &str, user: &str) -> Option<Account> {
        (service == self.service && user == self.user).then(|| *self.account.lock().unwrap())
    }

    async fn backend(&self, service: &str, _wake: bool) -> Result<Option<Endpoint>, String> {
        if service == self.service {
            Ok(Some(self.addr.clone()))
        } else {
            Err(format!("no database {service}"))
        }
    }

    async fn unreachable(&self, _service: &str, _addr: &Endpoint) {
        *self.unreachable.lock().unwrap() += 1;
    }

    async fn accounts_changed(&self, _service: &str) {}

    fn failover(&self, _service: &str, report: Failover) {
        self.failovers.lock().unwrap().push(report);
    }
}
