//! Re-encryption of a whole circle's content under its current epoch
//! (`circle rekey --reencrypt`): every file under a fresh key generation
//! (names, records and xattrs were re-sealed by the rotation), then the
//! older epochs' wraps deleted. Resumable: files already on the current
//! epoch are skipped.

use crate::crypto::Key32;
use crate::error::{Error, ErrorKind, Result};
use crate::format::attrs::Kind;
use crate::format::block::blocks_for;
use crate::ids::{CircleId, InodeId, KeyGen};

use super::content::OpenFile;
use super::{Workspace, lock};

/// Outcome of a re-encryption run.
#[derive(Clone, Copy, Debug, Default)]
pub struct RekeyReport {
    /// Inodes in the circle.
    pub total: u64,
    /// Inodes re-encrypted in this run.
    pub done: u64,
    /// Inodes already on the current epoch (an earlier, interrupted run).
    pub skipped: u64,
    /// Content blocks re-encrypted.
    pub blocks: u64,
}

impl Workspace {
    /// Re-encrypt everything of `circle` under its current epoch. The caller
    /// has checked the requester is a circle admin. `progress(done, total)`.
    pub fn reencrypt_circle(
        &self,
        circle: CircleId,
        mut progress: impl FnMut(u64, u64),
    ) -> Result<RekeyReport> {
        // Older epochs must be re-sealed before their keys can go: finish a
        // pending re-seal, or refuse when this account cannot.
        self.vault.finish_reseals(&self.session)?;
        if self
            .vault
            .store()
            .read(|tx| tx.meta_get(&format!("reseal:{circle}")))?
            .is_some()
        {
            return Err(Error::new(
                ErrorKind::StateConflict,
                "older key epochs of this circle are not re-sealed yet and this account \
                 lacks some of their keys",
            ));
        }
        self.refresh(true)?;
        let a = self.access(circle)?;
        let epoch = a.keys.current;
        let inodes = self
            .vault
            .store()
            .read(|tx| tx.inode_ids_of_circle(circle))?;
        let mut rep = RekeyReport {
            total: inodes.len() as u64,
            ..Default::default()
        };
        for (k, ino) in inodes.iter().enumerate() {
            let stale = self
                .vault
                .store()
                .read(|tx| tx.inode_has_old_epoch(*ino, epoch))?;
            if !stale {
                rep.skipped += 1;
            } else {
                rep.blocks += self.reencrypt_inode(*ino)?;
                rep.done += 1;
            }
            progress(k as u64 + 1, rep.total);
        }
        // Everything is on the current epoch: older circle keys are no longer needed.
        self.vault
            .store()
            .write(|tx| tx.circle_keys_delete_before(circle, epoch))?;
        self.vault.store().checkpoint()?;
        self.session.forget_keys(Some(circle));
        self.refresh(true)?;
        Ok(rep)
    }

    /// Content of one file under a fresh key generation. Names, records and
    /// xattrs are already on the current epoch: the rotation re-sealed them
    /// (`vault::reseal`), so only content keys created in older epochs are
    /// left, and only files have them.
    fn reencrypt_inode(&self, ino: InodeId) -> Result<u64> {
        let kind = self
            .vault
            .store()
            .read(|tx| tx.inode_get(ino))?
            .map(|r| r.kind);
        if kind != Some(Kind::File as u8) {
            return Ok(0);
        }
        let of = self.get_or_load(ino)?;
        let blocks = {
            let mut st = lock(&of)?;
            self.reencrypt_content(ino, &mut st)?
        };
        let idle = lock(&self.open)?
            .get(&ino)
            .is_some_and(|f| f.try_lock().is_ok_and(|s| s.opens() == 0));
        if idle {
            lock(&self.open)?.remove(&ino);
        }
        Ok(blocks)
    }

    /// Every written block under a fresh key generation of the current epoch.
    fn reencrypt_content(&self, ino: InodeId, st: &mut OpenFile) -> Result<u64> {
        let _guard = self.cross_lock(ino, st)?;
        self.revalidate(ino, st, super::Op::ReadFiles, true)?;
        let g = self.new_generation(ino, st)?;
        let nb = blocks_for(st.attrs().size);
        let mut n = 0;
        for i in 0..nb {
            if !st.attrs().extents.contains(i) {
                continue;
            }
            self.rewrite_block(ino, st, i, g, |_| {})?;
            n += 1;
        }
        Self::sync_slots(st)?;
        self.persist(ino, st)?;
        self.vault
            .store()
            .write(|tx| tx.file_keys_delete_except(ino, g))?;
        st.forget_ciphers_except(g);
        Ok(n)
    }

    fn new_generation(&self, ino: InodeId, st: &mut OpenFile) -> Result<KeyGen> {
        let key = Key32::random()?;
        self.install_generation(ino, st, key)
    }
}
