//! A MariaDB client for tests, on the client end of an in-memory pipe to a proxy session: it
//! logs in and sends statements, and hands back each answer's packets exactly as they came,
//! after checking their sequence ids.

use super::scripted_backend::{read, send};
use stratus_wire::auth::{NATIVE_PLUGIN, scramble_reply, stage1_of};
use stratus_wire::caps;
use stratus_wire::command::{
    COM_QUERY, COM_QUIT, COM_STMT_EXECUTE, COM_STMT_PREPARE, COM_STMT_SEND_LONG_DATA,
};
use stratus_wire::handshake::{Greeting, HandshakeResponse};
use stratus_wire::tracker::{Expect, Step, Tracker};
use tokio::io::DuplexStream;

/// What the client asks for: what a typical connector does (libmariadb without TLS).
pub(crate) const CAPS: u64 = caps::LONG_FLAG
    | caps::PROTOCOL_41
    | caps::TRANSACTIONS
    | caps::SECURE_CONNECTION
    | caps::MULTI_RESULTS
    | caps::PS_MULTI_RESULTS
    | caps::PLUGIN_AUTH
    | caps::PLUGIN_AUTH_LENENC_CLIENT_DATA
    | caps::DEPRECATE_EOF;

pub(crate) struct TestClient {
    stream: DuplexStream,
    /// The connection id the proxy greeted it with.
    pub(crate) id: u32,
}

impl TestClient {
    /// Logs in as `user` (`<service>.<user>`); panics unless the proxy answers OK.
    pub(crate) async fn login(mut stream: DuplexStream, user: &str, password: &str) -> Self {
        let (_, greeting) = within(read(&mut stream)).await.expect("a greeting");
        let greeting = Greeting::decode(&greeting).expect("a well-formed greeting");
        let response = HandshakeResponse {
            capabilities: CAPS,
            max_packet: 1 << 24,
            charset: 45,
            user: user.as_bytes().to_vec(),
            auth_response: scramble_reply(&stage1_of(password.as_bytes()), &greeting.scramble)
                .to_vec(),
            database: None,
            auth_plugin: Some(NATIVE_PLUGIN.as_bytes().to_vec()),
            attributes: None,
        };
        send(&mut stream, 1, &[response.encode()])
            .await
            .expect("the proxy reads the login");
        let (seq, ok) = within(read(&mut stream)).await.expect("a login answer");
        assert_eq!((seq, ok.first()), (2, Some(&0x00)), "login refused: {ok:?}");
        let id = greeting.connection_id;
        Self { stream, id }
    }

    /// Sends a command of one packet (`payload` begins with the command byte) and returns the
    /// first packet of its answer.
    pub(crate) async fn command(&mut self, payload: &[u8]) -> Vec<u8> {
        send(&mut self.stream, 0, &[payload.to_vec()])
            .await
            .expect("the proxy reads the command");
        within(read(&mut self.stream)).await.expect("an answer").1
    }

    /// Runs a statement and returns its whole answer, one payload per packet.
    pub(crate) async fn query(&mut self, sql: &str) -> Vec<Vec<u8>> {
        let mut payload = vec![COM_QUERY];
        payload.extend_from_slice(sql.as_bytes());
        send(&mut self.stream, 0, &[payload])
            .await
            .expect("the proxy reads the statement");
        let mut t = Tracker::new(Expect::ResultSets { binary: false }, true);
        let mut answer = Vec::new();
        loop {
            let Some((seq, p)) = within(read(&mut self.stream)).await else {
                panic!("the proxy closed the connection after {answer:?}, in answer to {sql}");
            };
            assert_eq!(usize::from(seq), answer.len() + 1, "sequence id, for {sql}");
            let step = t.feed(&p);
            answer.push(p);
            if step == Step::Done {
                return answer;
            }
        }
    }

    /// Prepares a statement without parameters or columns (what the scripted server makes of
    /// every statement) and returns its id.
    pub(crate) async fn prepare(&mut self, sql: &str) -> u32 {
        let mut payload = vec![COM_STMT_PREPARE];
        payload.extend_from_slice(sql.as_bytes());
        send(&mut self.stream, 0, &[payload])
            .await
            .expect("the proxy reads the prepare");
        let (_, ok) = within(read(&mut self.stream))
            .await
            .expect("a prepare answer");
        assert_eq!(ok.first(), Some(&0x00), "prepare refused: {ok:?}");
        u32::from_le_bytes(ok[1..5].try_into().expect("a statement id"))
    }

    /// Sends a chunk of a parameter's value ahead of the execute; no answer comes.
    pub(crate) async fn send_long_data(&mut self, id: u32, data: &[u8]) {
        let mut payload = vec![COM_STMT_SEND_LONG_DATA];
        payload.extend_from_slice(&id.to_le_bytes());
        payload.extend_from_slice(&0u16.to_le_bytes());
        payload.extend_from_slice(data);
        send(&mut self.stream, 0, &[payload])
            .await
            .expect("the proxy reads the long data");
    }

    /// Executes a statement without parameters; returns the answer's first packet.
    pub(crate) async fn execute(&mut self, id: u32) -> Vec<u8> {
        let mut payload = vec![COM_STMT_EXECUTE];
        payload.extend_from_slice(&id.to_le_bytes());
        payload.push(0); // no cursor
        payload.extend_from_slice(&1u32.to_le_bytes());
        send(&mut self.stream, 0, &[payload])
            .await
            .expect("the proxy reads the execute");
        within(read(&mut self.stream)).await.expect("an answer").1
    }

    /// Says goodbye (`COM_QUIT`) and waits for the proxy to close the connection.
    pub(crate) async fn quit(mut self) {
        send(&mut self.stream, 0, &[vec![COM_QUIT]])
            .await
            .expect("the proxy reads COM_QUIT");
        assert_eq!(
            within(read(&mut self.stream)).await,
            None,
            "no answer to COM_QUIT"
        );
    }

    /// Reads until the proxy closes the connection, sending nothing: what came before.
    pub(crate) async fn until_closed(&mut self) -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        while let Some((_, p)) = within(read(&mut self.stream)).await {
            got.push(p);
        }
        got
    }

    /// Sends a statement and reads until the proxy closes the connection: what came before.
    pub(crate) async fn query_until_closed(&mut self, sql: &str) -> Vec<Vec<u8>> {
        let mut payload = vec![COM_QUERY];
        payload.extend_from_slice(sql.as_bytes());
        send(&mut self.stream, 0, &[payload])
            .await
            .expect("the proxy reads the statement");
        self.until_closed().await
    }
}

/// Bounds a wait for the proxy: on the paused clock, a proxy that never answers fails the test
/// at once instead of hanging it.
async fn within<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(super::WITHIN, f)
        .await
        .expect("the proxy did not answer")
}
