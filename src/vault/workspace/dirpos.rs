//! Directory positions that survive changes to the directory: where a readdir resumes.
//!
//! A listing is served in pages, one transaction each, with no state kept
//! between them (the kernel opens no directory handle). Each entry's
//! position is derived from its name index, the order of `dirents`, so a
//! caller resuming after an entry gets the entries after it however many
//! others were added or removed meanwhile: every name present throughout
//! a listing is returned exactly once (POSIX leaves names added or removed
//! meanwhile unspecified).
//!
//! Layout of a [`DirPos`] (always below 2^63, as the kernel's `loff_t`):
//! - 0: the start; 1: after `.`; 2: after `..` (the adapter lists those);
//! - an entry: bit 62 set, then the low 8 bits of the circle's key epoch
//!   (bits 61-54), the first 50 bits of the entry's name index (bits
//!   53-4) and its ordinal among the entries sharing those 50 bits (bits
//!   3-0, at most 15).
//!
//! A key rotation re-seals every name under new index keys, which reorders
//! the directory: a position from an older epoch restarts the listing from
//! its first entry (names may then be returned twice, never skipped).
//! Two names of one directory share 50 index bits with a chance of about
//! n²/2^51; the ordinal keeps them apart, but removing one of them while a
//! listing stands between them can make it skip the other.

use crate::ids::{DirPos, Epoch};

/// Positions below this are the start and the two dot entries.
const ENTRY: u64 = 1 << 62;
/// Bits of the name index kept in a position.
const PREFIX_BITS: u32 = 50;
/// Highest ordinal within one group of entries sharing a prefix.
const MAX_ORD: u8 = 15;
/// Rows a page may have to skip before its first entry (the ordinals of
/// the group it resumes in).
pub(super) const MAX_SKIP: usize = MAX_ORD as usize + 1;

/// Where a page resumes: after the entry with this prefix and ordinal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Seek {
    prefix: u64,
    ord: u8,
}

impl Seek {
    /// The lowest name index of the prefix's group (`name_index >=` this,
    /// compared as SQLite compares blobs).
    pub(super) fn key(&self) -> [u8; 7] {
        let b = (self.prefix << (56 - PREFIX_BITS)).to_be_bytes();
        let mut k = [0u8; 7];
        k.copy_from_slice(&b[1..]);
        k
    }
}

fn epoch_bits(e: Epoch) -> u64 {
    u64::from(e.0 & 0xff)
}

/// The first [`PREFIX_BITS`] bits of a name index (missing bytes as 0).
fn prefix_of(index: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    for (d, s) in b[1..].iter_mut().zip(index) {
        *d = *s;
    }
    u64::from_be_bytes(b) >> (56 - PREFIX_BITS)
}

/// Where to resume from `pos` in a directory whose circle is at `epoch`:
/// None for the first entry (the start, a dot entry, a position of another
/// epoch, or one that is no entry's).
pub(super) fn decode(pos: DirPos, epoch: Epoch) -> Option<Seek> {
    let p = pos.0;
    if p & ENTRY == 0 || p >> 63 != 0 || (p >> 54) & 0xff != epoch_bits(epoch) {
        return None;
    }
    Some(Seek {
        prefix: (p >> 4) & ((1 << PREFIX_BITS) - 1),
        ord: (p & 0xf) as u8,
    })
}

/// Positions of rows listed in name-index order, starting at the first
/// entry or at the first entry of `seek`'s group: for each row, the
/// position after it, or None for a row at or before `seek`.
pub(super) fn positions<'a>(
    indexes: impl IntoIterator<Item = &'a [u8]>,
    epoch: Epoch,
    seek: Option<Seek>,
) -> Vec<Option<DirPos>> {
    let mut group: Option<(u64, u8)> = None;
    indexes
        .into_iter()
        .map(|ix| {
            let prefix = prefix_of(ix);
            let ord = match group {
                Some((g, o)) if g == prefix => o.saturating_add(1).min(MAX_ORD),
                _ => 0,
            };
            group = Some((prefix, ord));
            match seek {
                Some(s) if s.prefix == prefix && ord <= s.ord => None,
                Some(s) if prefix < s.prefix => None,
                _ => Some(DirPos(
                    ENTRY | epoch_bits(epoch) << 54 | prefix << 4 | u64::from(ord),
                )),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ix(first: u64, tail: u8) -> Vec<u8> {
        // A name index whose first 50 bits are `first`.
        let mut v = (first << 14).to_be_bytes().to_vec();
        v.extend([tail; 8]);
        v
    }

    #[test]
    fn positions_resume_after_their_entry_and_skip_nothing() {
        let rows = [ix(1, 0), ix(5, 0), ix(5, 1), ix(5, 2), ix(9, 0)];
        let e = Epoch(3);
        let all = positions(rows.iter().map(|r| r.as_slice()), e, None);
        assert!(all.iter().all(|p| p.is_some()));
        let all: Vec<DirPos> = all.into_iter().flatten().collect();
        // Strictly increasing, all entries, all below 2^63.
        assert!(all.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(all.iter().all(|p| p.0 >> 63 == 0 && p.0 >= ENTRY));
        // Resuming after each entry lists exactly the ones after it.
        for (k, p) in all.iter().enumerate() {
            let s = decode(*p, e).unwrap();
            // Rows from the start of the group (as the store returns them).
            let from: Vec<&[u8]> = rows
                .iter()
                .map(|r| r.as_slice())
                .filter(|r| r >= &&s.key()[..])
                .collect();
            let next: Vec<DirPos> = positions(from, e, Some(s)).into_iter().flatten().collect();
            assert_eq!(next, all[k + 1..].to_vec(), "after entry {k}");
        }
    }

    #[test]
    fn the_seek_key_is_the_lowest_index_of_its_group() {
        let e = Epoch(1);
        let rows = [ix(7, 0), ix(7, 0xff)];
        let p = positions(rows.iter().map(|r| r.as_slice()), e, None);
        let s = decode(p[0].unwrap(), e).unwrap();
        assert!(s.key()[..] <= rows[0][..] && s.key()[..] <= rows[1][..]);
        assert!(s.key()[..] > ix(6, 0xff)[..]);
    }

    #[test]
    fn positions_of_another_epoch_and_dot_positions_restart() {
        let rows = [ix(2, 0)];
        let p = positions(rows.iter().map(|r| r.as_slice()), Epoch(4), None)[0].unwrap();
        assert!(decode(p, Epoch(4)).is_some());
        assert_eq!(decode(p, Epoch(5)), None, "a rotation restarts");
        for q in [0, 1, 2, 77, u64::MAX] {
            assert_eq!(decode(DirPos(q), Epoch(4)), None);
        }
    }

    #[test]
    fn a_large_group_stays_finite() {
        // More entries sharing 50 bits than ordinals: the positions never
        // go back, so a listing ends.
        let rows: Vec<Vec<u8>> = (0..20u8).map(|t| ix(3, t)).collect();
        let e = Epoch(0);
        let all: Vec<DirPos> = positions(rows.iter().map(|r| r.as_slice()), e, None)
            .into_iter()
            .flatten()
            .collect();
        assert_eq!(all.len(), 20);
        assert!(all.windows(2).all(|w| w[0].0 <= w[1].0));
        let s = decode(all[19], e).unwrap();
        let rest = positions(rows.iter().map(|r| r.as_slice()), e, Some(s));
        assert!(rest.iter().all(|p| p.is_none()));
    }
}
