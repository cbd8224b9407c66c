//! File content: open-file state, block read/write with read-modify-write,
//! truncate, flush and fsync, key generations.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::crypto::Key32;
use crate::crypto::aead::Cipher;
use crate::error::{Error, ErrorKind, Result, err};
use crate::format::aad;
use crate::format::attrs::{Attrs, Kind, Time};
use crate::format::block::{
    BLOCK_SIZE, ENTRY, HALF, Half, PAGE, blocks_for, both_set, halves, open_page, target_half,
};
use crate::ids::{BlockIndex, Epoch, InodeId, KeyGen};
use crate::store::blocks::InodeLock;

mod pending;
mod slots;

use pending::Pending;
pub(super) use slots::Sealed;

use super::{CircleAccess, Op, Workspace, lock};

/// Largest file size accepted (keeps offsets far from overflow).
pub const MAX_FILE_SIZE: u64 = 1 << 50;

/// A regular file as its creating transaction left it.
pub(super) struct Created {
    pub attrs: Attrs,
    /// Change counter of its record.
    pub seq: i64,
    /// Store version inside the creating transaction.
    pub version: crate::store::StoreVersion,
    /// Its first key generation, and the epoch that key was created in.
    pub keygen: KeyGen,
    pub origin: Epoch,
}

/// State of an open (or recently used) file, shared by all its handles.
pub struct OpenFile {
    access: Arc<CircleAccess>,
    attrs: Attrs,
    dirty: bool,
    opens: u32,
    unlinked: bool,
    /// The block file, once the content is known to live in one.
    file: Option<crate::store::blocks::BlockFile>,
    /// The inline row was created by this state and no fsync(2) has
    /// covered it since: moving it to a block file needs no sync first.
    fresh_inline: bool,
    /// Created by this state and never written since (nor changed by
    /// another mount): it has neither an inline row nor a block file, so
    /// nothing needs looking for.
    no_slots: bool,
    /// Ciphers by key generation, with the epoch each key was created in.
    ciphers: HashMap<KeyGen, (Epoch, Arc<Cipher>)>,
    /// Times were set explicitly (utimensat) and wait for the flush with
    /// `dirty`: a reload keeps them, newer or not.
    times_set: bool,
    /// Change counter of the record this state was loaded from or last wrote.
    seq: i64,
    /// The store version at the last full revalidation (access and record
    /// reload): while the store is at that version, nothing needs reading.
    validated: Option<crate::store::StoreVersion>,
    /// Written content not stored yet (write-behind).
    pending: Option<Pending>,
}

impl std::fmt::Debug for OpenFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "OpenFile(size {}, opens {})",
            self.attrs.size, self.opens
        )
    }
}

impl OpenFile {
    /// The state of a file loaded from its record (change counter `seq`):
    /// no handle, nothing cached, not yet validated.
    fn loaded(access: Arc<CircleAccess>, attrs: Attrs, seq: i64) -> OpenFile {
        OpenFile {
            access,
            attrs,
            dirty: false,
            opens: 0,
            unlinked: false,
            file: None,
            fresh_inline: false,
            no_slots: false,
            ciphers: HashMap::new(),
            times_set: false,
            seq,
            validated: None,
            pending: None,
        }
    }

    /// Live attributes.
    pub(super) fn attrs(&self) -> &Attrs {
        &self.attrs
    }

    /// Open handles.
    pub(super) fn opens(&self) -> u32 {
        self.opens
    }

    /// Drop cached ciphers of every generation but `g`.
    pub(super) fn forget_ciphers_except(&mut self, g: KeyGen) {
        self.ciphers.retain(|k, _| *k == g);
    }

    /// Circle of this file.
    pub fn circle(&self) -> crate::ids::CircleId {
        self.access.row.id
    }
}

impl Workspace {
    /// Re-check an open file against the current membership (a revoked
    /// circle fails with EACCES; a new level or key epoch takes effect at
    /// once) and, when `reload`, reload the record if another mount changed
    /// it since we loaded or wrote it (our unsaved changes are only times,
    /// kept if newer: every size, extent or key-generation change is saved
    /// at once). One read transaction. Callers hold the file's
    /// cross-process lock if any.
    pub(super) fn revalidate(
        &self,
        ino: InodeId,
        st: &mut OpenFile,
        op: Op,
        reload: bool,
    ) -> Result<()> {
        let c = st.access.row.id;
        // Nothing committed by anyone since the last full check: the
        // access row and the record are as they were.
        let version = if reload {
            Some(self.vault.store().version()?)
        } else {
            None
        };
        if version.is_some() && st.validated == version {
            return self.check(&st.access, op);
        }
        let (access, seq, row) = self
            .vault
            .store()
            .read(|tx| {
                let a = self.access_tx(tx, c)?;
                let seq = if reload { tx.inode_seq(ino)? } else { None };
                let row = match seq {
                    Some(q) if q != st.seq => tx.inode_get(ino)?,
                    _ => None,
                };
                Ok::<_, Error>((a, seq, row))
            })
            .map_err(|e| match e.kind {
                ErrorKind::Integrity | ErrorKind::Internal | ErrorKind::NotFound => e,
                _ => Error::new(ErrorKind::Forbidden, "access to this circle was revoked"),
            })?;
        if !Arc::ptr_eq(&access, &st.access) {
            st.access = access;
        }
        self.check(&st.access, op)?;
        if !reload {
            return Ok(());
        }
        match (seq, row) {
            (None, _) if st.unlinked => {}
            (None, _) => {
                return err(
                    ErrorKind::NotFound,
                    "the file was deleted through another mount",
                );
            }
            (Some(_), None) => {}
            (Some(_), Some(row)) => {
                let mut fresh = st.access.keys.open_attrs(&row)?;
                if st.dirty {
                    fresh.mtime = fresh.mtime.max(st.attrs.mtime);
                    fresh.ctime = fresh.ctime.max(st.attrs.ctime);
                }
                if st.dirty && st.times_set {
                    // Times set explicitly here and not saved yet win.
                    fresh.atime = st.attrs.atime;
                    fresh.mtime = st.attrs.mtime;
                }
                if st.pending.is_some() {
                    // This state holds the inode lock with content not
                    // stored yet: no other mount changed the content (an
                    // owner, a mode or times it may have changed).
                    fresh.size = st.attrs.size;
                    fresh.extents = st.attrs.extents.clone();
                    fresh.keygen = st.attrs.keygen;
                    fresh.content = st.attrs.content;
                }
                st.attrs = fresh;
                st.seq = row.seq;
                st.no_slots = false;
            }
        }
        st.validated = version;
        Ok(())
    }

    /// Save the record now and, when another mount is present, commit it
    /// (with the batch): callers hold the file's cross-process lock, and
    /// the next holder in another mount must read this record (O_APPEND
    /// from two mounts loses nothing).
    pub(super) fn persist(&self, ino: InodeId, st: &mut OpenFile) -> Result<()> {
        self.persist_with(ino, st, None)
    }

    /// [`Workspace::persist`], storing `inline` as the file's inline slots
    /// in the same transaction.
    fn persist_with(&self, ino: InodeId, st: &mut OpenFile, inline: Option<&[u8]>) -> Result<()> {
        self.save_state(ino, st, inline)?;
        self.commit_for_others()
    }

    /// Save the state's attributes (and `inline` as the inline slots) in
    /// one write, under the circle's access as of that write; the state
    /// then holds what the store holds.
    ///
    /// Content pending (write-behind) is stored with it: a record saved
    /// without it would describe slots that are not there. Its inode lock
    /// is released once the write is committed for other mounts.
    fn save_state(&self, ino: InodeId, st: &mut OpenFile, inline: Option<&[u8]>) -> Result<()> {
        let pending = if inline.is_none() {
            st.pending.take()
        } else {
            None
        };
        let inline = inline.or(pending.as_ref().and_then(|p| p.row.as_deref()));
        let attrs = st.attrs.clone();
        let circle = st.access.row.id;
        let r = self.write_own(st, |tx| {
            if let Some(row) = inline {
                tx.inline_put(ino, row)?;
            }
            let access = self.access_tx(tx, circle)?;
            Ok((self.save_attrs(tx, &access, ino, &attrs)?, access))
        });
        let (seq, access) = match r {
            Ok(v) => v,
            Err(e) => {
                // Kept (with its lock) for the next attempt.
                if pending.is_some() {
                    st.pending = pending;
                }
                return Err(e);
            }
        };
        st.seq = seq;
        st.access = access;
        st.dirty = false;
        st.times_set = false;
        if pending.is_some() {
            self.commit_for_others()?;
        }
        Ok(())
    }

    /// Run `f` as one write made for an open file's state (whose lock the
    /// caller holds). When nothing but this write happened since the
    /// state was last validated, it stays validated at the version after
    /// it: the caller makes the state hold what the write stored.
    fn write_own<T>(
        &self,
        st: &mut OpenFile,
        f: impl FnOnce(&crate::store::Tx<'_>) -> Result<T>,
    ) -> Result<T> {
        let store = self.vault.store();
        let (v, after) = store.write(|tx| {
            let v = f(tx)?;
            Ok::<_, Error>((v, store.version_in(tx)?))
        })?;
        if st
            .validated
            .is_some_and(|b| b.followed_by_one_write(&after))
        {
            st.validated = Some(after);
        }
        Ok(v)
    }

    /// Exclusive lock on the inode across processes (several mounts of
    /// one store), held for one read-modify-write and its record update.
    /// Pending content of the state is stored first, under the lock it
    /// already holds, which is handed on.
    pub(super) fn cross_lock(&self, ino: InodeId, st: &mut OpenFile) -> Result<InodeLock> {
        if let Some(held) = self.settle(ino, st)? {
            return Ok(held);
        }
        Ok(self.vault.store().inode_lock(ino, true)?)
    }

    /// Shared lock on the inode for a read (writers in other mounts and
    /// threads hold it exclusively); with pending content, stored first,
    /// the exclusive lock it held.
    fn shared_lock(&self, ino: InodeId, st: &mut OpenFile) -> Result<InodeLock> {
        if let Some(held) = self.settle(ino, st)? {
            return Ok(held);
        }
        Ok(self.vault.store().inode_lock(ino, false)?)
    }

    /// Every loaded file state, taken out of the map (whose lock is not
    /// held while they are used).
    pub(super) fn open_states(&self) -> Result<Vec<(InodeId, Arc<Mutex<OpenFile>>)>> {
        Ok(lock(&self.open)?
            .iter()
            .map(|(k, v)| (*k, v.clone()))
            .collect())
    }

    pub(super) fn is_open(&self, ino: InodeId) -> Result<bool> {
        Ok(lock(&self.open)?.contains_key(&ino))
    }

    /// Live attributes of an open file.
    pub(super) fn open_attrs(&self, ino: InodeId) -> Result<Option<Attrs>> {
        let f = lock(&self.open)?.get(&ino).cloned();
        match f {
            Some(f) => Ok(Some(lock(&f)?.attrs.clone())),
            None => Ok(None),
        }
    }

    pub(super) fn mark_unlinked(&self, ino: InodeId) -> Result<()> {
        let f = lock(&self.open)?.get(&ino).cloned();
        if let Some(f) = f {
            lock(&f)?.unlinked = true;
        }
        Ok(())
    }

    /// Change an inode's attributes and save them at once (through the open
    /// state when the file is open, so a later flush does not undo it).
    pub(super) fn update_attrs(
        &self,
        a: &CircleAccess,
        ino: InodeId,
        f: impl FnOnce(&mut Attrs) -> Result<()>,
    ) -> Result<()> {
        let open = lock(&self.open)?.get(&ino).cloned();
        if let Some(of) = open {
            let mut st = lock(&of)?;
            f(&mut st.attrs)?;
            return self.save_state(ino, &mut st, None);
        }
        self.vault.store().write(|tx| {
            let row = tx
                .inode_get(ino)?
                .ok_or_else(|| Error::new(ErrorKind::NotFound, "no such inode"))?;
            // Keys as of this transaction (a revocation may have re-sealed).
            let a = self.access_tx(tx, a.row.id)?;
            self.change_record(tx, &a, ino, &row, f)?;
            Ok(())
        })
    }

    /// Change the attributes of an open file through its state (None: no
    /// handle is open). A change of times only (a chown or chmod to what
    /// the file has changes its ctime only) waits for the flush, as a
    /// write's times do, while no other mount is present; any other change
    /// is saved at once.
    pub(super) fn set_open_attrs(
        &self,
        ino: InodeId,
        f: impl FnOnce(&mut Attrs) -> Result<()>,
    ) -> Result<Option<super::Node>> {
        let Some(of) = lock(&self.open)?.get(&ino).cloned() else {
            return Ok(None);
        };
        let mut st = lock(&of)?;
        if st.opens == 0 || st.attrs.kind != Kind::File {
            return Ok(None);
        }
        self.revalidate(ino, &mut st, Op::WriteFiles, true)?;
        let owner = |a: &Attrs| (a.mode, a.uid, a.gid);
        let times = |a: &Attrs| (a.atime, a.mtime);
        let before = (owner(&st.attrs), times(&st.attrs));
        f(&mut st.attrs)?;
        if owner(&st.attrs) == before.0 && !self.mount_lock.others_present() {
            st.times_set |= times(&st.attrs) != before.1;
            st.dirty = true;
        } else {
            self.save_state(ino, &mut st, None)?;
        }
        let attrs = st.attrs.clone();
        drop(st);
        let nlink = self
            .vault
            .store()
            .read(|tx| Self::nlink(tx, ino, attrs.kind))?;
        Ok(Some(super::Node { ino, attrs, nlink }))
    }

    /// Open a file (or directory); `write` checks the write level.
    pub fn open(&self, ino: InodeId, write: bool, truncate: bool) -> Result<()> {
        let of = self.get_or_load(ino)?;
        {
            let mut st = lock(&of)?;
            // Close-to-open: see what other mounts committed.
            let op = if write { Op::WriteFiles } else { Op::ReadFiles };
            self.revalidate(ino, &mut st, op, true)?;
            st.opens += 1;
        }
        if truncate && write {
            self.truncate(ino, 0)?;
        }
        Ok(())
    }

    pub(super) fn get_or_load(&self, ino: InodeId) -> Result<Arc<Mutex<OpenFile>>> {
        if let Some(f) = lock(&self.open)?.get(&ino) {
            return Ok(f.clone());
        }
        // Record, access and the current generation's key from one
        // snapshot, whose version makes the state validated: the open and
        // first read that follow read nothing again unless the store moved.
        let store = self.vault.store();
        let (attrs, access, seq, key, version) = store.read(|tx| {
            let (row, a) = self.row(tx, ino)?;
            let attrs = a.keys.open_attrs(&row)?;
            let key = match attrs.keygen {
                KeyGen(0) => None,
                g => tx.file_key_get(ino, g)?.map(|k| (g, k)),
            };
            let seq = row.seq;
            Ok::<_, Error>((attrs, a, seq, key, store.version_in(tx)?))
        })?;
        let cipher = match key {
            Some((g, k)) => Some((g, Self::unwrap_file_key(&access, ino, g, &k)?)),
            None => None,
        };
        let mut map = lock(&self.open)?;
        let of = map
            .entry(ino)
            .or_insert_with(|| {
                let mut st = OpenFile::loaded(access, attrs, seq);
                st.validated = Some(version);
                if let Some((g, c)) = cipher {
                    st.ciphers.insert(g, c);
                }
                Arc::new(Mutex::new(st))
            })
            .clone();
        Ok(of)
    }

    /// Open a regular file this workspace just created (one handle), its
    /// state taken from the create (with the cipher of its first key
    /// generation).
    pub(super) fn adopt_created(
        &self,
        ino: InodeId,
        access: Arc<CircleAccess>,
        c: Created,
        key: &Key32,
    ) -> Result<()> {
        let cipher = Arc::new(Cipher::new(key));
        let of = lock(&self.open)?
            .entry(ino)
            .or_insert_with(|| {
                let mut st = OpenFile::loaded(access, c.attrs, c.seq);
                st.no_slots = true;
                st.ciphers.insert(c.keygen, (c.origin, cipher));
                st.validated = Some(c.version);
                Arc::new(Mutex::new(st))
            })
            .clone();
        lock(&of)?.opens += 1;
        Ok(())
    }

    fn loaded(&self, ino: InodeId) -> Result<Arc<Mutex<OpenFile>>> {
        self.get_or_load(ino)
    }

    /// Close one handle: flush, and at the last close of an unlinked file
    /// destroy its keys and blocks.
    pub fn release(&self, ino: InodeId) -> Result<()> {
        let Some(of) = lock(&self.open)?.get(&ino).cloned() else {
            return Ok(());
        };
        let res = self.flush_file(ino, &of, false);
        let (last, unlinked) = {
            let mut st = lock(&of)?;
            st.opens = st.opens.saturating_sub(1);
            if st.opens == 0 && st.pending.take().is_some() {
                // The flush above could not store it, and nothing is left
                // to try again.
                log::error!(
                    "inode {ino}: written content that could not be stored was dropped at the last close"
                );
            }
            (st.opens == 0, st.unlinked)
        };
        if last {
            lock(&self.open)?.remove(&ino);
            if unlinked {
                let gone = self.vault.store().write(|tx| {
                    if tx.dirent_links(ino)? == 0 {
                        return Ok::<_, Error>(Some(tx.inode_delete(ino)?));
                    }
                    Ok(None)
                })?;
                if let Some(d) = gone {
                    self.vault.store().deleted(d)?;
                }
            }
        }
        res?;
        self.commit_for_others()
    }

    /// Commit the open batch now if another mount is present (it must see
    /// what was just saved: close-to-open, a record saved under the inode
    /// lock). Alone, the flusher commits it within its window: a mount that
    /// joins later first waits for that batch (see `Workspace::new`).
    pub(super) fn commit_for_others(&self) -> Result<()> {
        if self.mount_lock.others_present() {
            self.vault.store().commit_pending()?;
        }
        Ok(())
    }

    /// Persist a file's attributes (and with `sync`, its blocks first).
    pub(super) fn flush_file(
        &self,
        ino: InodeId,
        of: &Arc<Mutex<OpenFile>>,
        sync: bool,
    ) -> Result<()> {
        let mut st = lock(of)?;
        // A file with no name left has nothing to store, neither pending
        // content nor times (asked only when there is something).
        let gone = st.unlinked
            && (st.dirty || st.pending.is_some())
            && self.vault.store().read(|tx| tx.dirent_links(ino))? == 0;
        if gone {
            st.pending = None;
        }
        // Pending content is stored (and its lock released) first.
        drop(self.settle(ino, &mut st)?);
        if sync {
            Self::sync_slots(&st)?;
            st.fresh_inline = false;
        }
        if !st.dirty || gone {
            st.dirty = false;
            st.times_set = false;
            if sync {
                self.vault.store().sync()?;
            }
            return Ok(());
        }
        // What another mount changed since (an owner, a mode) is kept:
        // only the times this state holds unsaved go over it.
        self.revalidate(ino, &mut st, Op::WriteFiles, true)?;
        self.save_state(ino, &mut st, None)?;
        if sync {
            self.vault.store().sync()?;
        }
        Ok(())
    }

    /// flush(2) on a handle (every close): the record is saved and, when
    /// another mount is present, the batch committed, so its next open sees
    /// the file (close-to-open).
    pub fn flush(&self, ino: InodeId) -> Result<()> {
        let of = lock(&self.open)?.get(&ino).cloned();
        if let Some(of) = of {
            self.flush_file(ino, &of, false)?;
        }
        self.commit_for_others()
    }

    /// fsync(2): blocks then the record, durably.
    pub fn fsync(&self, ino: InodeId) -> Result<()> {
        let of = lock(&self.open)?.get(&ino).cloned();
        match of {
            Some(of) => self.flush_file(ino, &of, true),
            None => Ok(()),
        }
    }

    /// The cipher of key generation `g` of this file.
    pub(super) fn cipher<'a>(
        &self,
        ino: InodeId,
        st: &'a mut OpenFile,
        g: KeyGen,
    ) -> Result<&'a Cipher> {
        if !st.ciphers.contains_key(&g) {
            // The wrapped key and the circle keys from one snapshot: a
            // revocation may have re-wrapped it under a new epoch.
            let circle = st.access.row.id;
            let (k, access) = self.vault.store().read(|tx| {
                let k = tx.file_key_get(ino, g)?.ok_or_else(|| {
                    Error::new(
                        ErrorKind::Integrity,
                        format!("no file key for generation {g}"),
                    )
                })?;
                Ok::<_, Error>((k, self.access_tx(tx, circle)?))
            })?;
            st.access = access;
            let c = Self::unwrap_file_key(&st.access, ino, g, &k)?;
            st.ciphers.insert(g, c);
        }
        st.ciphers
            .get(&g)
            .map(|(_, c)| &**c)
            .ok_or_else(|| Error::new(ErrorKind::Internal, "cipher cache"))
    }

    /// The cipher of file key row `k` (generation `g` of `ino`), with the
    /// epoch that key was created in; `access` was read with the row.
    fn unwrap_file_key(
        access: &CircleAccess,
        ino: InodeId,
        g: KeyGen,
        k: &crate::store::files::FileKeyRow,
    ) -> Result<(Epoch, Arc<Cipher>)> {
        let ek = access.keys.epoch(k.epoch)?;
        let mut raw = ek.file_wrap.open(
            &aad::file_key(access.row.id, ino, g, k.epoch, k.origin),
            &k.wrapped,
            "file key",
        )?;
        let key = Key32::from_slice(&raw);
        zeroize::Zeroize::zeroize(&mut raw);
        Ok((k.origin, Arc::new(Cipher::new(&key?))))
    }

    /// Make sure the file's current generation was created in the circle's
    /// current epoch; otherwise start a new generation (after a revocation,
    /// nothing new is written under a key a removed trustee could hold, even
    /// though the old key is now re-wrapped under the new epoch).
    fn ensure_write_key(&self, ino: InodeId, st: &mut OpenFile) -> Result<KeyGen> {
        let current = st.access.keys.current;
        let g = st.attrs.keygen;
        if g.0 != 0 {
            self.cipher(ino, st, g)?;
            if st.ciphers.get(&g).is_some_and(|(e, _)| *e == current) {
                return Ok(g);
            }
        }
        self.install_generation(ino, st, Key32::random()?)
    }

    /// Start a new key generation with `key`, wrapped under the current
    /// epoch and committed before any block uses it.
    pub(super) fn install_generation(
        &self,
        ino: InodeId,
        st: &mut OpenFile,
        key: Key32,
    ) -> Result<KeyGen> {
        let g = st.attrs.keygen;
        let circle = st.access.row.id;
        let (ng, access) =
            self.vault.store().write(|tx| {
                // The epoch is read in the same transaction that stores the key.
                let access = self.access_tx(tx, circle)?;
                let current = access.keys.current;
                let k = access.keys.cur()?;
                let max = tx.file_key_max(ino)?;
                let ng =
                    KeyGen(max.0.max(g.0).checked_add(1).ok_or_else(|| {
                        Error::new(ErrorKind::Internal, "key generations exhausted")
                    })?);
                let wrapped = k.file_wrap.seal(
                    &aad::file_key(circle, ino, ng, current, current),
                    key.expose(),
                )?;
                tx.file_key_insert(&crate::store::files::FileKeyRow {
                    ino,
                    keygen: ng,
                    epoch: current,
                    origin: current,
                    wrapped,
                })?;
                Ok::<_, Error>((ng, access))
            })?;
        // Committed before any block is sealed under it: a crash never
        // leaves blocks whose key was lost with the batch.
        self.vault.store().commit_pending()?;
        let current = access.keys.current;
        st.access = access;
        st.ciphers
            .insert(ng, (current, Arc::new(Cipher::new(&key))));
        st.attrs.keygen = ng;
        st.dirty = true;
        Ok(ng)
    }

    /// The cipher of key generation `g`, shared.
    fn cipher_arc(&self, ino: InodeId, st: &mut OpenFile, g: KeyGen) -> Result<Arc<Cipher>> {
        self.cipher(ino, st, g)?;
        st.ciphers
            .get(&g)
            .map(|(_, c)| c.clone())
            .ok_or_else(|| Error::new(ErrorKind::Internal, "cipher cache"))
    }

    /// Decrypt block `i` from its stored `entry` and `page` into `out`
    /// (BLOCK_SIZE bytes); returns the half of the entry that opened it.
    pub(super) fn open_slot(
        &self,
        ino: InodeId,
        st: &mut OpenFile,
        i: u64,
        entry: &[u8],
        page: &[u8],
        out: &mut [u8],
    ) -> Result<usize> {
        let circle = st.access.row.id;
        let content = st.attrs.content;
        open_page(entry, page, out, |g| {
            Ok((
                self.cipher_arc(ino, st, g)?,
                aad::block(circle, &content, g, BlockIndex(i)),
            ))
        })
        .inspect_err(|_| {
            log::error!("integrity failure in inode {ino} block {i}");
        })
    }

    /// Seal the plaintext `pages` of blocks `first..` in place under key
    /// generation `g`. `entries` are the blocks' stored entries and
    /// `current[k]` the half known to open block `k`'s stored page (it was
    /// read), if any: each new header goes into the other half
    /// (`format::block::target_half`).
    // The file's identity and state, the run, what is stored of it and
    // the key: each needed, none derivable from the others.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn seal_pages(
        &self,
        ino: InodeId,
        st: &mut OpenFile,
        first: u64,
        mut pages: crate::store::blocks::SlotBuf,
        entries: Vec<u8>,
        current: &[Option<usize>],
        g: KeyGen,
    ) -> Result<Sealed> {
        let circle = st.access.row.id;
        let content = st.attrs.content;
        let c = match self.cipher_arc(ino, st, g) {
            Ok(c) => c,
            Err(e) => {
                pages.as_mut().fill(0);
                return Err(e);
            }
        };
        let n = pages.as_ref().len() / PAGE;
        let mut before = entries;
        before.resize(n * ENTRY, 0);
        let mut after = before.clone();
        let res = (|| {
            let mut nonces = crate::crypto::aead::Nonces::fresh(n)?;
            for (k, page) in pages.as_mut().chunks_exact_mut(PAGE).enumerate() {
                let i = first + k as u64;
                let e = &mut before[k * ENTRY..(k + 1) * ENTRY];
                let t = target_half(e, current.get(k).copied().flatten());
                let (nonce, tag) = c.seal_detached(
                    &mut nonces,
                    &aad::block(circle, &content, g, BlockIndex(i)),
                    page,
                )?;
                let h = Half {
                    keygen: g,
                    nonce,
                    tag,
                };
                h.put(&mut e[t * HALF..(t + 1) * HALF]);
                let a = &mut after[k * ENTRY..(k + 1) * ENTRY];
                a.fill(0);
                h.put(&mut a[t * HALF..(t + 1) * HALF]);
            }
            Ok::<_, Error>(())
        })();
        if let Err(e) = res {
            pages.as_mut().fill(0);
            return Err(e);
        }
        Ok(Sealed {
            pages,
            before,
            after,
        })
    }

    /// Open stored block `i`, let `edit` change its plaintext, and store
    /// it again sealed under generation `g`.
    pub(super) fn rewrite_block(
        &self,
        ino: InodeId,
        st: &mut OpenFile,
        i: u64,
        g: KeyGen,
        edit: impl FnOnce(&mut [u8]),
    ) -> Result<()> {
        let run = self.read_slots(ino, st, i, 1)?;
        let Some((entry, page)) = run.slot(0) else {
            return err(ErrorKind::Integrity, "content block missing");
        };
        let mut pages = crate::store::blocks::SlotBuf::new(PAGE);
        let h = match self.open_slot(ino, st, i, entry, page, pages.as_mut()) {
            Ok(h) => h,
            Err(e) => {
                pages.as_mut().fill(0);
                return Err(e);
            }
        };
        edit(pages.as_mut());
        let sealed = self.seal_pages(ino, st, i, pages, run.entries, &[Some(h)], g)?;
        self.write_slots(ino, st, i, &sealed)
    }

    /// Read up to `size` bytes at `offset`.
    ///
    /// Under the shared inode lock while another mount may hold written
    /// content of the file that it has not stored (write-behind: a reader
    /// waits for that lock, so a write that returned is seen). Otherwise
    /// first without it: this mount's writers of the file are excluded by
    /// its state's lock, and a block another mount is rewriting meanwhile
    /// (torn, or under a key or content id this state does not know yet)
    /// fails to open. Only then is the read made again under the lock,
    /// with the state checked against the store afresh, and only that
    /// failure is the caller's.
    pub fn read(&self, ino: InodeId, offset: u64, size: u32) -> Result<Vec<u8>> {
        if !self.none_pending_elsewhere() {
            return self.read_pass(ino, offset, size, Pass::Locked);
        }
        match self.read_pass(ino, offset, size, Pass::Unlocked) {
            Err(e) if e.kind == ErrorKind::Integrity => {
                self.read_pass(ino, offset, size, Pass::Again)
            }
            r => r,
        }
    }

    /// Whether no other mount can hold written content it has not stored:
    /// true once this mount has found no other (a mount keeps writes
    /// pending only while it finds none, and every mount that comes later
    /// finds this one); asked again until then.
    fn none_pending_elsewhere(&self) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        if self.found_alone.load(Relaxed) {
            return true;
        }
        let alone = !self.mount_lock.others_present();
        if alone {
            self.found_alone.store(true, Relaxed);
        }
        alone
    }

    /// One pass of [`Workspace::read`].
    fn read_pass(&self, ino: InodeId, offset: u64, size: u32, pass: Pass) -> Result<Vec<u8>> {
        let of = self.loaded(ino)?;
        let mut st = lock(&of)?;
        if st.attrs.kind != Kind::File {
            return err(ErrorKind::IsDir, "not a regular file");
        }
        if pass == Pass::Again {
            st.validated = None;
        }
        let _guard = match pass {
            Pass::Unlocked => None,
            Pass::Locked | Pass::Again => Some(self.shared_lock(ino, &mut st)?),
        };
        let reload = !st.dirty;
        self.revalidate(ino, &mut st, Op::ReadFiles, reload)?;
        let fsize = st.attrs.size;
        if offset >= fsize || size == 0 {
            return Ok(Vec::new());
        }
        let end = fsize.min(offset.saturating_add(size as u64));
        let bs = BLOCK_SIZE as u64;
        let first = offset / bs;
        let last = (end - 1) / bs;
        let n = (last - first + 1) as usize;
        // One read for the whole run of slots, under the file's lock and
        // the inode lock; the keys it needs are loaded, then both locks are
        // released and the run is decrypted: a file's next request reads
        // from disk while this one decrypts.
        let slots = self.read_slots(ino, &mut st, first, n)?;
        let mut written = Vec::with_capacity(n);
        let mut ciphers: Vec<(KeyGen, Arc<Cipher>)> = Vec::new();
        for k in 0..n {
            let i = first + k as u64;
            let w = st.attrs.extents.contains(i);
            written.push(w);
            let Some((entry, _)) = slots.slot(k).filter(|_| w) else {
                continue;
            };
            for h in halves(entry).into_iter().flatten() {
                let g = h.keygen;
                if ciphers.iter().any(|(x, _)| *x == g) {
                    continue;
                }
                // A half naming a generation without a key (a stale
                // header) opens nothing; the other half may.
                match self.cipher_arc(ino, &mut st, g) {
                    Ok(c) => ciphers.push((g, c)),
                    Err(e) if e.kind == ErrorKind::Integrity => {}
                    Err(e) => return Err(e),
                }
            }
        }
        let run = Run {
            ino,
            circle: st.access.row.id,
            content: st.attrs.content,
            written,
            ciphers,
            slots,
            first,
            offset,
            end,
            quiet: pass == Pass::Unlocked,
        };
        drop(_guard);
        drop(st);
        // No thread split: with the locks released, the kernel's next
        // readahead request decrypts on the other FUSE thread meanwhile.
        let mut out = vec![0u8; (end - offset) as usize];
        run.decrypt(0..n, &mut out, offset)?;
        Ok(out)
    }

    /// Write `data` at `offset`; returns the bytes written.
    pub fn write(&self, ino: InodeId, offset: u64, data: &[u8]) -> Result<usize> {
        self.write_at(ino, Some(offset), data, false)
    }

    /// Append `data` at the end of the file as it is when the write runs
    /// (atomic across handles and mounts: O_APPEND).
    pub fn append(&self, ino: InodeId, data: &[u8]) -> Result<usize> {
        self.write_at(ino, None, data, false)
    }

    /// Write `data` at `at` (None: at the end, O_APPEND); with `kill_privs`
    /// (a writer without CAP_FSETID, as the kernel reports it) the set-user-ID
    /// bit, and the set-group-ID bit of a group-executable file, are cleared
    /// as a local filesystem does on write.
    pub fn write_at(
        &self,
        ino: InodeId,
        at: Option<u64>,
        data: &[u8],
        kill_privs: bool,
    ) -> Result<usize> {
        if data.is_empty() {
            return Ok(0);
        }
        let of = self.loaded(ino)?;
        let mut st = lock(&of)?;
        if st.attrs.kind != Kind::File {
            return err(ErrorKind::IsDir, "not a regular file");
        }
        // Cheap check first (no lock, no block file for a read trustee),
        // then the authoritative one under the lock (pending content
        // already holds it).
        self.check(&st.access, Op::WriteFiles)?;
        let mut guard = match st.pending {
            Some(_) => None,
            None => Some(self.vault.store().inode_lock(ino, true)?),
        };
        self.revalidate(ino, &mut st, Op::WriteFiles, true)?;
        let offset = at.unwrap_or(st.attrs.size);
        let end = offset
            .checked_add(data.len() as u64)
            .filter(|e| *e <= MAX_FILE_SIZE)
            .ok_or_else(|| Error::new(ErrorKind::TooBig, "file too large"))?;
        let before = (
            st.attrs.size,
            st.attrs.extents.0.len(),
            st.attrs.extents.0.last().copied(),
            st.attrs.keygen,
        );
        let g = self.ensure_write_key(ino, &mut st)?;
        let bs = BLOCK_SIZE as u64;
        let first = offset / bs;
        let last = (end - 1) / bs;
        let n = (last - first + 1) as usize;
        let old_blocks = blocks_for(st.attrs.size);
        // Where the slots are, looked up once for the edge reads and the
        // write (both locks are held throughout).
        let place = self.place(ino, &mut st)?;
        let mode = st.attrs.mode;
        let killed = if kill_privs {
            without_privs(mode)
        } else {
            mode
        };
        // Write-behind: while no other mount is present, a file's writes
        // stay pending until a flush or the poll, and so do the next ones
        // (they hold its inode lock; a new file's slots wait with them,
        // inline, a block file's are written at once and its record waits).
        let defer = killed == mode
            && (st.pending.is_some()
                || (self.write_behind.load(std::sync::atomic::Ordering::Relaxed)
                    && !self.mount_lock.others_present()));
        // The stored entries of the blocks written, and the stored pages
        // that must be opened first: partially covered edge blocks that
        // hold content, and any block holding content whose entry has both
        // halves set (an interrupted write: which one is current is found
        // out, so that the new header does not replace it). A block wholly
        // covered is sealed without reading its page.
        let entries = Self::read_entries_placed(&place, &st, first, n)?;
        let mut current: Vec<Option<usize>> = vec![None; n];
        let mut pages = crate::store::blocks::SlotBuf::new(n * PAGE);
        let mut need: Vec<usize> = Vec::new();
        for k in 0..n {
            let i = first + k as u64;
            if i >= old_blocks || !st.attrs.extents.contains(i) {
                continue;
            }
            let bstart = i * bs;
            let partial = offset > bstart || end < bstart + bs;
            if partial || both_set(&entries[k * ENTRY..(k + 1) * ENTRY]) {
                need.push(k);
            }
        }
        let mut k0 = 0;
        while k0 < need.len() {
            // Adjacent blocks in one read (a 4 KiB write at an unaligned
            // offset has two).
            let mut k1 = k0 + 1;
            while k1 < need.len() && need[k1] == need[k1 - 1] + 1 {
                k1 += 1;
            }
            let (at, count) = (need[k0], k1 - k0);
            let run = Self::read_placed(&place, &st, first + at as u64, count)?;
            for j in 0..count {
                let k = at + j;
                let Some((entry, page)) = run.slot(j) else {
                    pages.as_mut().fill(0);
                    return err(ErrorKind::Integrity, "content block missing");
                };
                let out = &mut pages.as_mut()[k * PAGE..(k + 1) * PAGE];
                match self.open_slot(ino, &mut st, first + k as u64, entry, page, out) {
                    Ok(h) => current[k] = Some(h),
                    Err(e) => {
                        pages.as_mut().fill(0);
                        return Err(e);
                    }
                }
            }
            k0 = k1;
        }
        let at = (offset - first * bs) as usize;
        pages.as_mut()[at..at + data.len()].copy_from_slice(data);
        let sealed = self.seal_pages(ino, &mut st, first, pages, entries, &current, g)?;
        let inline_row = self.stage_slots(ino, &mut st, place, first, &sealed)?;
        let now = Time::now();
        st.attrs.extents.add(first, last + 1);
        st.attrs.size = st.attrs.size.max(end);
        st.attrs.mtime = now;
        st.attrs.ctime = now;
        st.dirty = true;
        // Size, extents and key generation are saved at once (other mounts
        // and crash recovery see them); times wait for flush.
        let after = (
            st.attrs.size,
            st.attrs.extents.0.len(),
            st.attrs.extents.0.last().copied(),
            st.attrs.keygen,
        );
        st.attrs.mode = killed;
        if defer {
            // The inline row, or nothing if the slots are in the block file.
            let row = inline_row;
            match &mut st.pending {
                Some(p) => p.row = row,
                None => {
                    let lock = guard
                        .take()
                        .ok_or_else(|| Error::new(ErrorKind::Internal, "inode lock missing"))?;
                    st.pending = Some(Pending { row, lock });
                }
            }
            return Ok(data.len());
        }
        // Stored now. Earlier pending content is in `inline_row`, or was
        // moved to the block file; its lock is held until the record is
        // saved.
        let earlier = st.pending.take();
        let saved = if before != after || killed != mode || earlier.is_some() {
            self.persist_with(ino, &mut st, inline_row.as_deref())
        } else if let Some(row) = &inline_row {
            self.write_own(&mut st, |tx| Ok(tx.inline_put(ino, row)?))
        } else {
            Ok(())
        };
        if let Err(e) = saved {
            // Keep what was written pending for the next try.
            if let Some(p) = earlier {
                st.pending = Some(Pending {
                    row: inline_row,
                    lock: p.lock,
                });
            }
            return Err(e);
        }
        drop(guard);
        drop(earlier);
        Ok(data.len())
    }

    /// Set the size (shrink: drop blocks, zero the tail of the new last block).
    pub fn truncate(&self, ino: InodeId, size: u64) -> Result<()> {
        if size > MAX_FILE_SIZE {
            return err(ErrorKind::TooBig, "file too large");
        }
        let of = self.loaded(ino)?;
        let mut st = lock(&of)?;
        if st.attrs.kind == Kind::Dir {
            return err(ErrorKind::IsDir, "is a directory");
        }
        if st.attrs.kind != Kind::File {
            return err(ErrorKind::Invalid, "not a regular file");
        }
        // Cheap check first (no lock, no block file for a read trustee),
        // then the authoritative one under the lock.
        self.check(&st.access, Op::WriteFiles)?;
        let _guard = self.cross_lock(ino, &mut st)?;
        self.revalidate(ino, &mut st, Op::WriteFiles, true)?;
        let old = st.attrs.size;
        let mut cut = None;
        if size < old {
            let nb = blocks_for(size);
            let tail = (size % BLOCK_SIZE as u64) as usize;
            let keep_partial = tail != 0 && st.attrs.extents.contains(nb - 1);
            if keep_partial {
                let g = self.ensure_write_key(ino, &mut st)?;
                self.rewrite_block(ino, &mut st, nb - 1, g, |pt| pt[tail..].fill(0))?;
            }
            st.attrs.extents.truncate(nb);
            cut = Some(nb);
        }
        let now = Time::now();
        st.attrs.size = size;
        st.attrs.mtime = now;
        st.attrs.ctime = now;
        // Truncation is a metadata change: persist it now, and only then cut
        // the block file, so a crash in between never leaves the record
        // pointing at blocks that are gone.
        self.save_state(ino, &mut st, None)?;
        // Committed before the blocks go, and before the cross-process
        // lock is released (the next holder reads this record).
        self.vault.store().commit_pending()?;
        if let Some(nb) = cut {
            self.cut_slots(ino, &mut st, nb)?;
        }
        let idle = st.opens == 0;
        drop(st);
        if idle {
            lock(&self.open)?.remove(&ino);
        }
        Ok(())
    }

    /// fallocate(2) mode 0 (extend the size; blocks stay holes) or
    /// KEEP_SIZE (nothing to do); other modes are not supported.
    pub fn fallocate(&self, ino: InodeId, offset: u64, len: u64, mode: i32) -> Result<()> {
        let end = offset
            .checked_add(len)
            .filter(|e| *e <= MAX_FILE_SIZE)
            .ok_or_else(|| Error::new(ErrorKind::TooBig, "file too large"))?;
        if mode & !libc::FALLOC_FL_KEEP_SIZE != 0 {
            return err(ErrorKind::NotSupported, "only plain fallocate is supported");
        }
        let of = self.loaded(ino)?;
        let mut st = lock(&of)?;
        self.check(&st.access, Op::WriteFiles)?;
        if mode & libc::FALLOC_FL_KEEP_SIZE == 0 && end > st.attrs.size {
            let _guard = self.cross_lock(ino, &mut st)?;
            self.revalidate(ino, &mut st, Op::WriteFiles, true)?;
            if end > st.attrs.size {
                st.attrs.size = end;
                st.attrs.ctime = Time::now();
                self.persist(ino, &mut st)?;
            }
        }
        Ok(())
    }
}

/// `mode` as a write by an unprivileged process leaves it: no set-user-ID
/// bit, and no set-group-ID bit if group-executable (without group execute
/// the bit means mandatory locking and stays).
fn without_privs(mode: u32) -> u32 {
    let mut m = mode & !libc::S_ISUID;
    if m & libc::S_IXGRP != 0 {
        m &= !libc::S_ISGID;
    }
    m
}

const _: () = assert!(BLOCK_SIZE == PAGE);

/// How a pass of [`Workspace::read`] reads.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// Without the inode lock.
    Unlocked,
    /// Under the shared inode lock.
    Locked,
    /// Under the lock after an unlocked pass failed: the state is checked
    /// against the store afresh.
    Again,
}

/// A run of slots read from a file, with what decrypting it needs (owned:
/// no lock is held while it is decrypted).
struct Run {
    ino: InodeId,
    circle: crate::ids::CircleId,
    content: crate::ids::ContentId,
    /// Per block of the run: inside the record's extents (else a hole).
    written: Vec<bool>,
    /// The ciphers of the key generations the run's entries name.
    ciphers: Vec<(KeyGen, Arc<Cipher>)>,
    slots: slots::SlotRun,
    first: u64,
    offset: u64,
    end: u64,
    /// A failure is not logged (a first pass: the read is made again).
    quiet: bool,
}

impl Run {
    /// Decrypt blocks `ks` (indexes into the run) into `out`, which holds
    /// the plaintext from file offset `out_at` on.
    fn decrypt(&self, ks: std::ops::Range<usize>, out: &mut [u8], out_at: u64) -> Result<()> {
        let bs = BLOCK_SIZE as u64;
        let mut pt = vec![0u8; BLOCK_SIZE];
        let res = (|| {
            for k in ks {
                let i = self.first + k as u64;
                let bstart = i * bs;
                let lo = self.offset.max(bstart);
                let hi = self.end.min(bstart + bs);
                let dst = &mut out[(lo - out_at) as usize..(hi - out_at) as usize];
                if !self.written[k] {
                    dst.fill(0);
                    continue;
                }
                let Some((entry, page)) = self.slots.slot(k) else {
                    if !self.quiet {
                        log::error!(
                            "inode {} block {i} is missing (truncated block file)",
                            self.ino
                        );
                    }
                    return err(ErrorKind::Integrity, "content block missing");
                };
                // A whole block is opened straight into the reply.
                let whole = dst.len() == BLOCK_SIZE;
                let into: &mut [u8] = if whole { dst } else { &mut pt };
                open_page(entry, page, into, |g| {
                    let (_, c) = self.ciphers.iter().find(|(x, _)| *x == g).ok_or_else(|| {
                        Error::new(
                            ErrorKind::Integrity,
                            format!("no file key for generation {g}"),
                        )
                    })?;
                    Ok((
                        c.clone(),
                        aad::block(self.circle, &self.content, g, BlockIndex(i)),
                    ))
                })
                .inspect_err(|_| {
                    if !self.quiet {
                        log::error!("integrity failure in inode {} block {i}", self.ino);
                    }
                })?;
                if !whole {
                    let dst = &mut out[(lo - out_at) as usize..(hi - out_at) as usize];
                    dst.copy_from_slice(&pt[(lo - bstart) as usize..(hi - bstart) as usize]);
                }
            }
            Ok(())
        })();
        pt.fill(0);
        res
    }
}
