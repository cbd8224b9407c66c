//! Sealed boxes: wrap a key to an account's X25519 public key (ephemeral
//! X25519 + HKDF-SHA256 + AES-256-GCM-SIV), age-style.

use x25519_dalek::{PublicKey, StaticSecret};

use super::aead;
use super::subkeys::hkdf_expand;
use super::{CryptoError, Key32, random_bytes};

/// HKDF info label for wrapping keys.
pub const WRAP_LABEL: &[u8] = b"circlefs/v1/x25519-wrap";
/// Length of a wrapped 32-byte key: epk(32) || nonce(12) || ct(32) || tag(16).
pub const WRAPPED_LEN: usize = 32 + aead::OVERHEAD + 32;

/// An account key pair (secret zeroized on drop).
pub struct KeyPair {
    secret: Key32,
    /// The public half.
    pub public: [u8; 32],
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyPair([REDACTED])")
    }
}

impl KeyPair {
    /// A fresh key pair.
    pub fn generate() -> Result<Self, CryptoError> {
        Ok(Self::from_secret(Key32::random()?))
    }

    /// Rebuild from the secret.
    pub fn from_secret(secret: Key32) -> Self {
        let s = StaticSecret::from(*secret.expose());
        let public = PublicKey::from(&s).to_bytes();
        KeyPair { secret, public }
    }

    /// The secret half.
    pub fn secret(&self) -> &Key32 {
        &self.secret
    }

    /// Unwrap a sealed box addressed to this key pair.
    pub fn unwrap_key(&self, ctx: &[u8], wrapped: &[u8]) -> Result<Key32, CryptoError> {
        if wrapped.len() != WRAPPED_LEN {
            return Err(CryptoError::Integrity(
                "wrapped key has wrong length".into(),
            ));
        }
        let mut epk = [0u8; 32];
        epk.copy_from_slice(&wrapped[..32]);
        let s = StaticSecret::from(*self.secret.expose());
        let shared = s.diffie_hellman(&PublicKey::from(epk));
        if !shared.was_contributory() {
            return Err(CryptoError::Integrity(
                "wrapped key: low-order point".into(),
            ));
        }
        let wk = wrap_key(shared.as_bytes(), &epk, &self.public)?;
        let pt = aead::open(&wk, ctx, &wrapped[32..], "wrapped key")?;
        let k = Key32::from_slice(&pt);
        let mut pt = pt;
        zeroize::Zeroize::zeroize(&mut pt);
        k
    }
}

fn wrap_key(shared: &[u8; 32], epk: &[u8; 32], recipient: &[u8; 32]) -> Result<Key32, CryptoError> {
    let mut salt = [0u8; 64];
    salt[..32].copy_from_slice(epk);
    salt[32..].copy_from_slice(recipient);
    hkdf_expand(&salt, shared, WRAP_LABEL)
}

/// Wrap `key` to `recipient` with associated context `ctx` (binds circle,
/// epoch, account so a wrap cannot be moved to another row).
pub fn wrap_to(recipient: &[u8; 32], ctx: &[u8], key: &Key32) -> Result<Vec<u8>, CryptoError> {
    let esk = StaticSecret::from(random_bytes::<32>()?);
    let epk = PublicKey::from(&esk).to_bytes();
    let shared = esk.diffie_hellman(&PublicKey::from(*recipient));
    if !shared.was_contributory() {
        return Err(CryptoError::Integrity(
            "recipient public key is a low-order point".into(),
        ));
    }
    let wk = wrap_key(shared.as_bytes(), &epk, recipient)?;
    let body = aead::seal(&wk, ctx, key.expose())?;
    let mut out = Vec::with_capacity(WRAPPED_LEN);
    out.extend_from_slice(&epk);
    out.extend_from_slice(&body);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_unwrap() {
        let kp = KeyPair::generate().unwrap();
        let other = KeyPair::generate().unwrap();
        let k = Key32::random().unwrap();
        let w = wrap_to(&kp.public, b"ctx", &k).unwrap();
        assert_eq!(w.len(), WRAPPED_LEN);
        assert_eq!(kp.unwrap_key(b"ctx", &w).unwrap(), k);
        assert!(kp.unwrap_key(b"ctX", &w).is_err());
        assert!(other.unwrap_key(b"ctx", &w).is_err());
        for i in 0..w.len() {
            let mut t = w.clone();
            t[i] ^= 4;
            assert!(kp.unwrap_key(b"ctx", &t).is_err(), "byte {i}");
        }
    }

    #[test]
    fn zero_public_key_refused() {
        let k = Key32::random().unwrap();
        assert!(wrap_to(&[0u8; 32], b"", &k).is_err());
    }
}
