//! Circle and trustee commands through the command language: every
//! `circle ...` / `trustee ...` command, each status code, data lines, and
//! the key rows each change leaves behind.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#[path = "coreutil/mod.rs"]
mod util;

use circlefs::control::parse::HELP;
use util::TestStore;

/// Epochs for which `account` holds a wrapped key of any circle.
fn wrap_epochs(t: &TestStore, account: &str) -> Vec<i64> {
    let c = t.raw();
    let mut st = c
        .prepare("SELECT k.epoch FROM circle_keys k JOIN accounts a ON a.id = k.account_id WHERE a.name = ?1 ORDER BY k.epoch")
        .unwrap();
    st.query_map([account], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// Trustee lines of `circle info` as seen by `who`.
fn info(t: &TestStore, who: &circlefs::vault::Session, circle: &str) -> Vec<String> {
    t.expect(who, &format!("circle info {}", quote(circle)), 200)
        .lines
}

fn quote(s: &str) -> String {
    format!("'{s}'")
}

/// docs: alice admin, bob write, carol read; dave is no trustee.
fn docs() -> TestStore {
    let t = TestStore::with_users(&["alice", "bob", "carol", "dave"]);
    let alice = t.login("alice");
    t.expect(&alice, "circle create docs", 200);
    t.expect(&alice, "trustee add docs bob", 200);
    t.expect(&alice, "trustee add docs carol --level read", 200);
    t
}

#[test]
fn help_and_unknown_commands() {
    let t = TestStore::new();
    let r = t.expect(&t.admin, "help", 200);
    assert_eq!(
        r.lines,
        HELP.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    );
    assert_eq!(r.data.as_array().map(|a| a.len()), Some(HELP.len()));
    t.expect(&t.admin, "frobnicate", 400);
    t.expect(&t.admin, "circle fly docs", 400);
    t.expect(&t.admin, "trustee", 406);
    t.expect(&t.admin, "", 406);
    t.expect(&t.admin, "   ", 406);
    t.expect(&t.admin, "circle create 'unterminated", 400);
    t.expect(
        &t.admin,
        &format!("circle create {}", "x".repeat(4100)),
        400,
    );
}

#[test]
fn circle_create_codes() {
    let t = TestStore::with_users(&["alice"]);
    let alice = t.login("alice");
    let r = t.expect(&alice, "circle create docs", 200);
    assert_eq!(r.status_line(), "200 OK: circle docs created");
    let r = t.expect(&alice, "circle create docs", 409);
    assert_eq!(r.status_line(), "409 Conflict: circle docs already exists");
    // Another account creating the same name conflicts too (one namespace per store).
    t.expect(&t.admin, "circle create docs", 409);
    t.expect(&alice, "circle create \"Team Docs\"", 200);
    t.expect(&alice, "circle create", 406);
    t.expect(&alice, "circle create ''", 406);
    t.expect(&alice, "circle create .hidden", 400);
    t.expect(&alice, "circle create a/b", 400);
    t.expect(&alice, "circle create .", 400);
    t.expect(&alice, "circle create a b", 400);
    t.expect(&alice, &format!("circle create {}", "n".repeat(256)), 400);
    let r = t.expect(&alice, "circle list", 200);
    assert_eq!(r.lines, vec!["Team Docs admin", "docs admin"]);
    assert_eq!(
        info(&t, &alice, "Team Docs"),
        vec!["circle: Team Docs", "epoch: 1", "trustee: alice admin"]
    );
    assert_eq!(wrap_epochs(&t, "alice"), vec![1, 1]);
}

#[test]
fn circle_info_and_list_visibility() {
    let t = docs();
    let alice = t.login("alice");
    let dave = t.login("dave");
    let r = t.expect(&t.login("carol"), "circle info docs", 200);
    assert_eq!(
        r.lines,
        vec![
            "circle: docs",
            "epoch: 1",
            "trustee: alice admin",
            "trustee: bob write",
            "trustee: carol read"
        ]
    );
    assert_eq!(r.data["circle"], "docs");
    assert_eq!(r.data["epoch"], 1);
    assert_eq!(r.data["trustees"][2]["name"], "carol");
    assert_eq!(r.data["trustees"][2]["level"], "read");
    // Not a trustee: the circle does not exist for you.
    t.expect(&dave, "circle info docs", 404);
    t.expect(&alice, "circle info nosuch", 404);
    t.expect(&alice, "circle info", 406);
    // Account admins see every circle, with "-" where they are no trustee.
    t.expect(&t.admin, "circle info docs", 200);
    t.expect(&dave, "circle create private", 200);
    let r = t.expect(&t.admin, "circle list", 200);
    assert_eq!(r.status_line(), "200 OK: 2 circles");
    assert_eq!(r.lines, vec!["docs -", "private -"]);
    assert_eq!(r.data[0]["circle"], "docs");
    assert_eq!(r.data[0]["level"], serde_json::Value::Null);
    let r = t.expect(&t.login("bob"), "circle list", 200);
    assert_eq!(r.lines, vec!["docs write"]);
    assert_eq!(r.data[0]["level"], "write");
    let r = t.expect(&dave, "circle list", 200);
    assert_eq!(r.lines, vec!["private admin"]);
    t.expect(&dave, "circle list extra", 400);
}

#[test]
fn trustee_add_codes() {
    let t = docs();
    let alice = t.login("alice");
    let bob = t.login("bob");
    let carol = t.login("carol");
    let dave = t.login("dave");
    t.add_user("erin");
    // A write trustee adding a trustee -> 403; a read trustee too.
    let r = t.expect(&bob, "trustee add docs dave", 403);
    assert!(
        r.message.contains("needs trust level admin"),
        "{}",
        r.message
    );
    t.expect(&carol, "trustee add docs dave", 403);
    // Not a trustee at all: the circle is not found for them.
    t.expect(&dave, "trustee add docs dave", 404);
    // Duplicates.
    let r = t.expect(&alice, "trustee add docs bob", 409);
    assert_eq!(
        r.status_line(),
        "409 Conflict: bob is already a trustee of docs"
    );
    t.expect(&alice, "trustee add docs dave dave", 409);
    // A list with an unknown user adds nobody.
    let r = t.expect(&alice, "trustee add docs dave nosuch", 404);
    assert_eq!(r.status_line(), "404 Not Found: no such account nosuch");
    t.expect(&alice, "trustee add docs dave bob", 409);
    assert_eq!(
        info(&t, &alice, "docs"),
        vec![
            "circle: docs",
            "epoch: 1",
            "trustee: alice admin",
            "trustee: bob write",
            "trustee: carol read"
        ]
    );
    assert!(wrap_epochs(&t, "dave").is_empty());
    // Missing arguments and bad values.
    t.expect(&alice, "trustee add docs", 406);
    t.expect(&alice, "trustee add", 406);
    t.expect(&alice, "trustee add docs dave --level", 406);
    t.expect(&alice, "trustee add docs dave --level owner", 400);
    t.expect(&alice, "trustee add nosuch dave", 404);
    // Success: several at once, with a level.
    let r = t.expect(&alice, "trustee add docs dave erin --level admin", 200);
    assert_eq!(r.status_line(), "200 OK: dave, erin added to docs as admin");
    assert_eq!(wrap_epochs(&t, "dave"), vec![1]);
    assert_eq!(wrap_epochs(&t, "erin"), vec![1]);
    // A new admin may add; after a rekey (old epoch destroyed) a new trustee gets the current one.
    t.expect(&alice, "circle rekey docs", 200);
    t.add_user("frank");
    t.expect(&dave, "trustee add docs frank --level read", 200);
    assert_eq!(wrap_epochs(&t, "frank"), vec![2]);
    let frank = t.login("frank");
    let (row, _, _) = t.vault.my_circles(&frank).unwrap().remove(0);
    let k = t
        .vault
        .store()
        .read(|tx| t.vault.circle_keys(tx, &frank, &row))
        .unwrap();
    assert_eq!(k.epochs.len(), 1);
    // An account admin who is not a trustee cannot add.
    t.expect(&t.admin, "trustee add docs admin", 403);
}

#[test]
fn trustee_remove_codes() {
    let t = docs();
    let alice = t.login("alice");
    let bob = t.login("bob");
    let carol = t.login("carol");
    // Not permitted below admin (except leaving oneself).
    t.expect(&bob, "trustee remove docs carol", 403);
    // Unknown user in the list: nothing changes (bob is still there, same epoch).
    let r = t.expect(&alice, "trustee remove docs bob nosuch", 404);
    assert_eq!(r.status_line(), "404 Not Found: no such account nosuch");
    t.expect(&alice, "trustee remove docs bob dave", 404);
    assert_eq!(
        info(&t, &alice, "docs"),
        vec![
            "circle: docs",
            "epoch: 1",
            "trustee: alice admin",
            "trustee: bob write",
            "trustee: carol read"
        ]
    );
    assert_eq!(wrap_epochs(&t, "bob"), vec![1]);
    t.expect(&alice, "trustee remove docs", 406);
    t.expect(&alice, "trustee remove", 406);
    t.expect(&alice, "trustee remove nosuch bob", 404);
    // The last admin cannot be removed.
    let r = t.expect(&alice, "trustee remove docs alice", 409);
    assert!(r.message.contains("last admin"), "{}", r.message);
    // Removal: new epoch, no wraps left for bob.
    let r = t.expect(&alice, "trustee remove docs bob", 200);
    assert_eq!(
        r.status_line(),
        "200 OK: bob removed from docs; key epoch 2"
    );
    assert_eq!(r.lines, vec!["epoch: 2"]);
    assert_eq!(r.data["epoch"], 2);
    assert!(wrap_epochs(&t, "bob").is_empty());
    assert_eq!(wrap_epochs(&t, "alice"), vec![2]);
    assert_eq!(wrap_epochs(&t, "carol"), vec![2]);
    t.expect(&bob, "circle info docs", 404);
    t.expect(&alice, "trustee remove docs bob", 404);
    // A read trustee may leave.
    let r = t.expect(&carol, "trustee remove docs carol", 200);
    assert_eq!(r.data["epoch"], 3);
    assert!(wrap_epochs(&t, "carol").is_empty());
    // The only trustee cannot leave (delete the circle instead).
    let r = t.expect(&alice, "trustee remove docs alice", 409);
    assert!(r.message.contains("only trustee"), "{}", r.message);
    assert_eq!(
        info(&t, &alice, "docs"),
        vec!["circle: docs", "epoch: 3", "trustee: alice admin"]
    );
}

#[test]
fn trustee_set_codes() {
    let t = docs();
    let alice = t.login("alice");
    let bob = t.login("bob");
    t.expect(&bob, "trustee set docs carol --level write", 403);
    let r = t.expect(&alice, "trustee set docs bob --level admin", 200);
    assert_eq!(r.status_line(), "200 OK: bob is now admin in docs");
    t.expect(&bob, "trustee set docs carol --level write", 200);
    t.expect(&bob, "trustee set docs alice --level read", 200);
    let r = t.expect(&bob, "trustee set docs bob --level read", 409);
    assert!(r.message.contains("last admin"), "{}", r.message);
    t.expect(&bob, "trustee set docs dave --level read", 404);
    t.expect(&bob, "trustee set docs nosuch --level read", 404);
    t.expect(&bob, "trustee set docs carol", 406);
    t.expect(&bob, "trustee set docs --level read", 406);
    t.expect(&bob, "trustee set docs carol x --level read", 400);
    t.expect(&bob, "trustee set docs carol --level boss", 400);
    assert_eq!(
        info(&t, &bob, "docs"),
        vec![
            "circle: docs",
            "epoch: 1",
            "trustee: alice read",
            "trustee: bob admin",
            "trustee: carol write"
        ]
    );
    // alice, now read, has lost admin rights.
    t.expect(&alice, "trustee add docs dave", 403);
    // Changing a level does not rotate keys.
    assert_eq!(wrap_epochs(&t, "alice"), vec![1]);
}

#[test]
fn circle_set_members_codes() {
    let t = docs();
    let alice = t.login("alice");
    t.add_user("erin");
    t.expect(&t.login("bob"), "circle set-members docs bob:admin", 403);
    t.expect(&alice, "circle set-members docs bob carol", 409);
    t.expect(&alice, "circle set-members docs alice:admin nosuch", 404);
    t.expect(
        &alice,
        "circle set-members docs alice:admin bob bob:read",
        409,
    );
    t.expect(&alice, "circle set-members docs alice:admin bob:boss", 400);
    t.expect(&alice, "circle set-members docs", 406);
    t.expect(&alice, "circle set-members", 406);
    t.expect(&alice, "circle set-members nosuch alice:admin", 404);
    assert_eq!(info(&t, &alice, "docs")[1], "epoch: 1");
    // Levels change, dave and erin join, carol leaves -> one rekey.
    let r = t.expect(
        &alice,
        "circle set-members docs alice:admin bob:read dave erin:admin",
        200,
    );
    assert_eq!(r.status_line(), "200 OK: circle docs now has 4 trustees");
    assert_eq!(
        info(&t, &alice, "docs"),
        vec![
            "circle: docs",
            "epoch: 2",
            "trustee: alice admin",
            "trustee: bob read",
            "trustee: dave write",
            "trustee: erin admin"
        ]
    );
    assert!(wrap_epochs(&t, "carol").is_empty());
    assert_eq!(wrap_epochs(&t, "dave"), vec![2]);
    assert_eq!(wrap_epochs(&t, "bob"), vec![2]);
    // No removal: no rekey.
    t.expect(
        &alice,
        "circle set-members docs alice:admin bob:write dave erin:admin",
        200,
    );
    assert_eq!(info(&t, &alice, "docs")[1], "epoch: 2");
}

#[test]
fn circle_rekey_codes() {
    let t = docs();
    let alice = t.login("alice");
    t.expect(&t.login("bob"), "circle rekey docs", 403);
    t.expect(&t.login("dave"), "circle rekey docs", 404);
    t.expect(&alice, "circle rekey", 406);
    let before = {
        let (row, _, _) = t.vault.my_circles(&alice).unwrap().remove(0);
        let k = t
            .vault
            .store()
            .read(|tx| t.vault.circle_keys(tx, &alice, &row))
            .unwrap();
        k.epoch(circlefs::ids::Epoch(1)).unwrap().ck.clone()
    };
    let r = t.expect(&alice, "circle rekey docs", 200);
    assert_eq!(r.status_line(), "200 OK: circle docs is at key epoch 2");
    assert_eq!(r.lines, vec!["epoch: 2"]);
    assert_eq!(r.data["epoch"], 2);
    for who in ["alice", "bob", "carol"] {
        assert_eq!(wrap_epochs(&t, who), vec![2], "{who}");
    }
    // Keys of the new epoch are distinct and shared by every trustee.
    let (row, _, _) = t.vault.my_circles(&alice).unwrap().remove(0);
    let carol = t.login("carol");
    let ka = t
        .vault
        .store()
        .read(|tx| t.vault.circle_keys(tx, &alice, &row))
        .unwrap();
    let kc = t
        .vault
        .store()
        .read(|tx| t.vault.circle_keys(tx, &carol, &row))
        .unwrap();
    assert_eq!(ka.current.0, 2);
    assert_eq!(
        ka.epoch(circlefs::ids::Epoch(2)).unwrap().ck,
        kc.epoch(circlefs::ids::Epoch(2)).unwrap().ck
    );
    assert_ne!(before, ka.epoch(circlefs::ids::Epoch(2)).unwrap().ck);
    assert!(
        ka.epoch(circlefs::ids::Epoch(1)).is_err(),
        "the old epoch's key is destroyed"
    );
}

#[test]
fn circle_delete_codes() {
    let t = docs();
    let alice = t.login("alice");
    t.add_user("ua");
    t.expect(&t.admin, "user modify ua --user-admin true", 200);
    t.expect(&t.login("bob"), "circle delete docs", 403);
    t.expect(&t.login("carol"), "circle delete docs", 403);
    t.expect(&t.login("dave"), "circle delete docs", 404);
    t.expect(&t.login("ua"), "circle delete docs", 403);
    t.expect(&alice, "circle delete", 406);
    t.expect(&alice, "circle delete nosuch", 404);
    let r = t.expect(&alice, "circle delete docs", 200);
    assert_eq!(r.status_line(), "200 OK: circle docs deleted");
    t.expect(&alice, "circle info docs", 404);
    t.expect(&alice, "circle delete docs", 404);
    let c = t.raw();
    for table in ["circles", "trustees", "circle_keys", "inodes", "dirents"] {
        assert_eq!(util::count(&c, table), 0, "{table}");
    }
    // The name is free again; the system administrator may delete any circle.
    t.expect(&alice, "circle create docs", 200);
    t.expect(&t.admin, "circle delete docs", 200);
    assert_eq!(util::count(&c, "circles"), 0);
}
