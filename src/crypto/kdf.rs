//! Argon2id key derivation with a floor, a default and a cap on parameters.

use argon2::{Algorithm, Argon2, AssociatedData, ParamsBuilder, Version};

use super::{CryptoError, Key32, Passphrase};

/// Salt length stored per account.
pub const SALT_LEN: usize = 16;

/// Argon2id cost parameters as stored with each account.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_kib: u32,
    /// Passes.
    pub t: u32,
    /// Lanes.
    pub p: u32,
}

impl KdfParams {
    /// RFC 9106 section 4, second recommendation: 64 MiB, t=3, p=4.
    pub const DEFAULT: KdfParams = KdfParams {
        m_kib: 64 * 1024,
        t: 3,
        p: 4,
    };
    /// OWASP floor (19 MiB, t=2, p=1); also the `fast` profile for tests and demos.
    pub const FLOOR: KdfParams = KdfParams {
        m_kib: 19 * 1024,
        t: 2,
        p: 1,
    };
    /// Cap: nothing above 1 GiB, 10 passes or 16 lanes is ever loaded, so a
    /// tampered row cannot exhaust memory or time.
    pub const CAP: KdfParams = KdfParams {
        m_kib: 1024 * 1024,
        t: 10,
        p: 16,
    };

    /// Check floor and cap before any memory is allocated.
    pub fn check(&self) -> Result<(), CryptoError> {
        let f = Self::FLOOR;
        let c = Self::CAP;
        if self.m_kib < f.m_kib || self.t < f.t || self.p < f.p {
            return Err(CryptoError::KdfParamsOutOfRange(format!(
                "m={} KiB t={} p={} is below the floor m={} t={} p={}",
                self.m_kib, self.t, self.p, f.m_kib, f.t, f.p
            )));
        }
        if self.m_kib > c.m_kib || self.t > c.t || self.p > c.p {
            return Err(CryptoError::KdfParamsOutOfRange(format!(
                "m={} KiB t={} p={} is above the cap m={} t={} p={}",
                self.m_kib, self.t, self.p, c.m_kib, c.t, c.p
            )));
        }
        Ok(())
    }

    /// Parameters of a named profile (`default` or `fast`).
    pub fn profile(name: &str) -> Option<KdfParams> {
        match name {
            "default" => Some(Self::DEFAULT),
            "fast" => Some(Self::FLOOR),
            _ => None,
        }
    }
}

/// Raw Argon2id v0x13 (exposed for the RFC 9106 vector test).
pub fn argon2id_raw(
    pwd: &[u8],
    salt: &[u8],
    params: KdfParams,
    secret: &[u8],
    ad: &[u8],
    out: &mut [u8],
) -> Result<(), CryptoError> {
    let ad =
        AssociatedData::new(ad).map_err(|e| CryptoError::Internal(format!("argon2 ad: {e}")))?;
    let p = ParamsBuilder::new()
        .m_cost(params.m_kib)
        .t_cost(params.t)
        .p_cost(params.p)
        .data(ad)
        .output_len(out.len())
        .build()
        .map_err(|e| CryptoError::KdfParamsOutOfRange(format!("argon2: {e}")))?;
    let ctx = if secret.is_empty() {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, p)
    } else {
        Argon2::new_with_secret(secret, Algorithm::Argon2id, Version::V0x13, p)
            .map_err(|e| CryptoError::Internal(format!("argon2: {e}")))?
    };
    ctx.hash_password_into(pwd, salt, out)
        .map_err(|e| CryptoError::Internal(format!("argon2: {e}")))
}

/// KEK = Argon2id(passphrase, salt; params). Parameters are checked first.
pub fn derive_kek(pass: &Passphrase, salt: &[u8], params: KdfParams) -> Result<Key32, CryptoError> {
    params.check()?;
    if salt.len() != SALT_LEN {
        return Err(CryptoError::Integrity(
            "account salt has wrong length".into(),
        ));
    }
    let mut out = [0u8; 32];
    argon2id_raw(pass.expose(), salt, params, &[], &[], &mut out)?;
    let k = Key32::from_bytes(out);
    zeroize::Zeroize::zeroize(&mut out);
    Ok(k)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn rfc9106_argon2id_vector() {
        // RFC 9106 section 5.3.
        let mut out = [0u8; 32];
        argon2id_raw(
            &[1u8; 32],
            &[2u8; 16],
            KdfParams {
                m_kib: 32,
                t: 3,
                p: 4,
            },
            &[3u8; 8],
            &[4u8; 12],
            &mut out,
        )
        .unwrap();
        let expect = "0d640df58d78766c08c037a34a8b53c9d01ef0452d75b65eb52520e96b01e659";
        let got: String = out.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(got, expect);
    }

    #[test]
    fn floor_default_cap() {
        assert!(KdfParams::DEFAULT.check().is_ok());
        assert!(KdfParams::FLOOR.check().is_ok());
        assert!(KdfParams::CAP.check().is_ok());
        assert!(
            KdfParams {
                m_kib: 1024,
                t: 2,
                p: 1
            }
            .check()
            .is_err()
        );
        assert!(
            KdfParams {
                m_kib: 19456,
                t: 1,
                p: 1
            }
            .check()
            .is_err()
        );
        assert!(
            KdfParams {
                m_kib: 19456,
                t: 11,
                p: 1
            }
            .check()
            .is_err()
        );
    }

    #[test]
    fn absurd_params_refused_quickly() {
        let t0 = Instant::now();
        let r = derive_kek(
            &Passphrase::new(b"x".to_vec()),
            &[0u8; 16],
            KdfParams {
                m_kib: u32::MAX,
                t: 3,
                p: 4,
            },
        );
        assert!(matches!(r, Err(CryptoError::KdfParamsOutOfRange(_))));
        // Generous bound: refusing must not allocate 4 TiB or hash at all.
        assert!(t0.elapsed().as_millis() < 1000);
    }

    #[test]
    fn kek_depends_on_passphrase_and_salt() {
        let p = KdfParams::FLOOR;
        let a = derive_kek(&Passphrase::new(b"a".to_vec()), &[1; 16], p).unwrap();
        let b = derive_kek(&Passphrase::new(b"b".to_vec()), &[1; 16], p).unwrap();
        let c = derive_kek(&Passphrase::new(b"a".to_vec()), &[2; 16], p).unwrap();
        let a2 = derive_kek(&Passphrase::new(b"a".to_vec()), &[1; 16], p).unwrap();
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_eq!(a, a2);
    }
}
