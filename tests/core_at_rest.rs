//! Nothing secret at rest (R9 for accounts and circles): passphrases,
//! circle names, KEKs and every raw key a session holds never appear in any
//! byte under the store directory, with the connection open and after it
//! is closed. Account names are the declared exception (and the positive
//! control that the scan works).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![cfg(feature = "test-hooks")]

#[path = "coreutil/mod.rs"]
mod util;

use std::path::{Path, PathBuf};

use circlefs::crypto::kdf::{KdfParams, derive_kek};
use circlefs::vault::accounts::NewUser;
use circlefs::vault::{Person, Session};
use util::{TestStore, contains, pass, utf16le};

const P_ALICE: &str = "MARKER-PASS-7f3a-alice-0001";
const P_BOB: &str = "MARKER-PASS-7f3a-bob-0002";
const P_CAROL: &str = "MARKER-PASS-7f3a-carol-0003";
const P_ALICE_NEW: &str = "MARKER-PASS-7f3a-alice-changed";
const P_BOB_RESET: &str = "MARKER-PASS-7f3a-bob-reset";
const C_DOCS: &str = "MARKER-CIRCLE-9c1e-docs";
const C_SPACE: &str = "MARKER-CIRCLE-9c1e Team Plans";
const C_GONE: &str = "MARKER-CIRCLE-9c1e-deleted";
const C_UNICODE: &str = "MARKER-CIRCLE-9c1e-Grüße-日本";

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// All bytes of every file of the store, by file.
fn snapshot(root: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    files_under(root)
        .into_iter()
        .map(|p| (p.clone(), std::fs::read(&p).unwrap()))
        .collect()
}

fn assert_absent(snap: &[(PathBuf, Vec<u8>)], what: &str, needle: &[u8]) {
    for (p, bytes) in snap {
        assert!(!contains(bytes, needle), "{what} found in {}", p.display());
    }
}

fn user(t: &TestStore, name: &str, p: &str) {
    t.vault
        .user_create(
            &t.admin,
            NewUser {
                name: name.into(),
                pass: Some(pass(p)),
                may_change_password: true,
                person: Person {
                    given_name: Some(format!("Given-{name}")),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .unwrap();
}

/// Load every circle key of `s` into its cache so the test hook exports them.
fn load_keys(t: &TestStore, s: &Session) {
    for (row, _, _) in t.vault.my_circles(s).unwrap() {
        t.vault
            .store()
            .read(|tx| t.vault.circle_keys(tx, s, &row))
            .unwrap();
    }
}

/// The KEK of every account, derived from its stored salt with the known passphrase.
fn keks(t: &TestStore, accounts: &[(&str, &str)]) -> Vec<[u8; 32]> {
    let c = t.raw();
    accounts
        .iter()
        .map(|(name, p)| {
            let salt: Vec<u8> = c
                .query_row("SELECT salt FROM accounts WHERE name = ?1", [name], |r| {
                    r.get(0)
                })
                .unwrap();
            *derive_kek(&pass(p), &salt, KdfParams::FLOOR)
                .unwrap()
                .expose()
        })
        .collect()
}

#[test]
fn nothing_secret_at_rest() {
    let t = TestStore::new();
    user(&t, "alice", P_ALICE);
    user(&t, "bob", P_BOB);
    user(&t, "carol", P_CAROL);
    let alice = t.vault.unlock("alice", &pass(P_ALICE)).unwrap();
    let q = |s: &str| format!("'{s}'");
    for c in [C_DOCS, C_SPACE, C_GONE, C_UNICODE] {
        t.expect(&alice, &format!("circle create {}", q(c)), 200);
    }
    t.expect(&alice, &format!("trustee add {} bob carol", q(C_DOCS)), 200);
    t.expect(
        &alice,
        &format!("trustee add {} bob --level read", q(C_SPACE)),
        200,
    );
    t.expect(&alice, &format!("trustee add {} carol", q(C_GONE)), 200);
    // Circle keys of the epochs the rekey and removal below destroy.
    load_keys(&t, &alice);
    let before_rotation = alice.export_keys();
    t.expect(&alice, &format!("circle rekey {}", q(C_SPACE)), 200);
    t.expect(&alice, &format!("trustee remove {} carol", q(C_DOCS)), 200);
    t.expect(&alice, &format!("circle delete {}", q(C_GONE)), 200);
    // Passphrase change and admin reset write new sealed secrets.
    let f = t.file("a.new", &format!("{P_ALICE_NEW}\n"));
    t.expect(
        &alice,
        &format!("user passwd --new-passphrase-file {}", f.display()),
        200,
    );
    let f = t.file("b.new", &format!("{P_BOB_RESET}\n"));
    t.expect(
        &t.admin,
        &format!("user modify bob --new-passphrase-file {}", f.display()),
        200,
    );
    std::fs::remove_file(&f).unwrap();

    // Sessions after all changes (alice's heals bob's wraps).
    let alice = t.vault.unlock("alice", &pass(P_ALICE_NEW)).unwrap();
    let bob = t.vault.unlock("bob", &pass(P_BOB_RESET)).unwrap();
    let carol = t.vault.unlock("carol", &pass(P_CAROL)).unwrap();
    let mut keys: Vec<(String, [u8; 32])> = Vec::new();
    for s in [&t.admin, &alice, &bob, &carol] {
        load_keys(&t, s);
        let k = s.export_keys();
        keys.push((format!("secret of {}", s.name), k.secret));
        keys.push((format!("directory key via {}", s.name), k.dir_key));
        for (c, e, ck) in k.circles {
            keys.push((format!("circle {c} epoch {e} key via {}", s.name), ck));
        }
    }
    for (c, e, ck) in before_rotation.circles {
        keys.push((format!("circle {c} epoch {e} key (destroyed since)"), ck));
    }
    // Every circle key the old sessions saw too (including the deleted circle's).
    let first_alice_keys = {
        let a = t.vault.unlock("alice", &pass(P_ALICE_NEW)).unwrap();
        load_keys(&t, &a);
        a.export_keys()
    };
    assert!(
        keys.iter().filter(|(w, _)| w.starts_with("circle")).count() >= 8,
        "{}",
        keys.len()
    );
    assert!(!first_alice_keys.circles.is_empty());
    let kek_list = keks(
        &t,
        &[
            ("admin", util::ADMIN_PASS),
            ("alice", P_ALICE_NEW),
            ("bob", P_BOB_RESET),
            ("carol", P_CAROL),
        ],
    );

    let markers: Vec<(&str, &str)> = vec![
        ("alice's passphrase", P_ALICE),
        ("bob's passphrase", P_BOB),
        ("carol's passphrase", P_CAROL),
        ("alice's new passphrase", P_ALICE_NEW),
        ("bob's reset passphrase", P_BOB_RESET),
        ("admin passphrase", util::ADMIN_PASS),
        ("circle name", C_DOCS),
        ("circle name", C_SPACE),
        ("deleted circle name", C_GONE),
        ("circle name", C_UNICODE),
        ("circle name stem", "MARKER-CIRCLE"),
        ("passphrase stem", "MARKER-PASS"),
    ];
    let scan = |snap: &[(PathBuf, Vec<u8>)]| {
        let names: Vec<String> = snap
            .iter()
            .map(|(p, _)| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert!(names.contains(&"circlefs.db".to_string()), "{names:?}");
        // Positive control: account names and person fields are stored in clear.
        assert!(
            snap.iter().any(|(_, b)| contains(b, b"Given-alice")),
            "scan sees nothing at all"
        );
        for (what, m) in &markers {
            assert_absent(snap, what, m.as_bytes());
            assert_absent(snap, what, &utf16le(m));
            assert_absent(snap, what, m.to_lowercase().as_bytes());
        }
        for (what, k) in &keys {
            assert_absent(snap, what, k);
        }
        for (i, k) in kek_list.iter().enumerate() {
            assert_absent(snap, &format!("KEK #{i}"), k);
        }
        names
    };

    // While the connection is open (WAL and shm may exist).
    let open_snap = snapshot(&t.root);
    let names = scan(&open_snap);
    assert!(
        names.iter().any(|n| n.ends_with("-wal")),
        "expected a WAL file while open: {names:?}"
    );

    // After every session and the vault are gone.
    let TestStore {
        tmp,
        root,
        vault,
        admin,
    } = t;
    drop((alice, bob, carol, admin));
    drop(vault);
    let closed_snap = snapshot(&root);
    scan(&closed_snap);
    drop(tmp);
}
