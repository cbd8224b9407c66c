//! Inline content: the block slots of small files, kept in SQLite instead
//! of a block file of their own (bytes only; the vault seals and opens them).

use rusqlite::{OptionalExtension, params};

use super::{StoreError, Tx};
use crate::ids::InodeId;

impl Tx<'_> {
    /// The inline slots of `ino` (None: its content is not inline).
    pub fn inline_get(&self, ino: InodeId) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .c
            .prepare_cached("SELECT slots FROM inline_slots WHERE ino = ?1")?
            .query_row([ino.0], |r| r.get(0))
            .optional()?)
    }

    /// Store the slots of `ino` inline (replacing what was there).
    pub fn inline_put(&self, ino: InodeId, slots: &[u8]) -> Result<(), StoreError> {
        self.c
            .prepare_cached("INSERT OR REPLACE INTO inline_slots(ino, slots) VALUES (?1, ?2)")?
            .execute(params![ino.0, slots])?;
        Ok(())
    }

    /// Drop the inline slots of `ino` (its content moved to a block file).
    pub fn inline_delete(&self, ino: InodeId) -> Result<(), StoreError> {
        self.c
            .prepare_cached("DELETE FROM inline_slots WHERE ino = ?1")?
            .execute([ino.0])?;
        Ok(())
    }
}
