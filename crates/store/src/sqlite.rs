//! The embedded registry: one SQLite database file.

use crate::model::{
    validate_function_name, DeploymentInfo, FunctionInfo, InvocationRecord, LogRecord,
    NewDeployment, RequestLine,
};
use crate::retention::{self, Pruned, Retention};
use crate::secrets::{self, NodeKey};
use crate::{records, schema, Registry, Result, StoreError};
use async_trait::async_trait;
use isola_core::{FunctionSource, RuntimeKind, SourceFile};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// The registry in a SQLite file, WAL mode, fully synced, secrets sealed
/// with the node key.
#[derive(Clone)]
pub struct SqliteRegistry {
    conn: Arc<Mutex<Connection>>,
    key: Arc<NodeKey>,
    changes: tokio::sync::broadcast::Sender<crate::Changed>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl SqliteRegistry {
    /// Opens (creating if needed) the database at `path`, whose secrets are
    /// sealed with `key`. Fails, changing nothing, when the database was
    /// sealed with another key; seals the secrets of an older database.
    pub fn open(path: &Path, key: NodeKey) -> Result<Self> {
        let mut conn = Connection::open(path)?;
        schema::configure(&conn)?;
        schema::migrate(&conn)?;
        secrets::prepare(&mut conn, &key)?;
        Ok(Self::with(conn, key))
    }

    fn with(conn: Connection, key: NodeKey) -> Self {
        Self {
            conn: Arc::new(Mutex::new(conn)),
            key: Arc::new(key),
            changes: tokio::sync::broadcast::channel(crate::WATCH_CAPACITY).0,
        }
    }

    /// Tells watchers that `name` changed.
    fn changed(&self, name: &str) {
        // Nobody watching is fine.
        let _ = self.changes.send(crate::Changed {
            function: name.to_string(),
        });
    }

    /// An in-memory database with a random key, for tests.
    pub fn in_memory() -> Result<Self> {
        let mut conn = Connection::open_in_memory()?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        schema::migrate(&conn)?;
        let key = NodeKey::generate();
        secrets::prepare(&mut conn, &key)?;
        Ok(Self::with(conn, key))
    }

    async fn run<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            f(&mut conn)
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
    }
}

fn function_id(conn: &Connection, name: &str) -> Result<i64> {
    conn.query_row("SELECT id FROM functions WHERE name = ?1", [name], |row| {
        row.get(0)
    })
    .optional()?
    .ok_or_else(|| StoreError::NotFound(format!("function {name:?}")))
}

fn read_function(conn: &Connection, name: &str) -> Result<FunctionInfo> {
    conn.query_row(
        "SELECT name, created_at, active_version FROM functions WHERE name = ?1",
        [name],
        |row| {
            Ok(FunctionInfo {
                name: row.get(0)?,
                created_at: row.get(1)?,
                active_version: row.get(2)?,
            })
        },
    )
    .optional()?
    .ok_or_else(|| StoreError::NotFound(format!("function {name:?}")))
}

/// A deployment row with its secrets, as stored.
struct StoredDeployment {
    info: DeploymentInfo,
    files: Vec<SourceFile>,
    secrets: BTreeMap<String, String>,
}

const DEPLOYMENT_COLUMNS: &str = "d.version, d.hash, d.entry, d.files, d.limits, d.env, d.secrets, d.created_at, f.active_version, f.name, d.kv_binding, d.allowed_hosts";

/// The columns of [`DEPLOYMENT_COLUMNS`], as read.
struct DeploymentRow {
    version: u32,
    hash: String,
    entry: String,
    files: String,
    limits: String,
    env: String,
    secrets: String,
    created_at: i64,
    active_version: Option<u32>,
    function: String,
    kv_binding: Option<String>,
    allowed_hosts: String,
}

fn read_deployment(row: &rusqlite::Row) -> rusqlite::Result<DeploymentRow> {
    Ok(DeploymentRow {
        version: row.get(0)?,
        hash: row.get(1)?,
        entry: row.get(2)?,
        files: row.get(3)?,
        limits: row.get(4)?,
        env: row.get(5)?,
        secrets: row.get(6)?,
        created_at: row.get(7)?,
        active_version: row.get(8)?,
        function: row.get(9)?,
        kv_binding: row.get(10)?,
        allowed_hosts: row.get(11)?,
    })
}

fn decode_deployment(row: DeploymentRow) -> Result<StoredDeployment> {
    let files: Vec<SourceFile> = serde_json::from_str(&row.files)?;
    let secrets: BTreeMap<String, String> = serde_json::from_str(&row.secrets)?;
    let runtime = files
        .iter()
        .find(|f| f.path == row.entry)
        .map_or(RuntimeKind::Js, |f| RuntimeKind::detect(&f.code));
    Ok(StoredDeployment {
        info: DeploymentInfo {
            function: row.function,
            version: row.version,
            hash: row.hash,
            entry: row.entry,
            files: files.iter().map(|f| f.path.clone()).collect(),
            limits: serde_json::from_str(&row.limits)?,
            env: serde_json::from_str(&row.env)?,
            secret_names: secrets.keys().cloned().collect(),
            kv_binding: row.kv_binding,
            allowed_hosts: serde_json::from_str(&row.allowed_hosts)?,
            runtime,
            created_at: row.created_at,
            active: row.active_version == Some(row.version),
        },
        files,
        secrets,
    })
}

fn load_deployment(conn: &Connection, name: &str, version: u32) -> Result<StoredDeployment> {
    let sql = format!("SELECT {DEPLOYMENT_COLUMNS} FROM deployments d JOIN functions f ON f.id = d.function_id WHERE f.name = ?1 AND d.version = ?2");
    let row = conn
        .query_row(&sql, params![name, version], read_deployment)
        .optional()?;
    let row = row.ok_or_else(|| {
        StoreError::NotFound(format!("deployment {version} of function {name:?}"))
    })?;
    decode_deployment(row)
}

fn insert_deployment(
    conn: &mut Connection,
    key: &NodeKey,
    name: &str,
    deployment: &NewDeployment,
    activate: bool,
) -> Result<u32> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let (id, version): (i64, u32) = tx
        .query_row(
            "SELECT id, next_version FROM functions WHERE name = ?1",
            [name],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()?
        .ok_or_else(|| StoreError::NotFound(format!("function {name:?}")))?;
    tx.execute(
        "INSERT INTO deployments (function_id, version, hash, entry, files, limits, env, secrets, created_at, kv_binding, allowed_hosts) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        params![
            id,
            version,
            deployment.content_hash(|name, value| key.digest(name, value)),
            deployment.entry,
            serde_json::to_string(&deployment.files)?,
            serde_json::to_string(&deployment.limits)?,
            serde_json::to_string(&deployment.env)?,
            serde_json::to_string(&key.seal_all(&deployment.secrets))?,
            now_ms(),
            deployment.kv_binding,
            serde_json::to_string(&deployment.allowed_hosts)?,
        ],
    )?;
    tx.execute(
        "UPDATE functions SET next_version = next_version + 1 WHERE id = ?1",
        [id],
    )?;
    if activate {
        tx.execute(
            "UPDATE functions SET active_version = ?1 WHERE id = ?2",
            params![version, id],
        )?;
    }
    tx.commit()?;
    Ok(version)
}

#[async_trait]
impl Registry for SqliteRegistry {
    fn watch(&self) -> tokio::sync::broadcast::Receiver<crate::Changed> {
        self.changes.subscribe()
    }

    async fn create_function(&self, name: &str) -> Result<FunctionInfo> {
        validate_function_name(name)?;
        let owned = name.to_string();
        let created = self
            .run(move |conn| {
                let inserted = conn.execute(
                    "INSERT OR IGNORE INTO functions (name, created_at) VALUES (?1, ?2)",
                    params![owned, now_ms()],
                )?;
                if inserted == 0 {
                    return Err(StoreError::Conflict(format!("function {owned:?}")));
                }
                read_function(conn, &owned)
            })
            .await?;
        self.changed(name);
        Ok(created)
    }

    async fn function(&self, name: &str) -> Result<FunctionInfo> {
        let name = name.to_string();
        self.run(move |conn| read_function(conn, &name)).await
    }

    async fn functions(&self) -> Result<Vec<FunctionInfo>> {
        self.run(|conn| {
            let mut stmt = conn
                .prepare("SELECT name, created_at, active_version FROM functions ORDER BY name")?;
            let rows = stmt.query_map([], |row| {
                Ok(FunctionInfo {
                    name: row.get(0)?,
                    created_at: row.get(1)?,
                    active_version: row.get(2)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn delete_function(&self, name: &str) -> Result<()> {
        let owned = name.to_string();
        self.run(move |conn| {
            let deleted = conn.execute("DELETE FROM functions WHERE name = ?1", [&owned])?;
            if deleted == 0 {
                return Err(StoreError::NotFound(format!("function {owned:?}")));
            }
            Ok(())
        })
        .await?;
        self.changed(name);
        Ok(())
    }

    async fn create_deployment(
        &self,
        name: &str,
        deployment: NewDeployment,
        activate: bool,
    ) -> Result<DeploymentInfo> {
        deployment.validate()?;
        let owned = name.to_string();
        let key = self.key.clone();
        let info = self
            .run(move |conn| {
                let version = insert_deployment(conn, &key, &owned, &deployment, activate)?;
                Ok(load_deployment(conn, &owned, version)?.info)
            })
            .await?;
        if activate {
            self.changed(name);
        }
        Ok(info)
    }

    fn deployment_hash(&self, deployment: &NewDeployment) -> String {
        deployment.content_hash(|name, value| self.key.digest(name, value))
    }

    async fn deployments(&self, name: &str) -> Result<Vec<DeploymentInfo>> {
        let name = name.to_string();
        self.run(move |conn| {
            function_id(conn, &name)?;
            let sql = format!("SELECT {DEPLOYMENT_COLUMNS} FROM deployments d JOIN functions f ON f.id = d.function_id WHERE f.name = ?1 ORDER BY d.version DESC");
            let mut stmt = conn.prepare(&sql)?;
            let rows = stmt.query_map([&name], read_deployment)?.collect::<rusqlite::Result<Vec<_>>>()?;
            rows.into_iter().map(|row| Ok(decode_deployment(row)?.info)).collect()
        })
        .await
    }

    async fn activate(&self, name: &str, version: u32) -> Result<DeploymentInfo> {
        let owned = name.to_string();
        let info = self
            .run(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                load_deployment(&tx, &owned, version)?;
                tx.execute(
                    "UPDATE functions SET active_version = ?1 WHERE name = ?2",
                    params![version, owned],
                )?;
                let info = load_deployment(&tx, &owned, version)?.info;
                tx.commit()?;
                Ok(info)
            })
            .await?;
        self.changed(name);
        Ok(info)
    }

    async fn active_source(&self, name: &str) -> Result<Option<(DeploymentInfo, FunctionSource)>> {
        let name = name.to_string();
        let key = self.key.clone();
        self.run(move |conn| {
            let Some(version) = read_function(conn, &name)?.active_version else {
                return Ok(None);
            };
            let stored = load_deployment(conn, &name, version)?;
            // The only place secrets are opened: for running the function.
            let source = stored
                .info
                .source(stored.files, key.open_all(stored.secrets)?);
            Ok(Some((stored.info, source)))
        })
        .await
    }

    async fn record_invocations(&self, records: Vec<InvocationRecord>) -> Result<()> {
        self.run(move |conn| records::insert_records(conn, &records))
            .await
    }

    async fn invocations(&self, name: &str, limit: u32) -> Result<Vec<InvocationRecord>> {
        let name = name.to_string();
        self.run(move |conn| {
            let id = function_id(conn, &name)?;
            let mut stmt = conn.prepare(
                "SELECT id, version, status, error_code, duration_us, cpu_us, peak_heap_bytes, cold_start, created_at, error_message, method, path, http_status, websocket FROM invocations WHERE function_id = ?1 ORDER BY created_at DESC, rowid DESC LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![id, limit], |row| {
                Ok(InvocationRecord {
                    id: row.get(0)?,
                    function: name.clone(),
                    version: row.get(1)?,
                    status: row.get(2)?,
                    error_code: row.get(3)?,
                    error_message: row.get(9)?,
                    duration_us: row.get::<_, i64>(4)? as u64,
                    cpu_us: row.get::<_, i64>(5)? as u64,
                    peak_heap_bytes: row.get::<_, i64>(6)? as u64,
                    cold_start: row.get(7)?,
                    created_at: row.get(8)?,
                    request: row.get::<_, Option<String>>(10)?.map(|method| RequestLine {
                        method,
                        path: row.get::<_, Option<String>>(11).ok().flatten().unwrap_or_default(),
                        status: row.get::<_, Option<u16>>(12).ok().flatten(),
                    }),
                    websocket: row
                        .get::<_, Option<String>>(13)?
                        .and_then(|text| serde_json::from_str(&text).ok()),
                    logs: Vec::new(),
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn logs(&self, name: &str, after: i64, limit: u32) -> Result<Vec<LogRecord>> {
        let name = name.to_string();
        self.run(move |conn| {
            let id = function_id(conn, &name)?;
            let mut stmt = conn.prepare(
                "SELECT seq, invocation_id, level, message, created_at FROM logs WHERE function_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![id, after, limit], |row| {
                Ok(LogRecord {
                    seq: row.get(0)?,
                    function: name.clone(),
                    invocation_id: row.get(1)?,
                    level: row.get(2)?,
                    message: row.get(3)?,
                    created_at: row.get(4)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn prune(&self, retention: &Retention) -> Result<Pruned> {
        let retention = *retention;
        let cutoffs = self
            .run(move |conn| Ok(retention::cutoffs(conn, &retention, now_ms())?))
            .await?;
        let mut pruned = Pruned::default();
        loop {
            // One chunk per turn, so other writers get the database in between.
            let (invocations, logs) = self
                .run(move |conn| {
                    Ok((
                        retention::delete_invocations(conn, &cutoffs)?,
                        retention::delete_logs(conn, &cutoffs)?,
                    ))
                })
                .await?;
            pruned.invocations += invocations;
            pruned.logs += logs;
            if invocations == 0 && logs == 0 {
                return Ok(pruned);
            }
        }
    }

    async fn setting(&self, key: &str) -> Result<Option<String>> {
        let key = key.to_string();
        self.run(move |conn| {
            Ok(conn
                .query_row("SELECT value FROM settings WHERE key = ?1", [key], |row| {
                    row.get(0)
                })
                .optional()?)
        })
        .await
    }

    async fn set_setting(&self, key: &str, value: &str) -> Result<()> {
        let (key, value) = (key.to_string(), value.to_string());
        self.run(move |conn| {
            conn.execute(
                "INSERT INTO settings (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                params![key, value],
            )?;
            Ok(())
        })
        .await
    }
}
