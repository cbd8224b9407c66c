//! Revocation re-seal: a circle's names, records, xattrs and file keys moved to one epoch inside the rotating transaction.
//!
//! Content blocks are not touched (their file keys are only re-wrapped);
//! the key generation's `origin` epoch makes the next write start a new
//! generation. `circle rekey --reencrypt` re-encrypts content as well.

use zeroize::Zeroize;

use crate::crypto::subkeys::name_index;
use crate::error::Result;
use crate::format::aad;
use crate::format::attrs::{Kind, Reader};
use crate::ids::{CircleId, Epoch, InodeId};
use crate::store::Tx;
use crate::store::files::{DirentRow, FileKeyRow};

use super::keys::{CircleKeys, EpochKeys};

/// What a re-seal touched.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResealStats {
    /// Inode records re-sealed.
    pub records: u64,
    /// File keys re-wrapped.
    pub file_keys: u64,
    /// Directory entry names re-sealed (and re-indexed).
    pub names: u64,
    /// Extended attributes re-sealed (and re-indexed).
    pub xattrs: u64,
}

/// True when `old` holds every epoch the circle still has keys for, except
/// `to` (so every sealed item of the circle can be opened).
pub(crate) fn covers(tx: &Tx<'_>, circle: CircleId, old: &CircleKeys, to: Epoch) -> Result<bool> {
    Ok(tx
        .circle_key_epochs(circle)?
        .iter()
        .all(|e| *e == to || old.epochs.contains_key(e)))
}

/// Move everything of `circle` sealed under another epoch to epoch `to`
/// (keys `new`), opening the old items with `old`. Runs inside the caller's
/// transaction, walking the circle's inodes in chunks (bounded memory).
pub(crate) fn reseal_circle(
    tx: &Tx<'_>,
    circle: CircleId,
    old: &CircleKeys,
    to: Epoch,
    new: &EpochKeys,
) -> Result<ResealStats> {
    let mut st = ResealStats::default();
    let mut after = InodeId(0);
    loop {
        let rows = tx.circle_inodes_after(circle, after)?;
        let Some(last) = rows.last() else { break };
        after = last.id;
        for row in &rows {
            let ino = row.id;
            if row.epoch != to {
                let a = old.open_attrs(row)?;
                let sealed = new.meta.seal(&aad::attrs(circle, ino, to), &a.encode())?;
                tx.inode_reseal(ino, to, &sealed)?;
                st.records += 1;
            }
            if row.kind == Kind::File as u8 {
                for k in tx.file_keys_of(ino)? {
                    if k.epoch == to {
                        continue;
                    }
                    let mut raw = old.epoch(k.epoch)?.file_wrap.open(
                        &aad::file_key(circle, ino, k.keygen, k.epoch, k.origin),
                        &k.wrapped,
                        "file key",
                    )?;
                    let wrapped = new
                        .file_wrap
                        .seal(&aad::file_key(circle, ino, k.keygen, to, k.origin), &raw);
                    raw.zeroize();
                    tx.file_key_insert(&FileKeyRow {
                        epoch: to,
                        wrapped: wrapped?,
                        ..k
                    })?;
                    st.file_keys += 1;
                }
            }
            if row.kind == Kind::Dir as u8 {
                let scope = aad::name_scope(circle, ino);
                for d in tx.dirents_of(ino)? {
                    if d.epoch == to {
                        continue;
                    }
                    let mut nm = old.epoch(d.epoch)?.name.open(
                        &aad::dirent_name(circle, ino, d.epoch),
                        &d.name_ct,
                        "file name",
                    )?;
                    let idx = name_index(&new.index, &scope, &nm);
                    let ct = new.name.seal(&aad::dirent_name(circle, ino, to), &nm);
                    nm.zeroize();
                    let fresh = DirentRow {
                        parent: ino,
                        name_index: idx?.to_vec(),
                        epoch: to,
                        name_ct: ct?,
                        ino: d.ino,
                    };
                    tx.dirent_reseal(ino, &d.name_index, &fresh)?;
                    st.names += 1;
                }
            }
            let xscope = aad::xattr_scope(circle, ino);
            for (idx, e, sealed) in tx.xattr_list(ino)? {
                if e == to {
                    continue;
                }
                let mut pt = old.epoch(e)?.xattr.open(
                    &aad::xattr(circle, ino, e),
                    &sealed,
                    "extended attribute",
                )?;
                let name = {
                    let mut r = Reader::new(&pt);
                    let nl = r.u16()? as usize;
                    r.bytes(nl)?.to_vec()
                };
                let new_idx = name_index(&new.index, &xscope, &name);
                let resealed = new.xattr.seal(&aad::xattr(circle, ino, to), &pt);
                pt.zeroize();
                tx.xattr_reseal(ino, &idx, &new_idx?, to, &resealed?)?;
                st.xattrs += 1;
            }
        }
    }
    Ok(st)
}
