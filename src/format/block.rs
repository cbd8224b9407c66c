//! Stored content block layout: `keygen(u32 LE) || nonce(12) || ciphertext(BLOCK_SIZE) || tag(16)`.
//!
//! Every block is stored full-size (the last block is zero-padded before
//! sealing), so a stored file reveals only its block count. A slot is
//! exactly one 4 KiB page and slots are page-aligned: the kernel copies a
//! write into the page cache page by page and stops only between pages, so
//! a daemon killed in the middle of a write leaves every slot either old or
//! new, never torn (the reason the plaintext block is 4064, not 4096, bytes).

use crate::crypto::aead::OVERHEAD;
use crate::error::{ErrorKind, Result, err};
use crate::ids::KeyGen;

/// Plaintext bytes per block.
pub const BLOCK_SIZE: usize = 4064;
/// Files whose slots all lie below this index keep them inline in the
/// database (one row, no block file): 8 slots = 32,512 bytes, which holds
/// about 90 % of the files of a source tree.
pub const INLINE_SLOTS: u64 = 8;
/// Header bytes before the sealed part.
pub const HEADER: usize = 4;
/// Bytes per stored block slot.
pub const SLOT: usize = HEADER + OVERHEAD + BLOCK_SIZE;

/// Split a stored slot into its key generation and sealed part.
pub fn parse_slot(slot: &[u8]) -> Result<(KeyGen, &[u8])> {
    if slot.len() != SLOT {
        return err(ErrorKind::Integrity, "block slot has wrong length");
    }
    let mut g = [0u8; 4];
    g.copy_from_slice(&slot[..HEADER]);
    let keygen = KeyGen(u32::from_le_bytes(g));
    if keygen.0 == 0 {
        return err(ErrorKind::Integrity, "block slot has generation 0");
    }
    Ok((keygen, &slot[HEADER..]))
}

/// Write the generation header into a slot buffer.
pub fn put_header(slot: &mut [u8], keygen: KeyGen) {
    slot[..HEADER].copy_from_slice(&keygen.0.to_le_bytes());
}

/// Number of blocks needed for `size` bytes.
pub fn blocks_for(size: u64) -> u64 {
    size.div_ceil(BLOCK_SIZE as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_parse() {
        let mut s = vec![0u8; SLOT];
        assert!(parse_slot(&s).is_err(), "all-zero slot is not a hole");
        put_header(&mut s, KeyGen(5));
        assert_eq!(parse_slot(&s).unwrap().0, KeyGen(5));
        assert!(parse_slot(&s[1..]).is_err());
        assert_eq!(blocks_for(0), 0);
        assert_eq!(blocks_for(1), 1);
        assert_eq!(SLOT, 4096);
        assert_eq!(blocks_for(4064), 1);
        assert_eq!(blocks_for(4065), 2);
    }
}
