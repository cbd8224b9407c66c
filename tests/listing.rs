//! Directory listings below FUSE: pages keep no state, so a listing
//! resumed after changes returns every name present throughout exactly
//! once, and one resumed across a key rotation misses none.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod util;

use std::collections::{BTreeSet, HashMap};

use circlefs::ids::{DirPos, InodeId};
use circlefs::vault::workspace::{Caller, NewNode, Workspace};
use util::{TempStore, stdout};

const ME: Caller = Caller { uid: 0, gid: 0 };

fn make(w: &Workspace, dir: InodeId, names: impl IntoIterator<Item = String>) {
    for n in names {
        w.create_node(dir, n.as_bytes(), 0o644, NewNode::File, ME)
            .unwrap();
    }
}

/// Pages of `limit` from `from` to the end: the names, in order, and the
/// position after the last.
fn pages(w: &Workspace, dir: InodeId, mut from: DirPos, limit: usize) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..100_000 {
        let page = w.list_page(dir, from, limit, false).unwrap();
        assert!(page.len() <= limit);
        let Some(last) = page.last() else { return out };
        from = last.next;
        out.extend(
            page.into_iter()
                .map(|l| String::from_utf8(l.entry.name).unwrap()),
        );
    }
    panic!("the listing does not end");
}

fn counts(v: &[String]) -> HashMap<&str, usize> {
    let mut c = HashMap::new();
    for n in v {
        *c.entry(n.as_str()).or_insert(0) += 1;
    }
    c
}

#[test]
fn pages_of_any_size_list_every_name_once() {
    let t = TempStore::new();
    let (w, root) = t.alice_alone();
    let names: BTreeSet<String> = (0..300).map(|i| format!("f{i:03}")).collect();
    make(&w, root, names.iter().cloned());
    for limit in [1, 7, 256, 1000] {
        let got = pages(&w, root, DirPos(0), limit);
        assert_eq!(got.len(), 300, "limit {limit}");
        assert_eq!(got.iter().cloned().collect::<BTreeSet<_>>(), names);
    }
    // Positions 1 and 2 (after the dot entries) start at the first entry.
    assert_eq!(pages(&w, root, DirPos(2), 50).len(), 300);
    let every = w.readdir(root).unwrap();
    assert_eq!(every.len(), 300);
}

#[test]
fn a_listing_resumed_after_changes_returns_each_untouched_name_once() {
    let t = TempStore::new();
    let (w, root) = t.alice_alone();
    let names: Vec<String> = (0..700).map(|i| format!("f{i:03}")).collect();
    make(&w, root, names.iter().cloned());

    let first = w.list_page(root, DirPos(0), 100, false).unwrap();
    assert_eq!(first.len(), 100);
    let seen: BTreeSet<String> = first
        .iter()
        .map(|l| String::from_utf8(l.entry.name.clone()).unwrap())
        .collect();
    // Remove 60 names not listed yet and 20 listed ones; add 150 new ones.
    let unseen_gone: Vec<&String> = names
        .iter()
        .filter(|n| !seen.contains(*n))
        .take(60)
        .collect();
    let seen_gone: Vec<&String> = seen.iter().take(20).collect();
    for n in unseen_gone.iter().chain(&seen_gone) {
        w.unlink(root, n.as_bytes(), false).unwrap();
    }
    make(&w, root, (0..150).map(|i| format!("g{i:03}")));

    let mut all: Vec<String> = seen.iter().cloned().collect();
    all.extend(pages(&w, root, first.last().unwrap().next, 100));
    let c = counts(&all);
    assert!(c.values().all(|k| *k == 1), "a name listed twice");
    for n in &names {
        let gone_before = unseen_gone.contains(&n);
        let listed = c.contains_key(n.as_str());
        if gone_before {
            assert!(!listed, "{n} was removed before it was reached");
        } else {
            assert!(listed, "{n} was skipped");
        }
    }
}

#[test]
fn a_listing_resumed_across_a_key_rotation_misses_no_name() {
    let t = TempStore::new();
    let (w, root) = t.alice_alone();
    let names: BTreeSet<String> = (0..300).map(|i| format!("f{i:03}")).collect();
    make(&w, root, names.iter().cloned());
    let first = w.list_page(root, DirPos(0), 100, false).unwrap();
    assert!(stdout(&t.admin_cli("alice", &["trustee", "remove", "s", "bob"])).starts_with("200"));
    // Every name is re-sealed under new index keys, which reorders the
    // directory: the listing starts again (names may come twice).
    let rest = pages(&w, root, first.last().unwrap().next, 100);
    assert_eq!(rest.iter().cloned().collect::<BTreeSet<_>>(), names);
    // A listing begun after the rotation lists each once.
    assert_eq!(pages(&w, root, DirPos(0), 100).len(), 300);
}
