//! The inode change feed below FUSE: what one mount's workspace changes,
//! another (on its own connection) is told, with removed names opened; its
//! own changes and re-seals are not reported; old rows are pruned. Also
//! what an open file's state saves, and when, as another mount sees it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod util;

use std::sync::Arc;

use circlefs::format::attrs::Time;
use circlefs::ids::InodeId;
use circlefs::vault::Vault;
use circlefs::vault::workspace::{Caller, Change, NewNode, RenameMode, SetAttr, Workspace};
use util::{TempStore, set_mode};

const ME: Caller = Caller { uid: 0, gid: 0 };

/// `got` reports `name` in `parent` (naming `ino`) as changed.
fn has_name(got: &[Change], parent: InodeId, name: &[u8], ino: InodeId) -> bool {
    got.contains(&Change::Name {
        parent,
        name: name.to_vec(),
        ino,
    })
}

#[test]
fn another_workspace_sees_changes_and_removed_names() {
    let t = TempStore::new();
    let (wa, wb, root) = pair(&t);
    assert!(wb.take_changes().unwrap().is_empty());

    let f = wa
        .create_node(root, b"old name", 0o644, NewNode::File, ME)
        .unwrap();
    wa.rename(root, b"old name", root, b"new name", RenameMode::Replace)
        .unwrap();
    wa.setattr(f.ino, &set_mode(0o600), ME).unwrap();
    let got = wb.take_changes().unwrap();
    assert!(got.contains(&Change::Attrs(f.ino)), "{got:?}");
    assert!(got.contains(&Change::Attrs(root)), "{got:?}");
    assert!(has_name(&got, root, b"old name", f.ino), "{got:?}");
    assert!(has_name(&got, root, b"new name", f.ino), "{got:?}");
    // Read once: not again; alice is not told of her own changes.
    assert!(wb.take_changes().unwrap().is_empty());
    assert!(wa.take_changes().unwrap().is_empty());

    // Bob's unlink reaches alice with the name.
    wb.unlink(root, b"new name", false).unwrap();
    let got = wa.take_changes().unwrap();
    assert!(has_name(&got, root, b"new name", f.ino), "{got:?}");
}

/// Two workspaces of one store on two connections (alice's and bob's), a
/// circle both are trustees of, and its root.
/// Two connections, as two mount processes have.
fn pair(t: &TempStore) -> (Workspace, Workspace, InodeId) {
    let (wa, root) = t.alice_alone();
    (wa, bob_workspace(t), root)
}

/// Alice's workspace, alone, with file `f` (mode 0600) created and open
/// for writing.
fn alice_writing(t: &TempStore) -> (Workspace, circlefs::vault::workspace::Node) {
    let (wa, root) = t.alice_alone();
    let f = wa
        .create_node(root, b"f", 0o600, NewNode::File, ME)
        .unwrap();
    wa.open(f.ino, true, false).unwrap();
    (wa, f)
}

/// The time `sec` seconds and `nsec` nanoseconds after the epoch.
fn at(sec: i64, nsec: u32) -> Time {
    Time { sec, nsec }
}

/// A change of the modification time alone.
fn set_mtime(t: Time) -> SetAttr {
    SetAttr {
        mtime: Some(t),
        ..SetAttr::default()
    }
}

/// Bob's workspace, on a connection of its own.
fn bob_workspace(t: &TempStore) -> Workspace {
    let vb = Arc::new(Vault::open(&t.store()).unwrap());
    let bob = Arc::new(vb.unlock("bob", &util::pass("bob-pw")).unwrap());
    Workspace::new(vb, bob, false).unwrap()
}

#[test]
fn an_open_after_a_quiet_poll_still_sees_another_workspaces_change() {
    let t = TempStore::new();
    let (wa, wb, root) = pair(&t);
    let f = wa
        .create_node(root, b"f", 0o644, NewNode::File, ME)
        .unwrap();
    // Bob's poll reads everything: nothing changed elsewhere since.
    wb.take_changes().unwrap();
    assert!(!wb.changed_elsewhere(f.ino).unwrap());
    // Alice writes; bob has not polled yet, and his open must still know.
    wa.open(f.ino, true, false).unwrap();
    wa.write(f.ino, 0, b"news").unwrap();
    wa.release(f.ino).unwrap();
    assert!(wb.changed_elsewhere(f.ino).unwrap());
    // Polled (and so invalidated): no longer reported.
    assert!(wb.take_changes().unwrap().contains(&Change::Attrs(f.ino)));
    assert!(!wb.changed_elsewhere(f.ino).unwrap());
}

#[test]
fn times_set_on_an_open_file_are_saved_at_close_and_owner_changes_at_once() {
    let t = TempStore::new();
    let (wa, f) = alice_writing(&t);
    let old = at(1_000, 5);
    let n = wa.setattr(f.ino, &set_mtime(old), ME).unwrap();
    assert_eq!(n.attrs.mtime, old, "the reply carries the new time");
    assert_eq!(wa.getattr(f.ino).unwrap().attrs.mtime, old);
    // A store reader that joins now sees the record as saved: the times
    // wait for the close.
    let wb = bob_workspace(&t);
    assert_ne!(wb.getattr(f.ino).unwrap().attrs.mtime, old);
    wa.flush(f.ino).unwrap();
    assert_eq!(wb.getattr(f.ino).unwrap().attrs.mtime, old);
    // With another mount present, a change of times is saved at once.
    let newer = at(2_000, 0);
    wa.setattr(f.ino, &set_mtime(newer), ME).unwrap();
    assert_eq!(wb.getattr(f.ino).unwrap().attrs.mtime, newer);
    wa.release(f.ino).unwrap();
    drop(wb);

    // Alone again: a mode change of an open file is saved at once, with
    // the times set before it.
    wa.open(f.ino, true, false).unwrap();
    wa.setattr(f.ino, &set_mtime(old), ME).unwrap();
    let chmod = set_mode(0o640);
    wa.setattr(f.ino, &chmod, ME).unwrap();
    let wb = bob_workspace(&t);
    let seen = wb.getattr(f.ino).unwrap().attrs;
    assert_eq!(seen.mode & 0o7777, 0o640);
    assert_eq!(seen.mtime, old);
    wa.release(f.ino).unwrap();
}

#[test]
fn unsaved_times_of_an_open_file_do_not_undo_another_mounts_change() {
    let t = TempStore::new();
    let (wa, f) = alice_writing(&t);
    let old = at(1_000, 0);
    wa.setattr(f.ino, &set_mtime(old), ME).unwrap();
    // Bob's mount joins and changes the mode while alice's times wait.
    let wb = bob_workspace(&t);
    let chmod = set_mode(0o640);
    wb.setattr(f.ino, &chmod, ME).unwrap();
    // Alice's close saves her times over bob's record, not her old one.
    wa.release(f.ino).unwrap();
    let seen = wb.getattr(f.ino).unwrap().attrs;
    assert_eq!(seen.mode & 0o7777, 0o640, "bob's mode is kept");
    assert_eq!(seen.mtime, old, "alice's time is saved");
}

#[test]
fn link_and_unlink_move_the_files_ctime_open_or_not() {
    let t = TempStore::new();
    let (wa, root) = t.alice_alone();
    let f = wa
        .create_node(root, b"f", 0o600, NewNode::File, ME)
        .unwrap();
    let c0 = f.attrs.ctime;
    // Closed: the link's own transaction moves the ctime.
    let n = wa.link(f.ino, root, b"g").unwrap();
    assert_eq!(n.nlink, 2);
    assert!(n.attrs.ctime > c0);
    assert_eq!(wa.getattr(f.ino).unwrap().attrs.ctime, n.attrs.ctime);
    wa.unlink(root, b"g", false).unwrap();
    let after = wa.getattr(f.ino).unwrap();
    assert_eq!(after.nlink, 1);
    assert!(after.attrs.ctime > n.attrs.ctime);
    // Open: through the open state, and a flush does not undo it.
    wa.open(f.ino, true, false).unwrap();
    let n = wa.link(f.ino, root, b"h").unwrap();
    assert!(n.attrs.ctime > after.attrs.ctime);
    wa.unlink(root, b"h", false).unwrap();
    let c3 = wa.getattr(f.ino).unwrap().attrs.ctime;
    assert!(c3 > n.attrs.ctime);
    wa.release(f.ino).unwrap();
    let wb = bob_workspace(&t);
    assert_eq!(wb.getattr(f.ino).unwrap().attrs.ctime, c3);
}
