//! All SQL lives here: the store owns the SQLite connection and the block
//! files, and knows only opaque bytes and public columns, never keys.

pub mod blocks;
pub mod changes;
pub mod files;
pub mod rows;
pub mod schema;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, TransactionBehavior};

pub use rows::Tx;

/// Errors of the store layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite failed.
    #[error("sqlite: {0}")]
    Sql(#[from] rusqlite::Error),
    /// Filesystem I/O failed.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The store is not a circlefs store or has an unknown format.
    #[error("{0}")]
    Format(String),
    /// A stored value has the wrong type or range (tampered row).
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// The connection lock was poisoned by a panic elsewhere.
    #[error("store lock poisoned")]
    Poisoned,
}

/// Name of the SQLite file inside a store directory.
pub const DB_FILE: &str = "circlefs.db";
/// Name of the block directory inside a store directory.
pub const BLOCKS_DIR: &str = "blocks";

/// An open store: one SQLite connection plus the block directory.
pub struct Store {
    conn: Mutex<Connection>,
    root: PathBuf,
    /// The change-feed origin of this connection, once its triggers exist.
    feed_origin: std::sync::OnceLock<i64>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Store({})", self.root.display())
    }
}

fn configure(conn: &Connection) -> Result<(), StoreError> {
    // Every query of the store is a cached statement: no SQL parsed per call.
    conn.set_prepared_statement_cache_capacity(256);
    conn.busy_timeout(Duration::from_secs(30))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.pragma_update(None, "secure_delete", "ON")?;
    Ok(())
}

impl Store {
    /// Create a new store directory (0700) with its database (0600) and block dir.
    pub fn create(root: &Path) -> Result<Store, StoreError> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        if root.exists() {
            let empty = std::fs::read_dir(root)?.next().is_none();
            if !empty {
                return Err(StoreError::Format(format!(
                    "{} exists and is not empty",
                    root.display()
                )));
            }
        } else {
            std::fs::DirBuilder::new().mode(0o700).create(root)?;
        }
        set_mode(root, 0o700)?;
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(root.join(BLOCKS_DIR))?;
        let db = root.join(DB_FILE);
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&db)?;
        let conn = Connection::open_with_flags(
            &db,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        configure(&conn)?;
        let store = Store {
            conn: Mutex::new(conn),
            root: root.to_path_buf(),
            feed_origin: std::sync::OnceLock::new(),
        };
        store.migrate()?;
        store.write(|tx| {
            tx.meta_set("format_version", &crate::format::FORMAT_VERSION.to_string())?;
            Ok::<_, StoreError>(())
        })?;
        Ok(store)
    }

    /// Open an existing store, migrating the schema and refusing unknown formats.
    pub fn open(root: &Path) -> Result<Store, StoreError> {
        let db = root.join(DB_FILE);
        if !db.is_file() {
            return Err(StoreError::Format(format!(
                "{} is not a circlefs store (no {DB_FILE})",
                root.display()
            )));
        }
        let conn = Connection::open_with_flags(
            &db,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        configure(&conn)?;
        let store = Store {
            conn: Mutex::new(conn),
            root: root.to_path_buf(),
            feed_origin: std::sync::OnceLock::new(),
        };
        store.migrate()?;
        let v = store.read(|tx| tx.meta_get("format_version"))?;
        match v.as_deref() {
            Some(s) if s == crate::format::FORMAT_VERSION.to_string() => Ok(store),
            Some(s) => Err(StoreError::Format(format!(
                "store format version {s} is not supported (this build reads {})",
                crate::format::FORMAT_VERSION
            ))),
            None => Err(StoreError::Format("store has no format version".into())),
        }
    }

    /// Store root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn lock(&self) -> Result<MutexGuard<'_, Connection>, StoreError> {
        self.conn.lock().map_err(|_| StoreError::Poisoned)
    }

    fn migrate(&self) -> Result<(), StoreError> {
        let mut conn = self.lock()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let have: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        let want = schema::MIGRATIONS.len() as i64;
        if have > want {
            return Err(StoreError::Format(format!(
                "store schema version {have} is newer than this build ({want})"
            )));
        }
        for (i, m) in schema::MIGRATIONS
            .iter()
            .enumerate()
            .skip(have.max(0) as usize)
        {
            tx.execute_batch(m)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Run `f` in a read transaction.
    pub fn read<T, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&Tx<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        let conn = self.lock()?;
        in_tx(&conn, "BEGIN DEFERRED", f)
    }

    /// Run `f` in one write transaction (BEGIN IMMEDIATE); committed only if
    /// `f` returns Ok, rolled back otherwise: all or nothing.
    pub fn write<T, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&Tx<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        let conn = self.lock()?;
        in_tx(&conn, "BEGIN IMMEDIATE", f)
    }

    /// Relax durability for a mount's connection: commits are ordered but
    /// synced only by `sync` (called on fsync, fsyncdir, control commands and
    /// unmount), as with `PRAGMA synchronous=NORMAL` in WAL mode.
    pub fn set_relaxed_sync(&self) -> Result<(), StoreError> {
        let conn = self.lock()?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        Ok(())
    }

    /// Make every committed transaction durable: fsync the WAL file.
    pub fn sync(&self) -> Result<(), StoreError> {
        let _conn = self.lock()?;
        let wal = self.root.join(format!("{DB_FILE}-wal"));
        match std::fs::File::open(&wal) {
            Ok(f) => f.sync_data()?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }

    /// Test hook: run SQL on this store's own connection (e.g. TEMP
    /// triggers that inject failures).
    #[cfg(feature = "test-hooks")]
    pub fn test_exec(&self, sql: &str) -> Result<(), StoreError> {
        self.lock()?.execute_batch(sql)?;
        Ok(())
    }

    /// Checkpoint the WAL into the database and truncate it (after deletions,
    /// so removed rows do not linger in the -wal file).
    pub fn checkpoint(&self) -> Result<(), StoreError> {
        let conn = self.lock()?;
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok(())
    }
}

/// chmod helper.
pub fn set_mode(p: &Path, mode: u32) -> Result<(), StoreError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// Run `f` between `begin` and COMMIT (ROLLBACK when `f` or the commit
/// fails). The three statements are cached: no SQL is parsed per call.
fn in_tx<T, E: From<StoreError>>(
    conn: &Connection,
    begin: &str,
    f: impl FnOnce(&Tx<'_>) -> Result<T, E>,
) -> Result<T, E> {
    let run = |sql: &str| -> Result<(), StoreError> {
        conn.prepare_cached(sql)?.execute([])?;
        Ok(())
    };
    run(begin)?;
    let out = match f(&Tx::new(conn)) {
        Ok(v) => v,
        Err(e) => {
            if let Err(re) = run("ROLLBACK") {
                log::error!("rollback failed: {re}");
            }
            return Err(e);
        }
    };
    if let Err(ce) = run("COMMIT") {
        if !conn.is_autocommit()
            && let Err(re) = run("ROLLBACK")
        {
            log::error!("rollback failed: {re}");
        }
        return Err(ce.into());
    }
    Ok(out)
}
