//! The `circlefs` binary: init and admin, passphrase sources, output
//! formats, exit codes, argv hygiene, store permissions.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_circlefs");
const ADMIN_PASS: &str = "cli-admin-pass";

struct Env {
    tmp: tempfile::TempDir,
    store: PathBuf,
    admin_pass_file: PathBuf,
}

impl Env {
    /// A fresh store made by `circlefs init --kdf fast`.
    fn new() -> Env {
        let tmp = tempfile::tempdir().unwrap();
        let store = tmp.path().join("store");
        let admin_pass_file = tmp.path().join("admin.pass");
        std::fs::write(&admin_pass_file, format!("{ADMIN_PASS}\n")).unwrap();
        let o = run(&[
            "init",
            s(&store),
            "--kdf",
            "fast",
            "--new-passphrase-file",
            s(&admin_pass_file),
        ]);
        assert_eq!(code(&o), 0, "{}", text(&o));
        Env {
            tmp,
            store,
            admin_pass_file,
        }
    }

    fn file(&self, name: &str, contents: &str) -> PathBuf {
        let p = self.tmp.path().join(name);
        std::fs::write(&p, contents).unwrap();
        p
    }

    /// `circlefs admin STORE --user USER --passphrase-file F ARGS...`
    fn admin_as(&self, user: &str, pass_file: &Path, args: &[&str]) -> Output {
        let mut v = vec![
            "admin",
            s(&self.store),
            "--user",
            user,
            "--passphrase-file",
            s(pass_file),
        ];
        v.extend_from_slice(args);
        run(&v)
    }

    fn admin(&self, args: &[&str]) -> Output {
        self.admin_as("admin", &self.admin_pass_file, args)
    }

    /// Create account `name` with passphrase `name-pass`; returns its passphrase file.
    fn user(&self, name: &str) -> PathBuf {
        let f = self.file(&format!("{name}.pass"), &format!("{name}-pass\n"));
        let o = self.admin(&["user", "create", name, "--new-passphrase-file", s(&f)]);
        assert_eq!(code(&o), 0, "{}", text(&o));
        f
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn first_line(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn init_creates_private_store() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("st");
    let pf = tmp.path().join("p");
    std::fs::write(&pf, "pw-1\n").unwrap();
    let o = run(&[
        "init",
        s(&store),
        "--kdf",
        "fast",
        "--admin",
        "root",
        "--new-passphrase-file",
        s(&pf),
    ]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert_eq!(
        first_line(&o),
        format!(
            "200 OK: store created at {} with system administrator root",
            store.display()
        )
    );
    assert_eq!(mode(&store), 0o700);
    assert_eq!(mode(&store.join("circlefs.db")), 0o600);
    assert_eq!(mode(&store.join("blocks")), 0o700);
    for extra in ["circlefs.db-wal", "circlefs.db-shm"] {
        let p = store.join(extra);
        if p.exists() {
            assert_eq!(mode(&p), 0o600, "{extra}");
        }
    }
    // The new administrator can log in with the file's passphrase (newline dropped).
    let o = run(&[
        "admin",
        s(&store),
        "--user",
        "root",
        "--passphrase-file",
        s(&pf),
        "user",
        "info",
    ]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("sysadmin: true"));
    // An existing empty directory is fine too (and is made 0700).
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    std::fs::set_permissions(&empty, std::fs::Permissions::from_mode(0o755)).unwrap();
    let o = run(&[
        "init",
        s(&empty),
        "--kdf",
        "fast",
        "--new-passphrase-file",
        s(&pf),
        "--json",
    ]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert_eq!(mode(&empty), 0o700);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["code"], 200);
    assert_eq!(v["data"], serde_json::Value::Null);
}

#[test]
fn init_refuses_non_empty_dir_and_bad_input() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("full");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("keep.txt"), "mine").unwrap();
    let pf = tmp.path().join("p");
    std::fs::write(&pf, "pw\n").unwrap();
    let o = run(&[
        "init",
        s(&dir),
        "--kdf",
        "fast",
        "--new-passphrase-file",
        s(&pf),
    ]);
    assert_eq!(code(&o), 49, "{}", text(&o));
    assert_eq!(
        first_line(&o),
        format!("409 Conflict: {} exists and is not empty", dir.display())
    );
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        names,
        vec![std::ffi::OsString::from("keep.txt")],
        "nothing was added"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("keep.txt")).unwrap(),
        "mine"
    );
    // Second init over an existing store: same refusal.
    let st = tmp.path().join("st");
    assert_eq!(
        code(&run(&[
            "init",
            s(&st),
            "--kdf",
            "fast",
            "--new-passphrase-file",
            s(&pf)
        ])),
        0
    );
    assert_eq!(
        code(&run(&[
            "init",
            s(&st),
            "--kdf",
            "fast",
            "--new-passphrase-file",
            s(&pf)
        ])),
        49
    );
    // Unknown KDF profile, bad admin name, empty passphrase: 400, nothing created.
    let st2 = tmp.path().join("st2");
    let o = run(&[
        "init",
        s(&st2),
        "--kdf",
        "weak",
        "--new-passphrase-file",
        s(&pf),
    ]);
    assert_eq!(code(&o), 40, "{}", text(&o));
    assert!(first_line(&o).starts_with("400 Bad Request: unknown KDF profile weak"));
    let o = run(&[
        "init",
        s(&st2),
        "--kdf",
        "fast",
        "--admin",
        "bad name",
        "--new-passphrase-file",
        s(&pf),
    ]);
    assert_eq!(code(&o), 40, "{}", text(&o));
    let ep = tmp.path().join("empty.pass");
    std::fs::write(&ep, "\n").unwrap();
    let o = run(&[
        "init",
        s(&st2),
        "--kdf",
        "fast",
        "--new-passphrase-file",
        s(&ep),
    ]);
    assert_eq!(code(&o), 40, "{}", text(&o));
    assert!(!st2.exists());
    // Missing store argument: a clap usage error.
    let o = run(&["init"]);
    assert_eq!(code(&o), 2, "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("Usage"));
}

#[test]
fn admin_text_output_and_exit_codes() {
    let e = Env::new();
    let bob = e.user("bob");
    // 200 -> 0, text form: status line then data lines.
    let o = e.admin(&["circle", "create", "docs"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "200 OK: circle docs created\n"
    );
    let o = e.admin(&["circle", "info", "docs"]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "200 OK: circle docs\ncircle: docs\nepoch: 1\ntrustee: admin admin\n"
    );
    // 400 -> 40
    let o = e.admin(&["frobnicate"]);
    assert_eq!(code(&o), 40, "{}", text(&o));
    assert_eq!(
        first_line(&o),
        "400 Bad Request: unknown command frobnicate (see help)"
    );
    assert_eq!(code(&e.admin(&["user", "list", "--status", "maybe"])), 40);
    // 401 -> 41: wrong passphrase, unknown requester.
    let wrong = e.file("wrong.pass", "nope\n");
    let o = e.admin_as("admin", &wrong, &["circle", "list"]);
    assert_eq!(code(&o), 41, "{}", text(&o));
    assert_eq!(first_line(&o), "401 Unauthorized: wrong passphrase");
    let o = e.admin_as("nosuch", &wrong, &["circle", "list"]);
    assert_eq!(code(&o), 41, "{}", text(&o));
    assert_eq!(first_line(&o), "401 Unauthorized: unknown account nosuch");
    // 403 -> 43: a plain account creating accounts; a write trustee adding a trustee.
    let o = e.admin_as(
        "bob",
        &bob,
        &["user", "create", "carol", "--new-passphrase-file", s(&bob)],
    );
    assert_eq!(code(&o), 43, "{}", text(&o));
    assert_eq!(code(&e.admin(&["trustee", "add", "docs", "bob"])), 0);
    e.user("carol");
    let o = e.admin_as("bob", &bob, &["trustee", "add", "docs", "carol"]);
    assert_eq!(code(&o), 43, "{}", text(&o));
    // 404 -> 44
    let o = e.admin(&["circle", "info", "nosuch"]);
    assert_eq!(code(&o), 44, "{}", text(&o));
    assert_eq!(first_line(&o), "404 Not Found: no such circle nosuch");
    let o = e.admin(&["trustee", "add", "docs", "carol", "nosuch"]);
    assert_eq!(code(&o), 44);
    let o = e.admin(&["circle", "info", "docs"]);
    assert!(
        !String::from_utf8_lossy(&o.stdout).contains("carol"),
        "{}",
        text(&o)
    );
    // 406 -> 46
    let o = e.admin(&["trustee", "add", "docs"]);
    assert_eq!(code(&o), 46, "{}", text(&o));
    assert_eq!(first_line(&o), "406 Not Acceptable: no account named");
    // 409 -> 49
    let o = e.admin(&["circle", "create", "docs"]);
    assert_eq!(code(&o), 49, "{}", text(&o));
    assert_eq!(code(&e.admin(&["trustee", "add", "docs", "bob"])), 49);
    // 500 -> 50: a tampered KDF row.
    let c = rusqlite::Connection::open(e.store.join("circlefs.db")).unwrap();
    c.execute(
        "UPDATE accounts SET kdf_m = 4294967295 WHERE name = 'carol'",
        [],
    )
    .unwrap();
    let carol = e.tmp.path().join("carol.pass");
    let o = e.admin_as("carol", &carol, &["circle", "list"]);
    assert_eq!(code(&o), 50, "{}", text(&o));
    assert!(
        first_line(&o).starts_with("500 Internal Error: m=4294967295 KiB"),
        "{}",
        text(&o)
    );
    // Usage errors from clap -> 2.
    let o = run(&["admin", s(&e.store), "circle", "list"]);
    assert_eq!(code(&o), 2, "{}", text(&o));
    let o = run(&[
        "admin",
        s(&e.store),
        "--user",
        "admin",
        "--passphrase-file",
        s(&e.admin_pass_file),
    ]);
    assert_eq!(code(&o), 2, "{}", text(&o));
    let o = run(&["frobnicate"]);
    assert_eq!(code(&o), 2, "{}", text(&o));
    let o = run(&[
        "admin",
        s(&e.store),
        "--user",
        "admin",
        "--passphrase-file",
        s(&e.admin_pass_file),
        "--passphrase-fd",
        "0",
        "circle",
        "list",
    ]);
    assert_eq!(code(&o), 2, "conflicting sources: {}", text(&o));
    // --help and --version succeed.
    assert_eq!(code(&run(&["--help"])), 0);
    assert_eq!(code(&run(&["--version"])), 0);
}

#[test]
fn admin_json_output_shape() {
    let e = Env::new();
    e.user("bob");
    let o = e.admin(&["--json", "user", "list", "--count", "1", "--start", "1"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    let out = String::from_utf8(o.stdout.clone()).unwrap();
    assert_eq!(out.lines().count(), 1, "one JSON object on one line: {out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["code", "data", "message"]);
    assert_eq!(v["code"], 200);
    assert_eq!(v["message"], "1 of 2 accounts");
    assert_eq!(v["data"]["total"], 2);
    assert_eq!(v["data"]["accounts"][0]["name"], "bob");
    assert_eq!(v["data"]["accounts"][0]["verified"], false);
    // Errors have the same shape, data null, and the exit code still follows the status.
    let o = e.admin(&["--json", "circle", "info", "nosuch"]);
    assert_eq!(code(&o), 44);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"code": 404, "message": "no such circle nosuch", "data": null})
    );
    let wrong = e.file("w", "x\n");
    let o = e.admin_as("admin", &wrong, &["--json", "circle", "list"]);
    assert_eq!(code(&o), 41);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["code"], 401);
}

#[test]
fn passphrase_from_fd_pipe_and_redirected_file() {
    let e = Env::new();
    // A pipe: bash moves its stdin (our pipe) to fd 3 and execs circlefs.
    let run_fd = |pass: &str, args: &[&str]| -> Output {
        let mut cmd = Command::new("bash");
        cmd.arg("-c")
            .arg(r#"exec 3<&0 0</dev/null; exec "$@""#)
            .arg("bash")
            .arg(BIN)
            .args([
                "admin",
                s(&e.store),
                "--user",
                "admin",
                "--passphrase-fd",
                "3",
            ])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(pass.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let o = run_fd(&format!("{ADMIN_PASS}\n"), &["circle", "create", "viapipe"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert_eq!(first_line(&o), "200 OK: circle viapipe created");
    // Without a trailing newline (EOF ends it) too.
    let o = run_fd(ADMIN_PASS, &["circle", "info", "viapipe"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    let o = run_fd("wrong\n", &["circle", "list"]);
    assert_eq!(code(&o), 41, "{}", text(&o));
    // A file redirected onto fd 3 by the shell.
    let o = Command::new("bash")
        .arg("-c")
        .arg(r#"exec "$@" 3<"$PASSFILE""#)
        .arg("bash")
        .arg(BIN)
        .args([
            "admin",
            s(&e.store),
            "--user",
            "admin",
            "--passphrase-fd",
            "3",
            "circle",
            "list",
        ])
        .env("PASSFILE", &e.admin_pass_file)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "200 OK: 1 circles\nviapipe admin\n"
    );
    // A closed fd is a clear 400.
    let o = run(&[
        "admin",
        s(&e.store),
        "--user",
        "admin",
        "--passphrase-fd",
        "9",
        "circle",
        "list",
    ]);
    assert_eq!(code(&o), 40, "{}", text(&o));
    assert!(
        first_line(&o).starts_with("400 Bad Request: --passphrase-fd 9"),
        "{}",
        text(&o)
    );
    let o = run(&[
        "admin",
        s(&e.store),
        "--user",
        "admin",
        "--passphrase-fd",
        "-1",
        "circle",
        "list",
    ]);
    assert!(code(&o) == 40 || code(&o) == 2, "{}", text(&o));
}

#[test]
fn passphrase_on_argv_is_rejected_and_never_unlocks() {
    let e = Env::new();
    let base = ["admin", s(&e.store), "--user", "admin"];
    let secret_eq = format!("--passphrase={ADMIN_PASS}");
    let tries: Vec<Vec<&str>> = vec![
        vec![&secret_eq, "circle", "create", "leak"],
        vec!["--passphrase", ADMIN_PASS, "circle", "create", "leak"],
        vec!["circle", "create", "leak", &secret_eq],
        vec!["circle", "create", "leak", "--passphrase", ADMIN_PASS],
    ];
    for t in &tries {
        let mut args: Vec<&str> = base.to_vec();
        args.extend_from_slice(t);
        // setsid: no controlling terminal, so a fallback prompt could not block.
        let o = Command::new("setsid")
            .arg(BIN)
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let c = code(&o);
        assert!(c == 2 || c == 40, "{t:?} -> {}", text(&o));
        assert!(
            !String::from_utf8_lossy(&o.stdout).starts_with("200"),
            "{t:?} -> {}",
            text(&o)
        );
    }
    // Nothing was created by any of them.
    let o = e.admin(&["circle", "list"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "200 OK: 0 circles\n");
    // Nor is the environment a passphrase source: with no source and no
    // terminal the prompt fails cleanly (406), it does not read $CIRCLEFS_PASSPHRASE.
    let o = Command::new("setsid")
        .arg(BIN)
        .args(["admin", s(&e.store), "--user", "admin", "circle", "list"])
        .env("CIRCLEFS_PASSPHRASE", ADMIN_PASS)
        .env("PASSPHRASE", ADMIN_PASS)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(code(&o), 46, "{}", text(&o));
    assert!(
        first_line(&o).starts_with("406 Not Acceptable: cannot prompt for a passphrase"),
        "{}",
        text(&o)
    );
}

#[test]
fn non_store_directories_give_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let pf = tmp.path().join("p");
    std::fs::write(&pf, "x\n").unwrap();
    let plain = tmp.path().join("plain");
    std::fs::create_dir(&plain).unwrap();
    std::fs::write(plain.join("notes.txt"), "hello").unwrap();
    for dir in [plain.clone(), tmp.path().join("missing")] {
        let o = run(&[
            "admin",
            s(&dir),
            "--user",
            "admin",
            "--passphrase-file",
            s(&pf),
            "circle",
            "list",
        ]);
        assert_eq!(code(&o), 44, "{}", text(&o));
        assert_eq!(
            first_line(&o),
            format!(
                "404 Not Found: {} is not a circlefs store (no circlefs.db)",
                dir.display()
            )
        );
    }
    assert!(
        !tmp.path().join("missing").exists(),
        "admin must not create a store"
    );
    assert!(!plain.join("circlefs.db").exists());
    // A file that is not SQLite where the database should be: 500, not a panic.
    let fake = tmp.path().join("fake");
    std::fs::create_dir(&fake).unwrap();
    std::fs::write(fake.join("circlefs.db"), vec![b'x'; 4096]).unwrap();
    let o = run(&[
        "admin",
        s(&fake),
        "--user",
        "admin",
        "--passphrase-file",
        s(&pf),
        "circle",
        "list",
    ]);
    assert_eq!(code(&o), 50, "{}", text(&o));
    assert!(
        first_line(&o).starts_with("500 Internal Error: store: "),
        "{}",
        text(&o)
    );
    assert!(
        o.stderr.is_empty() || !String::from_utf8_lossy(&o.stderr).contains("panicked"),
        "{}",
        text(&o)
    );
    // A command error is reported before any passphrase is read or store opened.
    let o = run(&[
        "admin",
        s(&plain),
        "--user",
        "admin",
        "--passphrase-file",
        s(&pf),
        "circle",
    ]);
    assert_eq!(code(&o), 46, "{}", text(&o));
}
