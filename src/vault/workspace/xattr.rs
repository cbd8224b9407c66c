//! Extended attributes: `user.*` only, names and values sealed per inode.

use crate::crypto::subkeys::name_index;
use crate::error::{Error, ErrorKind, Result, err};
use crate::format::aad;
use crate::format::attrs::Reader;
use crate::ids::InodeId;
use crate::store::Tx;

use super::{CircleAccess, Op, Workspace};

/// Longest attribute name.
pub const MAX_XATTR_NAME: usize = 255;
/// Largest attribute value.
pub const MAX_XATTR_VALUE: usize = 64 * 1024;

/// setxattr flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XattrMode {
    /// Create or replace.
    Any,
    /// Fail if it exists (XATTR_CREATE).
    Create,
    /// Fail if it does not exist (XATTR_REPLACE).
    Replace,
}

fn check_name(name: &[u8]) -> Result<()> {
    if name.is_empty() || name.len() > MAX_XATTR_NAME {
        return err(ErrorKind::Invalid, "bad attribute name length");
    }
    if !name.starts_with(b"user.") {
        return err(
            ErrorKind::NotSupported,
            "only user.* attributes are supported",
        );
    }
    Ok(())
}

fn scope(a: &CircleAccess, ino: InodeId) -> Vec<u8> {
    crate::format::aad::xattr_scope(a.row.id, ino)
}

impl Workspace {
    /// Find an attribute: (index, name, value).
    fn xattr_find(
        &self,
        tx: &Tx<'_>,
        a: &CircleAccess,
        ino: InodeId,
        name: &[u8],
    ) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        let sc = scope(a, ino);
        for (e, k) in a.keys.epochs.iter().rev() {
            let idx = name_index(&k.index, &sc, name)?;
            if let Some((re, sealed)) = tx.xattr_get(ino, &idx)? {
                if re != *e {
                    continue;
                }
                let (n, v) = self.xattr_open(a, ino, re, &sealed)?;
                if n != name {
                    return err(ErrorKind::Integrity, "attribute does not match its index");
                }
                return Ok(Some((idx.to_vec(), v)));
            }
        }
        Ok(None)
    }

    fn xattr_open(
        &self,
        a: &CircleAccess,
        ino: InodeId,
        e: crate::ids::Epoch,
        sealed: &[u8],
    ) -> Result<(Vec<u8>, Vec<u8>)> {
        let k = a.keys.epoch(e)?;
        let pt = k
            .xattr
            .open(&aad::xattr(a.row.id, ino, e), sealed, "extended attribute")?;
        let mut r = Reader::new(&pt);
        let nl = r.u16()? as usize;
        let n = r.bytes(nl)?.to_vec();
        let vl = r.u32()? as usize;
        let v = r.bytes(vl)?.to_vec();
        r.finish()?;
        Ok((n, v))
    }

    /// setxattr.
    pub fn setxattr(&self, ino: InodeId, name: &[u8], value: &[u8], mode: XattrMode) -> Result<()> {
        check_name(name)?;
        if value.len() > MAX_XATTR_VALUE {
            return err(ErrorKind::TooBig, "attribute value too large");
        }
        self.vault.store().write(|tx| {
            let (_, a) = self.row(tx, ino)?;
            self.check(&a, Op::WriteFiles)?;
            let old = self.xattr_find(tx, &a, ino, name)?;
            match (&old, mode) {
                (Some(_), XattrMode::Create) => {
                    return err(ErrorKind::Conflict, "attribute exists");
                }
                (None, XattrMode::Replace) => return err(ErrorKind::NoAttr, "no such attribute"),
                _ => {}
            }
            if let Some((idx, _)) = old {
                tx.xattr_remove(ino, &idx)?;
            }
            let e = a.keys.current;
            let k = a.keys.cur()?;
            let idx = name_index(&k.index, &scope(&a, ino), name)?;
            let mut pt = Vec::with_capacity(6 + name.len() + value.len());
            pt.extend_from_slice(&(name.len() as u16).to_le_bytes());
            pt.extend_from_slice(name);
            pt.extend_from_slice(&(value.len() as u32).to_le_bytes());
            pt.extend_from_slice(value);
            let sealed = k.xattr.seal(&aad::xattr(a.row.id, ino, e), &pt)?;
            tx.xattr_set(ino, &idx, e, &sealed)?;
            Ok(())
        })
    }

    /// getxattr. Other namespaces than `user.` are not supported
    /// (EOPNOTSUPP, as setxattr): `ls -l` and `cp -a` then stop probing
    /// `security.selinux` and POSIX ACLs on this filesystem after one file
    /// instead of asking for every file.
    pub fn getxattr(&self, ino: InodeId, name: &[u8]) -> Result<Vec<u8>> {
        if !name.starts_with(b"user.") {
            return err(
                ErrorKind::NotSupported,
                "only user.* attributes are supported",
            );
        }
        self.vault.store().read(|tx| {
            let (_, a) = self.row(tx, ino)?;
            self.check(&a, Op::ReadFiles)?;
            match self.xattr_find(tx, &a, ino, name)? {
                Some((_, v)) => Ok(v),
                None => err(ErrorKind::NoAttr, "no such attribute"),
            }
        })
    }

    /// listxattr: names, each NUL-terminated.
    pub fn listxattr(&self, ino: InodeId) -> Result<Vec<u8>> {
        self.vault.store().read(|tx| {
            let (_, a) = self.row(tx, ino)?;
            self.check(&a, Op::ReadFiles)?;
            let mut out = Vec::new();
            for (_, e, sealed) in tx.xattr_list(ino)? {
                let (n, _) = self.xattr_open(&a, ino, e, &sealed)?;
                if n.contains(&0) {
                    return Err(Error::new(
                        ErrorKind::Integrity,
                        "attribute name contains NUL",
                    ));
                }
                out.extend_from_slice(&n);
                out.push(0);
            }
            Ok(out)
        })
    }

    /// removexattr.
    pub fn removexattr(&self, ino: InodeId, name: &[u8]) -> Result<()> {
        check_name(name)?;
        self.vault.store().write(|tx| {
            let (_, a) = self.row(tx, ino)?;
            self.check(&a, Op::WriteFiles)?;
            match self.xattr_find(tx, &a, ino, name)? {
                Some((idx, _)) => {
                    tx.xattr_remove(ino, &idx)?;
                    Ok(())
                }
                None => err(ErrorKind::NoAttr, "no such attribute"),
            }
        })
    }
}
