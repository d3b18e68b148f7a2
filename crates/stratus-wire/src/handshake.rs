//! The connection phase, both ways (<https://mariadb.com/kb/en/connection/>): the server's
//! greeting, the client's answer (or its SSL request), and auth-switch requests.

use crate::caps::{self, CLIENT_MYSQL};
use crate::lenenc::{Reader, put_lenenc_bytes};
use crate::{Malformed, malformed};

/// Initial handshake packet (protocol version 10).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Greeting {
    pub server_version: Vec<u8>,
    pub connection_id: u32,
    pub scramble: [u8; 20],
    pub capabilities: u64,
    pub charset: u8,
    pub status: u16,
    pub auth_plugin: Vec<u8>,
}

impl Greeting {
    pub fn encode(&self) -> Vec<u8> {
        let caps = self.capabilities;
        let mut out = Vec::with_capacity(96);
        out.push(10);
        out.extend_from_slice(&self.server_version);
        out.push(0);
        out.extend_from_slice(&self.connection_id.to_le_bytes());
        out.extend_from_slice(&self.scramble[..8]);
        out.push(0);
        out.extend_from_slice(&(caps as u16).to_le_bytes());
        out.push(self.charset);
        out.extend_from_slice(&self.status.to_le_bytes());
        out.extend_from_slice(&((caps >> 16) as u16).to_le_bytes());
        out.push(21); // scramble length + NUL
        out.extend_from_slice(&[0; 6]);
        // MariaDB's extended capabilities live where MySQL has 4 reserved bytes.
        let ext = if caps & CLIENT_MYSQL == 0 {
            (caps >> 32) as u32
        } else {
            0
        };
        out.extend_from_slice(&ext.to_le_bytes());
        out.extend_from_slice(&self.scramble[8..]);
        out.push(0);
        out.extend_from_slice(&self.auth_plugin);
        out.push(0);
        out
    }

    pub fn decode(payload: &[u8]) -> Result<Self, Malformed> {
        let mut r = Reader::new(payload, "handshake");
        if r.u8()? != 10 {
            return Err(malformed("handshake (protocol version)"));
        }
        let server_version = r.nul_bytes()?.to_vec();
        let connection_id = r.u32()?;
        let mut scramble = [0u8; 20];
        scramble[..8].copy_from_slice(r.bytes(8)?);
        r.u8()?;
        let mut caps = u64::from(r.u16()?);
        let charset = r.u8()?;
        let status = r.u16()?;
        caps |= u64::from(r.u16()?) << 16;
        let auth_len = r.u8()?;
        r.bytes(6)?;
        let ext = r.u32()?;
        if caps & CLIENT_MYSQL == 0 {
            caps |= u64::from(ext) << 32;
        }
        let part2_len = usize::from(auth_len).saturating_sub(8).max(13);
        let part2 = r.bytes(part2_len)?;
        // The last byte of part 2 is a NUL terminator.
        let n = part2.len().saturating_sub(1).min(12);
        scramble[8..8 + n].copy_from_slice(&part2[..n]);
        let auth_plugin = if caps & caps::PLUGIN_AUTH != 0 {
            let rest = r.rest();
            rest.split(|&b| b == 0).next().unwrap_or_default().to_vec()
        } else {
            Vec::new()
        };
        Ok(Self {
            server_version,
            connection_id,
            scramble,
            capabilities: caps,
            charset,
            status,
            auth_plugin,
        })
    }
}

/// The client's answer to the greeting.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HandshakeResponse {
    pub capabilities: u64,
    pub max_packet: u32,
    pub charset: u8,
    pub user: Vec<u8>,
    pub auth_response: Vec<u8>,
    pub database: Option<Vec<u8>>,
    pub auth_plugin: Option<Vec<u8>>,
    /// Connection attributes, as the raw length-encoded block.
    pub attributes: Option<Vec<u8>>,
}

/// An SSL request is the first 32 bytes of a handshake response with `SSL` set.
pub fn is_ssl_request(payload: &[u8]) -> bool {
    payload.len() == 32
        && u32::from_le_bytes([payload[0], payload[1], payload[2], payload[3]]) as u64 & caps::SSL
            != 0
}

impl HandshakeResponse {
    pub fn decode(payload: &[u8]) -> Result<Self, Malformed> {
        let mut r = Reader::new(payload, "handshake response");
        let mut caps = u64::from(r.u32()?);
        if caps & caps::PROTOCOL_41 == 0 {
            return Err(malformed(
                "handshake response (pre-4.1 clients are not supported)",
            ));
        }
        let max_packet = r.u32()?;
        let charset = r.u8()?;
        r.bytes(19)?;
        let ext = r.u32()?;
        if caps & CLIENT_MYSQL == 0 {
            caps |= u64::from(ext) << 32;
        }
        let user = r.nul_bytes()?.to_vec();
        let auth_response = if caps & caps::PLUGIN_AUTH_LENENC_CLIENT_DATA != 0 {
            r.lenenc_bytes()?.to_vec()
        } else if caps & caps::SECURE_CONNECTION != 0 {
            let n = r.u8()?;
            r.bytes(usize::from(n))?.to_vec()
        } else {
            r.nul_bytes()?.to_vec()
        };
        let database = if caps & caps::CONNECT_WITH_DB != 0 && !r.is_empty() {
            Some(r.nul_bytes()?.to_vec())
        } else {
            None
        };
        let auth_plugin = if caps & caps::PLUGIN_AUTH != 0 && !r.is_empty() {
            // Some clients end the packet with the plugin name and no NUL.
            Some(match r.clone().nul_bytes() {
                Ok(_) => r.nul_bytes()?.to_vec(),
                Err(_) => r.rest().to_vec(),
            })
        } else {
            None
        };
        let attributes = if caps & caps::CONNECT_ATTRS != 0 && !r.is_empty() {
            Some(r.lenenc_bytes()?.to_vec())
        } else {
            None
        };
        Ok(Self {
            capabilities: caps,
            max_packet,
            charset,
            user,
            auth_response,
            database,
            auth_plugin,
            attributes,
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        let caps = self.capabilities;
        let mut out = Vec::with_capacity(128);
        out.extend_from_slice(&(caps as u32).to_le_bytes());
        out.extend_from_slice(&self.max_packet.to_le_bytes());
        out.push(self.charset);
        out.extend_from_slice(&[0; 19]);
        let ext = if caps & CLIENT_MYSQL == 0 {
            (caps >> 32) as u32
        } else {
            0
        };
        out.extend_from_slice(&ext.to_le_bytes());
        out.extend_from_slice(&self.user);
        out.push(0);
        if caps & caps::PLUGIN_AUTH_LENENC_CLIENT_DATA != 0 {
            put_lenenc_bytes(&mut out, &self.auth_response);
        } else {
            out.push(self.auth_response.len() as u8);
            out.extend_from_slice(&self.auth_response);
        }
        if caps & caps::CONNECT_WITH_DB != 0 {
            out.extend_from_slice(self.database.as_deref().unwrap_or_default());
            out.push(0);
        }
        if caps & caps::PLUGIN_AUTH != 0 {
            out.extend_from_slice(self.auth_plugin.as_deref().unwrap_or_default());
            out.push(0);
        }
        if caps & caps::CONNECT_ATTRS != 0 {
            put_lenenc_bytes(&mut out, self.attributes.as_deref().unwrap_or_default());
        }
        out
    }
}

/// `COM_CHANGE_USER` (<https://mariadb.com/kb/en/com_change_user/>), after its command byte:
/// a login on an open connection. The proxy decodes it from clients and sends it to backends.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChangeUser {
    pub user: Vec<u8>,
    pub auth_response: Vec<u8>,
    pub schema: Vec<u8>,
    /// Absent in the oldest clients.
    pub charset: Option<u16>,
    pub auth_plugin: Option<Vec<u8>>,
    /// Connection attributes, as the raw length-encoded block's content.
    pub attributes: Option<Vec<u8>>,
}

impl ChangeUser {
    /// Decodes the body (without the command byte) as sent by a client with capabilities
    /// `caps`.
    pub fn decode(body: &[u8], caps: u64) -> Result<Self, Malformed> {
        let mut r = Reader::new(body, "change user");
        let user = r.nul_bytes()?.to_vec();
        let auth_response = if caps & caps::SECURE_CONNECTION != 0 {
            let n = r.u8()?;
            r.bytes(usize::from(n))?.to_vec()
        } else {
            r.nul_bytes()?.to_vec()
        };
        let schema = if r.is_empty() {
            Vec::new()
        } else {
            r.nul_bytes()?.to_vec()
        };
        let charset = if r.remaining() >= 2 {
            Some(r.u16()?)
        } else {
            None
        };
        let auth_plugin = if caps & caps::PLUGIN_AUTH != 0 && !r.is_empty() {
            Some(r.nul_bytes().map(<[u8]>::to_vec).unwrap_or_default())
        } else {
            None
        };
        let attributes = if caps & caps::CONNECT_ATTRS != 0 && !r.is_empty() {
            r.lenenc_bytes().ok().map(<[u8]>::to_vec)
        } else {
            None
        };
        Ok(Self {
            user,
            auth_response,
            schema,
            charset,
            auth_plugin,
            attributes,
        })
    }

    /// The whole command payload (command byte included) for a server that agreed to `caps`
    /// (`SECURE_CONNECTION` assumed, as every 4.1+ server has it).
    pub fn encode(&self, caps: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.user.len() + self.schema.len());
        out.push(crate::command::COM_CHANGE_USER);
        out.extend_from_slice(&self.user);
        out.push(0);
        out.push(self.auth_response.len() as u8);
        out.extend_from_slice(&self.auth_response);
        out.extend_from_slice(&self.schema);
        out.push(0);
        out.extend_from_slice(&self.charset.unwrap_or(0).to_le_bytes());
        if caps & caps::PLUGIN_AUTH != 0 {
            out.extend_from_slice(self.auth_plugin.as_deref().unwrap_or_default());
            out.push(0);
        }
        if caps & caps::CONNECT_ATTRS != 0 {
            put_lenenc_bytes(&mut out, self.attributes.as_deref().unwrap_or_default());
        }
        out
    }
}

/// `0xfe plugin\0 data`: asks the client to authenticate again with another plugin.
pub fn auth_switch_request(plugin: &str, scramble: &[u8; 20]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + plugin.len() + 21);
    out.push(0xfe);
    out.extend_from_slice(plugin.as_bytes());
    out.push(0);
    out.extend_from_slice(scramble);
    out.push(0);
    out
}

/// Parses an auth-switch request from a server: plugin name and its data (scramble).
pub fn decode_auth_switch(payload: &[u8]) -> Result<(Vec<u8>, Vec<u8>), Malformed> {
    let mut r = Reader::new(payload, "auth switch request");
    if r.u8()? != 0xfe {
        return Err(malformed("auth switch request"));
    }
    let plugin = r.nul_bytes()?.to_vec();
    let mut data = r.rest().to_vec();
    if data.last() == Some(&0) {
        data.pop();
    }
    Ok((plugin, data))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What MariaDB 10.11.19 sends (captured).
    const GREETING: &[u8] = b"\n5.5.5-10.11.19-MariaDB-0+deb12u1\x00\x04\x00\x00\x00y2*yF2c~\x00\xfe\xf7\x08\x02\x00\xff\x81\x15\x00\x00\x00\x00\x00\x00\x1d\x00\x00\x00r?\"-YX1)v;aY\x00mysql_native_password\x00";

    #[test]
    fn decodes_a_real_greeting_and_round_trips() {
        let g = Greeting::decode(GREETING).unwrap();
        assert_eq!(g.server_version, b"5.5.5-10.11.19-MariaDB-0+deb12u1");
        assert_eq!(g.connection_id, 4);
        assert_eq!(&g.scramble, b"y2*yF2c~r?\"-YX1)v;aY");
        assert_eq!(g.auth_plugin, b"mysql_native_password");
        assert_eq!(
            g.capabilities & caps::MARIADB_CACHE_METADATA,
            caps::MARIADB_CACHE_METADATA
        );
        assert_eq!(g.capabilities & CLIENT_MYSQL, 0);
        assert_eq!(g.encode(), GREETING);
    }

    #[test]
    fn response_round_trips() {
        let r = HandshakeResponse {
            capabilities: caps::PROTOCOL_41
                | caps::SECURE_CONNECTION
                | caps::PLUGIN_AUTH
                | caps::PLUGIN_AUTH_LENENC_CLIENT_DATA
                | caps::CONNECT_WITH_DB
                | caps::CONNECT_ATTRS
                | caps::MARIADB_EXTENDED_TYPE_INFO,
            max_packet: 1 << 24,
            charset: 45,
            user: b"shop.admin".to_vec(),
            auth_response: vec![1; 20],
            database: Some(b"shop".to_vec()),
            auth_plugin: Some(b"mysql_native_password".to_vec()),
            attributes: Some(vec![3, b'a', b'b', b'c']),
        };
        let decoded = HandshakeResponse::decode(&r.encode()).unwrap();
        assert_eq!(decoded.user, r.user);
        assert_eq!(decoded.database, r.database);
        assert_eq!(decoded.auth_plugin, r.auth_plugin);
        assert_eq!(decoded.capabilities, r.capabilities);
        assert_eq!(decoded.auth_response, r.auth_response);
    }

    #[test]
    fn ssl_request_and_switch() {
        let mut ssl = ((caps::SSL | caps::PROTOCOL_41) as u32)
            .to_le_bytes()
            .to_vec();
        ssl.resize(32, 0);
        assert!(is_ssl_request(&ssl));
        let req = auth_switch_request("mysql_native_password", b"abcdefghijklmnopqrst");
        let (plugin, data) = decode_auth_switch(&req).unwrap();
        assert_eq!(
            (plugin.as_slice(), data.as_slice()),
            (&b"mysql_native_password"[..], &b"abcdefghijklmnopqrst"[..])
        );
    }

    proptest! {
        /// What the proxy sends a backend, the backend (and the proxy, from a client) reads back.
        #[test]
        fn change_user_round_trips(
            user in proptest::collection::vec(1u8..=255, 0..40),
            auth in proptest::collection::vec(any::<u8>(), 0..21),
            schema in proptest::collection::vec(1u8..=255, 0..30),
            charset in any::<u16>(),
            attributes in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
        ) {
            let attributes = attributes.filter(|a| !a.is_empty());
            let caps = caps::PROTOCOL_41 | caps::SECURE_CONNECTION | caps::PLUGIN_AUTH
                | if attributes.is_some() { caps::CONNECT_ATTRS } else { 0 };
            let c = ChangeUser {
                user,
                auth_response: auth,
                schema,
                charset: Some(charset),
                auth_plugin: Some(b"mysql_native_password".to_vec()),
                attributes,
            };
            let bytes = c.encode(caps);
            prop_assert_eq!(bytes[0], crate::command::COM_CHANGE_USER);
            let back = ChangeUser::decode(&bytes[1..], caps).unwrap();
            prop_assert_eq!(back, c);
        }

        #[test]
        fn decoders_never_panic(buf in proptest::collection::vec(any::<u8>(), 0..200), caps in any::<u64>()) {
            let _ = ChangeUser::decode(&buf, caps);
            let _ = Greeting::decode(&buf);
            let _ = HandshakeResponse::decode(&buf);
            let _ = decode_auth_switch(&buf);
            let _ = is_ssl_request(&buf);
        }
    }
}
