//! Associated-data layouts: every sealed item is bound to its place.
//!
//! Each AAD is `label || fields` with fixed-width little-endian integers; the
//! labels are constant and versioned, so a value sealed for one purpose never
//! opens for another.

use crate::ids::{AccountId, BlockIndex, CircleId, ContentId, Epoch, InodeId, KeyGen};

fn build(label: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut v = Vec::with_capacity(label.len() + parts.iter().map(|p| p.len()).sum::<usize>());
    v.extend_from_slice(label);
    for p in parts {
        v.extend_from_slice(p);
    }
    v
}

/// Account X25519 secret sealed under the passphrase KEK.
pub fn account_secret(account: AccountId) -> Vec<u8> {
    build(b"circlefs/v1/account-secret", &[&account.to_le()])
}

/// Store directory key wrapped to an account.
pub fn dir_key(account: AccountId) -> Vec<u8> {
    build(b"circlefs/v1/dir-key", &[&account.to_le()])
}

/// Circle key of an epoch wrapped to a trustee.
pub fn circle_key(circle: CircleId, epoch: Epoch, account: AccountId) -> Vec<u8> {
    build(
        b"circlefs/v1/circle-key",
        &[&circle.to_le(), &epoch.to_le(), &account.to_le()],
    )
}

/// Circle name sealed under the directory name key.
pub fn circle_name(circle: CircleId) -> Vec<u8> {
    build(b"circlefs/v1/circle-name", &[&circle.to_le()])
}

/// File content key of one generation wrapped under the circle key of
/// `epoch`; `origin` is the epoch the key was created in. A key wrapped in
/// its own epoch uses the original layout; a re-wrapped one (origin older)
/// also binds the origin, so the store cannot pass an old key off as new.
pub fn file_key(
    circle: CircleId,
    ino: InodeId,
    keygen: KeyGen,
    epoch: Epoch,
    origin: Epoch,
) -> Vec<u8> {
    let base = [
        &circle.to_le()[..],
        &ino.to_le()[..],
        &keygen.to_le()[..],
        &epoch.to_le()[..],
    ];
    if origin == epoch {
        build(b"circlefs/v1/file-key", &base)
    } else {
        let o = origin.to_le();
        build(
            b"circlefs/v1/file-key-rewrapped",
            &[base[0], base[1], base[2], base[3], &o[..]],
        )
    }
}

/// Inode attribute record.
pub fn attrs(circle: CircleId, ino: InodeId, epoch: Epoch) -> Vec<u8> {
    build(
        b"circlefs/v1/attrs",
        &[&circle.to_le(), &ino.to_le(), &epoch.to_le()],
    )
}

/// Directory entry name (bound to its parent directory).
pub fn dirent_name(circle: CircleId, parent: InodeId, epoch: Epoch) -> Vec<u8> {
    build(
        b"circlefs/v1/dirent-name",
        &[&circle.to_le(), &parent.to_le(), &epoch.to_le()],
    )
}

/// Extended attribute (name and value) of an inode.
pub fn xattr(circle: CircleId, ino: InodeId, epoch: Epoch) -> Vec<u8> {
    build(
        b"circlefs/v1/xattr",
        &[&circle.to_le(), &ino.to_le(), &epoch.to_le()],
    )
}

/// Content block: binds format version, circle, content id, key generation and block index.
pub fn block(circle: CircleId, content: &ContentId, keygen: KeyGen, index: BlockIndex) -> [u8; 56] {
    let mut a = [0u8; 56];
    a[..16].copy_from_slice(b"circlefs/v1/blk\0");
    a[16..20].copy_from_slice(&super::FORMAT_VERSION.to_le_bytes());
    a[20..28].copy_from_slice(&circle.to_le());
    a[28..44].copy_from_slice(&content.0);
    a[44..48].copy_from_slice(&keygen.to_le());
    a[48..56].copy_from_slice(&index.to_le());
    a
}

/// Scope of the name index for an extended attribute name.
pub fn xattr_scope(circle: CircleId, ino: InodeId) -> Vec<u8> {
    build(b"xattr", &[&circle.to_le(), &ino.to_le()])
}

/// Scope of the name index for a directory entry.
pub fn name_scope(circle: CircleId, parent: InodeId) -> Vec<u8> {
    build(b"dirent", &[&circle.to_le(), &parent.to_le()])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contexts_are_distinct() {
        let c = CircleId(1);
        let i = InodeId(1);
        let e = Epoch(1);
        let all = [
            account_secret(AccountId(1)),
            dir_key(AccountId(1)),
            circle_key(c, e, AccountId(1)),
            circle_name(c),
            file_key(c, i, KeyGen(1), e, e),
            file_key(c, i, KeyGen(1), e, Epoch(0)),
            attrs(c, i, e),
            dirent_name(c, i, e),
            xattr(c, i, e),
        ];
        for a in 0..all.len() {
            for b in a + 1..all.len() {
                assert_ne!(all[a], all[b]);
            }
        }
        assert_ne!(
            block(c, &ContentId([0; 16]), KeyGen(1), BlockIndex(0)),
            block(c, &ContentId([0; 16]), KeyGen(1), BlockIndex(1))
        );
    }
}
