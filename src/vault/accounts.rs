//! Account administration: create, delete, modify, passphrase change, info, list, verify.

use crate::crypto::kdf::{SALT_LEN, derive_kek};
use crate::crypto::wrap::{KeyPair, wrap_to};
use crate::crypto::{Passphrase, aead, random_bytes};
use crate::error::{Error, ErrorKind, Result, err};
use crate::format::{aad, name};
use crate::ids::CircleName;
use crate::level::TrustLevel;
use crate::store::Tx;
use crate::store::rows::AccountRow;

use super::{
    Flags, Object, Op, Person, Session, Subject, Vault, authorize, check_new_passphrase, now_secs,
};

/// A new account's details.
#[derive(Debug, Default)]
pub struct NewUser {
    /// Name.
    pub name: String,
    /// Initial passphrase.
    pub pass: Option<Passphrase>,
    /// May change own passphrase.
    pub may_change_password: bool,
    /// May manage accounts.
    pub user_admin: bool,
    /// Person fields.
    pub person: Person,
}

/// Changes to an account; `None` leaves a field as it is.
#[derive(Debug, Default)]
pub struct UserChanges {
    /// New passphrase.
    pub pass: Option<Passphrase>,
    /// Flag.
    pub may_change_password: Option<bool>,
    /// Flag.
    pub user_admin: Option<bool>,
    /// Given name ("" clears).
    pub given_name: Option<String>,
    /// Family name ("" clears).
    pub family_name: Option<String>,
    /// E-mail ("" clears).
    pub email: Option<String>,
}

/// What `user info` reports.
#[derive(Debug)]
pub struct UserInfo {
    /// The account row (secrets are sealed; never printed).
    pub account: AccountRow,
    /// Circles with levels (names decrypted with the directory key).
    pub circles: Vec<(CircleName, TrustLevel)>,
}

fn check_person(p: &Person) -> Result<()> {
    for v in [&p.given_name, &p.family_name, &p.email]
        .into_iter()
        .flatten()
    {
        if v.len() > 256 || v.chars().any(char::is_control) {
            return err(
                ErrorKind::BadRequest,
                "person fields are at most 256 characters without control characters",
            );
        }
    }
    if let Some(e) = &p.email
        && !e.is_empty()
        && !e.contains('@')
    {
        return err(ErrorKind::BadRequest, format!("bad e-mail address {e}"));
    }
    Ok(())
}

fn non_empty(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.is_empty())
}

impl Vault {
    /// Facts about the requester, read fresh from the store.
    pub fn subject(&self, tx: &Tx<'_>, s: &Session) -> Result<Subject> {
        let row = tx.account_by_id(s.account)?.ok_or_else(|| {
            Error::new(
                ErrorKind::Unauthorized,
                "requester account no longer exists",
            )
        })?;
        Ok(Subject {
            account: row.id,
            sysadmin: row.sysadmin,
            user_admin: row.user_admin,
            may_change_password: row.may_change_password,
        })
    }

    fn target(tx: &Tx<'_>, name: &str) -> Result<AccountRow> {
        tx.account_by_name(name)?
            .ok_or_else(|| Error::new(ErrorKind::NotFound, format!("no such account {name}")))
    }

    /// Account `name`, after checking the requester may manage it.
    fn managed_account(&self, tx: &Tx<'_>, s: &Session, name: &str) -> Result<AccountRow> {
        let subj = self.subject(tx, s)?;
        let row = Self::target(tx, name)?;
        authorize(
            &subj,
            Op::ManageAccounts,
            &Object::Account {
                id: row.id,
                sysadmin: row.sysadmin,
            },
        )?;
        Ok(row)
    }

    /// `user create`.
    pub fn user_create(&self, s: &Session, u: NewUser) -> Result<()> {
        name::check_account_name(&u.name)?;
        check_person(&u.person)?;
        let pass = u.pass.ok_or_else(|| {
            Error::new(
                ErrorKind::Missing,
                "a new passphrase is required (--new-passphrase-file)",
            )
        })?;
        check_new_passphrase(&pass)?;
        let subj = self.store.read(|tx| self.subject(tx, s))?;
        authorize(&subj, Op::ManageAccounts, &Object::Store)?;
        if u.user_admin {
            authorize(
                &subj,
                Op::GrantUserAdmin,
                &Object::Account {
                    id: subj.account,
                    sysadmin: false,
                },
            )?;
        }
        let flags = Flags {
            sysadmin: false,
            user_admin: u.user_admin,
            may_change_password: u.may_change_password,
        };
        let person = Person {
            given_name: non_empty(u.person.given_name),
            family_name: non_empty(u.person.family_name),
            email: non_empty(u.person.email),
        };
        self.create_account(&u.name, &pass, &s.dir_key, flags, person)?;
        Ok(())
    }

    /// `user delete`: removes the account from every circle (rekeying each)
    /// and deletes it; refused when it is the last admin of a circle.
    pub fn user_delete(&self, s: &Session, target: &str) -> Result<()> {
        self.store.write(|tx| {
            let row = self.managed_account(tx, s, target)?;
            if row.sysadmin {
                return err(
                    ErrorKind::Forbidden,
                    "the system administrator account cannot be deleted",
                );
            }
            if row.id == s.account {
                return err(ErrorKind::Forbidden, "you cannot delete your own account");
            }
            for (c, _level) in tx.circles_of(row.id)? {
                let keys = self.keys_if_held(tx, s, &c);
                Self::drop_trustee_in_tx(tx, &c, row.id, &row.name)?;
                Self::revoke_in_tx(tx, &c, keys.as_deref())?;
            }
            tx.account_delete(row.id)?;
            tx.change_insert(None, "account", now_secs())?;
            Ok::<_, Error>(())
        })?;
        self.store.checkpoint()?;
        Ok(())
    }

    /// `user modify`.
    pub fn user_modify(&self, s: &Session, target: &str, ch: UserChanges) -> Result<()> {
        if let Some(p) = &ch.pass {
            check_new_passphrase(p)?;
        }
        let person = Person {
            given_name: ch.given_name.clone(),
            family_name: ch.family_name.clone(),
            email: ch.email.clone(),
        };
        check_person(&person)?;
        let (subj, row) = self
            .store
            .read(|tx| Ok::<_, Error>((self.subject(tx, s)?, Self::target(tx, target)?)))?;
        let obj = Object::Account {
            id: row.id,
            sysadmin: row.sysadmin,
        };
        let only_profile =
            ch.pass.is_none() && ch.may_change_password.is_none() && ch.user_admin.is_none();
        let own = row.id == s.account;
        if !(own && only_profile && authorize(&subj, Op::EditOwnProfile, &obj).is_ok()) {
            authorize(&subj, Op::ManageAccounts, &obj)?;
        }
        if ch.user_admin.is_some() {
            authorize(&subj, Op::GrantUserAdmin, &obj)?;
        }
        if let Some(p) = &ch.pass {
            if own {
                self.reseal_own(s, p)?;
            } else {
                self.reset_passphrase(s, &row, p)?;
            }
        }
        self.store.write(|tx| {
            let mut r = Self::target(tx, target)?;
            if let Some(v) = ch.may_change_password {
                r.may_change_password = v;
            }
            if let Some(v) = ch.user_admin {
                r.user_admin = v;
            }
            if let Some(v) = ch.given_name {
                r.given_name = non_empty(Some(v));
            }
            if let Some(v) = ch.family_name {
                r.family_name = non_empty(Some(v));
            }
            if let Some(v) = ch.email {
                r.email = non_empty(Some(v));
            }
            tx.account_update(&r)?;
            Ok::<_, Error>(())
        })
    }

    /// `user passwd`: re-seal the own secret under a new passphrase; nothing else changes.
    pub fn user_passwd(&self, s: &Session, new: &Passphrase) -> Result<()> {
        check_new_passphrase(new)?;
        let subj = self.store.read(|tx| self.subject(tx, s))?;
        authorize(
            &subj,
            Op::ChangeOwnPassphrase,
            &Object::Account {
                id: s.account,
                sysadmin: subj.sysadmin,
            },
        )?;
        self.reseal_own(s, new)
    }

    fn reseal_own(&self, s: &Session, new: &Passphrase) -> Result<()> {
        let params = self.kdf_params()?;
        let salt = random_bytes::<SALT_LEN>()?;
        let kek = derive_kek(new, &salt, params)?;
        let sealed = aead::seal(
            &kek,
            &aad::account_secret(s.account),
            s.keys.secret().expose(),
        )?;
        self.store.write(|tx| {
            tx.account_set_secret(
                s.account,
                (params.m_kib as i64, params.t as i64, params.p as i64),
                &salt,
                &sealed,
            )?;
            Ok::<_, Error>(())
        })?;
        self.store.checkpoint()?;
        Ok(())
    }

    /// Another account's passphrase reset by an account admin: the admin
    /// cannot open the old secret, so the account gets a new key pair; its
    /// circle keys are re-wrapped to the new public key by the next session
    /// of any trustee of each circle (see `heal_wraps`).
    fn reset_passphrase(&self, s: &Session, row: &AccountRow, new: &Passphrase) -> Result<()> {
        let params = self.kdf_params()?;
        let salt = random_bytes::<SALT_LEN>()?;
        let kek = derive_kek(new, &salt, params)?;
        let kp = KeyPair::generate()?;
        let sealed = aead::seal(&kek, &aad::account_secret(row.id), kp.secret().expose())?;
        let dk = wrap_to(&kp.public, &aad::dir_key(row.id), &s.dir_key)?;
        self.store.write(|tx| {
            tx.account_reset_keys(
                row.id,
                (params.m_kib as i64, params.t as i64, params.p as i64),
                &salt,
                &sealed,
                &kp.public,
                &dk,
            )?;
            tx.change_insert(None, "account", now_secs())?;
            Ok::<_, Error>(())
        })?;
        self.store.checkpoint()?;
        Ok(())
    }

    /// `user info`.
    pub fn user_info(&self, s: &Session, target: &str) -> Result<UserInfo> {
        self.store.read(|tx| {
            let subj = self.subject(tx, s)?;
            let row = Self::target(tx, target)?;
            authorize(
                &subj,
                Op::ViewAccount,
                &Object::Account {
                    id: row.id,
                    sysadmin: row.sysadmin,
                },
            )?;
            let mut circles = Vec::new();
            for (c, level) in tx.circles_of(row.id)? {
                let level = TrustLevel::from_i64(level).ok_or_else(|| {
                    Error::new(ErrorKind::Integrity, "stored trust level out of range")
                })?;
                circles.push((s.circle_name(&c)?, level));
            }
            circles.sort_by(|a, b| a.0.0.cmp(&b.0.0));
            Ok(UserInfo {
                account: row,
                circles,
            })
        })
    }

    /// `user list`: page of matching accounts and the total.
    pub fn user_list(
        &self,
        s: &Session,
        query: Option<&str>,
        verified_only: bool,
        start: i64,
        count: i64,
    ) -> Result<(Vec<AccountRow>, i64)> {
        if start < 0 || count < 0 {
            return err(ErrorKind::BadRequest, "start and count must be >= 0");
        }
        self.store.read(|tx| {
            let subj = self.subject(tx, s)?;
            authorize(&subj, Op::ListAccounts, &Object::Store)?;
            Ok(tx.account_list(query, verified_only, start, count)?)
        })
    }

    /// `user verify`: mark an account verified.
    pub fn user_verify(&self, s: &Session, target: &str) -> Result<()> {
        self.store.write(|tx| {
            let mut row = self.managed_account(tx, s, target)?;
            row.verified = true;
            tx.account_update(&row)?;
            Ok(())
        })
    }
}
