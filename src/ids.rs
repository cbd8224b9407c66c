//! Typed identifiers shared by every layer (never bare integers across layers).

use std::fmt;

macro_rules! id_type {
    ($(#[$m:meta])* $name:ident, $inner:ty) => {
        $(#[$m])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
        pub struct $name(pub $inner);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }

        impl $name {
            /// Little-endian bytes as used in AAD layouts.
            pub fn to_le(self) -> [u8; std::mem::size_of::<$inner>()] {
                self.0.to_le_bytes()
            }
        }
    };
}

id_type!(
    /// Row id of an account.
    AccountId,
    i64
);
id_type!(
    /// Row id of a circle.
    CircleId,
    i64
);
id_type!(
    /// Row id of an inode (file, directory or symlink) inside a circle.
    InodeId,
    i64
);
id_type!(
    /// Key epoch of a circle; a new epoch starts at every revocation.
    Epoch,
    u32
);
id_type!(
    /// Key generation of one file's content key.
    KeyGen,
    u32
);
id_type!(
    /// A position in a directory listing, as readdir callers carry it
    /// (the FUSE offset, telldir(3)): 0 is the start; the workspace
    /// defines the rest (see `vault::workspace::dirpos`).
    DirPos,
    u64
);
id_type!(
    /// Index of a fixed-size block inside a file.
    BlockIndex,
    u64
);

/// Random 128-bit identity of a file's content, bound into every block's AAD
/// and naming its block file.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct ContentId(pub [u8; 16]);

impl ContentId {
    /// Lower-case hex, used for the block file name.
    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// An account name as typed by people (validated by `format::name`).
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct AccountName(pub String);

impl fmt::Display for AccountName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A circle name (plaintext only in memory; encrypted at rest).
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct CircleName(pub String);

impl fmt::Display for CircleName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
