//! Names and the inode tree: lookup, readdir, create, unlink, rename, link, setattr.

use std::sync::Arc;

use crate::crypto::random_bytes;
use crate::error::{Error, ErrorKind, Result, err};
use crate::format::attrs::{Attrs, Extents, Kind, Time};
use crate::format::{aad, name};
use crate::ids::{ContentId, DirPos, InodeId, KeyGen};
use crate::store::Tx;
use crate::store::files::{DirentRow, InodeRow};

use super::{Caller, CircleAccess, Node, Op, Workspace, dirpos};

/// One directory entry as listed.
#[derive(Clone, Debug)]
pub struct DirEntry {
    /// Name bytes.
    pub name: Vec<u8>,
    /// Target inode.
    pub ino: InodeId,
    /// Kind of the target.
    pub kind: Kind,
}

/// One entry of a page of a listing ([`Workspace::list_page`]).
#[derive(Clone, Debug)]
pub struct Listed {
    /// The entry.
    pub entry: DirEntry,
    /// The position after it (where the next page starts).
    pub next: DirPos,
    /// Its node, when asked for.
    pub node: Option<Node>,
}

/// Test hook: a pause (µs) between the store read of a listing or lookup
/// and its look at the open files, which widens the window in which a
/// file can close between the two (tests/write_behind.rs).
#[cfg(feature = "test-hooks")]
pub static LISTING_PAUSE_US: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// rename(2) flavours.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RenameMode {
    /// Replace the target if present.
    Replace,
    /// Fail with EEXIST if the target exists.
    NoReplace,
    /// Swap source and target atomically.
    Exchange,
}

/// Fields of a setattr call.
#[derive(Clone, Debug, Default)]
pub struct SetAttr {
    /// New permission bits (and setuid/setgid/sticky).
    pub mode: Option<u32>,
    /// New owner.
    pub uid: Option<u32>,
    /// New group.
    pub gid: Option<u32>,
    /// New size.
    pub size: Option<u64>,
    /// New access time.
    pub atime: Option<Time>,
    /// New modification time.
    pub mtime: Option<Time>,
    /// New change time (explicit).
    pub ctime: Option<Time>,
}

/// What kind of node to create.
#[derive(Clone, Debug)]
pub enum NewNode {
    /// Regular file.
    File,
    /// Directory.
    Dir,
    /// Symlink with target.
    Symlink(Vec<u8>),
    /// FIFO, socket or device.
    Special(u32),
}

impl Workspace {
    /// Find `name` in directory `parent`: the entry and its row.
    fn find(
        &self,
        tx: &Tx<'_>,
        a: &CircleAccess,
        parent: InodeId,
        nm: &[u8],
    ) -> Result<Option<DirentRow>> {
        for (e, idx) in a.keys.name_indexes(parent, nm)? {
            if let Some(d) = tx.dirent_get(parent, &idx)? {
                if d.epoch != e {
                    continue;
                }
                let stored = self.open_name(a, &d)?;
                if stored != nm {
                    return err(
                        ErrorKind::Integrity,
                        "directory entry does not match its index",
                    );
                }
                return Ok(Some(d));
            }
        }
        Ok(None)
    }

    pub(super) fn open_name(&self, a: &CircleAccess, d: &DirentRow) -> Result<Vec<u8>> {
        let k = a.keys.epoch(d.epoch)?;
        let nm = k.name.open(
            &aad::dirent_name(a.row.id, d.parent, d.epoch),
            &d.name_ct,
            "file name",
        )?;
        name::check_file_name(&nm)
            .map_err(|_| Error::new(ErrorKind::Integrity, "stored file name fails validation"))?;
        Ok(nm)
    }

    fn new_dirent(
        &self,
        a: &CircleAccess,
        parent: InodeId,
        nm: &[u8],
        ino: InodeId,
    ) -> Result<DirentRow> {
        let k = a.keys.cur()?;
        let e = a.keys.current;
        let idx =
            crate::crypto::subkeys::name_index(&k.index, &aad::name_scope(a.row.id, parent), nm)?;
        Ok(DirentRow {
            parent,
            name_index: idx.to_vec(),
            epoch: e,
            name_ct: k.name.seal(&aad::dirent_name(a.row.id, parent, e), nm)?,
            ino,
        })
    }

    /// A directory's row, access and attributes; ENOTDIR otherwise.
    fn dir(&self, tx: &Tx<'_>, parent: InodeId) -> Result<(Arc<CircleAccess>, Attrs)> {
        let (row, a) = self.row(tx, parent)?;
        let attrs = a.keys.open_attrs(&row)?;
        if attrs.kind != Kind::Dir {
            return err(ErrorKind::NotDir, "not a directory");
        }
        Ok((a, attrs))
    }

    /// Look up `name` in `parent`.
    pub fn lookup(&self, parent: InodeId, nm: &[u8]) -> Result<Node> {
        name::check_file_name(nm)?;
        let store = self.vault.store();
        let (mut node, at) = store.read(|tx| {
            let (a, _) = self.dir(tx, parent)?;
            self.check(&a, Op::ReadFiles)?;
            let d = self
                .find(tx, &a, parent, nm)?
                .ok_or_else(|| Error::new(ErrorKind::NotFound, "no such file"))?;
            let node = self.node_tx(tx, d.ino, None, tx.data_version()?)?;
            Ok::<_, Error>((node, store.version_in(tx)?))
        })?;
        self.make_live(std::iter::once(&mut node), at)?;
        Ok(node)
    }

    /// Nodes read from the store in a transaction at version `at`, made
    /// what this mount holds now: an open file's live attributes (taken
    /// outside the transaction: an open file's lock is never taken while
    /// the store lock is held); and when this mount wrote anything since
    /// `at`, every other node read again, its open state first, as
    /// [`Workspace::getattr`] does. A file closed after the transaction
    /// stored what its state held (pending content, its size) through
    /// this connection and only then left the open files: its record as
    /// read may predate writes that have returned, and the kernel takes a
    /// stale size it is given over the one a write gave it (a read would
    /// come back short). Another mount's commits are not this mount's
    /// writes: their changes reach the kernel through the change feed.
    fn make_live<'a>(
        &self,
        nodes: impl Iterator<Item = &'a mut Node>,
        at: crate::store::StoreVersion,
    ) -> Result<()> {
        #[cfg(feature = "test-hooks")]
        {
            let us = LISTING_PAUSE_US.load(std::sync::atomic::Ordering::Relaxed);
            if us > 0 {
                std::thread::sleep(std::time::Duration::from_micros(us));
            }
        }
        let mut closed = Vec::new();
        for n in nodes {
            match self.open_attrs(n.ino)? {
                Some(live) => n.attrs = live,
                None => closed.push(n),
            }
        }
        if closed.is_empty() || self.vault.store().own_writes() == at.own_writes() {
            return Ok(());
        }
        for n in closed {
            match self.getattr(n.ino) {
                Ok(fresh) => *n = fresh,
                // Removed since: the listing's node stands for the entry
                // it had (the kernel drops it at its next lookup).
                Err(e) if e.kind == ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Parent directory of a directory (None for a circle root).
    pub fn parent_of(&self, dir: InodeId) -> Result<Option<InodeId>> {
        Ok(self.vault.store().read(|tx| tx.dir_parent(dir))?)
    }

    /// Every entry of a directory (names decrypted and validated).
    pub fn readdir(&self, dir: InodeId) -> Result<Vec<DirEntry>> {
        let mut out = Vec::new();
        let mut pos = DirPos(0);
        loop {
            let page = self.list_page(dir, pos, 4096, false)?;
            let Some(last) = page.last() else {
                return Ok(out);
            };
            pos = last.next;
            out.extend(page.into_iter().map(|l| l.entry));
        }
    }

    /// At most `limit` entries of `dir` after position `from` (see
    /// [`dirpos`](super::dirpos); a position that is no entry's starts at
    /// the first), in one transaction, each with the position after it
    /// and, with `nodes`, its node (an entry whose node fails to open is
    /// left out, logged). No state is kept between pages.
    pub fn list_page(
        &self,
        dir: InodeId,
        from: DirPos,
        limit: usize,
        nodes: bool,
    ) -> Result<Vec<Listed>> {
        let store = self.vault.store();
        let (mut out, at) = store.read(|tx| {
            let (a, _) = self.dir(tx, dir)?;
            self.check(&a, Op::ReadFiles)?;
            let epoch = a.row.epoch;
            let version = if nodes { tx.data_version()? } else { 0 };
            let seek = dirpos::decode(from, epoch);
            let key = seek.map(|s| s.key());
            let rows = tx.dirent_list_kinds(
                dir,
                key.as_ref().map(|k| &k[..]),
                (limit + dirpos::MAX_SKIP) as i64,
            )?;
            let at = dirpos::positions(
                rows.iter().map(|(d, _)| d.name_index.as_slice()),
                epoch,
                seek,
            );
            let mut out = Vec::new();
            for ((d, kind), next) in rows.iter().zip(at) {
                let Some(next) = next else { continue };
                if out.len() == limit {
                    break;
                }
                let kind = Kind::from_u8(*kind)
                    .ok_or_else(|| Error::new(ErrorKind::Integrity, "bad inode kind"))?;
                let name = self.open_name(&a, d)?;
                let node = if nodes {
                    match self.node_tx(tx, d.ino, None, version) {
                        Ok(n) => Some(n),
                        Err(e) => {
                            log::debug!("entry left out of a listing: {e}");
                            continue;
                        }
                    }
                } else {
                    None
                };
                out.push(Listed {
                    entry: DirEntry {
                        name,
                        ino: d.ino,
                        kind,
                    },
                    next,
                    node,
                });
            }
            Ok::<_, Error>((out, store.version_in(tx)?))
        })?;
        self.make_live(out.iter_mut().filter_map(|l| l.node.as_mut()), at)?;
        Ok(out)
    }

    /// Create a node in `parent`.
    pub fn create_node(
        &self,
        parent: InodeId,
        nm: &[u8],
        mode: u32,
        what: NewNode,
        caller: Caller,
    ) -> Result<Node> {
        self.create(parent, nm, mode, what, caller, false)
    }

    /// Create a regular file in `parent` and open it for writing (one open
    /// handle, to be closed by `release`), as creat(2) and open(O_CREAT)
    /// do: its open state starts from what the create wrote, so the open
    /// and the first write read neither its record nor its key back.
    pub fn create_open(
        &self,
        parent: InodeId,
        nm: &[u8],
        mode: u32,
        caller: Caller,
    ) -> Result<Node> {
        self.create(parent, nm, mode, NewNode::File, caller, true)
    }

    fn create(
        &self,
        parent: InodeId,
        nm: &[u8],
        mode: u32,
        what: NewNode,
        caller: Caller,
        open: bool,
    ) -> Result<Node> {
        name::check_file_name(nm)?;
        if let NewNode::Symlink(t) = &what
            && (t.is_empty() || t.len() > name::MAX_SYMLINK || t.contains(&0))
        {
            return err(ErrorKind::Invalid, "bad symlink target");
        }
        let (node, a, seq, first_key, version) = self.vault.store().write(|tx| {
            let (a, mut pattrs) = self.dir(tx, parent)?;
            self.check(&a, Op::WriteFiles)?;
            if self.find(tx, &a, parent, nm)?.is_some() {
                return err(ErrorKind::Conflict, "file exists");
            }
            let (kind, type_bits, target, rdev) = match &what {
                NewNode::File => (Kind::File, libc::S_IFREG, Vec::new(), 0),
                NewNode::Dir => (Kind::Dir, libc::S_IFDIR, Vec::new(), 0),
                NewNode::Symlink(t) => (Kind::Symlink, libc::S_IFLNK, t.clone(), 0),
                NewNode::Special(r) => {
                    let t = mode & libc::S_IFMT;
                    if ![libc::S_IFIFO, libc::S_IFSOCK, libc::S_IFCHR, libc::S_IFBLK].contains(&t) {
                        return err(ErrorKind::Invalid, "unsupported node type");
                    }
                    (Kind::Special, t, Vec::new(), *r)
                }
            };
            let mut perm = if kind == Kind::Symlink {
                0o777
            } else {
                mode & 0o7777
            };
            let mut gid = caller.gid;
            if pattrs.mode & libc::S_ISGID != 0 {
                gid = pattrs.gid;
                if kind == Kind::Dir {
                    perm |= libc::S_ISGID;
                }
            }
            let now = Time::now();
            let ino = tx.inode_next_id()?;
            // A regular file gets its first key generation in the same
            // transaction (no extra commit before its first write).
            let first_key = if kind == Kind::File {
                let g = KeyGen(1);
                let e = a.keys.current;
                let key = crate::crypto::Key32::random()?;
                let wrapped = a
                    .keys
                    .cur()?
                    .file_wrap
                    .seal(&aad::file_key(a.row.id, ino, g, e, e), key.expose())?;
                Some((g, e, key, wrapped))
            } else {
                None
            };
            let attrs = Attrs {
                kind,
                mode: type_bits | perm,
                uid: caller.uid,
                gid,
                rdev,
                size: target.len() as u64,
                atime: now,
                mtime: now,
                ctime: now,
                crtime: now,
                content: ContentId(random_bytes()?),
                keygen: first_key.as_ref().map_or(KeyGen(0), |k| k.0),
                extents: Extents::default(),
                target,
            };
            // `a` was read in this transaction: its epoch is current.
            let (e, sealed) = a.keys.seal_attrs(ino, &attrs)?;
            let seq = tx.inode_insert(ino, a.row.id, kind as u8, e, &sealed)?;
            let first_key = match first_key {
                Some((g, e, key, wrapped)) => {
                    tx.file_key_insert(&crate::store::files::FileKeyRow {
                        ino,
                        keygen: g,
                        epoch: e,
                        origin: e,
                        wrapped,
                    })?;
                    Some((g, e, key))
                }
                None => None,
            };
            tx.dirent_insert(&self.new_dirent(&a, parent, nm, ino)?)?;
            pattrs.mtime = now;
            pattrs.ctime = now;
            self.save_attrs(tx, &a, parent, &pattrs)?;
            let nlink = if kind == Kind::Dir { 2 } else { 1 };
            let version = self.vault.store().version_in(tx)?;
            Ok((Node { ino, attrs, nlink }, a, seq, first_key, version))
        })?;
        if let Some((g, e, key)) = first_key.filter(|_| open) {
            let fresh = super::content::Created {
                attrs: node.attrs.clone(),
                seq,
                version,
                keygen: g,
                origin: e,
            };
            self.adopt_created(node.ino, a, fresh, &key)?;
        }
        Ok(node)
    }

    /// Target of a symlink.
    pub fn readlink(&self, ino: InodeId) -> Result<Vec<u8>> {
        let n = self.getattr(ino)?;
        if n.attrs.kind != Kind::Symlink {
            return err(ErrorKind::Invalid, "not a symlink");
        }
        Ok(n.attrs.target)
    }

    /// Remove a name; the inode goes when its last name and open handle are gone.
    pub fn unlink(&self, parent: InodeId, nm: &[u8], dir: bool) -> Result<()> {
        name::check_file_name(nm)?;
        let gone = self.vault.store().write(|tx| {
            let (a, mut pattrs) = self.dir(tx, parent)?;
            self.check(&a, Op::WriteFiles)?;
            let d = self
                .find(tx, &a, parent, nm)?
                .ok_or_else(|| Error::new(ErrorKind::NotFound, "no such file"))?;
            let row = tx.inode_get(d.ino)?.ok_or_else(|| {
                Error::new(ErrorKind::Integrity, "entry points to a missing inode")
            })?;
            let is_dir = row.kind == Kind::Dir as u8;
            if dir && !is_dir {
                return err(ErrorKind::NotDir, "not a directory");
            }
            if !dir && is_dir {
                return err(ErrorKind::IsDir, "is a directory");
            }
            if is_dir && tx.dirent_any(d.ino)? {
                return err(ErrorKind::NotEmpty, "directory not empty");
            }
            tx.dirent_delete(parent, &d.name_index)?;
            let now = Time::now();
            pattrs.mtime = now;
            pattrs.ctime = now;
            self.save_attrs(tx, &a, parent, &pattrs)?;
            let remaining = tx.dirent_links(d.ino)?;
            if remaining == 0 && !self.is_open(d.ino)? {
                let deleted = tx.inode_delete(d.ino)?;
                return Ok::<_, Error>((d.ino, Some(deleted), true, a));
            }
            let touched = remaining > 0 && self.touch_ctime_tx(tx, &a, d.ino, &row, now)?.is_some();
            Ok((d.ino, None, touched, a))
        })?;
        let (ino, deleted, touched, a) = gone;
        if let Some(d) = deleted {
            self.vault.store().deleted(d)?;
        } else {
            if !touched {
                self.touch_ctime(&a, ino)?;
            }
            self.mark_unlinked(ino)?;
        }
        Ok(())
    }

    fn touch_ctime(&self, a: &CircleAccess, ino: InodeId) -> Result<()> {
        self.update_attrs(a, ino, |at| {
            at.ctime = Time::now();
            Ok(())
        })
    }

    /// Rename within one circle.
    pub fn rename(
        &self,
        parent: InodeId,
        nm: &[u8],
        newparent: InodeId,
        newname: &[u8],
        mode: RenameMode,
    ) -> Result<()> {
        name::check_file_name(nm)?;
        name::check_file_name(newname)?;
        let (a, moved, replaced) = self.vault.store().write(|tx| {
            let (a, mut pa) = self.dir(tx, parent)?;
            let (b, mut pb) = self.dir(tx, newparent)?;
            if a.row.id != b.row.id {
                return err(ErrorKind::CrossCircle, "rename across circles");
            }
            self.check(&a, Op::WriteFiles)?;
            let src = self
                .find(tx, &a, parent, nm)?
                .ok_or_else(|| Error::new(ErrorKind::NotFound, "no such file"))?;
            let dst = self.find(tx, &a, newparent, newname)?;
            let src_row = tx
                .inode_get(src.ino)?
                .ok_or_else(|| Error::new(ErrorKind::Integrity, "missing inode"))?;
            let src_dir = src_row.kind == Kind::Dir as u8;
            // A directory may not move below itself.
            if src_dir {
                let mut cur = Some(newparent);
                while let Some(c) = cur {
                    if c == src.ino {
                        return err(ErrorKind::Invalid, "cannot move a directory into itself");
                    }
                    cur = tx.dir_parent(c)?;
                }
            }
            if let Some(d) = &dst
                && d.ino == src.ino
            {
                return Ok((a.clone(), None, None));
            }
            let mut replaced = None;
            match (&dst, mode) {
                (Some(_), RenameMode::NoReplace) => {
                    return err(ErrorKind::Conflict, "target exists");
                }
                (None, RenameMode::Exchange) => {
                    return err(ErrorKind::NotFound, "exchange target does not exist");
                }
                (Some(d), RenameMode::Exchange) => {
                    let drow = tx
                        .inode_get(d.ino)?
                        .ok_or_else(|| Error::new(ErrorKind::Integrity, "missing inode"))?;
                    if drow.kind == Kind::Dir as u8 {
                        let mut cur = Some(parent);
                        while let Some(c) = cur {
                            if c == d.ino {
                                return err(
                                    ErrorKind::Invalid,
                                    "cannot move a directory into itself",
                                );
                            }
                            cur = tx.dir_parent(c)?;
                        }
                    }
                    tx.dirent_delete(parent, &src.name_index)?;
                    tx.dirent_delete(newparent, &d.name_index)?;
                    tx.dirent_insert(&self.new_dirent(&a, newparent, newname, src.ino)?)?;
                    tx.dirent_insert(&self.new_dirent(&a, parent, nm, d.ino)?)?;
                    replaced = Some((d.ino, None));
                }
                (Some(d), RenameMode::Replace) => {
                    let drow = tx
                        .inode_get(d.ino)?
                        .ok_or_else(|| Error::new(ErrorKind::Integrity, "missing inode"))?;
                    let d_dir = drow.kind == Kind::Dir as u8;
                    if src_dir && !d_dir {
                        return err(ErrorKind::NotDir, "target is not a directory");
                    }
                    if !src_dir && d_dir {
                        return err(ErrorKind::IsDir, "target is a directory");
                    }
                    if d_dir && tx.dirent_any(d.ino)? {
                        return err(ErrorKind::NotEmpty, "target directory not empty");
                    }
                    tx.dirent_delete(newparent, &d.name_index)?;
                    tx.dirent_delete(parent, &src.name_index)?;
                    tx.dirent_insert(&self.new_dirent(&a, newparent, newname, src.ino)?)?;
                    let left = tx.dirent_links(d.ino)?;
                    let delete = if left == 0 && !self.is_open(d.ino)? {
                        Some(tx.inode_delete(d.ino)?)
                    } else {
                        None
                    };
                    replaced = Some((d.ino, delete));
                }
                (None, _) => {
                    tx.dirent_delete(parent, &src.name_index)?;
                    tx.dirent_insert(&self.new_dirent(&a, newparent, newname, src.ino)?)?;
                }
            }
            let now = Time::now();
            pa.mtime = now;
            pa.ctime = now;
            self.save_attrs(tx, &a, parent, &pa)?;
            if newparent != parent {
                pb.mtime = now;
                pb.ctime = now;
                self.save_attrs(tx, &a, newparent, &pb)?;
            }
            Ok((a.clone(), Some(src.ino), replaced))
        })?;
        if let Some(m) = moved {
            self.touch_ctime(&a, m)?;
        }
        if let Some((r, deleted)) = replaced {
            if let Some(d) = deleted {
                self.vault.store().deleted(d)?;
            } else {
                self.touch_ctime(&a, r)?;
                if self.vault.store().read(|tx| tx.dirent_links(r))? == 0 {
                    self.mark_unlinked(r)?;
                }
            }
        }
        Ok(())
    }

    /// Hard link `ino` as `newname` in `newparent` (same circle, not a directory).
    pub fn link(&self, ino: InodeId, newparent: InodeId, newname: &[u8]) -> Result<Node> {
        name::check_file_name(newname)?;
        let (a, node) = self.vault.store().write(|tx| {
            let (row, a) = self.row(tx, ino)?;
            let (b, mut pb) = self.dir(tx, newparent)?;
            if a.row.id != b.row.id {
                return err(
                    ErrorKind::CrossCircle,
                    "hard links across circles are not possible",
                );
            }
            self.check(&a, Op::WriteFiles)?;
            if row.kind == Kind::Dir as u8 {
                return err(
                    ErrorKind::NotPermitted,
                    "hard links to directories are not allowed",
                );
            }
            if self.find(tx, &a, newparent, newname)?.is_some() {
                return err(ErrorKind::Conflict, "file exists");
            }
            tx.dirent_insert(&self.new_dirent(&a, newparent, newname, ino)?)?;
            let now = Time::now();
            pb.mtime = now;
            pb.ctime = now;
            self.save_attrs(tx, &a, newparent, &pb)?;
            let node = match self.touch_ctime_tx(tx, &a, ino, &row, now)? {
                Some(attrs) => {
                    let nlink = Self::nlink(tx, ino, attrs.kind)?;
                    Some(Node { ino, attrs, nlink })
                }
                None => None,
            };
            Ok::<_, Error>((a, node))
        })?;
        match node {
            Some(n) => Ok(n),
            None => {
                self.touch_ctime(&a, ino)?;
                self.getattr(ino)
            }
        }
    }

    /// Set the ctime of `ino` (record `row`, read in `tx`) to `now` in `tx`
    /// and return its attributes, unless the file has an open state, whose
    /// attributes must change through it (after `tx`: None).
    fn touch_ctime_tx(
        &self,
        tx: &Tx<'_>,
        a: &CircleAccess,
        ino: InodeId,
        row: &InodeRow,
        now: Time,
    ) -> Result<Option<Attrs>> {
        if self.is_open(ino)? {
            return Ok(None);
        }
        let attrs = self.change_record(tx, a, ino, row, |at| {
            at.ctime = now;
            Ok(())
        })?;
        Ok(Some(attrs))
    }

    /// Change attributes (size changes go through the content layer).
    pub fn setattr(&self, ino: InodeId, s: &SetAttr, caller: Caller) -> Result<Node> {
        let meta = s.mode.is_some()
            || s.uid.is_some()
            || s.gid.is_some()
            || s.atime.is_some()
            || s.mtime.is_some()
            || s.ctime.is_some();
        let mut truncated = false;
        if self.is_open(ino)? {
            // Through the open state, which knows the access: the
            // truncation and the change check it themselves.
            if let Some(size) = s.size {
                self.truncate(ino, size)?;
                truncated = true;
            }
            if !meta {
                return self.getattr(ino);
            }
            if let Some(n) = self.set_open_attrs(ino, |at| {
                apply_setattr(at, s, caller);
                Ok(())
            })? {
                return Ok(n);
            }
        }
        let a = self
            .vault
            .store()
            .read(|tx| Ok::<_, Error>(self.row(tx, ino)?.1))?;
        self.check(&a, Op::WriteFiles)?;
        if let Some(size) = s.size.filter(|_| !truncated) {
            self.truncate(ino, size)?;
        }
        if meta {
            self.update_attrs(&a, ino, |at| {
                apply_setattr(at, s, caller);
                Ok(())
            })?;
        }
        self.getattr(ino)
    }
}

/// Apply the non-size changes of `s` by `caller` to `at` (ctime: given, or now).
fn apply_setattr(at: &mut Attrs, s: &SetAttr, caller: Caller) {
    let now = Time::now();
    if let Some(m) = s.mode {
        at.mode = (at.mode & libc::S_IFMT) | (m & 0o7777);
    }
    let owner_change = s.uid.is_some_and(|u| u != at.uid) || s.gid.is_some_and(|g| g != at.gid);
    if let Some(u) = s.uid {
        at.uid = u;
    }
    if let Some(g) = s.gid {
        at.gid = g;
    }
    if owner_change && caller.uid != 0 && at.kind != Kind::Dir {
        at.mode &= !(libc::S_ISUID | libc::S_ISGID);
    }
    if let Some(t) = s.atime {
        at.atime = t;
    }
    if let Some(t) = s.mtime {
        at.mtime = t;
    }
    at.ctime = s.ctime.unwrap_or(now);
}
