//! Several mounts of one store: close-to-open consistency between two
//! accounts, and a bounded concurrency soak (4 workers over 2 mounts doing
//! random file operations, then every file decrypts and matches a model).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod util;

use std::collections::HashMap;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use util::{Mount, TempStore, fuse_available, stdout};

/// A store where alice and bob are trustees of circle `s`.
fn alice_and_bob() -> TempStore {
    let t = TempStore::new();
    t.alice_and_bob();
    t
}

/// `user`'s mount of `t` at `<dir>/<name>`.
fn mount_as(t: &TempStore, user: &str, name: &str) -> Mount {
    Mount::new(
        &t.store(),
        &t.dir.path().join(name),
        user,
        &t.pwfile(user),
        &[],
    )
}

fn two_mounts() -> (TempStore, Mount, Mount) {
    let t = alice_and_bob();
    let a = mount_as(&t, "alice", "a");
    let b = mount_as(&t, "bob", "b");
    (t, a, b)
}

#[test]
fn close_to_open_between_two_accounts() {
    if !fuse_available() {
        return;
    }
    let (_t, a, b) = two_mounts();
    fs::write(a.path("s/f"), b"from alice").unwrap();
    assert_eq!(fs::read(b.path("s/f")).unwrap(), b"from alice");
    let mut h = fs::OpenOptions::new()
        .append(true)
        .open(b.path("s/f"))
        .unwrap();
    h.write_all(b" + bob").unwrap();
    drop(h);
    assert_eq!(fs::read(a.path("s/f")).unwrap(), b"from alice + bob");
    fs::write(b.path("s/f"), b"short").unwrap();
    assert_eq!(fs::read(a.path("s/f")).unwrap(), b"short");
    // Alice's kernel holds fresh attributes and the pages (kept across
    // opens); bob rewrites in place, same size: her next open still sees it.
    fs::write(a.path("s/g"), b"0000000000").unwrap();
    for round in 1..=5u8 {
        assert_eq!(fs::metadata(a.path("s/g")).unwrap().len(), 10);
        let _ = fs::read(a.path("s/g")).unwrap();
        let text = vec![b'0' + round; 10];
        let mut h = fs::OpenOptions::new()
            .write(true)
            .open(b.path("s/g"))
            .unwrap();
        h.write_all(&text).unwrap();
        drop(h);
        assert_eq!(fs::read(a.path("s/g")).unwrap(), text, "round {round}");
    }
    // Concurrent O_APPEND from both mounts: nothing lost.
    let pa = a.path("s/log");
    let pb = b.path("s/log");
    let ta = std::thread::spawn(move || {
        for i in 0..200 {
            let mut f = fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&pa)
                .unwrap();
            f.write_all(format!("a{i}\n").as_bytes()).unwrap();
        }
    });
    let tb = std::thread::spawn(move || {
        for i in 0..200 {
            let mut f = fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&pb)
                .unwrap();
            f.write_all(format!("b{i}\n").as_bytes()).unwrap();
        }
    });
    ta.join().unwrap();
    tb.join().unwrap();
    let text = fs::read_to_string(a.path("s/log")).unwrap();
    assert_eq!(text.lines().count(), 400);
    for i in 0..200 {
        assert!(text.contains(&format!("a{i}\n")) && text.contains(&format!("b{i}\n")));
    }
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// One worker: its own files (model kept in memory) plus a private region
/// of a shared file, through one mount; reads the others' files through it.
fn worker(id: usize, root: PathBuf, deadline: Instant) -> (HashMap<String, Vec<u8>>, Vec<u8>, u64) {
    let mut rng = Rng(0x9e3779b97f4a7c15 ^ ((id as u64 + 1) * 0x1234567));
    let mut model: HashMap<String, Vec<u8>> = HashMap::new();
    let region = 3 * 4096 + 100;
    let mut shared = vec![0u8; region];
    let mut ops = 0;
    while Instant::now() < deadline {
        ops += 1;
        let name = format!("w{id}-{}", rng.below(6));
        let p = root.join(&name);
        match rng.below(9) {
            0 | 1 => {
                // write a random range
                let cur = model.get(&name).cloned().unwrap_or_default();
                let off = rng.below(cur.len() as u64 + 9000) as usize;
                let n = 1 + rng.below(10000) as usize;
                let data = rng.bytes(n);
                let mut f = fs::OpenOptions::new()
                    .create(true)
                    .write(true)
                    .truncate(false)
                    .open(&p)
                    .unwrap();
                f.seek(SeekFrom::Start(off as u64)).unwrap();
                f.write_all(&data).unwrap();
                let m = model.entry(name.clone()).or_default();
                if m.len() < off + data.len() {
                    m.resize(off + data.len(), 0);
                }
                m[off..off + data.len()].copy_from_slice(&data);
                if rng.below(4) == 0 {
                    f.sync_all().unwrap();
                }
            }
            2 => {
                if let Some(m) = model.get_mut(&name) {
                    let n = rng.below(m.len() as u64 + 5000) as usize;
                    fs::OpenOptions::new()
                        .write(true)
                        .open(&p)
                        .unwrap()
                        .set_len(n as u64)
                        .unwrap();
                    m.resize(n, 0);
                }
            }
            3 => {
                if model.remove(&name).is_some() {
                    fs::remove_file(&p).unwrap();
                }
            }
            4 => {
                let to = format!("w{id}-{}", rng.below(6));
                if to != name
                    && let Some(m) = model.remove(&name)
                {
                    fs::rename(&p, root.join(&to)).unwrap();
                    model.insert(to, m);
                }
            }
            5 => {
                if let Some(m) = model.get(&name) {
                    assert_eq!(&fs::read(&p).unwrap(), m, "worker {id} {name}");
                }
            }
            6 => {
                // our region of the shared file
                let off = rng.below(region as u64 - 1) as usize;
                let len = (1 + rng.below(5000) as usize).min(region - off);
                let data = rng.bytes(len);
                let mut f = fs::OpenOptions::new()
                    .create(true)
                    .write(true)
                    .truncate(false)
                    .open(root.join("shared"))
                    .unwrap();
                f.seek(SeekFrom::Start((id * region + off) as u64)).unwrap();
                f.write_all(&data).unwrap();
                shared[off..off + len].copy_from_slice(&data);
            }
            7 => {
                // read someone else's file: it may change or vanish, but never EIO
                let other = format!("w{}-{}", rng.below(4), rng.below(6));
                if let Ok(mut f) = fs::File::open(root.join(&other)) {
                    let mut v = Vec::new();
                    if let Err(e) = f.read_to_end(&mut v) {
                        assert_ne!(e.raw_os_error(), Some(libc::EIO), "EIO reading {other}");
                    }
                }
            }
            _ => {
                let _ = fs::read_dir(&root).unwrap().count();
            }
        }
    }
    (model, shared, ops)
}

#[test]
fn concurrency_soak() {
    if !fuse_available() {
        return;
    }
    let secs: u64 = std::env::var("CIRCLEFS_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    soak(secs, None);
}

/// The soak with alice's mount alone for its first seconds (so her new
/// files' writes wait in her daemon: write-behind) and bob's joining while
/// her workers keep going.
#[test]
fn soak_with_a_mount_that_joins() {
    if !fuse_available() {
        return;
    }
    soak(12, Some(Duration::from_secs(4)));
}

/// Four workers over alice's and bob's mounts for `secs` seconds (bob's
/// mount and workers start `bob_after` into it, if given), then every
/// file, read through a fresh mount, matches the workers' models.
fn soak(secs: u64, bob_after: Option<Duration>) {
    let t = alice_and_bob();
    let a = mount_as(&t, "alice", "a");
    let start = Instant::now();
    let deadline = start + Duration::from_secs(secs);
    let spawn = |i: usize, r: PathBuf| std::thread::spawn(move || worker(i, r, deadline));
    let mut handles = vec![(0, spawn(0, a.path("s"))), (2, spawn(2, a.path("s")))];
    if let Some(d) = bob_after {
        std::thread::sleep(d);
    }
    let b = mount_as(&t, "bob", "b");
    handles.push((1, spawn(1, b.path("s"))));
    handles.push((3, spawn(3, b.path("s"))));
    handles.sort_by_key(|h| h.0);
    let results: Vec<_> = handles.into_iter().map(|h| h.1.join().unwrap()).collect();
    let total_ops: u64 = results.iter().map(|r| r.2).sum();
    eprintln!("soak: {total_ops} operations in {secs} s over 2 mounts");
    drop(a);
    drop(b);
    let m = mount_as(&t, "alice", "check");
    let region = 3 * 4096 + 100;
    let shared = fs::read(m.path("s/shared")).unwrap_or_default();
    for (id, (model, sh, _)) in results.iter().enumerate() {
        for k in 0..6 {
            let name = format!("w{id}-{k}");
            match model.get(&name) {
                Some(v) => assert_eq!(
                    &fs::read(m.path(&format!("s/{name}"))).unwrap(),
                    v,
                    "{name}"
                ),
                None => assert!(
                    !m.path(&format!("s/{name}")).exists(),
                    "{name} should not exist"
                ),
            }
        }
        if shared.len() >= (id + 1) * region {
            assert_eq!(
                &shared[id * region..(id + 1) * region],
                &sh[..],
                "shared region of worker {id}"
            );
        } else {
            assert!(
                sh.iter().all(|b| *b == 0) || shared.len() > id * region,
                "worker {id}'s shared writes lost"
            );
        }
    }
}

#[test]
fn revocation_and_deletion_reach_running_mounts() {
    if !fuse_available() {
        return;
    }
    let (t, a, b) = two_mounts();
    fs::write(a.path("s/doc"), vec![7u8; 50_000]).unwrap();
    // Bob reads in a loop; alice removes him; the loop must start failing within 1 s.
    let p = b.path("s/doc");
    let reader = std::thread::spawn(move || {
        let start = Instant::now();
        let mut last_ok = None;
        let mut failed_at = None;
        let mut h = fs::File::open(&p).ok();
        while start.elapsed() < Duration::from_secs(10) {
            let ok = match h.as_mut() {
                Some(f) => {
                    let mut v = Vec::new();
                    f.seek(SeekFrom::Start(0)).is_ok()
                        && f.read_to_end(&mut v)
                            .map(|_| v.len() == 50_000)
                            .unwrap_or(false)
                }
                None => false,
            };
            if ok {
                last_ok = Some(Instant::now());
            } else if last_ok.is_some() {
                failed_at = Some(Instant::now());
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        (last_ok, failed_at)
    });
    // Alice keeps reading, listing and writing through the removal: the
    // re-seal under the new epoch must never show her an error.
    let pa = a.path("s");
    let alice_loop = std::thread::spawn(move || {
        let start = Instant::now();
        let mut n = 0u32;
        while start.elapsed() < Duration::from_millis(2500) {
            let v = fs::read(pa.join("doc")).expect("alice reads during the removal");
            assert_eq!(v.len(), 50_000);
            let names: Vec<_> = fs::read_dir(&pa)
                .expect("alice lists during the removal")
                .map(|e| e.unwrap().file_name())
                .collect();
            assert!(names.iter().any(|x| x == "doc"));
            fs::write(pa.join(format!("a{}", n % 5)), n.to_le_bytes())
                .expect("alice writes during the removal");
            n += 1;
        }
        n
    });
    std::thread::sleep(Duration::from_millis(300));
    let removed_at = Instant::now();
    assert!(stdout(&t.admin_cli("alice", &["trustee", "remove", "s", "bob"])).starts_with("200"));
    assert!(alice_loop.join().unwrap() > 5);
    let (last_ok, failed_at) = reader.join().unwrap();
    let failed_at = failed_at.expect("bob's read loop never failed");
    assert!(last_ok.is_some());
    assert!(
        failed_at.duration_since(removed_at) < Duration::from_secs(1),
        "took {:?}",
        failed_at.duration_since(removed_at)
    );
    assert!(
        !b.path("s").exists(),
        "the circle directory is gone from bob's mount"
    );
    assert_eq!(
        fs::read(a.path("s/doc")).unwrap().len(),
        50_000,
        "alice unaffected"
    );
    // Deleting the circle removes it from alice's running mount too, and its blocks.
    let blocks_before = util::all_files(&t.store().join("blocks")).len();
    assert!(blocks_before > 0);
    let inline_rows = || -> i64 {
        rusqlite::Connection::open(t.db())
            .unwrap()
            .query_row("SELECT COUNT(*) FROM inline_slots", [], |r| r.get(0))
            .unwrap()
    };
    assert!(inline_rows() > 0, "alice's small files are inline");
    assert!(stdout(&t.admin_cli("alice", &["circle", "delete", "s"])).starts_with("200"));
    std::thread::sleep(Duration::from_millis(1000));
    assert!(!a.path("s").exists());
    assert_eq!(
        util::all_files(&t.store().join("blocks")).len(),
        0,
        "every block file of the circle is removed"
    );
    assert_eq!(inline_rows(), 0, "and every inline row");
}

/// Poll `f` until it holds (the other mount's change feed is read every
/// 250 ms); false after 5 s, far below the 30 s attribute cache time.
fn within_feed_delay(mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn other_mounts_changes_reach_a_warm_kernel_cache() {
    if !fuse_available() {
        return;
    }
    let (_t, a, b) = two_mounts();
    fs::create_dir(a.path("s/d")).unwrap();
    fs::write(a.path("s/d/keep"), b"1").unwrap();
    fs::write(a.path("s/d/gone"), b"2").unwrap();
    fs::write(a.path("s/d/old"), b"3").unwrap();
    // Bob's kernel caches the names and attributes (30 s).
    assert_eq!(fs::metadata(b.path("s/d/keep")).unwrap().len(), 1);
    assert!(b.path("s/d/gone").exists());
    assert!(b.path("s/d/old").exists());
    assert!(!b.path("s/d/later").exists()); // a cached absence
    let names = |dir: &std::path::Path| {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    };
    // Twice: the second listing is served from the kernel's cache.
    assert_eq!(names(&b.path("s/d")), ["gone", "keep", "old"]);
    assert_eq!(names(&b.path("s/d")), ["gone", "keep", "old"]);
    let bob_dir_mtime = fs::metadata(b.path("s/d")).unwrap().modified().unwrap();
    std::thread::sleep(Duration::from_millis(20));

    // Alice grows a file, deletes one, renames one, changes a mode.
    fs::OpenOptions::new()
        .append(true)
        .open(a.path("s/d/keep"))
        .unwrap()
        .write_all(b"2345")
        .unwrap();
    fs::remove_file(a.path("s/d/gone")).unwrap();
    fs::rename(a.path("s/d/old"), a.path("s/d/new")).unwrap();
    fs::write(a.path("s/d/later"), b"now").unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(a.path("s/d/new"), fs::Permissions::from_mode(0o600)).unwrap();

    // Bob's stat sees each change without opening anything.
    assert!(within_feed_delay(|| fs::metadata(b.path("s/d/keep"))
        .map(|m| m.len() == 5)
        .unwrap_or(false)));
    assert!(within_feed_delay(|| !b.path("s/d/gone").exists()));
    assert!(within_feed_delay(|| !b.path("s/d/old").exists()));
    assert!(within_feed_delay(|| b.path("s/d/later").exists()));
    assert_eq!(fs::read(b.path("s/d/later")).unwrap(), b"now");
    assert!(within_feed_delay(
        || names(&b.path("s/d")) == ["keep", "later", "new"]
    ));
    assert!(within_feed_delay(|| fs::metadata(b.path("s/d/new"))
        .map(|m| m.permissions().mode() & 0o777 == 0o600)
        .unwrap_or(false)));
    assert!(within_feed_delay(|| fs::metadata(b.path("s/d"))
        .map(|m| m.modified().unwrap() > bob_dir_mtime)
        .unwrap_or(false)));
    // Bob's own changes do not come back to him as invalidations (nothing
    // to check from outside but that they are still right).
    fs::write(b.path("s/d/bob"), b"b").unwrap();
    assert_eq!(fs::read(a.path("s/d/bob")).unwrap(), b"b");
}

#[test]
fn pending_writes_of_a_mount_that_was_alone_reach_one_that_joins() {
    if !fuse_available() {
        return;
    }
    let t = alice_and_bob();
    let a = mount_as(&t, "alice", "a");
    // Alone: the first writes of a new small file wait in alice's daemon
    // (write-behind) until its change poll stores them, though the file
    // stays open. (No process is spawned meanwhile: a child closes this
    // process's descriptors at exec, and every close is a flush, which
    // stores them too.)
    let mut h = fs::File::create(a.path("s/f")).unwrap();
    h.write_all(b"written while alone").unwrap();
    let db =
        rusqlite::Connection::open_with_flags(t.db(), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let rows = || -> i64 {
        db.query_row("SELECT count(*) FROM inline_slots", [], |r| r.get(0))
            .unwrap()
    };
    assert!(
        within_feed_delay(|| rows() == 1),
        "the poll did not store the content of a file kept open"
    );
    let b = mount_as(&t, "bob", "b");
    // Alice's change poll stores them; bob's change feed brings them in.
    assert!(
        within_feed_delay(|| fs::read(b.path("s/f")).unwrap() == b"written while alone"),
        "bob never saw the content of a file alice keeps open"
    );
    // And the file is not locked against bob: he appends, alice reads.
    let mut hb = fs::OpenOptions::new()
        .append(true)
        .open(b.path("s/f"))
        .unwrap();
    hb.write_all(b" + bob").unwrap();
    drop(hb);
    drop(h);
    assert!(within_feed_delay(
        || fs::read(a.path("s/f")).unwrap() == b"written while alone + bob"
    ));
}
