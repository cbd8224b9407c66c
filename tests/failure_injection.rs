//! All-or-nothing membership changes: a failure injected at every write
//! step of a revocation (and of adding a trustee) leaves the old state fully
//! usable; the first run that gets through leaves the new epoch usable.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![cfg(feature = "test-hooks")]

mod util;

use std::sync::Arc;

use circlefs::control::{execute, parse_line};
use circlefs::vault::workspace::{Caller, NewNode, Workspace};
use rusqlite::Connection;
use util::TempStore;

const TABLES: &[&str] = &[
    "accounts",
    "circles",
    "trustees",
    "circle_keys",
    "inodes",
    "dirents",
    "file_keys",
    "xattrs",
    "changes",
    "meta",
];

/// TEMP triggers on the store's connection: the N-th row write of any table aborts.
fn arm(t: &TempStore, n: i64) {
    let mut sql = format!(
        "DROP TABLE IF EXISTS temp.inject; CREATE TEMP TABLE inject(n INTEGER); INSERT INTO inject VALUES ({n});"
    );
    for tb in TABLES {
        for op in ["INSERT", "UPDATE", "DELETE"] {
            sql.push_str(&format!(
                "DROP TRIGGER IF EXISTS temp.inj_{tb}_{op}; CREATE TEMP TRIGGER inj_{tb}_{op} BEFORE {op} ON main.{tb} BEGIN \
                 UPDATE inject SET n = n - 1; SELECT RAISE(ABORT, 'injected failure') WHERE (SELECT n FROM inject) = 0; END;"
            ));
        }
    }
    t.vault.store().test_exec(&sql).unwrap();
}

fn disarm(t: &TempStore) {
    let mut sql = String::new();
    for tb in TABLES {
        for op in ["INSERT", "UPDATE", "DELETE"] {
            sql.push_str(&format!("DROP TRIGGER IF EXISTS temp.inj_{tb}_{op};"));
        }
    }
    t.vault.store().test_exec(&sql).unwrap();
}

fn snapshot(t: &TempStore) -> Vec<String> {
    let c = Connection::open(t.db()).unwrap();
    let mut out = Vec::new();
    for tb in [
        "circles",
        "trustees",
        "circle_keys",
        "file_keys",
        "inodes",
        "dirents",
        "xattrs",
        "meta",
    ] {
        let mut st = c
            .prepare(&format!("SELECT * FROM {tb} ORDER BY 1, 2"))
            .unwrap();
        let n = st.column_count();
        let rows = st
            .query_map([], |r| {
                let mut s = tb.to_string();
                for i in 0..n {
                    s.push_str(&format!("|{:?}", r.get::<_, rusqlite::types::Value>(i)?));
                }
                Ok(s)
            })
            .unwrap();
        out.extend(rows.map(|r| r.unwrap()));
    }
    out
}

fn read_all(t: &TempStore, user: &str) -> Vec<u8> {
    let w = Workspace::new(t.vault.clone(), Arc::new(t.login(user)), false).unwrap();
    let root = w.circles().unwrap()[0].root;
    let n = w.lookup(root, b"doc").unwrap();
    w.open(n.ino, false, false).unwrap();
    let v = w.read(n.ino, 0, 1 << 20).unwrap();
    w.release(n.ino).unwrap();
    v
}

#[test]
fn revocation_is_all_or_nothing_at_every_step() {
    let t = TempStore::new();
    let a = t.user("alice");
    t.user("bob");
    t.user("carol");
    for l in ["circle create c", "trustee add c bob carol"] {
        assert_eq!(
            execute(&t.vault, &a, &parse_line(l).unwrap()).status.code(),
            200
        );
    }
    {
        let w = Workspace::new(t.vault.clone(), Arc::new(t.login("alice")), false).unwrap();
        let root = w.circles().unwrap()[0].root;
        let n = w
            .create_node(
                root,
                b"doc",
                0o644,
                NewNode::File,
                Caller { uid: 0, gid: 0 },
            )
            .unwrap();
        w.open(n.ino, true, false).unwrap();
        w.write(n.ino, 0, &vec![42u8; 10_000]).unwrap();
        w.release(n.ino).unwrap();
        w.setxattr(
            n.ino,
            b"user.k",
            b"v",
            circlefs::vault::workspace::XattrMode::Any,
        )
        .unwrap();
        let d = w
            .create_node(root, b"sub", 0o755, NewNode::Dir, Caller { uid: 0, gid: 0 })
            .unwrap();
        w.create_node(
            d.ino,
            b"inner",
            0o644,
            NewNode::File,
            Caller { uid: 0, gid: 0 },
        )
        .unwrap();
    }
    let before = snapshot(&t);
    let mut step = 1;
    loop {
        arm(&t, step);
        let r = execute(&t.vault, &a, &parse_line("trustee remove c bob").unwrap());
        disarm(&t);
        if r.status.code() == 200 {
            break;
        }
        assert_eq!(r.status.code(), 500, "step {step}: {}", r.text());
        assert_eq!(
            snapshot(&t),
            before,
            "step {step}: a failed revocation changed the store"
        );
        assert_eq!(
            read_all(&t, "bob"),
            vec![42u8; 10_000],
            "old epoch still usable after failure at step {step}"
        );
        step += 1;
        assert!(step < 200, "never completed");
    }
    assert!(step > 10, "the revocation has many write steps ({step})");
    // New epoch: bob is out, alice and carol read, alice writes under epoch 2.
    let info = t.vault.circle_info(&t.login("alice"), "c").unwrap();
    assert_eq!(info.epoch.0, 2);
    // Everything moved to epoch 2 in that one transaction; epoch 1 is gone.
    let c = Connection::open(t.db()).unwrap();
    let stale: i64 = c
        .query_row(
            "SELECT (SELECT COUNT(*) FROM circle_keys WHERE epoch != 2) \
             + (SELECT COUNT(*) FROM file_keys WHERE epoch != 2) \
             + (SELECT COUNT(*) FROM dirents WHERE epoch != 2) \
             + (SELECT COUNT(*) FROM xattrs WHERE epoch != 2) \
             + (SELECT COUNT(*) FROM inodes WHERE epoch != 2)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(stale, 0);
    assert_eq!(read_all(&t, "carol"), vec![42u8; 10_000]);
    let wb = Workspace::new(t.vault.clone(), Arc::new(t.login("bob")), false).unwrap();
    assert!(wb.circles().unwrap().is_empty());
}

#[test]
fn trustee_add_is_all_or_nothing_at_every_step() {
    let t = TempStore::new();
    let a = t.user("alice");
    for u in ["u1", "u2", "u3"] {
        t.user(u);
    }
    assert_eq!(
        execute(&t.vault, &a, &parse_line("circle create c").unwrap())
            .status
            .code(),
        200
    );
    let before = snapshot(&t);
    let mut step = 1;
    loop {
        arm(&t, step);
        let r = execute(&t.vault, &a, &parse_line("trustee add c u1 u2 u3").unwrap());
        disarm(&t);
        if r.status.code() == 200 {
            break;
        }
        assert_eq!(snapshot(&t), before, "step {step}");
        step += 1;
        assert!(step < 200);
    }
    assert_eq!(t.vault.circle_info(&a, "c").unwrap().trustees.len(), 4);
}
