//! What other mounts of the store changed, read from the inode change feed
//! so the adapter can drop the kernel's cached attributes and names.

use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::ids::InodeId;
use crate::store::files::DirentRow;

use super::{Workspace, lock};

/// Changes read per poll (the rest wait for the next one).
const BATCH: usize = 4096;
/// Feed rows older than this are deleted (every mount polls several times
/// a second; a mount stalled for longer relies on the cache time alone).
const KEEP_SECS: i64 = 10;
/// How often a mount looks for rows to prune.
const PRUNE_EVERY: Duration = Duration::from_secs(5);

/// A change another mount made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// The inode's attributes or link count changed, or it is gone.
    Attrs(InodeId),
    /// `name` in directory `parent` was added (naming `ino`) or removed
    /// (it named `ino`): the kernel's entry for it, or its cached absence,
    /// is stale.
    Name {
        /// The directory.
        parent: InodeId,
        /// The plaintext name.
        name: Vec<u8>,
        /// The inode it named.
        ino: InodeId,
    },
}

/// The mount's position in the feed.
#[derive(Debug)]
pub(super) struct FeedState {
    /// This mount's origin id in the feed.
    pub origin: i64,
    /// The last position read.
    pub last: i64,
    /// When the feed was last pruned.
    pub pruned: Option<Instant>,
    /// The store version of the last read that left nothing unread: while
    /// no other connection has committed since, no other mount changed
    /// anything that read did not see.
    pub quiet: Option<crate::store::StoreVersion>,
}

impl Workspace {
    /// Start recording this mount's changes and skip what is already in the feed.
    pub(super) fn feed_start(&self) -> Result<()> {
        let origin = i64::from_le_bytes(crate::crypto::random_bytes::<8>()?);
        let origin = self
            .vault
            .store()
            .record_changes(origin, Some(self.mount_lock.probe()))?;
        let last = self.vault.store().read(|tx| tx.changes_latest())?;
        *lock(&self.feed)? = FeedState {
            origin,
            last,
            pruned: None,
            quiet: None,
        };
        Ok(())
    }

    /// Whether another mount changed `ino` since the feed was last read
    /// (what the last read found has been invalidated already). Open uses
    /// it for close-to-open: only then are the kernel's attributes and pages
    /// of the file dropped.
    pub fn changed_elsewhere(&self, ino: InodeId) -> Result<bool> {
        let (last, origin, quiet) = {
            let f = lock(&self.feed)?;
            (f.last, f.origin, f.quiet)
        };
        let store = self.vault.store();
        if let Some(q) = quiet
            && q.no_foreign_commit_until(&store.version()?)
        {
            return Ok(false);
        }
        Ok(store.read(|tx| tx.changed_since(last, ino, origin))?)
    }

    /// Changes other mounts made since the last call. A changed name of a
    /// circle this session cannot read (or that fails to open) is reported
    /// as a change of the directory's attributes only.
    pub fn take_changes(&self) -> Result<Vec<Change>> {
        let mut feed = lock(&self.feed)?;
        let store = self.vault.store();
        let (latest, rows, version) = store.read(|tx| {
            let latest = tx.changes_latest()?;
            let rows = tx.changes_since(feed.last, feed.origin, BATCH)?;
            Ok::<_, Error>((latest, rows, store.version_in(tx)?))
        })?;
        // Past our own rows too, unless the batch was cut short.
        if rows.len() < BATCH {
            feed.last = feed.last.max(latest);
            feed.quiet = Some(version);
        } else {
            feed.quiet = None;
        }
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            feed.last = feed.last.max(r.seq);
            out.push(Change::Attrs(r.ino));
            let Some(rm) = &r.name else { continue };
            out.push(Change::Attrs(rm.parent));
            let name = rm.circle.and_then(|c| self.access(c).ok()).and_then(|a| {
                let d = DirentRow {
                    parent: rm.parent,
                    name_index: Vec::new(),
                    epoch: rm.epoch,
                    name_ct: rm.name_ct.clone(),
                    ino: r.ino,
                };
                self.open_name(&a, &d).ok()
            });
            if let Some(name) = name {
                out.push(Change::Name {
                    parent: rm.parent,
                    name,
                    ino: r.ino,
                });
            }
        }
        out.dedup();
        if rows.is_empty() && feed.pruned.is_none_or(|t| t.elapsed() >= PRUNE_EVERY) {
            feed.pruned = Some(Instant::now());
            drop(feed);
            let store = self.vault.store();
            if store.read(|tx| tx.changes_stale(KEEP_SECS))? && !self.read_only {
                store.write(|tx| tx.changes_prune(KEEP_SECS))?;
            }
        }
        Ok(out)
    }
}
