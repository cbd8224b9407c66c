//! WAL checkpoints on a thread of their own: a commit that fills the log no longer copies it into the database while every request waits for the connection.
//!
//! SQLite checkpoints a WAL database in the commit that takes the log
//! past `wal_autocheckpoint` pages (1,000 by default): it copies the
//! log's pages into the database file and syncs both, in the committing
//! connection, under the store's lock. A mount's connection instead
//! raises its own threshold to [`FALLBACK`] pages (a bound should this
//! thread fall behind) and tells a [`Checkpointer`], after each commit
//! that leaves [`DUE`] pages or more not yet copied, to run a `PASSIVE`
//! checkpoint through a second connection of its own. A passive
//! checkpoint waits for no reader or writer: commits go on appending to
//! the log meanwhile. Only a transaction that begins with the whole log
//! copied starts the log again from its beginning, so a short second
//! checkpoint follows with the mount's connection held (see
//! [`super::Store::run_checkpoints`]), which also has SQLite map the
//! grown database file again.

use std::fs::File;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use super::StoreError;

/// Log pages not yet copied into the database at which a checkpoint is
/// due (SQLite's own default threshold).
pub const DUE: u32 = 1000;

/// `wal_autocheckpoint` of a connection whose checkpoints are handed to
/// a [`Checkpointer`]: only if it falls this far behind does a commit
/// checkpoint itself.
pub const FALLBACK: u32 = 8 * DUE;

/// Bytes read from the start of the shared-memory file: the two 48-byte
/// copies of the wal-index header, then the first field of the
/// checkpoint information (`nBackfill`).
const READ: usize = 100;
/// Offset of `mxFrame` (the last valid frame of the log) in a header copy.
const MX_FRAME: usize = 16;
/// Offset of `nBackfill` (frames already copied into the database).
const BACKFILL: usize = 96;

/// Log pages of the database not yet copied into it, from the wal-index
/// in `shm` (<https://sqlite.org/walformat.html>); None when it cannot
/// be read whole or a commit is writing its header.
pub(crate) fn pending_frames(shm: &File) -> Option<u32> {
    let b = super::walindex::read_start::<READ>(shm)?;
    let word = |at: usize| -> Option<u32> {
        Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
    };
    Some(word(MX_FRAME)?.saturating_sub(word(BACKFILL)?))
}

/// What the checkpointer is asked to do.
#[derive(Default)]
struct Asked {
    due: bool,
    stop: bool,
}

/// The signal between the committing connection and the checkpointer.
pub(crate) struct Due {
    shm: File,
    asked: Mutex<Asked>,
    cv: Condvar,
}

impl Due {
    /// After a commit: ask for a checkpoint if [`DUE`] pages or more are
    /// waiting (one 100-byte `pread`; no wake-up otherwise).
    pub(crate) fn after_commit(&self) {
        if pending_frames(&self.shm).is_some_and(|n| n >= DUE) {
            self.ask(|a| a.due = true);
        }
    }

    fn ask(&self, f: impl FnOnce(&mut Asked)) {
        if let Ok(mut a) = self.asked.lock() {
            f(&mut a);
            self.cv.notify_one();
        }
    }
}

/// Runs the checkpoints of one store's mount connection (see the module
/// documentation), on a thread running [`super::Store::run_checkpoints`];
/// [`Checkpointer::stopper`] ends that.
pub struct Checkpointer {
    conn: Connection,
    due: Arc<Due>,
}

/// Ends a [`super::Store::run_checkpoints`].
#[derive(Clone)]
pub struct CheckpointStopper(Arc<Due>);

impl CheckpointStopper {
    /// Make `run_checkpoints` return once the checkpoint it may be
    /// running is done.
    pub fn stop(&self) {
        self.0.ask(|a| a.stop = true);
    }
}

impl Checkpointer {
    /// A second connection to database `db` and the signal from the first.
    pub(crate) fn open(db: &Path) -> Result<(Checkpointer, Arc<Due>), StoreError> {
        let conn = Connection::open_with_flags(
            db,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(Duration::from_secs(5))?;
        let due = Arc::new(Due {
            shm: File::open(super::walindex::shm_path(db))?,
            asked: Mutex::new(Asked::default()),
            cv: Condvar::new(),
        });
        Ok((
            Checkpointer {
                conn,
                due: due.clone(),
            },
            due,
        ))
    }

    /// What ends [`super::Store::run_checkpoints`].
    pub fn stopper(&self) -> CheckpointStopper {
        CheckpointStopper(self.due.clone())
    }

    /// Wait until a checkpoint is asked for (true) or the checkpointer is
    /// stopped (false).
    pub(crate) fn wait_due(&self) -> bool {
        let Ok(mut a) = self.due.asked.lock() else {
            return false;
        };
        while !a.due && !a.stop {
            a = match self.due.cv.wait(a) {
                Ok(a) => a,
                Err(_) => return false,
            };
        }
        a.due = false;
        !a.stop
    }

    /// One `PASSIVE` checkpoint (what it copied is in the wal-index).
    pub(crate) fn checkpoint(&self) -> Result<(), StoreError> {
        self.conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))?;
        Ok(())
    }
}
