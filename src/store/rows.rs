//! Typed rows and the transaction handle with the account/circle/key queries.

use rusqlite::{Connection, OptionalExtension, params};

use super::StoreError;
use crate::ids::{AccountId, CircleId, Epoch, InodeId};

/// A transaction (or plain connection) on which every query of the store runs.
pub struct Tx<'a> {
    pub(super) c: &'a Connection,
    touch: Option<&'a super::TouchFn>,
}

impl<'a> Tx<'a> {
    pub(super) fn new(c: &'a Connection, touch: Option<&'a super::TouchFn>) -> Self {
        Tx { c, touch }
    }

    /// Tell the connection's listener (see [`Store::on_touch`](super::Store::on_touch)) what a write changed.
    pub(super) fn touched(&self, t: super::Touch) {
        super::tell(self.touch, t);
    }

    /// `PRAGMA data_version` as this transaction sees it: it moves when
    /// another connection commits.
    pub fn data_version(&self) -> Result<i64, StoreError> {
        Ok(self
            .c
            .prepare_cached("PRAGMA data_version")?
            .query_row([], |r| r.get(0))?)
    }
}

/// Stored account row.
#[derive(Clone, Debug)]
pub struct AccountRow {
    /// Row id.
    pub id: AccountId,
    /// Unique name (clear: needed before anything is unlocked).
    pub name: String,
    /// Person fields (clear, declared in the threat model).
    pub given_name: Option<String>,
    /// Family name.
    pub family_name: Option<String>,
    /// E-mail address.
    pub email: Option<String>,
    /// Verified flag.
    pub verified: bool,
    /// May change own passphrase.
    pub may_change_password: bool,
    /// May manage accounts.
    pub user_admin: bool,
    /// The system administrator created by init.
    pub sysadmin: bool,
    /// Argon2id memory (KiB), passes, lanes.
    pub kdf: (i64, i64, i64),
    /// Argon2id salt.
    pub salt: Vec<u8>,
    /// X25519 secret sealed under the KEK.
    pub sealed_secret: Vec<u8>,
    /// X25519 public key.
    pub public_key: Vec<u8>,
    /// Store directory key wrapped to this account.
    pub dir_key_wrap: Vec<u8>,
    /// Creation time (unix seconds).
    pub created: i64,
}

/// Fields of a new account.
pub struct NewAccount<'x> {
    /// Name.
    pub name: &'x str,
    /// Given name.
    pub given_name: Option<&'x str>,
    /// Family name.
    pub family_name: Option<&'x str>,
    /// E-mail.
    pub email: Option<&'x str>,
    /// Flags.
    pub may_change_password: bool,
    /// Flags.
    pub user_admin: bool,
    /// Flags.
    pub sysadmin: bool,
    /// KDF parameters.
    pub kdf: (i64, i64, i64),
    /// Salt.
    pub salt: &'x [u8],
    /// Public key.
    pub public_key: &'x [u8],
    /// Creation time.
    pub created: i64,
}

/// Stored circle row.
#[derive(Clone, Debug)]
pub struct CircleRow {
    /// Row id.
    pub id: CircleId,
    /// Keyed index of the name (uniqueness).
    pub name_index: Vec<u8>,
    /// Sealed name.
    pub name_ct: Vec<u8>,
    /// Current key epoch.
    pub epoch: Epoch,
    /// Root directory inode.
    pub root: Option<InodeId>,
    /// Creation time.
    pub created: i64,
}

/// A trustee row joined with its account's name and public key.
#[derive(Clone, Debug)]
pub struct TrusteeRow {
    /// Account id.
    pub account: AccountId,
    /// Account name.
    pub name: String,
    /// Level as stored.
    pub level: i64,
    /// Public key for wrapping.
    pub public_key: Vec<u8>,
}

const ACCOUNT_COLS: &str = "id, name, given_name, family_name, email, verified, may_change_password, \
     user_admin, sysadmin, kdf_m, kdf_t, kdf_p, salt, sealed_secret, public_key, dir_key_wrap, created";

fn account_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AccountRow> {
    Ok(AccountRow {
        id: AccountId(r.get(0)?),
        name: r.get(1)?,
        given_name: r.get(2)?,
        family_name: r.get(3)?,
        email: r.get(4)?,
        verified: r.get::<_, i64>(5)? != 0,
        may_change_password: r.get::<_, i64>(6)? != 0,
        user_admin: r.get::<_, i64>(7)? != 0,
        sysadmin: r.get::<_, i64>(8)? != 0,
        kdf: (r.get(9)?, r.get(10)?, r.get(11)?),
        salt: r.get(12)?,
        sealed_secret: r.get(13)?,
        public_key: r.get(14)?,
        dir_key_wrap: r.get(15)?,
        created: r.get(16)?,
    })
}

fn circle_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<CircleRow> {
    Ok(CircleRow {
        id: CircleId(r.get(0)?),
        name_index: r.get(1)?,
        name_ct: r.get(2)?,
        epoch: Epoch(r.get::<_, i64>(3)?.clamp(0, u32::MAX as i64) as u32),
        root: r.get::<_, Option<i64>>(4)?.map(InodeId),
        created: r.get(5)?,
    })
}

const CIRCLE_COLS: &str = "c.id, c.name_index, c.name_ct, c.epoch, c.root_ino, c.created";

impl Tx<'_> {
    /// Read a meta value.
    pub fn meta_get(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .c
            .prepare_cached("SELECT value FROM meta WHERE key = ?1")?
            .query_row([key], |r| r.get(0))
            .optional()?)
    }

    /// Set a meta value.
    pub fn meta_set(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.c.prepare_cached("INSERT INTO meta(key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value")?.execute(params![key, value])?;
        Ok(())
    }

    /// Delete a meta value.
    pub fn meta_delete(&self, key: &str) -> Result<(), StoreError> {
        self.c
            .prepare_cached("DELETE FROM meta WHERE key = ?1")?
            .execute([key])?;
        Ok(())
    }

    /// Insert an account with empty sealed secret and dir-key wrap (filled by
    /// `account_set_keys` once the id is known, since their AAD binds it).
    pub fn account_insert(&self, a: &NewAccount<'_>) -> Result<AccountId, StoreError> {
        self.c.prepare_cached("INSERT INTO accounts(name, given_name, family_name, email, may_change_password, user_admin, \
             sysadmin, kdf_m, kdf_t, kdf_p, salt, sealed_secret, public_key, dir_key_wrap, created) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, x'', ?12, x'', ?13)")?.execute(params![
                a.name,
                a.given_name,
                a.family_name,
                a.email,
                a.may_change_password as i64,
                a.user_admin as i64,
                a.sysadmin as i64,
                a.kdf.0,
                a.kdf.1,
                a.kdf.2,
                a.salt,
                a.public_key,
                a.created
            ])?;
        Ok(AccountId(self.c.last_insert_rowid()))
    }

    /// Set an account's sealed secret and dir-key wrap.
    pub fn account_set_keys(
        &self,
        id: AccountId,
        sealed: &[u8],
        dir_key_wrap: &[u8],
    ) -> Result<(), StoreError> {
        self.c
            .prepare_cached(
                "UPDATE accounts SET sealed_secret = ?2, dir_key_wrap = ?3 WHERE id = ?1",
            )?
            .execute(params![id.0, sealed, dir_key_wrap])?;
        Ok(())
    }

    /// Replace salt, KDF params and sealed secret (passphrase change; nothing else).
    pub fn account_set_secret(
        &self,
        id: AccountId,
        kdf: (i64, i64, i64),
        salt: &[u8],
        sealed: &[u8],
    ) -> Result<(), StoreError> {
        self.c.prepare_cached("UPDATE accounts SET kdf_m = ?2, kdf_t = ?3, kdf_p = ?4, salt = ?5, sealed_secret = ?6 WHERE id = ?1")?.execute(params![id.0, kdf.0, kdf.1, kdf.2, salt, sealed])?;
        Ok(())
    }

    /// Update person fields and flags.
    pub fn account_update(&self, a: &AccountRow) -> Result<(), StoreError> {
        self.c
            .prepare_cached(
                "UPDATE accounts SET given_name = ?2, family_name = ?3, email = ?4, verified = ?5, \
             may_change_password = ?6, user_admin = ?7 WHERE id = ?1",
            )?
            .execute(params![
                a.id.0,
                a.given_name,
                a.family_name,
                a.email,
                a.verified as i64,
                a.may_change_password as i64,
                a.user_admin as i64
            ])?;
        Ok(())
    }

    /// Account by name.
    pub fn account_by_name(&self, name: &str) -> Result<Option<AccountRow>, StoreError> {
        let sql = format!("SELECT {ACCOUNT_COLS} FROM accounts WHERE name = ?1");
        Ok(self
            .c
            .prepare_cached(&sql)?
            .query_row([name], account_row)
            .optional()?)
    }

    /// Account by id.
    pub fn account_by_id(&self, id: AccountId) -> Result<Option<AccountRow>, StoreError> {
        let sql = format!("SELECT {ACCOUNT_COLS} FROM accounts WHERE id = ?1");
        Ok(self
            .c
            .prepare_cached(&sql)?
            .query_row([id.0], account_row)
            .optional()?)
    }

    /// Accounts matching `query` (substring of name, person fields or e-mail,
    /// case-insensitive), optionally verified only; page `[start, start+count)`
    /// in name order, plus the total number of matches.
    pub fn account_list(
        &self,
        query: Option<&str>,
        verified_only: bool,
        start: i64,
        count: i64,
    ) -> Result<(Vec<AccountRow>, i64), StoreError> {
        let pattern = query.map(|q| {
            let esc = q
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            format!("%{esc}%")
        });
        let filter = "(?1 IS NULL OR name LIKE ?1 ESCAPE '\\' OR given_name LIKE ?1 ESCAPE '\\' \
             OR family_name LIKE ?1 ESCAPE '\\' OR email LIKE ?1 ESCAPE '\\') AND (?2 = 0 OR verified = 1)";
        let total: i64 = self
            .c
            .prepare_cached(&format!("SELECT COUNT(*) FROM accounts WHERE {filter}"))?
            .query_row(params![pattern, verified_only as i64], |r| r.get(0))?;
        let sql = format!(
            "SELECT {ACCOUNT_COLS} FROM accounts WHERE {filter} ORDER BY name LIMIT ?3 OFFSET ?4"
        );
        let mut st = self.c.prepare_cached(&sql)?;
        let rows = st
            .query_map(
                params![pattern, verified_only as i64, count, start],
                account_row,
            )?
            .collect::<Result<Vec<_>, _>>()?;
        Ok((rows, total))
    }

    /// Delete an account (its trustee and key rows cascade).
    pub fn account_delete(&self, id: AccountId) -> Result<(), StoreError> {
        self.c
            .prepare_cached("DELETE FROM accounts WHERE id = ?1")?
            .execute([id.0])?;
        Ok(())
    }

    /// Insert a circle with a placeholder name (sealed once the id is known).
    pub fn circle_insert(&self, name_index: &[u8], created: i64) -> Result<CircleId, StoreError> {
        self.c
            .prepare_cached(
                "INSERT INTO circles(name_index, name_ct, epoch, created) VALUES (?1, x'', 1, ?2)",
            )?
            .execute(params![name_index, created])?;
        Ok(CircleId(self.c.last_insert_rowid()))
    }

    /// Set a circle's sealed name.
    pub fn circle_set_name(&self, id: CircleId, name_ct: &[u8]) -> Result<(), StoreError> {
        self.c
            .prepare_cached("UPDATE circles SET name_ct = ?2 WHERE id = ?1")?
            .execute(params![id.0, name_ct])?;
        Ok(())
    }

    /// Set a circle's root inode.
    pub fn circle_set_root(&self, id: CircleId, root: InodeId) -> Result<(), StoreError> {
        self.touched(super::Touch::All);
        self.c
            .prepare_cached("UPDATE circles SET root_ino = ?2 WHERE id = ?1")?
            .execute(params![id.0, root.0])?;
        Ok(())
    }

    /// Set a circle's current epoch.
    pub fn circle_set_epoch(&self, id: CircleId, epoch: Epoch) -> Result<(), StoreError> {
        self.touched(super::Touch::All);
        self.c
            .prepare_cached("UPDATE circles SET epoch = ?2 WHERE id = ?1")?
            .execute(params![id.0, epoch.0])?;
        Ok(())
    }

    /// Circle by name index.
    pub fn circle_by_index(&self, idx: &[u8]) -> Result<Option<CircleRow>, StoreError> {
        let sql = format!("SELECT {CIRCLE_COLS} FROM circles c WHERE c.name_index = ?1");
        Ok(self
            .c
            .prepare_cached(&sql)?
            .query_row([idx], circle_row)
            .optional()?)
    }

    /// Circle by id.
    pub fn circle_by_id(&self, id: CircleId) -> Result<Option<CircleRow>, StoreError> {
        let sql = format!("SELECT {CIRCLE_COLS} FROM circles c WHERE c.id = ?1");
        Ok(self
            .c
            .prepare_cached(&sql)?
            .query_row([id.0], circle_row)
            .optional()?)
    }

    /// Every circle.
    pub fn circle_list(&self) -> Result<Vec<CircleRow>, StoreError> {
        let sql = format!("SELECT {CIRCLE_COLS} FROM circles c ORDER BY c.id");
        let mut st = self.c.prepare_cached(&sql)?;
        let rows = st
            .query_map([], circle_row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Circles an account is a trustee of, with its stored level.
    pub fn circles_of(&self, account: AccountId) -> Result<Vec<(CircleRow, i64)>, StoreError> {
        let sql = format!(
            "SELECT {CIRCLE_COLS}, t.level FROM circles c JOIN trustees t ON t.circle_id = c.id \
             WHERE t.account_id = ?1 ORDER BY c.id"
        );
        let mut st = self.c.prepare_cached(&sql)?;
        let rows = st
            .query_map([account.0], |r| Ok((circle_row(r)?, r.get(6)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Delete a circle; trustees, keys, inodes and their rows cascade.
    pub fn circle_delete(&self, id: CircleId) -> Result<(), StoreError> {
        self.touched(super::Touch::All);
        // Dirents reference inodes without cascade on `ino`; remove them first.
        self.c
            .prepare_cached(
                "DELETE FROM dirents WHERE parent IN (SELECT id FROM inodes WHERE circle_id = ?1)",
            )?
            .execute([id.0])?;
        self.c
            .prepare_cached("DELETE FROM circles WHERE id = ?1")?
            .execute([id.0])?;
        Ok(())
    }

    /// A trustee's stored level.
    pub fn trustee_level(
        &self,
        circle: CircleId,
        account: AccountId,
    ) -> Result<Option<i64>, StoreError> {
        Ok(self
            .c
            .prepare_cached("SELECT level FROM trustees WHERE circle_id = ?1 AND account_id = ?2")?
            .query_row(params![circle.0, account.0], |r| r.get(0))
            .optional()?)
    }

    /// Add a trustee.
    pub fn trustee_insert(
        &self,
        circle: CircleId,
        account: AccountId,
        level: i64,
    ) -> Result<(), StoreError> {
        self.touched(super::Touch::All);
        self.c
            .prepare_cached(
                "INSERT INTO trustees(circle_id, account_id, level) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![circle.0, account.0, level])?;
        Ok(())
    }

    /// Change a trustee's level.
    pub fn trustee_set_level(
        &self,
        circle: CircleId,
        account: AccountId,
        level: i64,
    ) -> Result<(), StoreError> {
        self.touched(super::Touch::All);
        self.c
            .prepare_cached(
                "UPDATE trustees SET level = ?3 WHERE circle_id = ?1 AND account_id = ?2",
            )?
            .execute(params![circle.0, account.0, level])?;
        Ok(())
    }

    /// Remove a trustee and every circle key wrapped to them (all epochs).
    pub fn trustee_delete(&self, circle: CircleId, account: AccountId) -> Result<(), StoreError> {
        self.touched(super::Touch::All);
        self.c
            .prepare_cached("DELETE FROM trustees WHERE circle_id = ?1 AND account_id = ?2")?
            .execute(params![circle.0, account.0])?;
        self.c
            .prepare_cached("DELETE FROM circle_keys WHERE circle_id = ?1 AND account_id = ?2")?
            .execute(params![circle.0, account.0])?;
        Ok(())
    }

    /// Trustees of a circle with names and public keys, by name.
    pub fn trustees_of(&self, circle: CircleId) -> Result<Vec<TrusteeRow>, StoreError> {
        let mut st = self.c.prepare_cached(
            "SELECT a.id, a.name, t.level, a.public_key FROM trustees t JOIN accounts a ON a.id = t.account_id \
             WHERE t.circle_id = ?1 ORDER BY a.name",
        )?;
        let rows = st
            .query_map([circle.0], |r| {
                Ok(TrusteeRow {
                    account: AccountId(r.get(0)?),
                    name: r.get(1)?,
                    level: r.get(2)?,
                    public_key: r.get(3)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Store a circle key of an epoch wrapped to an account.
    pub fn circle_key_insert(
        &self,
        circle: CircleId,
        epoch: Epoch,
        account: AccountId,
        wrapped: &[u8],
    ) -> Result<(), StoreError> {
        self.c.prepare_cached("INSERT OR REPLACE INTO circle_keys(circle_id, epoch, account_id, wrapped) VALUES (?1, ?2, ?3, ?4)")?.execute(params![circle.0, epoch.0, account.0, wrapped])?;
        Ok(())
    }

    /// Every wrapped circle key of an account for a circle, by epoch.
    pub fn circle_keys_for(
        &self,
        circle: CircleId,
        account: AccountId,
    ) -> Result<Vec<(Epoch, Vec<u8>)>, StoreError> {
        let mut st = self.c.prepare_cached(
            "SELECT epoch, wrapped FROM circle_keys WHERE circle_id = ?1 AND account_id = ?2 ORDER BY epoch",
        )?;
        let rows = st
            .query_map(params![circle.0, account.0], |r| {
                Ok((
                    Epoch(r.get::<_, i64>(0)?.clamp(0, u32::MAX as i64) as u32),
                    r.get(1)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Record a change so running mounts notice it.
    pub fn change_insert(
        &self,
        circle: Option<CircleId>,
        kind: &str,
        at: i64,
    ) -> Result<(), StoreError> {
        self.c
            .prepare_cached("INSERT INTO changes(circle_id, kind, at) VALUES (?1, ?2, ?3)")?
            .execute(params![circle.map(|c| c.0), kind, at])?;
        Ok(())
    }

    /// Newest change id (0 when none).
    pub fn change_latest(&self) -> Result<i64, StoreError> {
        Ok(self
            .c
            .prepare_cached("SELECT COALESCE(MAX(id), 0) FROM changes")?
            .query_row([], |r| r.get(0))?)
    }
}

impl Tx<'_> {
    /// Replace an account's key pair (admin passphrase reset): new salt, KDF
    /// params, sealed secret, public key and dir-key wrap; its old circle key
    /// wraps are deleted (they were for the old public key).
    pub fn account_reset_keys(
        &self,
        id: AccountId,
        kdf: (i64, i64, i64),
        salt: &[u8],
        sealed: &[u8],
        public_key: &[u8],
        dir_key_wrap: &[u8],
    ) -> Result<(), StoreError> {
        self.c.prepare_cached("UPDATE accounts SET kdf_m = ?2, kdf_t = ?3, kdf_p = ?4, salt = ?5, sealed_secret = ?6, \
             public_key = ?7, dir_key_wrap = ?8 WHERE id = ?1")?.execute(params![id.0, kdf.0, kdf.1, kdf.2, salt, sealed, public_key, dir_key_wrap])?;
        self.c
            .prepare_cached("DELETE FROM circle_keys WHERE account_id = ?1")?
            .execute([id.0])?;
        Ok(())
    }
}
