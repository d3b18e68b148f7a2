//! Where a database's own server is reached: a unix socket on the same host (the local runtime,
//! where only Stratus may reach it) or a TCP address (a pod on a cluster network).

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// A socket file in a directory only Stratus and the server's own OS user can enter.
    Unix(Arc<Path>),
    Tcp(SocketAddr),
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Unix(path) => write!(f, "unix:{}", path.display()),
            Endpoint::Tcp(addr) => write!(f, "{addr}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_as_a_path_or_an_address() {
        let unix = Endpoint::Unix(Path::new("/d/databases/shop/mariadbd.sock").into());
        assert_eq!(unix.to_string(), "unix:/d/databases/shop/mariadbd.sock");
        let tcp = Endpoint::Tcp(([10, 0, 0, 7], 3306).into());
        assert_eq!(tcp.to_string(), "10.0.0.7:3306");
    }
}
