//! Queries of the inode tree: inodes, directory entries, file keys, xattrs.

use rusqlite::{OptionalExtension, params};

use super::{StoreError, Touch, Tx};
use crate::ids::{CircleId, Epoch, InodeId, KeyGen};

/// The clear kind byte of a directory (`inodes.kind`, `dirents.kind`).
const DIR_KIND: i64 = 2;
/// The clear kind byte of a regular file.
const FILE_KIND: i64 = 1;

/// An inode whose rows [`Tx::inode_delete`] deleted, with whether it may
/// have a block file to remove once that is committed
/// ([`crate::store::Store::deleted`]).
#[must_use = "a deleted inode's block file is removed by Store::deleted"]
#[derive(Clone, Copy, Debug)]
pub struct Deleted {
    /// The inode.
    pub ino: InodeId,
    /// A regular file without inline slots: its content, if any, is in a
    /// block file. (One with inline slots has none, but for the leftover
    /// of a spill a crash interrupted, which the next mount removes as an
    /// orphan: its key is deleted here all the same.)
    pub block_file: bool,
}

/// Stored inode row (attributes sealed).
#[derive(Clone, Debug)]
pub struct InodeRow {
    /// Inode id.
    pub id: InodeId,
    /// Circle.
    pub circle: CircleId,
    /// Kind byte (clear).
    pub kind: u8,
    /// Epoch whose meta key sealed `attrs`.
    pub epoch: Epoch,
    /// Sealed attribute record.
    pub attrs: Vec<u8>,
    /// Change counter of the record.
    pub seq: i64,
}

/// An xattr row: (name index, epoch, sealed name and value).
pub type XattrRow = (Vec<u8>, Epoch, Vec<u8>);

/// Stored directory entry.
#[derive(Clone, Debug)]
pub struct DirentRow {
    /// Parent directory.
    pub parent: InodeId,
    /// Keyed name index.
    pub name_index: Vec<u8>,
    /// Epoch whose name key sealed the name.
    pub epoch: Epoch,
    /// Sealed name.
    pub name_ct: Vec<u8>,
    /// Target inode.
    pub ino: InodeId,
}

/// A wrapped file content key of one generation.
#[derive(Clone, Debug)]
pub struct FileKeyRow {
    /// File.
    pub ino: InodeId,
    /// Key generation.
    pub keygen: KeyGen,
    /// Epoch whose file-key-wrap subkey sealed `wrapped`.
    pub epoch: Epoch,
    /// Epoch the key was created in (kept across re-wraps).
    pub origin: Epoch,
    /// Sealed key.
    pub wrapped: Vec<u8>,
}

fn file_key_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<FileKeyRow> {
    Ok(FileKeyRow {
        ino: InodeId(r.get(0)?),
        keygen: KeyGen(r.get::<_, i64>(1)?.clamp(0, u32::MAX as i64) as u32),
        epoch: epoch(r.get(2)?),
        origin: epoch(r.get(3)?),
        wrapped: r.get(4)?,
    })
}

/// An epoch column (out-of-range values clamped; they then fail the AAD).
pub(super) fn epoch(v: i64) -> Epoch {
    Epoch(v.clamp(0, u32::MAX as i64) as u32)
}

fn inode_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<InodeRow> {
    Ok(InodeRow {
        id: InodeId(r.get(0)?),
        circle: CircleId(r.get(1)?),
        kind: r.get::<_, i64>(2)?.clamp(0, 255) as u8,
        epoch: epoch(r.get(3)?),
        attrs: r.get(4)?,
        seq: r.get(5)?,
    })
}

/// A page of a directory from its first entry, and from an index on: two
/// statements, so that SQLite seeks to the index in the primary key (an
/// `?2 IS NULL OR` condition makes it scan the directory from its first
/// entry for every page).
const DIRENT_PAGE_FIRST: &str = "SELECT parent, name_index, epoch, name_ct, ino, kind FROM dirents \
     WHERE parent = ?1 ORDER BY name_index LIMIT ?2";
const DIRENT_PAGE_FROM: &str = "SELECT parent, name_index, epoch, name_ct, ino, kind FROM dirents \
     WHERE parent = ?1 AND name_index >= ?2 ORDER BY name_index LIMIT ?3";

fn dirent_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<DirentRow> {
    Ok(DirentRow {
        parent: InodeId(r.get(0)?),
        name_index: r.get(1)?,
        epoch: epoch(r.get(2)?),
        name_ct: r.get(3)?,
        ino: InodeId(r.get(4)?),
    })
}

impl Tx<'_> {
    /// The id the next inode of this transaction gets: ids are never
    /// reused (AUTOINCREMENT), so a record sealed for it names no other
    /// inode, ever.
    pub fn inode_next_id(&self) -> Result<InodeId, StoreError> {
        Ok(InodeId(
            self.c
                .prepare_cached(
                    "SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'inodes'), 0) + 1",
                )?
                .query_row([], |r| r.get(0))?,
        ))
    }

    /// Insert inode `ino` (from [`Tx::inode_next_id`] in this transaction)
    /// with its sealed record; returns its change counter.
    pub fn inode_insert(
        &self,
        ino: InodeId,
        circle: CircleId,
        kind: u8,
        epoch: Epoch,
        attrs: &[u8],
    ) -> Result<i64, StoreError> {
        Ok(self
            .c
            .prepare_cached(
                "INSERT INTO inodes(id, circle_id, kind, epoch, attrs, seq) VALUES (?1, ?2, ?3, ?4, ?5, 0)",
            )?
            .execute(params![ino.0, circle.0, kind as i64, epoch.0, attrs])
            .map(|_| {
                self.touched(Touch::Record(ino));
                0
            })?)
    }

    /// Replace an inode's sealed record; returns its new change counter.
    ///
    /// (No `RETURNING` here or in the other writes of a file operation:
    /// SQLite gathers returned rows in an ephemeral table, a b-tree and
    /// pager opened and closed per statement, 6 % of the daemon's samples
    /// during `rm -rf` of a source tree; a lookup by key before the write
    /// costs less.)
    pub fn inode_update(
        &self,
        ino: InodeId,
        epoch: Epoch,
        attrs: &[u8],
    ) -> Result<i64, StoreError> {
        let seq = self
            .inode_seq(ino)?
            .ok_or(StoreError::Sql(rusqlite::Error::QueryReturnedNoRows))?
            + 1;
        self.c
            .prepare_cached("UPDATE inodes SET epoch = ?2, attrs = ?3, seq = ?4 WHERE id = ?1")?
            .execute(params![ino.0, epoch.0, attrs, seq])?;
        self.touched(Touch::Record(ino));
        Ok(seq)
    }

    /// An inode's change counter (None when the inode is gone).
    pub fn inode_seq(&self, ino: InodeId) -> Result<Option<i64>, StoreError> {
        Ok(self
            .c
            .prepare_cached("SELECT seq FROM inodes WHERE id = ?1")?
            .query_row([ino.0], |r| r.get(0))
            .optional()?)
    }

    /// An inode row.
    pub fn inode_get(&self, ino: InodeId) -> Result<Option<InodeRow>, StoreError> {
        Ok(self
            .c
            .prepare_cached(
                "SELECT id, circle_id, kind, epoch, attrs, seq FROM inodes WHERE id = ?1",
            )?
            .query_row([ino.0], inode_row)
            .optional()?)
    }

    /// Delete an inode (its file keys and xattrs cascade; its inline
    /// ciphertext first, see [`Tx::inline_shred`]).
    pub fn inode_delete(&self, ino: InodeId) -> Result<Deleted, StoreError> {
        let inline = self.inline_shred(ino)?;
        let kind = self.inode_kind(ino)?;
        self.c
            .prepare_cached("DELETE FROM inodes WHERE id = ?1")?
            .execute([ino.0])?;
        self.touched(Touch::Record(ino));
        self.touched(Touch::Links(ino));
        Ok(Deleted {
            ino,
            block_file: kind == Some(FILE_KIND) && !inline,
        })
    }

    /// Every inode id of a circle.
    pub fn inode_ids_of_circle(&self, circle: CircleId) -> Result<Vec<InodeId>, StoreError> {
        let mut st = self
            .c
            .prepare_cached("SELECT id FROM inodes WHERE circle_id = ?1")?;
        let v = st
            .query_map([circle.0], |r| Ok(InodeId(r.get(0)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(v)
    }

    /// Number of inodes in the store.
    pub fn inode_count(&self) -> Result<i64, StoreError> {
        Ok(self
            .c
            .prepare_cached("SELECT COUNT(*) FROM inodes")?
            .query_row([], |r| r.get(0))?)
    }

    /// The clear kind byte of an inode (None when it is gone).
    fn inode_kind(&self, ino: InodeId) -> Result<Option<i64>, StoreError> {
        Ok(self
            .c
            .prepare_cached("SELECT kind FROM inodes WHERE id = ?1")?
            .query_row([ino.0], |r| r.get(0))
            .optional()?)
    }

    /// Insert a directory entry (fails with a constraint error on a duplicate index).
    pub fn dirent_insert(&self, d: &DirentRow) -> Result<(), StoreError> {
        // An entry of a missing inode fails the foreign key as before.
        let kind = self.inode_kind(d.ino)?;
        self.c
            .prepare_cached(
                "INSERT INTO dirents(parent, name_index, epoch, name_ct, ino, kind) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                d.parent.0,
                d.name_index,
                d.epoch.0,
                d.name_ct,
                d.ino.0,
                kind
            ])?;
        self.touched_entry(d.parent, d.ino, kind.unwrap_or(0));
        Ok(())
    }

    /// Report an entry of `child` (kind byte `kind`) added to or removed
    /// from `parent`: the child's link count, and the parent's when the
    /// child is a directory.
    fn touched_entry(&self, parent: InodeId, child: InodeId, kind: i64) {
        self.touched(Touch::Links(child));
        if kind == DIR_KIND {
            self.touched(Touch::Links(parent));
        }
    }

    /// Entry by parent and index.
    pub fn dirent_get(&self, parent: InodeId, idx: &[u8]) -> Result<Option<DirentRow>, StoreError> {
        Ok(self
            .c
            .prepare_cached("SELECT parent, name_index, epoch, name_ct, ino FROM dirents WHERE parent = ?1 AND name_index = ?2")?
            .query_row(params![parent.0, idx], dirent_row)
            .optional()?)
    }

    /// Delete an entry.
    pub fn dirent_delete(&self, parent: InodeId, idx: &[u8]) -> Result<(), StoreError> {
        let gone: Option<(i64, i64)> = self
            .c
            .prepare_cached("SELECT ino, kind FROM dirents WHERE parent = ?1 AND name_index = ?2")?
            .query_row(params![parent.0, idx], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        if let Some((ino, kind)) = gone {
            self.c
                .prepare_cached("DELETE FROM dirents WHERE parent = ?1 AND name_index = ?2")?
                .execute(params![parent.0, idx])?;
            self.touched_entry(parent, InodeId(ino), kind);
        }
        Ok(())
    }

    /// True when a directory has any entry.
    pub fn dirent_any(&self, parent: InodeId) -> Result<bool, StoreError> {
        Ok(self
            .c
            .prepare_cached("SELECT 1 FROM dirents WHERE parent = ?1 LIMIT 1")?
            .query_row([parent.0], |_| Ok(()))
            .optional()?
            .is_some())
    }

    /// Number of entries naming `ino` (its link count).
    pub fn dirent_links(&self, ino: InodeId) -> Result<i64, StoreError> {
        Ok(self
            .c
            .prepare_cached("SELECT COUNT(*) FROM dirents WHERE ino = ?1")?
            .query_row([ino.0], |r| r.get(0))?)
    }

    /// Number of subdirectories of a directory (for its link count).
    pub fn subdir_count(&self, parent: InodeId) -> Result<i64, StoreError> {
        Ok(self
            .c
            .prepare_cached("SELECT COUNT(*) FROM dirents WHERE parent = ?1 AND kind = ?2")?
            .query_row([parent.0, DIR_KIND], |r| r.get(0))?)
    }

    /// Parent of a directory (directories have exactly one entry).
    pub fn dir_parent(&self, ino: InodeId) -> Result<Option<InodeId>, StoreError> {
        Ok(self
            .c
            .prepare_cached("SELECT parent FROM dirents WHERE ino = ?1 LIMIT 1")?
            .query_row([ino.0], |r| Ok(InodeId(r.get(0)?)))
            .optional()?)
    }

    /// Store a wrapped file key of a generation: `epoch` wraps it, `origin`
    /// is the epoch it was created in.
    pub fn file_key_insert(&self, k: &FileKeyRow) -> Result<(), StoreError> {
        self.c
            .prepare_cached(
                "INSERT OR REPLACE INTO file_keys(ino, keygen, epoch, origin, wrapped) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![
                k.ino.0, k.keygen.0, k.epoch.0, k.origin.0, k.wrapped
            ])?;
        Ok(())
    }

    /// Wrapped file key of a generation.
    pub fn file_key_get(
        &self,
        ino: InodeId,
        keygen: KeyGen,
    ) -> Result<Option<FileKeyRow>, StoreError> {
        Ok(self
            .c
            .prepare_cached(
                "SELECT ino, keygen, epoch, origin, wrapped FROM file_keys \
                 WHERE ino = ?1 AND keygen = ?2",
            )?
            .query_row(params![ino.0, keygen.0], file_key_row)
            .optional()?)
    }

    /// Delete every file key of an inode below `keep_from` (all when None).
    pub fn file_keys_delete(&self, ino: InodeId) -> Result<(), StoreError> {
        self.c
            .prepare_cached("DELETE FROM file_keys WHERE ino = ?1")?
            .execute([ino.0])?;
        Ok(())
    }

    /// Set an xattr row.
    pub fn xattr_set(
        &self,
        ino: InodeId,
        idx: &[u8],
        epoch: Epoch,
        sealed: &[u8],
    ) -> Result<(), StoreError> {
        self.c
            .prepare_cached("INSERT OR REPLACE INTO xattrs(ino, name_index, epoch, sealed) VALUES (?1, ?2, ?3, ?4)")?
            .execute(params![ino.0, idx, epoch.0, sealed])?;
        Ok(())
    }

    /// Get an xattr row.
    pub fn xattr_get(
        &self,
        ino: InodeId,
        idx: &[u8],
    ) -> Result<Option<(Epoch, Vec<u8>)>, StoreError> {
        Ok(self
            .c
            .prepare_cached("SELECT epoch, sealed FROM xattrs WHERE ino = ?1 AND name_index = ?2")?
            .query_row(params![ino.0, idx], |r| Ok((epoch(r.get(0)?), r.get(1)?)))
            .optional()?)
    }

    /// Every xattr row of an inode.
    pub fn xattr_list(&self, ino: InodeId) -> Result<Vec<XattrRow>, StoreError> {
        let mut st = self
            .c
            .prepare_cached("SELECT name_index, epoch, sealed FROM xattrs WHERE ino = ?1")?;
        let v = st
            .query_map([ino.0], |r| Ok((r.get(0)?, epoch(r.get(1)?), r.get(2)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(v)
    }

    /// Remove an xattr row; returns whether it existed.
    pub fn xattr_remove(&self, ino: InodeId, idx: &[u8]) -> Result<bool, StoreError> {
        let n = self
            .c
            .prepare_cached("DELETE FROM xattrs WHERE ino = ?1 AND name_index = ?2")?
            .execute(params![ino.0, idx])?;
        Ok(n > 0)
    }
}

impl Tx<'_> {
    /// Entries of a directory with each target's kind, ordered by index,
    /// from the first whose index is at least `from`, at most `limit`.
    pub fn dirent_list_kinds(
        &self,
        parent: InodeId,
        from: Option<&[u8]>,
        limit: i64,
    ) -> Result<Vec<(DirentRow, u8)>, StoreError> {
        let row =
            |r: &rusqlite::Row<'_>| Ok((dirent_row(r)?, r.get::<_, i64>(5)?.clamp(0, 255) as u8));
        let v = match from {
            Some(f) => self
                .c
                .prepare_cached(DIRENT_PAGE_FROM)?
                .query_map(params![parent.0, f, limit], row)?
                .collect::<Result<Vec<_>, _>>()?,
            None => self
                .c
                .prepare_cached(DIRENT_PAGE_FIRST)?
                .query_map(params![parent.0, limit], row)?
                .collect::<Result<Vec<_>, _>>()?,
        };
        Ok(v)
    }

    /// Inodes of no directory entry that are not a circle root (left by a
    /// crash while a deleted file was still open).
    pub fn orphan_inodes(&self) -> Result<Vec<InodeId>, StoreError> {
        let mut st = self.c.prepare_cached(
            "SELECT i.id FROM inodes i WHERE NOT EXISTS (SELECT 1 FROM dirents d WHERE d.ino = i.id) \
             AND NOT EXISTS (SELECT 1 FROM circles c WHERE c.root_ino = i.id)",
        )?;
        let v = st
            .query_map([], |r| Ok(InodeId(r.get(0)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(v)
    }

    /// Highest key generation recorded for an inode (0 when none).
    pub fn file_key_max(&self, ino: InodeId) -> Result<KeyGen, StoreError> {
        let v: i64 = self
            .c
            .prepare_cached("SELECT COALESCE(MAX(keygen), 0) FROM file_keys WHERE ino = ?1")?
            .query_row([ino.0], |r| r.get(0))?;
        Ok(KeyGen(v.clamp(0, u32::MAX as i64) as u32))
    }
}

impl Tx<'_> {
    /// Delete every file key of an inode except generation `keep`.
    pub fn file_keys_delete_except(&self, ino: InodeId, keep: KeyGen) -> Result<(), StoreError> {
        self.c
            .prepare_cached("DELETE FROM file_keys WHERE ino = ?1 AND keygen != ?2")?
            .execute(params![ino.0, keep.0])?;
        Ok(())
    }

    /// True when anything of an inode (record, file keys, child names,
    /// xattrs) is still sealed under an epoch other than `epoch`, or a file
    /// key was created in an older epoch.
    pub fn inode_has_old_epoch(&self, ino: InodeId, epoch: Epoch) -> Result<bool, StoreError> {
        let n: i64 = self
            .c
            .prepare_cached(
                "SELECT (SELECT COUNT(*) FROM inodes WHERE id = ?1 AND epoch != ?2) \
             + (SELECT COUNT(*) FROM file_keys WHERE ino = ?1 AND (epoch != ?2 OR origin != ?2)) \
             + (SELECT COUNT(*) FROM dirents WHERE parent = ?1 AND epoch != ?2) \
             + (SELECT COUNT(*) FROM xattrs WHERE ino = ?1 AND epoch != ?2)",
            )?
            .query_row(params![ino.0, epoch.0], |r| r.get(0))?;
        Ok(n > 0)
    }

    /// Delete circle-key wraps of epochs before `epoch` (after re-encryption).
    pub fn circle_keys_delete_before(
        &self,
        circle: CircleId,
        epoch: Epoch,
    ) -> Result<usize, StoreError> {
        Ok(self
            .c
            .prepare_cached("DELETE FROM circle_keys WHERE circle_id = ?1 AND epoch < ?2")?
            .execute(params![circle.0, epoch.0])?)
    }
}

/// Rows fetched per query when walking a whole circle.
pub const CHUNK: i64 = 1024;

impl Tx<'_> {
    /// Inode rows of a circle with id > `after`, by id, at most [`CHUNK`].
    pub fn circle_inodes_after(
        &self,
        circle: CircleId,
        after: InodeId,
    ) -> Result<Vec<InodeRow>, StoreError> {
        let mut st = self.c.prepare_cached(
            "SELECT id, circle_id, kind, epoch, attrs, seq FROM inodes \
             WHERE circle_id = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
        )?;
        let v = st
            .query_map(params![circle.0, after.0, CHUNK], inode_row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(v)
    }

    /// Replace an inode's sealed record without counting a change (the
    /// plaintext is the same; only the sealing epoch differs).
    pub fn inode_reseal(&self, ino: InodeId, epoch: Epoch, attrs: &[u8]) -> Result<(), StoreError> {
        self.c
            .prepare_cached("UPDATE inodes SET epoch = ?2, attrs = ?3 WHERE id = ?1")?
            .execute(params![ino.0, epoch.0, attrs])?;
        self.touched(Touch::Record(ino));
        Ok(())
    }

    /// Directory entries in directory `parent`, every one.
    pub fn dirents_of(&self, parent: InodeId) -> Result<Vec<DirentRow>, StoreError> {
        let mut st = self.c.prepare_cached(
            "SELECT parent, name_index, epoch, name_ct, ino FROM dirents WHERE parent = ?1",
        )?;
        let v = st
            .query_map([parent.0], dirent_row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(v)
    }

    /// Replace a directory entry's index and sealed name in place.
    pub fn dirent_reseal(
        &self,
        parent: InodeId,
        old_index: &[u8],
        new: &DirentRow,
    ) -> Result<(), StoreError> {
        self.c
            .prepare_cached(
                "UPDATE dirents SET name_index = ?3, epoch = ?4, name_ct = ?5 \
                 WHERE parent = ?1 AND name_index = ?2",
            )?
            .execute(params![
                parent.0,
                old_index,
                new.name_index,
                new.epoch.0,
                new.name_ct
            ])?;
        Ok(())
    }

    /// Every file key of an inode.
    pub fn file_keys_of(&self, ino: InodeId) -> Result<Vec<FileKeyRow>, StoreError> {
        let mut st = self.c.prepare_cached(
            "SELECT ino, keygen, epoch, origin, wrapped FROM file_keys WHERE ino = ?1",
        )?;
        let v = st
            .query_map([ino.0], file_key_row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(v)
    }

    /// Replace an xattr row's index and sealed bytes in place.
    pub fn xattr_reseal(
        &self,
        ino: InodeId,
        old_index: &[u8],
        new_index: &[u8],
        epoch: Epoch,
        sealed: &[u8],
    ) -> Result<(), StoreError> {
        self.c
            .prepare_cached(
                "UPDATE xattrs SET name_index = ?3, epoch = ?4, sealed = ?5 \
                 WHERE ino = ?1 AND name_index = ?2",
            )?
            .execute(params![ino.0, old_index, new_index, epoch.0, sealed])?;
        Ok(())
    }

    /// Epochs that still have circle-key wraps for a circle.
    pub fn circle_key_epochs(&self, circle: CircleId) -> Result<Vec<Epoch>, StoreError> {
        let mut st = self.c.prepare_cached(
            "SELECT DISTINCT epoch FROM circle_keys WHERE circle_id = ?1 ORDER BY epoch",
        )?;
        let v = st
            .query_map([circle.0], |r| Ok(epoch(r.get(0)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::store::Store;

    /// How SQLite runs `sql`: the details of its query plan.
    fn plan(store: &Store, sql: &str) -> String {
        let c = store.lock().unwrap();
        let mut st = c.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let unbound = vec![rusqlite::types::Null; st.parameter_count()];
        let rows = st
            .query_map(rusqlite::params_from_iter(unbound), |r| {
                r.get::<_, String>(3)
            })
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        rows.join("; ")
    }

    #[test]
    fn a_page_of_a_directory_seeks_to_its_position() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(&dir.path().join("s")).unwrap();
        let from = plan(&store, DIRENT_PAGE_FROM);
        assert!(
            from.contains("SEARCH dirents USING PRIMARY KEY (parent=? AND name_index>?)"),
            "{from}"
        );
        let first = plan(&store, DIRENT_PAGE_FIRST);
        assert!(first.contains("USING PRIMARY KEY (parent=?)"), "{first}");
        assert!(!first.contains("TEMP B-TREE") && !from.contains("TEMP B-TREE"));
    }

    /// Only a regular file without inline slots can have a block file to
    /// remove after its deletion; an inode already gone has none.
    #[test]
    fn a_deletion_says_whether_a_block_file_can_be_left() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(&dir.path().join("s")).unwrap();
        store
            .write(|tx| {
                tx.c.execute_batch(
                    "INSERT INTO circles(id, name_index, name_ct, epoch, created) VALUES (1, x'01', x'', 1, 0);
                     INSERT INTO inodes(id, circle_id, kind, epoch, attrs) VALUES (5, 1, 1, 1, x'00');
                     INSERT INTO inodes(id, circle_id, kind, epoch, attrs) VALUES (6, 1, 1, 1, x'00');
                     INSERT INTO inodes(id, circle_id, kind, epoch, attrs) VALUES (7, 1, 2, 1, x'00');
                     INSERT INTO inodes(id, circle_id, kind, epoch, attrs) VALUES (8, 1, 3, 1, x'00');",
                )?;
                tx.inline_put(InodeId(6), &[1u8; 4096])
            })
            .unwrap();
        let gone = |i: i64| {
            store
                .write(|tx| tx.inode_delete(InodeId(i)))
                .unwrap()
                .block_file
        };
        assert!(gone(5), "a file without inline slots");
        assert!(!gone(6), "a file with inline slots");
        assert!(!gone(7), "a directory");
        assert!(!gone(8), "a symlink");
        assert!(!gone(5), "already deleted");
        assert!(
            store
                .read(|tx| tx.inline_get(InodeId(6)))
                .unwrap()
                .is_none()
        );
    }
}
