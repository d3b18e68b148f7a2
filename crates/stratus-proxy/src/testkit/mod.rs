//! In-process backends for tests: `net`, an in-memory network the proxy dials through the same
//! `BackendStream::connect` as a real server's socket.

pub(crate) mod net;
