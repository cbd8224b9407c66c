//! AES-256-GCM-SIV seal/open with random 96-bit nonces: `nonce || ciphertext || tag`.

use aes_gcm_siv::aead::{Aead, AeadInOut, KeyInit, Payload};
use aes_gcm_siv::{Aes256GcmSiv, Nonce, Tag};

use super::{CryptoError, Key32, random_bytes, random_fill};

/// Nonce length in bytes.
pub const NONCE_LEN: usize = 12;
/// Tag length in bytes.
pub const TAG_LEN: usize = 16;
/// Bytes added by `seal`.
pub const OVERHEAD: usize = NONCE_LEN + TAG_LEN;

/// A keyed cipher, ready to seal and open many messages.
pub struct Cipher(Aes256GcmSiv);

impl Cipher {
    /// Key the cipher.
    pub fn new(key: &Key32) -> Self {
        Cipher(Aes256GcmSiv::new(key.expose().into()))
    }

    /// `encrypt[key](plaintext)` with a fresh random nonce; returns
    /// `nonce || ciphertext || tag`.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let nonce = random_bytes::<NONCE_LEN>()?;
        let n = Nonce::from(nonce);
        let ct = self
            .0
            .encrypt(
                &n,
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .map_err(|_| CryptoError::Internal("seal refused the input length".into()))?;
        let mut out = Vec::with_capacity(NONCE_LEN + ct.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    /// Open `nonce || ciphertext || tag`; any change is an integrity error.
    pub fn open(&self, aad: &[u8], sealed: &[u8], what: &str) -> Result<Vec<u8>, CryptoError> {
        if sealed.len() < OVERHEAD {
            return Err(CryptoError::Integrity(format!("{what}: too short")));
        }
        let (nonce, ct) = sealed.split_at(NONCE_LEN);
        let mut arr = [0u8; NONCE_LEN];
        arr.copy_from_slice(nonce);
        self.0
            .decrypt(&Nonce::from(arr), Payload { msg: ct, aad })
            .map_err(|_| CryptoError::Integrity(what.to_string()))
    }

    /// Encrypt `buf` in place (ciphertext is as long as the plaintext) with
    /// the next nonce of `nonces`; returns the nonce and the tag, which the
    /// caller stores apart (content blocks: the page holds only ciphertext).
    pub fn seal_detached(
        &self,
        nonces: &mut Nonces,
        aad: &[u8],
        buf: &mut [u8],
    ) -> Result<([u8; NONCE_LEN], [u8; TAG_LEN]), CryptoError> {
        let nonce = nonces.take()?;
        let tag = self
            .0
            .encrypt_inout_detached(&Nonce::from(nonce), aad, buf.into())
            .map_err(|_| CryptoError::Internal("seal refused the input length".into()))?;
        let mut t = [0u8; TAG_LEN];
        t.copy_from_slice(tag.as_slice());
        Ok((nonce, t))
    }

    /// Open ciphertext `ct` with its detached `nonce` and `tag` into `out`
    /// (as long as `ct`); any change is an integrity error and leaves
    /// `out` zeroed.
    pub fn open_detached(
        &self,
        aad: &[u8],
        nonce: &[u8; NONCE_LEN],
        tag: &[u8; TAG_LEN],
        ct: &[u8],
        out: &mut [u8],
        what: &str,
    ) -> Result<(), CryptoError> {
        if out.len() != ct.len() {
            return Err(CryptoError::Integrity(format!("{what}: wrong length")));
        }
        out.copy_from_slice(ct);
        self.0
            .decrypt_inout_detached(&Nonce::from(*nonce), aad, out.into(), &Tag::from(*tag))
            .map_err(|_| {
                out.fill(0);
                CryptoError::Integrity(what.to_string())
            })
    }
}

/// Random nonces for a run of seals, drawn from the OS CSPRNG in one call
/// (a 1 MiB write seals 259 blocks); each is handed out once, and a batch
/// that is used up refuses rather than repeats.
pub struct Nonces {
    buf: Vec<u8>,
    next: usize,
}

impl Nonces {
    /// `n` fresh nonces.
    pub fn fresh(n: usize) -> Result<Nonces, CryptoError> {
        let len = n
            .checked_mul(NONCE_LEN)
            .ok_or_else(|| CryptoError::Internal("too many nonces".into()))?;
        let mut buf = vec![0u8; len];
        random_fill(&mut buf)?;
        Ok(Nonces { buf, next: 0 })
    }

    /// The next unused nonce.
    fn take(&mut self) -> Result<[u8; NONCE_LEN], CryptoError> {
        let end = self.next + NONCE_LEN;
        let src = self
            .buf
            .get(self.next..end)
            .ok_or_else(|| CryptoError::Internal("nonces used up".into()))?;
        let mut n = [0u8; NONCE_LEN];
        n.copy_from_slice(src);
        self.next = end;
        Ok(n)
    }
}

/// One-shot seal.
pub fn seal(key: &Key32, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
    Cipher::new(key).seal(aad, plaintext)
}

/// One-shot open.
pub fn open(key: &Key32, aad: &[u8], sealed: &[u8], what: &str) -> Result<Vec<u8>, CryptoError> {
    Cipher::new(key).open(aad, sealed, what)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn a_batch_of_nonces_hands_each_out_once() {
        let k = Key32::random().unwrap();
        let c = Cipher::new(&k);
        let mut nonces = Nonces::fresh(3).unwrap();
        let pt = [7u8; 64];
        let mut seen = HashSet::new();
        for _ in 0..3 {
            let mut buf = pt;
            let (n, t) = c.seal_detached(&mut nonces, b"a", &mut buf).unwrap();
            assert!(seen.insert(n), "a nonce repeated");
            let mut back = [0u8; 64];
            c.open_detached(b"a", &n, &t, &buf, &mut back, "t").unwrap();
            assert_eq!(back, pt);
        }
        let mut buf = pt;
        assert!(
            c.seal_detached(&mut nonces, b"a", &mut buf).is_err(),
            "a used-up batch refuses"
        );
        assert_eq!(buf, pt, "and encrypts nothing");
    }

    #[test]
    fn roundtrip_and_tamper() {
        let k = Key32::random().unwrap();
        let s = seal(&k, b"aad", b"hello").unwrap();
        assert_eq!(open(&k, b"aad", &s, "t").unwrap(), b"hello");
        assert!(open(&k, b"aaX", &s, "t").is_err());
        for i in 0..s.len() {
            let mut t = s.clone();
            t[i] ^= 1;
            assert!(open(&k, b"aad", &t, "t").is_err(), "byte {i}");
        }
        let k2 = Key32::random().unwrap();
        assert!(open(&k2, b"aad", &s, "t").is_err());
    }

    #[test]
    fn same_plaintext_differs_and_nonces_unique() {
        let k = Key32::random().unwrap();
        let c = Cipher::new(&k);
        let a = c.seal(b"", &[7u8; 64]).unwrap();
        let b = c.seal(b"", &[7u8; 64]).unwrap();
        assert_ne!(a, b);
        let mut seen = HashSet::new();
        for _ in 0..100_000 {
            let s = c.seal(b"", b"x").unwrap();
            assert!(seen.insert(s[..NONCE_LEN].to_vec()), "duplicate nonce");
        }
    }

    #[test]
    fn detached_roundtrip_and_tamper() {
        let k = Key32::random().unwrap();
        let c = Cipher::new(&k);
        let pt = vec![3u8; 4096];
        let mut ct = pt.clone();
        let (n, t) = c
            .seal_detached(&mut Nonces::fresh(1).unwrap(), b"A", &mut ct)
            .unwrap();
        assert_ne!(ct, pt, "encrypted in place");
        let mut back = vec![0u8; 4096];
        c.open_detached(b"A", &n, &t, &ct, &mut back, "b").unwrap();
        assert_eq!(back, pt);
        let mut bad = ct.clone();
        bad[100] ^= 0x80;
        assert!(c.open_detached(b"A", &n, &t, &bad, &mut back, "b").is_err());
        assert!(back.iter().all(|b| *b == 0), "no garbage on failure");
        let mut t2 = t;
        t2[0] ^= 1;
        assert!(c.open_detached(b"A", &n, &t2, &ct, &mut back, "b").is_err());
        let mut n2 = n;
        n2[11] ^= 1;
        assert!(c.open_detached(b"A", &n2, &t, &ct, &mut back, "b").is_err());
        assert!(c.open_detached(b"B", &n, &t, &ct, &mut back, "b").is_err());
    }
}
