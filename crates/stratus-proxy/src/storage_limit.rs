//! A database at its storage limit where no volume enforces it (Stratus in a container, or
//! without loop devices): the proxy refuses the statements that add data, with the error the
//! server gives for a full table (`ER_RECORD_FILE_FULL`,
//! <https://mariadb.com/kb/en/mariadb-error-code-reference/>), and lets through everything
//! that reads or makes room (`DELETE`, `DROP`, `TRUNCATE`), so deleting data makes writes work
//! again. The measure is the control plane's (`stratus-control`'s `storage`, every second), so a
//! burst can pass the limit by what one second writes; a volume is the hard limit.

use crate::error::SqlError;
use stratus_wire::classify::{Kind, Statement};

/// `ER_RECORD_FILE_FULL`.
pub const ER_RECORD_FILE_FULL: u16 = 1114;

/// Whether a statement may add data: inserts, updates, loads, calls (a procedure may do any of
/// them), `CREATE` and `ALTER`. `text` is the statement's SQL (for the DDL verb).
pub fn adds_data(s: &Statement, text: &[u8]) -> bool {
    match s.kind {
        Kind::Insert
        | Kind::Update
        | Kind::Replace
        | Kind::LoadData
        | Kind::LoadXml
        | Kind::Call
        | Kind::Execute => true,
        Kind::Ddl => {
            let verb = first_word(text);
            verb.eq_ignore_ascii_case(b"CREATE") || verb.eq_ignore_ascii_case(b"ALTER")
        }
        _ => false,
    }
}

/// The first word of a statement, after whitespace and comments.
fn first_word(text: &[u8]) -> &[u8] {
    let mut rest = text;
    loop {
        rest = rest.trim_ascii_start();
        if let Some(after) = rest.strip_prefix(b"/*") {
            match after.windows(2).position(|w| w == b"*/") {
                Some(end) => rest = &after[end + 2..],
                None => return b"",
            }
        } else if rest.starts_with(b"#") || rest.starts_with(b"-- ") {
            match rest.iter().position(|&b| b == b'\n') {
                Some(end) => rest = &rest[end + 1..],
                None => return b"",
            }
        } else {
            break;
        }
    }
    let end = rest
        .iter()
        .position(|b| !b.is_ascii_alphabetic())
        .unwrap_or(rest.len());
    &rest[..end]
}

/// The error a refused statement gets.
pub fn refused(service: &str, limit: u64) -> SqlError {
    SqlError {
        code: ER_RECORD_FILE_FULL,
        state: "HY000",
        message: format!(
            "The table is full: database {service} is at its storage limit of {} GiB; delete data or raise its storage_gb",
            limit >> 30
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stratus_wire::classify::classify;

    fn adds(sql: &str) -> bool {
        adds_data(&classify(sql.as_bytes()), sql.as_bytes())
    }

    #[test]
    fn what_adds_data_is_refused_and_what_makes_room_is_not() {
        for sql in [
            "INSERT INTO t VALUES (1)",
            "insert into t select * from u",
            "REPLACE INTO t VALUES (1)",
            "UPDATE t SET v = REPEAT('x', 1000)",
            "LOAD DATA LOCAL INFILE 'f' INTO TABLE t",
            "CALL fill()",
            "CREATE TABLE u (id INT)",
            "/* c */ ALTER TABLE t ADD COLUMN w TEXT",
            "EXECUTE s",
        ] {
            assert!(adds(sql), "{sql}");
        }
        for sql in [
            "SELECT * FROM t",
            "DELETE FROM t WHERE id < 10",
            "TRUNCATE TABLE t",
            "DROP TABLE t",
            "-- note\nDROP DATABASE d",
            "BEGIN",
            "COMMIT",
            "SET @a = 1",
            "SHOW TABLES",
        ] {
            assert!(!adds(sql), "{sql}");
        }
        let e = refused("shop", 2 << 30);
        assert_eq!(e.code, ER_RECORD_FILE_FULL);
        assert!(
            e.message.contains("shop") && e.message.contains("2 GiB"),
            "{}",
            e.message
        );
    }
}
