//! Adversary tests below FUSE (vault::workspace): swapped, flipped and
//! truncated ciphertext (R1-R3), level enforcement (R7), and the removed
//! trustee with an offline decryptor (R5).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// The offline decryptor's helpers serve only the tests that need the
// `test-hooks` feature (CI builds with --all-features).
#![cfg_attr(not(feature = "test-hooks"), allow(dead_code, unused_imports))]

mod util;

use std::os::unix::fs::MetadataExt;
use std::sync::Arc;

use circlefs::crypto::Key32;
use circlefs::crypto::aead::Cipher;
use circlefs::crypto::subkeys::{Purpose, derive};
use circlefs::error::ErrorKind;
use circlefs::format::aad;
use circlefs::format::block::{
    BLOCK_SIZE, ENTRY, HALF, INLINE_HEAD, INLINE_SLOTS, PAGE, entry_offset, file_len, halves,
    inline_len, page_offset,
};
use circlefs::ids::{BlockIndex, CircleId, ContentId, Epoch, InodeId, KeyGen};
use circlefs::vault::workspace::{Caller, NewNode, Workspace};
use rusqlite::Connection;
use util::TempStore;

const ME: Caller = Caller { uid: 0, gid: 0 };

fn ws(t: &TempStore, user: &str) -> Workspace {
    let s = Arc::new(t.login(user));
    Workspace::new(t.vault.clone(), s, false).unwrap()
}

fn root(w: &Workspace, circle: &str) -> InodeId {
    w.circles()
        .unwrap()
        .into_iter()
        .find(|c| c.name.0 == circle)
        .unwrap()
        .root
}

fn put(w: &Workspace, dir: InodeId, name: &str, data: &[u8]) -> InodeId {
    let n = w
        .create_node(dir, name.as_bytes(), 0o644, NewNode::File, ME)
        .unwrap();
    w.open(n.ino, true, false).unwrap();
    assert_eq!(w.write(n.ino, 0, data).unwrap(), data.len());
    w.release(n.ino).unwrap();
    n.ino
}

fn get(w: &Workspace, ino: InodeId) -> Result<Vec<u8>, circlefs::error::Error> {
    w.open(ino, false, false)?;
    let size = w.getattr(ino)?.attrs.size;
    let r = w.read(ino, 0, size as u32);
    w.release(ino)?;
    r
}

fn block_path(t: &TempStore, ino: InodeId) -> std::path::PathBuf {
    let hex = format!("{:016x}", ino.0);
    t.store().join("blocks").join(&hex[14..]).join(hex)
}

/// Where the sealed slots of a file are stored: its inline row (small
/// files) or its block file. What an attacker with the store edits.
#[derive(Clone, Debug, PartialEq)]
enum Slots {
    Inline(std::path::PathBuf, InodeId),
    File(std::path::PathBuf),
}

/// Inline rows of `ino` (0 or 1).
fn inline_rows(t: &TempStore, ino: InodeId) -> i64 {
    Connection::open(t.db())
        .unwrap()
        .query_row(
            "SELECT COUNT(*) FROM inline_slots WHERE ino = ?1",
            [ino.0],
            |r| r.get(0),
        )
        .unwrap()
}

fn slots_of(t: &TempStore, ino: InodeId) -> Slots {
    if inline_rows(t, ino) == 1 {
        Slots::Inline(t.db(), ino)
    } else {
        Slots::File(block_path(t, ino))
    }
}

impl Slots {
    fn inline(&self) -> bool {
        matches!(self, Slots::Inline(..))
    }
    fn read(&self) -> Vec<u8> {
        match self {
            Slots::Inline(db, ino) => Connection::open(db)
                .unwrap()
                .query_row(
                    "SELECT slots FROM inline_slots WHERE ino = ?1",
                    [ino.0],
                    |r| r.get(0),
                )
                .unwrap(),
            Slots::File(p) => std::fs::read(p).unwrap(),
        }
    }
    fn remove(&self) {
        match self {
            Slots::Inline(db, ino) => {
                Connection::open(db)
                    .unwrap()
                    .execute("DELETE FROM inline_slots WHERE ino = ?1", [ino.0])
                    .unwrap();
            }
            Slots::File(p) => std::fs::remove_file(p).unwrap(),
        }
    }
    fn write(&self, b: &[u8]) {
        match self {
            Slots::Inline(db, ino) => {
                Connection::open(db)
                    .unwrap()
                    .execute(
                        "UPDATE inline_slots SET slots = ?1 WHERE ino = ?2",
                        rusqlite::params![b, ino.0],
                    )
                    .unwrap();
            }
            Slots::File(p) => std::fs::write(p, b).unwrap(),
        }
    }
}

/// Byte ranges of block `i`'s entry and data page in stored slots
/// (an inline row or a block file).
fn slot_ranges(inline: bool, i: usize) -> (std::ops::Range<usize>, std::ops::Range<usize>) {
    let (e, p) = if inline {
        (i * ENTRY, INLINE_HEAD + i * PAGE)
    } else {
        (
            entry_offset(i as u64).unwrap() as usize,
            page_offset(i as u64).unwrap() as usize,
        )
    };
    (e..e + ENTRY, p..p + PAGE)
}

/// Block `i` of stored slots: its entry, then its page.
fn get_slot(raw: &[u8], inline: bool, i: usize) -> Vec<u8> {
    let (e, p) = slot_ranges(inline, i);
    [&raw[e], &raw[p]].concat()
}

/// Put block `i` (entry, then page) into stored slots.
fn set_slot(raw: &mut [u8], inline: bool, i: usize, v: &[u8]) {
    let (e, p) = slot_ranges(inline, i);
    raw[e].copy_from_slice(&v[..ENTRY]);
    raw[p].copy_from_slice(&v[ENTRY..]);
}

/// Stored length of `n` blocks.
fn stored_len(inline: bool, n: usize) -> usize {
    if inline {
        inline_len(n as u64)
    } else {
        file_len(n as u64).unwrap() as usize
    }
}

/// Block counts that put a test file inline and in a block file.
const INLINE_AND_FILE: [usize; 2] = [0, INLINE_SLOTS as usize];

fn data(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn setup() -> (TempStore, Workspace, InodeId, InodeId) {
    let t = TempStore::new();
    let a = t.user("alice");
    circlefs::control::execute(
        &t.vault,
        &a,
        &circlefs::control::parse_line("circle create c1").unwrap(),
    );
    circlefs::control::execute(
        &t.vault,
        &a,
        &circlefs::control::parse_line("circle create c2").unwrap(),
    );
    let w = ws(&t, "alice");
    let r1 = root(&w, "c1");
    let r2 = root(&w, "c2");
    (t, w, r1, r2)
}

#[test]
fn swapped_blocks_are_detected() {
    for extra in INLINE_AND_FILE {
        swapped_blocks(4 + extra, extra == 0);
    }
}

fn swapped_blocks(nblocks: usize, inline: bool) {
    let (t, w, r1, r2) = setup();
    let len = nblocks * BLOCK_SIZE;
    let f = put(&w, r1, "f", &data(1, len));
    let g = put(&w, r1, "g", &data(2, len));
    let h = put(&w, r2, "h", &data(3, len));
    let keep = put(&w, r1, "keep", &data(4, len));
    for ino in [f, g, h, keep] {
        assert_eq!(slots_of(&t, ino).inline(), inline, "{nblocks} blocks");
    }
    let swap = |p1: &Slots, i: usize, p2: &Slots, j: usize| {
        let mut a = p1.read();
        let mut b = if p1 == p2 { a.clone() } else { p2.read() };
        let sa = get_slot(&a, p1.inline(), i);
        let sb = get_slot(&b, p2.inline(), j);
        if p1 == p2 {
            set_slot(&mut a, p1.inline(), i, &sb);
            set_slot(&mut a, p1.inline(), j, &sa);
            p1.write(&a);
        } else {
            set_slot(&mut a, p1.inline(), i, &sb);
            set_slot(&mut b, p2.inline(), j, &sa);
            p1.write(&a);
            p2.write(&b);
        }
    };
    swap(&slots_of(&t, f), 1, &slots_of(&t, f), 2);
    assert_eq!(
        get(&w, f).unwrap_err().kind,
        ErrorKind::Integrity,
        "within a file"
    );
    swap(&slots_of(&t, g), 0, &slots_of(&t, h), 0);
    assert_eq!(
        get(&w, g).unwrap_err().kind,
        ErrorKind::Integrity,
        "across files"
    );
    assert_eq!(
        get(&w, h).unwrap_err().kind,
        ErrorKind::Integrity,
        "across circles"
    );
    assert_eq!(
        get(&w, keep).unwrap(),
        data(4, len),
        "untouched file still reads"
    );
    // A block that is not swapped still reads through a ranged read.
    w.open(f, false, false).unwrap();
    assert_eq!(
        w.read(f, 0, BLOCK_SIZE as u32).unwrap(),
        data(1, len)[..BLOCK_SIZE]
    );
    w.release(f).unwrap();
}

#[test]
fn flipped_bytes_are_errors_never_garbage() {
    for extra in INLINE_AND_FILE {
        flipped_bytes(3 + extra, extra == 0);
    }
}

fn flipped_bytes(nblocks: usize, inline: bool) {
    let (t, w, r1, _) = setup();
    let len = nblocks * BLOCK_SIZE + 100;
    let f = put(&w, r1, "f", &data(9, len));
    let p = slots_of(&t, f);
    assert_eq!(p.inline(), inline, "{nblocks} blocks");
    let orig = p.read();
    // The bytes that authenticate or hold content: every data page and
    // the set half of every entry. A flip there is an error; a flip
    // anywhere else (an empty half, the unused entries of a header page)
    // may change nothing, but never yields other content.
    let mut used = vec![false; orig.len()];
    for i in 0..nblocks + 1 {
        let (e, pg) = slot_ranges(inline, i);
        used[pg].fill(true);
        let h = set_half(&orig[e.clone()]);
        used[e.start + h * HALF..e.start + (h + 1) * HALF].fill(true);
    }
    let mut x: u64 = 0x9e3779b97f4a7c15;
    let mut used_hits = 0;
    for _ in 0..300 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let pos = (x as usize) % orig.len();
        used_hits += used[pos] as usize;
        let mut bad = orig.clone();
        bad[pos] ^= 1 << (x % 8);
        p.write(&bad);
        match get(&w, f) {
            Err(e) => assert_eq!(e.kind, ErrorKind::Integrity, "flip at {pos}"),
            Ok(v) => {
                assert!(!used[pos], "a flip at {pos} went unnoticed");
                assert_eq!(v, data(9, len), "flip at {pos} changed the content");
            }
        }
    }
    assert!(
        used_hits > 150,
        "only {used_hits} of 300 flips hit authenticated bytes"
    );
    p.write(&orig);
    assert_eq!(get(&w, f).unwrap(), data(9, len));
    // An all-zero slot is not a hole.
    let mut z = orig.clone();
    set_slot(&mut z, inline, 1, &vec![0u8; ENTRY + PAGE]);
    p.write(&z);
    assert_eq!(get(&w, f).unwrap_err().kind, ErrorKind::Integrity);
    p.write(&orig);
    // Flipped rows: attributes, names, wrapped file keys.
    let c = Connection::open(t.db()).unwrap();
    for (table, col, key) in [("inodes", "attrs", "id"), ("file_keys", "wrapped", "ino")] {
        let v: Vec<u8> = c
            .query_row(
                &format!("SELECT {col} FROM {table} WHERE {key} = ?1"),
                [f.0],
                |r| r.get(0),
            )
            .unwrap();
        for pos in [0, v.len() / 2, v.len() - 1] {
            let mut b = v.clone();
            b[pos] ^= 0x40;
            c.execute(
                &format!("UPDATE {table} SET {col} = ?1 WHERE {key} = ?2"),
                rusqlite::params![b, f.0],
            )
            .unwrap();
            let w2 = ws(&t, "alice");
            assert!(get(&w2, f).is_err(), "{table}.{col} flipped at {pos}");
        }
        c.execute(
            &format!("UPDATE {table} SET {col} = ?1 WHERE {key} = ?2"),
            rusqlite::params![v, f.0],
        )
        .unwrap();
    }
    let v: Vec<u8> = c
        .query_row("SELECT name_ct FROM dirents WHERE ino = ?1", [f.0], |r| {
            r.get(0)
        })
        .unwrap();
    let mut b = v.clone();
    b[20] ^= 1;
    c.execute(
        "UPDATE dirents SET name_ct = ?1 WHERE ino = ?2",
        rusqlite::params![b, f.0],
    )
    .unwrap();
    let w2 = ws(&t, "alice");
    assert_eq!(w2.lookup(r1, b"f").unwrap_err().kind, ErrorKind::Integrity);
    assert_eq!(w2.readdir(r1).unwrap_err().kind, ErrorKind::Integrity);
}

#[test]
fn an_interrupted_write_leaves_each_block_old_or_new() {
    for extra in INLINE_AND_FILE {
        interrupted_write(3 + extra, extra == 0);
    }
}

/// Entry with half `k` taken from `from`, the other from `base`.
fn with_half(base: &[u8], from: &[u8], k: usize) -> Vec<u8> {
    let mut e = base[..ENTRY].to_vec();
    e[k * HALF..(k + 1) * HALF].copy_from_slice(&from[k * HALF..(k + 1) * HALF]);
    e
}

/// The one set half of an entry at rest.
fn set_half(entry: &[u8]) -> usize {
    let set: Vec<usize> = halves(entry)
        .iter()
        .enumerate()
        .filter(|(_, h)| h.is_some())
        .map(|(k, _)| k)
        .collect();
    assert_eq!(set.len(), 1, "one half set at rest");
    set[0]
}

/// A write of a block is three steps (`store::blocks::write_run`): the
/// new header into the half that does not open the page, the page, the
/// other half emptied. The states a kill leaves between them are built
/// from what the steps store, and every one reads as the old or the new
/// content; a write made over such a state (which must find out which
/// half is current without the page telling it) keeps that true.
fn interrupted_write(nblocks: usize, inline: bool) {
    let (t, w, r1, _) = setup();
    let len = nblocks * BLOCK_SIZE;
    let f = put(&w, r1, "f", &data(1, len));
    let p = slots_of(&t, f);
    assert_eq!(p.inline(), inline, "{nblocks} blocks");
    let rewrite = |seed: u8| {
        w.open(f, true, false).unwrap();
        w.write(f, BLOCK_SIZE as u64, &data(seed, BLOCK_SIZE))
            .unwrap();
        w.release(f).unwrap();
    };
    let want = |seed: u8| {
        let mut v = data(1, len);
        v[BLOCK_SIZE..2 * BLOCK_SIZE].copy_from_slice(&data(seed, BLOCK_SIZE));
        v
    };
    let old = p.read();
    let s_a = get_slot(&old, inline, 1);
    rewrite(2);
    let s_b = get_slot(&p.read(), inline, 1);
    let tb = set_half(&s_b[..ENTRY]);
    assert_ne!(
        tb,
        set_half(&s_a[..ENTRY]),
        "the new header went into the other half"
    );
    let state = |entry: &[u8], page: &[u8]| {
        let mut v = old.clone();
        set_slot(&mut v, inline, 1, &[entry, page].concat());
        v
    };
    let both = with_half(&s_a, &s_b, tb);
    // Killed after the header, before the page: the old content.
    p.write(&state(&both, &s_a[ENTRY..]));
    assert_eq!(get(&w, f).unwrap(), want(1), "header written, page not");
    // Killed after the page, before the other half was emptied: the new.
    p.write(&state(&both, &s_b[ENTRY..]));
    assert_eq!(
        get(&w, f).unwrap(),
        want(2),
        "page written, other half not emptied"
    );
    // A whole-block write over the first state: its header must not go
    // into the half that opens the old page, or a kill before its page
    // would leave nothing that opens.
    let remnant = state(&both, &s_a[ENTRY..]);
    p.write(&remnant);
    rewrite(3);
    let done = p.read();
    let s_c = get_slot(&done, inline, 1);
    let tc = set_half(&s_c[..ENTRY]);
    assert_eq!(get(&w, f).unwrap(), want(3));
    let r = get_slot(&remnant, inline, 1);
    let killed = state(&with_half(&r, &s_c, tc), &s_a[ENTRY..]);
    p.write(&killed);
    assert_eq!(
        get(&w, f).unwrap(),
        want(1),
        "killed again after the header: still the old content"
    );
    // And over the second state (the new page current).
    p.write(&state(&both, &s_b[ENTRY..]));
    rewrite(4);
    let s_d = get_slot(&p.read(), inline, 1);
    let td = set_half(&s_d[..ENTRY]);
    assert_eq!(td, 1 - tb, "not the half that opens the current page");
    p.write(&state(&with_half(&both, &s_d, td), &s_b[ENTRY..]));
    assert_eq!(get(&w, f).unwrap(), want(2));
}

#[test]
fn length_is_authenticated() {
    for extra in INLINE_AND_FILE {
        length_authenticated(3 + extra, extra == 0);
    }
}

fn length_authenticated(nblocks: usize, inline: bool) {
    let (t, w, r1, _) = setup();
    let len = nblocks * BLOCK_SIZE + BLOCK_SIZE / 2;
    let f = put(&w, r1, "f", &data(5, len));
    let p = slots_of(&t, f);
    assert_eq!(p.inline(), inline, "{nblocks} blocks");
    let orig = p.read();
    assert_eq!(orig.len(), stored_len(inline, nblocks + 1));
    p.write(&orig[..stored_len(inline, nblocks)]);
    assert_eq!(
        get(&w, f).unwrap_err().kind,
        ErrorKind::Integrity,
        "last block deleted"
    );
    p.write(&orig[..orig.len() - 1]);
    assert_eq!(
        get(&w, f).unwrap_err().kind,
        ErrorKind::Integrity,
        "one byte cut"
    );
    // An appended copy of block 0 is never read as content.
    let mut longer = orig.clone();
    longer.extend_from_slice(&get_slot(&orig, inline, 0));
    p.write(&longer);
    assert_eq!(get(&w, f).unwrap(), data(5, len));
    assert_eq!(w.getattr(f).unwrap().attrs.size, len as u64);
    p.remove();
    assert_eq!(
        get(&w, f).unwrap_err().kind,
        ErrorKind::Integrity,
        "content deleted"
    );
    // An older, shorter record put back: its blocks no longer match (R4 partial).
    p.write(&orig);
    let c = Connection::open(t.db()).unwrap();
    let g = put(&w, r1, "g", &data(6, 10));
    let short: Vec<u8> = c
        .query_row("SELECT attrs FROM inodes WHERE id = ?1", [g.0], |r| {
            r.get(0)
        })
        .unwrap();
    c.execute(
        "UPDATE inodes SET attrs = ?1 WHERE id = ?2",
        rusqlite::params![short, f.0],
    )
    .unwrap();
    let w2 = ws(&t, "alice");
    assert!(
        get(&w2, f).is_err(),
        "a record moved from another inode does not open"
    );
}

#[test]
fn inline_content_moves_to_a_block_file_when_it_grows() {
    let (t, w, r1, _) = setup();
    let small = INLINE_SLOTS as usize * BLOCK_SIZE;
    let f = put(&w, r1, "f", &data(7, small));
    assert!(
        slots_of(&t, f).inline(),
        "up to INLINE_SLOTS blocks stay inline"
    );
    assert!(
        !block_path(&t, f).exists(),
        "no block file for a small file"
    );
    // A block file left by an interrupted spill is ignored while the row exists.
    std::fs::create_dir_all(block_path(&t, f).parent().unwrap()).unwrap();
    std::fs::write(block_path(&t, f), vec![0x55; 3 * PAGE]).unwrap();
    assert_eq!(get(&w, f).unwrap(), data(7, small));
    // One more byte: every slot moves to the block file and the row goes.
    w.open(f, true, false).unwrap();
    w.write(f, small as u64, b"!").unwrap();
    w.release(f).unwrap();
    let p = slots_of(&t, f);
    assert!(!p.inline());
    assert_eq!(p.read().len(), stored_len(false, INLINE_SLOTS as usize + 1));
    let mut want = data(7, small);
    want.push(b'!');
    assert_eq!(get(&w, f).unwrap(), want);
    // Shrinking keeps the block file (a file never moves back).
    w.truncate(f, 10).unwrap();
    assert!(!slots_of(&t, f).inline());
    assert_eq!(slots_of(&t, f).read().len(), stored_len(false, 1));
    assert_eq!(get(&w, f).unwrap(), data(7, 10));
    // An inline file shrinks in place; deleting it leaves no row.
    let g = put(&w, r1, "g", &data(8, 3 * BLOCK_SIZE));
    w.truncate(g, BLOCK_SIZE as u64 + 1).unwrap();
    assert_eq!(slots_of(&t, g).read().len(), stored_len(true, 2));
    assert_eq!(get(&w, g).unwrap(), data(8, BLOCK_SIZE + 1));
    w.unlink(r1, b"g", false).unwrap();
    assert_eq!(inline_rows(&t, g), 0, "the inline row goes with the inode");
}

/// Rows of `ino` in the inode, file-key and inline tables.
fn inode_rows(t: &TempStore, ino: InodeId) -> i64 {
    let c = Connection::open(t.db()).unwrap();
    [
        "inodes WHERE id",
        "file_keys WHERE ino",
        "inline_slots WHERE ino",
    ]
    .iter()
    .map(|q| {
        c.query_row(&format!("SELECT COUNT(*) FROM {q} = ?1"), [ino.0], |r| {
            r.get::<_, i64>(0)
        })
        .unwrap()
    })
    .sum()
}

/// The wrapped key rows of `ino`.
fn wrapped_keys_of(t: &TempStore, ino: InodeId) -> Vec<Vec<u8>> {
    let c = Connection::open(t.db()).unwrap();
    file_key_rows(&c)
        .into_iter()
        .filter(|r| r.0 == ino.0)
        .map(|r| r.4)
        .collect()
}

/// Whether any file of the store (database, WAL, blocks) holds `needle`,
/// after a checkpoint that truncates the WAL.
fn store_holds(t: &TempStore, needle: &[u8]) -> bool {
    let c = Connection::open(t.db()).unwrap();
    c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
    drop(c);
    !util::scan(&t.store(), needle).is_empty()
}

#[test]
fn deleted_files_leave_no_rows_however_they_were_created() {
    let (t, w, r1, _) = setup();
    // As by mknod(2): created, never opened.
    let made = w
        .create_node(r1, b"made", 0o644, NewNode::File, ME)
        .unwrap()
        .ino;
    // As by creat(2): created open, written, closed.
    let opened = w.create_open(r1, b"opened", 0o644, ME).unwrap().ino;
    assert_eq!(w.write(opened, 0, b"data").unwrap(), 4);
    w.release(opened).unwrap();
    assert_eq!(get(&w, opened).unwrap(), b"data");
    for (name, ino) in [("made", made), ("opened", opened)] {
        assert!(inode_rows(&t, ino) >= 2, "{name}: inode and key rows");
        let wrapped = wrapped_keys_of(&t, ino);
        assert!(!wrapped.is_empty() && wrapped.iter().all(|k| store_holds(&t, k)));
        w.unlink(r1, name.as_bytes(), false).unwrap();
        assert_eq!(inode_rows(&t, ino), 0, "{name}: deleted at unlink");
        // Crypto-shredded: the wrapped file key is zeroed (`secure_delete`),
        // in the database and, once checkpointed, the WAL. Its content
        // ciphertext may stay in freed pages, like a deleted block file's.
        for k in &wrapped {
            assert!(!store_holds(&t, k), "{name}: wrapped key left behind");
        }
    }
    // create_open holds one handle: unlinked while open, the inode stays
    // until that handle is released.
    let held = w.create_open(r1, b"held", 0o644, ME).unwrap().ino;
    w.write(held, 0, b"x").unwrap();
    w.unlink(r1, b"held", false).unwrap();
    assert!(inode_rows(&t, held) > 0, "still open");
    assert_eq!(w.read(held, 0, 1).unwrap(), b"x");
    w.release(held).unwrap();
    assert_eq!(inode_rows(&t, held), 0, "deleted at the last release");
}

#[test]
fn sparse_holes_are_not_stored_and_read_as_zeros() {
    let (t, w, r1, _) = setup();
    let n = w
        .create_node(r1, b"sparse", 0o644, NewNode::File, ME)
        .unwrap();
    w.open(n.ino, true, false).unwrap();
    let far = 100 * BLOCK_SIZE as u64 + 7;
    w.write(n.ino, far, b"tail").unwrap();
    w.write(n.ino, 3, b"head").unwrap();
    let got = w.read(n.ino, 0, (far + 4) as u32).unwrap();
    w.release(n.ino).unwrap();
    assert_eq!(&got[3..7], b"head");
    assert!(got[7..far as usize].iter().all(|b| *b == 0));
    assert_eq!(&got[far as usize..], b"tail");
    let p = block_path(&t, n.ino);
    let on_disk = std::fs::metadata(&p).unwrap().blocks() * 512;
    assert!(
        on_disk < 16 * 4096,
        "holes are not written ({on_disk} bytes allocated)"
    );
}

#[test]
fn levels_are_enforced_in_the_core() {
    let t = TempStore::new();
    let a = t.user("alice");
    t.user("rita");
    let ex = |s, l: &str| ex(&t, s, l);
    assert_eq!(ex(&a, "circle create c"), 200);
    assert_eq!(ex(&a, "trustee add c rita --level read"), 200);
    let wa = ws(&t, "alice");
    let f = put(&wa, root(&wa, "c"), "f", b"hello");
    let wr = ws(&t, "rita");
    let rr = root(&wr, "c");
    assert_eq!(get(&wr, f).unwrap(), b"hello");
    let denied = |e: circlefs::error::Error| assert_eq!(e.kind, ErrorKind::Forbidden, "{e}");
    denied(
        wr.create_node(rr, b"x", 0o644, NewNode::File, ME)
            .unwrap_err(),
    );
    denied(wr.open(f, true, false).unwrap_err());
    denied(wr.unlink(rr, b"f", false).unwrap_err());
    denied(
        wr.rename(
            rr,
            b"f",
            rr,
            b"g",
            circlefs::vault::workspace::RenameMode::Replace,
        )
        .unwrap_err(),
    );
    denied(wr.setattr(f, &util::set_mode(0o600), ME).unwrap_err());
    denied(
        wr.setxattr(
            f,
            b"user.x",
            b"1",
            circlefs::vault::workspace::XattrMode::Any,
        )
        .unwrap_err(),
    );
    // Non-members see nothing.
    let t_other = t.user("max");
    drop(t_other);
    let wm = ws(&t, "max");
    assert!(wm.circles().unwrap().is_empty());
    assert_eq!(wm.getattr(f).unwrap_err().kind, ErrorKind::Forbidden);
}

/// What a removed trustee captured before the removal: every circle key
/// he could unwrap and every file key those opened in the store as it was.
struct Captured {
    circle: CircleId,
    circle_keys: Vec<(CircleId, Epoch, [u8; 32])>,
    file_keys: std::collections::HashMap<(i64, u32), [u8; 32]>,
}

fn wrap_cipher(ck: &[u8; 32]) -> Cipher {
    Cipher::new(&derive(&Key32::from_bytes(*ck), Purpose::FileKeyWrap).unwrap())
}

/// File-key rows of the store: (ino, keygen, epoch, origin, wrapped).
fn file_key_rows(c: &Connection) -> Vec<(i64, u32, u32, u32, Vec<u8>)> {
    c.prepare("SELECT ino, keygen, epoch, origin, wrapped FROM file_keys")
        .unwrap()
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get::<_, i64>(1)? as u32,
                r.get::<_, i64>(2)? as u32,
                r.get::<_, i64>(3)? as u32,
                r.get(4)?,
            ))
        })
        .unwrap()
        .map(|x| x.unwrap())
        .collect()
}

/// Every file key the captured circle keys open in the store `c`.
fn unwrap_all(
    c: &Connection,
    circle: CircleId,
    keys: &[(CircleId, Epoch, [u8; 32])],
) -> std::collections::HashMap<(i64, u32), [u8; 32]> {
    let mut out = std::collections::HashMap::new();
    for (ino, g, e, o, wrapped) in file_key_rows(c) {
        for (_, _, ck) in keys.iter().filter(|k| k.0 == circle) {
            if let Ok(fk) = wrap_cipher(ck).open(
                &aad::file_key(circle, InodeId(ino), KeyGen(g), Epoch(e), Epoch(o)),
                &wrapped,
                "fk",
            ) {
                out.insert((ino, g), fk.try_into().unwrap());
            }
        }
    }
    out
}

/// Offline decryption of one block with what was captured plus whatever
/// the captured circle keys open in the current store.
fn offline_block(
    c: &Connection,
    cap: &Captured,
    ino: InodeId,
    content: ContentId,
    i: u64,
    slot: &[u8],
) -> bool {
    let (entry, page) = slot.split_at(ENTRY);
    halves(entry).into_iter().flatten().any(|h| {
        let g = h.keygen;
        let mut candidates: Vec<[u8; 32]> = cap
            .file_keys
            .get(&(ino.0, g.0))
            .copied()
            .into_iter()
            .collect();
        candidates.extend(
            unwrap_all(c, cap.circle, &cap.circle_keys)
                .get(&(ino.0, g.0))
                .copied(),
        );
        candidates.into_iter().any(|fk| {
            let cipher = Cipher::new(&Key32::from_bytes(fk));
            let mut out = vec![0u8; BLOCK_SIZE];
            cipher
                .open_detached(
                    &aad::block(cap.circle, &content, g, BlockIndex(i)),
                    &h.nonce,
                    &h.tag,
                    page,
                    &mut out,
                    "b",
                )
                .is_ok()
        })
    })
}

/// True when any captured circle key opens any directory-entry name.
fn any_name_opens(c: &Connection, cap: &Captured) -> bool {
    let names: Vec<(i64, i64, Vec<u8>)> = c
        .prepare("SELECT parent, epoch, name_ct FROM dirents")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(|x| x.unwrap())
        .collect();
    assert!(!names.is_empty());
    names.iter().any(|(parent, epoch, ct)| {
        cap.circle_keys.iter().any(|(_, _, ck)| {
            let nk = Cipher::new(&derive(&Key32::from_bytes(*ck), Purpose::Name).unwrap());
            nk.open(
                &aad::dirent_name(cap.circle, InodeId(*parent), Epoch(*epoch as u32)),
                ct,
                "n",
            )
            .is_ok()
        })
    })
}

/// Status code of one control line run as `s`.
fn ex(t: &TempStore, s: &circlefs::vault::Session, line: &str) -> u16 {
    circlefs::control::execute(&t.vault, s, &circlefs::control::parse_line(line).unwrap())
        .status
        .code()
}

/// A store where alice and bob share circle `c`; alice's session.
fn alice_and_bob_share_c(t: &TempStore) -> circlefs::vault::Session {
    let a = t.user("alice");
    t.user("bob");
    assert_eq!(ex(t, &a, "circle create c"), 200);
    assert_eq!(ex(t, &a, "trustee add c bob"), 200);
    a
}

#[cfg(feature = "test-hooks")]
#[test]
fn removed_trustee_offline_decryptor_fails_on_everything_new() {
    let t = TempStore::new();
    let a = alice_and_bob_share_c(&t);
    let ex = |s, l: &str| ex(&t, s, l);
    let wa = ws(&t, "alice");
    let r = root(&wa, "c");
    let old = put(&wa, r, "old", &data(1, 4 * BLOCK_SIZE));
    wa.setxattr(
        old,
        b"user.tag",
        b"xattr-value",
        circlefs::vault::workspace::XattrMode::Any,
    )
    .unwrap();
    // Bob's mount loads his keys; capture every key he could unwrap.
    let bob_s = Arc::new(t.login("bob"));
    let wb = Workspace::new(t.vault.clone(), bob_s.clone(), false).unwrap();
    assert_eq!(get(&wb, old).unwrap(), data(1, 4 * BLOCK_SIZE));
    let exported = bob_s.export_keys();
    assert!(!exported.circles.is_empty());
    let circle = exported.circles[0].0;
    let c = Connection::open(t.db()).unwrap();
    let cap = Captured {
        circle,
        file_keys: unwrap_all(&c, circle, &exported.circles),
        circle_keys: exported.circles.clone(),
    };
    assert!(
        !cap.file_keys.is_empty(),
        "bob could unwrap the old file's key"
    );
    assert!(any_name_opens(&c, &cap), "bob could read the names before");
    assert_eq!(ex(&a, "trustee remove c bob"), 200);
    // In the removal's transaction: the old epoch's keys are destroyed and
    // every file key, name, record and xattr is on the new epoch.
    let count = |q: &str| -> i64 { c.query_row(q, [], |r| r.get(0)).unwrap() };
    assert_eq!(count("SELECT COUNT(*) FROM circle_keys WHERE epoch < 2"), 0);
    assert_eq!(
        count(
            "SELECT (SELECT COUNT(*) FROM file_keys WHERE epoch != 2) \
             + (SELECT COUNT(*) FROM dirents WHERE epoch != 2) \
             + (SELECT COUNT(*) FROM inodes WHERE epoch != 2) \
             + (SELECT COUNT(*) FROM xattrs WHERE epoch != 2)"
        ),
        0
    );
    assert!(
        unwrap_all(&c, circle, &cap.circle_keys).is_empty(),
        "the captured circle keys open no file key of the store any more"
    );
    assert!(!any_name_opens(&c, &cap), "nor any name");
    // Bob's live view loses the circle.
    wb.refresh(true).unwrap();
    assert!(wb.circles().unwrap().is_empty());
    assert!(get(&wb, old).is_err());
    // Alice writes a new file and overwrites block 1 of the old one.
    // No refresh: the rotation is noticed inside the write transactions.
    let new = put(&wa, r, "new", &data(2, 3 * BLOCK_SIZE));
    wa.open(old, true, false).unwrap();
    wa.write(old, BLOCK_SIZE as u64, &data(3, BLOCK_SIZE))
        .unwrap();
    wa.release(old).unwrap();
    let content = |ino: InodeId| wa.getattr(ino).unwrap().attrs.content;
    let slots = |ino: InodeId| slots_of(&t, ino).read();
    let slot = |ino: InodeId, s: &[u8], i: u64| get_slot(s, slots_of(&t, ino).inline(), i as usize);
    let s_new = slots(new);
    for i in 0..3 {
        assert!(
            !offline_block(&c, &cap, new, content(new), i, &slot(new, &s_new, i)),
            "new file block {i}"
        );
    }
    let s_old = slots(old);
    let readable: Vec<bool> = (0..4)
        .map(|i| offline_block(&c, &cap, old, content(old), i, &slot(old, &s_old, i)))
        .collect();
    assert_eq!(
        readable,
        [true, false, true, true],
        "only the overwritten block is out of reach; untouched old blocks stay readable \
         with the file key bob captured before (documented)"
    );
    // New and old names alike are sealed under the new epoch.
    assert!(!any_name_opens(&c, &cap));
    // Alice still reads everything.
    assert_eq!(get(&wa, new).unwrap(), data(2, 3 * BLOCK_SIZE));
    let mut expect = data(1, 4 * BLOCK_SIZE);
    expect[BLOCK_SIZE..2 * BLOCK_SIZE].copy_from_slice(&data(3, BLOCK_SIZE));
    assert_eq!(get(&wa, old).unwrap(), expect);
    assert_eq!(wa.getxattr(old, b"user.tag").unwrap(), b"xattr-value");
    assert_eq!(wa.lookup(r, b"old").unwrap().ino, old);
    drop(wa);

    // circle rekey --reencrypt: afterwards the captured keys open nothing.
    let resp = circlefs::control::execute(
        &t.vault,
        &a,
        &circlefs::control::parse_line("circle rekey c --reencrypt").unwrap(),
    );
    assert_eq!(resp.status.code(), 200, "{}", resp.text());
    let s_old = slots(old);
    let s_new = slots(new);
    let wa = ws(&t, "alice");
    let content = |ino: InodeId| wa.getattr(ino).unwrap().attrs.content;
    for i in 0..4 {
        assert!(
            !offline_block(&c, &cap, old, content(old), i, &slot(old, &s_old, i)),
            "old file block {i} after re-encryption"
        );
    }
    for i in 0..3 {
        assert!(!offline_block(
            &c,
            &cap,
            new,
            content(new),
            i,
            &slot(new, &s_new, i)
        ));
    }
    let old_epoch_rows: i64 = c
        .query_row(
            "SELECT COUNT(*) FROM circle_keys WHERE epoch < 3",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(old_epoch_rows, 0, "older epochs' keys are deleted");
    let stale: i64 = c
        .query_row("SELECT (SELECT COUNT(*) FROM file_keys WHERE epoch != 3 OR origin != 3) + (SELECT COUNT(*) FROM dirents WHERE epoch != 3) + (SELECT COUNT(*) FROM inodes WHERE epoch != 3)", [], |r| r.get(0))
        .unwrap();
    assert_eq!(stale, 0, "nothing references an old epoch");
    for (ino, s, n) in [(old, &s_old, 4), (new, &s_new, 3)] {
        for i in 0..n {
            let e = &slot(ino, s, i)[..ENTRY];
            let h = halves(e)[set_half(e)].unwrap();
            let g = h.keygen;
            let e: i64 = c
                .query_row(
                    "SELECT epoch FROM file_keys WHERE ino = ?1 AND keygen = ?2",
                    [ino.0, g.0 as i64],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(e, 3);
        }
    }
    assert_eq!(get(&wa, new).unwrap(), data(2, 3 * BLOCK_SIZE));
    assert_eq!(get(&wa, old).unwrap(), expect);
    assert_eq!(wa.lookup(r, b"new").unwrap().ino, new);
    // Resumable: running it again on a finished circle rotates and redoes;
    // the data still reads.
    let resp = circlefs::control::execute(
        &t.vault,
        &a,
        &circlefs::control::parse_line("circle rekey c --reencrypt").unwrap(),
    );
    assert_eq!(resp.status.code(), 200, "{}", resp.text());
    let wa = ws(&t, "alice");
    assert_eq!(get(&wa, old).unwrap(), expect);
}

/// A removal by a sysadmin who is no trustee cannot re-seal (it holds no
/// circle key): new writes still use the new epoch at once, and the next
/// session of a remaining trustee finishes the re-seal and destroys the old
/// epoch's keys.
#[test]
fn removal_by_non_trustee_is_finished_by_the_next_trustee_session() {
    let t = TempStore::new();
    alice_and_bob_share_c(&t);
    let admin = t.admin();
    let wa = ws(&t, "alice");
    let r = root(&wa, "c");
    let f = put(&wa, r, "f", &data(7, 2 * BLOCK_SIZE));
    drop(wa);
    assert_eq!(ex(&t, &admin, "user delete bob"), 200);
    let c = Connection::open(t.db()).unwrap();
    let count = |q: &str| -> i64 { c.query_row(q, [], |r| r.get(0)).unwrap() };
    assert_eq!(
        count("SELECT COUNT(*) FROM meta WHERE key LIKE 'reseal:%'"),
        1
    );
    assert_eq!(count("SELECT COUNT(*) FROM circle_keys WHERE epoch = 1"), 1);
    // Alice's next session finishes it.
    let wa = ws(&t, "alice");
    assert_eq!(
        count("SELECT COUNT(*) FROM meta WHERE key LIKE 'reseal:%'"),
        0
    );
    assert_eq!(count("SELECT COUNT(*) FROM circle_keys WHERE epoch = 1"), 0);
    assert_eq!(
        count(
            "SELECT (SELECT COUNT(*) FROM file_keys WHERE epoch != 2) \
             + (SELECT COUNT(*) FROM dirents WHERE epoch != 2) \
             + (SELECT COUNT(*) FROM inodes WHERE epoch != 2)"
        ),
        0
    );
    assert_eq!(get(&wa, f).unwrap(), data(7, 2 * BLOCK_SIZE));
    assert_eq!(wa.lookup(r, b"f").unwrap().ino, f);
    // The old key generation is not reused: the next write starts a new one.
    wa.open(f, true, false).unwrap();
    wa.write(f, 0, b"x").unwrap();
    wa.release(f).unwrap();
    assert_eq!(
        count("SELECT MAX(keygen) FROM file_keys WHERE origin = 2"),
        2,
        "a new generation created in epoch 2"
    );
}

#[test]
fn concurrent_readers_see_whole_blocks_while_a_writer_rewrites_them() {
    // Reads decrypt after dropping the file's lock: they must still see each
    // block entirely old or entirely new, and never fail, while another
    // thread rewrites the blocks one by one, grows and shrinks the file.
    let (_t, w, r1, _) = setup();
    let nb = 3 * INLINE_SLOTS as usize;
    let f = put(&w, r1, "f", &vec![0u8; nb * BLOCK_SIZE]);
    let g = put(&w, r1, "g", &vec![0u8; 2 * BLOCK_SIZE]);
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|sc| {
        for ino in [f, g] {
            w.open(ino, true, false).unwrap();
        }
        let mut readers = Vec::new();
        for (ino, blocks) in [(f, nb), (g, 2), (f, nb)] {
            let (w, stop) = (&w, &stop);
            readers.push(sc.spawn(move || {
                let mut reads = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let got = w.read(ino, 0, (blocks * BLOCK_SIZE) as u32).unwrap();
                    for (i, b) in got.chunks(BLOCK_SIZE).enumerate() {
                        assert!(
                            b.iter().all(|x| *x == b[0]),
                            "block {i} of {ino} mixes two writes"
                        );
                    }
                    reads += 1;
                }
                reads
            }));
        }
        for round in 1..=20u8 {
            for i in 0..nb {
                w.write(f, (i * BLOCK_SIZE) as u64, &vec![round; BLOCK_SIZE])
                    .unwrap();
            }
            for i in 0..2 {
                w.write(g, (i * BLOCK_SIZE) as u64, &vec![round; BLOCK_SIZE])
                    .unwrap();
            }
            // Past the inline limit and back: g moves to a block file.
            w.write(g, (nb * BLOCK_SIZE) as u64, b"x").unwrap();
            w.truncate(g, 2 * BLOCK_SIZE as u64).unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for r in readers {
            assert!(r.join().unwrap() > 0);
        }
        for ino in [f, g] {
            w.release(ino).unwrap();
        }
    });
    assert_eq!(get(&w, f).unwrap(), vec![20u8; nb * BLOCK_SIZE]);
    assert_eq!(get(&w, g).unwrap(), vec![20u8; 2 * BLOCK_SIZE]);
}

#[test]
fn a_store_with_layout_1_content_is_refused_untouched() {
    let (t, w, r1, _) = setup();
    let f = put(&w, r1, "f", &data(1, 100));
    let version = || -> i64 {
        Connection::open(t.db())
            .unwrap()
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap()
    };
    assert_eq!(version(), circlefs::store::schema::LAYOUT_2);
    // As a build before block layout 2 left it: schema version 5, content.
    Connection::open(t.db())
        .unwrap()
        .pragma_update(None, "user_version", 5)
        .unwrap();
    let before = slots_of(&t, f).read();
    let e = circlefs::store::Store::open(&t.store()).unwrap_err();
    assert!(
        e.to_string().contains("block layout 1"),
        "a clear refusal: {e}"
    );
    assert_eq!(version(), 5, "nothing migrated");
    assert_eq!(slots_of(&t, f).read(), before, "the content untouched");
    // Without content, the store migrates.
    slots_of(&t, f).remove();
    circlefs::store::Store::open(&t.store()).unwrap();
    assert_eq!(version(), circlefs::store::schema::LAYOUT_2);
}
