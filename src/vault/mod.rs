//! The vault: opens a store, unlocks accounts into sessions, and performs
//! every core operation (accounts, circles, trustees, files) with its
//! permission check. Everything below FUSE; every security property is
//! testable here.

pub mod accounts;
pub mod authorize;
pub mod circles;
pub mod keys;
pub mod reseal;
pub mod session;
pub mod workspace;

use std::path::Path;

use crate::crypto::kdf::{KdfParams, SALT_LEN, derive_kek};
use crate::crypto::wrap::KeyPair;
use crate::crypto::{Key32, Passphrase, aead, random_bytes};
use crate::error::{Error, ErrorKind, Result, err};
use crate::format::{aad, name};
use crate::ids::AccountId;
use crate::store::Store;
use crate::store::rows::{AccountRow, NewAccount};

pub use authorize::{Object, Op, Subject, authorize};
pub use session::Session;

/// An open store.
#[derive(Debug)]
pub struct Vault {
    store: Store,
}

/// Seconds since the epoch.
pub(crate) fn now_secs() -> i64 {
    crate::format::attrs::Time::now().sec
}

/// KDF profile names accepted by `init --kdf`.
pub const KDF_PROFILES: &[&str] = &["default", "fast"];

impl Vault {
    /// Create a store at `root` with its system administrator account.
    pub fn init(root: &Path, admin: &str, pass: &Passphrase, kdf_profile: &str) -> Result<Vault> {
        name::check_account_name(admin)?;
        check_new_passphrase(pass)?;
        KdfParams::profile(kdf_profile).ok_or_else(|| {
            Error::new(
                ErrorKind::BadRequest,
                format!("unknown KDF profile {kdf_profile} (default|fast)"),
            )
        })?;
        let store =
            Store::create(root).map_err(|e| Error::new(ErrorKind::Conflict, e.to_string()))?;
        store.write(|tx| {
            tx.meta_set("kdf_profile", kdf_profile)?;
            tx.meta_set("created", &now_secs().to_string())?;
            Ok::<_, Error>(())
        })?;
        let vault = Vault { store };
        let dir_key = Key32::random()?;
        let flags = Flags {
            sysadmin: true,
            user_admin: true,
            may_change_password: true,
        };
        vault.create_account(admin, pass, &dir_key, flags, Person::default())?;
        vault.store.write(|tx| {
            if let Some(mut row) = tx.account_by_name(admin)? {
                row.verified = true;
                tx.account_update(&row)?;
            }
            Ok::<_, Error>(())
        })?;
        Ok(vault)
    }

    /// Open an existing store.
    pub fn open(root: &Path) -> Result<Vault> {
        let store = Store::open(root).map_err(|e| match e {
            crate::store::StoreError::Format(m) => Error::new(ErrorKind::NotFound, m),
            other => Error::from(other),
        })?;
        Ok(Vault { store })
    }

    /// The underlying store (for the layers that own SQL and blocks only).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// KDF parameters new accounts get in this store.
    pub fn kdf_params(&self) -> Result<KdfParams> {
        let p = self.store.read(|tx| tx.meta_get("kdf_profile"))?;
        KdfParams::profile(p.as_deref().unwrap_or("default")).ok_or_else(|| {
            Error::new(
                ErrorKind::Integrity,
                "unknown KDF profile recorded in store",
            )
        })
    }

    /// Unlock `name` with `pass`: 401 for an unknown account or a wrong passphrase.
    pub fn unlock(&self, name: &str, pass: &Passphrase) -> Result<Session> {
        let row = self
            .store
            .read(|tx| tx.account_by_name(name))?
            .ok_or_else(|| {
                Error::new(ErrorKind::Unauthorized, format!("unknown account {name}"))
            })?;
        let keys = open_account(&row, pass)?;
        let dir_key = keys
            .unwrap_key(&aad::dir_key(row.id), &row.dir_key_wrap)
            .map_err(|_| {
                Error::new(
                    ErrorKind::Integrity,
                    "directory key wrap does not authenticate",
                )
            })?;
        let s = Session::new(row.id, row.name.clone(), keys, dir_key)?;
        self.heal_wraps(&s)?;
        self.finish_reseals(&s)?;
        Ok(s)
    }

    /// Create an account (sealing its secret, wrapping the directory key).
    pub(crate) fn create_account(
        &self,
        name: &str,
        pass: &Passphrase,
        dir_key: &Key32,
        flags: Flags,
        person: Person,
    ) -> Result<AccountId> {
        let params = self.kdf_params()?;
        let salt = random_bytes::<SALT_LEN>()?;
        let kek = derive_kek(pass, &salt, params)?;
        let kp = KeyPair::generate()?;
        self.store.write(|tx| {
            if tx.account_by_name(name)?.is_some() {
                return err(
                    ErrorKind::Conflict,
                    format!("account {name} already exists"),
                );
            }
            let id = tx.account_insert(&NewAccount {
                name,
                given_name: person.given_name.as_deref(),
                family_name: person.family_name.as_deref(),
                email: person.email.as_deref(),
                may_change_password: flags.may_change_password,
                user_admin: flags.user_admin,
                sysadmin: flags.sysadmin,
                kdf: (params.m_kib as i64, params.t as i64, params.p as i64),
                salt: &salt,
                public_key: &kp.public,
                created: now_secs(),
            })?;
            let sealed = aead::seal(&kek, &aad::account_secret(id), kp.secret().expose())?;
            let dk = crate::crypto::wrap::wrap_to(&kp.public, &aad::dir_key(id), dir_key)?;
            tx.account_set_keys(id, &sealed, &dk)?;
            tx.change_insert(None, "account", now_secs())?;
            Ok(id)
        })
    }
}

/// Account flags.
#[derive(Clone, Copy, Debug, Default)]
pub struct Flags {
    /// System administrator.
    pub sysadmin: bool,
    /// May manage accounts.
    pub user_admin: bool,
    /// May change own passphrase.
    pub may_change_password: bool,
}

/// Person fields of an account.
#[derive(Clone, Debug, Default)]
pub struct Person {
    /// Given name.
    pub given_name: Option<String>,
    /// Family name.
    pub family_name: Option<String>,
    /// E-mail.
    pub email: Option<String>,
}

/// Longest accepted passphrase in bytes.
pub const MAX_PASSPHRASE: usize = 1024;

/// A new passphrase must be non-empty and bounded.
pub fn check_new_passphrase(p: &Passphrase) -> Result<()> {
    if p.is_empty() {
        return err(ErrorKind::BadRequest, "passphrase is empty");
    }
    if p.expose().len() > MAX_PASSPHRASE {
        return err(ErrorKind::BadRequest, "passphrase longer than 1024 bytes");
    }
    Ok(())
}

/// Derive the KEK and open the account's X25519 secret (401 on a wrong passphrase).
pub(crate) fn open_account(row: &AccountRow, pass: &Passphrase) -> Result<KeyPair> {
    let to_u32 = |v: i64| u32::try_from(v).unwrap_or(u32::MAX);
    let params = KdfParams {
        m_kib: to_u32(row.kdf.0),
        t: to_u32(row.kdf.1),
        p: to_u32(row.kdf.2),
    };
    let kek = derive_kek(pass, &row.salt, params)?;
    let secret = aead::open(
        &kek,
        &aad::account_secret(row.id),
        &row.sealed_secret,
        "account secret",
    )
    .map_err(|_| Error::new(ErrorKind::Unauthorized, "wrong passphrase"))?;
    let kp = KeyPair::from_secret(Key32::from_slice(&secret)?);
    let mut secret = secret;
    zeroize::Zeroize::zeroize(&mut secret);
    if kp.public[..] != row.public_key[..] {
        return err(
            ErrorKind::Integrity,
            "account public key does not match its secret",
        );
    }
    Ok(kp)
}
