//! Where a file's sealed slots live: inline in the database while the file
//! is small, in its block file once it grows past `INLINE_SLOTS`.
//!
//! Callers hold the file's state lock and its cross-process inode lock
//! (exclusive for writes), so the choice cannot change under them. An
//! inline row, when there is one, is authoritative (a block file left by a
//! crash in the middle of a spill is ignored and overwritten); a file
//! never moves back from its block file.

use super::OpenFile;
use crate::error::{Error, ErrorKind, Result};
use crate::format::block::{ENTRY, INLINE_HEAD, INLINE_SLOTS, PAGE, inline_len};
use crate::ids::{BlockIndex, InodeId};
use crate::store::blocks::SlotBuf;
use crate::vault::workspace::Workspace;

/// Where the slots of a file are now (valid while the caller holds the
/// file's state lock and inode lock, and has not written them since).
pub(in crate::vault::workspace) enum Place {
    /// In its block file (cached in the open state).
    File,
    /// Inline: this row (entries of every inline slot, then the pages).
    Inline(Vec<u8>),
    /// Nowhere yet (an empty or all-hole file).
    Nothing,
}

/// Entries and data pages of a run of blocks, as read from their place.
pub(in crate::vault::workspace) struct SlotRun {
    /// ENTRY bytes per block (empty where nothing is stored).
    pub entries: Vec<u8>,
    /// PAGE bytes per block, page-aligned.
    pub pages: SlotBuf,
    /// Blocks from the first on whose page is stored.
    pub have: usize,
}

impl SlotRun {
    /// Entry and page of block `k` of the run (None past what is stored).
    pub fn slot(&self, k: usize) -> Option<(&[u8], &[u8])> {
        if k >= self.have {
            return None;
        }
        Some((
            self.entries.get(k * ENTRY..(k + 1) * ENTRY)?,
            self.pages.as_ref().get(k * PAGE..(k + 1) * PAGE)?,
        ))
    }
}

/// Byte range of blocks `first..first + n` of an inline row's pages.
fn inline_pages(first: u64, n: usize) -> Result<std::ops::Range<usize>> {
    usize::try_from(first)
        .ok()
        .and_then(|f| f.checked_mul(PAGE))
        .and_then(|o| o.checked_add(INLINE_HEAD))
        .and_then(|a| Some(a..a.checked_add(n.checked_mul(PAGE)?)?))
        .ok_or_else(|| Error::new(ErrorKind::Integrity, "slot offset overflow"))
}

/// Entries of blocks `first..first + n` of an inline row, zeros (empty)
/// for what it does not hold.
fn inline_entries(b: &[u8], first: u64, n: usize) -> Vec<u8> {
    let mut out = vec![0u8; n * ENTRY];
    for (k, e) in out.chunks_mut(ENTRY).enumerate() {
        let i = first.saturating_add(k as u64);
        if i < INLINE_SLOTS {
            let at = i as usize * ENTRY;
            if let Some(src) = b.get(at..at + ENTRY) {
                e.copy_from_slice(src);
            }
        }
    }
    out
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

    /// Read blocks `first..first + n` (entries and pages).
    pub(in crate::vault::workspace) fn read_slots(
        &self,
        ino: InodeId,
        st: &mut OpenFile,
        first: u64,
        n: usize,
    ) -> Result<SlotRun> {
        let place = self.place(ino, st)?;
        Self::read_placed(&place, st, first, n)
    }

    /// [`Workspace::read_slots`] from a place the caller already looked up.
    pub(in crate::vault::workspace) fn read_placed(
        place: &Place,
        st: &OpenFile,
        first: u64,
        n: usize,
    ) -> Result<SlotRun> {
        let mut pages = SlotBuf::new(n * PAGE);
        let mut entries = vec![0u8; n * ENTRY];
        let have = match place {
            Place::File => match &st.file {
                Some(f) => f.read_run(BlockIndex(first), &mut entries, pages.as_mut())?,
                None => 0,
            },
            Place::Inline(b) => {
                entries = inline_entries(b, first, n);
                let r = inline_pages(first, n)?;
                let from = r.start.min(b.len());
                let len = (b.len() - from).min(n * PAGE);
                pages.as_mut()[..len].copy_from_slice(&b[from..from + len]);
                len / PAGE
            }
            Place::Nothing => 0,
        };
        Ok(SlotRun {
            entries,
            pages,
            have,
        })
    }

    /// The entries of blocks `first..first + n` only.
    pub(in crate::vault::workspace) fn read_entries_placed(
        place: &Place,
        st: &OpenFile,
        first: u64,
        n: usize,
    ) -> Result<Vec<u8>> {
        Ok(match place {
            Place::File => {
                let mut e = vec![0u8; n * ENTRY];
                if let Some(f) = &st.file {
                    f.read_entries(BlockIndex(first), &mut e)?;
                }
                e
            }
            Place::Inline(b) => inline_entries(b, first, n),
            Place::Nothing => vec![0u8; n * ENTRY],
        })
    }

    /// Write sealed blocks from index `first` on (see [`write_run`] for
    /// `before` and `after`): inline while the file's slots stay below
    /// `INLINE_SLOTS`, else in the block file (moving the inline slots
    /// there first, durably, before their row goes).
    pub(in crate::vault::workspace) fn write_slots(
        &self,
        ino: InodeId,
        st: &mut OpenFile,
        first: u64,
        sealed: &Sealed,
    ) -> Result<()> {
        let place = self.place(ino, st)?;
        if let Some(row) = self.stage_slots(ino, st, place, first, sealed)? {
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
        sealed: &Sealed,
    ) -> Result<Option<Vec<u8>>> {
        let n = sealed.pages.as_ref().len() / PAGE;
        let end = first.saturating_add(n as u64);
        let inline = match place {
            Place::File => None,
            Place::Inline(b) => Some((b, true)),
            Place::Nothing => Some((Vec::new(), false)),
        };
        if let Some((mut b, had_row)) = inline {
            if b.len() < INLINE_HEAD {
                b.resize(INLINE_HEAD, 0);
            }
            if end <= INLINE_SLOTS {
                // One transaction stores the row: no step between the
                // new header and the page, so `after` at once.
                let r = inline_pages(first, n)?;
                if b.len() < r.end {
                    b.resize(r.end, 0);
                }
                b[r].copy_from_slice(sealed.pages.as_ref());
                let at = first as usize * ENTRY;
                b[at..at + n * ENTRY].copy_from_slice(&sealed.after);
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
            f.truncate(0)?;
            let m = ((b.len().saturating_sub(INLINE_HEAD)) / PAGE).min(INLINE_SLOTS as usize);
            if m > 0 {
                let e = &b[..m * ENTRY];
                f.write_run(BlockIndex(0), e, &b[INLINE_HEAD..inline_len(m as u64)], e)?;
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
        f.write_run(
            BlockIndex(first),
            &sealed.before,
            sealed.pages.as_ref(),
            &sealed.after,
        )?;
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
                    f.truncate(n)?;
                }
            }
            Place::Inline(mut b) => {
                let keep = inline_len(n);
                if b.len() > keep {
                    b.truncate(keep);
                    // The entries of the slots cut go with them.
                    let from = (n.min(INLINE_SLOTS) as usize * ENTRY).min(b.len());
                    let to = INLINE_HEAD.min(b.len());
                    b[from..to].fill(0);
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

/// Blocks sealed for storing: their pages and the entries before and
/// after the pages are written (`store::blocks::write_run`).
pub(in crate::vault::workspace) struct Sealed {
    pub pages: SlotBuf,
    pub before: Vec<u8>,
    pub after: Vec<u8>,
}
