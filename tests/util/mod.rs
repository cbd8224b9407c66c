//! Shared fixtures for the integration tests: temp stores with the fast KDF,
//! sessions, the built binary, and real mounts that unmount on drop.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

use circlefs::crypto::Passphrase;
use circlefs::ids::InodeId;
use circlefs::vault::accounts::NewUser;
use circlefs::vault::workspace::{SetAttr, Workspace};
use circlefs::vault::{Session, Vault};

pub fn pass(s: &str) -> Passphrase {
    Passphrase::new(s.as_bytes().to_vec())
}

/// A temp dir holding a store at `dir/store`, plus passphrase files.
pub struct TempStore {
    pub dir: tempfile::TempDir,
    pub vault: Arc<Vault>,
}

impl TempStore {
    /// Store with admin (passphrase "admin-pw").
    pub fn new() -> TempStore {
        let dir = tempfile::Builder::new()
            .prefix("circlefs-t")
            .tempdir_in("/tmp")
            .unwrap();
        let vault = Vault::init(
            &dir.path().join("store"),
            "admin",
            &pass("admin-pw"),
            "fast",
        )
        .unwrap();
        std::fs::write(dir.path().join("admin.pw"), "admin-pw\n").unwrap();
        TempStore {
            dir,
            vault: Arc::new(vault),
        }
    }

    pub fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    pub fn db(&self) -> PathBuf {
        self.store().join("circlefs.db")
    }

    pub fn admin(&self) -> Session {
        self.vault.unlock("admin", &pass("admin-pw")).unwrap()
    }

    /// Create an account NAME with passphrase "NAME-pw" and a passphrase file.
    pub fn user(&self, name: &str) -> Session {
        let a = self.admin();
        self.vault
            .user_create(
                &a,
                NewUser {
                    name: name.into(),
                    pass: Some(pass(&format!("{name}-pw"))),
                    ..Default::default()
                },
            )
            .unwrap();
        std::fs::write(
            self.dir.path().join(format!("{name}.pw")),
            format!("{name}-pw\n"),
        )
        .unwrap();
        self.login(name)
    }

    pub fn login(&self, name: &str) -> Session {
        self.vault
            .unlock(name, &pass(&format!("{name}-pw")))
            .unwrap()
    }

    pub fn pwfile(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.pw"))
    }

    /// Run the binary as `circlefs admin STORE --user USER --passphrase-file ... ARGS`.
    pub fn admin_cli(&self, user: &str, args: &[&str]) -> Output {
        let mut c = bin();
        c.arg("admin")
            .arg(self.store())
            .arg("--user")
            .arg(user)
            .arg("--passphrase-file")
            .arg(self.pwfile(user));
        c.args(args).output().unwrap()
    }

    /// Accounts alice and bob, and alice's circle `s` with bob a trustee.
    pub fn alice_and_bob(&self) {
        self.user("alice");
        self.user("bob");
        assert!(stdout(&self.admin_cli("alice", &["circle", "create", "s"])).starts_with("200"));
        assert!(
            stdout(&self.admin_cli("alice", &["trustee", "add", "s", "bob"])).starts_with("200")
        );
    }

    /// Alice's workspace (the only mount) of circle `s`, which bob is a
    /// trustee of too, and the circle's root.
    pub fn alice_alone(&self) -> (Workspace, InodeId) {
        self.alice_and_bob();
        let w = Workspace::new(self.vault.clone(), Arc::new(self.login("alice")), false).unwrap();
        let root = w.circles().unwrap()[0].root;
        (w, root)
    }
}

pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_circlefs"))
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Every byte of every file under `dir`.
pub fn all_files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            } else if let Ok(b) = std::fs::read(&p) {
                out.push((p, b));
            }
        }
    }
    out
}

pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// Find `needle` (raw and UTF-16LE) anywhere under `dir`; returns the files.
pub fn scan(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let utf16: Vec<u8> = needle.iter().flat_map(|b| [*b, 0]).collect();
    all_files(dir)
        .into_iter()
        .filter(|(_, b)| contains(b, needle) || contains(b, &utf16))
        .map(|(p, _)| p)
        .collect()
}

/// True when /dev/fuse can be used (tests that mount skip otherwise).
pub fn fuse_available() -> bool {
    let ok = Path::new("/dev/fuse").exists() && which("fusermount3");
    if !ok {
        eprintln!("SKIP: /dev/fuse or fusermount3 unavailable");
    }
    ok
}

pub fn which(cmd: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {cmd}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

pub fn is_mounted(mp: &Path) -> bool {
    let Ok(real) = std::fs::canonicalize(mp) else {
        return false;
    };
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    mounts
        .lines()
        .any(|l| l.split(' ').nth(1) == Some(real.to_str().unwrap_or("")))
}

/// A real mount that is unmounted on drop.
pub struct Mount {
    pub mp: PathBuf,
}

impl Mount {
    /// Mount `store` for `user` at `mp` (created), with extra `-o` options.
    pub fn new(store: &Path, mp: &Path, user: &str, pwfile: &Path, opts: &[&str]) -> Mount {
        std::fs::create_dir_all(mp).unwrap();
        let mut c = bin();
        c.arg("mount")
            .arg(store)
            .arg(mp)
            .arg("--user")
            .arg(user)
            .arg("--passphrase-file")
            .arg(pwfile);
        // Debugging aid: CIRCLEFS_TEST_MOUNT_OPTS=a,b adds mount options
        // to every test mount (e.g. `uring` to run a test over the ring).
        let mut opts: Vec<String> = opts.iter().map(|s| s.to_string()).collect();
        if let Ok(extra) = std::env::var("CIRCLEFS_TEST_MOUNT_OPTS") {
            opts.extend(extra.split(',').filter(|s| !s.is_empty()).map(String::from));
        }
        if !opts.is_empty() {
            c.arg("-o").arg(opts.join(","));
        }
        // Debugging aid: CIRCLEFS_TEST_LOGDIR=/dir keeps each daemon's log.
        if let Some(d) = std::env::var_os("CIRCLEFS_TEST_LOGDIR") {
            c.arg("--log-file")
                .arg(Path::new(&d).join(format!("{user}.log")));
        }
        let o = c.output().unwrap();
        assert!(
            o.status.success(),
            "mount failed: {} {}",
            stdout(&o),
            String::from_utf8_lossy(&o.stderr)
        );
        let t0 = Instant::now();
        while !is_mounted(mp) {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "mount did not appear"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Mount {
            mp: mp.to_path_buf(),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.mp.join(rel)
    }

    /// pid of the daemon serving this mount.
    pub fn daemon_pid(&self) -> Option<i32> {
        let mp = self.mp.to_str()?.to_string();
        for e in std::fs::read_dir("/proc").ok()? {
            let e = e.ok()?;
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                continue;
            };
            let args: Vec<String> = cmd
                .split(|b| *b == 0)
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect();
            if args.iter().any(|a| a == "--foreground") && args.iter().any(|a| a == &mp) {
                return Some(pid);
            }
        }
        None
    }

    pub fn unmount(&self) {
        if is_mounted(&self.mp) {
            let _ = bin().arg("umount").arg(&self.mp).output();
        }
        let t0 = Instant::now();
        while is_mounted(&self.mp) && t0.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
        if is_mounted(&self.mp) {
            let _ = Command::new("umount").arg("-l").arg(&self.mp).output();
        }
        // Let the daemon finish its final flush.
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        self.unmount();
    }
}

/// A change of the mode alone.
pub fn set_mode(m: u32) -> SetAttr {
    SetAttr {
        mode: Some(m),
        ..SetAttr::default()
    }
}
