//! Whether any connection committed since a version was read, told without a transaction: SQLite's wal-index header in `<db>-shm`.
//!
//! Every commit in WAL mode rewrites the wal-index header (its change
//! counter, last frame and checksums; a restarted log also new salts), two
//! copies of 48 bytes at the start of the shared-memory file, the second
//! copy first (<https://sqlite.org/walformat.html>, "The WAL-Index
//! Header"). So a header read whole, with equal copies, that equals one
//! read *before* a `PRAGMA data_version` means nothing was committed since
//! that header was read, and the pragma's value still holds. One `pread`
//! of 96 bytes then stands in for a read transaction (the connection's
//! lock, a statement and two lock calls on the shared memory), and a
//! request need not wait for the connection while a commit holds it.
//! Anything else (the file unreadable or gone, the copies differing while
//! a writer updates them, another header) falls back to the pragma.

use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

/// Bytes of the two header copies.
const HEADER: usize = 96;

/// Answers between checks that the file is still linked (SQLite never
/// removes it while a connection is open; a removed one would never
/// change again).
const RECHECK: u32 = 256;

/// The two header copies as read.
pub(crate) type Header = [u8; HEADER];

/// The shared-memory file (the wal-index) of database `db`.
pub(crate) fn shm_path(db: &Path) -> std::path::PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push("-shm");
    p.into()
}

/// The first `N` bytes (at least the header's two copies) of the
/// shared-memory file `shm`; None if they cannot be read whole or the
/// copies differ (a commit is writing them).
pub(crate) fn read_start<const N: usize>(shm: &File) -> Option<[u8; N]> {
    let mut b = [0u8; N];
    shm.read_exact_at(&mut b, 0).ok()?;
    let (one, two) = b.get(..HEADER)?.split_at(HEADER / 2);
    (one == two).then_some(b)
}

/// The wal-index of one database file, as this connection last saw it.
pub(crate) struct WalIndex {
    file: File,
    /// A header read before a `PRAGMA data_version`, and the pragma's value.
    seen: Mutex<Option<(Header, i64)>>,
    answered: AtomicU32,
    /// Set when the file was found unlinked: never used again.
    gone: AtomicBool,
}

impl WalIndex {
    /// The wal-index of database `db`, if its shared-memory file exists.
    pub(crate) fn open(db: &Path) -> Option<WalIndex> {
        let file = File::open(shm_path(db)).ok()?;
        Some(WalIndex {
            file,
            seen: Mutex::new(None),
            answered: AtomicU32::new(0),
            gone: AtomicBool::new(false),
        })
    }

    /// The header now; None if it cannot be read whole or its copies
    /// differ (a commit is writing it).
    pub(crate) fn header(&self) -> Option<Header> {
        if self.gone.load(Ordering::Relaxed) {
            return None;
        }
        read_start(&self.file)
    }

    /// The data version remembered with header `now`, if that is the
    /// header remembered: nothing committed since.
    pub(crate) fn unchanged(&self, now: &Header) -> Option<i64> {
        let dv = match self.seen.lock() {
            Ok(seen) => match seen.as_ref() {
                Some((h, dv)) if h == now => *dv,
                _ => return None,
            },
            Err(_) => return None,
        };
        if self.answered.fetch_add(1, Ordering::Relaxed) % RECHECK == RECHECK - 1
            && !self.file.metadata().is_ok_and(|m| m.nlink() > 0)
        {
            log::warn!("the database's shared-memory file was removed; versions come from SQLite");
            self.gone.store(true, Ordering::Relaxed);
            return None;
        }
        Some(dv)
    }

    /// Remember `dv`, read by a `PRAGMA data_version` that ran after
    /// header `h` was read.
    pub(crate) fn remember(&self, h: Header, dv: i64) {
        if let Ok(mut seen) = self.seen.lock() {
            *seen = Some((h, dv));
        }
    }
}
