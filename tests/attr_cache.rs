//! The attribute cache below FUSE: after every kind of change, made by
//! this workspace or on another connection, `getattr` answers exactly what
//! a reader of the store sees (link counts included), and a trustee who is
//! removed gets nothing from what was cached for them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod util;

use std::sync::Arc;

use circlefs::error::ErrorKind;
use circlefs::ids::InodeId;
use circlefs::vault::Vault;
use circlefs::vault::workspace::{Caller, NewNode, RenameMode, Workspace, XattrMode};
use util::TempStore;

const ME: Caller = Caller { uid: 0, gid: 0 };

/// Bob's workspace, on a connection of its own: every commit of alice's
/// moves its data version, so it reads the store afresh.
fn bob_workspace(t: &TempStore) -> Workspace {
    bob_on_own_vault(t).1
}

/// Bob's workspace and the vault (connection) it runs on.
fn bob_on_own_vault(t: &TempStore) -> (Arc<Vault>, Workspace) {
    let vb = Arc::new(Vault::open(&t.store()).unwrap());
    let bob = Arc::new(vb.unlock("bob", &util::pass("bob-pw")).unwrap());
    (vb.clone(), Workspace::new(vb, bob, false).unwrap())
}

/// `getattr` of `ino` is refused as the store refuses it: not found or
/// forbidden (debug builds check every cache hit against the store and
/// answer a stale one with an internal error, which fails here too).
fn refused(w: &Workspace, ino: InodeId, why: &str) {
    match w.getattr(ino) {
        Err(e) => assert!(
            matches!(e.kind, ErrorKind::NotFound | ErrorKind::Forbidden),
            "{why}: {e}"
        ),
        Ok(n) => panic!("{why}: still answered {n:?}"),
    }
}

/// Alice's answer for every inode of `inos` (asked twice, so the second
/// comes from her cache) equals bob's, read from the store.
fn agree(wa: &Workspace, wb: &Workspace, inos: &[InodeId], step: &str) {
    for &ino in inos {
        let a1 = wa.getattr(ino).unwrap();
        let a2 = wa.getattr(ino).unwrap();
        let b = wb.getattr(ino).unwrap();
        assert_eq!(
            (&a1.attrs, a1.nlink),
            (&b.attrs, b.nlink),
            "{step}: inode {ino}"
        );
        assert_eq!((&a2.attrs, a2.nlink), (&b.attrs, b.nlink), "{step}: again");
    }
}

#[test]
fn cached_attributes_and_link_counts_follow_every_change() {
    let t = TempStore::new();
    let (wa, root) = t.alice_alone();
    let wb = bob_workspace(&t);

    let d = wa
        .create_node(root, b"d", 0o755, NewNode::Dir, ME)
        .unwrap()
        .ino;
    let f = wa
        .create_node(d, b"f", 0o644, NewNode::File, ME)
        .unwrap()
        .ino;
    agree(&wa, &wb, &[root, d, f], "mkdir and create");

    wa.open(f, true, false).unwrap();
    wa.write(f, 0, b"hello").unwrap();
    wa.release(f).unwrap();
    agree(&wa, &wb, &[root, d, f], "write");

    wa.link(f, root, b"g").unwrap();
    assert_eq!(wa.getattr(f).unwrap().nlink, 2);
    agree(&wa, &wb, &[root, d, f], "link");

    let e = wa
        .create_node(d, b"e", 0o700, NewNode::Dir, ME)
        .unwrap()
        .ino;
    assert_eq!(wa.getattr(d).unwrap().nlink, 3);
    agree(&wa, &wb, &[root, d, e, f], "mkdir inside");

    wa.rename(d, b"e", root, b"e", RenameMode::Replace).unwrap();
    assert_eq!(wa.getattr(d).unwrap().nlink, 2);
    agree(&wa, &wb, &[root, d, e, f], "rename of a directory");

    wa.setattr(f, &util::set_mode(0o600), ME).unwrap();
    agree(&wa, &wb, &[root, d, f], "chmod");

    wa.truncate(f, 2).unwrap();
    agree(&wa, &wb, &[d, f], "truncate");

    wa.setxattr(f, b"user.k", b"v", XattrMode::Any).unwrap();
    agree(&wa, &wb, &[f], "setxattr");

    wa.unlink(root, b"g", false).unwrap();
    assert_eq!(wa.getattr(f).unwrap().nlink, 1);
    agree(&wa, &wb, &[root, d, f], "unlink of a second name");

    wa.rename(d, b"f", root, b"e2", RenameMode::Replace)
        .unwrap();
    agree(&wa, &wb, &[root, d, f], "rename of a file");

    wa.unlink(root, b"e", true).unwrap();
    assert_eq!(wa.getattr(root).unwrap().nlink, 3, "root holds d only");
    agree(&wa, &wb, &[root, d, f], "rmdir");
    refused(&wa, e, "a removed directory is gone");
}

#[test]
fn another_connections_change_is_seen_at_once() {
    let t = TempStore::new();
    let (wa, root) = t.alice_alone();
    let wb = bob_workspace(&t);
    let f = wa
        .create_node(root, b"f", 0o644, NewNode::File, ME)
        .unwrap()
        .ino;
    assert_eq!(wa.getattr(f).unwrap().attrs.mode & 0o777, 0o644);
    wb.setattr(f, &util::set_mode(0o640), ME).unwrap();
    assert_eq!(wa.getattr(f).unwrap().attrs.mode & 0o777, 0o640);
    wb.link(f, root, b"g").unwrap();
    assert_eq!(wa.getattr(f).unwrap().nlink, 2);
}

/// Alice's workspace and circle root, bob's workspace on his own vault,
/// and file `f` (made by alice) whose attributes bob has cached.
struct BobCached {
    _wa: Workspace,
    root: InodeId,
    vb: Arc<Vault>,
    wb: Workspace,
    f: InodeId,
}

fn bob_cached(t: &TempStore) -> BobCached {
    let (wa, root) = t.alice_alone();
    let (vb, wb) = bob_on_own_vault(t);
    let f = wa
        .create_node(root, b"f", 0o644, NewNode::File, ME)
        .unwrap()
        .ino;
    wb.getattr(f).unwrap();
    wb.getattr(f).unwrap();
    BobCached {
        _wa: wa,
        root,
        vb,
        wb,
        f,
    }
}

#[test]
fn a_removed_trustee_gets_nothing_from_the_cache() {
    let t = TempStore::new();
    let b = bob_cached(&t);
    let out = t.admin_cli("alice", &["trustee", "remove", "s", "bob"]);
    assert!(util::stdout(&out).starts_with("200"), "{out:?}");
    refused(&b.wb, b.f, "bob was removed");
    refused(&b.wb, b.root, "bob was removed");
}

#[test]
fn a_removal_made_on_the_mounts_own_connection_empties_the_cache() {
    // As when the control file of bob's own mount runs alice's command:
    // no other connection commits, so only the store's report of the
    // trustee change can make bob's cache forget.
    let t = TempStore::new();
    let b = bob_cached(&t);
    let alice = b.vb.unlock("alice", &util::pass("alice-pw")).unwrap();
    b.vb.trustee_remove(&alice, "s", &["bob".to_string()])
        .unwrap();
    refused(&b.wb, b.f, "bob was removed");
}

#[test]
fn a_circle_deleted_on_the_mounts_own_connection_leaves_nothing_cached() {
    // The deletion removes the inodes by cascade, with no record written:
    // only the store's report of the circle change empties the cache.
    let t = TempStore::new();
    let b = bob_cached(&t);
    let alice = b.vb.unlock("alice", &util::pass("alice-pw")).unwrap();
    b.vb.circle_delete(&alice, "s").unwrap();
    refused(&b.wb, b.f, "the file is gone");
    refused(&b.wb, b.root, "and its circle");
}

#[test]
fn two_workspaces_on_one_connection_both_follow_its_writes() {
    // Each workspace's cache is told of the connection's writes: the
    // second one's listener does not replace the first one's.
    let t = TempStore::new();
    let (wa, root) = t.alice_alone();
    let wa2 = Workspace::new(t.vault.clone(), Arc::new(t.login("alice")), false).unwrap();
    let f = wa
        .create_node(root, b"f", 0o644, NewNode::File, ME)
        .unwrap()
        .ino;
    wa.getattr(f).unwrap();
    wa.getattr(f).unwrap();
    wa2.setattr(f, &util::set_mode(0o600), ME).unwrap();
    assert_eq!(wa.getattr(f).unwrap().attrs.mode & 0o777, 0o600);
}
