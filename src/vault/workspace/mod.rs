//! A mounted account's view of its circles as a file tree: inode operations
//! on `(circle, inode)` with every trust-level check, no FUSE types.

mod attrcache;
mod content;
mod dirpos;
mod feed;
mod rekey;
mod tree;
mod xattr;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::error::{Error, ErrorKind, Result, err};
use crate::format::attrs::{Attrs, Kind};
use crate::ids::{CircleId, CircleName, InodeId};
use crate::level::TrustLevel;
use crate::store::Tx;
use crate::store::files::InodeRow;
use crate::store::rows::CircleRow;

use super::keys::CircleKeys;
use super::{Object, Op, Session, Vault, authorize};

pub use content::OpenFile;
pub use feed::Change;
pub use rekey::RekeyReport;
#[cfg(feature = "test-hooks")]
pub use tree::LISTING_PAUSE_US;
pub use tree::{DirEntry, Listed, NewNode, RenameMode, SetAttr};
pub use xattr::XattrMode;

/// How often the change log is polled for membership changes made elsewhere.
const REFRESH_EVERY: Duration = Duration::from_millis(200);

/// The caller of a file operation (from the kernel request).
#[derive(Clone, Copy, Debug)]
pub struct Caller {
    /// uid.
    pub uid: u32,
    /// gid.
    pub gid: u32,
}

/// An inode with its attributes and link count.
#[derive(Clone, Debug)]
pub struct Node {
    /// Inode id.
    pub ino: InodeId,
    /// Attributes.
    pub attrs: Attrs,
    /// Link count.
    pub nlink: u32,
}

/// A circle the session can see.
pub struct CircleAccess {
    /// Stored row.
    pub row: CircleRow,
    /// Decrypted name.
    pub name: CircleName,
    /// The session's level.
    pub level: TrustLevel,
    /// Keys.
    pub keys: Arc<CircleKeys>,
}

/// A circle as listed at the top of the mount.
#[derive(Clone, Debug)]
pub struct CircleEntry {
    /// Name.
    pub name: CircleName,
    /// Root directory inode.
    pub root: InodeId,
    /// Level.
    pub level: TrustLevel,
}

struct State {
    circles: HashMap<CircleId, Arc<CircleAccess>>,
    last_change: i64,
    checked: Option<Instant>,
    /// Circles lost since the adapter last asked (see [`Workspace::take_evicted`]).
    evicted: Vec<Evicted>,
}

/// A circle this mount lost (revoked or deleted): what the kernel may
/// still cache of it.
#[derive(Clone, Debug)]
pub struct Evicted {
    /// Its top-level directory name.
    pub name: CircleName,
    /// Its root directory.
    pub root: Option<InodeId>,
    /// Files of it that were loaded (open or recently used).
    pub files: Vec<InodeId>,
}

/// The file layer of one mount.
pub struct Workspace {
    vault: Arc<Vault>,
    session: Arc<Session>,
    state: Mutex<State>,
    open: Mutex<HashMap<InodeId, Arc<Mutex<OpenFile>>>>,
    feed: Mutex<feed::FeedState>,
    read_only: bool,
    mount_lock: crate::store::blocks::MountLock,
    /// Decrypted records and link counts (see [`attrcache`]).
    attrs: Arc<attrcache::AttrCache>,
    /// Check every cache hit against the store (debug builds, or
    /// `CIRCLEFS_CHECK_ATTR_CACHE` set): a disagreement is an EIO.
    check_cache: bool,
    /// Keep the first writes of a new file in its open state until its
    /// flush (see `content::pending`); on only where something settles
    /// them periodically ([`Workspace::settle_pending`]: the daemon).
    write_behind: std::sync::atomic::AtomicBool,
    /// This mount found no other mount once (see
    /// `Workspace::none_pending_elsewhere`).
    found_alone: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Workspace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Workspace({:?})", self.session)
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> Result<MutexGuard<'_, T>> {
    m.lock()
        .map_err(|_| Error::new(ErrorKind::Internal, "lock poisoned"))
}

impl Workspace {
    /// A workspace for `session`. When no other mount of the store is
    /// running, removes orphaned inodes and block files left by a crash.
    pub fn new(vault: Arc<Vault>, session: Arc<Session>, read_only: bool) -> Result<Workspace> {
        let (lock_guard, alone) = vault.store().mount_lock()?;
        let cache = Arc::new(attrcache::AttrCache::default());
        let weak = Arc::downgrade(&cache);
        vault.store().on_touch(Arc::new(move |t| {
            if let Some(c) = weak.upgrade() {
                c.touch(t);
            }
        }))?;
        let ws = Workspace {
            vault,
            session,
            state: Mutex::new(State {
                circles: HashMap::new(),
                last_change: -1,
                checked: None,
                evicted: Vec::new(),
            }),
            open: Mutex::new(HashMap::new()),
            feed: Mutex::new(feed::FeedState {
                origin: 0,
                last: 0,
                pruned: None,
                quiet: None,
            }),
            read_only,
            mount_lock: lock_guard,
            attrs: cache,
            check_cache: cfg!(debug_assertions)
                || std::env::var_os("CIRCLEFS_CHECK_ATTR_CACHE").is_some(),
            write_behind: std::sync::atomic::AtomicBool::new(false),
            found_alone: std::sync::atomic::AtomicBool::new(false),
        };
        ws.vault.store().set_relaxed_sync()?;
        // Now present to the other mounts: wait once for their open
        // batches, which were started before they could see this mount
        // (each commits its batch at once from here on when it closes a
        // file or saves a record under the inode lock).
        ws.vault.store().write(|_| Ok::<_, Error>(()))?;
        ws.vault.store().commit_pending()?;
        if alone {
            ws.sweep_orphans()?;
        }
        ws.feed_start()?;
        ws.refresh(true)?;
        Ok(ws)
    }

    /// The session.
    pub fn session(&self) -> &Arc<Session> {
        &self.session
    }

    /// The vault.
    pub fn vault(&self) -> &Arc<Vault> {
        &self.vault
    }

    fn sweep_orphans(&self) -> Result<()> {
        let orphans = self.vault.store().write(|tx| {
            let mut gone = Vec::new();
            for i in tx.orphan_inodes()? {
                gone.push(tx.inode_delete(i)?);
            }
            Ok::<_, Error>(gone)
        })?;
        for d in orphans {
            self.vault.store().deleted(d)?;
        }
        // Block files whose inode is gone (a crash between the row deletion
        // and the file removal): their keys are destroyed; remove the bytes.
        for (path, ino) in self.vault.store().block_inodes()? {
            if self.vault.store().read(|tx| tx.inode_get(ino))?.is_none() {
                log::info!("removing orphaned block file {}", path.display());
                let _ = std::fs::remove_file(&path);
            }
        }
        Ok(())
    }

    /// Reload the circle list when the store's change log moved (or `force`).
    /// Returns true when the set of circles or their levels/epochs changed.
    /// Never called inside a store transaction (it opens its own).
    pub fn refresh(&self, force: bool) -> Result<bool> {
        let last = {
            let mut st = lock(&self.state)?;
            if !force && st.checked.is_some_and(|t| t.elapsed() < REFRESH_EVERY) {
                return Ok(false);
            }
            st.checked = Some(Instant::now());
            st.last_change
        };
        let latest = self.vault.store().read(|tx| tx.change_latest())?;
        if !force && latest == last {
            return Ok(false);
        }
        // A removal made by someone holding no circle key leaves the
        // re-seal to a trustee: do it now if that is us.
        if let Err(e) = self.vault.finish_reseals(&self.session) {
            log::warn!("pending re-seal not finished: {e}");
        }
        let mut fresh = HashMap::new();
        for (row, name, level) in self.vault.my_circles(&self.session)? {
            let keys = self
                .vault
                .store()
                .read(|tx| self.vault.circle_keys(tx, &self.session, &row));
            match keys {
                Ok(keys) => {
                    fresh.insert(
                        row.id,
                        Arc::new(CircleAccess {
                            row,
                            name,
                            level,
                            keys,
                        }),
                    );
                }
                Err(e) => log::warn!("circle {} skipped: {e}", row.id),
            }
        }
        let mut st = lock(&self.state)?;
        let changed = fresh.len() != st.circles.len()
            || fresh.iter().any(|(id, a)| {
                st.circles.get(id).is_none_or(|o| {
                    o.level != a.level || o.row.epoch != a.row.epoch || o.name != a.name
                })
            });
        // Drop keys of circles we lost (zeroized when the last Arc goes),
        // including those held by open files of those circles.
        let lost: Vec<CircleId> = st
            .circles
            .keys()
            .filter(|id| !fresh.contains_key(id))
            .copied()
            .collect();
        let mut evicted: Vec<Evicted> = Vec::new();
        for id in &lost {
            self.session.forget_keys(Some(*id));
            if let Some(a) = st.circles.get(id) {
                evicted.push(Evicted {
                    name: a.name.clone(),
                    root: a.row.root,
                    files: Vec::new(),
                });
            }
        }
        st.circles = fresh;
        st.last_change = latest;
        drop(st);
        if !lost.is_empty() {
            let mut files: Vec<(CircleId, InodeId)> = Vec::new();
            lock(&self.open)?.retain(|ino, f| match f.try_lock() {
                Ok(of) => {
                    let gone = lost.contains(&of.circle());
                    if gone {
                        files.push((of.circle(), *ino));
                    }
                    !gone
                }
                Err(_) => true,
            });
            for (ev, id) in evicted.iter_mut().zip(lost.iter()) {
                ev.files = files
                    .iter()
                    .filter(|(c, _)| c == id)
                    .map(|(_, i)| *i)
                    .collect();
            }
            lock(&self.state)?.evicted.extend(evicted);
        }
        Ok(changed)
    }

    /// Circles lost since the last call, for the adapter to drop the
    /// kernel's cached entries, attributes and pages of them.
    pub fn take_evicted(&self) -> Vec<Evicted> {
        lock(&self.state)
            .map(|mut st| std::mem::take(&mut st.evicted))
            .unwrap_or_default()
    }

    /// Circles shown at the top of the mount.
    pub fn circles(&self) -> Result<Vec<CircleEntry>> {
        self.refresh(false)?;
        let st = lock(&self.state)?;
        let mut v: Vec<CircleEntry> = st
            .circles
            .values()
            .filter_map(|a| {
                a.row.root.map(|root| CircleEntry {
                    name: a.name.clone(),
                    root,
                    level: a.level,
                })
            })
            .collect();
        v.sort_by(|a, b| a.name.0.cmp(&b.name.0));
        Ok(v)
    }

    /// Access to a circle (ENOENT when the session is not a trustee). Uses
    /// the cached view only: safe inside a store transaction.
    fn access(&self, c: CircleId) -> Result<Arc<CircleAccess>> {
        let st = lock(&self.state)?;
        st.circles.get(&c).cloned().ok_or_else(|| {
            Error::new(
                ErrorKind::Forbidden,
                "not (or no longer) a circle of this account",
            )
        })
    }

    /// Check the session may do `op` in circle `a`.
    fn check(&self, a: &CircleAccess, op: Op) -> Result<()> {
        if op == Op::WriteFiles && self.read_only {
            return err(ErrorKind::Forbidden, "mounted read-only");
        }
        let subj = super::Subject {
            account: self.session.account,
            sysadmin: false,
            user_admin: false,
            may_change_password: false,
        };
        authorize(
            &subj,
            op,
            &Object::Circle {
                id: a.row.id,
                level: Some(a.level),
            },
        )
    }

    /// Load an inode row and its circle access.
    fn row(&self, tx: &Tx<'_>, ino: InodeId) -> Result<(InodeRow, Arc<CircleAccess>)> {
        let row = tx
            .inode_get(ino)?
            .ok_or_else(|| Error::new(ErrorKind::NotFound, "no such inode"))?;
        let a = self.access_tx(tx, row.circle)?;
        Ok((row, a))
    }

    /// Access to a circle as of the store's current key epoch: if a rotation
    /// committed since the last refresh, the keys are reloaded now, so
    /// nothing is ever sealed under an epoch a removed trustee holds.
    /// Safe inside a transaction (reads through `tx`).
    pub(super) fn access_tx(&self, tx: &Tx<'_>, c: CircleId) -> Result<Arc<CircleAccess>> {
        let a = self.access(c)?;
        let row = tx
            .circle_by_id(c)?
            .ok_or_else(|| Error::new(ErrorKind::Forbidden, "the circle was deleted"))?;
        if row.epoch == a.row.epoch {
            return Ok(a);
        }
        let level = tx
            .trustee_level(c, self.session.account)?
            .and_then(TrustLevel::from_i64)
            .ok_or_else(|| Error::new(ErrorKind::Forbidden, "access to this circle was revoked"))?;
        let keys = self.vault.circle_keys(tx, &self.session, &row)?;
        let fresh = Arc::new(CircleAccess {
            row,
            name: a.name.clone(),
            level,
            keys,
        });
        lock(&self.state)?.circles.insert(c, fresh.clone());
        Ok(fresh)
    }

    /// Link count of an inode as stored.
    fn nlink(tx: &Tx<'_>, ino: InodeId, kind: Kind) -> Result<u32> {
        let n = if kind == Kind::Dir {
            2 + tx.subdir_count(ino)?
        } else {
            tx.dirent_links(ino)?
        };
        Ok(n.clamp(0, u32::MAX as i64) as u32)
    }

    /// Attributes and link count of an inode (open files: the live state).
    /// Answered from the attribute cache when it holds both at the
    /// store's current data version, else read in a transaction.
    pub fn getattr(&self, ino: InodeId) -> Result<Node> {
        let live = self.open_attrs(ino)?;
        if live.is_none() {
            let at = self.vault.store().version()?;
            if let Some((_, attrs, Some(nlink))) = self.cached(ino, at.data_version()) {
                let node = Node { ino, attrs, nlink };
                // Checked only if nothing was written since, here or
                // elsewhere: a later change is not this answer's to see.
                if self.check_cache {
                    let store = self.vault.store();
                    store.read(|tx| {
                        if store.version_in(tx)? == at {
                            self.check_cached(tx, &node)?;
                        }
                        Ok::<_, Error>(())
                    })?;
                }
                self.attrs.count(attrcache::Outcome::Hit);
                return Ok(node);
            }
        }
        self.vault.store().read(|tx| {
            let version = tx.data_version()?;
            self.node_tx(tx, ino, live, version)
        })
    }

    /// The attribute cache's outcomes so far, as a line for `-o opstats`.
    pub fn cache_summary(&self) -> String {
        let (hit, attrs, miss) = self.attrs.counts();
        format!(
            "attribute cache: {hit} hits, {attrs} hits of the record only (link count counted), {miss} misses (record read and opened)\n"
        )
    }

    /// What the cache holds of `ino` at data version `version` (its
    /// circle, record and link count if known), when the session may
    /// still read files of that circle (in-memory view: the entry was
    /// read under a full check).
    fn cached(&self, ino: InodeId, version: i64) -> Option<(CircleId, Attrs, Option<u32>)> {
        let c = self.attrs.get(ino, version);
        let (circle, attrs) = (c.circle?, c.attrs?);
        self.access(circle)
            .and_then(|a| self.check(&a, Op::ReadFiles))
            .ok()?;
        Some((circle, attrs, c.nlink))
    }

    /// An inode as a node, inside `tx` read at data version `version`:
    /// access checked, attributes `live` (an open file's) or else the
    /// stored record's, link count counted. What is read from the store
    /// is cached; what the cache holds is used.
    pub(super) fn node_tx(
        &self,
        tx: &Tx<'_>,
        ino: InodeId,
        live: Option<Attrs>,
        version: i64,
    ) -> Result<Node> {
        let Some(live) = live else {
            if let Some((circle, attrs, nlink)) = self.cached(ino, version) {
                let nlink = match nlink {
                    Some(n) => {
                        self.attrs.count(attrcache::Outcome::Hit);
                        n
                    }
                    None => {
                        self.attrs.count(attrcache::Outcome::HitAttrs);
                        let n = Self::nlink(tx, ino, attrs.kind)?;
                        self.attrs.put(ino, circle, version, None, Some(n));
                        n
                    }
                };
                let node = Node { ino, attrs, nlink };
                if self.check_cache {
                    self.check_cached(tx, &node)?;
                }
                return Ok(node);
            }
            self.attrs.count(attrcache::Outcome::Miss);
            let (circle, node) = self.stored_node(tx, ino)?;
            self.attrs
                .put(ino, circle, version, Some(&node.attrs), Some(node.nlink));
            return Ok(node);
        };
        let (_, a) = self.row(tx, ino)?;
        self.check(&a, Op::ReadFiles)?;
        let nlink = Self::nlink(tx, ino, live.kind)?;
        Ok(Node {
            ino,
            attrs: live,
            nlink,
        })
    }

    /// An inode as the store holds it, inside `tx`: access checked,
    /// record opened, link count counted; with its circle.
    fn stored_node(&self, tx: &Tx<'_>, ino: InodeId) -> Result<(CircleId, Node)> {
        let (row, a) = self.row(tx, ino)?;
        self.check(&a, Op::ReadFiles)?;
        let attrs = a.keys.open_attrs(&row)?;
        let nlink = Self::nlink(tx, ino, attrs.kind)?;
        Ok((row.circle, Node { ino, attrs, nlink }))
    }

    /// Compare a node answered from the cache with the store (debug
    /// builds and test runs): any difference, including the store no
    /// longer having or showing the inode, is a missed invalidation.
    fn check_cached(&self, tx: &Tx<'_>, node: &Node) -> Result<()> {
        match self.stored_node(tx, node.ino) {
            Ok((_, s)) if s.attrs == node.attrs && s.nlink == node.nlink => Ok(()),
            Ok((_, s)) => {
                log::error!(
                    "attribute cache disagrees with the store for inode {}: cached {:?} nlink {}, stored {:?} nlink {}",
                    node.ino,
                    node.attrs,
                    node.nlink,
                    s.attrs,
                    s.nlink
                );
                err(ErrorKind::Internal, "attribute cache out of date")
            }
            Err(e) if matches!(e.kind, ErrorKind::NotFound | ErrorKind::Forbidden) => {
                log::error!(
                    "attribute cache answered for inode {} that the store refuses: {e}",
                    node.ino
                );
                err(ErrorKind::Internal, "attribute cache out of date")
            }
            Err(e) => Err(e),
        }
    }

    /// Open record `row` of `ino`, change it with `f` and save it in `tx`
    /// under `a` (read with `access_tx` in `tx`, see `save_attrs`); returns
    /// the new attributes.
    fn change_record(
        &self,
        tx: &Tx<'_>,
        a: &CircleAccess,
        ino: InodeId,
        row: &InodeRow,
        f: impl FnOnce(&mut Attrs) -> Result<()>,
    ) -> Result<Attrs> {
        let mut attrs = a.keys.open_attrs(row)?;
        f(&mut attrs)?;
        self.save_attrs(tx, a, ino, &attrs)?;
        Ok(attrs)
    }

    /// Save an inode's attributes, sealed under the epoch of `a`, which the
    /// caller read with `access_tx` in this same transaction: the epoch
    /// current now, never one a revocation retired (callers holding an
    /// access loaded earlier read it again first).
    fn save_attrs(
        &self,
        tx: &Tx<'_>,
        a: &CircleAccess,
        ino: InodeId,
        attrs: &Attrs,
    ) -> Result<i64> {
        let (e, sealed) = a.keys.seal_attrs(ino, attrs)?;
        let seq = tx.inode_update(ino, e, &sealed)?;
        self.attrs.saved(ino, a.row.id, attrs);
        Ok(seq)
    }

    /// The circle an inode belongs to, with the session's level (for the
    /// control layer and FUSE permission decisions).
    pub fn level_of(&self, ino: InodeId) -> Result<TrustLevel> {
        let c = self
            .vault
            .store()
            .read(|tx| tx.inode_get(ino))?
            .ok_or_else(|| Error::new(ErrorKind::NotFound, "no such inode"))?
            .circle;
        Ok(self.access(c)?.level)
    }

    /// Make committed metadata durable (fsyncdir).
    pub fn sync(&self) -> Result<()> {
        Ok(self.vault.store().sync()?)
    }

    /// Flush every dirty open file and checkpoint the WAL (unmount).
    pub fn shutdown(&self) -> Result<()> {
        for (ino, f) in self.open_states()? {
            if let Err(e) = self.flush_file(ino, &f, true) {
                log::error!("flush of inode {ino} at unmount failed: {e}");
            }
        }
        self.vault.store().checkpoint()?;
        Ok(())
    }
}

/// Filesystem statistics of the backing store.
#[derive(Clone, Copy, Debug, Default)]
pub struct StatFs {
    /// Total blocks (of `bsize`).
    pub blocks: u64,
    /// Free blocks.
    pub bfree: u64,
    /// Blocks available to unprivileged users.
    pub bavail: u64,
    /// Inodes in the store.
    pub files: u64,
    /// Free inodes (of the backing filesystem).
    pub ffree: u64,
    /// Block size.
    pub bsize: u32,
}

impl Workspace {
    /// Space of the backing filesystem, inode count of the store.
    pub fn statfs(&self) -> Result<StatFs> {
        let v = nix::sys::statvfs::statvfs(self.vault.store().root())
            .map_err(|e| Error::new(ErrorKind::Internal, format!("statvfs: {e}")))?;
        let files = self.vault.store().read(|tx| tx.inode_count())?;
        let frag = v.fragment_size().max(1);
        Ok(StatFs {
            blocks: v.blocks() * frag / 4096,
            bfree: v.blocks_free() * frag / 4096,
            bavail: v.blocks_available() * frag / 4096,
            files: files.max(0) as u64,
            ffree: v.files_free(),
            bsize: 4096,
        })
    }
}
