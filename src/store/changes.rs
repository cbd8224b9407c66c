//! The inode change feed: rows a mount's TEMP triggers write as it changes
//! records and names, read by the other mounts to drop what their kernels cache.

use rusqlite::params;

use super::files::epoch;
use super::{Store, StoreError, Tx};
use crate::ids::{CircleId, Epoch, InodeId};

/// One change made by another mount.
#[derive(Clone, Debug)]
pub struct InodeChange {
    /// Feed position.
    pub seq: i64,
    /// The inode whose record, link count or existence changed.
    pub ino: InodeId,
    /// For an added or removed name: its directory, circle, epoch and sealed name.
    pub name: Option<ChangedName>,
}

/// A name added to or removed from a directory (created, linked, deleted,
/// renamed away or to).
#[derive(Clone, Debug)]
pub struct ChangedName {
    /// The directory.
    pub parent: InodeId,
    /// Its circle (None when the directory was deleted in the same change).
    pub circle: Option<CircleId>,
    /// Epoch of the name key that sealed the name.
    pub epoch: Epoch,
    /// The sealed name, as it was in `dirents`.
    pub name_ct: Vec<u8>,
}

/// The record and inode triggers, with `{origin}` replaced by the mount's
/// feed id. Record re-seals (revocation) change no `seq` and leave no row.
/// Each fires only while `{feed_on}()` (the SQL function [`FEED_ON_FN`]) is true.
const INODE_TRIGGERS: &str = r#"
CREATE TEMP TRIGGER IF NOT EXISTS circlefs_feed_record AFTER UPDATE OF seq ON main.inodes
WHEN {feed_on}() BEGIN
    INSERT INTO main.inode_changes(origin, ino, at) VALUES ({origin}, new.id, unixepoch());
END;
CREATE TEMP TRIGGER IF NOT EXISTS circlefs_feed_gone AFTER DELETE ON main.inodes
WHEN {feed_on}() BEGIN
    INSERT INTO main.inode_changes(origin, ino, at) VALUES ({origin}, old.id, unixepoch());
END;
"#;

/// The connection's SQL function that tells the triggers whether to log:
/// [`Store`]'s feed flag, set at the start of each write transaction.
const FEED_ON_FN: &str = "circlefs_feed_on";

/// A name trigger: `{event}` on `dirents` logs the `{row}` (`new` or `old`)
/// entry with its sealed name.
const NAME_TRIGGER: &str = r#"
CREATE TEMP TRIGGER IF NOT EXISTS circlefs_feed_{event} AFTER {event} ON main.dirents
WHEN {feed_on}() BEGIN
    INSERT INTO main.inode_changes(origin, ino, parent, circle_id, epoch, name_ct, at)
    VALUES ({origin}, {row}.ino, {row}.parent,
            (SELECT circle_id FROM main.inodes WHERE id = {row}.parent),
            {row}.epoch, {row}.name_ct, unixepoch());
END;
"#;

/// Every feed trigger for `origin`: names added (INSERT) and removed (DELETE).
fn triggers(origin: i64) -> String {
    let mut sql = INODE_TRIGGERS.to_string();
    for (event, row) in [("INSERT", "new"), ("DELETE", "old")] {
        sql.push_str(&NAME_TRIGGER.replace("{event}", event).replace("{row}", row));
    }
    sql.replace("{origin}", &origin.to_string())
        .replace("{feed_on}", FEED_ON_FN)
}

/// Drops every feed trigger (a connection whose mount is alone).
const DROP_TRIGGERS: &str = "DROP TRIGGER IF EXISTS temp.circlefs_feed_record;\n\
     DROP TRIGGER IF EXISTS temp.circlefs_feed_gone;\n\
     DROP TRIGGER IF EXISTS temp.circlefs_feed_INSERT;\n\
     DROP TRIGGER IF EXISTS temp.circlefs_feed_DELETE;";

/// Make the feed triggers of `origin` exist on `c` or not, as `on` says.
/// A TEMP schema change makes the connection prepare its cached
/// statements again once: done only when the presence of other mounts
/// changes, not per transaction.
pub(super) fn set_triggers(
    c: &rusqlite::Connection,
    origin: i64,
    on: bool,
) -> Result<(), StoreError> {
    if on {
        c.execute_batch(&triggers(origin))?;
    } else {
        c.execute_batch(DROP_TRIGGERS)?;
    }
    Ok(())
}

impl Store {
    /// From now on, every record, link and name change made through this
    /// connection is written to the feed under `origin` (the mount's id).
    /// Returns the origin in effect: the first one given to this connection
    /// (workspaces sharing a connection share its triggers).
    ///
    /// With a `probe`, a write transaction that finds no other mount
    /// present once it holds the SQLite write lock logs nothing: nobody
    /// could read its rows. A mount that joins later reads the feed only
    /// from its newest row, after waiting once for the write lock (so for
    /// every transaction begun before it was present to commit).
    pub fn record_changes(
        &self,
        origin: i64,
        probe: Option<super::blocks::PresenceProbe>,
    ) -> Result<i64, StoreError> {
        let mut conn = self.lock()?;
        if let Some(o) = self.feed_origin.get() {
            return Ok(*o);
        }
        let on = std::sync::Arc::clone(&self.feed_on);
        conn.c.create_scalar_function(
            FEED_ON_FN,
            0,
            rusqlite::functions::FunctionFlags::SQLITE_UTF8
                | rusqlite::functions::FunctionFlags::SQLITE_INNOCUOUS,
            move |_| Ok(on.load(std::sync::atomic::Ordering::Relaxed)),
        )?;
        // With a probe, the triggers come and go with the other mounts
        // (see `Store::gate_feed`): a trigger that exists costs each
        // delete, insert and record update a sub-program run even when
        // its WHEN is false.
        if probe.is_none() {
            set_triggers(&conn.c, origin, true)?;
            conn.feed_triggers = Some(true);
        }
        conn.feed_probe = probe;
        Ok(*self.feed_origin.get_or_init(|| origin))
    }
}

impl Tx<'_> {
    /// The newest feed position (0 when empty).
    pub fn changes_latest(&self) -> Result<i64, StoreError> {
        Ok(self
            .c
            .prepare_cached("SELECT COALESCE(MAX(seq), 0) FROM inode_changes")?
            .query_row([], |r| r.get(0))?)
    }

    /// Up to `limit` changes after `after` made by other origins than `mine`.
    pub fn changes_since(
        &self,
        after: i64,
        mine: i64,
        limit: usize,
    ) -> Result<Vec<InodeChange>, StoreError> {
        let mut st = self.c.prepare_cached(
            "SELECT seq, ino, parent, circle_id, epoch, name_ct FROM inode_changes \
             WHERE seq > ?1 AND origin != ?2 ORDER BY seq LIMIT ?3",
        )?;
        let rows = st.query_map(params![after, mine, limit as i64], |r| {
            let parent: Option<i64> = r.get(2)?;
            let sealed_in: Option<i64> = r.get(4)?;
            let name_ct: Option<Vec<u8>> = r.get(5)?;
            let name = match (parent, sealed_in, name_ct) {
                (Some(p), Some(e), Some(n)) => Some(ChangedName {
                    parent: InodeId(p),
                    circle: r.get::<_, Option<i64>>(3)?.map(CircleId),
                    epoch: epoch(e),
                    name_ct: n,
                }),
                _ => None,
            };
            Ok(InodeChange {
                seq: r.get(0)?,
                ino: InodeId(r.get(1)?),
                name,
            })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// Whether another origin than `mine` changed `ino` after `after`.
    pub fn changed_since(&self, after: i64, ino: InodeId, mine: i64) -> Result<bool, StoreError> {
        Ok(self
            .c
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM inode_changes \
                 WHERE seq > ?1 AND ino = ?2 AND origin != ?3)",
            )?
            .query_row(params![after, ino.0, mine], |r| r.get(0))?)
    }

    /// Whether anything is left to prune (see [`Tx::changes_prune`]).
    pub fn changes_stale(&self, secs: i64) -> Result<bool, StoreError> {
        Ok(self
            .c
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM inode_changes WHERE at < unixepoch() - ?1 \
                 AND (seq < (SELECT MAX(seq) FROM inode_changes) OR name_ct IS NOT NULL))",
            )?
            .query_row([secs], |r| r.get(0))?)
    }

    /// Delete the changes older than `secs` seconds (every mount has read
    /// them). The newest row stays, its name cleared: `seq` is a plain rowid
    /// (max + 1), so keeping the maximum keeps every later `seq` above what
    /// mounts have read, and no sealed name outlives the window.
    pub fn changes_prune(&self, secs: i64) -> Result<usize, StoreError> {
        let n = self
            .c
            .prepare_cached(
                "DELETE FROM inode_changes WHERE at < unixepoch() - ?1 \
                 AND seq < (SELECT MAX(seq) FROM inode_changes)",
            )?
            .execute([secs])?;
        self.c
            .prepare_cached(
                "UPDATE inode_changes SET parent = NULL, circle_id = NULL, epoch = NULL, \
                 name_ct = NULL WHERE at < unixepoch() - ?1 AND name_ct IS NOT NULL",
            )?
            .execute([secs])?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// With a presence probe, a write transaction logs to the feed only
    /// when it finds another mount present once it holds the write lock;
    /// with or without group commit.
    #[test]
    fn the_feed_is_written_only_while_another_mount_is_present() {
        let (_dir, _root, a, b) = crate::store::tests::two_connections();
        let (mine, _) = a.mount_lock().unwrap();
        a.record_changes(9, Some(mine.probe())).unwrap();
        a.write(|tx| {
            tx.c.execute_batch(
                "INSERT INTO circles(id, name_index, name_ct, epoch, created) \
                 VALUES (1, x'01', x'01', 1, 0); \
                 INSERT INTO inodes(id, circle_id, kind, epoch, attrs) VALUES (5, 1, 1, 1, x'00');",
            )?;
            Ok::<_, StoreError>(())
        })
        .unwrap();
        let touch = |n: i64| {
            a.write(|tx| {
                tx.c.execute("UPDATE inodes SET seq = ?1 WHERE id = 5", [n])?;
                Ok::<_, StoreError>(())
            })
            .unwrap();
            a.commit_pending().unwrap();
            b.read(|tx| tx.changes_since(0, 0, 100)).unwrap().len()
        };
        let triggers = || {
            a.read(|tx| {
                Ok::<i64, StoreError>(tx.c.query_row(
                    "SELECT COUNT(*) FROM sqlite_temp_master WHERE type = 'trigger'",
                    [],
                    |r| r.get(0),
                )?)
            })
            .unwrap()
        };
        for group in [false, true] {
            a.set_group_commit(group).unwrap();
            let before = touch(1);
            assert_eq!(touch(2), before, "alone: nothing logged (group {group})");
            assert_eq!(triggers(), 0, "alone: no triggers (group {group})");
            let (other, _) = b.mount_lock().unwrap();
            if !group {
                // A failed write takes back the triggers it made: the
                // next one makes them again.
                let failed = a.write(|_| Err::<(), _>(StoreError::Corrupt("no".into())));
                assert!(failed.is_err());
                assert_eq!(triggers(), 0, "rolled back with the write");
            }
            assert_eq!(
                touch(3),
                before + 1,
                "another mount: logged (group {group})"
            );
            assert_eq!(triggers(), 4, "another mount: triggers (group {group})");
            drop(other);
            assert_eq!(touch(4), before + 1, "alone again (group {group})");
            assert_eq!(triggers(), 0, "alone again: none (group {group})");
        }
        // The probe's lock gone: logged, the careful answer.
        drop(mine);
        let n = b.read(|tx| tx.changes_since(0, 0, 100)).unwrap().len();
        assert_eq!(touch(5), n + 1);
    }

    #[test]
    fn prune_keeps_the_newest_row_nameless_so_seq_never_goes_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(&dir.path().join("s")).unwrap();
        {
            let c = store.lock().unwrap();
            for n in 1..=3 {
                c.execute(
                    "INSERT INTO inode_changes(origin, ino, parent, circle_id, epoch, name_ct, at) \
                     VALUES (7, ?1, 1, 1, 1, x'aa', 0)",
                    [n],
                )
                .unwrap();
            }
        }
        assert!(store.read(|tx| tx.changes_stale(10)).unwrap());
        assert_eq!(store.write(|tx| tx.changes_prune(10)).unwrap(), 2);
        assert!(!store.read(|tx| tx.changes_stale(10)).unwrap());
        let left = store.read(|tx| tx.changes_since(0, 0, 10)).unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].seq, 3);
        assert!(left[0].name.is_none());
        // The next row continues after it.
        store.record_changes(9, None).unwrap();
        store
            .write(|tx| {
                tx.c.execute(
                    "INSERT INTO inode_changes(origin, ino, at) VALUES (9, 5, unixepoch())",
                    [],
                )?;
                Ok::<_, StoreError>(())
            })
            .unwrap();
        assert_eq!(store.read(|tx| tx.changes_latest()).unwrap(), 4);
        // Rows of one's own origin are skipped.
        assert!(
            store
                .read(|tx| tx.changes_since(3, 9, 10))
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            store.read(|tx| tx.changes_since(3, 1, 10)).unwrap().len(),
            1
        );
    }
}
