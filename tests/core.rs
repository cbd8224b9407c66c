//! Core (vault-level) tests: every admin command and status code, paging,
//! passphrase handling, KDF caps, revocation crypto, nothing secret at rest.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod util;

use circlefs::control::{Command, execute, parse_line};
#[cfg(feature = "test-hooks")]
use circlefs::crypto::Key32;
#[cfg(feature = "test-hooks")]
use circlefs::crypto::wrap::KeyPair;
use circlefs::error::{ErrorKind, Status};
#[cfg(feature = "test-hooks")]
use circlefs::format::aad;
use circlefs::ids::Epoch;
#[cfg(feature = "test-hooks")]
use circlefs::ids::{AccountId, CircleId};
use circlefs::level::TrustLevel;
use circlefs::vault::Session;
use rusqlite::Connection;
use util::{TempStore, pass};

fn run(t: &TempStore, s: &Session, line: &str) -> (Status, String) {
    let r = match parse_line(line) {
        Ok(cmd) => execute(&t.vault, s, &cmd),
        Err(e) => circlefs::control::Response::error(&e),
    };
    (r.status, r.text())
}

fn code(t: &TempStore, s: &Session, line: &str) -> u16 {
    run(t, s, line).0.code()
}

/// All rows of every table, as text, for before/after comparisons.
fn dump(t: &TempStore) -> Vec<(String, String)> {
    let c = Connection::open(t.db()).unwrap();
    let tables: Vec<String> = c
        .prepare("SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    let mut out = Vec::new();
    for tb in tables {
        let mut st = c.prepare(&format!("SELECT * FROM {tb}")).unwrap();
        let n = st.column_count();
        let rows = st
            .query_map([], |r| {
                let mut s = String::new();
                for i in 0..n {
                    let v: rusqlite::types::Value = r.get(i)?;
                    s.push_str(&format!("{v:?}|"));
                }
                Ok(s)
            })
            .unwrap();
        for r in rows {
            out.push((tb.clone(), r.unwrap()));
        }
    }
    out
}

#[test]
fn unlock_statuses() {
    let t = TempStore::new();
    let e = t.vault.unlock("admin", &pass("nope")).unwrap_err();
    assert_eq!(e.status(), Status::Unauthorized);
    let e = t.vault.unlock("ghost", &pass("x")).unwrap_err();
    assert_eq!(e.status(), Status::Unauthorized);
    assert!(t.vault.unlock("admin", &pass("admin-pw")).is_ok());
}

#[test]
fn user_commands_and_codes() {
    let t = TempStore::new();
    let a = t.admin();
    std::fs::write(t.dir.path().join("p"), "bob-pw\n").unwrap();
    let pf = t.dir.path().join("p");
    let pfs = pf.display().to_string();
    assert_eq!(
        code(
            &t,
            &a,
            &format!(
                "user create bob --new-passphrase-file {pfs} --email bob@example.org --given-name Bob"
            )
        ),
        200
    );
    assert_eq!(
        code(
            &t,
            &a,
            &format!("user create bob --new-passphrase-file {pfs}")
        ),
        409
    );
    assert_eq!(code(&t, &a, "user create carol"), 406, "no passphrase");
    assert_eq!(
        code(
            &t,
            &a,
            &format!("user create 'bad name' --new-passphrase-file {pfs}")
        ),
        400
    );
    assert_eq!(
        code(
            &t,
            &a,
            "user create bob2 --new-passphrase-file /nonexistent/file"
        ),
        400
    );
    assert_eq!(code(&t, &a, "user info nosuch"), 404);
    let (st, text) = run(&t, &a, "user info bob");
    assert_eq!(st, Status::Ok);
    assert!(
        text.contains("email: bob@example.org") && text.contains("verified: false"),
        "{text}"
    );
    assert_eq!(code(&t, &a, "user verify bob"), 200);
    assert!(run(&t, &a, "user info bob").1.contains("verified: true"));
    assert_eq!(
        code(
            &t,
            &a,
            "user modify bob --family-name Builder --may-change-password true"
        ),
        200
    );
    let bob = t.vault.unlock("bob", &pass("bob-pw")).unwrap();
    // A plain account: own info yes, others no, no listing, no account management.
    assert_eq!(code(&t, &bob, "user info"), 200);
    assert_eq!(code(&t, &bob, "user info admin"), 403);
    assert_eq!(code(&t, &bob, "user list"), 403);
    assert_eq!(
        code(
            &t,
            &bob,
            &format!("user create eve --new-passphrase-file {pfs}")
        ),
        403
    );
    assert_eq!(code(&t, &bob, "user delete admin"), 403);
    assert_eq!(
        code(&t, &bob, "user modify bob --email b@x"),
        200,
        "own profile"
    );
    assert_eq!(code(&t, &bob, "user modify bob --user-admin true"), 403);
    assert_eq!(code(&t, &a, "user modify bob --user-admin maybe"), 400);
    assert_eq!(code(&t, &a, "user delete admin"), 403);
    assert_eq!(code(&t, &a, "user delete nosuch"), 404);
    assert_eq!(code(&t, &a, "user delete bob"), 200);
    assert_eq!(
        t.vault.unlock("bob", &pass("bob-pw")).unwrap_err().status(),
        Status::Unauthorized
    );
    // Deleted requester's session is refused.
    assert_eq!(code(&t, &bob, "user info"), 401);
    assert_eq!(code(&t, &a, "frobnicate"), 400);
    assert_eq!(code(&t, &a, "user"), 406);
    assert_eq!(code(&t, &a, "help"), 200);
}

#[test]
fn user_admin_and_passwd_rules() {
    let t = TempStore::new();
    let a = t.admin();
    let _ua = t.user("ua");
    assert_eq!(code(&t, &a, "user modify ua --user-admin true"), 200);
    let ua = t.login("ua");
    let pf = t.dir.path().join("np");
    std::fs::write(&pf, "x-pw").unwrap();
    let pfs = pf.display().to_string();
    assert_eq!(
        code(
            &t,
            &ua,
            &format!("user create x --new-passphrase-file {pfs}")
        ),
        200
    );
    assert_eq!(code(&t, &ua, "user list"), 200);
    assert_eq!(
        code(
            &t,
            &ua,
            &format!("user create y --user-admin --new-passphrase-file {pfs}")
        ),
        403,
        "only sysadmin grants user-admin"
    );
    assert_eq!(code(&t, &ua, "user modify admin --email a@b"), 403);
    // passwd needs may-change-password (or user-admin).
    let x = t.vault.unlock("x", &pass("x-pw")).unwrap();
    assert_eq!(
        code(&t, &x, &format!("user passwd --new-passphrase-file {pfs}")),
        403
    );
    assert_eq!(code(&t, &x, "user passwd"), 406);
    assert_eq!(
        code(&t, &ua, "user modify x --may-change-password true"),
        200
    );
    std::fs::write(&pf, "x-new-pw\n").unwrap();
    assert_eq!(
        code(&t, &x, &format!("user passwd --new-passphrase-file {pfs}")),
        200
    );
    assert!(t.vault.unlock("x", &pass("x-pw")).is_err());
    assert!(t.vault.unlock("x", &pass("x-new-pw")).is_ok());
}

#[test]
fn user_list_paging_and_query() {
    let t = TempStore::new();
    let a = t.admin();
    for n in ["anna", "bert", "carl", "dora", "emil"] {
        t.user(n);
    }
    assert_eq!(
        code(&t, &a, "user modify dora --email dora@lab.example"),
        200
    );
    assert_eq!(code(&t, &a, "user verify carl"), 200);
    let (rows, total) = t.vault.user_list(&a, None, false, 0, 100).unwrap();
    assert_eq!(total, 6);
    assert_eq!(rows.len(), 6);
    let (rows, total) = t.vault.user_list(&a, None, false, 2, 2).unwrap();
    assert_eq!(total, 6);
    let names: Vec<_> = rows.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        ["anna", "bert", "carl", "dora", "emil", "admin"]
            .iter()
            .copied()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .skip(2)
            .take(2)
            .collect::<Vec<_>>()
    );
    let (rows, total) = t
        .vault
        .user_list(&a, Some("lab.example"), false, 0, 10)
        .unwrap();
    assert_eq!((total, rows[0].name.as_str()), (1, "dora"));
    let (rows, total) = t.vault.user_list(&a, Some("R"), false, 0, 10).unwrap();
    assert_eq!(
        total, 3,
        "bert, carl, dora match 'r' case-insensitively: {rows:?}"
    );
    let (_, total) = t.vault.user_list(&a, None, true, 0, 10).unwrap();
    assert_eq!(total, 2, "admin and carl are verified");
    let (_, text) = run(&t, &a, "user list --start 5 --count 5");
    assert!(text.contains("total: 6 start: 5 count: 1"), "{text}");
    let (rows, _) = t.vault.user_list(&a, Some("%"), false, 0, 10).unwrap();
    assert!(rows.is_empty(), "LIKE wildcards are escaped");
}

#[test]
fn circles_and_trustees() {
    let t = TempStore::new();
    let a = t.admin();
    let w = t.user("wendy");
    let r = t.user("rita");
    t.user("max");
    assert_eq!(code(&t, &w, "circle create docs"), 200);
    assert_eq!(code(&t, &w, "circle create docs"), 409);
    assert_eq!(code(&t, &w, "circle create .hidden"), 400);
    assert_eq!(code(&t, &w, "circle create"), 406);
    assert_eq!(code(&t, &w, "trustee add docs rita --level read"), 200);
    assert_eq!(code(&t, &w, "trustee add docs rita"), 409);
    // All or nothing: one unknown account, nobody added.
    assert_eq!(code(&t, &w, "trustee add docs max nosuch"), 404);
    let info = t.vault.circle_info(&w, "docs").unwrap();
    assert_eq!(
        info.trustees
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>(),
        ["rita", "wendy"]
    );
    assert_eq!(
        code(&t, &w, "trustee add docs max rita"),
        409,
        "rita already a trustee: max not added either"
    );
    assert_eq!(t.vault.circle_info(&w, "docs").unwrap().trustees.len(), 2);
    // A read trustee cannot manage; neither can a write trustee.
    assert_eq!(code(&t, &r, "trustee add docs max"), 403);
    assert_eq!(code(&t, &w, "trustee set docs rita --level write"), 200);
    let r = t.login("rita");
    assert_eq!(
        code(&t, &r, "trustee add docs max"),
        403,
        "write trustee adding a trustee"
    );
    assert_eq!(code(&t, &r, "circle delete docs"), 403);
    assert_eq!(code(&t, &w, "trustee set docs rita --level boss"), 400);
    assert_eq!(code(&t, &w, "trustee set docs rita"), 406);
    // Last admin protections.
    assert_eq!(code(&t, &w, "trustee set docs wendy --level read"), 409);
    assert_eq!(code(&t, &w, "trustee remove docs wendy"), 409);
    // Non-members do not see the circle; sysadmin lists all, cannot manage.
    let m = t.login("max");
    assert_eq!(code(&t, &m, "circle info docs"), 404);
    assert_eq!(code(&t, &a, "circle info docs"), 200);
    assert_eq!(code(&t, &a, "trustee add docs max"), 403);
    let (_, text) = run(&t, &a, "circle list");
    assert!(text.contains("docs -"), "{text}");
    let (_, text) = run(&t, &m, "circle list");
    assert!(!text.contains("docs"), "{text}");
    assert!(run(&t, &r, "user info").1.contains("circle: docs write"));
    // Removal rotates the epoch.
    let (st, text) = run(&t, &w, "trustee remove docs rita");
    assert_eq!(st, Status::Ok);
    assert!(text.contains("epoch: 2"), "{text}");
    assert_eq!(code(&t, &w, "trustee remove docs rita"), 404);
    assert_eq!(
        code(&t, &w, "circle set-members docs wendy:admin max:read"),
        200
    );
    assert_eq!(
        t.vault.circle_info(&w, "docs").unwrap().trustees,
        vec![
            ("max".into(), TrustLevel::Read),
            ("wendy".into(), TrustLevel::Admin)
        ]
    );
    assert_eq!(
        code(&t, &w, "circle set-members docs max:read"),
        409,
        "needs an admin"
    );
    assert_eq!(code(&t, &w, "circle rekey docs"), 200);
    assert_eq!(code(&t, &w, "circle delete docs"), 200);
    assert_eq!(code(&t, &w, "circle info docs"), 404);
}

#[test]
fn user_delete_rekeys_and_respects_last_admin() {
    let t = TempStore::new();
    let a = t.admin();
    let w = t.user("wendy");
    t.user("rita");
    assert_eq!(code(&t, &w, "circle create docs"), 200);
    assert_eq!(code(&t, &w, "trustee add docs rita"), 200);
    assert_eq!(code(&t, &a, "user delete wendy"), 409, "last admin of docs");
    assert_eq!(code(&t, &w, "trustee set docs rita --level admin"), 200);
    assert_eq!(code(&t, &a, "user delete wendy"), 200);
    let r = t.login("rita");
    let info = t.vault.circle_info(&r, "docs").unwrap();
    assert_eq!(info.epoch, Epoch(2));
    assert_eq!(info.trustees, vec![("rita".into(), TrustLevel::Admin)]);
}

#[test]
fn kdf_row_with_absurd_params_is_refused_quickly() {
    let t = TempStore::new();
    t.user("bob");
    let c = Connection::open(t.db()).unwrap();
    c.execute(
        "UPDATE accounts SET kdf_m = 4294967295 WHERE name = 'bob'",
        [],
    )
    .unwrap();
    let t0 = std::time::Instant::now();
    let e = t.vault.unlock("bob", &pass("bob-pw")).unwrap_err();
    assert_eq!(e.kind, ErrorKind::KdfParamsOutOfRange);
    assert_eq!(e.status(), Status::Internal);
    assert!(t0.elapsed().as_millis() < 2000);
    c.execute(
        "UPDATE accounts SET kdf_m = 19456, kdf_t = 1 WHERE name = 'bob'",
        [],
    )
    .unwrap();
    assert_eq!(
        t.vault.unlock("bob", &pass("bob-pw")).unwrap_err().kind,
        ErrorKind::KdfParamsOutOfRange,
        "below the floor"
    );
}

#[test]
fn passphrase_change_touches_only_that_account() {
    let t = TempStore::new();
    let bob = t.user("bob");
    t.user("carl");
    let a = t.admin();
    assert_eq!(code(&t, &bob, "circle create b"), 200);
    assert_eq!(code(&t, &bob, "trustee add b carl"), 200);
    assert_eq!(
        code(&t, &a, "user modify bob --may-change-password true"),
        200
    );
    let before = dump(&t);
    t.vault.user_passwd(&bob, &pass("bob-new")).unwrap();
    let after = dump(&t);
    let changed: Vec<_> = before.iter().filter(|r| !after.contains(r)).collect();
    assert_eq!(
        changed.len(),
        1,
        "exactly bob's account row changed: {changed:?}"
    );
    assert_eq!(changed[0].0, "accounts");
    assert!(changed[0].1.contains("Text(\"bob\")"));
    assert_eq!(before.len(), after.len());
    assert_eq!(
        t.vault.unlock("bob", &pass("bob-pw")).unwrap_err().status(),
        Status::Unauthorized
    );
    let bob2 = t.vault.unlock("bob", &pass("bob-new")).unwrap();
    assert_eq!(t.vault.circle_info(&bob2, "b").unwrap().trustees.len(), 2);
}

#[test]
fn admin_reset_gives_new_keys_and_trustees_heal_wraps() {
    let t = TempStore::new();
    let a = t.admin();
    let w = t.user("wendy");
    t.user("rita");
    assert_eq!(code(&t, &w, "circle create docs"), 200);
    assert_eq!(code(&t, &w, "trustee add docs rita"), 200);
    let pf = t.dir.path().join("reset");
    std::fs::write(&pf, "rita-reset").unwrap();
    assert_eq!(
        code(
            &t,
            &a,
            &format!("user modify rita --new-passphrase-file {}", pf.display())
        ),
        200
    );
    let rita = t.vault.unlock("rita", &pass("rita-reset")).unwrap();
    assert!(t.vault.my_circles(&rita).unwrap().len() == 1);
    // Her old wraps are gone until another trustee's session heals them.
    let c = Connection::open(t.db()).unwrap();
    let n: i64 = c.query_row("SELECT COUNT(*) FROM circle_keys k JOIN accounts a ON a.id = k.account_id WHERE a.name = 'rita'", [], |r| r.get(0)).unwrap();
    assert_eq!(n, 0);
    let _w = t.login("wendy");
    let n: i64 = c.query_row("SELECT COUNT(*) FROM circle_keys k JOIN accounts a ON a.id = k.account_id WHERE a.name = 'rita'", [], |r| r.get(0)).unwrap();
    assert_eq!(n, 1);
}

#[cfg(feature = "test-hooks")]
#[test]
fn removed_trustee_cannot_unwrap_new_epoch() {
    let t = TempStore::new();
    let w = t.user("wendy");
    let bob = t.user("bob");
    assert_eq!(code(&t, &w, "circle create docs"), 200);
    assert_eq!(code(&t, &w, "trustee add docs bob"), 200);
    let bob = {
        drop(bob);
        t.login("bob")
    };
    let _ = t.vault.circle_info(&bob, "docs").unwrap();
    // Load bob's circle keys into the session, then capture everything.
    let row = t.vault.my_circles(&bob).unwrap().remove(0).0;
    t.vault
        .store()
        .read(|tx| t.vault.circle_keys(tx, &bob, &row))
        .unwrap();
    let captured = bob.export_keys();
    assert_eq!(captured.circles.len(), 1);
    assert_eq!(code(&t, &w, "trustee remove docs bob"), 200);
    let c = Connection::open(t.db()).unwrap();
    let rows: Vec<(i64, i64, i64, Vec<u8>)> = c
        .prepare("SELECT circle_id, epoch, account_id, wrapped FROM circle_keys WHERE epoch = 2")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(rows.len(), 1, "new epoch wrapped to wendy only");
    let bob_kp = KeyPair::from_secret(Key32::from_bytes(captured.secret));
    for (cid, e, acct, wrapped) in &rows {
        for try_acct in [*acct, bob.account.0] {
            let ctx = aad::circle_key(CircleId(*cid), Epoch(*e as u32), AccountId(try_acct));
            assert!(bob_kp.unwrap_key(&ctx, wrapped).is_err());
        }
    }
    let left: i64 = c
        .query_row(
            "SELECT COUNT(*) FROM circle_keys WHERE account_id = ?1",
            [bob.account.0],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(left, 0, "removed account keeps no wraps");
    // The remaining trustee unwraps the new epoch.
    let w2 = t.login("wendy");
    let row = t.vault.my_circles(&w2).unwrap().remove(0).0;
    let keys = t
        .vault
        .store()
        .read(|tx| t.vault.circle_keys(tx, &w2, &row))
        .unwrap();
    assert_eq!(keys.current, Epoch(2));
    assert!(
        !keys.epochs.contains_key(&Epoch(1)) && keys.epochs.contains_key(&Epoch(2)),
        "the old epoch's keys are destroyed by the removal"
    );
    assert_ne!(
        keys.epoch(Epoch(2)).unwrap().ck.expose(),
        &captured.circles[0].2
    );
}

#[cfg(feature = "test-hooks")]
#[test]
fn nothing_secret_at_rest() {
    let t = TempStore::new();
    let a = t.admin();
    let pf = t.dir.path().join("m.pw");
    let markers = ["MARKER-PASS-7f3a91c2", "MARKER-PASS-b81de044"];
    let mut sessions = Vec::new();
    for (i, m) in markers.iter().enumerate() {
        std::fs::write(&pf, m).unwrap();
        assert_eq!(
            code(
                &t,
                &a,
                &format!("user create u{i} --new-passphrase-file {}", pf.display())
            ),
            200
        );
        sessions.push(t.vault.unlock(&format!("u{i}"), &pass(m)).unwrap());
    }
    std::fs::remove_file(&pf).unwrap();
    let circle = "MARKER-CIRCLE-55aa01";
    assert_eq!(
        code(&t, &sessions[0], &format!("circle create {circle}")),
        200
    );
    assert_eq!(
        code(&t, &sessions[0], "trustee add MARKER-CIRCLE-55aa01 u1"),
        200
    );
    let mut secrets: Vec<Vec<u8>> = Vec::new();
    for s in &sessions {
        for (row, _, _) in t.vault.my_circles(s).unwrap() {
            t.vault
                .store()
                .read(|tx| t.vault.circle_keys(tx, s, &row))
                .unwrap();
        }
        let k = s.export_keys();
        secrets.push(k.secret.to_vec());
        secrets.push(k.dir_key.to_vec());
        secrets.extend(k.circles.iter().map(|c| c.2.to_vec()));
    }
    assert!(secrets.len() >= 6);
    let check = |when: &str| {
        for m in markers
            .iter()
            .map(|m| m.as_bytes())
            .chain([circle.as_bytes()])
        {
            assert!(
                util::scan(&t.store(), m).is_empty(),
                "{when}: {} found",
                String::from_utf8_lossy(m)
            );
        }
        for (p, bytes) in util::all_files(&t.store()) {
            for s in &secrets {
                assert!(
                    !util::contains(&bytes, s),
                    "{when}: a raw key found in {}",
                    p.display()
                );
            }
        }
    };
    check("with the store open");
    t.vault.store().checkpoint().unwrap();
    check("after a checkpoint");
}

#[test]
fn parser_errors_map_to_400_and_406() {
    for (line, want) in [
        ("", Status::NotAcceptable),
        ("circle", Status::NotAcceptable),
        ("trustee add", Status::NotAcceptable),
        ("trustee add docs", Status::NotAcceptable),
        ("circle fly", Status::BadRequest),
        ("user create bob --nope", Status::BadRequest),
        ("user create \"unterminated", Status::BadRequest),
    ] {
        let e = parse_line(line).unwrap_err();
        assert_eq!(e.status(), want, "{line:?}");
    }
    assert!(matches!(
        parse_line("circle list").unwrap(),
        Command::CircleList
    ));
}
