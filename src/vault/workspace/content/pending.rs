//! Write-behind: a file's writes made while no other mount is present
//! wait in its open state, holding its inode lock, until something stores
//! (settles) them.

use super::OpenFile;
use crate::error::{ErrorKind, Result};
use crate::ids::InodeId;
use crate::store::blocks::InodeLock;
use crate::vault::workspace::{Op, Workspace};

/// Content of a file written through this state and not stored yet
/// (write-behind): the record changes in the state's attributes, the whole
/// inline row while the slots are inline (sealed as it will be stored;
/// once they outgrow it, they are in the block file, written at once, and
/// only the record waits), and the file's exclusive inode lock, held from
/// the first such write until the record is stored, so that no other
/// mount reads, writes or re-keys the file meanwhile. Stored (settled) by
/// the flush of any handle, by any record save, before any other
/// operation that takes the inode lock, and by the daemon's 250 ms poll.
pub(super) struct Pending {
    pub(super) row: Option<Vec<u8>>,
    pub(super) lock: InodeLock,
}

impl Workspace {
    /// Store the state's pending content, if any, with its record (one
    /// write, committed at once when another mount is present) and hand
    /// back the inode lock it held. What another mount changed meanwhile
    /// (owner, mode, times; never content) is kept. On failure the content
    /// stays pending, lock held, for the next attempt, unless it can never
    /// be stored (access revoked, file deleted elsewhere): then it is
    /// dropped and the lock released.
    pub(super) fn settle(&self, ino: InodeId, st: &mut OpenFile) -> Result<Option<InodeLock>> {
        if st.pending.is_none() {
            return Ok(None);
        }
        let checked = self.revalidate(ino, st, Op::WriteFiles, true);
        let Some(p) = st.pending.take() else {
            return Ok(None);
        };
        match checked.and_then(|()| self.save_state(ino, st, p.row.as_deref())) {
            Ok(()) => {
                self.commit_for_others()?;
                Ok(Some(p.lock))
            }
            Err(e) if matches!(e.kind, ErrorKind::Forbidden | ErrorKind::NotFound) => {
                // It can never be stored (access revoked or lowered to
                // read, or the file deleted through another mount): dropped,
                // and its lock released for the other mounts.
                log::error!(
                    "inode {ino}: written content that can no longer be stored was dropped: {e}"
                );
                Err(e)
            }
            Err(e) => {
                st.pending = Some(p);
                Err(e)
            }
        }
    }

    /// Keep files' writes made while no other mount is present in their
    /// open state until they are settled (see [`Pending`]). Only for a workspace whose owner
    /// calls [`Workspace::settle_pending`] periodically.
    pub fn set_write_behind(&self, on: bool) {
        self.write_behind
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// Store every open file's pending content (the daemon's poll, so that
    /// nothing waits in the daemon alone for long, nor holds its inode lock
    /// against other mounts). A state in use by an operation is left for
    /// the next poll (that operation may be waiting for another mount's
    /// lock; the poll never waits for it). Returns how many were stored;
    /// the first failure is returned after all were tried (those stay
    /// pending).
    pub fn settle_pending(&self) -> Result<usize> {
        let mut n = 0;
        let mut first_err = None;
        for (ino, of) in self.open_states()? {
            let Ok(mut st) = of.try_lock() else {
                continue;
            };
            match self.settle(ino, &mut st) {
                Ok(Some(_)) => n += 1,
                Ok(None) => {}
                Err(e) => {
                    log::error!("storing the pending content of inode {ino} failed: {e}");
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(n),
        }
    }
}
