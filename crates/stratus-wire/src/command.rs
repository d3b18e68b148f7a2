//! Command bytes (<https://mariadb.com/kb/en/2-text-protocol/>) and the prepared-statement
//! packets whose statement ids the proxy rewrites
//! (<https://mariadb.com/kb/en/com_stmt_execute/>).

use crate::tracker::Expect;

pub const COM_SLEEP: u8 = 0x00;
pub const COM_QUIT: u8 = 0x01;
pub const COM_INIT_DB: u8 = 0x02;
pub const COM_QUERY: u8 = 0x03;
pub const COM_FIELD_LIST: u8 = 0x04;
pub const COM_CREATE_DB: u8 = 0x05;
pub const COM_DROP_DB: u8 = 0x06;
pub const COM_REFRESH: u8 = 0x07;
pub const COM_SHUTDOWN: u8 = 0x08;
pub const COM_STATISTICS: u8 = 0x09;
pub const COM_PROCESS_INFO: u8 = 0x0a;
pub const COM_CONNECT: u8 = 0x0b;
pub const COM_PROCESS_KILL: u8 = 0x0c;
pub const COM_DEBUG: u8 = 0x0d;
pub const COM_PING: u8 = 0x0e;
pub const COM_TIME: u8 = 0x0f;
pub const COM_DELAYED_INSERT: u8 = 0x10;
pub const COM_CHANGE_USER: u8 = 0x11;
pub const COM_BINLOG_DUMP: u8 = 0x12;
pub const COM_TABLE_DUMP: u8 = 0x13;
pub const COM_CONNECT_OUT: u8 = 0x14;
pub const COM_REGISTER_SLAVE: u8 = 0x15;
pub const COM_STMT_PREPARE: u8 = 0x16;
pub const COM_STMT_EXECUTE: u8 = 0x17;
pub const COM_STMT_SEND_LONG_DATA: u8 = 0x18;
pub const COM_STMT_CLOSE: u8 = 0x19;
pub const COM_STMT_RESET: u8 = 0x1a;
pub const COM_SET_OPTION: u8 = 0x1b;
pub const COM_STMT_FETCH: u8 = 0x1c;
pub const COM_DAEMON: u8 = 0x1d;
pub const COM_BINLOG_DUMP_GTID: u8 = 0x1e;
pub const COM_RESET_CONNECTION: u8 = 0x1f;
/// A `COM_QUERY` of `sql` as its first packet goes on the wire (sequence id 0, split where
/// it is longer than a packet): a statement of the proxy's own, or a client's rewritten.
pub fn query(sql: &[u8]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(1 + sql.len());
    payload.push(COM_QUERY);
    payload.extend_from_slice(sql);
    let mut framed = Vec::with_capacity(payload.len() + crate::packet::HEADER_LEN);
    crate::packet::write(&mut framed, &mut 0, &payload);
    framed
}

/// MariaDB's array execute (<https://mariadb.com/kb/en/com_stmt_bulk_execute/>): command, id
/// (4), bulk flags (2), the parameter types (2 per parameter) with [`BULK_SEND_TYPES`], then
/// rows of parameters, each value after an indicator byte. Answered as an execute is.
pub const COM_STMT_BULK_EXECUTE: u8 = 0xfa;
/// Bulk flag: the packet carries its parameter types.
pub const BULK_SEND_TYPES: u16 = 128;

/// How a relayed command is answered; `None` for commands with no answer.
pub fn expect(command: u8) -> Option<Expect> {
    match command {
        COM_QUERY => Some(Expect::ResultSets { binary: false }),
        COM_STMT_EXECUTE | COM_STMT_BULK_EXECUTE => Some(Expect::ResultSets { binary: true }),
        COM_STMT_PREPARE => Some(Expect::Prepare),
        COM_STMT_FETCH => Some(Expect::Fetch),
        COM_FIELD_LIST => Some(Expect::FieldList),
        COM_STMT_CLOSE | COM_STMT_SEND_LONG_DATA | COM_QUIT => None,
        COM_PROCESS_INFO => Some(Expect::ResultSets { binary: false }),
        _ => Some(Expect::One),
    }
}

/// How a relayed command is answered, from its whole payload: a `COM_STMT_EXECUTE` that asks
/// for a cursor (<https://mariadb.com/kb/en/com_stmt_execute/>, flags byte) is answered
/// differently from one that does not.
pub fn expect_payload(payload: &[u8]) -> Option<Expect> {
    /// `CURSOR_TYPE_READ_ONLY | CURSOR_TYPE_FOR_UPDATE | CURSOR_TYPE_SCROLLABLE`.
    const CURSOR_TYPES: u8 = 0x07;
    match payload.first() {
        Some(&COM_STMT_EXECUTE) if payload.get(5).is_some_and(|f| f & CURSOR_TYPES != 0) => {
            Some(Expect::Cursor)
        }
        Some(&cmd) => expect(cmd),
        None => None,
    }
}

/// The statement id of `COM_STMT_EXECUTE/BULK_EXECUTE/SEND_LONG_DATA/CLOSE/RESET/FETCH` (bytes
/// 1..5).
pub fn statement_id(payload: &[u8]) -> Option<u32> {
    payload
        .get(1..5)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// Replaces the statement id in place.
pub fn set_statement_id(payload: &mut [u8], id: u32) {
    if let Some(b) = payload.get_mut(1..5) {
        b.copy_from_slice(&id.to_le_bytes());
    }
}

/// `COM_STMT_EXECUTE`: where the parameter block sits, for parameter type bookkeeping.
/// Layout: command, id (4), flags (1), iteration count (4), then for `params > 0`: NULL bitmap
/// of `(params + 7) / 8` bytes, `new_params_bound` (1), types (2 per param) if bound, values.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ExecuteLayout {
    null_bitmap: std::ops::Range<usize>,
    /// Offset of the `new_params_bound` byte.
    bound_flag: usize,
    new_params_bound: bool,
    /// Parameter types, when bound.
    types: Option<std::ops::Range<usize>>,
}

fn execute_layout(payload: &[u8], params: u16) -> Option<ExecuteLayout> {
    if params == 0 {
        return None;
    }
    let bitmap_len = usize::from(params).div_ceil(8);
    let null_bitmap = 10..10 + bitmap_len;
    let bound_flag = null_bitmap.end;
    let bound = *payload.get(bound_flag)? == 1;
    let types = if bound {
        let r = bound_flag + 1..bound_flag + 1 + 2 * usize::from(params);
        if payload.len() < r.end {
            return None;
        }
        Some(r)
    } else {
        None
    };
    Some(ExecuteLayout {
        null_bitmap,
        bound_flag,
        new_params_bound: bound,
        types,
    })
}

/// Rewrites an execute that relies on types bound by an earlier execute (on another backend
/// connection) so that it carries them: sets `new_params_bound` and inserts `types`.
fn bind_types(payload: &[u8], layout: &ExecuteLayout, types: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + types.len());
    out.extend_from_slice(&payload[..layout.bound_flag]);
    out.push(1);
    out.extend_from_slice(types);
    out.extend_from_slice(&payload[layout.bound_flag + 1..]);
    out
}

/// Where the parameter types of an execute (`COM_STMT_EXECUTE` or `COM_STMT_BULK_EXECUTE`)
/// of a statement with `params` parameters sit, if it carries them.
pub fn sent_types(payload: &[u8], params: u16) -> Option<std::ops::Range<usize>> {
    match *payload.first()? {
        COM_STMT_EXECUTE => execute_layout(payload, params)?.types,
        COM_STMT_BULK_EXECUTE => {
            let flags = bulk_flags(payload)?;
            let r = 7..7 + 2 * usize::from(params);
            (flags & BULK_SEND_TYPES != 0 && params > 0 && payload.len() >= r.end).then_some(r)
        }
        _ => None,
    }
}

/// An execute that relies on parameter types bound before (on a connection it no longer
/// runs on), made to carry `types`; `None` if it carries its own, has no parameters or is
/// not an execute.
pub fn with_types(payload: &[u8], params: u16, types: &[u8]) -> Option<Vec<u8>> {
    match *payload.first()? {
        COM_STMT_EXECUTE => {
            let layout = execute_layout(payload, params)?;
            layout
                .types
                .is_none()
                .then(|| bind_types(payload, &layout, types))
        }
        COM_STMT_BULK_EXECUTE => {
            let flags = bulk_flags(payload)?;
            if flags & BULK_SEND_TYPES != 0 || params == 0 {
                return None;
            }
            let mut out = Vec::with_capacity(payload.len() + types.len());
            out.extend_from_slice(&payload[..5]);
            out.extend_from_slice(&(flags | BULK_SEND_TYPES).to_le_bytes());
            out.extend_from_slice(types);
            out.extend_from_slice(&payload[7..]);
            Some(out)
        }
        _ => None,
    }
}

/// What a `COM_STMT_EXECUTE` of a statement with `params` parameters is known to be, as far as
/// the proxy must tell before a server reads it: MariaDB 10.11 trusts the packet further than
/// it should, and the proxy answers what it would misread itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecuteCheck {
    /// Whole, or as whole as the server checks.
    Sound,
    /// Ends before its header, NULL bitmap, bound flag or the types it announces. The server
    /// reads on into whatever its buffer holds next, and a connection it answered so is no
    /// longer in step with its client (seen with Connector/Node.js, which sends such an
    /// execute for a statement given no values).
    Truncated,
    /// Carries no parameter types where the server needs them: an execute of the statement
    /// prepared last (`LAST_STMT_ID`, Connector/C's `mariadb_stmt_execute_direct`), which the
    /// server refuses as malformed, or a value for a statement whose types were never bound,
    /// which the server reads without a type and crashes on (SIGSEGV in
    /// `Item_param::append_for_log`, MariaDB 10.11.14; Connector/C's `test_mdev19838` sends
    /// one). MDEV-19838: <https://jira.mariadb.org/browse/MDEV-19838>
    Untyped,
}

/// Checks an execute (its first physical packet) before it goes to a server. `last`: it named
/// the statement by `LAST_STMT_ID`; `typed_before`: an earlier execute of it bound types,
/// which the server keeps.
pub fn check_execute(payload: &[u8], params: u16, last: bool, typed_before: bool) -> ExecuteCheck {
    if payload.len() < 10 {
        return ExecuteCheck::Truncated;
    }
    if params == 0 {
        return ExecuteCheck::Sound;
    }
    // The layout is found only when the bound flag, and the types it announces, are there.
    let Some(layout) = execute_layout(payload, params) else {
        return ExecuteCheck::Truncated;
    };
    let all_null = || {
        let bitmap = &payload[layout.null_bitmap.clone()];
        (0..usize::from(params)).all(|i| bitmap[i / 8] & (1 << (i % 8)) != 0)
    };
    match (layout.new_params_bound, last, typed_before) {
        (true, _, _) | (false, false, true) => ExecuteCheck::Sound,
        (false, true, _) => ExecuteCheck::Untyped,
        (false, false, false) if all_null() => ExecuteCheck::Sound,
        (false, false, false) => ExecuteCheck::Untyped,
    }
}

/// The one parameter of an execute (`COM_STMT_EXECUTE` of a statement with one parameter) as
/// a whole number, when it is one: an integer type, or a string of digits, as a client binds
/// the id of `KILL ?`. `bound_before`: the types an earlier execute bound, if this one carries
/// none. `None` for NULL, a negative number, another type or a packet cut short.
/// <https://mariadb.com/kb/en/com_stmt_execute/>
pub fn execute_whole_number(payload: &[u8], bound_before: Option<&[u8]>) -> Option<u64> {
    let layout = execute_layout(payload, 1)?;
    if payload.get(layout.null_bitmap.start)? & 1 != 0 {
        return None;
    }
    let (ty, values) = match layout.types {
        Some(r) => (payload.get(r.clone())?, r.end),
        None => (bound_before?, layout.bound_flag + 1),
    };
    let mut r = crate::lenenc::Reader::new(payload.get(values..)?, "an execute's parameter");
    let unsigned = ty.get(1)? & 0x80 != 0;
    let int = |bytes: &[u8]| {
        let negative = !unsigned && bytes.last().is_some_and(|b| b & 0x80 != 0);
        let mut le = [0u8; 8];
        le[..bytes.len()].copy_from_slice(bytes);
        (!negative).then(|| u64::from_le_bytes(le))
    };
    match ty.first()? {
        1 => int(r.bytes(1).ok()?),
        2 | 13 => int(r.bytes(2).ok()?),
        3 | 9 => int(r.bytes(4).ok()?),
        8 => int(r.bytes(8).ok()?),
        // VARCHAR, the string and blob types, DECIMAL: text.
        0 | 15 | 246 | 249..=254 => std::str::from_utf8(r.lenenc_bytes().ok()?)
            .ok()?
            .trim()
            .parse()
            .ok(),
        _ => None,
    }
}

/// A `COM_STMT_BULK_EXECUTE`'s flags (bytes 5..7).
fn bulk_flags(payload: &[u8]) -> Option<u16> {
    Some(u16::from_le_bytes([*payload.get(5)?, *payload.get(6)?]))
}

/// `COM_STMT_EXECUTE` or `COM_STMT_BULK_EXECUTE`: runs a prepared statement.
pub fn executes(cmd: u8) -> bool {
    cmd == COM_STMT_EXECUTE || cmd == COM_STMT_BULK_EXECUTE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn executes_the_server_would_misread_are_told_apart() {
        use ExecuteCheck::*;
        let check = |p: &[u8], params| check_execute(p, params, false, true);
        let head = [COM_STMT_EXECUTE, 1, 0, 0, 0, 0, 1, 0, 0, 0];
        assert_eq!(check(&head[..9], 0), Truncated);
        assert_eq!(check(&head, 0), Sound, "no parameters: complete");
        // Connector/Node.js's execute of `SELECT ?` with no values: a NULL bitmap, no flag.
        let nodejs = [&head[..], &[1]].concat();
        assert_eq!(check(&nodejs, 1), Truncated);
        let unbound = [&nodejs[..], &[0]].concat();
        assert_eq!(check(&unbound, 1), Sound, "types bound before");
        assert_eq!(
            check(&[&nodejs[..], &[1, 8]].concat(), 1),
            Truncated,
            "half a type"
        );
        let typed = [&nodejs[..], &[1, 8, 0]].concat();
        assert_eq!(check(&typed, 1), Sound);

        // Never bound: a value is read without a type; NULLs are not read at all.
        let value = [&head[..], &[0b0000_0000, 0, 1, b'9']].concat();
        assert_eq!(check_execute(&value, 1, false, false), Untyped);
        assert_eq!(check_execute(&unbound, 1, false, false), Sound, "NULL");
        assert_eq!(check_execute(&typed, 1, false, false), Sound);
        // Nine parameters, all NULL but the ninth (the second bitmap byte).
        let nine = [&head[..], &[0xff, 0b0000_0000, 0, 1, b'9']].concat();
        assert_eq!(check_execute(&nine, 9, false, false), Untyped);
        let nulls = [&head[..], &[0xff, 0b0000_0001, 0]].concat();
        assert_eq!(check_execute(&nulls, 9, false, false), Sound);
        // `LAST_STMT_ID` must carry its types, bound before or not, NULL or not.
        assert_eq!(check_execute(&unbound, 1, true, true), Untyped);
        assert_eq!(check_execute(&typed, 1, true, false), Sound);
        assert_eq!(check_execute(&head, 0, true, false), Sound);
    }

    #[test]
    fn a_whole_number_parameter_is_read_in_every_integer_type_and_as_text() {
        // id 1, no flags, one iteration, NULL bitmap, then bound types and the value.
        let exec = |ty: [u8; 2], value: &[u8]| {
            [
                &[COM_STMT_EXECUTE, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1][..],
                &ty,
                value,
            ]
            .concat()
        };
        let read = |p: &[u8]| execute_whole_number(p, None);
        assert_eq!(read(&exec([1, 0], &[42])), Some(42), "TINY");
        assert_eq!(read(&exec([1, 0], &[0xff])), None, "TINY -1");
        assert_eq!(read(&exec([1, 0x80], &[0xff])), Some(255), "unsigned TINY");
        assert_eq!(read(&exec([3, 0], &7u32.to_le_bytes())), Some(7), "LONG");
        let big = 1u64 << 40;
        assert_eq!(
            read(&exec([8, 0], &big.to_le_bytes())),
            Some(big),
            "LONGLONG"
        );
        assert_eq!(read(&exec([8, 0], &u64::MAX.to_le_bytes())), None, "-1");
        assert_eq!(
            read(&exec([253, 0], b"\x0a1073741825")),
            Some(1_073_741_825)
        );
        assert_eq!(read(&exec([253, 0], b"\x03abc")), None, "not a number");
        assert_eq!(read(&exec([5, 0], &[0; 8])), None, "DOUBLE");
        assert_eq!(read(&exec([3, 0], &[7, 0])), None, "cut short");
        // NULL, and an execute that relies on the types bound before.
        let mut null = exec([3, 0], &[]);
        null[10] = 1;
        assert_eq!(read(&null), None);
        let unbound = [&exec([3, 0], &[])[..12], &7u32.to_le_bytes()].concat();
        let unbound = [&unbound[..11], &[0], &unbound[12..]].concat();
        assert_eq!(execute_whole_number(&unbound, Some(&[3, 0])), Some(7));
        assert_eq!(execute_whole_number(&unbound, None), None);
    }

    #[test]
    fn bulk_types_are_found_and_put_in() {
        // id 9, no flags, 2 params: rows only (indicator 0 + a TINY, indicator 1 = NULL).
        let bare = [COM_STMT_BULK_EXECUTE, 9, 0, 0, 0, 0, 0, 0, 7, 1];
        assert_eq!(sent_types(&bare, 2), None);
        let types = [1, 0, 1, 0x80];
        let bound = with_types(&bare, 2, &types).unwrap();
        assert_eq!(
            bound,
            [
                COM_STMT_BULK_EXECUTE,
                9,
                0,
                0,
                0,
                0x80,
                0,
                1,
                0,
                1,
                0x80,
                0,
                7,
                1
            ]
        );
        assert_eq!(sent_types(&bound, 2), Some(7..11));
        assert_eq!(with_types(&bound, 2, &types), None, "it has its own");
        assert_eq!(sent_types(&bound[..9], 2), None, "too short for its types");
        assert_eq!(with_types(&bare[..6], 2, &types), None, "no flags");
        assert!(executes(COM_STMT_BULK_EXECUTE) && executes(COM_STMT_EXECUTE));
        assert_eq!(
            expect(COM_STMT_BULK_EXECUTE),
            Some(Expect::ResultSets { binary: true })
        );
    }

    #[test]
    fn execute_layout_and_binding() {
        // id 5, flags 0, iterations 1, 2 params: bitmap 1 byte, bound, types, values.
        let mut p = vec![
            COM_STMT_EXECUTE,
            5,
            0,
            0,
            0,
            0,
            1,
            0,
            0,
            0,
            0b00,
            1,
            3,
            0,
            253,
            0,
        ];
        p.extend_from_slice(&[7, 0, 0, 0, 1, b'x']);
        let l = execute_layout(&p, 2).unwrap();
        assert!(l.new_params_bound);
        assert_eq!(&p[l.types.clone().unwrap()], &[3, 0, 253, 0]);
        assert_eq!(statement_id(&p), Some(5));
        set_statement_id(&mut p, 9);
        assert_eq!(statement_id(&p), Some(9));

        // The same execute without types, then re-bound.
        let unbound = [&p[..11], &[0u8], &p[16..]].concat();
        let l2 = execute_layout(&unbound, 2).unwrap();
        assert!(!l2.new_params_bound);
        assert_eq!(bind_types(&unbound, &l2, &[3, 0, 253, 0]), p);
        assert!(execute_layout(&[COM_STMT_EXECUTE], 3).is_none());
    }
}
