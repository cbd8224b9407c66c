//! Queries of the inode tree: inodes, directory entries, file keys, xattrs.

use rusqlite::{OptionalExtension, params};

use super::{StoreError, Tx};
use crate::ids::{CircleId, Epoch, InodeId, KeyGen};

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
}

/// Stored xattr row: (name index, epoch, sealed name and value).
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

fn epoch(v: i64) -> Epoch {
    Epoch(v.clamp(0, u32::MAX as i64) as u32)
}

fn inode_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<InodeRow> {
    Ok(InodeRow {
        id: InodeId(r.get(0)?),
        circle: CircleId(r.get(1)?),
        kind: r.get::<_, i64>(2)?.clamp(0, 255) as u8,
        epoch: epoch(r.get(3)?),
        attrs: r.get(4)?,
    })
}

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
    /// Insert an inode with a placeholder record (sealed once the id is known).
    pub fn inode_insert(&self, circle: CircleId, kind: u8) -> Result<InodeId, StoreError> {
        self.c
            .prepare_cached("INSERT INTO inodes(circle_id, kind, epoch, attrs) VALUES (?1, ?2, 0, x'')")?
            .execute(params![circle.0, kind as i64])?;
        Ok(InodeId(self.c.last_insert_rowid()))
    }

    /// Replace an inode's sealed record.
    pub fn inode_update(&self, ino: InodeId, epoch: Epoch, attrs: &[u8]) -> Result<(), StoreError> {
        self.c
            .prepare_cached("UPDATE inodes SET epoch = ?2, attrs = ?3 WHERE id = ?1")?
            .execute(params![ino.0, epoch.0, attrs])?;
        Ok(())
    }

    /// An inode row.
    pub fn inode_get(&self, ino: InodeId) -> Result<Option<InodeRow>, StoreError> {
        Ok(self
            .c
            .prepare_cached("SELECT id, circle_id, kind, epoch, attrs FROM inodes WHERE id = ?1")?
            .query_row([ino.0], inode_row)
            .optional()?)
    }

    /// Delete an inode (its file keys and xattrs cascade).
    pub fn inode_delete(&self, ino: InodeId) -> Result<(), StoreError> {
        self.c.prepare_cached("DELETE FROM inodes WHERE id = ?1")?.execute([ino.0])?;
        Ok(())
    }

    /// Every inode id of a circle.
    pub fn inode_ids_of_circle(&self, circle: CircleId) -> Result<Vec<InodeId>, StoreError> {
        let mut st = self.c.prepare_cached("SELECT id FROM inodes WHERE circle_id = ?1")?;
        let v = st
            .query_map([circle.0], |r| Ok(InodeId(r.get(0)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(v)
    }

    /// Number of inodes in the store.
    pub fn inode_count(&self) -> Result<i64, StoreError> {
        Ok(self.c.query_row("SELECT COUNT(*) FROM inodes", [], |r| r.get(0))?)
    }

    /// Insert a directory entry (fails with a constraint error on a duplicate index).
    pub fn dirent_insert(&self, d: &DirentRow) -> Result<(), StoreError> {
        self.c
            .prepare_cached("INSERT INTO dirents(parent, name_index, epoch, name_ct, ino) VALUES (?1, ?2, ?3, ?4, ?5)")?
            .execute(params![d.parent.0, d.name_index, d.epoch.0, d.name_ct, d.ino.0])?;
        Ok(())
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
        self.c
            .prepare_cached("DELETE FROM dirents WHERE parent = ?1 AND name_index = ?2")?
            .execute(params![parent.0, idx])?;
        Ok(())
    }

    /// Entries of a directory ordered by (index), starting after `after`, at most `limit`.
    pub fn dirent_list(&self, parent: InodeId, after: Option<&[u8]>, limit: i64) -> Result<Vec<DirentRow>, StoreError> {
        let mut st = self.c.prepare_cached(
            "SELECT parent, name_index, epoch, name_ct, ino FROM dirents WHERE parent = ?1 \
             AND (?2 IS NULL OR name_index > ?2) ORDER BY name_index LIMIT ?3",
        )?;
        let v = st
            .query_map(params![parent.0, after, limit], dirent_row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(v)
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
            .prepare_cached("SELECT COUNT(*) FROM dirents d JOIN inodes i ON i.id = d.ino WHERE d.parent = ?1 AND i.kind = 2")?
            .query_row([parent.0], |r| r.get(0))?)
    }

    /// Parent of a directory (directories have exactly one entry).
    pub fn dir_parent(&self, ino: InodeId) -> Result<Option<InodeId>, StoreError> {
        Ok(self
            .c
            .prepare_cached("SELECT parent FROM dirents WHERE ino = ?1 LIMIT 1")?
            .query_row([ino.0], |r| Ok(InodeId(r.get(0)?)))
            .optional()?)
    }

    /// Store a wrapped file key of a generation.
    pub fn file_key_insert(&self, ino: InodeId, keygen: KeyGen, epoch: Epoch, wrapped: &[u8]) -> Result<(), StoreError> {
        self.c
            .prepare_cached("INSERT OR REPLACE INTO file_keys(ino, keygen, epoch, wrapped) VALUES (?1, ?2, ?3, ?4)")?
            .execute(params![ino.0, keygen.0, epoch.0, wrapped])?;
        Ok(())
    }

    /// Wrapped file key of a generation, with the epoch it is wrapped under.
    pub fn file_key_get(&self, ino: InodeId, keygen: KeyGen) -> Result<Option<(Epoch, Vec<u8>)>, StoreError> {
        Ok(self
            .c
            .prepare_cached("SELECT epoch, wrapped FROM file_keys WHERE ino = ?1 AND keygen = ?2")?
            .query_row(params![ino.0, keygen.0], |r| Ok((epoch(r.get(0)?), r.get(1)?)))
            .optional()?)
    }

    /// Delete every file key of an inode below `keep_from` (all when None).
    pub fn file_keys_delete(&self, ino: InodeId) -> Result<(), StoreError> {
        self.c.prepare_cached("DELETE FROM file_keys WHERE ino = ?1")?.execute([ino.0])?;
        Ok(())
    }

    /// Set an xattr row.
    pub fn xattr_set(&self, ino: InodeId, idx: &[u8], epoch: Epoch, sealed: &[u8]) -> Result<(), StoreError> {
        self.c
            .prepare_cached("INSERT OR REPLACE INTO xattrs(ino, name_index, epoch, sealed) VALUES (?1, ?2, ?3, ?4)")?
            .execute(params![ino.0, idx, epoch.0, sealed])?;
        Ok(())
    }

    /// Get an xattr row.
    pub fn xattr_get(&self, ino: InodeId, idx: &[u8]) -> Result<Option<(Epoch, Vec<u8>)>, StoreError> {
        Ok(self
            .c
            .prepare_cached("SELECT epoch, sealed FROM xattrs WHERE ino = ?1 AND name_index = ?2")?
            .query_row(params![ino.0, idx], |r| Ok((epoch(r.get(0)?), r.get(1)?)))
            .optional()?)
    }

    /// Every xattr row of an inode: (name index, epoch, sealed).
    pub fn xattr_list(&self, ino: InodeId) -> Result<Vec<XattrRow>, StoreError> {
        let mut st = self.c.prepare_cached("SELECT name_index, epoch, sealed FROM xattrs WHERE ino = ?1")?;
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
