//! Server ids on a database's replication stream
//! (<https://mariadb.com/kb/en/com_binlog_dump/>). Stratus's own replicas of a server (the
//! commit clock; a point-in-time restore's applier) take theirs from one range, which a
//! tenant's replica, through the proxy, may not use: a dump request with the id of a running
//! dump makes the server kill that one as a zombie, and with semi-synchronous replication on,
//! MariaDB 10.11 can deadlock there and later hang its shutdown.

use std::ops::RangeInclusive;

/// The server ids Stratus's own replicas use.
pub const STRATUS_REPLICA_IDS: RangeInclusive<u32> = 0x7000_0000..=0x7fff_ffff;

/// Whether a tenant's replica may not use `id`.
pub fn reserved_replica_id(id: u32) -> bool {
    STRATUS_REPLICA_IDS.contains(&id)
}
