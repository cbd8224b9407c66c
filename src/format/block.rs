//! Stored content layout (layout 2): 4096-byte ciphertext pages, page-aligned, and per block a 64-byte entry of two header halves `keygen(u32 LE) || nonce(12) || tag(16)`.
//!
//! A block's plaintext is one page (4096 bytes) and its ciphertext is the
//! same size (AES-GCM-SIV with the tag detached), so a page-aligned write
//! from the kernel covers whole blocks and is sealed without reading
//! anything back. The header (key generation, nonce, tag) lives apart, in
//! an **entry** of two halves: a write puts the new header into the half
//! that does not authenticate the current page, then writes the page, then
//! empties the other half. A daemon killed at any point leaves a page that
//! one of the two halves opens (the kernel copies a write into the page
//! cache page by page, never half a page), and an entry with both halves
//! set tells the next writer that it must find out which one is current.
//!
//! Block file: groups of [`GROUP`] blocks, each [`HEAD_PAGES`] header
//! pages of entries followed by the group's data pages. Inline row: [`INLINE_HEAD`] bytes
//! of entries (one per inline slot), then the data pages.

use std::sync::Arc;

use crate::crypto::aead::{Cipher, NONCE_LEN, TAG_LEN};
use crate::error::{Error, ErrorKind, Result};
use crate::ids::KeyGen;

/// Plaintext (and ciphertext) bytes per block: one page.
pub const BLOCK_SIZE: usize = 4096;
/// Bytes per page of a block file (alignment unit of its I/O).
pub const PAGE: usize = 4096;
/// Bytes of one header half: keygen, nonce, tag.
pub const HALF: usize = 4 + NONCE_LEN + TAG_LEN;
/// Bytes of one block's entry (two halves).
pub const ENTRY: usize = 2 * HALF;
/// Blocks per group of a block file: 1 MiB of pages, so that an aligned
/// 1 MiB request (the mount's largest) is one contiguous run of pages.
pub const GROUP: u64 = 256;
/// Header pages at the start of a group (its blocks' entries).
pub const HEAD_PAGES: u64 = GROUP * ENTRY as u64 / PAGE as u64;
/// Bytes of one group: header pages, then data pages.
const GROUP_BYTES: u64 = (HEAD_PAGES + GROUP) * PAGE as u64;
/// Files whose slots all lie below this index keep them inline in the
/// database (one row, no block file): 8 blocks = 32 KiB, which holds
/// about 90 % of the files of a source tree.
pub const INLINE_SLOTS: u64 = 8;
/// Bytes of entries at the start of an inline row (one per inline slot).
pub const INLINE_HEAD: usize = INLINE_SLOTS as usize * ENTRY;

/// One header half: what opens a data page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Half {
    pub keygen: KeyGen,
    pub nonce: [u8; NONCE_LEN],
    pub tag: [u8; TAG_LEN],
}

impl Half {
    /// Parse a half; None when empty (key generation 0, never a valid one).
    pub fn parse(b: &[u8]) -> Option<Half> {
        let b: &[u8; HALF] = b.get(..HALF)?.try_into().ok()?;
        let keygen = KeyGen(u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        if keygen.0 == 0 {
            return None;
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&b[4..4 + NONCE_LEN]);
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&b[4 + NONCE_LEN..HALF]);
        Some(Half { keygen, nonce, tag })
    }

    /// Encode into `out` (HALF bytes).
    pub fn put(&self, out: &mut [u8]) {
        out[..4].copy_from_slice(&self.keygen.0.to_le_bytes());
        out[4..4 + NONCE_LEN].copy_from_slice(&self.nonce);
        out[4 + NONCE_LEN..HALF].copy_from_slice(&self.tag);
    }
}

/// The two halves of an entry (ENTRY bytes; shorter reads as empty).
pub fn halves(entry: &[u8]) -> [Option<Half>; 2] {
    [
        entry.get(..HALF).and_then(Half::parse),
        entry.get(HALF..ENTRY).and_then(Half::parse),
    ]
}

/// The half a write of a block puts its new header into: the other one
/// than `current` (the half known to open the page now), else an empty
/// one. With both set and neither known current, the page's content does
/// not count (a hole or a block past the end): half 0.
pub fn target_half(entry: &[u8], current: Option<usize>) -> usize {
    if let Some(c) = current {
        return 1 - c.min(1);
    }
    match halves(entry) {
        [None, _] => 0,
        [_, None] => 1,
        _ => 0,
    }
}

/// Whether both halves are set: a write of the block was interrupted (or
/// its last step failed), and which half opens the page is unknown.
pub fn both_set(entry: &[u8]) -> bool {
    matches!(halves(entry), [Some(_), Some(_)])
}

/// Open a stored `page` (untrusted bytes) into `out` with whichever half
/// of its `entry` (untrusted) opens it: `key(g)` gives the cipher and
/// block AAD of generation `g`, or an integrity error when the file has
/// no such key. Returns that half. Both halves are set only after an
/// interrupted write: then one of them opens the page. Anything else is
/// an integrity error (`out` zeroed), never other content.
pub fn open_page(
    entry: &[u8],
    page: &[u8],
    out: &mut [u8],
    mut key: impl FnMut(KeyGen) -> Result<(Arc<Cipher>, [u8; 56])>,
) -> Result<usize> {
    let mut last = Error::new(ErrorKind::Integrity, "content block has no header");
    for (k, h) in halves(entry).into_iter().enumerate() {
        let Some(h) = h else { continue };
        let (c, aad) = match key(h.keygen) {
            Ok(x) => x,
            Err(e) if e.kind == ErrorKind::Integrity => {
                last = e;
                continue;
            }
            Err(e) => return Err(e),
        };
        match c.open_detached(&aad, &h.nonce, &h.tag, page, out, "content block") {
            Ok(()) => return Ok(k),
            Err(e) => last = e.into(),
        }
    }
    Err(last)
}

/// Byte offset of block `i`'s entry in a block file.
pub fn entry_offset(i: u64) -> Option<u64> {
    (i / GROUP)
        .checked_mul(GROUP_BYTES)?
        .checked_add((i % GROUP) * ENTRY as u64)
}

/// Byte offset of block `i`'s data page in a block file.
pub fn page_offset(i: u64) -> Option<u64> {
    (i / GROUP)
        .checked_mul(GROUP_BYTES)?
        .checked_add(PAGE as u64 * (HEAD_PAGES + i % GROUP))
}

/// Length of a block file holding blocks `0..n` (up to the last data page).
pub fn file_len(n: u64) -> Option<u64> {
    match n {
        0 => Some(0),
        n => page_offset(n - 1)?.checked_add(PAGE as u64),
    }
}

/// Length of an inline row holding blocks `0..n` (n <= INLINE_SLOTS).
pub fn inline_len(n: u64) -> usize {
    INLINE_HEAD + n.min(INLINE_SLOTS) as usize * PAGE
}

/// Number of blocks needed for `size` bytes.
pub fn blocks_for(size: u64) -> u64 {
    size.div_ceil(BLOCK_SIZE as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        assert_eq!(GROUP, 256);
        assert_eq!(HEAD_PAGES, 4);
        assert_eq!(HALF, 32);
        assert_eq!(entry_offset(0), Some(0));
        assert_eq!(page_offset(0), Some(4 * 4096));
        assert_eq!(entry_offset(255), Some(255 * 64));
        assert_eq!(page_offset(255), Some(259 * 4096));
        assert_eq!(entry_offset(256), Some(260 * 4096));
        assert_eq!(page_offset(256), Some(264 * 4096));
        assert_eq!(file_len(0), Some(0));
        assert_eq!(file_len(1), Some(5 * 4096));
        assert_eq!(file_len(256), Some(260 * 4096));
        assert_eq!(file_len(257), Some(265 * 4096));
        // An entry never straddles a page: the kernel writes it whole.
        for i in [0, 63, 64, 255, 256, 1000] {
            let e = entry_offset(i).unwrap() as usize;
            assert_eq!(e / PAGE, (e + ENTRY - 1) / PAGE);
        }
        assert_eq!(page_offset(u64::MAX), None);
        assert_eq!(inline_len(0), 512);
        assert_eq!(inline_len(3), 512 + 3 * 4096);
        assert_eq!(blocks_for(0), 0);
        assert_eq!(blocks_for(1), 1);
        assert_eq!(blocks_for(4096), 1);
        assert_eq!(blocks_for(4097), 2);
    }

    #[test]
    fn halves_and_targets() {
        let mut e = [0u8; ENTRY];
        assert_eq!(halves(&e), [None, None], "all-zero entry: nothing");
        assert_eq!(target_half(&e, None), 0);
        let h = Half {
            keygen: KeyGen(7),
            nonce: [1; NONCE_LEN],
            tag: [2; TAG_LEN],
        };
        h.put(&mut e[..HALF]);
        assert_eq!(halves(&e), [Some(h), None]);
        assert_eq!(target_half(&e, None), 1, "the empty half");
        assert!(!both_set(&e));
        h.put(&mut e[HALF..]);
        assert!(both_set(&e));
        assert_eq!(target_half(&e, Some(1)), 0, "not the current one");
        assert_eq!(target_half(&e, Some(0)), 1);
        e[..HALF].fill(0);
        assert_eq!(target_half(&e, None), 0);
        assert_eq!(halves(&e[..10]), [None, None], "short reads as empty");
    }
}
