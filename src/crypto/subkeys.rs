//! HKDF-SHA256 subkeys with distinct constant labels, and the keyed name index.

use hkdf::Hkdf;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::{CryptoError, Key32};

/// Subkey purposes; each has its own constant, versioned label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// Wraps per-file content keys.
    FileKeyWrap,
    /// Encrypts names and symlink targets.
    Name,
    /// Keys the HMAC lookup index of names.
    NameIndex,
    /// Encrypts inode attribute records.
    Meta,
    /// Encrypts extended attributes.
    Xattr,
    /// Preview content (derived from a file key).
    Preview,
}

impl Purpose {
    /// The HKDF info label.
    pub fn label(self) -> &'static [u8] {
        match self {
            Purpose::FileKeyWrap => b"circlefs/v1/file-key-wrap",
            Purpose::Name => b"circlefs/v1/name",
            Purpose::NameIndex => b"circlefs/v1/name-index",
            Purpose::Meta => b"circlefs/v1/meta",
            Purpose::Xattr => b"circlefs/v1/xattr",
            Purpose::Preview => b"circlefs/v1/preview",
        }
    }
}

/// `HKDF[salt="", label](key, 32)`.
pub fn derive(key: &Key32, purpose: Purpose) -> Result<Key32, CryptoError> {
    hkdf_expand(&[], key.expose(), purpose.label())
}

/// `HKDF-SHA256(salt, ikm) -> expand(info, 32)`.
pub fn hkdf_expand(salt: &[u8], ikm: &[u8], info: &[u8]) -> Result<Key32, CryptoError> {
    let hk = Hkdf::<Sha256>::new(Some(salt), ikm);
    let mut out = [0u8; 32];
    hk.expand(info, &mut out)
        .map_err(|_| CryptoError::Internal("hkdf length".into()))?;
    let k = Key32::from_bytes(out);
    zeroize::Zeroize::zeroize(&mut out);
    Ok(k)
}

/// Keyed lookup index: HMAC-SHA256(key, len(scope) || scope || name) truncated to 16 bytes.
pub fn name_index(index_key: &Key32, scope: &[u8], name: &[u8]) -> Result<[u8; 16], CryptoError> {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(index_key.expose())
        .map_err(|_| CryptoError::Internal("hmac key".into()))?;
    mac.update(&(scope.len() as u64).to_le_bytes());
    mac.update(scope);
    mac.update(name);
    let full = mac.finalize().into_bytes();
    let mut out = [0u8; 16];
    out.copy_from_slice(&full[..16]);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_distinct_and_keys_differ() {
        let k = Key32::from_bytes([9; 32]);
        let all = [
            Purpose::FileKeyWrap,
            Purpose::Name,
            Purpose::NameIndex,
            Purpose::Meta,
            Purpose::Xattr,
            Purpose::Preview,
        ];
        let keys: Vec<_> = all.iter().map(|p| derive(&k, *p).unwrap()).collect();
        for i in 0..keys.len() {
            for j in i + 1..keys.len() {
                assert_ne!(keys[i], keys[j]);
                assert_ne!(all[i].label(), all[j].label());
            }
        }
    }

    #[test]
    fn index_depends_on_scope() {
        let k = Key32::from_bytes([1; 32]);
        let a = name_index(&k, b"dir1", b"x").unwrap();
        let b = name_index(&k, b"dir2", b"x").unwrap();
        let c = name_index(&Key32::from_bytes([2; 32]), b"dir1", b"x").unwrap();
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_eq!(a, name_index(&k, b"dir1", b"x").unwrap());
    }
}
