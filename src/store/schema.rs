//! Numbered schema migrations; `PRAGMA user_version` records how many ran.

/// Schema version from which file content is in block layout 2
/// (`format::block`); an older store holding content is refused.
pub const LAYOUT_2: i64 = 6;

/// Migrations in order; index + 1 is the schema version after it.
pub const MIGRATIONS: &[&str] = &[
    // 1: accounts, circles, trustees, keys, inode tree, file keys, xattrs, change log.
    r#"
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE accounts (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    name                TEXT NOT NULL UNIQUE,
    given_name          TEXT,
    family_name         TEXT,
    email               TEXT,
    verified            INTEGER NOT NULL DEFAULT 0,
    may_change_password INTEGER NOT NULL DEFAULT 0,
    user_admin          INTEGER NOT NULL DEFAULT 0,
    sysadmin            INTEGER NOT NULL DEFAULT 0,
    kdf_m               INTEGER NOT NULL,
    kdf_t               INTEGER NOT NULL,
    kdf_p               INTEGER NOT NULL,
    salt                BLOB NOT NULL,
    sealed_secret       BLOB NOT NULL,
    public_key          BLOB NOT NULL,
    dir_key_wrap        BLOB NOT NULL,
    created             INTEGER NOT NULL
);
CREATE TABLE circles (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    name_index BLOB NOT NULL UNIQUE,
    name_ct    BLOB NOT NULL,
    epoch      INTEGER NOT NULL,
    root_ino   INTEGER,
    created    INTEGER NOT NULL
);
CREATE TABLE trustees (
    circle_id  INTEGER NOT NULL REFERENCES circles(id) ON DELETE CASCADE,
    account_id INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    level      INTEGER NOT NULL,
    PRIMARY KEY (circle_id, account_id)
) WITHOUT ROWID;
CREATE INDEX trustees_account ON trustees(account_id);
CREATE TABLE circle_keys (
    circle_id  INTEGER NOT NULL REFERENCES circles(id) ON DELETE CASCADE,
    epoch      INTEGER NOT NULL,
    account_id INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    wrapped    BLOB NOT NULL,
    PRIMARY KEY (circle_id, epoch, account_id)
) WITHOUT ROWID;
CREATE INDEX circle_keys_account ON circle_keys(account_id);
CREATE TABLE inodes (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    circle_id INTEGER NOT NULL REFERENCES circles(id) ON DELETE CASCADE,
    kind      INTEGER NOT NULL,
    epoch     INTEGER NOT NULL,
    attrs     BLOB NOT NULL
);
CREATE INDEX inodes_circle ON inodes(circle_id);
CREATE TABLE dirents (
    parent     INTEGER NOT NULL REFERENCES inodes(id) ON DELETE CASCADE,
    name_index BLOB NOT NULL,
    epoch      INTEGER NOT NULL,
    name_ct    BLOB NOT NULL,
    ino        INTEGER NOT NULL REFERENCES inodes(id),
    kind       INTEGER NOT NULL,
    PRIMARY KEY (parent, name_index)
) WITHOUT ROWID;
CREATE INDEX dirents_ino ON dirents(ino);
CREATE INDEX dirents_kind ON dirents(parent, kind);
CREATE TABLE file_keys (
    ino     INTEGER NOT NULL REFERENCES inodes(id) ON DELETE CASCADE,
    keygen     INTEGER NOT NULL,
    epoch   INTEGER NOT NULL,
    wrapped BLOB NOT NULL,
    PRIMARY KEY (ino, keygen)
) WITHOUT ROWID;
CREATE TABLE xattrs (
    ino        INTEGER NOT NULL REFERENCES inodes(id) ON DELETE CASCADE,
    name_index BLOB NOT NULL,
    epoch      INTEGER NOT NULL,
    sealed     BLOB NOT NULL,
    PRIMARY KEY (ino, name_index)
) WITHOUT ROWID;
CREATE TABLE changes (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    circle_id INTEGER,
    kind      TEXT NOT NULL,
    at        INTEGER NOT NULL
);
"#,
    // 2: a per-inode change counter, so several mounts of one store notice
    // each other's record updates (close-to-open consistency).
    "ALTER TABLE inodes ADD COLUMN seq INTEGER NOT NULL DEFAULT 0;",
    // 3: the epoch a file key was created in (`origin`), kept when the key is
    // re-wrapped under a later epoch, so a key a removed trustee could have
    // unwrapped is never used for new writes.
    "ALTER TABLE file_keys ADD COLUMN origin INTEGER NOT NULL DEFAULT 0;\n\
     UPDATE file_keys SET origin = epoch;",
    // 4: the inode change feed (see `store::changes`): written by a mount's
    // TEMP triggers, read by the other mounts, pruned after a few seconds
    // (the newest row is always kept, so `seq` never goes back: no
    // AUTOINCREMENT and no index, one page less per transaction each).
    r#"
CREATE TABLE inode_changes (
    seq       INTEGER PRIMARY KEY,
    origin    INTEGER NOT NULL,
    ino       INTEGER NOT NULL,
    parent    INTEGER,
    circle_id INTEGER,
    epoch     INTEGER,
    name_ct   BLOB,
    at        INTEGER NOT NULL
);
"#,
    // 5: inline content: the sealed block slots of small files (up to
    // `format::block::INLINE_SLOTS` slots) in one row instead of a block
    // file each; deleted with the inode.
    r#"
CREATE TABLE inline_slots (
    ino   INTEGER PRIMARY KEY REFERENCES inodes(id) ON DELETE CASCADE,
    slots BLOB NOT NULL
);
"#,
    // 6: block layout 2 (4096-byte pages, headers in entries of two
    // halves): recorded; a store with layout-1 content is refused before.
    "INSERT OR REPLACE INTO meta (key, value) VALUES ('content_layout', '2');",
];
