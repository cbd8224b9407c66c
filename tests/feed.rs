//! The inode change feed below FUSE: what one mount's workspace changes,
//! another (on its own connection) is told, with removed names opened; its
//! own changes and re-seals are not reported; old rows are pruned.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod util;

use std::sync::Arc;

use circlefs::ids::InodeId;
use circlefs::vault::Vault;
use circlefs::vault::workspace::{Caller, Change, NewNode, RenameMode, SetAttr, Workspace};
use util::{TempStore, stdout};

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
    t.user("alice");
    t.user("bob");
    assert!(stdout(&t.admin_cli("alice", &["circle", "create", "s"])).starts_with("200"));
    assert!(stdout(&t.admin_cli("alice", &["trustee", "add", "s", "bob"])).starts_with("200"));
    // Two connections, as two mount processes have.
    let wa = Workspace::new(t.vault.clone(), Arc::new(t.login("alice")), false).unwrap();
    let vb = Arc::new(Vault::open(&t.store()).unwrap());
    let bob = Arc::new(vb.unlock("bob", &util::pass("bob-pw")).unwrap());
    let wb = Workspace::new(vb, bob, false).unwrap();
    let root = wa.circles().unwrap()[0].root;
    assert!(wb.take_changes().unwrap().is_empty());

    let f = wa
        .create_node(root, b"old name", 0o644, NewNode::File, ME)
        .unwrap();
    wa.rename(root, b"old name", root, b"new name", RenameMode::Replace)
        .unwrap();
    let s = SetAttr {
        mode: Some(0o600),
        ..SetAttr::default()
    };
    wa.setattr(f.ino, &s, ME).unwrap();
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
