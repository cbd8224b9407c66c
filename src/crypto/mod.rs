//! Cryptographic primitives: secrets, KDF, AEAD, subkeys, key wrapping. No I/O, no SQL.

pub mod aead;
pub mod kdf;
pub mod secret;
pub mod subkeys;
pub mod wrap;

pub use secret::{Key32, Passphrase};

/// Errors of the crypto layer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// Authentication failed: the data was modified, swapped or the key is wrong.
    #[error("integrity check failed: {0}")]
    Integrity(String),
    /// KDF parameters outside the floor/cap.
    #[error("KDF parameters out of range: {0}")]
    KdfParamsOutOfRange(String),
    /// The OS random number generator failed.
    #[error("random number generator failed")]
    Rng,
    /// Anything else (library refused a length, etc.).
    #[error("crypto: {0}")]
    Internal(String),
}

/// Fill `buf` from the OS CSPRNG.
pub fn random_fill(buf: &mut [u8]) -> Result<(), CryptoError> {
    getrandom::fill(buf).map_err(|_| CryptoError::Rng)
}

/// `N` random bytes from the OS CSPRNG.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], CryptoError> {
    let mut b = [0u8; N];
    random_fill(&mut b)?;
    Ok(b)
}
