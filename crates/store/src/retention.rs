//! How long invocation records and console lines are kept, and the pruning
//! of what is past it, in bounded chunks so that no single statement holds
//! the write lock for long.

use rusqlite::{params, Connection, OptionalExtension};
use std::time::Duration;

/// Rows deleted per statement.
pub const CHUNK: u32 = 2_000;

/// What to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Records and lines older than this go.
    pub max_age: Duration,
    /// At most this many invocation records (the newest) stay.
    pub max_records: u64,
    /// At most this many console lines (the newest) stay.
    pub max_log_lines: u64,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            max_age: Duration::from_secs(72 * 3600),
            max_records: 1_000_000,
            max_log_lines: 5_000_000,
        }
    }
}

/// What a pruning pass removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Invocation records deleted.
    pub invocations: u64,
    /// Console lines deleted.
    pub logs: u64,
}

/// Where the oldest kept rows start.
#[derive(Debug, Clone, Copy)]
pub struct Cutoffs {
    /// Records and lines created before this (Unix ms) go.
    pub created_before: i64,
    /// Lines up to this sequence number go (the line cap).
    pub last_dropped_seq: Option<i64>,
}

/// The cutoffs for `retention` at `now_ms`: the older of the age limit and
/// the creation time of the newest record past the count limit.
///
/// The count limits are found from the ids, which only grow (the records'
/// rowid, the lines' `AUTOINCREMENT` sequence): what lies more than the cap
/// below the newest id goes, found in one index step rather than by
/// counting a million rows. Ids left free by deletions make it keep fewer,
/// never more, than the cap.
pub fn cutoffs(conn: &Connection, retention: &Retention, now_ms: i64) -> rusqlite::Result<Cutoffs> {
    let age_ms = i64::try_from(retention.max_age.as_millis()).unwrap_or(i64::MAX);
    let mut created_before = now_ms.saturating_sub(age_ms);
    let newest: Option<i64> =
        conn.query_row("SELECT max(rowid) FROM invocations", [], |row| row.get(0))?;
    if let Some(past_cap) = below_cap(newest, retention.max_records) {
        let over_count: Option<i64> = conn
            .query_row(
                "SELECT created_at FROM invocations WHERE rowid <= ?1 ORDER BY rowid DESC LIMIT 1",
                [past_cap],
                |row| row.get(0),
            )
            .optional()?;
        if let Some(at) = over_count {
            // That record and everything older.
            created_before = created_before.max(at.saturating_add(1));
        }
    }
    let newest_line: Option<i64> =
        conn.query_row("SELECT max(seq) FROM logs", [], |row| row.get(0))?;
    Ok(Cutoffs {
        created_before,
        last_dropped_seq: below_cap(newest_line, retention.max_log_lines),
    })
}

/// The newest id past a cap of `count` below the `newest` id, if any.
fn below_cap(newest: Option<i64>, count: u64) -> Option<i64> {
    let past = newest?.checked_sub(i64::try_from(count).ok()?)?;
    (past > 0).then_some(past)
}

/// Deletes up to [`CHUNK`] records older than the cutoff; how many went.
pub fn delete_invocations(conn: &Connection, cutoffs: &Cutoffs) -> rusqlite::Result<u64> {
    let deleted = conn.execute(
        "DELETE FROM invocations WHERE rowid IN (SELECT rowid FROM invocations WHERE created_at < ?1 LIMIT ?2)",
        params![cutoffs.created_before, CHUNK],
    )?;
    Ok(deleted as u64)
}

/// Deletes up to [`CHUNK`] console lines of pruned records or past the
/// line cap; how many went.
pub fn delete_logs(conn: &Connection, cutoffs: &Cutoffs) -> rusqlite::Result<u64> {
    let deleted = conn.execute(
        "DELETE FROM logs WHERE seq IN (SELECT seq FROM logs WHERE created_at < ?1 LIMIT ?3)
         OR seq IN (SELECT seq FROM logs WHERE seq <= ?2 ORDER BY seq LIMIT ?3)",
        params![
            cutoffs.created_before,
            cutoffs.last_dropped_seq.unwrap_or(0),
            CHUNK
        ],
    )?;
    Ok(deleted as u64)
}
