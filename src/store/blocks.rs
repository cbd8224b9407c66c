//! Block files: one file per inode under `blocks/xx/`, groups of a header page of entries and data pages (`format::block`).
//! Bytes only; the vault seals and opens them.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::{BLOCKS_DIR, Store, StoreError};
use crate::format::block::{ENTRY, GROUP, HEAD_PAGES, PAGE, entry_offset, file_len, page_offset};
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
    pub fn block_open(&self, ino: InodeId, create: bool) -> Result<Option<BlockFile>, StoreError> {
        let p = self.block_path(ino);
        match BlockFile::open(&p, create) {
            Err(StoreError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound && create => {
                // The first file of its fan-out directory: make the directory.
                if let Some(dir) = p.parent() {
                    std::fs::DirBuilder::new()
                        .recursive(true)
                        .mode(0o700)
                        .create(dir)?;
                }
                Ok(Some(BlockFile::open(&p, create)?))
            }
            Err(StoreError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            r => r.map(Some),
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

/// An open block file, through two descriptions: one for its data pages
/// and one for its entries. The kernel keeps readahead state per
/// description, and entry reads between page reads would make it take a
/// random read for a sequential one and the reverse.
pub struct BlockFile {
    pages: File,
    entries: File,
}

impl BlockFile {
    /// Open the block file at `p` (creating it with mode 0600 if asked).
    pub fn open(p: &Path, create: bool) -> Result<BlockFile, StoreError> {
        let open = || {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(create)
                .truncate(false)
                .mode(0o600)
                .open(p)
        };
        let pages = open()?;
        let entries = open()?;
        Ok(BlockFile { pages, entries })
    }

    /// Read the entries of blocks `first..` into `out` (ENTRY bytes each);
    /// entries the file does not hold read as zeros (empty).
    pub fn read_entries(&self, first: BlockIndex, out: &mut [u8]) -> Result<(), StoreError> {
        read_entries(&self.entries, first, out)
    }

    /// Ask the kernel to start reading the header pages of `first`'s
    /// group without waiting: a large read starting inside a group then
    /// reads its pages while that group's entries come in, instead of
    /// after them (the header pages of the groups it enters at their
    /// start come with its pages).
    fn prefetch_entries(&self, first: BlockIndex) {
        if let Some(off) = (first.0 / GROUP).checked_mul(GROUP).and_then(entry_offset) {
            // Advice only: a refusal changes nothing but the timing.
            let _ = nix::fcntl::posix_fadvise(
                &self.entries,
                off as i64,
                (HEAD_PAGES as usize * PAGE) as i64,
                nix::fcntl::PosixFadviseAdvice::POSIX_FADV_WILLNEED,
            );
        }
    }

    /// Read blocks `first..`: their entries into `entries` (ENTRY bytes
    /// each, zeros for what the file does not hold) and their pages into
    /// `pages` (PAGE bytes each); returns how many whole pages the file
    /// holds from `first` on.
    ///
    /// A run of at least [`DIRECT_READ_MIN`] bytes into a page-aligned
    /// buffer is one `O_DIRECT` `preadv` from its first page on: the run's
    /// pages and, for each group it enters at the group's start, that
    /// group's header pages, which lie between the pages of the group
    /// before and its own (the entries of a run starting inside a group
    /// are read buffered, the kernel asked for them first). A sequential
    /// read then costs one request per megabyte, as when headers were
    /// inside the pages. Otherwise entries and pages are read apart.
    pub fn read_run(
        &self,
        first: BlockIndex,
        entries: &mut [u8],
        pages: &mut [u8],
    ) -> Result<usize, StoreError> {
        let n = pages.len() / PAGE;
        if entries.len() != n * ENTRY {
            return Err(StoreError::Corrupt("entries do not match the pages".into()));
        }
        if pages.len() >= DIRECT_READ_MIN && (pages.as_ptr() as usize).is_multiple_of(PAGE) {
            let inside = !first.0.is_multiple_of(GROUP);
            let c0 = segments(first, n).next().map_or(0, |(_, c)| c);
            if inside {
                self.prefetch_entries(first);
            }
            if let Some(have) = self.read_run_direct(first, entries, pages)? {
                if inside {
                    read_entries(&self.entries, first, &mut entries[..c0 * ENTRY])?;
                }
                return Ok(have);
            }
        }
        // Small, unaligned, or `O_DIRECT` refused: buffered.
        read_entries(&self.entries, first, entries)?;
        read_pages(&self.pages, first, pages)
    }

    /// The `O_DIRECT` read of [`BlockFile::read_run`]; None if refused.
    /// Entries of groups entered at their start are filled in (zeros past
    /// the end of the file); the others are left to the caller.
    fn read_run_direct(
        &self,
        first: BlockIndex,
        entries: &mut [u8],
        pages: &mut [u8],
    ) -> Result<Option<usize>, StoreError> {
        use std::io::IoSliceMut;
        let n = pages.len() / PAGE;
        let segs: Vec<(usize, usize)> = segments(first, n).collect();
        let head_len = HEAD_PAGES as usize * PAGE;
        let starts = |k: usize| first.0.saturating_add(k as u64).is_multiple_of(GROUP);
        let mut heads: Vec<SlotBuf> = segs
            .iter()
            .filter(|(k, _)| starts(*k))
            .map(|_| SlotBuf::new(head_len))
            .collect();
        let at = if starts(0) {
            entry_offset(first.0)
        } else {
            page_offset(first.0)
        };
        let at = i64::try_from(offset(at)?)
            .map_err(|_| StoreError::Corrupt("block offset overflow".into()))?;
        // The buffers in file order: per segment, the header pages of a
        // group entered at its start, then the segment's pages.
        let mut iov: Vec<IoSliceMut<'_>> = Vec::with_capacity(2 * segs.len());
        let mut rest: &mut [u8] = pages;
        let mut hs = heads.iter_mut();
        for (k, c) in &segs {
            if starts(*k)
                && let Some(h) = hs.next()
            {
                iov.push(IoSliceMut::new(h.as_mut()));
            }
            let (mine, tail) = std::mem::take(&mut rest).split_at_mut(c * PAGE);
            rest = tail;
            iov.push(IoSliceMut::new(mine));
        }
        let got = with_direct(&self.pages, || {
            loop {
                match nix::sys::uio::preadv(&self.pages, &mut iov, at) {
                    Ok(g) => return Ok(g),
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => return Err(std::io::Error::from(e)),
                }
            }
        })?;
        drop(iov);
        let Some(mut left) = got else {
            return Ok(None);
        };
        // The same buffers again, in the same order: whole pages up to
        // what was read, and the entries of the header pages read.
        let mut have = 0usize;
        let mut short = false;
        let mut hs = heads.iter();
        for (k, c) in segs {
            if starts(k)
                && let Some(h) = hs.next()
            {
                let take = left.min(head_len);
                left -= take;
                let dst = &mut entries[k * ENTRY..(k + c) * ENTRY];
                let n = (c * ENTRY).min(take);
                dst[..n].copy_from_slice(&h.as_ref()[..n]);
                dst[n..].fill(0);
            }
            let take = left.min(c * PAGE);
            left -= take;
            if !short {
                have += take / PAGE;
                short = take < c * PAGE;
            }
        }
        Ok(Some(have))
    }

    /// See [`write_run`].
    pub fn write_run(
        &self,
        first: BlockIndex,
        before: &[u8],
        pages: &[u8],
        after: &[u8],
    ) -> Result<(), StoreError> {
        write_run(&self.entries, &self.pages, first, before, pages, after)
    }

    /// Cut the file to blocks `0..nslots` (the entries of the cut blocks in
    /// the last group's header pages stay: they are never read for blocks
    /// outside the record's extents, and a write of such a block replaces
    /// them).
    pub fn truncate(&self, nslots: u64) -> Result<(), StoreError> {
        self.pages.set_len(offset(file_len(nslots))?)?;
        Ok(())
    }

    /// Make its content durable.
    pub fn sync_data(&self) -> Result<(), StoreError> {
        self.pages.sync_data()?;
        Ok(())
    }
}

/// The runs of a block range `first..first + n` that lie in one group
/// each: `(k, count)` with `k` the index in the range of the run's first
/// block. A group's entries are contiguous, and so are its data pages.
fn segments(first: BlockIndex, n: usize) -> impl Iterator<Item = (usize, usize)> {
    let mut k = 0usize;
    std::iter::from_fn(move || {
        if k >= n {
            return None;
        }
        let i = first.0.saturating_add(k as u64);
        let left = (GROUP - i % GROUP) as usize;
        let c = left.min(n - k);
        let seg = (k, c);
        k += c;
        Some(seg)
    })
}

fn offset(o: Option<u64>) -> Result<u64, StoreError> {
    o.ok_or_else(|| StoreError::Corrupt("block offset overflow".into()))
}

fn read_entries(f: &File, first: BlockIndex, out: &mut [u8]) -> Result<(), StoreError> {
    let n = out.len() / ENTRY;
    for (k, c) in segments(first, n) {
        let off = offset(entry_offset(first.0.saturating_add(k as u64)))?;
        let dst = &mut out[k * ENTRY..(k + c) * ENTRY];
        let got = read_full(f, off, dst)?;
        dst[got..].fill(0);
    }
    Ok(())
}

/// Read the data pages of blocks `first..` into `buf` (PAGE bytes each),
/// buffered (large runs are read with `O_DIRECT` by
/// [`BlockFile::read_run`]): returns how many whole pages the file holds
/// from `first` on (a missing or cut page ends the count).
fn read_pages(f: &File, first: BlockIndex, buf: &mut [u8]) -> Result<usize, StoreError> {
    let n = buf.len() / PAGE;
    if n == 1 {
        return read_one_page(f, first, buf);
    }
    for (k, c) in segments(first, n) {
        let Ok(off) = offset(page_offset(first.0.saturating_add(k as u64))) else {
            return Ok(k);
        };
        let got = read_full(f, off, &mut buf[k * PAGE..(k + c) * PAGE])?;
        if got < c * PAGE {
            return Ok(k + got / PAGE);
        }
    }
    Ok(n)
}

/// Pages read around a single page missing from the page cache: the
/// aligned run of `CLUSTER` pages (32 KiB) that holds it, inside one
/// group as `GROUP` is a multiple of it.
pub const CLUSTER: u64 = 8;
const _: () = assert!(GROUP.is_multiple_of(CLUSTER));

/// Read the data page of block `first` into `buf` (one PAGE): returns 1,
/// or 0 if the file does not hold it whole.
///
/// From the page cache if it is there (`preadv2` with `RWF_NOWAIT`:
/// nothing else is copied); else with the rest of its cluster in one read,
/// for about the device time of the one page: the neighbours of a page
/// read at random are often asked for soon (a nearby read, the kernel's
/// readahead), and then come from the cache.
fn read_one_page(f: &File, first: BlockIndex, buf: &mut [u8]) -> Result<usize, StoreError> {
    let Ok(off) = offset(page_offset(first.0)) else {
        return Ok(0);
    };
    let page = &mut buf[..PAGE];
    let mut io = [std::io::IoSliceMut::new(page)];
    match rustix::io::preadv2(f, &mut io, off, rustix::io::ReadWriteFlags::NOWAIT) {
        Ok(got) if got == PAGE => return Ok(1),
        Ok(_) => {}
        // Not cached (EAGAIN), or no RWF_NOWAIT here (EOPNOTSUPP): read it.
        Err(e)
            if e == rustix::io::Errno::INTR
                || e == rustix::io::Errno::AGAIN
                || e == rustix::io::Errno::OPNOTSUPP => {}
        Err(e) => return Err(std::io::Error::from(e).into()),
    }
    let at = first.0 % CLUSTER;
    let Ok(start) = offset(page_offset(first.0 - at)) else {
        return Ok(0);
    };
    let mut run = vec![0u8; CLUSTER as usize * PAGE];
    let got = read_full(f, start, &mut run)?;
    let from = at as usize * PAGE;
    if got < from + PAGE {
        return Ok(0);
    }
    buf[..PAGE].copy_from_slice(&run[from..from + PAGE]);
    Ok(1)
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

/// Runs of pages read with `O_DIRECT` (see [`BlockFile::read_run`]): 16 pages,
/// less than the kernel's smallest readahead request (128 KiB is 32
/// pages), more than a random 4 KiB read (one or two).
pub const DIRECT_READ_MIN: usize = 16 * PAGE;

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

/// Write blocks `first..`: the entries `before` (the new header in the
/// half that does not open the current page, the other half as it was),
/// then the data pages, then the entries `after` (the other half emptied)
/// where they differ from `before`. Each step is a write of whole pages or
/// of part of one page, which the kernel never leaves half done: a daemon
/// killed at any point leaves each page opened by one of its entry's
/// halves (`format::block`).
///
/// A run of at least [`DIRECT_MIN`] bytes of pages is written with
/// `O_DIRECT` (set on the description for those writes only), so its
/// ciphertext is not copied into the page cache a second time next to the
/// plaintext the kernel caches for the mount: that copy into fresh pages
/// was most of the daemon's time during a large sequential write. Pages
/// are page-aligned, so the writes are too (from a [`SlotBuf`], or copied
/// into one); a filesystem that refuses `O_DIRECT` gets buffered writes.
fn write_run(
    ef: &File,
    f: &File,
    first: BlockIndex,
    before: &[u8],
    pages: &[u8],
    after: &[u8],
) -> Result<(), StoreError> {
    let n = pages.len() / PAGE;
    if before.len() != n * ENTRY || after.len() != n * ENTRY {
        return Err(StoreError::Corrupt("entries do not match the pages".into()));
    }
    let entries = |e: &[u8], skip_same: bool| -> Result<(), StoreError> {
        for (k, c) in segments(first, n) {
            let r = k * ENTRY..(k + c) * ENTRY;
            if skip_same && e[r.clone()] == before[r.clone()] {
                continue;
            }
            let off = offset(entry_offset(first.0.saturating_add(k as u64)))?;
            ef.write_all_at(&e[r], off)?;
        }
        Ok(())
    };
    entries(before, false)?;
    let write = |src: &[u8]| -> std::io::Result<Result<(), StoreError>> {
        for (k, c) in segments(first, n) {
            let off = match offset(page_offset(first.0.saturating_add(k as u64))) {
                Ok(o) => o,
                Err(e) => return Ok(Err(e)),
            };
            f.write_all_at(&src[k * PAGE..(k + c) * PAGE], off)?;
        }
        Ok(Ok(()))
    };
    let mut done = false;
    if pages.len() >= DIRECT_MIN {
        let copy;
        let src = if (pages.as_ptr() as usize).is_multiple_of(PAGE) {
            pages
        } else {
            let mut b = SlotBuf::new(pages.len());
            b.as_mut().copy_from_slice(pages);
            copy = b;
            copy.as_ref()
        };
        if let Some(r) = with_direct(f, || write(src))? {
            r?;
            done = true;
        }
    }
    if !done {
        write(pages)??;
    }
    entries(after, true)
}

/// Runs of pages written with `O_DIRECT` (see [`write_run`]): 64 pages.
pub const DIRECT_MIN: usize = 64 * PAGE;

/// A zeroed buffer of whole pages that starts on a page boundary (as
/// `O_DIRECT` needs), without unsafe code: a slice of a larger vector.
pub struct SlotBuf {
    v: Vec<u8>,
    at: usize,
    len: usize,
}

impl SlotBuf {
    /// `len` zero bytes, page-aligned.
    pub fn new(len: usize) -> SlotBuf {
        let v = vec![0u8; len + PAGE];
        let at = (PAGE - v.as_ptr() as usize % PAGE) % PAGE;
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

    /// Pages of blocks `first..` through [`BlockFile::read_run`].
    fn pages_of(b: &BlockFile, first: BlockIndex, buf: &mut [u8]) -> usize {
        let mut e = vec![0u8; buf.len() / PAGE * ENTRY];
        b.read_run(first, &mut e, buf).unwrap()
    }

    /// A new empty block file `b` in `dir`.
    fn scratch_blocks(dir: &std::path::Path) -> BlockFile {
        scratch(dir);
        BlockFile::open(&dir.join("b"), false).unwrap()
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

    /// Entries of `n` blocks with byte value `v` in the first half.
    fn marked(n: usize, v: u8) -> Vec<u8> {
        let mut e = vec![0u8; n * ENTRY];
        for c in e.chunks_mut(ENTRY) {
            c[..ENTRY / 2].fill(v);
        }
        e
    }

    #[test]
    fn large_runs_are_read_direct_and_see_buffered_writes() {
        // On the project's disk: tmpfs would count no storage reads.
        let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let b = scratch_blocks(dir.path());
        let n = DIRECT_READ_MIN / PAGE + 2;
        let data: Vec<u8> = (0..n * PAGE).map(|i| (i % 251) as u8).collect();
        let e = marked(n, 9);
        b.write_run(BlockIndex(0), &e, &data, &e).unwrap();
        b.sync_data().unwrap();
        // Cached and clean: a buffered read takes nothing from storage.
        let mut plain = vec![0u8; n * PAGE];
        let before = storage_reads();
        assert_eq!(pages_of(&b, BlockIndex(0), &mut plain), n);
        assert_eq!(
            storage_reads(),
            before,
            "an unaligned buffer reads buffered"
        );
        assert_eq!(plain, data);
        // A page written buffered and not yet written back is seen.
        let fresh = vec![0xa5u8; PAGE];
        let e1 = marked(1, 3);
        b.write_run(BlockIndex(3), &e1, &fresh, &e1).unwrap();
        let mut buf = SlotBuf::new((n + 1) * PAGE);
        let before = storage_reads();
        assert_eq!(
            pages_of(&b, BlockIndex(0), buf.as_mut()),
            n,
            "short at the end of the file"
        );
        assert!(
            storage_reads() - before >= (n * PAGE) as u64,
            "read from storage, past the page cache"
        );
        assert_eq!(&buf.as_ref()[..3 * PAGE], &data[..3 * PAGE]);
        assert_eq!(&buf.as_ref()[3 * PAGE..4 * PAGE], &fresh[..]);
        assert_eq!(&buf.as_ref()[4 * PAGE..n * PAGE], &data[4 * PAGE..]);
        assert!(!is_direct(&b.pages), "the description is left buffered");
        // A short run stays buffered.
        let mut small = SlotBuf::new(2 * PAGE);
        let before = storage_reads();
        assert_eq!(pages_of(&b, BlockIndex(1), small.as_mut()), 2);
        assert_eq!(storage_reads(), before);
        let mut ents = vec![0u8; (n + 1) * ENTRY];
        b.read_entries(BlockIndex(0), &mut ents).unwrap();
        let mut want = marked(n, 9);
        want[3 * ENTRY..4 * ENTRY].copy_from_slice(&e1);
        want.extend_from_slice(&[0u8; ENTRY]);
        assert_eq!(ents, want, "entries read back, missing ones empty");
    }

    #[test]
    fn runs_across_groups_are_written_direct_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let b = scratch_blocks(dir.path());
        let n = (DIRECT_MIN / PAGE).max(GROUP as usize) + 3;
        let mut aligned = SlotBuf::new(n * PAGE);
        assert_eq!(aligned.as_ref().as_ptr() as usize % PAGE, 0);
        for (i, b) in aligned.as_mut().iter_mut().enumerate() {
            *b = (i % 253) as u8;
        }
        // A small run first, then a large one from an aligned buffer and
        // one from an unaligned copy, over and after it; both cross groups.
        let e = |n: usize| marked(n, 1);
        b.write_run(BlockIndex(0), &e(1), &aligned.as_ref()[..PAGE], &e(1))
            .unwrap();
        let before = marked(n, 2);
        b.write_run(BlockIndex(1), &before, aligned.as_ref(), &e(n))
            .unwrap();
        let unaligned: Vec<u8> = std::iter::once(0u8)
            .chain(aligned.as_ref().iter().map(|b| b.wrapping_add(1)))
            .collect();
        b.write_run(BlockIndex(n as u64), &e(n), &unaligned[1..], &e(n))
            .unwrap();
        assert!(!is_direct(&b.pages), "the description is left buffered");
        assert_eq!(
            b.pages.metadata().unwrap().len(),
            file_len(2 * n as u64).unwrap()
        );
        let mut back = vec![0u8; (2 * n + 1) * PAGE];
        assert_eq!(pages_of(&b, BlockIndex(0), &mut back), 2 * n);
        assert_eq!(&back[..PAGE], &aligned.as_ref()[..PAGE]);
        assert_eq!(&back[PAGE..n * PAGE], &aligned.as_ref()[..(n - 1) * PAGE]);
        assert_eq!(&back[n * PAGE..2 * n * PAGE], &unaligned[1..]);
        let mut ents = vec![0u8; 2 * n * ENTRY];
        b.read_entries(BlockIndex(0), &mut ents).unwrap();
        assert_eq!(ents, e(2 * n), "the entries as `after` left them");
        // Cut: the pages past the end go.
        b.truncate(GROUP + 1).unwrap();
        assert_eq!(
            b.pages.metadata().unwrap().len(),
            file_len(GROUP + 1).unwrap()
        );
        assert_eq!(
            pages_of(&b, BlockIndex(GROUP - 4), &mut back[..10 * PAGE]),
            5
        );
    }

    /// Large reads come in one `O_DIRECT` request with the header pages
    /// of the groups they enter at the start, and see entries and pages
    /// written buffered; a read starting inside a group gets its first
    /// entries apart; a short file ends the count.
    #[test]
    fn large_reads_take_header_pages_with_the_pages() {
        let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let b = scratch_blocks(dir.path());
        let n = 2 * GROUP as usize + 10;
        let data: Vec<u8> = (0..n * PAGE).map(|i| (i % 247) as u8).collect();
        let ents: Vec<u8> = (0..n * ENTRY).map(|i| (i % 239) as u8 | 1).collect();
        // Written in small runs: buffered, header pages dirty in the cache.
        for k in (0..n).step_by(8) {
            let c = 8.min(n - k);
            let e = &ents[k * ENTRY..(k + c) * ENTRY];
            b.write_run(BlockIndex(k as u64), e, &data[k * PAGE..(k + c) * PAGE], e)
                .unwrap();
        }
        for first in [0usize, GROUP as usize, 5, GROUP as usize - 3] {
            let m = n - first + 4;
            let mut pages = SlotBuf::new(m * PAGE);
            let mut e = vec![0xeeu8; m * ENTRY];
            let before = storage_reads();
            let have = b
                .read_run(BlockIndex(first as u64), &mut e, pages.as_mut())
                .unwrap();
            assert_eq!(have, n - first, "from {first}: short at the end");
            assert!(
                storage_reads() > before,
                "from {first}: past the page cache"
            );
            assert_eq!(
                &pages.as_ref()[..(n - first) * PAGE],
                &data[first * PAGE..],
                "pages from {first}"
            );
            assert_eq!(
                &e[..(n - first) * ENTRY],
                &ents[first * ENTRY..],
                "entries from {first}"
            );
            assert!(
                e[(n - first) * ENTRY..].iter().all(|x| *x == 0),
                "entries past the end read as empty"
            );
            assert!(!is_direct(&b.pages), "the description is left buffered");
        }
    }

    /// A single page comes from the page cache when it is there (nothing
    /// read from storage), else with the rest of its aligned cluster in
    /// one read, so that its neighbours then come from the cache; a
    /// cluster cut by the end of the file, and a page past it, as well.
    #[test]
    fn single_pages_read_their_cluster_when_cold() {
        use nix::fcntl::{PosixFadviseAdvice, posix_fadvise};
        let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let b = scratch_blocks(dir.path());
        let c = CLUSTER as usize;
        let n = 2 * c + 3;
        let data: Vec<u8> = (0..n * PAGE).map(|i| (i % 241) as u8).collect();
        let e = marked(n, 4);
        b.write_run(BlockIndex(0), &e, &data, &e).unwrap();
        b.sync_data().unwrap();
        let evict =
            || posix_fadvise(&b.pages, 0, 0, PosixFadviseAdvice::POSIX_FADV_DONTNEED).unwrap();
        let page = |i: usize| &data[i * PAGE..(i + 1) * PAGE];
        let mut one = SlotBuf::new(PAGE);
        let read = |i: usize, one: &mut SlotBuf| {
            let before = storage_reads();
            let got = pages_of(&b, BlockIndex(i as u64), one.as_mut());
            (got, storage_reads() - before)
        };
        evict();
        let (got, cold) = read(c + 1, &mut one);
        assert_eq!(got, 1);
        assert_eq!(one.as_ref(), page(c + 1));
        assert!(cold >= (c * PAGE) as u64, "the cluster read: {cold} bytes");
        for i in [c, 2 * c - 1] {
            assert_eq!(read(i, &mut one), (1, 0), "block {i} from the cache");
            assert_eq!(one.as_ref(), page(i));
        }
        let (got, _) = read(2 * c + 2, &mut one);
        assert_eq!(got, 1, "the last page, its cluster cut by the end");
        assert_eq!(one.as_ref(), page(2 * c + 2));
        assert_eq!(read(2 * c, &mut one), (1, 0), "its cluster came with it");
        assert_eq!(read(n, &mut one).0, 0, "past the end");
        assert_eq!(read(n + c, &mut one).0, 0, "a cluster past the end");
    }

    #[test]
    fn mismatched_entries_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let b = scratch_blocks(dir.path());
        let p = vec![0u8; 2 * PAGE];
        assert!(
            b.write_run(BlockIndex(0), &marked(1, 1), &p, &marked(2, 1))
                .is_err()
        );
        assert_eq!(b.pages.metadata().unwrap().len(), 0, "nothing written");
    }
}
