//! An unlocked account: its key pair, the directory key and cached circle keys.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::crypto::Key32;
use crate::crypto::aead::Cipher;
use crate::crypto::subkeys::{Purpose, derive, name_index};
use crate::crypto::wrap::KeyPair;
use crate::error::{Error, ErrorKind, Result};
use crate::format::aad;
use crate::ids::{AccountId, CircleId, CircleName};
use crate::store::rows::CircleRow;

use super::keys::CircleKeys;

/// An unlocked account.
pub struct Session {
    /// Account id.
    pub account: AccountId,
    /// Account name.
    pub name: String,
    pub(crate) keys: KeyPair,
    pub(crate) dir_key: Key32,
    dir_name: Cipher,
    dir_index: Key32,
    /// uid given to new files when the caller does not say.
    pub uid: u32,
    /// gid given to new files when the caller does not say.
    pub gid: u32,
    circles: Mutex<HashMap<CircleId, Arc<CircleKeys>>>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Session({}, [REDACTED])", self.name)
    }
}

impl Session {
    pub(crate) fn new(
        account: AccountId,
        name: String,
        keys: KeyPair,
        dir_key: Key32,
    ) -> Result<Session> {
        Ok(Session {
            account,
            name,
            keys,
            dir_name: Cipher::new(&derive(&dir_key, Purpose::Name)?),
            dir_index: derive(&dir_key, Purpose::NameIndex)?,
            dir_key,
            uid: nix::unistd::geteuid().as_raw(),
            gid: nix::unistd::getegid().as_raw(),
            circles: Mutex::new(HashMap::new()),
        })
    }

    /// A second session of the same account (for a background job with its
    /// own key cache).
    pub fn duplicate(&self) -> Result<Session> {
        Session::new(
            self.account,
            self.name.clone(),
            KeyPair::from_secret(self.keys.secret().clone()),
            self.dir_key.clone(),
        )
    }

    /// Keyed index of a circle name.
    pub(crate) fn circle_index(&self, name: &str) -> Result<[u8; 16]> {
        Ok(name_index(&self.dir_index, b"circle", name.as_bytes())?)
    }

    /// Seal a circle name.
    pub(crate) fn seal_circle_name(&self, circle: CircleId, name: &str) -> Result<Vec<u8>> {
        Ok(self
            .dir_name
            .seal(&aad::circle_name(circle), name.as_bytes())?)
    }

    /// Open a circle's sealed name (validated).
    pub fn circle_name(&self, row: &CircleRow) -> Result<CircleName> {
        let pt = self
            .dir_name
            .open(&aad::circle_name(row.id), &row.name_ct, "circle name")?;
        let s = String::from_utf8(pt)
            .map_err(|_| Error::new(ErrorKind::Integrity, "circle name is not UTF-8"))?;
        crate::format::name::check_circle_name(&s)
            .map_err(|_| Error::new(ErrorKind::Integrity, "circle name fails validation"))?;
        let idx = self.circle_index(&s)?;
        if idx[..] != row.name_index[..] {
            return Err(Error::new(
                ErrorKind::Integrity,
                "circle name does not match its index",
            ));
        }
        Ok(CircleName(s))
    }

    /// Cached keys of a circle if still current for `epoch`.
    pub(crate) fn cached_keys(
        &self,
        circle: CircleId,
        current: crate::ids::Epoch,
    ) -> Option<Arc<CircleKeys>> {
        let m = self.circles.lock().ok()?;
        m.get(&circle).filter(|k| k.current == current).cloned()
    }

    /// Cache keys of a circle.
    pub(crate) fn cache_keys(&self, keys: Arc<CircleKeys>) {
        if let Ok(mut m) = self.circles.lock() {
            m.insert(keys.circle, keys);
        }
    }

    /// Drop (and so zeroize) cached keys of a circle, or of all circles.
    pub fn forget_keys(&self, circle: Option<CircleId>) {
        if let Ok(mut m) = self.circles.lock() {
            match circle {
                Some(c) => {
                    m.remove(&c);
                }
                None => m.clear(),
            }
        }
    }

    /// Test hook: every raw key this session holds (account secret,
    /// directory key, circle keys by epoch), for adversary tests.
    #[cfg(feature = "test-hooks")]
    pub fn export_keys(&self) -> ExportedKeys {
        let circles = self
            .circles
            .lock()
            .map(|m| {
                m.values()
                    .flat_map(|k| {
                        k.epochs
                            .iter()
                            .map(|(e, ek)| (k.circle, *e, *ek.ck.expose()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        ExportedKeys {
            secret: *self.keys.secret().expose(),
            dir_key: *self.dir_key.expose(),
            circles,
        }
    }
}

/// Raw keys exported by the test hook.
#[cfg(feature = "test-hooks")]
#[derive(Clone)]
pub struct ExportedKeys {
    /// X25519 secret.
    pub secret: [u8; 32],
    /// Store directory key.
    pub dir_key: [u8; 32],
    /// (circle, epoch, key).
    pub circles: Vec<(CircleId, crate::ids::Epoch, [u8; 32])>,
}
