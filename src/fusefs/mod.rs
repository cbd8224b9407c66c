//! The FUSE adapter: decodes kernel requests, calls the workspace (or the
//! control file), replies. Never SQL, never crypto.

pub mod attr;
pub mod ctl;
pub mod stats;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use fuser::{
    AccessFlags, BsdFileFlags, Errno, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, InitFlags, IoctlFlags, KernelConfig, LockOwner, Notifier, OpenAccMode, OpenFlags,
    RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty,
    ReplyEntry, ReplyIoctl, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow,
    WriteFlags,
};

use crate::error::{Error, ErrorKind};
use crate::format::attrs::Kind;
use crate::ids::{DirPos, InodeId};
use crate::vault::workspace::{
    Caller, Change, NewNode, Node, RenameMode, SetAttr, Workspace, XattrMode,
};

use attr::{CTL_DIR, CTL_FILE, INO_OFFSET, ROOT, to_attr, virtual_attr, walltime};
use ctl::CtlHandle;
use stats::{OpStats, Req, Timer};

/// Attribute and entry cache time of store inodes. Changes made through
/// this mount update the kernel's cache as they happen. Changes made by
/// other mounts reach it through the change feed, polled every 250 ms
/// ([`poll_changes`]: changed attributes, pages and names are
/// invalidated); `open` asks the feed about the file and drops what the
/// kernel holds of it if another mount changed it (close-to-open), and a
/// lost circle is invalidated by the same poll. Only
/// a mount that misses the feed for longer than it is kept (10 s) may see a
/// stat up to this old.
const TTL: Duration = Duration::from_secs(30);
/// Cache time of the control file: none, so per-handle control responses
/// show at once.
const VTTL: Duration = Duration::ZERO;
/// Cache time of a virtual node's attributes. The root and `.circlefs`
/// never change but for the circle list, whose changes invalidate the root
/// explicitly ([`invalidate_membership`]); every path walk from `/` needs the
/// root's mode, so it is cached. The control file's are not.
fn virtual_ttl(ino: INodeNo) -> Duration {
    if ino.0 == CTL_FILE { VTTL } else { TTL }
}
/// Entries looked at per READDIRPLUS request (the reply buffer bounds it too).
const READDIRPLUS_BATCH: usize = 256;
/// Name of the virtual directory at the top of the mount.
pub const CTL_DIR_NAME: &str = ".circlefs";
/// Name of the control file inside it.
pub const CTL_FILE_NAME: &str = "control";

/// Directory entries: inode, type, name.
type Listing = Vec<(u64, FileType, Vec<u8>)>;

/// One entry of a READDIR(PLUS) reply: inode, the position after it, type,
/// name and (READDIRPLUS) its attributes with their cache time.
struct PageEntry {
    ino: u64,
    next: u64,
    kind: FileType,
    name: Vec<u8>,
    attr: Option<(Duration, fuser::FileAttr)>,
}

enum Handle {
    File { ino: InodeId, append: bool },
    Ctl(CtlHandle),
}

/// The mounted filesystem.
pub struct CircleFs {
    ws: Arc<Workspace>,
    handles: Mutex<HashMap<u64, Handle>>,
    next_fh: AtomicU64,
    /// Last control responses of this mount's account.
    last: Mutex<Vec<u8>>,
    owner: (u32, u32),
    started: SystemTime,
    notifier: Arc<OnceLock<Notifier>>,
    /// Request timing (`-o opstats=FILE`) and where to write it at unmount.
    stats: Option<(OpStats, std::path::PathBuf)>,
    /// The kernel can do without OPENDIR (told so at the first one).
    no_opendir: bool,
    /// Ask the kernel for FUSE over io_uring in INIT.
    uring: bool,
}

fn errno(e: &Error) -> Errno {
    if e.kind == ErrorKind::Integrity {
        log::error!("{e}");
    } else {
        log::debug!("{e}");
    }
    Errno::from_i32(e.errno())
}

fn store_ino(ino: INodeNo) -> Option<InodeId> {
    (ino.0 >= INO_OFFSET).then(|| InodeId((ino.0 - INO_OFFSET) as i64))
}

fn fuse_ino(i: InodeId) -> u64 {
    i.0 as u64 + INO_OFFSET
}

fn caller(req: &Request) -> Caller {
    Caller {
        uid: req.uid(),
        gid: req.gid(),
    }
}

fn time_of(t: TimeOrNow) -> crate::format::attrs::Time {
    match t {
        TimeOrNow::Now => crate::format::attrs::Time::now(),
        TimeOrNow::SpecificTime(s) => walltime(s),
    }
}

impl CircleFs {
    /// A filesystem over `ws`, owned by the mounting uid/gid.
    pub fn new(ws: Arc<Workspace>) -> CircleFs {
        CircleFs {
            ws,
            handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            last: Mutex::new(Vec::new()),
            owner: (
                nix::unistd::geteuid().as_raw(),
                nix::unistd::getegid().as_raw(),
            ),
            started: SystemTime::now(),
            notifier: Arc::new(OnceLock::new()),
            stats: None,
            no_opendir: false,
            uring: false,
        }
    }

    /// Ask for FUSE over io_uring (per-CPU request queues) at INIT; the
    /// kernel grants it when its `fuse.enable_uring` parameter is set.
    pub fn with_uring(mut self, on: bool) -> CircleFs {
        self.uring = on;
        self
    }

    /// Time every request and write the table to `path` at unmount.
    pub fn with_opstats(mut self, path: std::path::PathBuf) -> CircleFs {
        self.stats = Some((OpStats::default(), path));
        self
    }

    fn timed(&self, r: Req) -> Option<Timer<'_>> {
        self.stats.as_ref().and_then(|(s, _)| s.time(r))
    }

    /// The slot for the session's notifier (set once the session exists).
    pub fn notifier_slot(&self) -> Arc<OnceLock<Notifier>> {
        self.notifier.clone()
    }

    fn root_attr(&self) -> fuser::FileAttr {
        virtual_attr(
            ROOT,
            true,
            0o755,
            3,
            self.owner.0,
            self.owner.1,
            self.started,
        )
    }

    fn ctl_dir_attr(&self) -> fuser::FileAttr {
        virtual_attr(
            CTL_DIR,
            true,
            0o700,
            2,
            self.owner.0,
            self.owner.1,
            self.started,
        )
    }

    fn ctl_file_attr(&self) -> fuser::FileAttr {
        virtual_attr(
            CTL_FILE,
            false,
            0o600,
            1,
            self.owner.0,
            self.owner.1,
            self.started,
        )
    }

    fn add_handle(&self, h: Handle) -> FileHandle {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut m) = self.handles.lock() {
            m.insert(fh, h);
        }
        FileHandle(fh)
    }

    fn virtual_attr(&self, ino: INodeNo) -> Option<fuser::FileAttr> {
        match ino.0 {
            ROOT => Some(self.root_attr()),
            CTL_DIR => Some(self.ctl_dir_attr()),
            CTL_FILE => Some(self.ctl_file_attr()),
            _ => None,
        }
    }

    fn entry(reply: ReplyEntry, r: Result<Node, Error>) {
        match r {
            Ok(n) => reply.entry(&TTL, &to_attr(&n), Generation(0)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    /// Membership may have changed: refresh and drop the kernel's view of the root.
    fn membership_changed(&self) {
        if let Err(e) = self.ws.refresh(true) {
            log::warn!("refresh after a control command failed: {e}");
        }
        invalidate_membership(&self.ws, &self.notifier);
    }

    fn create_in(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        what: NewNode,
    ) -> Result<Node, Error> {
        let Some(p) = store_ino(parent) else {
            return Err(Error::new(
                ErrorKind::NotPermitted,
                "the top level holds circles only; use circle create",
            ));
        };
        self.ws
            .create_node(p, name.as_bytes(), mode, what, caller(req))
    }
}

impl Filesystem for CircleFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let _ = config.set_max_write(1 << 20);
        let _ = config.set_max_readahead(1 << 20);
        // Always READDIRPLUS (a listing is nearly always followed by stats:
        // ls -l, find, du, git status), and lookups in one directory in
        // parallel (the workspace locks itself).
        // HANDLE_KILLPRIV_V2: writes clear set-ID bits here (flagged per
        // write), so the kernel marks the superblock NOSEC and stops asking
        // for security.capability before every write (one FUSE round trip
        // per write otherwise); truncate and chown still clear them in the
        // kernel through setattr.
        self.no_opendir = config
            .capabilities()
            .contains(InitFlags::FUSE_NO_OPENDIR_SUPPORT);
        let _ = config.add_capabilities(
            InitFlags::FUSE_DO_READDIRPLUS
                | InitFlags::FUSE_PARALLEL_DIROPS
                | InitFlags::FUSE_HANDLE_KILLPRIV_V2,
        );
        if self.uring
            && config
                .add_capabilities(InitFlags::FUSE_OVER_IO_URING)
                .is_err()
        {
            log::info!("FUSE over io_uring not offered by the kernel (fuse.enable_uring)");
        }
        Ok(())
    }

    fn destroy(&mut self) {
        if let Some((s, path)) = &self.stats
            && let Err(e) = std::fs::write(path, s.table() + "\n" + &self.ws.cache_summary())
        {
            log::error!("opstats {}: {e}", path.display());
        }
        if let Err(e) = self.ws.shutdown() {
            log::error!("shutdown: {e}");
        }
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let _t = self.timed(Req::Lookup);
        match parent.0 {
            ROOT => {
                if name.as_bytes() == CTL_DIR_NAME.as_bytes() {
                    return reply.entry(&TTL, &self.ctl_dir_attr(), Generation(0));
                }
                let found = self.ws.circles().map(|cs| {
                    cs.into_iter()
                        .find(|c| c.name.0.as_bytes() == name.as_bytes())
                });
                match found {
                    Ok(Some(c)) => Self::entry(reply, self.ws.getattr(c.root)),
                    Ok(None) => reply.error(Errno::ENOENT),
                    Err(e) => reply.error(errno(&e)),
                }
            }
            CTL_DIR => {
                if name.as_bytes() == CTL_FILE_NAME.as_bytes() {
                    reply.entry(&VTTL, &self.ctl_file_attr(), Generation(0));
                } else {
                    reply.error(Errno::ENOENT);
                }
            }
            CTL_FILE => reply.error(Errno::ENOTDIR),
            _ => match store_ino(parent) {
                Some(p) => match self.ws.lookup(p, name.as_bytes()) {
                    // Cache the absence too (git and compilers probe many
                    // absent names); another mount adding the name
                    // invalidates it through the change feed.
                    Err(e) if e.kind == ErrorKind::NotFound => reply.entry(
                        &TTL,
                        &virtual_attr(0, false, 0, 0, 0, 0, self.started),
                        Generation(0),
                    ),
                    r => Self::entry(reply, r),
                },
                None => reply.error(Errno::ENOENT),
            },
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let _t = self.timed(Req::Getattr);
        if let Some(a) = self.virtual_attr(ino) {
            return reply.attr(&virtual_ttl(ino), &a);
        }
        match store_ino(ino).map(|i| self.ws.getattr(i)) {
            Some(Ok(n)) => reply.attr(&TTL, &to_attr(&n)),
            Some(Err(e)) => reply.error(errno(&e)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let _t = self.timed(Req::Setattr);
        if ino.0 == CTL_FILE {
            // `echo ... > control` truncates first: accepted, nothing to change.
            return reply.attr(&VTTL, &self.ctl_file_attr());
        }
        let Some(i) = store_ino(ino) else {
            return reply.error(Errno::EPERM);
        };
        let s = SetAttr {
            mode,
            uid,
            gid,
            size,
            atime: atime.map(time_of),
            mtime: mtime.map(time_of),
            ctime: ctime.map(walltime),
        };
        match self.ws.setattr(i, &s, caller(req)) {
            Ok(n) => reply.attr(&TTL, &to_attr(&n)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let _t = self.timed(Req::Readlink);
        match store_ino(ino).map(|i| self.ws.readlink(i)) {
            Some(Ok(t)) => reply.data(&t),
            Some(Err(e)) => reply.error(errno(&e)),
            None => reply.error(Errno::EINVAL),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let _t = self.timed(Req::Mknod);
        let what = if mode & libc::S_IFMT == libc::S_IFREG || mode & libc::S_IFMT == 0 {
            NewNode::File
        } else {
            NewNode::Special(rdev)
        };
        let mode = (mode & libc::S_IFMT) | (mode & 0o7777 & !umask);
        Self::entry(reply, self.create_in(req, parent, name, mode, what));
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let _t = self.timed(Req::Mkdir);
        Self::entry(
            reply,
            self.create_in(req, parent, name, mode & 0o7777 & !umask, NewNode::Dir),
        );
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let _t = self.timed(Req::Unlink);
        empty(
            reply,
            store_ino(parent).map(|p| self.ws.unlink(p, name.as_bytes(), false)),
            Errno::EPERM,
        )
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let _t = self.timed(Req::Rmdir);
        empty(
            reply,
            store_ino(parent).map(|p| self.ws.unlink(p, name.as_bytes(), true)),
            Errno::EPERM,
        )
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let _t = self.timed(Req::Symlink);
        let t = target.as_os_str().as_bytes().to_vec();
        Self::entry(
            reply,
            self.create_in(req, parent, link_name, 0o777, NewNode::Symlink(t)),
        );
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let _t = self.timed(Req::Rename);
        let (Some(p), Some(np)) = (store_ino(parent), store_ino(newparent)) else {
            return reply.error(Errno::EPERM);
        };
        let mode = if flags.contains(RenameFlags::RENAME_EXCHANGE) {
            RenameMode::Exchange
        } else if flags.contains(RenameFlags::RENAME_NOREPLACE) {
            RenameMode::NoReplace
        } else if flags.is_empty() {
            RenameMode::Replace
        } else {
            return reply.error(Errno::EINVAL);
        };
        match self
            .ws
            .rename(p, name.as_bytes(), np, newname.as_bytes(), mode)
        {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let _t = self.timed(Req::Link);
        match (store_ino(ino), store_ino(newparent)) {
            (Some(i), Some(np)) => Self::entry(reply, self.ws.link(i, np, newname.as_bytes())),
            _ => reply.error(Errno::EPERM),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let _t = self.timed(Req::Open);
        if ino.0 == CTL_FILE {
            let fh = self.add_handle(Handle::Ctl(CtlHandle::default()));
            return reply.opened(fh, FopenFlags::FOPEN_DIRECT_IO);
        }
        let Some(i) = store_ino(ino) else {
            return reply.error(Errno::EISDIR);
        };
        let write = flags.acc_mode() != OpenAccMode::O_RDONLY;
        let trunc = flags.0 & libc::O_TRUNC != 0;
        match self.ws.open(i, write, trunc) {
            Ok(()) => {
                let fh = self.add_handle(Handle::File {
                    ino: i,
                    append: flags.0 & libc::O_APPEND != 0,
                });
                // Close-to-open: if another mount changed the file since
                // the change feed was last read, drop the kernel's
                // attributes and pages of it; otherwise keep the pages (the
                // feed's poll drops them when another mount changes it).
                let mut flags = match self.ws.changed_elsewhere(i) {
                    Ok(false) => FopenFlags::FOPEN_KEEP_CACHE,
                    _ => {
                        if let Some(n) = self.notifier.get() {
                            let _ = n.inval_inode(ino, 0, 0);
                        }
                        FopenFlags::empty()
                    }
                };
                // Closing a read-only descriptor has nothing to save (a
                // writer's close or fsync saves its own writes; locks are
                // the kernel's): no FLUSH round trip per close.
                if !write {
                    flags |= FopenFlags::FOPEN_NOFLUSH;
                }
                reply.opened(fh, flags);
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let _t = self.timed(Req::Read);
        if ino.0 == CTL_FILE {
            let Ok(mut hs) = self.handles.lock() else {
                return reply.error(Errno::EIO);
            };
            let Some(Handle::Ctl(h)) = hs.get_mut(&fh.0) else {
                return reply.error(Errno::EBADF);
            };
            if !h.wrote && !h.snap {
                h.out = self.last.lock().map(|l| l.clone()).unwrap_or_default();
                h.snap = true;
            }
            let start = (offset as usize).min(h.out.len());
            let end = start.saturating_add(size as usize).min(h.out.len());
            return reply.data(&h.out[start..end]);
        }
        match store_ino(ino).map(|i| self.ws.read(i, offset, size)) {
            Some(Ok(d)) => reply.data(&d),
            Some(Err(e)) => reply.error(errno(&e)),
            None => reply.error(Errno::EISDIR),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let _t = self.timed(Req::Write);
        if ino.0 == CTL_FILE {
            let produced = {
                let Ok(mut hs) = self.handles.lock() else {
                    return reply.error(Errno::EIO);
                };
                let Some(Handle::Ctl(h)) = hs.get_mut(&fh.0) else {
                    return reply.error(Errno::EBADF);
                };
                h.write(&self.ws, data)
            };
            self.control_done(produced);
            return reply.written(data.len() as u32);
        }
        let append = match self.handles.lock() {
            Ok(hs) => matches!(hs.get(&fh.0), Some(Handle::File { append: true, .. })),
            Err(_) => false,
        };
        let Some(i) = store_ino(ino) else {
            return reply.error(Errno::EISDIR);
        };
        // FUSE_HANDLE_KILLPRIV_V2: the kernel leaves clearing set-ID bits
        // on write to us and flags the writes that must.
        let kill = write_flags.contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID);
        let r = self.ws.write_at(i, (!append).then_some(offset), data, kill);
        match r {
            Ok(n) => reply.written(n as u32),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        let _t = self.timed(Req::Flush);
        if ino.0 == CTL_FILE {
            let produced = match self.handles.lock() {
                Ok(mut hs) => match hs.get_mut(&fh.0) {
                    Some(Handle::Ctl(h)) => h.finish(&self.ws),
                    _ => (Vec::new(), false),
                },
                Err(_) => (Vec::new(), false),
            };
            self.control_done(produced);
            return reply.ok();
        }
        match store_ino(ino).map(|i| self.ws.flush(i)) {
            Some(Err(e)) => reply.error(errno(&e)),
            _ => reply.ok(),
        }
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let _t = self.timed(Req::Release);
        let h = self.handles.lock().ok().and_then(|mut m| m.remove(&fh.0));
        match h {
            Some(Handle::Ctl(mut c)) => {
                let produced = c.finish(&self.ws);
                self.control_done(produced);
                reply.ok()
            }
            Some(Handle::File { ino: i, .. }) => match self.ws.release(i) {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno(&e)),
            },
            _ => {
                let _ = ino;
                reply.ok()
            }
        }
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let _t = self.timed(Req::Fsync);
        match store_ino(ino).map(|i| self.ws.fsync(i)) {
            Some(Err(e)) => reply.error(errno(&e)),
            _ => reply.ok(),
        }
    }

    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let _t = self.timed(Req::Opendir);
        // A listing keeps no state between READDIRPLUS requests (positions
        // survive changes: vault::workspace::dirpos), so there is nothing
        // to open. A kernel that can do without OPENDIR is told so by
        // ENOSYS and sends no OPENDIR or RELEASEDIR again, for any
        // directory: two round trips less per opendir(3). Either way the
        // kernel keeps listings in its cache across opens and drops one
        // when the directory's mtime changes (every change through this
        // mount; other mounts' through the change feed's invalidations;
        // the root's with the membership).
        if self.no_opendir {
            return reply.error(Errno::ENOSYS);
        }
        let flags = FopenFlags::FOPEN_CACHE_DIR | FopenFlags::FOPEN_KEEP_CACHE;
        reply.opened(FileHandle(0), flags);
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let _t = self.timed(Req::Readdir);
        match self.page(ino, offset, false) {
            Ok(page) => {
                for e in page {
                    if reply.add(INodeNo(e.ino), e.next, e.kind, OsStr::from_bytes(&e.name)) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(e),
        }
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let _t = self.timed(Req::Readdirplus);
        // Entries with their attributes (ls -l, find, du): the kernel caches
        // both, so no LOOKUP/GETATTR follows per entry. Each page is read
        // in one transaction, so the kernel never caches a name that was
        // renamed or deleted before it.
        match self.page(ino, offset, true) {
            Ok(page) => {
                for e in page {
                    let Some((ttl, attr)) = e.attr else { continue };
                    if reply.add(
                        INodeNo(e.ino),
                        e.next,
                        OsStr::from_bytes(&e.name),
                        &ttl,
                        &attr,
                        Generation(0),
                    ) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(e),
        }
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        let _t = self.timed(Req::Releasedir);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let _t = self.timed(Req::Fsyncdir);
        // Directory changes are committed SQLite transactions; make them durable.
        match self.ws.sync() {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let _t = self.timed(Req::Statfs);
        match self.ws.statfs() {
            Ok(s) => reply.statfs(
                s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, 255, s.bsize,
            ),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let _t = self.timed(Req::Setxattr);
        let mode = if flags & libc::XATTR_CREATE != 0 {
            XattrMode::Create
        } else if flags & libc::XATTR_REPLACE != 0 {
            XattrMode::Replace
        } else {
            XattrMode::Any
        };
        empty(
            reply,
            store_ino(ino).map(|i| self.ws.setxattr(i, name.as_bytes(), value, mode)),
            Errno::from_i32(libc::ENOTSUP),
        )
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let _t = self.timed(Req::Getxattr);
        match store_ino(ino).map(|i| self.ws.getxattr(i, name.as_bytes())) {
            Some(Ok(v)) => xattr_reply(reply, &v, size),
            Some(Err(e)) => reply.error(errno(&e)),
            None if name.as_bytes().starts_with(b"user.") => {
                reply.error(Errno::from_i32(libc::ENODATA))
            }
            None => reply.error(Errno::from_i32(libc::ENOTSUP)),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let _t = self.timed(Req::Listxattr);
        match store_ino(ino).map(|i| self.ws.listxattr(i)) {
            Some(Ok(v)) => xattr_reply(reply, &v, size),
            Some(Err(e)) => reply.error(errno(&e)),
            None => xattr_reply(reply, &[], size),
        }
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let _t = self.timed(Req::Removexattr);
        empty(
            reply,
            store_ino(ino).map(|i| self.ws.removexattr(i, name.as_bytes())),
            Errno::from_i32(libc::ENOTSUP),
        )
    }

    /// No ioctl is supported: ENOTTY, as for any file without ioctls.
    /// (fuser's default logs a warning per call, and Python's `open` asks
    /// `isatty` of every file it opens.)
    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: ReplyIoctl,
    ) {
        let _t = self.timed(Req::Ioctl);
        reply.error(Errno::ENOTTY);
    }

    fn access(&self, _req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        let _t = self.timed(Req::Access);
        if self.virtual_attr(ino).is_some() {
            return reply.ok();
        }
        let Some(i) = store_ino(ino) else {
            return reply.error(Errno::ENOENT);
        };
        match self.ws.level_of(i) {
            Ok(l)
                if mask.contains(AccessFlags::W_OK)
                    && !l.permits(crate::level::TrustLevel::Write) =>
            {
                reply.error(Errno::EACCES)
            }
            Ok(_) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let _t = self.timed(Req::Create);
        let mode = libc::S_IFREG | (mode & 0o7777 & !umask);
        // Created and opened in one step (the new file's open state comes
        // from the create).
        let created = match store_ino(parent) {
            Some(p) => self.ws.create_open(p, name.as_bytes(), mode, caller(req)),
            None => self.create_in(req, parent, name, mode, NewNode::File),
        };
        let r = match created {
            // Another mount created it between the kernel's lookup and now:
            // without O_EXCL that is a plain open of the existing file.
            Err(e) if e.kind == ErrorKind::Conflict && flags & libc::O_EXCL == 0 => {
                store_ino(parent)
                    .ok_or(e)
                    .and_then(|p| self.ws.lookup(p, name.as_bytes()))
                    .and_then(|n| {
                        if n.attrs.kind == Kind::Dir {
                            return Err(Error::new(ErrorKind::IsDir, "is a directory"));
                        }
                        self.ws.open(n.ino, true, flags & libc::O_TRUNC != 0)?;
                        self.ws.getattr(n.ino)
                    })
            }
            other => other,
        };
        match r {
            Ok(n) => {
                let fh = self.add_handle(Handle::File {
                    ino: n.ino,
                    append: flags & libc::O_APPEND != 0,
                });
                reply.created(&TTL, &to_attr(&n), Generation(0), fh, FopenFlags::empty());
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let _t = self.timed(Req::Fallocate);
        empty(
            reply,
            store_ino(ino).map(|i| self.ws.fallocate(i, offset, length, mode)),
            Errno::EOPNOTSUPP,
        )
    }
}

fn kind_mode(k: Kind) -> u32 {
    match k {
        Kind::Special => libc::S_IFIFO,
        _ => 0,
    }
}

impl CircleFs {
    /// The entries of a directory, with `.` and `..`.
    fn listing(&self, ino: INodeNo) -> Result<Listing, Error> {
        match ino.0 {
            ROOT => self.ws.circles().map(|cs| {
                let mut v = vec![
                    (ROOT, FileType::Directory, b".".to_vec()),
                    (ROOT, FileType::Directory, b"..".to_vec()),
                    (
                        CTL_DIR,
                        FileType::Directory,
                        CTL_DIR_NAME.as_bytes().to_vec(),
                    ),
                ];
                v.extend(
                    cs.into_iter()
                        .map(|c| (fuse_ino(c.root), FileType::Directory, c.name.0.into_bytes())),
                );
                v
            }),
            CTL_DIR => Ok(vec![
                (CTL_DIR, FileType::Directory, b".".to_vec()),
                (ROOT, FileType::Directory, b"..".to_vec()),
                (
                    CTL_FILE,
                    FileType::RegularFile,
                    CTL_FILE_NAME.as_bytes().to_vec(),
                ),
            ]),
            _ => Err(Error::new(ErrorKind::NotDir, "not a directory")),
        }
    }

    /// The entries of directory `ino` after position `offset`, with their
    /// attributes when `plus`. The root and the control directory are
    /// small and listed whole (positions are indexes); a store directory
    /// is listed a page at a time from the position (see
    /// [`Workspace::list_page`]).
    fn page(&self, ino: INodeNo, offset: u64, plus: bool) -> Result<Vec<PageEntry>, Errno> {
        let Some(dir) = store_ino(ino) else {
            let v = self.listing(ino).map_err(|e| errno(&e))?;
            let skip = usize::try_from(offset).unwrap_or(usize::MAX);
            return Ok(v
                .into_iter()
                .enumerate()
                .skip(skip)
                .filter_map(|(k, (i, kind, name))| {
                    let attr = if plus {
                        Some(
                            match (self.virtual_attr(INodeNo(i)), store_ino(INodeNo(i))) {
                                (Some(a), _) => (virtual_ttl(INodeNo(i)), a),
                                // A circle's root; left out if it cannot be read.
                                (None, Some(s)) => (TTL, to_attr(&self.ws.getattr(s).ok()?)),
                                (None, None) => return None,
                            },
                        )
                    } else {
                        None
                    };
                    Some(PageEntry {
                        ino: i,
                        next: k as u64 + 1,
                        kind,
                        name,
                        attr,
                    })
                })
                .collect());
        };
        let mut out = Vec::new();
        if offset < 2 {
            let parent = self
                .ws
                .parent_of(dir)
                .map_err(|e| errno(&e))?
                .map(fuse_ino)
                .unwrap_or(ROOT);
            for (k, (i, name)) in [(ino.0, "."), (parent, "..")]
                .into_iter()
                .enumerate()
                .skip(offset as usize)
            {
                // The kernel takes no attributes from the dot entries.
                let mut attr = self.root_attr();
                attr.ino = INodeNo(i);
                out.push(PageEntry {
                    ino: i,
                    next: k as u64 + 1,
                    kind: FileType::Directory,
                    name: name.as_bytes().to_vec(),
                    attr: plus.then_some((Duration::ZERO, attr)),
                });
            }
        }
        let page = self
            .ws
            .list_page(dir, DirPos(offset), READDIRPLUS_BATCH, plus)
            .map_err(|e| errno(&e))?;
        out.extend(page.into_iter().map(|l| PageEntry {
            ino: fuse_ino(l.entry.ino),
            next: l.next.0,
            kind: attr::file_type(l.entry.kind, kind_mode(l.entry.kind)),
            name: l.entry.name,
            attr: l.node.map(|n| (TTL, to_attr(&n))),
        }));
        Ok(out)
    }

    fn control_done(&self, produced: (Vec<u8>, bool)) {
        let (out, mutated) = produced;
        if !out.is_empty()
            && let Ok(mut l) = self.last.lock()
        {
            *l = out;
        }
        if mutated {
            self.membership_changed();
        }
    }
}

/// Poll for changes made by other processes; invalidate the root when the
/// circle set changed. Called periodically by the daemon.
pub fn poll_changes(ws: &Workspace, notifier: &OnceLock<Notifier>) {
    // Written content still pending in open files is stored (it must not
    // wait in the daemon alone, nor keep its inode lock, for long).
    if let Err(e) = ws.settle_pending() {
        log::warn!("storing pending writes failed: {e}");
    }
    match ws.refresh(false) {
        Ok(true) => invalidate_membership(ws, notifier),
        Ok(false) => {}
        Err(e) => log::warn!("change poll failed: {e}"),
    }
    match ws.take_changes() {
        Ok(changes) => invalidate_changes(&changes, notifier),
        Err(e) => log::warn!("change feed poll failed: {e}"),
    }
}

/// Drop what the kernel caches of inodes and names other mounts changed:
/// attributes and pages (the next stat or read asks the daemon; a
/// directory's cached listing goes with its mtime) and added or removed
/// names, positive or negative (the next lookup asks).
fn invalidate_changes(changes: &[Change], notifier: &OnceLock<Notifier>) {
    let Some(n) = notifier.get() else { return };
    for c in changes {
        // Errors: the kernel no longer caches the inode or name (ENOENT).
        let _ = match c {
            Change::Attrs(i) => n.inval_inode(INodeNo(fuse_ino(*i)), 0, 0),
            Change::Name { parent, name, .. } => {
                n.inval_entry(INodeNo(fuse_ino(*parent)), OsStr::from_bytes(name))
            }
        };
    }
}

/// Drop what the kernel caches of the circle list and of circles this mount
/// lost: the root's attributes, the lost circles' entries, and the
/// attributes and pages of their loaded files (the next access reaches the
/// daemon and fails).
fn invalidate_membership(ws: &Workspace, notifier: &OnceLock<Notifier>) {
    let Some(n) = notifier.get() else { return };
    let _ = n.inval_inode(INodeNo(ROOT), 0, 0);
    for ev in ws.take_evicted() {
        let _ = n.inval_entry(INodeNo(ROOT), OsStr::new(&ev.name.0));
        for i in ev.root.into_iter().chain(ev.files) {
            let _ = n.inval_inode(INodeNo(fuse_ino(i)), 0, 0);
        }
    }
}

/// Reply with an xattr value or name list: size probe, data, or ERANGE.
fn xattr_reply(reply: ReplyXattr, v: &[u8], size: u32) {
    if size == 0 {
        reply.size(v.len() as u32);
    } else if v.len() > size as usize {
        reply.error(Errno::from_i32(libc::ERANGE));
    } else {
        reply.data(v);
    }
}

/// Reply to an operation on a store inode: Ok, its errno, or `virt` when the
/// inode is virtual (`None`).
fn empty(reply: ReplyEmpty, r: Option<Result<(), Error>>, virt: Errno) {
    match r {
        Some(Ok(())) => reply.ok(),
        Some(Err(e)) => reply.error(errno(&e)),
        None => reply.error(virt),
    }
}
