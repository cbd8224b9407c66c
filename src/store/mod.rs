//! All SQL lives here: the store owns the SQLite connection and the block
//! files, and knows only opaque bytes and public columns, never keys.

pub mod blocks;
pub mod changes;
mod checkpointer;
pub mod files;
pub mod inline;
pub mod rows;
pub mod schema;
mod walindex;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags, TransactionBehavior};

use crate::ids::InodeId;

pub use checkpointer::{CheckpointStopper, Checkpointer};
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

/// `PRAGMA secure_delete` of every connection: deleted rows are zeroed
/// and freed pages overwritten (see `Tx::inline_shred` for the one
/// exception, the content ciphertext of a deleted inode).
pub(crate) const SECURE_DELETE: &str = "ON";

/// Name of the SQLite file inside a store directory.
pub const DB_FILE: &str = "circlefs.db";
/// Name of the block directory inside a store directory.
pub const BLOCKS_DIR: &str = "blocks";

/// Bytes of the database file a connection reads through a read-only
/// memory map (`PRAGMA mmap_size`); pages past it are read with `pread`.
/// A cold miss then faults in the device's readahead around the page
/// instead of one 4 KiB page, a warm read copies nothing, and the mapped
/// pages are page cache the kernel may reclaim (they count in the
/// daemon's RSS as `RssFile`, hence the bound).
pub const MMAP_BYTES: i64 = 64 << 20;

/// What a write through this connection changed, for a cache of decoded
/// rows kept above the store (see [`Store::on_touch`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Touch {
    /// The inode's row (its sealed record) was written, inserted or deleted.
    Record(InodeId),
    /// An entry naming the inode, or (for a directory) one of its
    /// subdirectory entries, came or went: its link count may differ.
    Links(InodeId),
    /// A circle or trusteeship changed, or a write was rolled back: what
    /// was read before may no longer hold anywhere.
    All,
}

/// The listener of [`Store::on_touch`].
pub type TouchFn = std::sync::Arc<dyn Fn(Touch) + Send + Sync>;

/// Tell the listener, if any, of `t`.
fn tell(touch: Option<&TouchFn>, t: Touch) {
    if let Some(f) = touch {
        f(t);
    }
}

/// The connection and the write batch it may hold open (group commit).
pub(crate) struct Conn {
    c: Connection,
    /// Told of every change a write makes (see [`Store::on_touch`]).
    touch: Option<TouchFn>,
    /// When the open batch began (None: no transaction open between calls).
    batch: Option<Instant>,
    /// Block files to remove once the batch deleting their rows commits.
    doomed: Vec<PathBuf>,
    /// Asked at the start of each write transaction whether the change
    /// feed is needed (see [`Store::record_changes`]); None: always.
    feed_probe: Option<blocks::PresenceProbe>,
    /// Whether the feed triggers exist on this connection now (None: not
    /// known, after a rolled-back batch that may have made or dropped them).
    feed_triggers: Option<bool>,
    /// Told after each commit once checkpoints are handed to a
    /// [`Checkpointer`] ([`Store::hand_off_checkpoints`]).
    ckpt: Option<std::sync::Arc<checkpointer::Due>>,
    /// Bytes of the database file this connection last had SQLite map
    /// (see [`Store::remap`]).
    mapped: u64,
}

impl std::ops::Deref for Conn {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        &self.c
    }
}

/// Adds one to its counter when dropped.
struct CountOnDrop<'a>(&'a AtomicU64);

impl Drop for CountOnDrop<'_> {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// A point in the database's history as one connection sees it (see
/// [`Store::version`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreVersion(i64, u64);

impl StoreVersion {
    /// The `PRAGMA data_version` part: equal values mean no other
    /// connection committed in between.
    pub fn data_version(&self) -> i64 {
        self.0
    }

    /// No other connection committed between `self` and `later`.
    pub fn no_foreign_commit_until(&self, later: &StoreVersion) -> bool {
        self.0 == later.0
    }

    /// `later` is `self` plus exactly one write through this connection
    /// and no other connection's commit: what held at `self`, changed by
    /// that one write, holds at `later`.
    pub fn followed_by_one_write(&self, later: &StoreVersion) -> bool {
        self.0 == later.0 && later.1 == self.1.wrapping_add(1)
    }

    /// The count of writes this connection had started.
    pub fn own_writes(&self) -> u64 {
        self.1
    }
}

/// An open store: one SQLite connection plus the block directory.
pub struct Store {
    conn: Mutex<Conn>,
    /// Signalled when a batch opens while the flusher is parked.
    batch_opened: Condvar,
    /// The flusher waits on `batch_opened` (idle for a while).
    flusher_parked: AtomicBool,
    /// Group commit on (a mount's connection): see [`Store::write`].
    group: AtomicBool,
    /// Write calls made through this connection (see [`Store::version`]).
    writes: AtomicU64,
    /// Write calls that have returned: fewer than `writes` while one runs.
    writes_done: AtomicU64,
    root: PathBuf,
    /// The change-feed origin of this connection, once its triggers exist.
    feed_origin: std::sync::OnceLock<i64>,
    /// Whether the feed triggers log, for the transaction running now.
    feed_on: std::sync::Arc<AtomicBool>,
    /// Idle open descriptions of `inodes.lock` (see [`blocks::InodeLock`]).
    lock_pool: std::sync::Arc<Mutex<Vec<std::fs::File>>>,
    /// The database's wal-index, for [`Store::version`] without a
    /// transaction (None: always the pragma).
    wal: Option<walindex::WalIndex>,
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
    conn.pragma_update(None, "secure_delete", SECURE_DELETE)?;
    // Savepoint (statement) journals of group-commit batches in memory, not temp files.
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    conn.pragma_update(None, "mmap_size", MMAP_BYTES)?;
    Ok(())
}

/// How long a group-commit batch gathers operations before the flusher
/// commits it ([`Store::flush_batch`]).
#[derive(Clone, Copy, Debug)]
pub struct BatchWindow {
    /// While another mount is present (or that cannot be told: the
    /// change feed is on): its writers wait for the batch's write lock.
    pub shared: Duration,
    /// While this connection's mount is alone: no other writer waits, and
    /// fewer, larger commits write each shared page (a directory's
    /// entries, the free list) to the WAL once for more operations.
    pub alone: Duration,
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
        let store = Store::connect(root, &db)?;
        store.write(|tx| {
            tx.meta_set("format_version", &crate::format::FORMAT_VERSION.to_string())?;
            Ok::<_, StoreError>(())
        })?;
        Ok(store)
    }

    /// Connect to the database file and bring its schema up to date.
    fn connect(root: &Path, db: &Path) -> Result<Store, StoreError> {
        let conn = Connection::open_with_flags(
            db,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        configure(&conn)?;
        let store = Store {
            conn: Mutex::new(Conn {
                c: conn,
                touch: None,
                batch: None,
                doomed: Vec::new(),
                feed_probe: None,
                feed_triggers: Some(false),
                ckpt: None,
                mapped: 0,
            }),
            batch_opened: Condvar::new(),
            flusher_parked: AtomicBool::new(false),
            group: AtomicBool::new(false),
            writes: AtomicU64::new(0),
            writes_done: AtomicU64::new(0),
            root: root.to_path_buf(),
            feed_origin: std::sync::OnceLock::new(),
            feed_on: std::sync::Arc::new(AtomicBool::new(true)),
            lock_pool: std::sync::Arc::new(Mutex::new(Vec::new())),
            wal: None,
        };
        store.migrate()?;
        // The migration's transaction made the shared-memory file.
        let mut store = store;
        store.wal = walindex::WalIndex::open(db);
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
        let store = Store::connect(root, &db)?;
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

    fn lock(&self) -> Result<MutexGuard<'_, Conn>, StoreError> {
        self.conn.lock().map_err(|_| StoreError::Poisoned)
    }

    fn migrate(&self) -> Result<(), StoreError> {
        let mut conn = self.lock()?;
        let tx = conn
            .c
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let have: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        let want = schema::MIGRATIONS.len() as i64;
        if have > want {
            return Err(StoreError::Format(format!(
                "store schema version {have} is newer than this build ({want})"
            )));
        }
        if have > 0 && have < schema::LAYOUT_2 {
            // Content in the first block layout (4064-byte blocks with
            // their headers inline) cannot be converted without the keys
            // of every circle: refused, untouched.
            let inline: i64 = if have >= 5 {
                tx.query_row("SELECT COUNT(*) FROM inline_slots", [], |r| r.get(0))?
            } else {
                0
            };
            if inline > 0 || !self.block_files()?.is_empty() {
                return Err(StoreError::Format(
                    "store holds file content in block layout 1 (circlefs before layout 2); \
                     this build reads layout 2 only: copy the files out with the build \
                     that wrote them"
                        .into(),
                ));
            }
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

    /// Run `f` in a read transaction (inside the open batch, if any: this
    /// connection sees its own uncommitted writes).
    pub fn read<T, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&Tx<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        let conn = self.lock()?;
        if conn.batch.is_some() {
            return f(&Tx::new(&conn.c, None));
        }
        in_tx(&conn.c, None, "BEGIN DEFERRED", f)
    }

    /// Run `f` in one write transaction; committed only if `f` returns Ok,
    /// rolled back otherwise: all or nothing.
    ///
    /// With group commit on ([`Store::set_group_commit`]), `f` runs in a
    /// savepoint of a batch transaction that stays open between calls and
    /// is committed by [`Store::commit_pending`] (the mount's flusher, a
    /// few milliseconds later, or any sync, close, block-file removal or
    /// truncation first): several operations share one commit. Each `f` is
    /// still all or nothing; a crash loses at most the uncommitted batch,
    /// which no fsync has covered.
    pub fn write<T, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&Tx<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        let mut conn = self.lock()?;
        self.writes.fetch_add(1, Ordering::SeqCst);
        // Counted done when this returns, before the connection is let go
        // (locals drop in reverse order).
        let _done = CountOnDrop(&self.writes_done);
        if !self.group.load(Ordering::Relaxed) {
            let c = &mut *conn;
            let gate = std::cell::Cell::new(None);
            let r = in_tx(&c.c, c.touch.as_ref(), "BEGIN IMMEDIATE", |tx| {
                gate.set(Some(self.gate_feed(
                    &c.c,
                    c.feed_probe.as_ref(),
                    c.feed_triggers,
                )?));
                f(tx)
            });
            if let Some(t) = gate.get() {
                // A failed transaction took back what the gate did (or
                // failed to: not known).
                c.feed_triggers = if r.is_ok() { t } else { None };
            }
            if let (Ok(_), Some(d)) = (&r, &c.ckpt) {
                d.after_commit();
            }
            return r;
        }
        if conn.batch.is_none() {
            exec(&conn.c, "BEGIN IMMEDIATE")?;
            match self.gate_feed(&conn.c, conn.feed_probe.as_ref(), conn.feed_triggers) {
                Ok(t) => conn.feed_triggers = t,
                Err(e) => {
                    if let Err(re) = exec(&conn.c, "ROLLBACK") {
                        log::error!("rollback failed: {re}");
                    }
                    return Err(e.into());
                }
            }
            conn.batch = Some(Instant::now());
            if self.flusher_parked.load(Ordering::Relaxed) {
                self.batch_opened.notify_all();
            }
        }
        exec(&conn.c, "SAVEPOINT op")?;
        match f(&Tx::new(&conn.c, conn.touch.as_ref())) {
            Ok(v) => {
                if let Err(e) = exec(&conn.c, "RELEASE op") {
                    tell(conn.touch.as_ref(), Touch::All);
                    return Err(e.into());
                }
                Ok(v)
            }
            Err(e) => {
                tell(conn.touch.as_ref(), Touch::All);
                if conn.c.is_autocommit() {
                    // SQLite rolled the whole batch back (I/O error, full disk).
                    log::error!("a failed operation rolled back the uncommitted batch");
                    conn.batch = None;
                    conn.feed_triggers = None;
                } else if let Err(re) =
                    exec(&conn.c, "ROLLBACK TO op").and_then(|_| exec(&conn.c, "RELEASE op"))
                {
                    log::error!("rollback to savepoint failed: {re}");
                }
                Err(e)
            }
        }
    }

    /// With the write lock just taken: whether the transaction's changes
    /// go to the feed (always, unless a probe finds no other mount).
    /// The feed triggers are made to exist exactly while it goes to the
    /// feed; returns whether they exist.
    fn gate_feed(
        &self,
        c: &Connection,
        probe: Option<&blocks::PresenceProbe>,
        triggers: Option<bool>,
    ) -> Result<Option<bool>, StoreError> {
        let Some(p) = probe else {
            return Ok(triggers);
        };
        let on = p.others_present();
        self.feed_on.store(on, Ordering::Relaxed);
        if triggers != Some(on)
            && let Some(origin) = self.feed_origin.get()
        {
            changes::set_triggers(c, *origin, on)?;
            return Ok(Some(on));
        }
        Ok(triggers)
    }

    /// Tell `f` of every change each later write through this connection
    /// makes, inside the write (the connection is held, so no read of it
    /// runs meanwhile): records and link counts per inode, circles and
    /// trusteeships as [`Touch::All`], and [`Touch::All`] when a write or a
    /// batch is rolled back. Content, keys, xattrs and the change feed are
    /// not reported. Every function of [`Tx`] that writes inodes, entries,
    /// circles or trustees calls it. Listeners add up (each workspace on
    /// this connection is told), in the order they were given.
    pub fn on_touch(&self, f: TouchFn) -> Result<(), StoreError> {
        let mut conn = self.lock()?;
        conn.touch = Some(match conn.touch.take() {
            Some(prev) => std::sync::Arc::new(move |t| {
                prev(t);
                f(t);
            }),
            None => f,
        });
        Ok(())
    }

    /// The database as this connection sees it: equal versions mean no
    /// other connection committed (`PRAGMA data_version`) and this one
    /// wrote nothing in between, so what was read then still holds.
    ///
    /// Answered from the wal-index header when it is the one last read
    /// before the pragma (see [`walindex`]): no transaction, and no wait
    /// for the connection while another thread holds it.
    pub fn version(&self) -> Result<StoreVersion, StoreError> {
        let before = self.wal.as_ref().and_then(|w| w.header().map(|h| (w, h)));
        // Not while a write of this connection runs: what it changes (and
        // tells the caches) is not all done, so the count it has already
        // added does not describe what a reader would see yet.
        let done = self.writes_done.load(Ordering::SeqCst);
        let started = self.writes.load(Ordering::SeqCst);
        if started == done
            && let Some((w, h)) = &before
            && let Some(dv) = w.unchanged(h)
        {
            return Ok(StoreVersion(dv, started));
        }
        let conn = self.lock()?;
        let v = self.version_of(&conn.c)?;
        if let Some((w, h)) = before {
            w.remember(h, v.0);
        }
        Ok(v)
    }

    /// Writes started through this connection so far: when equal to
    /// [`StoreVersion::own_writes`] of a version taken inside a transaction,
    /// this connection wrote nothing since (no system call, unlike
    /// [`Store::version`], which also sees other connections' commits).
    pub fn own_writes(&self) -> u64 {
        self.writes.load(Ordering::SeqCst)
    }

    /// The version inside transaction `tx`: what `tx` has read holds at
    /// that version (a read transaction reads one snapshot; a write
    /// transaction's reads hold once its write returns, as no other
    /// connection commits while it holds the write lock).
    pub fn version_in(&self, tx: &Tx<'_>) -> Result<StoreVersion, StoreError> {
        self.version_of(tx.c)
    }

    fn version_of(&self, c: &Connection) -> Result<StoreVersion, StoreError> {
        let dv = Tx::new(c, None).data_version()?;
        Ok(StoreVersion(dv, self.writes.load(Ordering::SeqCst)))
    }

    /// Turn group commit on or off (off commits what is pending).
    pub fn set_group_commit(&self, on: bool) -> Result<(), StoreError> {
        if !on {
            self.commit_pending()?;
        }
        self.group.store(on, Ordering::Relaxed);
        Ok(())
    }

    /// Commit the open batch, if any.
    pub fn commit_pending(&self) -> Result<(), StoreError> {
        let mut conn = self.lock()?;
        Self::commit_locked(&mut conn)
    }

    fn commit_locked(conn: &mut Conn) -> Result<(), StoreError> {
        if conn.batch.take().is_none() {
            return Ok(());
        }
        if let Err(e) = exec(&conn.c, "COMMIT") {
            tell(conn.touch.as_ref(), Touch::All);
            if !conn.c.is_autocommit()
                && let Err(re) = exec(&conn.c, "ROLLBACK")
            {
                log::error!("rollback failed: {re}");
            }
            // The rows of the doomed files are back: keep the files.
            conn.doomed.clear();
            conn.feed_triggers = None;
            return Err(e);
        }
        if let Some(d) = &conn.ckpt {
            d.after_commit();
        }
        for p in conn.doomed.drain(..) {
            blocks::remove_file(&p)?;
        }
        Ok(())
    }

    /// Remove `path` once the rows that referenced it are committed: now
    /// when no batch is open, else after the batch commits.
    pub(crate) fn remove_after_commit(&self, path: PathBuf) -> Result<(), StoreError> {
        let mut conn = self.lock()?;
        if conn.batch.is_some() {
            conn.doomed.push(path);
            return Ok(());
        }
        drop(conn);
        blocks::remove_file(&path)
    }

    /// One round of the flusher: commit the batch once it is as old as
    /// `window` says; when none has opened for `idle`, park until one
    /// does. Returns whether it committed.
    pub fn flush_batch(&self, idle: Duration, window: BatchWindow) -> Result<bool, StoreError> {
        let started = Instant::now();
        loop {
            let mut conn = self.lock()?;
            // As the batch's first write found it (see `gate_feed`).
            let gather = if self.feed_on.load(Ordering::Relaxed) {
                window.shared
            } else {
                window.alone
            };
            match conn.batch {
                Some(at) if at.elapsed() >= gather => {
                    Self::commit_locked(&mut conn)?;
                    return Ok(true);
                }
                Some(at) => {
                    let rest = gather.saturating_sub(at.elapsed());
                    drop(conn);
                    std::thread::sleep(rest);
                }
                None if started.elapsed() < idle => {
                    drop(conn);
                    std::thread::sleep(gather);
                }
                None => {
                    self.flusher_parked.store(true, Ordering::Relaxed);
                    let waited = self
                        .batch_opened
                        .wait_timeout_while(conn, idle, |c| c.batch.is_none())
                        .map_err(|_| StoreError::Poisoned);
                    self.flusher_parked.store(false, Ordering::Relaxed);
                    let (conn, _) = waited?;
                    if conn.batch.is_none() {
                        return Ok(false);
                    }
                }
            }
        }
    }

    /// Hand this connection's WAL checkpoints to the returned
    /// [`Checkpointer`], to run on a thread of the caller's (see
    /// [`checkpointer`]): a commit then checkpoints itself only if that
    /// falls [`checkpointer::FALLBACK`] pages behind.
    pub fn hand_off_checkpoints(&self) -> Result<Checkpointer, StoreError> {
        let (ckpt, due) = Checkpointer::open(&self.root.join(DB_FILE))?;
        let mut conn = self.lock()?;
        conn.pragma_update(None, "wal_autocheckpoint", checkpointer::FALLBACK)?;
        conn.ckpt = Some(due);
        Ok(ckpt)
    }

    /// Run the checkpoints `ckpt` is asked for, until it is stopped (see
    /// [`checkpointer`]). Each is two `PASSIVE` checkpoints through its
    /// connection: the first while commits go on, which copies the log's
    /// pages and syncs the database file with nobody waiting; the second
    /// with this connection held and its batch committed, for what was
    /// committed meanwhile (a few pages, a small sync). Only a
    /// transaction that begins with the whole log copied starts the log
    /// again from its beginning, and with group commit the next batch
    /// begins while the first checkpoint runs.
    pub fn run_checkpoints(&self, ckpt: &Checkpointer) {
        while ckpt.wait_due() {
            if let Err(e) = self.checkpoint_twice(ckpt) {
                log::warn!("WAL checkpoint failed: {e}");
            }
        }
    }

    fn checkpoint_twice(&self, ckpt: &Checkpointer) -> Result<(), StoreError> {
        ckpt.checkpoint()?;
        let mut conn = self.lock()?;
        Self::commit_locked(&mut conn)?;
        ckpt.checkpoint()?;
        self.remap(&mut conn)
    }

    /// Have SQLite map as much of the grown database file as
    /// [`MMAP_BYTES`] allows. A connection maps the file when it first
    /// reads through the map and maps it again only when it grows the file
    /// itself (its own checkpoints) or sees another connection's commit:
    /// with the checkpoints on the checkpointer's connection, this one
    /// would read every page past its first map with `pread`. Setting
    /// `mmap_size` to a new value maps the file again at its size (with
    /// no transaction open, as here).
    fn remap(&self, conn: &mut Conn) -> Result<(), StoreError> {
        let len = std::fs::metadata(self.root.join(DB_FILE))?.len();
        let bound = MMAP_BYTES as u64;
        if len <= conn.mapped || conn.mapped >= bound {
            return Ok(());
        }
        conn.pragma_update(None, "mmap_size", MMAP_BYTES - 4096)?;
        conn.pragma_update(None, "mmap_size", MMAP_BYTES)?;
        conn.mapped = len.min(bound);
        Ok(())
    }

    /// Relax durability for a mount's connection: commits are ordered but
    /// synced only by `sync` (called on fsync, fsyncdir, control commands and
    /// unmount), as with `PRAGMA synchronous=NORMAL` in WAL mode.
    pub fn set_relaxed_sync(&self) -> Result<(), StoreError> {
        let conn = self.lock()?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        Ok(())
    }

    /// Make every transaction durable: commit the open batch, fsync the WAL file.
    pub fn sync(&self) -> Result<(), StoreError> {
        let mut conn = self.lock()?;
        Self::commit_locked(&mut conn)?;
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
        let mut conn = self.lock()?;
        Self::commit_locked(&mut conn)?;
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

/// Run one cached statement without parameters (transaction control).
fn exec(conn: &Connection, sql: &str) -> Result<(), StoreError> {
    conn.prepare_cached(sql)?.execute([])?;
    Ok(())
}

/// Run `f` between `begin` and COMMIT (ROLLBACK when `f` or the commit
/// fails). The three statements are cached: no SQL is parsed per call.
fn in_tx<T, E: From<StoreError>>(
    conn: &Connection,
    touch: Option<&TouchFn>,
    begin: &str,
    f: impl FnOnce(&Tx<'_>) -> Result<T, E>,
) -> Result<T, E> {
    let run = |sql: &str| exec(conn, sql);
    let rolled_back = || tell(touch, Touch::All);
    run(begin)?;
    let out = match f(&Tx::new(conn, touch)) {
        Ok(v) => v,
        Err(e) => {
            rolled_back();
            if let Err(re) = run("ROLLBACK") {
                log::error!("rollback failed: {re}");
            }
            return Err(e);
        }
    };
    if let Err(ce) = run("COMMIT") {
        rolled_back();
        if !conn.is_autocommit()
            && let Err(re) = run("ROLLBACK")
        {
            log::error!("rollback failed: {re}");
        }
        return Err(ce.into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn meta(s: &Store, k: &str) -> Option<String> {
        s.read(|tx| tx.meta_get(k)).unwrap()
    }

    /// A new store in a temporary directory and a second connection to it
    /// (the directory lives as long as the returned guard).
    pub(crate) fn two_connections() -> (tempfile::TempDir, PathBuf, Store, Store) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("s");
        let a = Store::create(&root).unwrap();
        let b = Store::open(&root).unwrap();
        (dir, root, a, b)
    }

    /// This process's maps of the database file of the store at `root`:
    /// (bytes, permissions).
    fn db_maps(root: &Path) -> Vec<(u64, String)> {
        let db = root.join(DB_FILE).canonicalize().unwrap();
        std::fs::read_to_string("/proc/self/maps")
            .unwrap()
            .lines()
            .filter(|l| l.ends_with(db.to_str().unwrap()))
            .map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                let (lo, hi) = f[0].split_once('-').unwrap();
                let len =
                    u64::from_str_radix(hi, 16).unwrap() - u64::from_str_radix(lo, 16).unwrap();
                (len, f[1].to_string())
            })
            .collect()
    }

    /// The database pages a connection reads come from a read-only map of
    /// the database file, at most [`MMAP_BYTES`] of it.
    #[test]
    fn reads_come_from_a_bounded_map_of_the_database() {
        let (_dir, root, a, _b) = two_connections();
        let maps = || db_maps(&root);
        // Grow the file past the bound, checkpoint it into the database
        // file, and read it back.
        let big = "x".repeat(3000);
        a.write(|tx| {
            for i in 0..24_000 {
                tx.meta_set(&format!("k{i}"), &big)?;
            }
            Ok::<_, StoreError>(())
        })
        .unwrap();
        a.checkpoint().unwrap();
        let len = std::fs::metadata(root.join(DB_FILE)).unwrap().len();
        assert!(len > MMAP_BYTES as u64, "{len}");
        assert_eq!(meta(&a, "k23999").as_deref(), Some(big.as_str()));
        let m = maps();
        assert!(!m.is_empty(), "the database file is not mapped");
        for (len, perms) in m {
            assert!(len <= MMAP_BYTES as u64, "{len}");
            assert!(!perms.contains('w'), "{perms}");
        }
    }

    #[test]
    fn group_commit_keeps_each_operation_atomic_and_hides_the_batch_until_commit() {
        let (_dir, root, a, b) = two_connections();
        a.set_group_commit(true).unwrap();
        a.write(|tx| tx.meta_set("one", "1")).unwrap();
        // A failing operation rolls back itself only.
        let failed: Result<(), StoreError> = a.write(|tx| {
            tx.meta_set("two", "2")?;
            Err(StoreError::Corrupt("injected".into()))
        });
        assert!(failed.is_err());
        assert_eq!(meta(&a, "one").as_deref(), Some("1"));
        assert_eq!(meta(&a, "two"), None);
        // Another connection sees nothing of the open batch.
        assert_eq!(meta(&b, "one"), None);
        // A file doomed in the batch stays until the batch commits.
        let f = root.join("doomed");
        std::fs::write(&f, b"x").unwrap();
        a.remove_after_commit(f.clone()).unwrap();
        assert!(f.exists());
        a.commit_pending().unwrap();
        assert!(!f.exists());
        assert_eq!(meta(&b, "one").as_deref(), Some("1"));
        assert_eq!(meta(&b, "two"), None);
        // The flusher commits a batch once it is old enough.
        a.write(|tx| tx.meta_set("three", "3")).unwrap();
        assert_eq!(meta(&b, "three"), None);
        let five = BatchWindow {
            shared: Duration::from_millis(5),
            alone: Duration::from_millis(5),
        };
        let committed = a.flush_batch(Duration::from_millis(50), five).unwrap();
        assert!(committed);
        assert_eq!(meta(&b, "three").as_deref(), Some("3"));
        // Idle: the flusher parks and returns without committing.
        assert!(!a.flush_batch(Duration::from_millis(20), five).unwrap());
        // Off: every write commits at once again.
        a.set_group_commit(false).unwrap();
        a.write(|tx| tx.meta_set("four", "4")).unwrap();
        assert_eq!(meta(&b, "four").as_deref(), Some("4"));
    }

    /// The flusher gives a batch opened while the mount was alone (the
    /// change feed off) the `alone` window, and one opened while another
    /// mount was present the `shared` one.
    #[test]
    fn a_batch_gathers_for_the_window_of_the_presence_it_opened_with() {
        let (_dir, _root, a, b) = two_connections();
        let a = std::sync::Arc::new(a);
        a.set_group_commit(true).unwrap();
        let window = BatchWindow {
            shared: Duration::from_millis(5),
            alone: Duration::from_millis(300),
        };
        // Alone: not committed before 300 ms.
        a.feed_on.store(false, Ordering::Relaxed);
        a.write(|tx| tx.meta_set("alone", "1")).unwrap();
        let t0 = Instant::now();
        assert!(a.flush_batch(Duration::from_millis(50), window).unwrap());
        assert!(
            t0.elapsed() >= Duration::from_millis(250),
            "{:?}",
            t0.elapsed()
        );
        assert_eq!(meta(&b, "alone").as_deref(), Some("1"));
        // Shared: the short window (a flusher on the long one would still
        // be waiting when this gives up).
        a.feed_on.store(true, Ordering::Relaxed);
        let window = BatchWindow {
            shared: Duration::from_millis(5),
            alone: Duration::from_secs(60),
        };
        a.write(|tx| tx.meta_set("shared", "1")).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let flusher = a.clone();
        std::thread::spawn(move || {
            let _ = tx.send(
                flusher
                    .flush_batch(Duration::from_millis(50), window)
                    .unwrap(),
            );
        });
        assert_eq!(rx.recv_timeout(Duration::from_secs(20)), Ok(true));
        assert_eq!(meta(&b, "shared").as_deref(), Some("1"));
    }

    #[test]
    fn version_moves_with_any_commit_and_only_then() {
        let (_dir, _root, a, b) = two_connections();
        let v0 = a.version().unwrap();
        let _ = meta(&a, "x");
        assert_eq!(a.version().unwrap(), v0, "a read moves nothing");
        a.write(|tx| tx.meta_set("x", "1")).unwrap();
        let v1 = a.version().unwrap();
        assert_ne!(v1, v0, "own write");
        b.write(|tx| tx.meta_set("x", "2")).unwrap();
        let v2 = a.version().unwrap();
        assert_ne!(v2, v1, "another connection's commit");
        assert_eq!(a.version().unwrap(), v2);
    }

    /// `a.version()` asked on another thread while `hold` runs with `a` and
    /// calls its `pause` (which returns once the answer came or `wait`
    /// passed): the answer within `wait`, if any, and the answer at last.
    fn version_during(
        a: &Store,
        wait: Duration,
        hold: impl FnOnce(&Store, &dyn Fn()) + Send,
    ) -> (Option<StoreVersion>, StoreVersion) {
        let (held_tx, held_rx) = std::sync::mpsc::channel();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        std::thread::scope(|s| {
            s.spawn(move || {
                hold(a, &|| {
                    held_tx.send(()).unwrap();
                    go_rx.recv().unwrap();
                })
            });
            held_rx.recv().unwrap();
            let (tx, rx) = std::sync::mpsc::channel();
            s.spawn(move || tx.send(a.version().unwrap()).unwrap());
            let early = rx.recv_timeout(wait).ok();
            go_tx.send(()).unwrap();
            let last = match &early {
                Some(v) => *v,
                None => rx.recv_timeout(Duration::from_secs(5)).unwrap(),
            };
            (early, last)
        })
    }

    #[test]
    fn version_is_told_by_the_wal_index_while_the_connection_is_busy() {
        let (_dir, _root, a, b) = two_connections();
        let v0 = a.version().unwrap();
        // The connection is held by a read: the answer comes from the header.
        let (early, _) = version_during(&a, Duration::from_secs(5), |a, pause| {
            a.read(|_tx| {
                pause();
                Ok::<_, StoreError>(())
            })
            .unwrap()
        });
        assert_eq!(early, Some(v0));
        // Another connection's commit changes the header: read again.
        b.write(|tx| tx.meta_set("x", "1")).unwrap();
        let v1 = a.version().unwrap();
        assert!(!v0.no_foreign_commit_until(&v1));
        assert_eq!(a.version().unwrap(), v1);
    }

    #[test]
    fn version_waits_for_a_write_of_its_own_connection() {
        let (_dir, _root, a, _b) = two_connections();
        let _ = a.version().unwrap();
        // The write has counted itself but is not done: no answer from the
        // header until it is.
        let (early, last) = version_during(&a, Duration::from_millis(300), |a, pause| {
            a.write(|tx| {
                tx.meta_set("x", "1")?;
                pause();
                Ok::<_, StoreError>(())
            })
            .unwrap()
        });
        assert!(early.is_none(), "answered while the write ran");
        assert_eq!(last, a.version().unwrap());
    }

    #[test]
    fn one_own_write_and_foreign_commits_are_told_apart() {
        let (_dir, _root, a, b) = two_connections();
        let v0 = a.version().unwrap();
        // The version inside a write is the one after it.
        let v1 = a
            .write(|tx| {
                tx.meta_set("x", "1")?;
                a.version_in(tx)
            })
            .unwrap();
        assert_eq!(a.version().unwrap(), v1);
        assert!(v0.followed_by_one_write(&v1));
        assert!(v0.no_foreign_commit_until(&v1));
        a.write(|tx| tx.meta_set("x", "2")).unwrap();
        let v2 = a.version().unwrap();
        assert!(!v0.followed_by_one_write(&v2), "two writes");
        assert!(v1.followed_by_one_write(&v2));
        b.write(|tx| tx.meta_set("y", "1")).unwrap();
        let v3 = a
            .write(|tx| {
                tx.meta_set("x", "3")?;
                a.version_in(tx)
            })
            .unwrap();
        assert!(
            !v2.followed_by_one_write(&v3),
            "another connection committed"
        );
        assert!(!v2.no_foreign_commit_until(&v3));
        // A read transaction's version is that of what it read.
        let v4 = a.read(|tx| a.version_in(tx)).unwrap();
        assert_eq!(v4, v3);
    }

    /// Log pages of the store at `root` not yet copied into its database,
    /// and the bytes of its log file.
    fn wal_state(root: &Path) -> (u32, u64) {
        let shm = std::fs::File::open(root.join(format!("{DB_FILE}-shm"))).unwrap();
        let pending = checkpointer::pending_frames(&shm).unwrap();
        let len = std::fs::metadata(root.join(format!("{DB_FILE}-wal")))
            .unwrap()
            .len();
        (pending, len)
    }

    /// Write about `pages` database pages, 100 per transaction, waiting
    /// after each for the checkpointer (if `wait`) to bring the log
    /// below the due mark, else a millisecond; the largest log file seen.
    fn fill(s: &Store, root: &Path, pages: usize, wait: bool, tag: char) -> u64 {
        // New content each call: SQLite writes no page a row update leaves as it was.
        let page = tag.to_string().repeat(3000);
        let mut largest = 0;
        for t in 0..pages / 100 {
            s.write(|tx| {
                for k in 0..100 {
                    tx.meta_set(&format!("fill-{t}-{k}"), &page)?;
                }
                Ok::<_, StoreError>(())
            })
            .unwrap();
            s.commit_pending().unwrap();
            if !wait {
                // As requests come: a mount writes far less than a
                // loop of inserts could.
                std::thread::sleep(Duration::from_millis(1));
            }
            let t0 = Instant::now();
            while wait && wal_state(root).0 >= checkpointer::DUE {
                assert!(t0.elapsed() < Duration::from_secs(20), "no checkpoint");
                std::thread::sleep(Duration::from_millis(2));
            }
            largest = largest.max(wal_state(root).1);
        }
        largest
    }

    /// With checkpoints handed to a checkpointer, its thread copies the
    /// log into the database and the log starts again from its
    /// beginning (its file stays near the due mark); without the thread,
    /// the committing connection checkpoints only at the fallback mark.
    #[test]
    fn a_checkpointer_keeps_the_log_short_and_the_fallback_bounds_it() {
        const WAL_FRAME: u64 = 4096 + 24;
        for group in [false, true] {
            let (_dir, root, a, _b) = two_connections();
            let a = std::sync::Arc::new(a);
            a.set_group_commit(group).unwrap();
            let ckpt = a.hand_off_checkpoints().unwrap();
            let stopper = ckpt.stopper();
            let runner = a.clone();
            let t = std::thread::spawn(move || runner.run_checkpoints(&ckpt));
            let largest = fill(&a, &root, 4 * checkpointer::DUE as usize, true, 'a');
            assert!(
                largest < 2 * u64::from(checkpointer::DUE) * WAL_FRAME,
                "log file {largest} bytes (group {group})"
            );
            // Written on, as a busy mount commits: a checkpoint never
            // catches up with the log unless it holds the commits off at
            // its end, and then the log would grow to the fallback mark.
            let largest = fill(&a, &root, 2 * checkpointer::FALLBACK as usize, false, 'b');
            assert!(
                largest < u64::from(checkpointer::FALLBACK / 2) * WAL_FRAME,
                "log file {largest} bytes, written on (group {group})"
            );
            // The connection maps the database file as the checkpointer
            // grows it.
            assert_eq!(meta(&a, "fill-0-0").map(|v| v.len()), Some(3000));
            let len = std::fs::metadata(root.join(DB_FILE)).unwrap().len();
            let map = db_maps(&root)
                .into_iter()
                .map(|(l, _)| l)
                .max()
                .unwrap_or(0);
            assert!(
                len > 8 << 20 && map > len / 2,
                "{map} of {len} bytes mapped (group {group})"
            );
            stopper.stop();
            t.join().unwrap();
            // Stopped: the log grows past the due mark, up to the fallback.
            let largest = fill(&a, &root, 3 * checkpointer::DUE as usize, false, 'c');
            assert!(
                largest > 2 * u64::from(checkpointer::DUE) * WAL_FRAME,
                "log file {largest} bytes without the thread (group {group})"
            );
            let largest = fill(&a, &root, checkpointer::FALLBACK as usize, false, 'd');
            assert!(
                largest < u64::from(checkpointer::FALLBACK + checkpointer::DUE) * WAL_FRAME,
                "log file {largest} bytes: the fallback (group {group})"
            );
        }
    }
}
