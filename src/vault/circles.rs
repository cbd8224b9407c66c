//! Circles and trustees: create, delete, info, list, add/remove/set trustees,
//! key epochs (rotation on every removal) and healing of missing wraps.

use std::sync::Arc;

use crate::crypto::Key32;
use crate::crypto::wrap::wrap_to;
use crate::error::{Error, ErrorKind, Result, err};
use crate::format::attrs::{Attrs, Extents, Kind, Time};
use crate::format::{aad, name};
use crate::ids::{AccountId, CircleId, CircleName, ContentId, Epoch, KeyGen};
use crate::level::TrustLevel;
use crate::store::Tx;
use crate::store::rows::CircleRow;

use super::keys::CircleKeys;
use super::{Object, Op, Session, Vault, authorize, now_secs};

/// What `circle info` reports.
#[derive(Debug)]
pub struct CircleInfo {
    /// Name.
    pub name: CircleName,
    /// Current key epoch.
    pub epoch: Epoch,
    /// Trustees by name.
    pub trustees: Vec<(String, TrustLevel)>,
}

fn level_of(v: i64) -> Result<TrustLevel> {
    TrustLevel::from_i64(v)
        .ok_or_else(|| Error::new(ErrorKind::Integrity, "stored trust level out of range"))
}

fn pk32(v: &[u8]) -> Result<[u8; 32]> {
    v.try_into()
        .map_err(|_| Error::new(ErrorKind::Integrity, "stored public key has wrong length"))
}

impl Vault {
    /// Find a circle by name (404 when unknown).
    pub(crate) fn circle_by_name(&self, tx: &Tx<'_>, s: &Session, name: &str) -> Result<CircleRow> {
        if name.is_empty() {
            return err(ErrorKind::Missing, "circle name is missing");
        }
        tx.circle_by_index(&s.circle_index(name)?)?
            .ok_or_else(|| Error::new(ErrorKind::NotFound, format!("no such circle {name}")))
    }

    /// Find a circle by name and check the session may do `op` on it.
    fn circle_authorized(&self, tx: &Tx<'_>, s: &Session, name: &str, op: Op) -> Result<CircleRow> {
        let c = self.circle_by_name(tx, s, name)?;
        let subj = self.subject(tx, s)?;
        authorize(
            &subj,
            op,
            &Object::Circle {
                id: c.id,
                level: Self::my_level(tx, s, c.id)?,
            },
        )?;
        Ok(c)
    }

    fn my_level(tx: &Tx<'_>, s: &Session, c: CircleId) -> Result<Option<TrustLevel>> {
        tx.trustee_level(c, s.account)?.map(level_of).transpose()
    }

    /// The session's keys for a circle (cached while the epoch is current).
    pub fn circle_keys(&self, tx: &Tx<'_>, s: &Session, c: &CircleRow) -> Result<Arc<CircleKeys>> {
        if let Some(k) = s.cached_keys(c.id, c.epoch) {
            return Ok(k);
        }
        let wraps = tx.circle_keys_for(c.id, s.account)?;
        if wraps.is_empty() {
            return err(ErrorKind::Forbidden, "no key for this circle");
        }
        let k = Arc::new(CircleKeys::unwrap(
            c.id, c.epoch, s.account, &s.keys, &wraps,
        )?);
        s.cache_keys(k.clone());
        Ok(k)
    }

    /// `circle create`: the creator becomes its first admin.
    pub fn circle_create(&self, s: &Session, cname: &str) -> Result<CircleId> {
        name::check_circle_name(cname)?;
        let idx = s.circle_index(cname)?;
        let ck = Key32::random()?;
        self.store.write(|tx| {
            let subj = self.subject(tx, s)?;
            authorize(&subj, Op::CreateCircle, &Object::Store)?;
            if tx.circle_by_index(&idx)?.is_some() {
                return err(
                    ErrorKind::Conflict,
                    format!("circle {cname} already exists"),
                );
            }
            let now = now_secs();
            let id = tx.circle_insert(&idx, now)?;
            tx.circle_set_name(id, &s.seal_circle_name(id, cname)?)?;
            tx.trustee_insert(id, s.account, TrustLevel::Admin.to_i64())?;
            let epoch = Epoch(1);
            tx.circle_key_insert(
                id,
                epoch,
                s.account,
                &wrap_to(&s.keys.public, &aad::circle_key(id, epoch, s.account), &ck)?,
            )?;
            let row = tx
                .circle_by_id(id)?
                .ok_or_else(|| Error::new(ErrorKind::Internal, "circle vanished"))?;
            let keys = self.circle_keys(tx, s, &row)?;
            let root = tx.inode_next_id()?;
            let t = Time::now();
            let attrs = Attrs {
                kind: Kind::Dir,
                mode: libc::S_IFDIR | 0o755,
                uid: s.uid,
                gid: s.gid,
                rdev: 0,
                size: 0,
                atime: t,
                mtime: t,
                ctime: t,
                crtime: t,
                content: ContentId(crate::crypto::random_bytes()?),
                keygen: KeyGen(0),
                extents: Extents::default(),
                target: Vec::new(),
            };
            let (e, sealed) = keys.seal_attrs(root, &attrs)?;
            tx.inode_insert(root, id, Kind::Dir as u8, e, &sealed)?;
            tx.circle_set_root(id, root)?;
            tx.change_insert(Some(id), "circle", now)?;
            Ok(id)
        })
    }

    /// `circle delete`: crypto-shreds every file key and removes every block.
    pub fn circle_delete(&self, s: &Session, cname: &str) -> Result<()> {
        let inodes = self.store.write(|tx| {
            let c = self.circle_authorized(tx, s, cname, Op::DeleteCircle)?;
            let inodes = tx.inode_ids_of_circle(c.id)?;
            tx.circle_delete(c.id)?;
            tx.change_insert(Some(c.id), "circle-delete", now_secs())?;
            s.forget_keys(Some(c.id));
            Ok::<_, Error>(inodes)
        })?;
        for ino in inodes {
            self.store.block_remove(ino)?;
        }
        self.store.checkpoint()?;
        Ok(())
    }

    /// `circle info`.
    pub fn circle_info(&self, s: &Session, cname: &str) -> Result<CircleInfo> {
        self.store.read(|tx| {
            let c = self.circle_authorized(tx, s, cname, Op::ViewCircle)?;
            let trustees = tx
                .trustees_of(c.id)?
                .into_iter()
                .map(|t| Ok((t.name, level_of(t.level)?)))
                .collect::<Result<Vec<_>>>()?;
            Ok(CircleInfo {
                name: s.circle_name(&c)?,
                epoch: c.epoch,
                trustees,
            })
        })
    }

    /// `circle list`: own circles with levels; account admins see every
    /// circle (level `None` where they are not a trustee).
    pub fn circle_list(&self, s: &Session) -> Result<Vec<(CircleName, Option<TrustLevel>)>> {
        self.store.read(|tx| {
            let subj = self.subject(tx, s)?;
            let all = authorize(&subj, Op::ListAllCircles, &Object::Store).is_ok();
            let mut out = Vec::new();
            if all {
                for c in tx.circle_list()? {
                    let lvl = Self::my_level(tx, s, c.id)?;
                    out.push((s.circle_name(&c)?, lvl));
                }
            } else {
                for (c, lvl) in tx.circles_of(s.account)? {
                    out.push((s.circle_name(&c)?, Some(level_of(lvl)?)));
                }
            }
            out.sort_by(|a, b| a.0.0.cmp(&b.0.0));
            Ok(out)
        })
    }

    /// The circles this session is a trustee of, with rows and levels.
    pub fn my_circles(&self, s: &Session) -> Result<Vec<(CircleRow, CircleName, TrustLevel)>> {
        self.store.read(|tx| {
            tx.circles_of(s.account)?
                .into_iter()
                .map(|(c, l)| {
                    let n = s.circle_name(&c)?;
                    Ok((c, n, level_of(l)?))
                })
                .collect()
        })
    }

    /// `trustee add`: all or nothing.
    pub fn trustee_add(
        &self,
        s: &Session,
        cname: &str,
        users: &[String],
        level: TrustLevel,
    ) -> Result<()> {
        if users.is_empty() {
            return err(ErrorKind::Missing, "no account named");
        }
        self.store.write(|tx| {
            let c = self.circle_authorized(tx, s, cname, Op::ManageTrustees)?;
            let keys = self.circle_keys(tx, s, &c)?;
            let mut rows = Vec::new();
            for u in users {
                let row = tx.account_by_name(u)?.ok_or_else(|| {
                    Error::new(ErrorKind::NotFound, format!("no such account {u}"))
                })?;
                if tx.trustee_level(c.id, row.id)?.is_some() {
                    return err(
                        ErrorKind::Conflict,
                        format!("{u} is already a trustee of {cname}"),
                    );
                }
                if rows
                    .iter()
                    .any(|(r, _): &(crate::store::rows::AccountRow, [u8; 32])| r.id == row.id)
                {
                    return err(ErrorKind::Conflict, format!("{u} is named twice"));
                }
                let pk = pk32(&row.public_key)?;
                rows.push((row, pk));
            }
            for (row, pk) in &rows {
                tx.trustee_insert(c.id, row.id, level.to_i64())?;
                for (e, k) in &keys.epochs {
                    tx.circle_key_insert(
                        c.id,
                        *e,
                        row.id,
                        &wrap_to(pk, &aad::circle_key(c.id, *e, row.id), &k.ck)?,
                    )?;
                }
            }
            tx.change_insert(Some(c.id), "trustee-add", now_secs())?;
            Ok(())
        })
    }

    /// Remove one trustee inside a transaction: refuses to leave no admin
    /// and deletes their trustee row and wraps. The caller then calls
    /// [`Vault::revoke_in_tx`] once for the circle.
    pub(crate) fn drop_trustee_in_tx(
        tx: &Tx<'_>,
        c: &CircleRow,
        who: AccountId,
        who_name: &str,
    ) -> Result<()> {
        let trustees = tx.trustees_of(c.id)?;
        let Some(t) = trustees.iter().find(|t| t.account == who) else {
            return err(ErrorKind::NotFound, format!("{who_name} is not a trustee"));
        };
        let admins_left = trustees
            .iter()
            .filter(|x| x.account != who && x.level == TrustLevel::Admin.to_i64())
            .count();
        if admins_left == 0 && (t.level == TrustLevel::Admin.to_i64() || trustees.len() > 1) {
            let msg = if trustees.len() == 1 {
                format!("{who_name} is the only trustee; delete the circle instead")
            } else {
                format!("{who_name} is the last admin; make another trustee admin first")
            };
            return err(ErrorKind::StateConflict, msg);
        }
        tx.trustee_delete(c.id, who)?;
        Ok(())
    }

    /// The session's keys for a circle if it holds any (a sysadmin who is no
    /// trustee holds none). Load them before removing anyone.
    pub(crate) fn keys_if_held(
        &self,
        tx: &Tx<'_>,
        s: &Session,
        c: &CircleRow,
    ) -> Option<Arc<CircleKeys>> {
        self.circle_keys(tx, s, c).ok()
    }

    /// Revocation, inside the caller's transaction: a new epoch whose key is
    /// wrapped to the current trustees only; then, when `old` (the
    /// requester's keys from before the change) can open every older epoch,
    /// every name, record, xattr and file key of the circle is re-sealed
    /// under the new epoch and the older epochs' keys are deleted. Otherwise
    /// (a requester who is no trustee) the circle is marked
    /// `reseal:<circle>` and the next session of any trustee finishes it;
    /// meanwhile new writes already use the new epoch.
    pub(crate) fn revoke_in_tx(
        tx: &Tx<'_>,
        c: &CircleRow,
        old: Option<&CircleKeys>,
    ) -> Result<Epoch> {
        let (next, ck) = Self::rotate_in_tx(tx, c)?;
        let pending = format!("reseal:{}", c.id);
        match old {
            Some(k) if super::reseal::covers(tx, c.id, k, next)? => {
                let new = super::keys::EpochKeys::new(ck)?;
                super::reseal::reseal_circle(tx, c.id, k, next, &new)?;
                tx.circle_keys_delete_before(c.id, next)?;
                tx.meta_delete(&pending)?;
            }
            _ => tx.meta_set(&pending, &next.0.to_string())?,
        }
        Ok(next)
    }

    /// Finish the re-seals left pending (see [`Vault::revoke_in_tx`]) of
    /// every circle whose keys this session holds. Returns how many.
    pub fn finish_reseals(&self, s: &Session) -> Result<usize> {
        let circles = self.store.read(|tx| tx.circles_of(s.account))?;
        let mut done = 0;
        for (c, _) in circles {
            let key = format!("reseal:{}", c.id);
            if self.store.read(|tx| tx.meta_get(&key))?.is_none() {
                continue;
            }
            let finished = self.store.write(|tx| {
                // Re-read inside the write transaction: another mount may
                // have finished it.
                if tx.meta_get(&key)?.is_none() {
                    return Ok::<_, Error>(false);
                }
                let Some(c) = tx.circle_by_id(c.id)? else {
                    return Ok(false);
                };
                let Ok(keys) = self.circle_keys(tx, s, &c) else {
                    return Ok(false);
                };
                if !super::reseal::covers(tx, c.id, &keys, c.epoch)? {
                    return Ok(false);
                }
                super::reseal::reseal_circle(tx, c.id, &keys, c.epoch, keys.cur()?)?;
                tx.circle_keys_delete_before(c.id, c.epoch)?;
                tx.meta_delete(&key)?;
                tx.change_insert(Some(c.id), "reseal", now_secs())?;
                Ok(true)
            })?;
            if finished {
                done += 1;
                s.forget_keys(Some(c.id));
            }
        }
        Ok(done)
    }

    /// Start a new key epoch: a fresh circle key wrapped to the current
    /// trustees only. Needs no old key: anyone allowed to remove can rotate.
    fn rotate_in_tx(tx: &Tx<'_>, c: &CircleRow) -> Result<(Epoch, Key32)> {
        let cur = tx
            .circle_by_id(c.id)?
            .ok_or_else(|| Error::new(ErrorKind::NotFound, "circle vanished"))?;
        let next = Epoch(
            cur.epoch
                .0
                .checked_add(1)
                .ok_or_else(|| Error::new(ErrorKind::Internal, "epoch counter exhausted"))?,
        );
        let ck = Key32::random()?;
        for t in tx.trustees_of(c.id)? {
            let pk = pk32(&t.public_key)?;
            tx.circle_key_insert(
                c.id,
                next,
                t.account,
                &wrap_to(&pk, &aad::circle_key(c.id, next, t.account), &ck)?,
            )?;
        }
        tx.circle_set_epoch(c.id, next)?;
        tx.change_insert(Some(c.id), "rekey", now_secs())?;
        Ok((next, ck))
    }

    /// `trustee remove`: revocation; one transaction per command.
    pub fn trustee_remove(&self, s: &Session, cname: &str, users: &[String]) -> Result<Epoch> {
        if users.is_empty() {
            return err(ErrorKind::Missing, "no account named");
        }
        let e = self.store.write(|tx| {
            let c = self.circle_by_name(tx, s, cname)?;
            let subj = self.subject(tx, s)?;
            let level = Self::my_level(tx, s, c.id)?;
            let only_self = users.len() == 1 && users[0] == s.name;
            let op = if only_self {
                Op::LeaveCircle
            } else {
                Op::ManageTrustees
            };
            authorize(&subj, op, &Object::Circle { id: c.id, level })?;
            let keys = self.keys_if_held(tx, s, &c);
            let mut seen = Vec::new();
            for u in users {
                let row = tx.account_by_name(u)?.ok_or_else(|| {
                    Error::new(ErrorKind::NotFound, format!("no such account {u}"))
                })?;
                if seen.contains(&row.id) {
                    continue;
                }
                seen.push(row.id);
                if tx.trustee_level(c.id, row.id)?.is_none() {
                    return err(
                        ErrorKind::NotFound,
                        format!("{u} is not a trustee of {cname}"),
                    );
                }
                Self::drop_trustee_in_tx(tx, &c, row.id, u)?;
            }
            // One new epoch for the whole command.
            Self::revoke_in_tx(tx, &c, keys.as_deref())
        })?;
        s.forget_keys(None);
        self.store.checkpoint()?;
        Ok(e)
    }

    /// `trustee set`.
    pub fn trustee_set(
        &self,
        s: &Session,
        cname: &str,
        user: &str,
        level: TrustLevel,
    ) -> Result<()> {
        self.store.write(|tx| {
            let c = self.circle_authorized(tx, s, cname, Op::ManageTrustees)?;
            let row = tx.account_by_name(user)?.ok_or_else(|| {
                Error::new(ErrorKind::NotFound, format!("no such account {user}"))
            })?;
            let old = tx.trustee_level(c.id, row.id)?.ok_or_else(|| {
                Error::new(
                    ErrorKind::NotFound,
                    format!("{user} is not a trustee of {cname}"),
                )
            })?;
            if old == TrustLevel::Admin.to_i64() && level != TrustLevel::Admin {
                let admins = tx
                    .trustees_of(c.id)?
                    .iter()
                    .filter(|t| t.level == TrustLevel::Admin.to_i64())
                    .count();
                if admins <= 1 {
                    return err(
                        ErrorKind::StateConflict,
                        format!("{user} is the last admin of {cname}"),
                    );
                }
            }
            tx.trustee_set_level(c.id, row.id, level.to_i64())?;
            tx.change_insert(Some(c.id), "trustee-set", now_secs())?;
            Ok(())
        })
    }

    /// `circle set-members`: make the trustee list exactly `members`
    /// (adding, re-levelling, removing with one rekey), all or nothing.
    pub fn circle_set_members(
        &self,
        s: &Session,
        cname: &str,
        members: &[(String, TrustLevel)],
    ) -> Result<()> {
        if !members.iter().any(|(_, l)| *l == TrustLevel::Admin) {
            return err(
                ErrorKind::StateConflict,
                "the member list must contain at least one admin",
            );
        }
        self.store.write(|tx| {
            let c = self.circle_authorized(tx, s, cname, Op::ManageTrustees)?;
            let keys = self.circle_keys(tx, s, &c)?;
            let mut wanted = Vec::new();
            for (u, l) in members {
                let row = tx.account_by_name(u)?.ok_or_else(|| {
                    Error::new(ErrorKind::NotFound, format!("no such account {u}"))
                })?;
                if wanted
                    .iter()
                    .any(|(id, _, _): &(AccountId, TrustLevel, [u8; 32])| *id == row.id)
                {
                    return err(ErrorKind::Conflict, format!("{u} is named twice"));
                }
                wanted.push((row.id, *l, pk32(&row.public_key)?));
            }
            let current = tx.trustees_of(c.id)?;
            let mut removed = false;
            for t in &current {
                if !wanted.iter().any(|(id, _, _)| *id == t.account) {
                    tx.trustee_delete(c.id, t.account)?;
                    removed = true;
                }
            }
            for (id, l, pk) in &wanted {
                match current.iter().find(|t| t.account == *id) {
                    Some(t) if t.level != l.to_i64() => {
                        tx.trustee_set_level(c.id, *id, l.to_i64())?
                    }
                    Some(_) => {}
                    None => {
                        tx.trustee_insert(c.id, *id, l.to_i64())?;
                        for (e, k) in &keys.epochs {
                            tx.circle_key_insert(
                                c.id,
                                *e,
                                *id,
                                &wrap_to(pk, &aad::circle_key(c.id, *e, *id), &k.ck)?,
                            )?;
                        }
                    }
                }
            }
            if removed {
                // The new epoch is wrapped to everyone present now,
                // including new members.
                Self::revoke_in_tx(tx, &c, Some(&keys))?;
            }
            tx.change_insert(Some(c.id), "set-members", now_secs())?;
            Ok::<_, Error>(())
        })?;
        s.forget_keys(None);
        self.store.checkpoint()?;
        Ok(())
    }

    /// Wrap circle keys this session holds to trustees who lack them (after
    /// an admin passphrase reset gave an account a new key pair).
    pub fn heal_wraps(&self, s: &Session) -> Result<()> {
        self.store.write(|tx| {
            for (c, _) in tx.circles_of(s.account)? {
                let Ok(keys) = self.circle_keys(tx, s, &c) else {
                    continue;
                };
                for t in tx.trustees_of(c.id)? {
                    if t.account == s.account {
                        continue;
                    }
                    let have: Vec<Epoch> = tx
                        .circle_keys_for(c.id, t.account)?
                        .into_iter()
                        .map(|(e, _)| e)
                        .collect();
                    let pk = pk32(&t.public_key)?;
                    for (e, k) in &keys.epochs {
                        if !have.contains(e) {
                            tx.circle_key_insert(
                                c.id,
                                *e,
                                t.account,
                                &wrap_to(&pk, &aad::circle_key(c.id, *e, t.account), &k.ck)?,
                            )?;
                        }
                    }
                }
            }
            Ok(())
        })
    }
}

impl Vault {
    /// `circle rekey`: start a new key epoch (circle admins).
    pub fn circle_rekey(&self, s: &Session, cname: &str) -> Result<Epoch> {
        let e = self.store.write(|tx| {
            let c = self.circle_authorized(tx, s, cname, Op::ManageTrustees)?;
            let keys = self.keys_if_held(tx, s, &c);
            Self::revoke_in_tx(tx, &c, keys.as_deref())
        })?;
        s.forget_keys(None);
        Ok(e)
    }
}

impl Vault {
    /// `circle rekey NAME --reencrypt`: a new epoch, then every file, name,
    /// record and xattr re-encrypted under it and older epochs' keys
    /// deleted. Resumable: an interrupted run is continued (same epoch) by
    /// running the command again.
    pub fn circle_reencrypt(
        self: &std::sync::Arc<Self>,
        s: std::sync::Arc<Session>,
        cname: &str,
        progress: impl FnMut(u64, u64),
    ) -> Result<(Epoch, crate::vault::workspace::RekeyReport)> {
        let (circle, epoch) = self.store.write(|tx| {
            let c = self.circle_authorized(tx, &s, cname, Op::ManageTrustees)?;
            let key = format!("reencrypt:{}", c.id);
            let pending = tx.meta_get(&key)?;
            let epoch = match pending.and_then(|p| p.parse::<u32>().ok()) {
                Some(e) if e == c.epoch.0 => c.epoch,
                _ => {
                    let keys = self.keys_if_held(tx, &s, &c);
                    let e = Self::revoke_in_tx(tx, &c, keys.as_deref())?;
                    tx.meta_set(&key, &e.0.to_string())?;
                    e
                }
            };
            Ok::<_, Error>((c.id, epoch))
        })?;
        s.forget_keys(None);
        let ws = crate::vault::workspace::Workspace::new(self.clone(), s, false)?;
        let rep = ws.reencrypt_circle(circle, progress)?;
        self.store.write(|tx| {
            tx.meta_delete(&format!("reencrypt:{circle}"))?;
            tx.change_insert(Some(circle), "reencrypt", now_secs())?;
            Ok::<_, Error>(())
        })?;
        Ok((epoch, rep))
    }
}
