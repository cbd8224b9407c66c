//! Unwrapped circle keys per epoch and their derived subkeys (zeroized on drop).

use std::collections::BTreeMap;

use crate::crypto::subkeys::{Purpose, derive, name_index};
use crate::crypto::wrap::KeyPair;
use crate::crypto::{Key32, aead::Cipher};
use crate::error::{ErrorKind, Result, err};
use crate::format::aad;
use crate::ids::{AccountId, CircleId, Epoch, InodeId};

/// The subkeys of one circle epoch.
pub struct EpochKeys {
    /// The circle key itself.
    pub ck: Key32,
    /// Wraps file keys.
    pub file_wrap: Cipher,
    /// Encrypts names and symlink targets.
    pub name: Cipher,
    /// Keys the name index.
    pub index: Key32,
    /// Encrypts attribute records.
    pub meta: Cipher,
    /// Encrypts extended attributes.
    pub xattr: Cipher,
}

impl EpochKeys {
    /// Derive every subkey of `ck`.
    pub fn new(ck: Key32) -> Result<EpochKeys> {
        Ok(EpochKeys {
            file_wrap: Cipher::new(&derive(&ck, Purpose::FileKeyWrap)?),
            name: Cipher::new(&derive(&ck, Purpose::Name)?),
            index: derive(&ck, Purpose::NameIndex)?,
            meta: Cipher::new(&derive(&ck, Purpose::Meta)?),
            xattr: Cipher::new(&derive(&ck, Purpose::Xattr)?),
            ck,
        })
    }
}

/// All circle keys an account holds for one circle.
pub struct CircleKeys {
    /// Circle.
    pub circle: CircleId,
    /// Current epoch (new data is written under it).
    pub current: Epoch,
    /// Keys by epoch.
    pub epochs: BTreeMap<Epoch, EpochKeys>,
}

impl std::fmt::Debug for CircleKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "CircleKeys({}, epoch {}, [REDACTED])",
            self.circle, self.current
        )
    }
}

impl CircleKeys {
    /// Unwrap every epoch key wrapped to `account`.
    pub fn unwrap(
        circle: CircleId,
        current: Epoch,
        account: AccountId,
        kp: &KeyPair,
        wraps: &[(Epoch, Vec<u8>)],
    ) -> Result<CircleKeys> {
        let mut epochs = BTreeMap::new();
        for (e, w) in wraps {
            let ck = kp.unwrap_key(&aad::circle_key(circle, *e, account), w)?;
            epochs.insert(*e, EpochKeys::new(ck)?);
        }
        if !epochs.contains_key(&current) {
            return err(
                ErrorKind::Forbidden,
                "no key for the circle's current epoch",
            );
        }
        Ok(CircleKeys {
            circle,
            current,
            epochs,
        })
    }

    /// Keys of `epoch` (integrity error when this account never held it).
    pub fn epoch(&self, epoch: Epoch) -> Result<&EpochKeys> {
        self.epochs.get(&epoch).ok_or_else(|| {
            crate::error::Error::new(
                ErrorKind::Integrity,
                format!("no circle key for epoch {epoch}"),
            )
        })
    }

    /// Keys of the current epoch.
    pub fn cur(&self) -> Result<&EpochKeys> {
        self.epoch(self.current)
    }

    /// Name index of `name` in directory `parent` under every epoch, newest first.
    pub fn name_indexes(&self, parent: InodeId, name: &[u8]) -> Result<Vec<(Epoch, [u8; 16])>> {
        let scope = aad::name_scope(self.circle, parent);
        self.epochs
            .iter()
            .rev()
            .map(|(e, k)| Ok((*e, name_index(&k.index, &scope, name)?)))
            .collect()
    }
}

impl CircleKeys {
    /// Seal an attribute record under the current epoch.
    pub fn seal_attrs(
        &self,
        ino: InodeId,
        a: &crate::format::attrs::Attrs,
    ) -> Result<(Epoch, Vec<u8>)> {
        let k = self.cur()?;
        Ok((
            self.current,
            k.meta
                .seal(&aad::attrs(self.circle, ino, self.current), &a.encode())?,
        ))
    }

    /// Open and validate an inode's sealed record.
    pub fn open_attrs(
        &self,
        row: &crate::store::files::InodeRow,
    ) -> Result<crate::format::attrs::Attrs> {
        if row.circle != self.circle {
            return err(ErrorKind::Integrity, "inode belongs to another circle");
        }
        let k = self.epoch(row.epoch)?;
        let pt = k.meta.open(
            &aad::attrs(self.circle, row.id, row.epoch),
            &row.attrs,
            "attribute record",
        )?;
        let a = crate::format::attrs::Attrs::decode(&pt)?;
        if a.kind as u8 != row.kind {
            return err(ErrorKind::Integrity, "inode kind does not match its record");
        }
        Ok(a)
    }
}
