//! Writes that cover part of one or two existing blocks (4064 bytes each)
//! keep the rest of every block they touch: a 4 KiB write mostly spans two,
//! whose old content is read in one run; in a block file and inline.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod util;

use std::sync::Arc;

use circlefs::vault::workspace::{Caller, Workspace};
use util::TempStore;

const ME: Caller = Caller { uid: 0, gid: 0 };

#[test]
fn partial_writes_keep_the_rest_of_each_block() {
    let t = TempStore::new();
    let (w, root) = t.alice_alone();
    // (offset, length): inside one block; across the edge of two adjacent
    // blocks (a 4 KiB write at 4 KiB alignment, and small ones); two
    // partial edges with whole blocks between; a tail past the old end.
    let writes: [(u64, usize); 7] = [
        (100, 50),
        (4_054, 20),
        (4_096, 4_096),
        (12_288, 4_096),
        (100, 12_000),
        (8_000, 9_000),
        (60_000, 8_000),
    ];
    let mut done = Vec::new();
    for (name, size) in [(&b"big"[..], 65_536usize), (&b"small"[..], 10_000)] {
        let mut model: Vec<u8> = (0..size as u32).map(|i| (i % 251) as u8).collect();
        let f = w.create_open(root, name, 0o644, ME).unwrap().ino;
        w.write(f, 0, &model).unwrap();
        w.flush(f).unwrap();
        for (k, (off, len)) in writes.iter().enumerate() {
            let data = vec![0xa0 + k as u8; *len];
            w.write(f, *off, &data).unwrap();
            let end = *off as usize + len;
            if model.len() < end {
                model.resize(end, 0);
            }
            model[*off as usize..end].copy_from_slice(&data);
            assert_eq!(
                w.read(f, 0, model.len() as u32 + 10).unwrap(),
                model,
                "{} after write {k} at {off}, {len} bytes",
                String::from_utf8_lossy(name)
            );
        }
        w.flush(f).unwrap();
        done.push((name, model));
    }
    // Stored as read: a second workspace of the store reads the same.
    drop(w);
    let w2 = Workspace::new(t.vault.clone(), Arc::new(t.login("alice")), false).unwrap();
    let root2 = w2.circles().unwrap()[0].root;
    for (name, model) in done {
        let f = w2.lookup(root2, name).unwrap().ino;
        w2.open(f, false, false).unwrap();
        assert_eq!(w2.read(f, 0, 1 << 20).unwrap(), model);
    }
}
