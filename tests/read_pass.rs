//! Reads take no inode lock first: a block that another mount is
//! rewriting meanwhile fails to open, and only then is the read made again
//! under the shared inode lock, which waits for that mount's write; the
//! caller sees the block as written, never an integrity error.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod util;

use std::os::unix::fs::FileExt;
use std::sync::{Arc, mpsc};
use std::time::Duration;

use circlefs::error::ErrorKind;
use circlefs::store::Store;
use circlefs::vault::workspace::Caller;
use util::TempStore;

const ME: Caller = Caller { uid: 0, gid: 0 };

#[test]
fn a_block_rewritten_by_another_mount_is_read_after_its_write() {
    let t = TempStore::new();
    let (w, root) = t.alice_alone();
    let w = Arc::new(w);
    // Past the inline limit: the slots are in a block file.
    let data: Vec<u8> = (0..65_536u32).map(|i| (i % 251) as u8).collect();
    let f = w.create_open(root, b"big", 0o644, ME).unwrap().ino;
    w.write(f, 0, &data).unwrap();
    w.flush(f).unwrap();
    assert_eq!(w.read(f, 0, 4096).unwrap(), data[..4096]);

    // Another mount holds the file's exclusive lock while block 0 is
    // half written (bytes in the middle of its data page).
    let other = Store::open(&t.store()).unwrap();
    let lock = other.inode_lock(f, true).unwrap();
    let files = other.block_files().unwrap();
    assert_eq!(files.len(), 1);
    let bf = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&files[0])
        .unwrap();
    let at = circlefs::format::block::page_offset(0).unwrap() + 1000;
    let mut kept = [0u8; 100];
    bf.read_exact_at(&mut kept, at).unwrap();
    bf.write_all_at(&[0x5a; 100], at).unwrap();

    let (tx, rx) = mpsc::channel();
    let reader = {
        let w = w.clone();
        std::thread::spawn(move || tx.send(w.read(f, 0, 4096)).unwrap())
    };
    // The first pass fails on the torn block; the second waits for the lock.
    assert!(
        rx.recv_timeout(Duration::from_millis(500)).is_err(),
        "the read answered while the other mount's write was under way"
    );
    bf.write_all_at(&kept, at).unwrap();
    drop(lock);
    let got = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    reader.join().unwrap();
    assert_eq!(got.unwrap(), data[..4096]);

    // A block that stays damaged is an integrity error after both passes.
    bf.write_all_at(&[0x5a; 100], at).unwrap();
    let e = w.read(f, 0, 4096).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Integrity);
}
