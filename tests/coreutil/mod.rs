//! Shared helpers of the integration tests: a temporary store with the
//! system administrator and a few accounts, all on the `fast` KDF profile.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use circlefs::control::{self, Response};
use circlefs::crypto::Passphrase;
use circlefs::error::Status;
use circlefs::vault::accounts::NewUser;
use circlefs::vault::{Session, Vault};
use rusqlite::types::Value;

/// Passphrase of the system administrator in every test store.
pub const ADMIN_PASS: &str = "admin-pass-1";

/// The passphrase helper stores give account `name`.
pub fn pass_of(name: &str) -> String {
    format!("{name}-pass-1")
}

/// A passphrase value.
pub fn pass(s: &str) -> Passphrase {
    Passphrase::new(s.as_bytes().to_vec())
}

/// A temporary store: the directory is removed when this is dropped.
pub struct TestStore {
    /// Keeps the temporary directory alive.
    pub tmp: tempfile::TempDir,
    /// Store root (`tmp/store`).
    pub root: PathBuf,
    /// The open vault.
    pub vault: Vault,
    /// Session of the system administrator `admin`.
    pub admin: Session,
}

impl TestStore {
    /// A store with `admin` only.
    pub fn new() -> TestStore {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("store");
        let vault = Vault::init(&root, "admin", &pass(ADMIN_PASS), "fast").unwrap();
        let admin = vault.unlock("admin", &pass(ADMIN_PASS)).unwrap();
        TestStore {
            tmp,
            root,
            vault,
            admin,
        }
    }

    /// A store with `admin` plus plain accounts `users` (passphrase `pass_of(name)`,
    /// may change their own passphrase).
    pub fn with_users(users: &[&str]) -> TestStore {
        let t = TestStore::new();
        for u in users {
            t.add_user(u);
        }
        t
    }

    /// Create a plain account as the administrator.
    pub fn add_user(&self, name: &str) {
        self.vault
            .user_create(
                &self.admin,
                NewUser {
                    name: name.to_string(),
                    pass: Some(pass(&pass_of(name))),
                    may_change_password: true,
                    ..Default::default()
                },
            )
            .unwrap();
    }

    /// Unlock `name` with its helper passphrase.
    pub fn login(&self, name: &str) -> Session {
        let p = if name == "admin" {
            ADMIN_PASS.to_string()
        } else {
            pass_of(name)
        };
        self.vault.unlock(name, &pass(&p)).unwrap()
    }

    /// Write `contents` to a file in the temp dir (outside the store) and return its path.
    pub fn file(&self, name: &str, contents: &str) -> PathBuf {
        let p = self.tmp.path().join(name);
        std::fs::write(&p, contents).unwrap();
        p
    }

    /// Parse and run one command line as `s`.
    pub fn run(&self, s: &Session, line: &str) -> Response {
        run(&self.vault, s, line)
    }

    /// Run as `s` and assert the status code; returns the response.
    pub fn expect(&self, s: &Session, line: &str, code: u16) -> Response {
        let r = self.run(s, line);
        assert_eq!(r.status.code(), code, "`{line}` gave {}", r.text());
        r
    }

    /// Path of the SQLite file.
    pub fn db(&self) -> PathBuf {
        self.root.join("circlefs.db")
    }

    /// A second, raw connection to the store database (for adversary tests).
    pub fn raw(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(self.db()).unwrap()
    }
}

/// Parse and run a line; a parse error becomes its error response.
pub fn run(v: &Vault, s: &Session, line: &str) -> Response {
    match control::parse_line(line) {
        Ok(cmd) => control::execute(v, s, &cmd),
        Err(e) => Response::error(&e),
    }
}

/// Status of a response as a number.
pub fn code(r: &Response) -> u16 {
    r.status.code()
}

/// Shorthand for `Status::code`.
pub fn status_code(s: Status) -> u16 {
    s.code()
}

/// Every row of every user table: (table, rowid-or-key text, column values),
/// sorted, for byte-identical comparisons.
pub type Dump = Vec<(String, Vec<(String, Value)>)>;

/// Dump every row of every table of the database at `db`.
pub fn dump_db(db: &Path) -> Dump {
    let c = rusqlite::Connection::open(db).unwrap();
    let mut tables: Vec<String> = c
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    tables.sort();
    let mut out = Vec::new();
    for t in tables {
        let mut st = c.prepare(&format!("SELECT * FROM \"{t}\"")).unwrap();
        let cols: Vec<String> = st.column_names().map(|s| s.to_string()).collect();
        let mut rows: Vec<(String, Vec<(String, Value)>)> = st
            .query_map([], |r| {
                let mut v = Vec::new();
                for (i, name) in cols.iter().enumerate() {
                    v.push((name.clone(), r.get::<_, Value>(i)?));
                }
                Ok((t.clone(), v))
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        rows.sort_by(|a, b| format!("{:?}", a.1).cmp(&format!("{:?}", b.1)));
        out.extend(rows);
    }
    out
}

/// Every table's row count.
pub fn count(c: &rusqlite::Connection, table: &str) -> i64 {
    c.query_row(&format!("SELECT COUNT(*) FROM \"{table}\""), [], |r| {
        r.get(0)
    })
    .unwrap()
}

/// True when `needle` occurs in `hay`.
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// UTF-16LE bytes of `s`.
pub fn utf16le(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(|u| u.to_le_bytes()).collect()
}
