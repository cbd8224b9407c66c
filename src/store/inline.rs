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

    /// Store the slots of `ino` inline (replacing what was there). A row
    /// of the same length (the same number of slots) is overwritten in
    /// place, its overflow pages included: nothing is freed, so nothing is
    /// left to zero. A row whose length changes is replaced, and the pages
    /// it frees are zeroed (`secure_delete=ON`).
    pub fn inline_put(&self, ino: InodeId, slots: &[u8]) -> Result<(), StoreError> {
        let changed = self
            .c
            .prepare_cached("UPDATE inline_slots SET slots = ?2 WHERE ino = ?1")?
            .execute(params![ino.0, slots])?;
        if changed == 0 {
            self.c
                .prepare_cached("INSERT INTO inline_slots(ino, slots) VALUES (?1, ?2)")?
                .execute(params![ino.0, slots])?;
        }
        Ok(())
    }

    /// Drop the inline slots of `ino` (its content moved to a block file):
    /// the pages they free are zeroed, since the file and its key live on.
    pub fn inline_delete(&self, ino: InodeId) -> Result<(), StoreError> {
        self.inline_remove(ino).map(|_| ())
    }

    /// [`Tx::inline_delete`], telling whether there was a row.
    fn inline_remove(&self, ino: InodeId) -> Result<bool, StoreError> {
        Ok(self
            .c
            .prepare_cached("DELETE FROM inline_slots WHERE ino = ?1")?
            .execute([ino.0])?
            > 0)
    }

    /// Drop the inline slots of `ino` as part of deleting the inode, whose
    /// file keys go in the same transaction: under `secure_delete=FAST`
    /// (see [`Tx::ciphertext_only`]). Tells whether there were any.
    pub(super) fn inline_shred(&self, ino: InodeId) -> Result<bool, StoreError> {
        let mut had = false;
        self.ciphertext_only(|| {
            had = self.inline_remove(ino)?;
            Ok(())
        })?;
        Ok(had)
    }

    /// Run `f`, which frees only sealed content slots whose file key is
    /// deleted with them, with `secure_delete=FAST`: the cells it deletes
    /// are still zeroed in their page, but an overflow page it frees goes
    /// to the free list as it is, not read back and zeroed. Such a page
    /// holds only block ciphertext, like the host blocks a deleted block
    /// file leaves behind: shredded by its file key, whose row is deleted
    /// under `ON`. (Setting the pragma re-prepares its statement each time:
    /// about 2 µs per call.)
    fn ciphertext_only(
        &self,
        f: impl FnOnce() -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        self.c.pragma_update(None, "secure_delete", "FAST")?;
        let r = f();
        let back = self
            .c
            .pragma_update(None, "secure_delete", super::SECURE_DELETE);
        r.and(back.map_err(StoreError::from))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use crate::store::tests::two_connections;

    fn mode(s: &Store) -> i64 {
        s.read(|tx| {
            Ok::<_, StoreError>(
                tx.c.prepare_cached("PRAGMA secure_delete")?
                    .query_row([], |r| r.get(0))?,
            )
        })
        .unwrap()
    }

    fn sql(s: &Store, q: &str) {
        s.write(|tx| Ok::<_, StoreError>(tx.c.execute_batch(q)?))
            .unwrap();
    }

    /// Whether the database file holds `needle` (after a checkpoint).
    fn file_holds(s: &Store, root: &std::path::Path, needle: &[u8]) -> bool {
        s.checkpoint().unwrap();
        let db = std::fs::read(root.join(crate::store::DB_FILE)).unwrap();
        db.windows(needle.len()).any(|w| w == needle)
    }

    /// Inline ciphertext deleted with its inode is freed without the
    /// overwrite (its overflow page keeps its bytes), while every other
    /// delete keeps `secure_delete=ON` (content moved to a block file is
    /// zeroed); a rewrite of the same length overwrites the old ciphertext
    /// in place, one of another length zeroes it; the connection is back
    /// at `ON` after each call, failed or not.
    #[test]
    fn only_inline_ciphertext_is_freed_without_overwrite() {
        let (_dir, root, s, _b) = two_connections();
        sql(
            &s,
            "INSERT INTO circles(id, name_index, name_ct, epoch, created) VALUES (1, x'01', x'', 1, 0);
             INSERT INTO inodes(id, circle_id, kind, epoch, attrs) VALUES (5, 1, 1, 1, x'00');
             INSERT INTO inodes(id, circle_id, kind, epoch, attrs) VALUES (6, 1, 1, 1, x'00');",
        );
        assert_eq!(mode(&s), 1, "ON");
        let slots =
            |seed: u8| -> Vec<u8> { (0..4096u32).map(|i| (i % 251) as u8 ^ seed).collect() };
        // The tail of a 4 KiB row lies on its overflow page.
        let tail = |seed: u8| slots(seed)[3000..3100].to_vec();
        s.write(|tx| tx.inline_put(InodeId(5), &slots(0x11)))
            .unwrap();
        s.write(|tx| tx.inline_put(InodeId(6), &slots(0x22)))
            .unwrap();
        assert_eq!(mode(&s), 1, "back to ON after a put");
        assert!(file_holds(&s, &root, &tail(0x11)));
        assert!(file_holds(&s, &root, &tail(0x22)));

        // Rewritten: the same length in place, then twice the length.
        s.write(|tx| tx.inline_put(InodeId(6), &slots(0x44)))
            .unwrap();
        assert!(!file_holds(&s, &root, &tail(0x22)), "overwritten in place");
        assert!(file_holds(&s, &root, &tail(0x44)));
        let two = [slots(0x22), slots(0x55)].concat();
        s.write(|tx| tx.inline_put(InodeId(6), &two)).unwrap();
        assert!(!file_holds(&s, &root, &tail(0x44)), "replaced and zeroed");
        assert_eq!(
            s.read(|tx| tx.inline_get(InodeId(6))).unwrap().as_deref(),
            Some(&two[..])
        );

        s.write(|tx| tx.inline_shred(InodeId(5))).unwrap();
        assert_eq!(mode(&s), 1, "back to ON after a shred");
        assert!(file_holds(&s, &root, &tail(0x11)), "freed as it is");
        // Moved to a block file: the file's key lives on, the pages are zeroed.
        s.write(|tx| tx.inline_delete(InodeId(6))).unwrap();
        assert!(!file_holds(&s, &root, &two[7000..7100]), "zeroed under ON");

        // A failing call leaves the connection at ON too.
        let r = s.write(|tx| {
            tx.ciphertext_only(|| {
                tx.c.execute(
                    "INSERT INTO inline_slots(ino, slots) VALUES (99, x'00')",
                    [],
                )?;
                Ok(())
            })
        });
        assert!(r.is_err(), "no inode 99");
        assert_eq!(mode(&s), 1, "back to ON after a failure");
    }
}
