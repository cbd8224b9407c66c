//! Real FUSE mounts: POSIX behaviour, control file, trust levels, real
//! programs, tamper detection, marker scan, crash recovery, mount refusals.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod util;

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use util::{Mount, TempStore, bin, fuse_available, scan, stdout};

fn setup(circle: &str) -> (TempStore, Mount) {
    setup_with(circle, &[])
}

/// A store with `circle`, mounted by its admin with mount options `opts`.
fn setup_with(circle: &str, opts: &[&str]) -> (TempStore, Mount) {
    let t = TempStore::new();
    let o = t.admin_cli("admin", &["circle", "create", circle]);
    assert!(o.status.success(), "{}", stdout(&o));
    let m = Mount::new(
        &t.store(),
        &t.dir.path().join("mnt"),
        "admin",
        &t.pwfile("admin"),
        opts,
    );
    (t, m)
}

fn errno_of(r: std::io::Result<impl Sized>) -> i32 {
    match r {
        Ok(_) => 0,
        Err(e) => e.raw_os_error().unwrap_or(-1),
    }
}

fn sh(dir: &Path, script: &str) -> String {
    let o = Command::new("bash")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{script}\nstdout: {}\nstderr: {}",
        stdout(&o),
        String::from_utf8_lossy(&o.stderr)
    );
    stdout(&o)
}

fn pattern(seed: u32, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2654435761).max(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

#[test]
fn posix_operations() {
    if !fuse_available() {
        return;
    }
    let (_t, m) = setup("c");
    let d = m.path("c");
    // Random-offset writes against a model, across block boundaries and far holes.
    let p = d.join("model");
    let mut f = fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&p)
        .unwrap();
    let mut model = vec![0u8; 0];
    let bs = circlefs::format::block::BLOCK_SIZE;
    for (k, (off, len)) in [
        (0, 10),
        (bs - 3, 7),
        (bs * 2 - 1, bs + 2),
        (5, 3),
        (bs * 40 + 11, 100),
        (bs * 3, 1),
    ]
    .iter()
    .enumerate()
    {
        let data = pattern(k as u32 + 1, *len);
        f.seek(SeekFrom::Start(*off as u64)).unwrap();
        f.write_all(&data).unwrap();
        if model.len() < off + len {
            model.resize(off + len, 0);
        }
        model[*off..off + len].copy_from_slice(&data);
    }
    f.sync_all().unwrap();
    drop(f);
    assert_eq!(fs::read(&p).unwrap(), model);
    // Truncate shrink and grow: the grown part reads as zeros.
    let f = fs::OpenOptions::new().write(true).open(&p).unwrap();
    f.set_len(bs as u64 + 5).unwrap();
    f.set_len(3 * bs as u64).unwrap();
    drop(f);
    let got = fs::read(&p).unwrap();
    assert_eq!(&got[..bs + 5], &model[..bs + 5]);
    assert!(got[bs + 5..].iter().all(|b| *b == 0));
    // O_EXCL, O_TRUNC, O_APPEND.
    assert_eq!(
        errno_of(fs::OpenOptions::new().write(true).create_new(true).open(&p)),
        libc::EEXIST
    );
    fs::write(&p, b"short").unwrap();
    assert_eq!(fs::read(&p).unwrap(), b"short");
    let mut a = fs::OpenOptions::new().append(true).open(&p).unwrap();
    a.write_all(b"+tail").unwrap();
    drop(a);
    assert_eq!(fs::read(&p).unwrap(), b"short+tail");
    // chmod, chown, utimes.
    fs::set_permissions(&p, fs::Permissions::from_mode(0o640)).unwrap();
    assert_eq!(fs::metadata(&p).unwrap().mode() & 0o7777, 0o640);
    std::os::unix::fs::chown(&p, Some(1234), Some(4321)).unwrap();
    let md = fs::metadata(&p).unwrap();
    assert_eq!((md.uid(), md.gid()), (1234, 4321));
    let ts = nix::sys::time::TimeSpec::new(1_000_000, 5);
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        &p,
        &ts,
        &nix::sys::time::TimeSpec::UTIME_OMIT,
        nix::sys::stat::UtimensatFlags::FollowSymlink,
    )
    .unwrap();
    let md = fs::metadata(&p).unwrap();
    assert_eq!((md.atime(), md.atime_nsec()), (1_000_000, 5));
    assert_ne!(md.mtime(), 1_000_000);
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        &p,
        &nix::sys::time::TimeSpec::UTIME_OMIT,
        &nix::sys::time::TimeSpec::UTIME_NOW,
        nix::sys::stat::UtimensatFlags::FollowSymlink,
    )
    .unwrap();
    assert!(fs::metadata(&p).unwrap().mtime() > 1_000_000);
    // Directories.
    fs::create_dir(d.join("sub")).unwrap();
    fs::write(d.join("sub/x"), b"x").unwrap();
    assert_eq!(errno_of(fs::remove_dir(d.join("sub"))), libc::ENOTEMPTY);
    assert_eq!(fs::metadata(&d).unwrap().nlink(), 3);
    let mut names: Vec<_> = fs::read_dir(&d)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["model", "sub"]);
    // Unlink while open: readable until close.
    let q = d.join("open-unlinked");
    fs::write(&q, b"still here").unwrap();
    let mut h = fs::File::open(&q).unwrap();
    fs::remove_file(&q).unwrap();
    assert!(!q.exists());
    let mut s = String::new();
    h.read_to_string(&mut s).unwrap();
    assert_eq!(s, "still here");
    drop(h);
    // Rename: replace, NOREPLACE, EXCHANGE.
    fs::write(d.join("r1"), b"one").unwrap();
    fs::write(d.join("r2"), b"two").unwrap();
    let noreplace = nix::fcntl::renameat2(
        nix::fcntl::AT_FDCWD,
        &d.join("r1"),
        nix::fcntl::AT_FDCWD,
        &d.join("r2"),
        nix::fcntl::RenameFlags::RENAME_NOREPLACE,
    );
    assert_eq!(noreplace, Err(nix::errno::Errno::EEXIST));
    nix::fcntl::renameat2(
        nix::fcntl::AT_FDCWD,
        &d.join("r1"),
        nix::fcntl::AT_FDCWD,
        &d.join("r2"),
        nix::fcntl::RenameFlags::RENAME_EXCHANGE,
    )
    .unwrap();
    assert_eq!(
        (
            fs::read(d.join("r1")).unwrap(),
            fs::read(d.join("r2")).unwrap()
        ),
        (b"two".to_vec(), b"one".to_vec())
    );
    fs::rename(d.join("r1"), d.join("r2")).unwrap();
    assert_eq!(fs::read(d.join("r2")).unwrap(), b"two");
    fs::rename(d.join("r2"), d.join("sub/moved")).unwrap();
    assert_eq!(fs::read(d.join("sub/moved")).unwrap(), b"two");
    // Symlinks and hard links.
    std::os::unix::fs::symlink("sub/moved", d.join("ln")).unwrap();
    assert_eq!(
        fs::read_link(d.join("ln")).unwrap(),
        PathBuf::from("sub/moved")
    );
    assert_eq!(fs::read(d.join("ln")).unwrap(), b"two");
    fs::hard_link(d.join("sub/moved"), d.join("hard")).unwrap();
    assert_eq!(fs::metadata(d.join("hard")).unwrap().nlink(), 2);
    assert_eq!(
        fs::metadata(d.join("hard")).unwrap().ino(),
        fs::metadata(d.join("sub/moved")).unwrap().ino()
    );
    // Names: 255 bytes ok, 256 too long, arbitrary bytes.
    let long = "n".repeat(255);
    fs::write(d.join(&long), b"l").unwrap();
    assert_eq!(
        errno_of(fs::write(d.join("n".repeat(256)), b"l")),
        libc::ENAMETOOLONG
    );
    use std::os::unix::ffi::OsStrExt;
    let odd = std::ffi::OsStr::from_bytes(b"\xff\xfe bytes \x01");
    fs::write(d.join(odd), b"odd").unwrap();
    assert_eq!(fs::read(d.join(odd)).unwrap(), b"odd");
    // statfs, fallocate, xattrs, mmap.
    let st = nix::sys::statvfs::statvfs(&d).unwrap();
    assert!(st.blocks() > 0 && st.name_max() == 255);
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(d.join("mm"))
        .unwrap();
    nix::fcntl::posix_fallocate(&f, 0, 3 * 4096).unwrap();
    assert_eq!(f.metadata().unwrap().len(), 3 * 4096);
    drop(f);
    let o = Command::new("python3")
        .arg("-c")
        .arg(
            "import mmap,sys,os\nf=open(sys.argv[1],'r+b')\nm=mmap.mmap(f.fileno(),0)\nm[4000:4010]=b'0123456789'\nm.flush()\nm.close()\nf.close()\nprint(open(sys.argv[1],'rb').read()[3998:4012])\nos.setxattr(sys.argv[1],'user.k',b'v')\nprint(os.getxattr(sys.argv[1],'user.k'))",
        )
        .arg(d.join("mm"))
        .output()
        .unwrap();
    assert_eq!(
        stdout(&o),
        "b'\\x00\\x000123456789\\x00\\x00'\nb'v'\n",
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // Top-level entries are only created through circle commands.
    assert_eq!(errno_of(fs::create_dir(m.path("newcircle"))), libc::EPERM);
    assert_eq!(errno_of(fs::write(m.path("file"), b"x")), libc::EPERM);
    assert_eq!(errno_of(fs::remove_dir(m.path("c"))), libc::EPERM);
}

#[test]
fn control_file() {
    if !fuse_available() {
        return;
    }
    let (t, m) = setup("c");
    let ctl = m.path(".circlefs/control");
    assert_eq!(fs::metadata(&ctl).unwrap().mode() & 0o777, 0o600);
    let out = sh(
        m.mp.as_path(),
        "echo 'circle create x' > .circlefs/control; cat .circlefs/control",
    );
    assert!(out.starts_with("200 OK: circle x created"), "{out}");
    assert!(
        m.path("x").is_dir(),
        "a circle created through the control file appears at once"
    );
    let out = sh(
        m.mp.as_path(),
        "echo 'circle frob' > .circlefs/control; cat .circlefs/control",
    );
    assert!(out.starts_with("400 "), "{out}");
    let long = format!("circle create {}", "y".repeat(5000));
    let out = sh(
        m.mp.as_path(),
        &format!("echo '{long}' > .circlefs/control; cat .circlefs/control"),
    );
    assert!(out.starts_with("400 "), "{out}");
    // Two handles, each reads its own responses.
    let mut h1 = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&ctl)
        .unwrap();
    let mut h2 = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&ctl)
        .unwrap();
    h1.write_all(b"circle list\n").unwrap();
    h2.write_all(b"user info nosuch\n").unwrap();
    let mut r1 = String::new();
    let mut r2 = String::new();
    h1.seek(SeekFrom::Start(0)).unwrap();
    h2.seek(SeekFrom::Start(0)).unwrap();
    h1.read_to_string(&mut r1).unwrap();
    h2.read_to_string(&mut r2).unwrap();
    assert!(
        r1.starts_with("200 OK: 2 circles") && !r1.contains("404"),
        "{r1}"
    );
    assert!(r2.starts_with("404 ") && !r2.contains("circles"), "{r2}");
    // circlefs control.
    let o = bin()
        .arg("control")
        .arg(&m.mp)
        .args(["circle", "list"])
        .output()
        .unwrap();
    assert!(
        o.status.success() && stdout(&o).contains("x admin"),
        "{}",
        stdout(&o)
    );
    let o = bin()
        .arg("control")
        .arg(&m.mp)
        .args(["trustee", "add", "nosuch", "nobody"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(44), "{}", stdout(&o));
    let o = bin()
        .arg("control")
        .arg(&m.mp)
        .args(["--json", "circle", "info", "x"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["code"], 200);
    assert_eq!(v["data"]["trustees"][0]["name"], "admin");
    let mut c = bin()
        .arg("control")
        .arg(&m.mp)
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin
        .take()
        .unwrap()
        .write_all(b"circle create z\ncircle info z\n")
        .unwrap();
    let o = c.wait_with_output().unwrap();
    assert!(o.status.success());
    let text = stdout(&o);
    assert!(
        text.contains("200 OK: circle z created") && text.contains("trustee: admin admin"),
        "{text}"
    );
    // A read trustee cannot manage through the control file, nor write.
    assert!(
        t.admin_cli(
            "admin",
            &[
                "user",
                "create",
                "rita",
                "--new-passphrase-file",
                t.pwfile("admin").to_str().unwrap()
            ]
        )
        .status
        .success()
    );
    fs::copy(t.pwfile("admin"), t.pwfile("rita")).unwrap();
    assert!(
        stdout(&t.admin_cli("admin", &["trustee", "add", "c", "rita", "--level", "read"]))
            .starts_with("200")
    );
    fs::write(m.path("c/doc"), b"shared").unwrap();
    let r = Mount::new(
        &t.store(),
        &t.dir.path().join("rita"),
        "rita",
        &t.pwfile("rita"),
        &[],
    );
    assert_eq!(fs::read(r.path("c/doc")).unwrap(), b"shared");
    let out = sh(
        r.mp.as_path(),
        "echo 'trustee add c admin' > .circlefs/control; cat .circlefs/control",
    );
    assert!(out.starts_with("403 ") || out.starts_with("409 "), "{out}");
    assert_eq!(errno_of(fs::write(r.path("c/doc"), b"x")), libc::EACCES);
    assert_eq!(errno_of(fs::write(r.path("c/new"), b"x")), libc::EACCES);
    assert_eq!(errno_of(fs::remove_file(r.path("c/doc"))), libc::EACCES);
    assert_eq!(
        errno_of(fs::rename(r.path("c/doc"), r.path("c/doc2"))),
        libc::EACCES
    );
    assert_eq!(fs::read(m.path("c/doc")).unwrap(), b"shared");
    // Removal reaches the running mount within a second.
    assert!(stdout(&t.admin_cli("admin", &["trustee", "remove", "c", "rita"])).starts_with("200"));
    std::thread::sleep(std::time::Duration::from_millis(1000));
    assert!(!r.path("c").exists(), "revoked circle disappears");
}

#[test]
fn real_programs() {
    if !fuse_available() {
        return;
    }
    let (t, m) = setup("w");
    let d = m.path("w");
    // git: a few thousand files, commit, fsck, clean status.
    if util::which("git") {
        let out = sh(
            &d,
            "mkdir repo && cd repo && git init -q && for i in $(seq 1 60); do mkdir d$i; for j in $(seq 1 40); do echo \"file $i $j\" > d$i/f$j.txt; done; done \
             && git add -A && git -c user.email=t@t -c user.name=t commit -qm init && git fsck --strict 2>&1 && git status --porcelain | wc -l && git ls-files | wc -l",
        );
        let nums: Vec<&str> = out.split_whitespace().collect();
        assert_eq!(&nums[nums.len() - 2..], ["0", "2400"], "{out}");
    }
    // sqlite3: 100k rows and an integrity check.
    if util::which("sqlite3") {
        let out = sh(
            &d,
            "sqlite3 db.sqlite 'CREATE TABLE t(a INTEGER PRIMARY KEY, b TEXT); WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < 100000) INSERT INTO t SELECT x, hex(randomblob(16)) FROM c;' \
             && sqlite3 db.sqlite 'PRAGMA integrity_check; SELECT count(*) FROM t;'",
        );
        assert_eq!(out, "ok\n100000\n");
    }
    // tar x of a real tree, then diff -r against the source.
    let src = t.dir.path().join("src-tree");
    fs::create_dir_all(&src).unwrap();
    sh(
        &src,
        &format!(
            "cp -r {}/src . && cp -r /usr/share/doc/git . 2>/dev/null || true; ln -s src/lib.rs link",
            env!("CARGO_MANIFEST_DIR")
        ),
    );
    let tarball = t.dir.path().join("tree.tar");
    sh(&src, &format!("tar cf {} .", tarball.display()));
    sh(
        &d,
        &format!(
            "mkdir x && cd x && tar xf {} && diff -r --no-dereference {} .",
            tarball.display(),
            src.display()
        ),
    );
    // rsync in and out.
    if util::which("rsync") {
        let back = t.dir.path().join("back");
        sh(
            &d,
            &format!(
                "rsync -a {}/ in/ && rsync -a in/ {}/ && diff -r --no-dereference {} {}",
                src.display(),
                back.display(),
                src.display(),
                back.display()
            ),
        );
    }
    // Editor-style atomic save.
    fs::write(d.join("doc.txt"), b"old version").unwrap();
    sh(
        &d,
        "printf 'new version' > .doc.txt.swp && python3 -c \"import os;f=os.open('.doc.txt.swp',os.O_RDONLY);os.fsync(f)\" && mv .doc.txt.swp doc.txt",
    );
    assert_eq!(fs::read(d.join("doc.txt")).unwrap(), b"new version");
}

#[test]
fn tampering_through_the_mount_gives_eio() {
    if !fuse_available() {
        return;
    }
    let (t, m) = setup("c");
    // Past the inline limit: these files have block files (inline slots are
    // tampered with below FUSE, in tests/adversary.rs).
    let size =
        (circlefs::format::block::INLINE_SLOTS as usize + 2) * circlefs::format::block::BLOCK_SIZE;
    for n in ["a", "b", "c", "d", "e", "f", "ok"] {
        fs::write(
            m.path(&format!("c/{n}")),
            pattern(n.as_bytes()[0] as u32, size),
        )
        .unwrap();
    }
    let ino = |n: &str| {
        fs::metadata(m.path(&format!("c/{n}"))).unwrap().ino() - circlefs::fusefs::attr::INO_OFFSET
    };
    let inos: Vec<(String, u64)> = ["a", "b", "c", "d", "e", "f"]
        .iter()
        .map(|n| (n.to_string(), ino(n)))
        .collect();
    m.unmount();
    use circlefs::format::block::{ENTRY, PAGE, entry_offset, page_offset};
    // Block i of a block file: its entry and its data page.
    let ranges = |i: u64| {
        let e = entry_offset(i).unwrap() as usize;
        let p = page_offset(i).unwrap() as usize;
        (e..e + ENTRY, p..p + PAGE)
    };
    let get = |v: &[u8], i: u64| {
        let (e, p) = ranges(i);
        [&v[e], &v[p]].concat()
    };
    let set = |v: &mut [u8], i: u64, s: &[u8]| {
        let (e, p) = ranges(i);
        v[e].copy_from_slice(&s[..ENTRY]);
        v[p].copy_from_slice(&s[ENTRY..]);
    };
    let bp = |i: u64| {
        let hex = format!("{i:016x}");
        t.store().join("blocks").join(&hex[14..]).join(hex)
    };
    let path = |n: &str| bp(inos.iter().find(|(x, _)| x == n).unwrap().1);
    // a: flipped byte; b: two slots swapped; c/d: first slots swapped across files;
    // e: truncated by one page; f: wrapped file key swapped with c's.
    let mut v = fs::read(path("a")).unwrap();
    v[ranges(1).1.start + 100] ^= 1;
    fs::write(path("a"), v).unwrap();
    let mut v = fs::read(path("b")).unwrap();
    let (s0, s1) = (get(&v, 0), get(&v, 1));
    set(&mut v, 0, &s1);
    set(&mut v, 1, &s0);
    fs::write(path("b"), v).unwrap();
    let mut vc = fs::read(path("c")).unwrap();
    let mut vd = fs::read(path("d")).unwrap();
    let (sc, sd) = (get(&vc, 0), get(&vd, 0));
    set(&mut vc, 0, &sd);
    set(&mut vd, 0, &sc);
    fs::write(path("c"), vc).unwrap();
    fs::write(path("d"), vd).unwrap();
    let ve = fs::read(path("e")).unwrap();
    fs::write(path("e"), &ve[..ve.len() - PAGE]).unwrap();
    let db = rusqlite::Connection::open(t.db()).unwrap();
    let ic = inos.iter().find(|(x, _)| x == "c").unwrap().1 as i64;
    let ifl = inos.iter().find(|(x, _)| x == "f").unwrap().1 as i64;
    let wc: Vec<u8> = db
        .query_row("SELECT wrapped FROM file_keys WHERE ino = ?1", [ic], |r| {
            r.get(0)
        })
        .unwrap();
    db.execute(
        "UPDATE file_keys SET wrapped = ?1 WHERE ino = ?2",
        rusqlite::params![wc, ifl],
    )
    .unwrap();
    drop(db);
    let m = Mount::new(&t.store(), &m.mp, "admin", &t.pwfile("admin"), &[]);
    for n in ["a", "b", "c", "d", "e", "f"] {
        assert_eq!(
            errno_of(fs::read(m.path(&format!("c/{n}")))),
            libc::EIO,
            "{n}"
        );
    }
    assert_eq!(
        fs::read(m.path("c/ok")).unwrap(),
        pattern(b'o' as u32, size),
        "untouched file still reads"
    );
}

#[test]
fn nothing_in_clear_in_the_store() {
    if !fuse_available() {
        return;
    }
    let circle = "MARKER-CIRCLE-c3d4";
    let (t, m) = setup(circle);
    let d = m.path(circle);
    fs::create_dir(d.join("MARKER-DIR-11aa")).unwrap();
    fs::write(
        d.join("MARKER-DIR-11aa/MARKER-NAME-7f3a91"),
        "MARKER-DATA-5e6f ".repeat(1000),
    )
    .unwrap();
    std::os::unix::fs::symlink("MARKER-TARGET-9b8c", d.join("link")).unwrap();
    fs::write(d.join("one"), b"1").unwrap();
    fs::write(
        d.join("almost"),
        vec![7u8; circlefs::format::block::BLOCK_SIZE - 1],
    )
    .unwrap();
    let o = Command::new("python3")
        .arg("-c")
        .arg("import os,sys; os.setxattr(sys.argv[1], 'user.MARKER-XNAME-1', b'MARKER-XVAL-2')")
        .arg(d.join("one"))
        .output()
        .unwrap();
    assert!(o.status.success());
    let i1 = fs::metadata(d.join("one")).unwrap().ino() - circlefs::fusefs::attr::INO_OFFSET;
    let i2 = fs::metadata(d.join("almost")).unwrap().ino() - circlefs::fusefs::attr::INO_OFFSET;
    fs::write(d.join("deleted"), "MARKER-GONE-0d0d ".repeat(100)).unwrap();
    fs::remove_file(d.join("deleted")).unwrap();
    m.unmount();
    for marker in [
        "MARKER-CIRCLE-c3d4",
        "MARKER-DIR-11aa",
        "MARKER-NAME-7f3a91",
        "MARKER-DATA-5e6f",
        "MARKER-TARGET-9b8c",
        "MARKER-XNAME-1",
        "MARKER-XVAL-2",
        "MARKER-GONE-0d0d",
        "admin-pw",
    ] {
        assert!(
            scan(&t.store(), marker.as_bytes()).is_empty(),
            "{marker} found in the store"
        );
    }
    // Both are small: their slots are inline (one row each, no block file).
    let size = |i: u64| -> i64 {
        rusqlite::Connection::open(t.db())
            .unwrap()
            .query_row(
                "SELECT length(slots) FROM inline_slots WHERE ino = ?1",
                [i as i64],
                |r| r.get(0),
            )
            .unwrap()
    };
    assert_eq!(
        size(i1),
        size(i2),
        "1 byte and BLOCK_SIZE-1 bytes have the same footprint"
    );
}

/// How many of the daemon's threads have a name that `is` accepts, once
/// `want` have started (they start after the mount is up) or after 5 s.
fn threads_where(m: &Mount, is: impl Fn(&str) -> bool, want: usize) -> usize {
    let count = || tasks(m).iter().filter(|(c, _)| is(c)).count();
    for _ in 0..100 {
        if count() >= want {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    count()
}

/// The daemon's threads: name and `/proc/PID/task/TID` directory.
fn tasks(m: &Mount) -> Vec<(String, PathBuf)> {
    let pid = m.daemon_pid().expect("daemon pid");
    fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|e| {
            let dir = e.unwrap().path();
            let comm = fs::read_to_string(dir.join("comm")).ok()?;
            Some((comm.trim_end().to_owned(), dir))
        })
        .collect()
}

/// Threads serving a CPU's io_uring queue (`fuser-ring-CPU-N`).
fn threads_named(m: &Mount, prefix: &str, want: usize) -> usize {
    threads_where(m, |c| c.starts_with(prefix), want)
}

/// Threads reading the FUSE device (`fuser-0`, `fuser-1`, ...).
fn device_threads(m: &Mount, want: usize) -> usize {
    threads_where(
        m,
        |c| c.starts_with("fuser-") && !c.starts_with("fuser-ring-"),
        want,
    )
}

/// Whether the kernel offers FUSE over io_uring (`fuse.enable_uring`;
/// scripts/test.sh turns it on).
fn uring_enabled() -> bool {
    fs::read_to_string("/sys/module/fuse/parameters/enable_uring").is_ok_and(|s| s.trim() == "Y")
}

/// The kernel's io_uring queues: one per possible CPU.
fn possible_cpus() -> usize {
    let s = fs::read_to_string("/sys/devices/system/cpu/possible").unwrap();
    s.trim()
        .split(',')
        .map(|r| r.rsplit('-').next().unwrap().parse::<usize>().unwrap())
        .max()
        .unwrap()
        + 1
}

#[test]
fn device_threads_default_to_two_per_cpu() {
    if !fuse_available() {
        return;
    }
    let cpus = std::thread::available_parallelism().unwrap().get();
    let (_t, m) = setup_with("c", &["nouring"]);
    let want = (2 * cpus).clamp(4, 16);
    assert_eq!(device_threads(&m, want), want);
    assert_eq!(threads_named(&m, "fuser-ring-", 0), 0, "-o nouring");
    fs::write(m.path("c/f"), b"served").unwrap();
    assert_eq!(fs::read(m.path("c/f")).unwrap(), b"served");
    drop(m);
    let (_t, m) = setup_with("c", &["threads=1,nouring"]);
    fs::write(m.path("c/f"), b"one thread").unwrap();
    assert_eq!(fs::read(m.path("c/f")).unwrap(), b"one thread");
    // Requests served: the session's threads were all started before.
    assert_eq!(device_threads(&m, 1), 1, "-o threads=N is obeyed");
}

#[test]
fn uring_queues_serve_every_cpu_when_the_kernel_offers_them() {
    if !fuse_available() {
        return;
    }
    // The default (`-o uring` says the same).
    let (_t, m) = setup("c");
    if uring_enabled() {
        // Two threads per CPU queue, one thread left on the device.
        let want = 2 * possible_cpus();
        assert_eq!(threads_named(&m, "fuser-ring-", want), want);
        assert_eq!(device_threads(&m, 1), 1);
    } else {
        // Not offered: the device threads serve everything.
        assert_eq!(threads_named(&m, "fuser-ring-", 0), 0);
        assert!(device_threads(&m, 4) >= 4);
    }
    // Requests from every CPU are answered, large ones included.
    let data: Vec<u8> = (0..3 << 20)
        .map(|i: u32| (i * 7 + i / 4096) as u8)
        .collect();
    for cpu in 0..std::thread::available_parallelism().unwrap().get() {
        let path = m.path(&format!("c/f{cpu}"));
        let data = data.clone();
        std::thread::spawn(move || {
            // SAFETY: a zeroed cpu_set_t with one CPU set.
            unsafe {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                libc::CPU_SET(cpu, &mut set);
                assert_eq!(
                    libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set),
                    0
                );
            }
            fs::write(&path, &data).unwrap();
            assert_eq!(fs::read(&path).unwrap(), data);
            fs::create_dir(format!("{}.d", path.display())).unwrap();
            assert_eq!(
                fs::read_dir(format!("{}.d", path.display()))
                    .unwrap()
                    .count(),
                0
            );
            assert_eq!(
                fs::read(format!("{}.none", path.display()))
                    .unwrap_err()
                    .kind(),
                std::io::ErrorKind::NotFound
            );
        })
        .join()
        .unwrap();
    }
    drop(m);
    let (_t, m) = setup_with("c", &["uring=1"]);
    fs::write(m.path("c/f"), b"one per cpu").unwrap();
    assert_eq!(fs::read(m.path("c/f")).unwrap(), b"one per cpu");
    if uring_enabled() {
        let want = possible_cpus();
        assert_eq!(
            threads_named(&m, "fuser-ring-", want),
            want,
            "-o uring=N is obeyed"
        );
    }
}

/// Scheduling policy of each ring thread (`fuser-ring-*`), from field 41
/// of `/proc/PID/task/TID/stat`.
fn ring_policies(m: &Mount) -> Vec<i32> {
    tasks(m)
        .into_iter()
        .filter(|(comm, _)| comm.starts_with("fuser-ring-"))
        .filter_map(|(_, dir)| {
            let stat = fs::read_to_string(dir.join("stat")).ok()?;
            // Fields after the parenthesised name start at field 3.
            let rest = &stat[stat.rfind(')')? + 1..];
            rest.split_whitespace().nth(41 - 3)?.parse().ok()
        })
        .collect()
}

#[test]
fn ring_threads_wait_at_sched_idle_unless_told_not_to() {
    if !fuse_available() || !uring_enabled() {
        eprintln!("no FUSE over io_uring here: nothing to test");
        return;
    }
    // The hand-off needs CAP_SYS_NICE (bit 23 of CapEff) to leave
    // SCHED_IDLE; the daemon is started by this process and keeps its
    // capabilities.
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let cap_eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
        .unwrap();
    let sys_nice = cap_eff & (1 << 23) != 0;
    let (_t, m) = setup_with("c", &["nohandoff"]);
    let want = 2 * possible_cpus();
    assert_eq!(threads_named(&m, "fuser-ring-", want), want);
    for i in 0..200 {
        fs::write(m.path(&format!("c/f{i}")), b"x").unwrap();
    }
    let p = ring_policies(&m);
    assert_eq!(p.len(), want);
    assert!(p.iter().all(|&x| x == libc::SCHED_OTHER), "{p:?}");
    drop(m);
    // The default: a thread that served a small request waits at
    // SCHED_IDLE, unless a hold is on (other tests competing for the
    // CPUs): retried for up to 30 s.
    let (_t, m) = setup("c");
    assert_eq!(threads_named(&m, "fuser-ring-", want), want);
    let mut seen = false;
    for i in 0..600 {
        fs::write(m.path(&format!("c/f{}", i % 50)), b"x").unwrap();
        let p = ring_policies(&m);
        assert!(
            p.iter()
                .all(|&x| x == libc::SCHED_OTHER || x == libc::SCHED_IDLE),
            "{p:?}"
        );
        if p.contains(&libc::SCHED_IDLE) {
            seen = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(
        seen, sys_nice,
        "a ring thread at SCHED_IDLE exactly with CAP_SYS_NICE"
    );
    // Served as ever.
    fs::write(m.path("c/last"), b"answered").unwrap();
    assert_eq!(fs::read(m.path("c/last")).unwrap(), b"answered");
}

#[test]
fn crash_loses_nothing_fsynced() {
    if !fuse_available() {
        return;
    }
    let (t, m) = setup("c");
    let pid = m.daemon_pid().expect("daemon pid");
    // RLIMIT_CORE=0 is visible from outside; PR_SET_DUMPABLE is checked by a unit test of daemon::harden.
    let limits = fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap();
    assert_eq!(core.split_whitespace().nth(4), Some("0"), "{core}");
    let p = m.path("c/log");
    let mut f = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&p)
        .unwrap();
    let mut synced = 0;
    for i in 0..400 {
        f.write_all(format!("record {i:05} {}\n", "x".repeat(i % 50)).as_bytes())
            .unwrap();
        if i % 4 == 3 {
            f.sync_all().unwrap();
            synced = i + 1;
        }
    }
    // Unsynced writes in flight, then kill -9.
    let writer = {
        let p = p.clone();
        std::thread::spawn(move || {
            let mut f = fs::OpenOptions::new().append(true).open(&p).unwrap();
            for _ in 0..2000 {
                if f.write_all(&[b'z'; 3000]).is_err() {
                    break;
                }
            }
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(20));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL).unwrap();
    let _ = writer.join();
    drop(f);
    m.unmount();
    let m2 = Mount::new(
        &t.store(),
        &t.dir.path().join("mnt2"),
        "admin",
        &t.pwfile("admin"),
        &[],
    );
    let data = fs::read(m2.path("c/log")).expect("file reads after the crash (no EIO)");
    let text = String::from_utf8_lossy(&data);
    for i in 0..synced {
        assert!(
            text.contains(&format!("record {i:05} ")),
            "fsynced record {i} lost"
        );
    }
}

#[test]
fn mount_refusals() {
    if !fuse_available() {
        return;
    }
    let t = TempStore::new();
    let mp = t.dir.path().join("mnt");
    fs::create_dir(&mp).unwrap();
    let bad = t.dir.path().join("bad.pw");
    fs::write(&bad, "wrong\n").unwrap();
    let o = bin()
        .arg("mount")
        .arg(t.store())
        .arg(&mp)
        .args(["--user", "admin", "--passphrase-file"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(41), "{}", stdout(&o));
    assert!(stdout(&o).starts_with("401 "));
    assert!(!util::is_mounted(&mp));
    fs::set_permissions(t.store(), fs::Permissions::from_mode(0o755)).unwrap();
    let o = bin()
        .arg("mount")
        .arg(t.store())
        .arg(&mp)
        .args(["--user", "admin", "--passphrase-file"])
        .arg(t.pwfile("admin"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(stdout(&o).contains("chmod 700"), "{}", stdout(&o));
    fs::set_permissions(t.store(), fs::Permissions::from_mode(0o700)).unwrap();
    let o = bin()
        .arg("mount")
        .arg(t.store())
        .arg(t.dir.path())
        .args(["--user", "admin", "--passphrase-file"])
        .arg(t.pwfile("admin"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        stdout(&o).contains("inside the mount point"),
        "{}",
        stdout(&o)
    );
    assert!(!util::is_mounted(t.dir.path()));
}

#[test]
fn cross_circle_links_and_mmap_across_remount() {
    if !fuse_available() {
        return;
    }
    let (t, m) = setup("docs");
    assert!(stdout(&t.admin_cli("admin", &["circle", "create", "other"])).starts_with("200"));
    let t0 = std::time::Instant::now();
    while !m.path("other").exists() {
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(2),
            "new circle not shown"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    fs::write(m.path("docs/f"), b"content").unwrap();
    // Circles have different keys: no rename or hard link between them.
    assert_eq!(
        errno_of(fs::rename(m.path("docs/f"), m.path("other/f"))),
        libc::EXDEV
    );
    assert_eq!(
        errno_of(fs::hard_link(m.path("docs/f"), m.path("other/f"))),
        libc::EXDEV
    );
    fs::create_dir(m.path("docs/d")).unwrap();
    assert_eq!(
        errno_of(fs::hard_link(m.path("docs/d"), m.path("docs/dlink"))),
        libc::EPERM
    );
    assert_eq!(fs::read(m.path("docs/f")).unwrap(), b"content");
    assert!(!m.path("other/f").exists());
    // ... so mv falls back to copy + delete, re-encrypting under the other circle.
    sh(&m.mp, "mv docs/f other/g");
    assert_eq!(fs::read(m.path("other/g")).unwrap(), b"content");
    assert!(!m.path("docs/f").exists());
    // Writes through a shared mapping reach the store and survive a remount.
    let data = pattern(7, 3 * 4096 + 17);
    fs::write(m.path("docs/mm"), &data).unwrap();
    let out = sh(
        &m.path("docs"),
        "python3 -c \"import mmap\nf=open('mm','r+b')\nm=mmap.mmap(f.fileno(),0)\nm[5000:5010]=b'ABCDEFGHIJ'\nm.flush()\nm.close()\nf.close()\"; echo done",
    );
    assert!(out.contains("done"), "{out}");
    let mut expect = data.clone();
    expect[5000..5010].copy_from_slice(b"ABCDEFGHIJ");
    m.unmount();
    let m = Mount::new(&t.store(), &m.mp, "admin", &t.pwfile("admin"), &[]);
    assert_eq!(fs::read(m.path("docs/mm")).unwrap(), expect);
}

#[test]
fn other_xattr_namespaces_are_unsupported_so_ls_stops_probing() {
    if !fuse_available() || !util::which("strace") {
        return;
    }
    let (_t, m) = setup("x");
    let d = m.path("x/d");
    fs::create_dir(&d).unwrap();
    for i in 0..20 {
        fs::write(d.join(format!("f{i}")), b"x").unwrap();
    }
    // user.* attributes work; other namespaces are EOPNOTSUPP, not ENODATA.
    let f = d.join("f0");
    let py = |code: &str| {
        let o = Command::new("python3")
            .args(["-c", code, f.to_str().unwrap()])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    let probe =
        "import os,sys\ntry:\n os.getxattr(sys.argv[1], '%s')\nexcept OSError as e: print(e.errno)";
    assert_eq!(
        py(&probe.replace("%s", "user.none")),
        libc::ENODATA.to_string()
    );
    assert_eq!(
        py(&probe.replace("%s", "security.selinux")),
        libc::EOPNOTSUPP.to_string()
    );
    assert_eq!(
        py(&probe.replace("%s", "system.posix_acl_access")),
        libc::EOPNOTSUPP.to_string()
    );
    // So `ls -l` asks about the first entries only, not about each file.
    let o = Command::new("strace")
        .args(["-f", "-c", "-e", "trace=getxattr,lgetxattr", "ls", "-l"])
        .arg(&d)
        .stdout(Stdio::null())
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&o.stderr);
    let calls: u64 = report
        .lines()
        .filter(|l| l.contains("getxattr"))
        .filter_map(|l| l.split_whitespace().nth(3)?.parse::<u64>().ok())
        .sum();
    assert!(
        calls < 10,
        "ls -l probed xattrs {calls} times for 20 files:\n{report}"
    );
}

#[test]
fn unprivileged_writes_clear_set_id_bits() {
    // HANDLE_KILLPRIV_V2: the kernel flags writes by a process without
    // CAP_FSETID and leaves clearing the bits to circlefs.
    if !fuse_available() || !util::which("setpriv") {
        return;
    }
    // allow_other: requests made on behalf of the unprivileged writer (the
    // kernel's own getattr and setattr around the write) are served.
    let (_t, m) = setup_with("k", &["allow_other"]);
    let d = m.path("k");
    let mode = |n: &str| fs::metadata(d.join(n)).unwrap().permissions().mode() & 0o7777;
    for (name, before, after, writer) in [
        ("suid", 0o4777, 0o777, "nobody"),
        ("sgid-x", 0o2777, 0o777, "nobody"),
        ("sgid-nox", 0o2767, 0o2767, "nobody"),
        ("both", 0o6755, 0o755, "nobody"),
        ("root-suid", 0o4755, 0o4755, "root"),
    ] {
        fs::write(d.join(name), b"0").unwrap();
        fs::set_permissions(d.join(name), fs::Permissions::from_mode(before)).unwrap();
        assert_eq!(mode(name), before);
        // The descriptor is opened by root; the write is made by `writer`.
        let drop = if writer == "root" {
            String::new()
        } else {
            "setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=-all --bounding-set=-all ".into()
        };
        sh(&d, &format!("{drop}sh -c 'printf x >&3' 3>>{name}"));
        assert_eq!(fs::read(d.join(name)).unwrap(), b"0x", "{name}");
        assert_eq!(mode(name), after, "{name} written by {writer}");
    }
}

#[test]
fn opstats_table_is_written_at_unmount() {
    if !fuse_available() {
        return;
    }
    let (_stats_dir, out, opt) = opstats_opt();
    let (_t, m) = setup_with("o", &[&opt]);
    let d = m.path("o");
    for i in 0..5 {
        fs::write(d.join(format!("f{i}")), b"hello").unwrap();
    }
    assert_eq!(fs::read(d.join("f3")).unwrap(), b"hello");
    assert!(!out.exists(), "written before the unmount");
    m.unmount();
    let table = opstats_table(&out);
    let count = |req: &str| op_count(&table, req);
    assert_eq!(count("CREATE"), 5, "{table}");
    assert!(count("WRITE") >= 5, "{table}");
    assert!(count("LOOKUP") >= 5, "{table}");
    assert!(table.contains("| all |"), "{table}");
}

/// Names read with readdir(3) from `dir` until the end or `n` names
/// (dot entries left out).
fn read_names(dir: *mut libc::DIR, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    while out.len() < n {
        // SAFETY: `dir` is an open stream; the entry is read before the
        // next call.
        let e = unsafe { libc::readdir(dir) };
        if e.is_null() {
            break;
        }
        // SAFETY: d_name is NUL-terminated.
        let name = unsafe { std::ffi::CStr::from_ptr((*e).d_name.as_ptr()) }
            .to_string_lossy()
            .into_owned();
        if name != "." && name != ".." {
            out.push(name);
        }
    }
    out
}

fn open_dir(p: &Path) -> *mut libc::DIR {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid path string.
    let d = unsafe { libc::opendir(c.as_ptr()) };
    assert!(!d.is_null(), "opendir {}", p.display());
    d
}

#[test]
fn listings_resume_after_changes_and_seekdir_returns() {
    if !fuse_available() {
        return;
    }
    let (_t, m) = setup("c");
    let d = m.path("c/big");
    fs::create_dir(&d).unwrap();
    let rounds: u32 = std::env::var("CIRCLEFS_TEST_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1500);
    for i in 0..rounds {
        fs::write(d.join(format!("f{i:04}")), b"").unwrap();
    }
    let all: std::collections::BTreeSet<String> = fs::read_dir(&d)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(all.len(), 1500);

    // telldir/seekdir: the same names after seeking back.
    let dir = open_dir(&d);
    assert_eq!(read_names(dir, 700).len(), 700);
    // SAFETY: an open stream.
    let at = unsafe { libc::telldir(dir) };
    let a = read_names(dir, 300);
    // SAFETY: a position telldir gave on this stream.
    unsafe { libc::seekdir(dir, at) };
    assert_eq!(read_names(dir, 300), a);
    // SAFETY: closed once.
    unsafe { libc::closedir(dir) };

    // A change drops the kernel's cached listing, so the next stream is
    // read from the daemon a page at a time, each page from the position
    // where the last one ended.
    let touch = |d: &Path| {
        fs::write(d.join("touch"), b"").unwrap();
        fs::remove_file(d.join("touch")).unwrap();
    };
    // Names not read yet removed halfway: every other name read once.
    touch(&d);
    let dir = open_dir(&d);
    let mut got = read_names(dir, 300);
    let read: std::collections::BTreeSet<String> = got.iter().cloned().collect();
    let gone: Vec<&String> = all
        .iter()
        .filter(|n| !read.contains(*n))
        .take(200)
        .collect();
    for n in &gone {
        fs::remove_file(d.join(n)).unwrap();
    }
    got.extend(read_names(dir, usize::MAX));
    // SAFETY: closed once.
    unsafe { libc::closedir(dir) };
    let seen: std::collections::BTreeSet<String> = got.iter().cloned().collect();
    assert_eq!(seen.len(), got.len(), "a name read twice");
    for n in all.iter().filter(|n| !gone.contains(n)) {
        assert!(seen.contains(n), "{n} skipped");
    }

    // Remove every entry while reading the directory: it ends empty, each
    // name read once.
    touch(&d);
    let dir = open_dir(&d);
    let mut removed = Vec::new();
    loop {
        let v = read_names(dir, 1);
        let Some(n) = v.first() else { break };
        fs::remove_file(d.join(n)).unwrap();
        removed.push(n.clone());
    }
    // SAFETY: closed once.
    unsafe { libc::closedir(dir) };
    assert_eq!(removed.len(), 1300, "each name once");
    assert_eq!(fs::read_dir(&d).unwrap().count(), 0);
    fs::remove_dir(&d).unwrap();
}

#[test]
fn read_only_closes_send_no_flush_and_directories_are_not_opened() {
    if !fuse_available() {
        return;
    }
    let (t, m) = setup("o");
    let d = m.path("o");
    for i in 0..5 {
        fs::write(d.join(format!("f{i}")), b"hello").unwrap();
    }
    // A read-only descriptor of a file being written: its close saves
    // nothing, the writer's close does.
    let mut w = fs::OpenOptions::new()
        .append(true)
        .open(d.join("f0"))
        .unwrap();
    w.write_all(b" world").unwrap();
    drop(fs::File::open(d.join("f0")).unwrap());
    drop(w);
    assert_eq!(fs::read(d.join("f0")).unwrap(), b"hello world");
    m.unmount();

    // Only reads and listings through this mount, so no descriptor that
    // a FLUSH could be sent for (a close of an inherited copy, as a fork
    // by a test running alongside makes, included).
    let (_stats_dir, out, opt) = opstats_opt();
    let m = Mount::new(
        &t.store(),
        &t.dir.path().join("mnt"),
        "admin",
        &t.pwfile("admin"),
        &[&opt],
    );
    let d = m.path("o");
    for _ in 0..4 {
        for i in 0..5 {
            assert!(
                fs::read(d.join(format!("f{i}")))
                    .unwrap()
                    .starts_with(b"hello")
            );
        }
        assert_eq!(fs::read_dir(&d).unwrap().count(), 5);
    }
    m.unmount();
    let table = opstats_table(&out);
    let count = |req: &str| op_count(&table, req);
    assert!(count("OPEN") >= 20, "{table}");
    assert_eq!(count("FLUSH"), 0, "{table}");
    // At most the first OPENDIR (answered ENOSYS), and no RELEASEDIR.
    assert!(count("OPENDIR") <= 1, "{table}");
    assert_eq!(count("RELEASEDIR"), 0, "{table}");
}

/// A place for an `-o opstats` table (kept while the directory lives) and
/// the mount option that asks for it there.
fn opstats_opt() -> (tempfile::TempDir, PathBuf, String) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ops.md");
    let opt = format!("opstats={}", out.display());
    (dir, out, opt)
}

/// The `-o opstats` table a mount writes to `out` at unmount (waited for).
fn opstats_table(out: &Path) -> String {
    let t0 = std::time::Instant::now();
    while !out.exists() && t0.elapsed() < std::time::Duration::from_secs(5) {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    fs::read_to_string(out).unwrap()
}

/// The count of request `req` in an opstats table (0 when absent).
fn op_count(table: &str, req: &str) -> u64 {
    table
        .lines()
        .find(|l| l.starts_with(&format!("| {req} |")))
        .and_then(|l| l.split('|').nth(2))
        .and_then(|c| c.trim().parse().ok())
        .unwrap_or(0)
}

/// A mount alone keeps a new file's writes pending until its close; while
/// other threads list the directory (READDIRPLUS gives the kernel every
/// entry's attributes), the file read back after its close is whole: no
/// listing answers with the size the record had before the writes.
#[test]
fn listings_during_closes_never_shrink_a_file() {
    if !fuse_available() {
        return;
    }
    let (_t, m) = setup("s");
    let dir = m.path("s");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let listers: Vec<_> = (0..2)
        .map(|_| {
            let (dir, stop) = (dir.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    for e in fs::read_dir(&dir).unwrap() {
                        let _ = e.map(|e| e.file_type());
                    }
                }
            })
        })
        .collect();
    let data = pattern(7, 9000);
    let mut short = Vec::new();
    let rounds: u32 = std::env::var("CIRCLEFS_TEST_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1500);
    for i in 0..rounds {
        let p = dir.join(format!("f{}", i % 32));
        let _ = fs::remove_file(&p);
        let mut f = fs::File::create(&p).unwrap();
        f.seek(SeekFrom::Start(100)).unwrap();
        f.write_all(&data).unwrap();
        drop(f);
        let back = fs::read(&p).unwrap();
        if back.len() != 9100 || back[100..] != data[..] {
            short.push((i, back.len()));
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for l in listers {
        l.join().unwrap();
    }
    assert!(
        short.is_empty(),
        "files read back short (iteration, length): {short:?}"
    );
}
