//! Invocation records and their console lines: written in batches, one
//! transaction per batch with cached statements.

use crate::model::InvocationRecord;
use crate::Result;
use isola_core::LogLevel;
use rusqlite::{params, Connection, OptionalExtension};
use std::collections::HashMap;

fn level_name(level: LogLevel) -> &'static str {
    match level {
        LogLevel::Debug => "debug",
        LogLevel::Info => "info",
        LogLevel::Warn => "warn",
        LogLevel::Error => "error",
    }
}

/// Stores `records` and their lines in one transaction. Records of
/// functions deleted meanwhile are skipped.
///
/// The transaction commits without waiting for the disk
/// (`synchronous=NORMAL`, which in WAL mode never corrupts the database):
/// records may be lost with the machine, never the deployments, whose
/// transactions keep `FULL` and also make every earlier commit durable.
pub fn insert_records(conn: &mut Connection, records: &[InvocationRecord]) -> Result<()> {
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    let inserted = insert(conn, records);
    conn.pragma_update(None, "synchronous", "FULL")?;
    inserted
}

fn insert(conn: &mut Connection, records: &[InvocationRecord]) -> Result<()> {
    let tx = conn.transaction()?;
    {
        let mut function_id = tx.prepare_cached("SELECT id FROM functions WHERE name = ?1")?;
        let mut invocation = tx.prepare_cached(
            "INSERT OR IGNORE INTO invocations (id, function_id, version, status, error_code, duration_us, cpu_us, peak_heap_bytes, cold_start, created_at, error_message, method, path, http_status, websocket) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
        )?;
        let mut log = tx.prepare_cached(
            "INSERT INTO logs (function_id, invocation_id, level, message, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        let mut ids: HashMap<&str, Option<i64>> = HashMap::new();
        for record in records {
            let id = match ids.get(record.function.as_str()) {
                Some(id) => *id,
                None => {
                    let id = function_id
                        .query_row([&record.function], |row| row.get::<_, i64>(0))
                        .optional()?;
                    *ids.entry(&record.function).or_insert(id)
                }
            };
            let Some(id) = id else {
                continue;
            };
            invocation.execute(params![
                record.id,
                id,
                record.version,
                record.status,
                record.error_code,
                record.duration_us as i64,
                record.cpu_us as i64,
                record.peak_heap_bytes as i64,
                record.cold_start,
                record.created_at,
                record.error_message,
                record.request.as_ref().map(|r| &r.method),
                record.request.as_ref().map(|r| &r.path),
                record.request.as_ref().and_then(|r| r.status),
                record
                    .websocket
                    .as_ref()
                    .and_then(|w| serde_json::to_string(w).ok())
            ])?;
            for line in &record.logs {
                log.execute(params![
                    id,
                    record.id,
                    level_name(line.level),
                    line.message,
                    record.created_at
                ])?;
            }
        }
    }
    tx.commit()?;
    Ok(())
}
