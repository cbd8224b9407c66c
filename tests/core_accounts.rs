//! Account commands through the command language (parse + execute as a
//! session): every `user ...` command and each status code it can return.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#[path = "coreutil/mod.rs"]
mod util;

use circlefs::error::ErrorKind;
use util::{TestStore, pass, pass_of};

#[test]
fn unlock_wrong_passphrase_and_unknown_requester_are_401() {
    let t = TestStore::with_users(&["alice"]);
    let e = t.vault.unlock("alice", &pass("not-her-pass")).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unauthorized);
    assert_eq!(e.status().code(), 401);
    let e = t.vault.unlock("nosuch", &pass("whatever")).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unauthorized);
    assert_eq!(e.status().code(), 401);
    // The empty passphrase is just another wrong one.
    assert_eq!(
        t.vault
            .unlock("alice", &pass(""))
            .unwrap_err()
            .status()
            .code(),
        401
    );
    assert_eq!(t.login("alice").name, "alice");
}

#[test]
fn user_create_codes() {
    let t = TestStore::new();
    let f = t.file("bob.pass", "bob-secret\n");
    let line = format!(
        "user create bob --new-passphrase-file {} --email bob@example.org",
        f.display()
    );
    let r = t.expect(&t.admin, &line, 200);
    assert_eq!(r.status_line(), "200 OK: account bob created");
    // One trailing newline of the file is not part of the passphrase.
    assert!(t.vault.unlock("bob", &pass("bob-secret")).is_ok());
    assert_eq!(
        t.vault
            .unlock("bob", &pass("bob-secret\n"))
            .unwrap_err()
            .status()
            .code(),
        401
    );
    // Duplicate.
    let r = t.expect(&t.admin, &line, 409);
    assert!(r.message.contains("already exists"), "{}", r.message);
    // Missing name, missing passphrase.
    t.expect(&t.admin, "user create", 406);
    t.expect(&t.admin, "user create carol", 406);
    // Bad name, bad option, bad e-mail, empty passphrase file, unreadable file.
    let fc = t.file("carol.pass", "c\n");
    t.expect(
        &t.admin,
        &format!("user create -carol --new-passphrase-file {}", fc.display()),
        400,
    );
    t.expect(
        &t.admin,
        &format!("user create 'a b' --new-passphrase-file {}", fc.display()),
        400,
    );
    t.expect(&t.admin, "user create carol --bogus", 400);
    t.expect(
        &t.admin,
        &format!(
            "user create carol --new-passphrase-file {} --email nope",
            fc.display()
        ),
        400,
    );
    let empty = t.file("empty.pass", "\n");
    t.expect(
        &t.admin,
        &format!(
            "user create carol --new-passphrase-file {}",
            empty.display()
        ),
        400,
    );
    t.expect(
        &t.admin,
        "user create carol --new-passphrase-file /nonexistent/file",
        400,
    );
    // Option needing a value without one.
    t.expect(&t.admin, "user create carol --new-passphrase-file", 406);
    // None of the failed attempts created carol.
    assert_eq!(
        t.vault
            .unlock("carol", &pass("c"))
            .unwrap_err()
            .status()
            .code(),
        401
    );
    // A plain account may not create accounts.
    let bob = t.vault.unlock("bob", &pass("bob-secret")).unwrap();
    t.expect(
        &bob,
        &format!("user create carol --new-passphrase-file {}", fc.display()),
        403,
    );
    // Only the system administrator grants user-admin at creation.
    let fd = t.file("dave.pass", "d\n");
    t.expect(
        &t.admin,
        &format!(
            "user create dave --user-admin --new-passphrase-file {}",
            fd.display()
        ),
        200,
    );
    let dave = t.vault.unlock("dave", &pass("d")).unwrap();
    t.expect(
        &dave,
        &format!(
            "user create erin --user-admin --new-passphrase-file {}",
            fc.display()
        ),
        403,
    );
    t.expect(
        &dave,
        &format!("user create erin --new-passphrase-file {}", fc.display()),
        200,
    );
}

#[test]
fn user_info_codes_and_lines() {
    let t = TestStore::with_users(&["alice", "bob"]);
    t.expect(
        &t.admin,
        "user modify alice --given-name Alice --family-name Liddell --email a@x.org",
        200,
    );
    let alice = t.login("alice");
    t.expect(&alice, "circle create docs", 200);
    let r = t.expect(&alice, "user info", 200);
    assert_eq!(r.status_line(), "200 OK: account alice");
    assert_eq!(
        r.lines,
        vec![
            "name: alice",
            "given-name: Alice",
            "family-name: Liddell",
            "email: a@x.org",
            "verified: false",
            "user-admin: false",
            "may-change-password: true",
            "sysadmin: false",
            "circle: docs admin",
        ]
    );
    assert_eq!(r.data["name"], "alice");
    assert_eq!(r.data["circles"][0]["circle"], "docs");
    assert_eq!(r.data["circles"][0]["level"], "admin");
    // Own info by name too; another's info is forbidden for a plain account.
    t.expect(&alice, "user info alice", 200);
    t.expect(&alice, "user info bob", 403);
    // The administrator reads anyone's; unknown is 404.
    let r = t.expect(&t.admin, "user info bob", 200);
    assert!(!r.lines.iter().any(|l| l.starts_with("circle:")));
    t.expect(&t.admin, "user info nosuch", 404);
    t.expect(&t.admin, "user info a b", 400);
    // The administrator's own record.
    let r = t.expect(&t.admin, "user info", 200);
    assert!(r.lines.contains(&"sysadmin: true".to_string()));
    assert!(r.lines.contains(&"verified: true".to_string()));
}

#[test]
fn user_list_paging_query_and_status() {
    let t = TestStore::with_users(&["alice", "bob", "carol", "dave"]);
    let r = t.expect(&t.admin, "user list", 200);
    assert_eq!(r.status_line(), "200 OK: 5 of 5 accounts");
    assert_eq!(r.lines[0], "total: 5 start: 0 count: 5");
    let names: Vec<&str> = r.lines[1..]
        .iter()
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    assert_eq!(names, ["admin", "alice", "bob", "carol", "dave"]);
    assert_eq!(
        r.lines[1],
        "admin verified,sysadmin,user-admin,may-change-password"
    );
    assert_eq!(r.lines[2], "alice unverified,may-change-password");

    let r = t.expect(&t.admin, "user list --start 1 --count 2", 200);
    assert_eq!(
        r.lines,
        vec![
            "total: 5 start: 1 count: 2",
            "alice unverified,may-change-password",
            "bob unverified,may-change-password"
        ]
    );
    assert_eq!(r.data["total"], 5);
    assert_eq!(r.data["start"], 1);
    assert_eq!(r.data["count"], 2);
    assert_eq!(r.data["accounts"][0]["name"], "alice");
    assert_eq!(r.data["accounts"][1]["name"], "bob");

    // Past the end: empty page, total still counted.
    let r = t.expect(&t.admin, "user list --start 10 --count 3", 200);
    assert_eq!(r.lines, vec!["total: 5 start: 10 count: 0"]);
    let r = t.expect(&t.admin, "user list --count 0", 200);
    assert_eq!(r.lines, vec!["total: 5 start: 0 count: 0"]);

    // Query: substring of the name, case-insensitive; of person fields too.
    let r = t.expect(&t.admin, "user list --query AR", 200);
    assert_eq!(
        r.lines,
        vec![
            "total: 1 start: 0 count: 1",
            "carol unverified,may-change-password"
        ]
    );
    t.expect(&t.admin, "user modify dave --email dave@Example.org", 200);
    let r = t.expect(&t.admin, "user list --query example", 200);
    assert_eq!(r.data["total"], 1);
    assert_eq!(r.data["accounts"][0]["name"], "dave");
    assert_eq!(r.data["accounts"][0]["email"], "dave@Example.org");
    // LIKE wildcards in the query are literal.
    let r = t.expect(&t.admin, "user list --query %", 200);
    assert_eq!(r.data["total"], 0);
    let r = t.expect(&t.admin, "user list --query _", 200);
    assert_eq!(r.data["total"], 0);
    // Query combined with paging.
    let r = t.expect(&t.admin, "user list --query a --start 1 --count 1", 200);
    // Matches: admin, alice, carol, dave (dave@Example.org) -> total 4; page is alice.
    assert_eq!(
        r.lines,
        vec![
            "total: 4 start: 1 count: 1",
            "alice unverified,may-change-password"
        ]
    );

    // Status filter.
    let r = t.expect(&t.admin, "user list --status verified", 200);
    assert_eq!(
        r.lines,
        vec![
            "total: 1 start: 0 count: 1",
            "admin verified,sysadmin,user-admin,may-change-password"
        ]
    );
    t.expect(&t.admin, "user verify bob", 200);
    let r = t.expect(&t.admin, "user list --status verified", 200);
    assert_eq!(r.data["total"], 2);
    assert_eq!(r.lines[2], "bob verified,may-change-password");
    t.expect(&t.admin, "user list --status any", 200);

    // Bad values.
    t.expect(&t.admin, "user list --status maybe", 400);
    t.expect(&t.admin, "user list --start -1", 400);
    t.expect(&t.admin, "user list --count x", 400);
    t.expect(&t.admin, "user list extra", 400);
    t.expect(&t.admin, "user list --start", 406);
    // Plain accounts may not list accounts.
    t.expect(&t.login("alice"), "user list", 403);
}

#[test]
fn user_verify_codes() {
    let t = TestStore::with_users(&["alice", "bob"]);
    t.expect(&t.admin, "user verify alice", 200);
    let r = t.expect(&t.admin, "user info alice", 200);
    assert!(r.lines.contains(&"verified: true".to_string()));
    t.expect(&t.admin, "user verify nosuch", 404);
    t.expect(&t.admin, "user verify", 406);
    t.expect(&t.login("alice"), "user verify bob", 403);
}

#[test]
fn user_delete_codes_and_rekey() {
    let t = TestStore::with_users(&["alice", "bob", "carol"]);
    let alice = t.login("alice");
    t.expect(&alice, "circle create docs", 200);
    t.expect(&alice, "trustee add docs bob", 200);
    t.expect(&t.login("bob"), "user delete carol", 403);
    t.expect(&t.admin, "user delete nosuch", 404);
    t.expect(&t.admin, "user delete", 406);
    t.expect(&t.admin, "user delete admin", 403);
    t.expect(&t.admin, "user delete bob", 200);
    assert_eq!(
        t.vault
            .unlock("bob", &pass(&pass_of("bob")))
            .unwrap_err()
            .status()
            .code(),
        401
    );
    t.expect(&t.admin, "user delete bob", 404);
    // bob's removal rotated docs and left no row of his.
    let r = t.expect(&alice, "circle info docs", 200);
    assert_eq!(
        r.lines,
        vec!["circle: docs", "epoch: 2", "trustee: alice admin"]
    );
    let c = t.raw();
    let n: i64 = c
        .query_row("SELECT COUNT(*) FROM circle_keys k JOIN accounts a ON a.id = k.account_id WHERE a.name = 'bob'", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 0);
    let n: i64 = c
        .query_row(
            "SELECT COUNT(*) FROM circle_keys WHERE account_id NOT IN (SELECT id FROM accounts)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(n, 0);
    // The last admin of a circle cannot be deleted (it would orphan the circle).
    let r = t.expect(&t.admin, "trustee add docs carol", 403); // admin is no trustee of docs
    assert!(r.message.contains("not a trustee"), "{}", r.message);
    t.expect(&alice, "trustee add docs carol", 200);
    let r = t.expect(&t.admin, "user delete alice", 409);
    assert!(r.message.contains("last admin"), "{}", r.message);
    // A user-admin cannot delete itself.
    t.expect(&t.admin, "user modify carol --user-admin true", 200);
    let carol = t.login("carol");
    t.expect(&carol, "user delete carol", 403);
    // A session of a deleted account is refused with 401.
    t.expect(&alice, "trustee set docs carol --level admin", 200);
    t.expect(&t.admin, "user delete alice", 200);
    let r = t.expect(&alice, "circle list", 401);
    assert!(r.message.contains("no longer exists"), "{}", r.message);
}

#[test]
fn user_modify_codes() {
    let t = TestStore::with_users(&["alice", "bob", "carol"]);
    let alice = t.login("alice");
    // Own person fields: allowed.
    t.expect(
        &alice,
        "user modify alice --given-name Al --email al@x.org",
        200,
    );
    let r = t.expect(&alice, "user info", 200);
    assert!(r.lines.contains(&"given-name: Al".to_string()));
    assert!(r.lines.contains(&"email: al@x.org".to_string()));
    // Clearing with "".
    t.expect(&alice, "user modify alice --given-name \"\"", 200);
    let r = t.expect(&alice, "user info", 200);
    assert!(r.lines.contains(&"given-name: ".to_string()));
    assert_eq!(r.data["given_name"], serde_json::Value::Null);
    // Own flags, others' fields: needs user-admin.
    t.expect(&alice, "user modify alice --may-change-password false", 403);
    t.expect(&alice, "user modify bob --given-name B", 403);
    // Bad values.
    t.expect(&t.admin, "user modify bob --may-change-password maybe", 400);
    t.expect(&t.admin, "user modify bob --email bad", 400);
    t.expect(&t.admin, "user modify nosuch --given-name X", 404);
    t.expect(&t.admin, "user modify", 406);
    // Flags by the administrator.
    t.expect(&t.admin, "user modify bob --may-change-password false", 200);
    let r = t.expect(&t.admin, "user info bob", 200);
    assert!(r.lines.contains(&"may-change-password: false".to_string()));
    // user-admin is granted only by the system administrator.
    t.expect(&t.admin, "user modify carol --user-admin true", 200);
    let carol = t.login("carol");
    t.expect(&carol, "user modify bob --given-name Bobby", 200);
    t.expect(&carol, "user modify bob --user-admin true", 403);
    // A user-admin cannot touch the system administrator.
    t.expect(&carol, "user modify admin --given-name Root", 403);
    let f = t.file("x.pass", "taken-over\n");
    t.expect(
        &carol,
        &format!("user modify admin --new-passphrase-file {}", f.display()),
        403,
    );
    assert_eq!(
        t.vault
            .unlock("admin", &pass("taken-over"))
            .unwrap_err()
            .status()
            .code(),
        401
    );
    // A plain account changes its own passphrase with `user passwd`, not `user modify`.
    t.expect(
        &alice,
        &format!("user modify alice --new-passphrase-file {}", f.display()),
        403,
    );
}

#[test]
fn user_passwd_codes() {
    let t = TestStore::with_users(&["alice", "bob"]);
    let alice = t.login("alice");
    let f = t.file("new.pass", "alice-new\n");
    let r = t.expect(
        &alice,
        &format!("user passwd --new-passphrase-file {}", f.display()),
        200,
    );
    assert_eq!(r.status_line(), "200 OK: passphrase changed");
    assert_eq!(
        t.vault
            .unlock("alice", &pass(&pass_of("alice")))
            .unwrap_err()
            .status()
            .code(),
        401
    );
    assert!(t.vault.unlock("alice", &pass("alice-new")).is_ok());
    t.expect(&alice, "user passwd", 406);
    t.expect(&alice, "user passwd extra", 400);
    let empty = t.file("empty.pass", "");
    t.expect(
        &alice,
        &format!("user passwd --new-passphrase-file {}", empty.display()),
        400,
    );
    let long = t.file("long.pass", &"x".repeat(1025));
    t.expect(
        &alice,
        &format!("user passwd --new-passphrase-file {}", long.display()),
        400,
    );
    // An account without may-change-password is refused.
    t.expect(&t.admin, "user modify bob --may-change-password false", 200);
    let bob = t.login("bob");
    t.expect(
        &bob,
        &format!("user passwd --new-passphrase-file {}", f.display()),
        403,
    );
    assert!(t.vault.unlock("bob", &pass(&pass_of("bob"))).is_ok());
}

#[test]
fn admin_passphrase_reset_gives_new_key_pair_and_heals_wraps() {
    let t = TestStore::with_users(&["alice", "bob"]);
    let alice = t.login("alice");
    t.expect(&alice, "circle create docs", 200);
    t.expect(&alice, "trustee add docs bob --level read", 200);
    let c = t.raw();
    let bob_id: i64 = c
        .query_row("SELECT id FROM accounts WHERE name = 'bob'", [], |r| {
            r.get(0)
        })
        .unwrap();
    let pk_before: Vec<u8> = c
        .query_row(
            "SELECT public_key FROM accounts WHERE id = ?1",
            [bob_id],
            |r| r.get(0),
        )
        .unwrap();
    let wraps = |c: &rusqlite::Connection| -> i64 {
        c.query_row(
            "SELECT COUNT(*) FROM circle_keys WHERE account_id = ?1",
            [bob_id],
            |r| r.get(0),
        )
        .unwrap()
    };
    assert_eq!(wraps(&c), 1);

    let f = t.file("reset.pass", "bob-reset\n");
    t.expect(
        &t.admin,
        &format!("user modify bob --new-passphrase-file {}", f.display()),
        200,
    );
    let pk_after: Vec<u8> = c
        .query_row(
            "SELECT public_key FROM accounts WHERE id = ?1",
            [bob_id],
            |r| r.get(0),
        )
        .unwrap();
    assert_ne!(pk_before, pk_after, "a reset gives a new key pair");
    assert_eq!(wraps(&c), 0, "old wraps were for the old key pair");
    assert_eq!(
        t.vault
            .unlock("bob", &pass(&pass_of("bob")))
            .unwrap_err()
            .status()
            .code(),
        401
    );

    // bob is still a trustee but holds no key until another trustee's session heals.
    let bob = t.vault.unlock("bob", &pass("bob-reset")).unwrap();
    let (row, name, level) = t.vault.my_circles(&bob).unwrap().remove(0);
    assert_eq!((name.0.as_str(), level.as_str()), ("docs", "read"));
    let e = t
        .vault
        .store()
        .read(|tx| t.vault.circle_keys(tx, &bob, &row).map(|_| ()))
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Forbidden);
    // alice's next session re-wraps docs' key to bob's new public key.
    let alice2 = t.login("alice");
    assert_eq!(wraps(&c), 1);
    let kb = t
        .vault
        .store()
        .read(|tx| t.vault.circle_keys(tx, &bob, &row))
        .unwrap();
    let ka = t
        .vault
        .store()
        .read(|tx| t.vault.circle_keys(tx, &alice2, &row))
        .unwrap();
    assert_eq!(kb.current, ka.current);
    assert_eq!(kb.cur().unwrap().ck, ka.cur().unwrap().ck);
}
