//! Secret types: zeroized on drop, redacted in Debug, no Display.

use std::fmt;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::{CryptoError, random_bytes};

/// A 256-bit symmetric (or X25519 secret) key.
#[derive(Clone, Zeroize, ZeroizeOnDrop, PartialEq, Eq)]
pub struct Key32([u8; 32]);

impl Key32 {
    /// Wrap raw bytes (the caller's copy should be zeroized by the caller).
    pub fn from_bytes(b: [u8; 32]) -> Self {
        Self(b)
    }

    /// A fresh random key.
    pub fn random() -> Result<Self, CryptoError> {
        Ok(Self(random_bytes::<32>()?))
    }

    /// From a slice of exactly 32 bytes.
    pub fn from_slice(s: &[u8]) -> Result<Self, CryptoError> {
        let arr: [u8; 32] = s
            .try_into()
            .map_err(|_| CryptoError::Integrity("key has wrong length".into()))?;
        Ok(Self(arr))
    }

    /// The raw bytes; use sites are few and explicit.
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for Key32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key32([REDACTED])")
    }
}

/// A passphrase (bytes as typed, without the trailing newline).
#[derive(Clone, PartialEq, Eq)]
pub struct Passphrase(Zeroizing<Vec<u8>>);

impl Passphrase {
    /// Take ownership of the bytes.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// The raw bytes.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Passphrase([REDACTED])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let k = Key32::from_bytes([0xAB; 32]);
        let s = format!("{k:?}");
        assert!(s.contains("REDACTED"));
        assert!(!s.to_lowercase().contains("ab, ab") && !s.contains("171"));
        let p = Passphrase::new(b"hunter2".to_vec());
        assert!(!format!("{p:?}").contains("hunter2"));
    }
}
