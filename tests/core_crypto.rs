//! Crypto requirements at the vault level: the RFC 9106 vector (R11), the
//! KDF cap against a tampered row (R11), passphrase change touching only
//! the account's own secret (R10), revocation by a new epoch (R5/R6 core),
//! AAD binding of wrapped keys, and Debug redaction (R13).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![cfg(feature = "test-hooks")]

#[path = "coreutil/mod.rs"]
mod util;

use std::time::Instant;

use circlefs::crypto::Key32;
use circlefs::crypto::kdf::KdfParams;
use circlefs::crypto::wrap::KeyPair;
use circlefs::error::ErrorKind;
use circlefs::format::aad;
use circlefs::ids::{AccountId, CircleId, Epoch};
use rusqlite::types::Value;
use util::{TestStore, pass, pass_of};

#[test]
fn kdf_profiles_and_bounds() {
    assert_eq!(
        KdfParams::profile("fast"),
        Some(KdfParams {
            m_kib: 19 * 1024,
            t: 2,
            p: 1
        })
    );
    assert_eq!(
        KdfParams::profile("default"),
        Some(KdfParams {
            m_kib: 64 * 1024,
            t: 3,
            p: 4
        })
    );
    assert_eq!(KdfParams::profile("weak"), None);
    // The store records the profile; accounts get its parameters.
    let t = TestStore::with_users(&["alice"]);
    let (m, tt, p): (i64, i64, i64) = t
        .raw()
        .query_row(
            "SELECT kdf_m, kdf_t, kdf_p FROM accounts WHERE name = 'alice'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!((m, tt, p), (19 * 1024, 2, 1));
    // An unknown profile at init is a bad request and creates nothing.
    let tmp = tempfile::tempdir().unwrap();
    let e = circlefs::vault::Vault::init(&tmp.path().join("s"), "admin", &pass("x"), "weak")
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::BadRequest);
    assert!(!tmp.path().join("s").exists());
}

fn tamper_account(t: &TestStore, name: &str, column: &str, value: i64) {
    let n = t
        .raw()
        .execute(
            &format!("UPDATE accounts SET {column} = ?1 WHERE name = ?2"),
            rusqlite::params![value, name],
        )
        .unwrap();
    assert_eq!(n, 1);
}

#[test]
fn tampered_kdf_row_is_refused_fast() {
    let t = TestStore::with_users(&["alice", "bob", "carol", "dave", "erin"]);
    tamper_account(&t, "alice", "kdf_m", 4_294_967_295);
    let t0 = Instant::now();
    let e = t
        .vault
        .unlock("alice", &pass(&pass_of("alice")))
        .unwrap_err();
    let took = t0.elapsed();
    assert_eq!(e.kind, ErrorKind::KdfParamsOutOfRange);
    assert_eq!(e.status().code(), 500);
    assert!(e.detail.contains("above the cap"), "{}", e.detail);
    // Refused before any hashing: far below one fast-profile derivation.
    assert!(took.as_millis() < 200, "took {took:?}");
    // Other ways to tamper the parameters.
    for (who, col, v, what) in [
        ("bob", "kdf_t", 1_000_000, "above the cap"),
        ("carol", "kdf_p", 0, "below the floor"),
        ("dave", "kdf_m", 8, "below the floor"),
        ("erin", "kdf_m", -1, "above the cap"),
    ] {
        tamper_account(&t, who, col, v);
        let t0 = Instant::now();
        let e = t.vault.unlock(who, &pass(&pass_of(who))).unwrap_err();
        assert_eq!(e.kind, ErrorKind::KdfParamsOutOfRange, "{who}");
        assert!(e.detail.contains(what), "{who}: {}", e.detail);
        assert!(t0.elapsed().as_millis() < 200);
    }
    // A salt of the wrong length is an integrity error, not a crash.
    t.raw()
        .execute("UPDATE accounts SET salt = x'00' WHERE name = 'admin'", [])
        .unwrap();
    let e = t
        .vault
        .unlock("admin", &pass(util::ADMIN_PASS))
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Integrity);
    assert_eq!(e.status().code(), 500);
}

#[test]
fn tampered_sealed_secret_is_401_and_tampered_public_key_is_500() {
    let t = TestStore::with_users(&["alice", "bob"]);
    // Swapping two accounts' sealed secrets: the AAD binds the account id.
    let c = t.raw();
    let sealed_bob: Vec<u8> = c
        .query_row(
            "SELECT sealed_secret FROM accounts WHERE name = 'bob'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let salt_bob: Vec<u8> = c
        .query_row("SELECT salt FROM accounts WHERE name = 'bob'", [], |r| {
            r.get(0)
        })
        .unwrap();
    c.execute(
        "UPDATE accounts SET sealed_secret = ?1, salt = ?2 WHERE name = 'alice'",
        rusqlite::params![sealed_bob, salt_bob],
    )
    .unwrap();
    assert_eq!(
        t.vault
            .unlock("alice", &pass(&pass_of("bob")))
            .unwrap_err()
            .status()
            .code(),
        401
    );
    // A replaced public key no longer matches the secret.
    c.execute(
        "UPDATE accounts SET public_key = zeroblob(32) WHERE name = 'bob'",
        [],
    )
    .unwrap();
    let e = t.vault.unlock("bob", &pass(&pass_of("bob"))).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Integrity);
}

/// Rows of one table keyed by their first column(s) rendered as text.
fn rows_of(dump: &util::Dump, table: &str) -> Vec<Vec<(String, Value)>> {
    dump.iter()
        .filter(|(t, _)| t == table)
        .map(|(_, r)| r.clone())
        .collect()
}

#[test]
fn passphrase_change_rewrites_only_that_accounts_secret() {
    let t = TestStore::with_users(&["alice", "bob", "carol"]);
    let alice = t.login("alice");
    let bob = t.login("bob");
    t.expect(&alice, "circle create docs", 200);
    t.expect(&alice, "trustee add docs bob carol", 200);
    t.expect(&bob, "circle create bobs", 200);
    t.expect(&bob, "trustee add bobs alice --level read", 200);
    t.expect(&alice, "circle rekey docs", 200);
    for (row, _, _) in t.vault.my_circles(&alice).unwrap() {
        t.vault
            .store()
            .read(|tx| t.vault.circle_keys(tx, &alice, &row))
            .unwrap();
    }
    let before_keys = alice.export_keys();
    let before = util::dump_db(&t.db());
    assert!(before.len() > 10);

    let f = t.file("alice.new", "alice-brand-new\n");
    t.expect(
        &alice,
        &format!("user passwd --new-passphrase-file {}", f.display()),
        200,
    );
    let after = util::dump_db(&t.db());

    // Every table other than accounts is byte-identical.
    let tables: std::collections::BTreeSet<&String> = before.iter().map(|(t, _)| t).collect();
    assert!(tables.contains(&"circle_keys".to_string()));
    for table in tables {
        if table != "accounts" {
            assert_eq!(
                rows_of(&before, table),
                rows_of(&after, table),
                "table {table} changed"
            );
        }
    }
    // In accounts, only alice's salt / KDF parameters / sealed secret may differ.
    let (b, a) = (rows_of(&before, "accounts"), rows_of(&after, "accounts"));
    assert_eq!(b.len(), a.len());
    let mut alice_seen = false;
    for (rb, ra) in b.iter().zip(&a) {
        let is_alice = rb
            .iter()
            .any(|(c, v)| c == "name" && *v == Value::Text("alice".into()));
        if !is_alice {
            assert_eq!(rb, ra, "another account's row changed");
            continue;
        }
        alice_seen = true;
        for ((cb, vb), (ca, va)) in rb.iter().zip(ra) {
            assert_eq!(cb, ca);
            match cb.as_str() {
                "salt" | "sealed_secret" => assert_ne!(vb, va, "{cb} must be new"),
                "kdf_m" | "kdf_t" | "kdf_p" => {}
                _ => assert_eq!(vb, va, "column {cb} of alice changed"),
            }
        }
    }
    assert!(alice_seen);

    // Old passphrase 401; new one unlocks the same key pair and every circle key.
    let e = t
        .vault
        .unlock("alice", &pass(&pass_of("alice")))
        .unwrap_err();
    assert_eq!(e.status().code(), 401);
    let alice2 = t.vault.unlock("alice", &pass("alice-brand-new")).unwrap();
    for (row, _, _) in t.vault.my_circles(&alice2).unwrap() {
        t.vault
            .store()
            .read(|tx| t.vault.circle_keys(tx, &alice2, &row))
            .unwrap();
    }
    let k2 = alice2.export_keys();
    assert_eq!(k2.secret, before_keys.secret);
    assert_eq!(k2.dir_key, before_keys.dir_key);
    let mut c1 = before_keys.circles.clone();
    let mut c2 = k2.circles.clone();
    c1.sort();
    c2.sort();
    assert_eq!(c1, c2);
    assert_eq!(
        c2.len(),
        2,
        "docs epoch 2 (epoch 1 destroyed by the rekey), bobs epoch 1"
    );
}

/// (circle, epoch, account, wrapped) rows of circle_keys.
fn key_rows(t: &TestStore) -> Vec<(i64, i64, i64, Vec<u8>)> {
    let c = t.raw();
    let mut st = c
        .prepare("SELECT circle_id, epoch, account_id, wrapped FROM circle_keys ORDER BY 1, 2, 3")
        .unwrap();
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn ctx(circle: i64, epoch: i64, account: i64) -> Vec<u8> {
    aad::circle_key(CircleId(circle), Epoch(epoch as u32), AccountId(account))
}

#[test]
fn removed_trustee_cannot_unwrap_the_new_epoch() {
    let t = TestStore::with_users(&["alice", "bob", "carol"]);
    let alice = t.login("alice");
    t.expect(&alice, "circle create docs", 200);
    t.expect(&alice, "trustee add docs bob carol", 200);
    let bob = t.login("bob");
    let (row, _, _) = t.vault.my_circles(&bob).unwrap().remove(0);
    t.vault
        .store()
        .read(|tx| t.vault.circle_keys(tx, &bob, &row))
        .unwrap();
    let stolen = bob.export_keys();
    assert_eq!(stolen.circles.len(), 1, "bob held the epoch-1 circle key");
    let bob_id = bob.account.0;

    let r = t.expect(&alice, "trustee remove docs bob", 200);
    assert_eq!(r.data["epoch"], 2);
    let rows = key_rows(&t);
    // No wrap of any epoch is left for bob.
    assert!(
        rows.iter().all(|(_, _, a, _)| *a != bob_id),
        "bob still has circle_keys rows"
    );
    // The new epoch is wrapped to alice and carol only.
    let new: Vec<_> = rows
        .iter()
        .filter(|(c, e, _, _)| *c == row.id.0 && *e == 2)
        .collect();
    assert_eq!(new.len(), 2);
    // bob's secret opens none of them, under any account's context.
    let bob_kp = KeyPair::from_secret(Key32::from_bytes(stolen.secret));
    for (c, e, a, w) in &new {
        for acct in [*a, bob_id] {
            assert!(
                bob_kp.unwrap_key(&ctx(*c, *e, acct), w).is_err(),
                "bob unwrapped epoch {e} of account {a}"
            );
        }
    }
    // The remaining trustees do, and get one key that bob never saw.
    let mut new_keys = Vec::new();
    for name in ["alice", "carol"] {
        let s = t.login(name);
        let kp = KeyPair::from_secret(Key32::from_bytes(s.export_keys().secret));
        let (_, e, a, w) = new.iter().find(|(_, _, a, _)| *a == s.account.0).unwrap();
        new_keys.push(*kp.unwrap_key(&ctx(row.id.0, *e, *a), w).unwrap().expose());
    }
    assert_eq!(new_keys[0], new_keys[1]);
    assert!(stolen.circles.iter().all(|(_, _, k)| *k != new_keys[0]));
    assert_ne!(stolen.dir_key, new_keys[0]);
    // The old epoch's keys are destroyed in the removal's transaction.
    let old: Vec<_> = rows
        .iter()
        .filter(|(c, e, _, _)| *c == row.id.0 && *e == 1)
        .collect();
    assert!(old.is_empty());
    // Through the vault: bob's live session lost the circle.
    t.expect(&bob, "circle info docs", 404);
    // (Its cache still holds epoch 1, which it had anyway; the current row asks for epoch 2.)
    let e = t
        .vault
        .store()
        .read(|tx| {
            let cur = tx.circle_by_id(row.id)?.unwrap();
            assert_eq!(cur.epoch, Epoch(2));
            t.vault.circle_keys(tx, &bob, &cur).map(|_| ())
        })
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Forbidden);
}

#[test]
fn wrapped_keys_are_bound_to_their_row() {
    let t = TestStore::with_users(&["alice", "bob"]);
    let alice = t.login("alice");
    t.expect(&alice, "circle create docs", 200);
    t.expect(&alice, "trustee add docs bob", 200);
    let rows = key_rows(&t);
    assert_eq!(rows.len(), 2);
    let a = t.login("alice");
    let kp = KeyPair::from_secret(Key32::from_bytes(a.export_keys().secret));
    let (c, e, acct, w) = rows.iter().find(|r| r.2 == a.account.0).unwrap();
    assert!(kp.unwrap_key(&ctx(*c, *e, *acct), w).is_ok());
    // Same bytes under another circle, epoch or account context: refused.
    assert!(kp.unwrap_key(&ctx(*c + 1, *e, *acct), w).is_err());
    assert!(kp.unwrap_key(&ctx(*c, *e + 1, *acct), w).is_err());
    assert!(kp.unwrap_key(&ctx(*c, *e, *acct + 1), w).is_err());
    // A flipped byte in the stored wrap: the next fresh session gets an integrity error (500).
    let mut bad = w.clone();
    bad[40] ^= 1;
    t.raw()
        .execute(
            "UPDATE circle_keys SET wrapped = ?1 WHERE account_id = ?2",
            rusqlite::params![bad, a.account.0],
        )
        .unwrap();
    let fresh = t.login("alice");
    let (row, _, _) = t.vault.my_circles(&fresh).unwrap().remove(0);
    let e = t
        .vault
        .store()
        .read(|tx| t.vault.circle_keys(tx, &fresh, &row).map(|_| ()))
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Integrity);
    assert_eq!(e.status().code(), 500);
}

#[test]
fn debug_output_is_redacted() {
    let t = TestStore::with_users(&["alice"]);
    let alice = t.login("alice");
    t.expect(&alice, "circle create docs", 200);
    let (row, _, _) = t.vault.my_circles(&alice).unwrap().remove(0);
    let keys = t
        .vault
        .store()
        .read(|tx| t.vault.circle_keys(tx, &alice, &row))
        .unwrap();
    let k = alice.export_keys();
    let secrets: Vec<[u8; 32]> = std::iter::once(k.secret)
        .chain([k.dir_key])
        .chain(k.circles.iter().map(|c| c.2))
        .collect();
    let texts = [
        format!("{alice:?}"),
        format!("{keys:?}"),
        format!("{:?}", t.vault),
        format!("{:?}", KeyPair::from_secret(Key32::from_bytes(k.secret))),
        format!("{:?}", Key32::from_bytes(k.dir_key)),
        format!("{:?}", pass(&pass_of("alice"))),
    ];
    for s in &texts {
        assert!(!s.contains(&pass_of("alice")), "{s}");
        for key in &secrets {
            let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
            let dec = format!("{:?}", &key[..4]).trim_end_matches(']').to_string();
            assert!(!s.contains(&hex) && !s.contains(&dec), "{s}");
        }
    }
    assert!(texts[0].contains("REDACTED") && texts[1].contains("REDACTED"));
}
