//! Every decoder the proxy runs on bytes from a client or a server: none may panic, whatever
//! arrives. `cargo fuzz run wire_decoders` (see README).
#![no_main]

use libfuzzer_sys::fuzz_target;
use stratus_wire::{classify, compressed, handshake, packet, response, tracker};

fuzz_target!(|data: &[u8]| {
    let _ = packet::logical(data, 1 << 20);
    // The same bytes as compressed packets, inflated, and their inner headers walked.
    let (mut inflater, mut plain, mut rest) = (compressed::Inflater::default(), Vec::new(), data);
    while let Some(h) = compressed::Header::parse(rest).filter(|h| h.total() <= rest.len()) {
        let _ = inflater.inflate(&h, &rest[compressed::HEADER_LEN..h.total()], &mut plain);
        rest = &rest[h.total()..];
    }
    compressed::Headers::default().walk(&mut plain, |id| id.wrapping_add(1));
    let _ = handshake::Greeting::decode(data);
    let _ = handshake::HandshakeResponse::decode(data);
    let _ = handshake::decode_auth_switch(data);
    for caps in [0, u64::MAX] {
        let _ = handshake::ChangeUser::decode(data, caps);
    }
    let _ = handshake::is_ssl_request(data);
    for caps in [0, u64::MAX] {
        if let Ok(ok) = response::OkPacket::decode(data, caps) {
            if let Ok(changes) = response::changes(ok.session_state) {
                for c in &changes {
                    let _ = c.system_variable();
                    let _ = c.text();
                }
            }
        }
    }
    let _ = response::ErrPacket::decode(data);
    let _ = classify::classify_all(data);
    // The same bytes as a stream of packets answering each kind of command.
    for expect in [
        tracker::Expect::ResultSets { binary: false },
        tracker::Expect::ResultSets { binary: true },
        tracker::Expect::Cursor,
        tracker::Expect::Prepare,
        tracker::Expect::Fetch,
        tracker::Expect::FieldList,
        tracker::Expect::One,
    ] {
        for deprecate_eof in [false, true] {
            let mut t = tracker::Tracker::new(expect, deprecate_eof);
            let mut rest = data;
            while let Some(total) = packet::complete(rest) {
                let _ = t.feed(&rest[packet::HEADER_LEN..total]);
                rest = &rest[total..];
            }
        }
    }
});
