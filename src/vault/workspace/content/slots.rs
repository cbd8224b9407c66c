//! Where a file's sealed slots live: inline in the database while the file
//! is small, in its block file once it grows past `INLINE_SLOTS`.
//!
//! Callers hold the file's state lock and its cross-process inode lock
//! (exclusive for writes), so the choice cannot change under them. An
//! inline row, when there is one, is authoritative (a block file left by a
//! crash in the middle of a spill is ignored and overwritten); a file
//! never moves back from its block file.

use std::os::unix::fs::FileExt;

use super::OpenFile;
use crate::error::{Error, ErrorKind, Result};
use crate::format::block::{INLINE_SLOTS, SLOT};
use crate::ids::{BlockIndex, InodeId};
use crate::store::blocks::{read_run, truncate_slots, write_slots};
use crate::vault::workspace::Workspace;

/// Where the slots of a file are now (valid while the caller holds the
/// file's state lock and inode lock, and has not written them since).
pub(in crate::vault::workspace) enum Place {
    /// In its block file (cached in the open state).
    File,
    /// Inline: these bytes, whole slots.
    Inline(Vec<u8>),
    /// Nowhere yet (an empty or all-hole file).
    Nothing,
}

fn slot_offset(i: u64) -> Result<usize> {
    i.checked_mul(SLOT as u64)
        .and_then(|o| usize::try_from(o).ok())
        .ok_or_else(|| Error::new(ErrorKind::Integrity, "slot offset overflow"))
}

impl Workspace {
    pub(in crate::vault::workspace) fn place(
        &self,
        ino: InodeId,
        st: &mut OpenFile,
    ) -> Result<Place> {
        if let Some(row) = st.pending.as_ref().and_then(|p| p.row.as_ref()) {
            // Not stored yet: the pending row is the content.
            return Ok(Place::Inline(row.clone()));
        }
        if st.file.is_some() {
            return Ok(Place::File);
        }
        if st.no_slots {
            return Ok(Place::Nothing);
        }
        if let Some(b) = self.vault.store().read(|tx| tx.inline_get(ino))? {
            return Ok(Place::Inline(b));
        }
        st.file = self.vault.store().block_open(ino, false)?;
        Ok(if st.file.is_some() {
            Place::File
        } else {
            Place::Nothing
        })
    }

    /// Read the slots from index `first` on into `buf` (whole slots); returns
    /// how many bytes exist (fewer at the end of the content).
    pub(in crate::vault::workspace) fn read_slots(
        &self,
        ino: InodeId,
        st: &mut OpenFile,
        first: u64,
        buf: &mut [u8],
    ) -> Result<usize> {
        let place = self.place(ino, st)?;
        Self::read_placed(&place, st, first, buf)
    }

    /// [`Workspace::read_slots`] from a place the caller already looked up.
    pub(in crate::vault::workspace) fn read_placed(
        place: &Place,
        st: &OpenFile,
        first: u64,
        buf: &mut [u8],
    ) -> Result<usize> {
        match place {
            Place::File => match &st.file {
                Some(f) => Ok(read_run(f, BlockIndex(first), buf)?),
                None => Ok(0),
            },
            Place::Inline(b) => {
                let from = slot_offset(first)?.min(b.len());
                let n = (b.len() - from).min(buf.len());
                buf[..n].copy_from_slice(&b[from..from + n]);
                Ok(n)
            }
            Place::Nothing => Ok(0),
        }
    }

    /// Write whole slots from index `first` on: inline while the file's
    /// slots stay below `INLINE_SLOTS`, else in the block file (moving the
    /// inline slots there first, durably, before their row goes).
    pub(in crate::vault::workspace) fn write_slots(
        &self,
        ino: InodeId,
        st: &mut OpenFile,
        first: u64,
        data: &[u8],
    ) -> Result<()> {
        let place = self.place(ino, st)?;
        if let Some(row) = self.stage_slots(ino, st, place, first, data)? {
            self.vault.store().write(|tx| tx.inline_put(ino, &row))?;
        }
        Ok(())
    }

    /// [`Workspace::write_slots`] from `place` (looked up under the locks
    /// still held), except that new inline slots are not stored: they are
    /// returned, whole row, for the caller to store (with the record, in one
    /// transaction). Block-file writes and a spill are done here.
    pub(in crate::vault::workspace) fn stage_slots(
        &self,
        ino: InodeId,
        st: &mut OpenFile,
        place: Place,
        first: u64,
        data: &[u8],
    ) -> Result<Option<Vec<u8>>> {
        let end = first.saturating_add((data.len() / SLOT) as u64);
        let inline = match place {
            Place::File => None,
            Place::Inline(b) => Some((b, true)),
            Place::Nothing => Some((Vec::new(), false)),
        };
        if let Some((mut b, had_row)) = inline {
            if end <= INLINE_SLOTS {
                let at = slot_offset(first)?;
                if b.len() < at + data.len() {
                    b.resize(at + data.len(), 0);
                }
                b[at..at + data.len()].copy_from_slice(data);
                st.no_slots = false;
                if !had_row {
                    st.fresh_inline = true;
                }
                return Ok(Some(b));
            }
            // Spill: the block file gets the inline slots (replacing any
            // leftover of an interrupted spill), durably unless no fsync
            // ever covered them (a file being written for the first time,
            // as by tar or cp), before the row that held them is deleted.
            let f = self.vault.store().block_open(ino, true)?.ok_or_else(|| {
                Error::new(ErrorKind::Internal, "block file could not be created")
            })?;
            f.set_len(0)?;
            if !b.is_empty() {
                f.write_all_at(&b, 0)?;
                if !st.fresh_inline {
                    f.sync_data()?;
                }
            }
            if had_row {
                self.vault.store().write(|tx| tx.inline_delete(ino))?;
            }
            st.file = Some(f);
            st.no_slots = false;
        }
        let f = st
            .file
            .as_ref()
            .ok_or_else(|| Error::new(ErrorKind::Internal, "block file missing"))?;
        write_slots(f, BlockIndex(first), data)?;
        Ok(None)
    }

    /// Keep only the first `n` slots.
    pub(in crate::vault::workspace) fn cut_slots(
        &self,
        ino: InodeId,
        st: &mut OpenFile,
        n: u64,
    ) -> Result<()> {
        match self.place(ino, st)? {
            Place::File => {
                if let Some(f) = &st.file {
                    truncate_slots(f, n)?;
                }
            }
            Place::Inline(mut b) => {
                let keep = slot_offset(n)?;
                if b.len() > keep {
                    b.truncate(keep);
                    self.vault.store().write(|tx| tx.inline_put(ino, &b))?;
                }
            }
            Place::Nothing => {}
        }
        Ok(())
    }

    /// Make the slots durable (inline slots become durable with the
    /// database sync that follows).
    pub(in crate::vault::workspace) fn sync_slots(st: &OpenFile) -> Result<()> {
        if let Some(f) = &st.file {
            f.sync_data()?;
        }
        Ok(())
    }
}
