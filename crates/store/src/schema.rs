//! The SQLite schema and connection settings.

use rusqlite::Connection;

/// Opens a connection with isola's settings: WAL, full sync (an
/// acknowledged write survives a crash), foreign keys, a busy timeout, and
/// secure delete where it costs no extra writes (`FAST`): secrets are
/// sealed, and the one-time scrub of plaintext ones turns it fully on;
/// pruning records does not write every freed page twice.
pub fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.pragma_update(None, "secure_delete", "FAST")?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(())
}

/// Creates the tables when missing, and brings older databases up to date.
pub fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    create_tables(conn)?;
    add_column(conn, "invocations", "error_message", "TEXT")?;
    // The HTTP request an invocation answered (NULL for JSON invocations).
    add_column(conn, "invocations", "method", "TEXT")?;
    add_column(conn, "invocations", "path", "TEXT")?;
    add_column(conn, "invocations", "http_status", "INTEGER")?;
    // A WebSocket connection's totals, as JSON (NULL for other invocations).
    add_column(conn, "invocations", "websocket", "TEXT")
}

/// Adds a column to a table of an older database, unless it has it.
fn add_column(conn: &Connection, table: &str, column: &str, kind: &str) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare(&format!("SELECT name FROM pragma_table_info('{table}')"))?;
    let columns = stmt
        .query_map([], |row| row.get::<_, String>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    if !columns.iter().any(|c| c == column) {
        conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {kind}"))?;
    }
    Ok(())
}

fn create_tables(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(
        "
        CREATE TABLE IF NOT EXISTS functions (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            created_at INTEGER NOT NULL,
            active_version INTEGER,
            next_version INTEGER NOT NULL DEFAULT 1
        );
        CREATE TABLE IF NOT EXISTS deployments (
            function_id INTEGER NOT NULL REFERENCES functions(id) ON DELETE CASCADE,
            version INTEGER NOT NULL,
            hash TEXT NOT NULL,
            entry TEXT NOT NULL,
            files TEXT NOT NULL,
            limits TEXT NOT NULL,
            env TEXT NOT NULL,
            secrets TEXT NOT NULL,
            kv_binding TEXT,
            allowed_hosts TEXT NOT NULL DEFAULT '[]',
            created_at INTEGER NOT NULL,
            PRIMARY KEY (function_id, version)
        );
        CREATE TABLE IF NOT EXISTS invocations (
            id TEXT PRIMARY KEY,
            function_id INTEGER NOT NULL REFERENCES functions(id) ON DELETE CASCADE,
            version INTEGER NOT NULL,
            status TEXT NOT NULL,
            error_code TEXT,
            error_message TEXT,
            duration_us INTEGER NOT NULL,
            cpu_us INTEGER NOT NULL,
            peak_heap_bytes INTEGER NOT NULL,
            cold_start INTEGER NOT NULL,
            created_at INTEGER NOT NULL
        );
        CREATE INDEX IF NOT EXISTS invocations_by_function ON invocations(function_id, created_at);
        CREATE INDEX IF NOT EXISTS invocations_by_time ON invocations(created_at);
        CREATE TABLE IF NOT EXISTS logs (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            function_id INTEGER NOT NULL REFERENCES functions(id) ON DELETE CASCADE,
            invocation_id TEXT NOT NULL,
            level TEXT NOT NULL,
            message TEXT NOT NULL,
            created_at INTEGER NOT NULL
        );
        CREATE INDEX IF NOT EXISTS logs_by_function ON logs(function_id, seq);
        CREATE INDEX IF NOT EXISTS logs_by_time ON logs(created_at);
        CREATE TABLE IF NOT EXISTS settings (
            key TEXT PRIMARY KEY,
            value TEXT NOT NULL
        );
        ",
    )
}
