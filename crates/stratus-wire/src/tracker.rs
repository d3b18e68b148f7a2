//! Where the response to one command ends.
//!
//! The proxy forwards a backend's packets to the client as they come and must know, without
//! buffering or decoding rows, when the response is complete: after an OK or ERR; after the
//! terminator of the last result set (`SERVER_MORE_RESULTS_EXIST` clear); after the column
//! definitions of a cursor; and it must notice a `LOCAL INFILE` request, which hands the turn back
//! to the client mid-response. Formats: <https://mariadb.com/kb/en/result-set-packets/>,
//! <https://mariadb.com/kb/en/com_stmt_prepare/#com_stmt_prepare-response>,
//! <https://mariadb.com/kb/en/local_infile-packet/>.

use crate::caps::{STATUS_CURSOR_EXISTS, STATUS_MORE_RESULTS, STATUS_SESSION_STATE_CHANGED};
use crate::lenenc::Reader;
use crate::packet::MAX_PAYLOAD;

/// What kind of response a command gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// `COM_QUERY` (text rows) or `COM_STMT_EXECUTE` (binary rows).
    ResultSets { binary: bool },
    /// `COM_STMT_EXECUTE` that asked for a cursor: binary result sets, except that a result
    /// whose column definitions end with `SERVER_STATUS_CURSOR_EXISTS` ends the response (rows
    /// come by `COM_STMT_FETCH`). Without the request, that flag proves nothing: results of a
    /// stored procedure that loops over a cursor carry it, rows and all.
    Cursor,
    /// `COM_STMT_PREPARE`: prepare-OK with parameter and column definitions, or ERR.
    Prepare,
    /// `COM_STMT_FETCH`: rows and a terminator, or ERR.
    Fetch,
    /// `COM_FIELD_LIST`: column definitions and a terminator, or ERR.
    FieldList,
    /// Exactly one packet of any kind (`COM_PING`, `COM_INIT_DB`, `COM_SET_OPTION`, `COM_STATISTICS`…).
    One,
}

/// The prepare-OK header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrepareOk {
    pub statement_id: u32,
    pub columns: u16,
    pub params: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// More packets belong to this response.
    More,
    /// The response is complete.
    Done,
    /// The server asked for a local file: the client now sends its content, ending with an
    /// empty packet, and the server's answer continues this response.
    LocalInfile,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// The first packet of a result (or of the response).
    Start,
    /// Column definitions left to read; then an EOF unless `DEPRECATE_EOF`.
    Columns {
        left: u64,
    },
    /// The EOF after column definitions.
    ColumnsEof,
    /// `COM_FIELD_LIST`: definitions until a terminator.
    FieldDefs,
    Rows,
    /// Packets of a prepare response still to come (definitions and their EOFs).
    Skip {
        left: u64,
    },
    Finished,
}

#[derive(Debug, Clone)]
pub struct Tracker {
    expect: Expect,
    deprecate_eof: bool,
    state: State,
    /// The previous physical packet was full: this one continues it and is not interpreted.
    continuing: bool,
    /// Status flags of the last OK/EOF seen.
    pub status: u16,
    /// Warning count of the last OK/EOF seen.
    pub warnings: u16,
    /// Error code, if the response ended in ERR.
    pub error: Option<u16>,
    pub prepare_ok: Option<PrepareOk>,
    /// The last packet was an OK (or OK-style terminator) carrying session state changes.
    pub state_changed: bool,
    /// The last packet was an OK or an OK-style terminator (whose info may need rewriting).
    pub last_was_ok: bool,
    /// Result sets seen.
    pub result_sets: u32,
}

impl Tracker {
    pub fn new(expect: Expect, deprecate_eof: bool) -> Self {
        Self {
            expect,
            deprecate_eof,
            state: State::Start,
            continuing: false,
            status: 0,
            warnings: 0,
            error: None,
            prepare_ok: None,
            state_changed: false,
            last_was_ok: false,
            result_sets: 0,
        }
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Finished
    }

    /// After the client has sent a local file (ending with its empty packet), the server's
    /// answer is an OK or ERR that continues this response.
    pub fn infile_sent(&mut self) {
        self.state = State::Start;
    }

    /// Feeds the payload of the next physical packet of the response.
    pub fn feed(&mut self, payload: &[u8]) -> Step {
        let was_continuing = self.continuing;
        self.continuing = payload.len() == MAX_PAYLOAD;
        self.last_was_ok = false;
        self.state_changed = false;
        if self.state == State::Finished {
            return Step::Done;
        }
        if was_continuing {
            return Step::More;
        }
        let first = payload.first().copied();
        match self.state {
            State::Start => match (self.expect, first) {
                (_, Some(0xff)) => self.error(payload),
                (Expect::One, _) => {
                    if first == Some(0x00) || self.is_terminator(payload) {
                        self.ok(payload);
                    }
                    self.finish()
                }
                (Expect::Prepare, Some(0x00)) => self.prepare_ok(payload),
                (Expect::Prepare, _) => self.finish(),
                (Expect::Fetch, _) => self.row_or_end(payload),
                (Expect::FieldList, _) => {
                    self.state = State::FieldDefs;
                    self.feed_again(payload)
                }
                (Expect::ResultSets { .. } | Expect::Cursor, Some(0x00)) => {
                    self.ok_maybe_more(payload)
                }
                (Expect::ResultSets { .. } | Expect::Cursor, Some(0xfb)) => Step::LocalInfile,
                (Expect::ResultSets { .. } | Expect::Cursor, _) => {
                    match Reader::new(payload, "column count").lenenc() {
                        Ok(n) if n > 0 => {
                            self.result_sets += 1;
                            self.state = State::Columns { left: n };
                            Step::More
                        }
                        _ => self.finish(),
                    }
                }
            },
            // An error can cut a result short right after its column count (a cursor that
            // fails to open, say); a column definition never starts with 0xff (it would be an
            // invalid length prefix of its catalog name).
            State::Columns { .. } | State::ColumnsEof if first == Some(0xff) => self.error(payload),
            State::Columns { left } => {
                let left = left - 1;
                self.state = match (left, self.deprecate_eof) {
                    (0, true) => State::Rows,
                    (0, false) => State::ColumnsEof,
                    (left, _) => State::Columns { left },
                };
                Step::More
            }
            State::ColumnsEof => {
                self.status = crate::response::eof_status(payload);
                if self.expect == Expect::Cursor && self.status & STATUS_CURSOR_EXISTS != 0 {
                    return self.finish();
                }
                self.state = State::Rows;
                Step::More
            }
            State::FieldDefs => {
                if first == Some(0xff) {
                    return self.error(payload);
                }
                if self.is_terminator(payload) {
                    self.ok(payload);
                    return self.finish();
                }
                Step::More
            }
            State::Rows => self.row_or_end(payload),
            State::Skip { left } => {
                let left = left.saturating_sub(1);
                if left == 0 {
                    return self.finish();
                }
                self.state = State::Skip { left };
                Step::More
            }
            State::Finished => Step::Done,
        }
    }

    fn feed_again(&mut self, payload: &[u8]) -> Step {
        // Re-dispatch the same packet in the new state (not a continuation).
        self.continuing = false;
        self.feed(payload)
    }

    /// An EOF (classic) or, under `DEPRECATE_EOF`, an OK with header 0xfe. A row can start with
    /// 0xfe only as an 8-byte length prefix, which makes it a full-size packet.
    fn is_terminator(&self, payload: &[u8]) -> bool {
        payload.first() == Some(&0xfe)
            && if self.deprecate_eof {
                payload.len() < MAX_PAYLOAD
            } else {
                payload.len() < 9
            }
    }

    fn row_or_end(&mut self, payload: &[u8]) -> Step {
        match payload.first() {
            Some(0xff) => self.error(payload),
            _ if self.is_terminator(payload) => {
                self.ok(payload);
                if self.status & STATUS_MORE_RESULTS != 0 && self.expect != Expect::Fetch {
                    self.state = State::Start;
                    Step::More
                } else {
                    self.finish()
                }
            }
            _ => {
                self.state = State::Rows;
                Step::More
            }
        }
    }

    fn ok_maybe_more(&mut self, payload: &[u8]) -> Step {
        self.ok(payload);
        if self.status & STATUS_MORE_RESULTS != 0 {
            self.state = State::Start;
            Step::More
        } else {
            self.finish()
        }
    }

    /// Records the status of an OK, an OK-style terminator, or a classic EOF.
    fn ok(&mut self, payload: &[u8]) {
        if crate::response::is_eof(payload) && !self.deprecate_eof {
            self.status = crate::response::eof_status(payload);
            self.warnings = payload
                .get(1..3)
                .map_or(0, |w| u16::from_le_bytes([w[0], w[1]]));
            return;
        }
        let mut r = Reader::new(payload, "OK");
        let fields = (|| {
            r.u8()?;
            r.lenenc()?;
            r.lenenc()?;
            Ok::<_, crate::Malformed>((r.u16()?, r.u16()?))
        })();
        if let Ok((status, warnings)) = fields {
            self.status = status;
            self.warnings = warnings;
            self.last_was_ok = true;
            self.state_changed = status & STATUS_SESSION_STATE_CHANGED != 0;
        }
    }

    fn prepare_ok(&mut self, payload: &[u8]) -> Step {
        let mut r = Reader::new(payload, "prepare OK");
        let header = (|| {
            r.u8()?;
            let statement_id = r.u32()?;
            let columns = r.u16()?;
            let params = r.u16()?;
            Ok::<_, crate::Malformed>(PrepareOk {
                statement_id,
                columns,
                params,
            })
        })();
        let Ok(p) = header else { return self.finish() };
        self.prepare_ok = Some(p);
        let eof = u64::from(!self.deprecate_eof);
        let block = |n: u16| if n > 0 { u64::from(n) + eof } else { 0 };
        let left = block(p.params) + block(p.columns);
        if left == 0 {
            return self.finish();
        }
        self.state = State::Skip { left };
        Step::More
    }

    fn error(&mut self, payload: &[u8]) -> Step {
        self.error = Some(
            payload
                .get(1..3)
                .map_or(0, |b| u16::from_le_bytes([b[0], b[1]])),
        );
        self.finish()
    }

    fn finish(&mut self) -> Step {
        self.state = State::Finished;
        Step::Done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::caps::*;
    use proptest::prelude::*;

    fn ok(status: u16) -> Vec<u8> {
        crate::response::ok(status, 0, PROTOCOL_41)
    }

    fn run(t: &mut Tracker, packets: &[Vec<u8>]) -> Vec<Step> {
        packets.iter().map(|p| t.feed(p)).collect()
    }

    const COL: &[u8] =
        b"\x03def\x00\x00\x00\x01a\x00\x0c\x08\x00\x0b\x00\x00\x00\x03\x00\x00\x00\x00\x00";

    #[test]
    fn ok_and_err() {
        let mut t = Tracker::new(Expect::ResultSets { binary: false }, true);
        assert_eq!(t.feed(&ok(STATUS_AUTOCOMMIT)), Step::Done);
        assert_eq!(t.status, STATUS_AUTOCOMMIT);
        let mut t = Tracker::new(Expect::ResultSets { binary: false }, true);
        assert_eq!(
            t.feed(&crate::response::err(1064, "42000", "syntax")),
            Step::Done
        );
        assert_eq!(t.error, Some(1064));
    }

    #[test]
    fn result_set_with_and_without_deprecate_eof() {
        let rows = vec![vec![1u8, b'1'], vec![1, b'2']];
        // DEPRECATE_EOF: count, 2 defs, rows, OK-style terminator.
        let mut t = Tracker::new(Expect::ResultSets { binary: false }, true);
        let mut p = vec![vec![2u8], COL.to_vec(), COL.to_vec()];
        p.extend(rows.clone());
        let mut term = ok(STATUS_AUTOCOMMIT);
        term[0] = 0xfe;
        p.push(term);
        let steps = run(&mut t, &p);
        assert_eq!(steps.last(), Some(&Step::Done));
        assert!(steps[..steps.len() - 1].iter().all(|s| *s == Step::More));
        // Classic: an EOF after the definitions and at the end.
        let mut t = Tracker::new(Expect::ResultSets { binary: false }, false);
        let mut p = vec![
            vec![2u8],
            COL.to_vec(),
            COL.to_vec(),
            crate::response::eof(STATUS_AUTOCOMMIT),
        ];
        p.extend(rows);
        p.push(crate::response::eof(STATUS_AUTOCOMMIT));
        let steps = run(&mut t, &p);
        assert_eq!(steps.last(), Some(&Step::Done));
        assert_eq!(steps.iter().filter(|s| **s == Step::Done).count(), 1);
    }

    #[test]
    fn multi_results_and_errors_midway() {
        let mut t = Tracker::new(Expect::ResultSets { binary: false }, false);
        let steps = run(
            &mut t,
            &[
                ok(STATUS_MORE_RESULTS),
                vec![1u8],
                COL.to_vec(),
                crate::response::eof(0),
                vec![1, b'x'],
                crate::response::eof(STATUS_MORE_RESULTS),
                crate::response::err(1146, "42S02", "no table"),
            ],
        );
        assert_eq!(
            steps,
            [
                Step::More,
                Step::More,
                Step::More,
                Step::More,
                Step::More,
                Step::More,
                Step::Done
            ]
        );
        assert_eq!(t.error, Some(1146));
        assert_eq!(t.result_sets, 1);
    }

    #[test]
    fn an_error_after_the_column_count_ends_the_response() {
        for expect in [Expect::Cursor, Expect::ResultSets { binary: true }] {
            let mut t = Tracker::new(expect, false);
            let steps = run(
                &mut t,
                &[
                    vec![1u8],
                    crate::response::err(1422, "HY000", "commit not allowed"),
                ],
            );
            assert_eq!(steps, [Step::More, Step::Done]);
            assert_eq!(t.error, Some(1422));
        }
    }

    #[test]
    fn cursor_ends_after_definitions() {
        // Without a cursor asked for, the flag (left over from a procedure's own cursor)
        // does not end the result: its rows follow.
        let mut t = Tracker::new(Expect::ResultSets { binary: true }, false);
        let steps = run(
            &mut t,
            &[
                vec![1u8],
                COL.to_vec(),
                crate::response::eof(STATUS_CURSOR_EXISTS | STATUS_MORE_RESULTS),
                vec![0, 0, 1],
                crate::response::eof(STATUS_CURSOR_EXISTS | STATUS_MORE_RESULTS),
                crate::response::ok(0, 0, 0),
            ],
        );
        assert_eq!(
            steps,
            [
                Step::More,
                Step::More,
                Step::More,
                Step::More,
                Step::More,
                Step::Done
            ]
        );
        let mut t = Tracker::new(Expect::Cursor, false);
        let steps = run(
            &mut t,
            &[
                vec![1u8],
                COL.to_vec(),
                crate::response::eof(STATUS_CURSOR_EXISTS),
            ],
        );
        assert_eq!(steps, [Step::More, Step::More, Step::Done]);
        let mut t = Tracker::new(Expect::Fetch, false);
        let steps = run(
            &mut t,
            &[vec![0, 0, 1], crate::response::eof(STATUS_LAST_ROW_SENT)],
        );
        assert_eq!(steps, [Step::More, Step::Done]);
    }

    #[test]
    fn prepare_counts_definitions() {
        let prep = |params: u16, cols: u16| {
            let mut p = vec![0u8];
            p.extend_from_slice(&7u32.to_le_bytes());
            p.extend_from_slice(&cols.to_le_bytes());
            p.extend_from_slice(&params.to_le_bytes());
            p.extend_from_slice(&[0, 0, 0]);
            p
        };
        let mut t = Tracker::new(Expect::Prepare, false);
        let steps = run(
            &mut t,
            &[
                prep(1, 2),
                COL.to_vec(),
                crate::response::eof(0),
                COL.to_vec(),
                COL.to_vec(),
                crate::response::eof(0),
            ],
        );
        assert_eq!(steps.last(), Some(&Step::Done));
        assert_eq!(steps.iter().filter(|s| **s == Step::Done).count(), 1);
        assert_eq!(
            t.prepare_ok,
            Some(PrepareOk {
                statement_id: 7,
                columns: 2,
                params: 1
            })
        );
        let mut t = Tracker::new(Expect::Prepare, true);
        assert_eq!(t.feed(&prep(0, 0)), Step::Done);
    }

    #[test]
    fn local_infile_hands_over_and_resumes() {
        let mut t = Tracker::new(Expect::ResultSets { binary: false }, true);
        assert_eq!(t.feed(b"\xfbdata.csv"), Step::LocalInfile);
        t.infile_sent();
        assert_eq!(t.feed(&ok(STATUS_AUTOCOMMIT)), Step::Done);
    }

    #[test]
    fn field_list() {
        let mut t = Tracker::new(Expect::FieldList, false);
        let steps = run(
            &mut t,
            &[COL.to_vec(), COL.to_vec(), crate::response::eof(0)],
        );
        assert_eq!(steps, [Step::More, Step::More, Step::Done]);
    }

    #[test]
    fn continuation_packets_are_not_interpreted() {
        let mut t = Tracker::new(Expect::ResultSets { binary: false }, true);
        run(&mut t, &[vec![1u8], COL.to_vec()]);
        let mut big = vec![0xfc; MAX_PAYLOAD];
        big[0] = 0xfe;
        assert_eq!(t.feed(&big), Step::More, "a full-size row starting 0xfe");
        assert_eq!(
            t.feed(&[0xfe, 0, 0, 2, 0]),
            Step::More,
            "its continuation, which looks like a terminator"
        );
        let mut term = ok(0);
        term[0] = 0xfe;
        assert_eq!(t.feed(&term), Step::Done);
    }

    proptest! {
        #[test]
        fn never_panics(packets in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..12), 0..12), kind in 0..7u8, dep in any::<bool>()) {
            let expect = match kind {
                0 => Expect::ResultSets { binary: false },
                1 => Expect::ResultSets { binary: true },
                5 => Expect::Cursor,
                2 => Expect::Prepare,
                3 => Expect::Fetch,
                4 => Expect::FieldList,
                _ => Expect::One,
            };
            let mut t = Tracker::new(expect, dep);
            for p in &packets { let _ = t.feed(p); }
        }
    }
}
