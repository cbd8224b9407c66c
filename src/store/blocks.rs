//! Block files: one file per content id under `blocks/xx/`, fixed-size slots.
//! Bytes only; the vault seals and opens them.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::{BLOCKS_DIR, Store, StoreError};
use crate::format::block::SLOT;
use crate::ids::{BlockIndex, InodeId};

/// Held by every running mount of a store: a shared `flock` on
/// `mounts.lock`, and a shared OFD lock on its byte 0 through a
/// description of its own, which tells whether any other mount (or
/// workspace of another process) is present: see [`MountLock::others_present`].
pub struct MountLock {
    _flock: nix::fcntl::Flock<File>,
    presence: std::sync::Arc<File>,
}

/// Asks, through a [`MountLock`]'s description, whether other mounts are
/// present, without keeping that description (and so the lock) alive:
/// once the lock is dropped it answers true, the answer that asks for
/// the most care.
#[derive(Clone, Debug)]
pub struct PresenceProbe(std::sync::Weak<File>);

impl PresenceProbe {
    /// See [`MountLock::others_present`]; true once the lock is gone.
    pub fn others_present(&self) -> bool {
        self.0.upgrade().is_none_or(|f| others_hold(&f))
    }
}

/// Whether a description other than `presence`'s holds a lock on the
/// presence byte (or that cannot be told).
fn others_hold(presence: &File) -> bool {
    use nix::fcntl::{FcntlArg, fcntl};
    let mut fl = byte_range(libc::F_WRLCK, PRESENCE_BYTE);
    match fcntl(presence, FcntlArg::F_OFD_GETLK(&mut fl)) {
        Ok(_) => fl.l_type != libc::F_UNLCK as libc::c_short,
        Err(_) => true,
    }
}

impl std::fmt::Debug for MountLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MountLock")
    }
}

impl MountLock {
    /// True when another holder of a mount lock exists now (or when that
    /// cannot be told). Asked through this lock's own description, so only
    /// other descriptions' locks (other mounts) are reported.
    pub fn others_present(&self) -> bool {
        others_hold(&self.presence)
    }

    /// A probe asking the same question for as long as this lock lives.
    pub fn probe(&self) -> PresenceProbe {
        PresenceProbe(std::sync::Arc::downgrade(&self.presence))
    }
}

/// Name of the inode lock file inside a store directory.
pub const INODE_LOCKS: &str = "inodes.lock";

/// A held lock on one inode across processes (every mount of a store) and
/// threads: an open-file-description byte-range lock (`F_OFD_SETLKW`) on
/// byte `ino` of `inodes.lock`, shared for reads, exclusive for
/// read-modify-writes. Each holder uses a description of its own (from the
/// store's pool), so holders in one process exclude each other like those
/// in different mounts. Released on drop. Needs no file per inode, so it
/// covers files whose content is inline as well as block files. Owns what
/// it needs (an open file state may keep it while it has content pending).
pub struct InodeLock {
    f: Option<File>,
    ino: InodeId,
    pool: std::sync::Arc<std::sync::Mutex<Vec<File>>>,
}

impl std::fmt::Debug for InodeLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "InodeLock({})", self.ino)
    }
}

/// Byte of `mounts.lock` every workspace read-locks (see [`MountLock`]).
const PRESENCE_BYTE: i64 = 0;

/// A lock request of type `ty` on the one byte at offset `at`.
fn byte_range(ty: i32, at: i64) -> libc::flock {
    libc::flock {
        l_type: ty as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: at as libc::off_t,
        l_len: 1,
        l_pid: 0,
    }
}

/// Set (or clear, `F_UNLCK`) an OFD lock on byte `at` of `f`; `wait` blocks
/// until it is granted.
fn ofd_lock(f: &File, at: i64, ty: i32, wait: bool) -> nix::Result<()> {
    use nix::fcntl::{FcntlArg, fcntl};
    let fl = byte_range(ty, at);
    loop {
        let arg = if wait {
            FcntlArg::F_OFD_SETLKW(&fl)
        } else {
            FcntlArg::F_OFD_SETLK(&fl)
        };
        match fcntl(f, arg) {
            Err(nix::errno::Errno::EINTR) => continue,
            r => return r.map(|_| ()),
        }
    }
}

/// Idle lock descriptions kept for reuse.
const LOCK_POOL: usize = 16;

impl Drop for InodeLock {
    fn drop(&mut self) {
        let Some(f) = self.f.take() else { return };
        match ofd_lock(&f, self.ino.0, libc::F_UNLCK, false) {
            Ok(()) => {
                if let Ok(mut pool) = self.pool.lock()
                    && pool.len() < LOCK_POOL
                {
                    pool.push(f);
                }
            }
            // Closing the description releases its locks.
            Err(e) => log::error!("unlock inode {}: {e}", self.ino),
        }
    }
}

impl Store {
    /// Take the mount lock: returns it (shared) and whether this is the only
    /// mount of the store (only then may orphaned inodes be swept: another
    /// mount may still hold deleted files open).
    pub fn mount_lock(&self) -> Result<(MountLock, bool), StoreError> {
        use nix::fcntl::{Flock, FlockArg};
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(self.root().join("mounts.lock"))?;
        let (guard, alone) = match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
            Ok(g) => (g, true),
            Err((f, _)) => match Flock::lock(f, FlockArg::LockShared) {
                Ok(g) => (g, false),
                Err((_, e)) => return Err(StoreError::Io(std::io::Error::from(e))),
            },
        };
        if alone {
            guard
                .relock(FlockArg::LockShared)
                .map_err(|e| StoreError::Io(std::io::Error::from(e)))?;
        }
        let presence = OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.root().join("mounts.lock"))?;
        ofd_lock(&presence, PRESENCE_BYTE, libc::F_RDLCK, true)
            .map_err(|e| StoreError::Io(std::io::Error::from(e)))?;
        Ok((
            MountLock {
                _flock: guard,
                presence: std::sync::Arc::new(presence),
            },
            alone,
        ))
    }

    /// Wait for the cross-process lock of `ino` (see [`InodeLock`]).
    pub fn inode_lock(&self, ino: InodeId, exclusive: bool) -> Result<InodeLock, StoreError> {
        if ino.0 < 0 {
            return Err(StoreError::Corrupt("negative inode id".into()));
        }
        let pooled = self
            .lock_pool
            .lock()
            .map_err(|_| StoreError::Poisoned)?
            .pop();
        let f = match pooled {
            Some(f) => f,
            None => OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(self.root().join(INODE_LOCKS))?,
        };
        let ty = if exclusive {
            libc::F_WRLCK
        } else {
            libc::F_RDLCK
        };
        ofd_lock(&f, ino.0, ty, true).map_err(|e| StoreError::Io(std::io::Error::from(e)))?;
        Ok(InodeLock {
            f: Some(f),
            ino,
            pool: self.lock_pool.clone(),
        })
    }

    /// Block files are named by inode id: `blocks/<low byte hex>/<id as 16 hex>`.
    fn block_path(&self, ino: InodeId) -> PathBuf {
        let hex = format!("{:016x}", ino.0);
        self.root().join(BLOCKS_DIR).join(&hex[14..]).join(hex)
    }

    /// Open (optionally creating) the block file of `ino`. Returns `None`
    /// when it does not exist and `create` is false.
    pub fn block_open(&self, ino: InodeId, create: bool) -> Result<Option<File>, StoreError> {
        let p = self.block_path(ino);
        let open = |p: &Path| {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(create)
                .truncate(false)
                .mode(0o600)
                .open(p)
        };
        match open(&p) {
            Ok(f) => Ok(Some(f)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
                // The first file of its fan-out directory: make the directory.
                if let Some(dir) = p.parent() {
                    std::fs::DirBuilder::new()
                        .recursive(true)
                        .mode(0o700)
                        .create(dir)?;
                }
                Ok(Some(open(&p)?))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Delete the block file of `ino` (missing is fine) once the row
    /// deletions that precede this are committed (at once, or when the
    /// open batch commits), so a crash never leaves rows pointing at a
    /// removed file; a crash in between leaves an orphan file, which the
    /// next mount removes.
    pub fn block_remove(&self, ino: InodeId) -> Result<(), StoreError> {
        self.remove_after_commit(self.block_path(ino))
    }

    /// After [`Tx::inode_delete`](crate::store::Tx::inode_delete): remove
    /// the inode's block file as [`Store::block_remove`] does, unless it
    /// can have none (a directory, a symlink, a file whose content was
    /// inline): no `unlink(2)` that can only fail.
    pub fn deleted(&self, d: super::files::Deleted) -> Result<(), StoreError> {
        if d.block_file {
            self.block_remove(d.ino)?;
        }
        Ok(())
    }

    /// Every block file with the inode its name encodes (unparsable names skipped).
    pub fn block_inodes(&self) -> Result<Vec<(PathBuf, InodeId)>, StoreError> {
        Ok(self
            .block_files()?
            .into_iter()
            .filter_map(|p| {
                let id = p
                    .file_name()?
                    .to_str()
                    .and_then(|n| i64::from_str_radix(n, 16).ok())?;
                Some((p, InodeId(id)))
            })
            .collect())
    }

    /// Every block file path (for fsck and tests).
    pub fn block_files(&self) -> Result<Vec<PathBuf>, StoreError> {
        let mut out = Vec::new();
        let root = self.root().join(BLOCKS_DIR);
        for d in std::fs::read_dir(root)? {
            let d = d?;
            if d.file_type()?.is_dir() {
                for f in std::fs::read_dir(d.path())? {
                    out.push(f?.path());
                }
            }
        }
        Ok(out)
    }
}

/// Read the slots from index `first` on into `buf`: as many bytes as the
/// file holds there (fewer than `buf` at its end; a missing or truncated
/// block shows as bytes not read). Returns the bytes read.
///
/// A run of at least [`DIRECT_READ_MIN`] bytes into a page-aligned buffer
/// (a [`SlotBuf`]) is read with `O_DIRECT`: a sequential read then copies
/// no ciphertext through fresh page-cache pages (the kernel caches the
/// plaintext for the mount), which was half of the daemon's CPU time
/// during a cold sequential read. The kernel writes dirty cached pages of
/// the range back first, so buffered writes are seen.
pub fn read_run(f: &File, first: BlockIndex, buf: &mut [u8]) -> Result<usize, StoreError> {
    let off = first
        .0
        .checked_mul(SLOT as u64)
        .ok_or_else(|| StoreError::Corrupt("block offset overflow".into()))?;
    if buf.len() >= DIRECT_READ_MIN
        && (buf.as_ptr() as usize).is_multiple_of(SLOT)
        && let Some(n) = read_direct(f, off, buf)?
    {
        return Ok(n);
    }
    Ok(read_full(f, off, buf)?)
}

/// Read into `buf` at `off` until it is full or the file ends; the bytes
/// read.
fn read_full(f: &File, off: u64, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match f.read_at(&mut buf[done..], off + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Runs of slots read with `O_DIRECT` (see [`read_run`]): 16 slots, less
/// than the kernel's smallest readahead request (128 KiB of plaintext is
/// 33 slots), more than a random 4 KiB read (two).
pub const DIRECT_READ_MIN: usize = 16 * SLOT;

/// Read into `buf` at `off` with `O_DIRECT` (see [`with_direct`]); None
/// if it is refused (an unaligned read past a short end of the file is
/// too: it is then read again buffered).
fn read_direct(f: &File, off: u64, buf: &mut [u8]) -> Result<Option<usize>, StoreError> {
    with_direct(f, || read_full(f, off, buf))
}

/// Run `io` on `f` with `O_DIRECT` set on its description for this call
/// only (every user of a block file's description holds its state's
/// lock). None, with the flag restored, if the description or the
/// filesystem (EINVAL) refuses it: the caller does the buffered I/O.
fn with_direct<T>(
    f: &File,
    io: impl FnOnce() -> std::io::Result<T>,
) -> Result<Option<T>, StoreError> {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    let Ok(bits) = fcntl(f, FcntlArg::F_GETFL) else {
        return Ok(None);
    };
    let flags = OFlag::from_bits_truncate(bits);
    if fcntl(f, FcntlArg::F_SETFL(flags | OFlag::O_DIRECT)).is_err() {
        return Ok(None);
    }
    let r = io();
    // Restored whatever `io` did: a description left in O_DIRECT would
    // make later unaligned buffered I/O on it fail.
    let restored = fcntl(f, FcntlArg::F_SETFL(flags));
    let r = match r {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => None,
        Err(e) => return Err(e.into()),
        Ok(v) => Some(v),
    };
    restored.map_err(std::io::Error::from)?;
    Ok(r)
}

/// Remove a file; missing is fine.
pub(crate) fn remove_file(p: &Path) -> Result<(), StoreError> {
    match std::fs::remove_file(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Write consecutive slots starting at `first`.
///
/// A run of at least [`DIRECT_MIN`] bytes is written with `O_DIRECT` (set
/// on the description for that write only), so its ciphertext is not
/// copied into the page cache a second time next to the plaintext the
/// kernel caches for the mount: that copy into fresh pages was most of the
/// daemon's time during a large sequential write. Slots are page-sized and
/// page-aligned, so the write is too (from a [`SlotBuf`], or copied into
/// one); a filesystem that refuses `O_DIRECT` gets the buffered write.
pub fn write_slots(f: &File, first: BlockIndex, data: &[u8]) -> Result<(), StoreError> {
    let off = first
        .0
        .checked_mul(SLOT as u64)
        .ok_or_else(|| StoreError::Corrupt("block offset overflow".into()))?;
    if data.len() >= DIRECT_MIN && write_direct(f, off, data)? {
        return Ok(());
    }
    f.write_all_at(data, off)?;
    Ok(())
}

/// Runs of slots written with `O_DIRECT` (see [`write_slots`]): 64 slots.
pub const DIRECT_MIN: usize = 64 * SLOT;

/// Write `data` at `off` with `O_DIRECT`; false (nothing written) if the
/// description or the filesystem refuses it.
fn write_direct(f: &File, off: u64, data: &[u8]) -> Result<bool, StoreError> {
    let copy;
    let src = if (data.as_ptr() as usize).is_multiple_of(SLOT) {
        data
    } else {
        let mut b = SlotBuf::new(data.len());
        b.as_mut().copy_from_slice(data);
        copy = b;
        copy.as_ref()
    };
    Ok(with_direct(f, || f.write_all_at(src, off))?.is_some())
}

/// A zeroed buffer of whole slots that starts on a page boundary (as
/// `O_DIRECT` needs), without unsafe code: a slice of a larger vector.
pub struct SlotBuf {
    v: Vec<u8>,
    at: usize,
    len: usize,
}

impl SlotBuf {
    /// `len` zero bytes, page-aligned.
    pub fn new(len: usize) -> SlotBuf {
        let v = vec![0u8; len + SLOT];
        let at = (SLOT - v.as_ptr() as usize % SLOT) % SLOT;
        SlotBuf { v, at, len }
    }
}

impl AsRef<[u8]> for SlotBuf {
    fn as_ref(&self) -> &[u8] {
        &self.v[self.at..self.at + self.len]
    }
}

impl AsMut<[u8]> for SlotBuf {
    fn as_mut(&mut self) -> &mut [u8] {
        &mut self.v[self.at..self.at + self.len]
    }
}

/// Cut the file to `nslots` slots.
pub fn truncate_slots(f: &File, nslots: u64) -> Result<(), StoreError> {
    f.set_len(nslots.saturating_mul(SLOT as u64))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn presence_and_inode_locks() {
        let (_dir, root, a, b) = crate::store::tests::two_connections();
        let (la, alone) = a.mount_lock().unwrap();
        assert!(alone);
        assert!(!la.others_present(), "its own lock is not another mount");
        let (lb, alone) = b.mount_lock().unwrap();
        assert!(!alone);
        assert!(la.others_present() && lb.others_present());
        let probe = lb.probe();
        assert!(probe.others_present());
        drop(lb);
        assert!(!la.others_present(), "the other mount left");
        // The probe kept nothing alive, and answers true without its lock.
        assert!(probe.others_present());
        let probe = la.probe();
        assert!(!probe.others_present());
        // Inode locks: shared with shared, exclusive against both, per inode,
        // also between holders in one process; the description is reused.
        let ino = InodeId(7);
        let r1 = a.inode_lock(ino, false).unwrap();
        let r2 = b.inode_lock(ino, false).unwrap();
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(root.join(INODE_LOCKS))
            .unwrap();
        let busy = |ty| ofd_lock(&f, ino.0, ty, false).is_err();
        assert!(busy(libc::F_WRLCK) && !busy(libc::F_RDLCK));
        ofd_lock(&f, ino.0, libc::F_UNLCK, false).unwrap();
        drop((r1, r2));
        let w = a.inode_lock(ino, true).unwrap();
        assert!(busy(libc::F_RDLCK), "exclusive holds off readers");
        assert!(ofd_lock(&f, 8, libc::F_WRLCK, false).is_ok());
        drop(w);
        assert!(!busy(libc::F_WRLCK), "released on drop");
        assert_eq!(
            a.lock_pool.lock().unwrap().len(),
            1,
            "one description, reused"
        );
        assert_eq!(b.lock_pool.lock().unwrap().len(), 1);
    }

    /// Bytes this thread has had read from storage (not from the page cache).
    fn storage_reads() -> u64 {
        let io = std::fs::read_to_string("/proc/thread-self/io").unwrap();
        io.lines()
            .find_map(|l| l.strip_prefix("read_bytes: "))
            .unwrap()
            .parse()
            .unwrap()
    }

    /// A new empty file `b` in `dir`, open for reading and writing.
    fn scratch(dir: &std::path::Path) -> File {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.join("b"))
            .unwrap()
    }

    /// Whether the description has `O_DIRECT` set.
    fn is_direct(f: &File) -> bool {
        use nix::fcntl::{FcntlArg, OFlag, fcntl};
        OFlag::from_bits_truncate(fcntl(f, FcntlArg::F_GETFL).unwrap()).contains(OFlag::O_DIRECT)
    }

    /// A failed I/O leaves the description buffered as well, whether the
    /// failure was a refusal (EINVAL: None) or a real error (returned).
    #[test]
    fn direct_io_restores_the_flags_when_it_fails() {
        let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let f = scratch(dir.path());
        let refused = with_direct(&f, || {
            assert!(is_direct(&f));
            Err::<(), _>(std::io::Error::from_raw_os_error(libc::EINVAL))
        });
        assert!(matches!(refused, Ok(None)));
        assert!(!is_direct(&f));
        let failed = with_direct(&f, || {
            Err::<(), _>(std::io::Error::from_raw_os_error(libc::EIO))
        });
        assert!(failed.is_err());
        assert!(
            !is_direct(&f),
            "the description is left buffered after an error"
        );
    }

    #[test]
    fn large_runs_are_read_direct_and_see_buffered_writes() {
        // On the project's disk: tmpfs would count no storage reads.
        let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let f = scratch(dir.path());
        let n = DIRECT_READ_MIN / SLOT + 2;
        let data: Vec<u8> = (0..n * SLOT).map(|i| (i % 251) as u8).collect();
        f.write_all_at(&data, 0).unwrap();
        f.sync_all().unwrap();
        // Cached and clean: a buffered read takes nothing from storage.
        let mut plain = vec![0u8; n * SLOT];
        let before = storage_reads();
        assert_eq!(read_run(&f, BlockIndex(0), &mut plain).unwrap(), n * SLOT);
        assert_eq!(
            storage_reads(),
            before,
            "an unaligned buffer reads buffered"
        );
        assert_eq!(plain, data);
        // A slot written buffered and not yet written back is seen.
        let fresh = vec![0xa5u8; SLOT];
        f.write_all_at(&fresh, 3 * SLOT as u64).unwrap();
        let mut buf = SlotBuf::new((n + 1) * SLOT);
        let before = storage_reads();
        assert_eq!(
            read_run(&f, BlockIndex(0), buf.as_mut()).unwrap(),
            n * SLOT,
            "short at the end of the file"
        );
        assert!(
            storage_reads() - before >= (n * SLOT) as u64,
            "read from storage, past the page cache"
        );
        assert_eq!(&buf.as_ref()[..3 * SLOT], &data[..3 * SLOT]);
        assert_eq!(&buf.as_ref()[3 * SLOT..4 * SLOT], &fresh[..]);
        assert_eq!(&buf.as_ref()[4 * SLOT..n * SLOT], &data[4 * SLOT..]);
        assert!(!is_direct(&f), "the description is left buffered");
        // A short run stays buffered.
        let mut small = SlotBuf::new(2 * SLOT);
        let before = storage_reads();
        assert_eq!(
            read_run(&f, BlockIndex(1), small.as_mut()).unwrap(),
            2 * SLOT
        );
        assert_eq!(storage_reads(), before);
    }

    #[test]
    fn large_runs_are_written_direct_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let f = scratch(dir.path());
        let n = DIRECT_MIN / SLOT + 3;
        let mut aligned = SlotBuf::new(n * SLOT);
        assert_eq!(aligned.as_ref().as_ptr() as usize % SLOT, 0);
        for (i, b) in aligned.as_mut().iter_mut().enumerate() {
            *b = (i % 253) as u8;
        }
        // A small run first, then a large one from an aligned buffer and
        // one from an unaligned copy, over and after it.
        write_slots(&f, BlockIndex(0), &aligned.as_ref()[..SLOT]).unwrap();
        write_slots(&f, BlockIndex(1), aligned.as_ref()).unwrap();
        let unaligned: Vec<u8> = std::iter::once(0u8)
            .chain(aligned.as_ref().iter().map(|b| b.wrapping_add(1)))
            .collect();
        write_slots(&f, BlockIndex(n as u64), &unaligned[1..]).unwrap();
        assert!(!is_direct(&f), "the description is left buffered");
        let mut back = vec![0u8; (2 * n + 1) * SLOT];
        assert_eq!(
            read_run(&f, BlockIndex(0), &mut back).unwrap(),
            (2 * n) * SLOT
        );
        assert_eq!(&back[..SLOT], &aligned.as_ref()[..SLOT]);
        assert_eq!(&back[SLOT..n * SLOT], &aligned.as_ref()[..(n - 1) * SLOT]);
        assert_eq!(&back[n * SLOT..2 * n * SLOT], &unaligned[1..]);
    }
}
