//! Decrypted attributes and link counts of recently used inodes, kept
//! exact: this mount's writes update or drop entries as they happen, and
//! another connection's commit empties the cache.
//!
//! A GETATTR that reaches the daemon after the kernel dropped its own copy
//! (after every read of a file, and for a directory after every change in
//! it) is answered from here without a transaction or a decryption.
//!
//! Exactness rests on two facts. The store tells [`AttrCache::touch`] of
//! every record and link-count change a write makes, inside the write,
//! while the connection is held ([`crate::store::Store::on_touch`]), and
//! entries are filled only by code holding that same connection, so no
//! write falls between reading a record and caching it. And entries are
//! valid only at the `PRAGMA data_version` they were read at: any commit
//! by another connection (another mount, an admin command) moves it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::format::attrs::Attrs;
use crate::ids::{CircleId, InodeId};
use crate::store::Touch;

/// Entries kept at most (records with many extents are not kept at all,
/// see [`MAX_EXTENTS`]): about 250 bytes each, so at most about 8 MiB. A
/// source tree with its git objects (the bench's: about 12,000 inodes)
/// fits.
pub(super) const CAPACITY: usize = 32_768;

/// Entries left when a full cache makes room: a quarter is dropped at a
/// time, in the map's (random) order, so that a working set larger than
/// the cache still finds most of its entries.
const AFTER_EVICTION: usize = CAPACITY / 4 * 3;

/// Records whose extent list is longer than this are not cached (bounds
/// the cache's memory to about `CAPACITY` small records).
const MAX_EXTENTS: usize = 16;

#[derive(Clone, Debug)]
struct Entry {
    circle: CircleId,
    attrs: Option<Attrs>,
    nlink: Option<u32>,
}

#[derive(Debug, Default)]
struct Inner {
    /// The data version every entry was read at (None: never set).
    version: Option<i64>,
    map: HashMap<InodeId, Entry>,
}

/// What the cache knows of one inode.
#[derive(Clone, Debug, Default)]
pub(super) struct Cached {
    /// Circle, when anything is known.
    pub circle: Option<CircleId>,
    /// Attributes as stored.
    pub attrs: Option<Attrs>,
    /// Link count as stored.
    pub nlink: Option<u32>,
}

/// How a lookup of the cache went, counted for `-o opstats`.
#[derive(Clone, Copy, Debug)]
pub(super) enum Outcome {
    /// Attributes and link count from the cache.
    Hit,
    /// Attributes from the cache, link count counted in the store.
    HitAttrs,
    /// Read from the store.
    Miss,
}

/// The cache (one per mount).
#[derive(Debug, Default)]
pub(super) struct AttrCache {
    inner: Mutex<Inner>,
    counts: [AtomicU64; 3],
}

impl AttrCache {
    fn with<T: Default>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        // A poisoned lock only loses cached entries: start empty.
        match self.inner.lock() {
            Ok(mut g) => f(&mut g),
            Err(p) => {
                let mut g = p.into_inner();
                *g = Inner::default();
                self.inner.clear_poison();
                T::default()
            }
        }
    }

    /// Count one lookup's outcome.
    pub(super) fn count(&self, o: Outcome) {
        self.counts[o as usize].fetch_add(1, Relaxed);
    }

    /// Outcomes so far: (hits, hits of attributes only, misses).
    pub(super) fn counts(&self) -> (u64, u64, u64) {
        let c = |i: usize| self.counts[i].load(Relaxed);
        (c(0), c(1), c(2))
    }

    /// Apply a change reported by the store (called inside the write).
    pub(super) fn touch(&self, t: Touch) {
        self.with(|c| match t {
            Touch::Record(ino) => {
                if let Some(e) = c.map.get_mut(&ino) {
                    e.attrs = None;
                }
            }
            Touch::Links(ino) => {
                if let Some(e) = c.map.get_mut(&ino) {
                    e.nlink = None;
                }
            }
            Touch::All => c.map.clear(),
        })
    }

    /// What is known of `ino` at data version `version` (the caller's
    /// reading of it); nothing when the cache holds another version.
    pub(super) fn get(&self, ino: InodeId, version: i64) -> Cached {
        self.with(|c| {
            if c.version != Some(version) {
                return Cached::default();
            }
            c.map
                .get(&ino)
                .map(|e| Cached {
                    circle: Some(e.circle),
                    attrs: e.attrs.clone(),
                    nlink: e.nlink,
                })
                .unwrap_or_default()
        })
    }

    /// Record what was read of `ino` at `version` by a caller holding the
    /// store's connection (so nothing was written since the read). A
    /// different version empties the cache first: the holder of the
    /// connection reads the newest one.
    pub(super) fn put(
        &self,
        ino: InodeId,
        circle: CircleId,
        version: i64,
        attrs: Option<&Attrs>,
        nlink: Option<u32>,
    ) {
        self.with(|c| {
            if c.version != Some(version) {
                c.map.clear();
                c.version = Some(version);
            }
            Self::insert(c, ino, circle, attrs, nlink);
        })
    }

    /// The attributes `ino` was just saved with, by a write that holds
    /// the connection (the store already reported the record changed).
    /// Kept only while the cache is valid: a write happens at the version
    /// the cache was filled at or empties it ([`Touch::All`] on rollback).
    pub(super) fn saved(&self, ino: InodeId, circle: CircleId, attrs: &Attrs) {
        self.with(|c| {
            if c.version.is_some() {
                Self::insert(c, ino, circle, Some(attrs), None);
            }
        })
    }

    fn insert(
        c: &mut Inner,
        ino: InodeId,
        circle: CircleId,
        attrs: Option<&Attrs>,
        nlink: Option<u32>,
    ) {
        let attrs = attrs.filter(|a| a.extents.0.len() <= MAX_EXTENTS);
        if !c.map.contains_key(&ino) && c.map.len() >= CAPACITY {
            let mut drop = c.map.len() - AFTER_EVICTION;
            c.map.retain(|_, _| {
                if drop == 0 {
                    return true;
                }
                drop -= 1;
                false
            });
        }
        let e = c.map.entry(ino).or_insert(Entry {
            circle,
            attrs: None,
            nlink: None,
        });
        if e.circle != circle {
            e.attrs = None;
            e.nlink = None;
            e.circle = circle;
        }
        if let Some(a) = attrs {
            e.attrs = Some(a.clone());
        }
        if nlink.is_some() {
            e.nlink = nlink;
        }
    }

    /// Number of entries (tests, statistics).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.with(|c| c.map.len())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::format::attrs::sample_file;

    /// A file of `size` bytes with `extents` written ranges.
    fn attrs(size: u64, extents: usize) -> Attrs {
        let ranges: Vec<(u64, u64)> = (0..extents as u64).map(|i| (2 * i, 2 * i + 1)).collect();
        sample_file(size, &ranges)
    }

    const C: CircleId = CircleId(1);

    #[test]
    fn entries_hold_only_at_their_version() {
        let c = AttrCache::default();
        c.put(InodeId(5), C, 10, Some(&attrs(1, 1)), Some(1));
        let got = c.get(InodeId(5), 10);
        assert_eq!(got.attrs.unwrap().size, 1);
        assert_eq!(got.nlink, Some(1));
        // Another connection committed: nothing holds.
        assert!(c.get(InodeId(5), 11).circle.is_none());
        // Filled at the newer version: the older entries are gone.
        c.put(InodeId(6), C, 11, Some(&attrs(2, 1)), Some(1));
        assert!(c.get(InodeId(5), 11).circle.is_none());
        assert_eq!(c.get(InodeId(6), 11).attrs.unwrap().size, 2);
    }

    #[test]
    fn touches_drop_what_they_name_and_saves_replace_it() {
        let c = AttrCache::default();
        c.put(InodeId(5), C, 1, Some(&attrs(1, 1)), Some(2));
        c.put(InodeId(6), C, 1, Some(&attrs(1, 1)), Some(1));
        c.touch(Touch::Record(InodeId(5)));
        let got = c.get(InodeId(5), 1);
        assert!(got.attrs.is_none());
        assert_eq!(got.nlink, Some(2), "the link count still holds");
        c.saved(InodeId(5), C, &attrs(9, 1));
        assert_eq!(c.get(InodeId(5), 1).attrs.unwrap().size, 9);
        c.touch(Touch::Links(InodeId(5)));
        let got = c.get(InodeId(5), 1);
        assert_eq!(got.attrs.unwrap().size, 9);
        assert!(got.nlink.is_none());
        assert!(c.get(InodeId(6), 1).nlink.is_some(), "others untouched");
        c.touch(Touch::All);
        assert!(c.get(InodeId(6), 1).circle.is_none());
        assert_eq!(c.len(), 0);
    }

    #[test]
    fn a_save_before_any_fill_is_not_kept() {
        let c = AttrCache::default();
        c.saved(InodeId(5), C, &attrs(1, 1));
        assert_eq!(c.len(), 0);
    }

    #[test]
    fn size_is_bounded() {
        let c = AttrCache::default();
        for i in 0..(CAPACITY as i64 * 3 + 1) {
            c.put(InodeId(i + 1), C, 1, Some(&attrs(1, 1)), Some(1));
            assert!(c.len() <= CAPACITY);
        }
        // Making room drops a quarter, not everything, and keeps the new
        // entry.
        assert!(c.len() > AFTER_EVICTION);
        let last = InodeId(CAPACITY as i64 * 3 + 1);
        assert!(c.get(last, 1).attrs.is_some());
        // Records with long extent lists are not kept.
        c.put(InodeId(1), C, 2, Some(&attrs(1, MAX_EXTENTS + 1)), Some(1));
        assert!(c.get(InodeId(1), 2).attrs.is_none());
        c.put(InodeId(2), C, 2, Some(&attrs(1, MAX_EXTENTS)), Some(1));
        assert!(c.get(InodeId(2), 2).attrs.is_some());
    }
}
