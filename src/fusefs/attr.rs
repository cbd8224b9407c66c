//! Conversions between workspace nodes and fuser attributes.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{FileAttr, FileType, INodeNo};

use crate::format::attrs::{Kind, Time};
use crate::vault::workspace::Node;

/// First FUSE inode number used for store inodes (below: virtual nodes).
pub const INO_OFFSET: u64 = 16;
/// The mount root.
pub const ROOT: u64 = 1;
/// The `.circlefs` directory.
pub const CTL_DIR: u64 = 2;
/// The control file.
pub const CTL_FILE: u64 = 3;

/// Wall time to SystemTime.
pub fn systime(t: Time) -> SystemTime {
    if t.sec >= 0 {
        UNIX_EPOCH + Duration::new(t.sec as u64, t.nsec)
    } else {
        UNIX_EPOCH
            .checked_sub(Duration::new(t.sec.unsigned_abs(), 0))
            .and_then(|x| x.checked_add(Duration::from_nanos(t.nsec as u64)))
            .unwrap_or(UNIX_EPOCH)
    }
}

/// SystemTime to wall time.
pub fn walltime(s: SystemTime) -> Time {
    match s.duration_since(UNIX_EPOCH) {
        Ok(d) => Time {
            sec: d.as_secs() as i64,
            nsec: d.subsec_nanos(),
        },
        Err(e) => {
            let d = e.duration();
            let mut sec = -(d.as_secs() as i64);
            let mut nsec = d.subsec_nanos();
            if nsec > 0 {
                sec -= 1;
                nsec = 1_000_000_000 - nsec;
            }
            Time { sec, nsec }
        }
    }
}

/// File type from the mode bits.
pub fn file_type(kind: Kind, mode: u32) -> FileType {
    match kind {
        Kind::File => FileType::RegularFile,
        Kind::Dir => FileType::Directory,
        Kind::Symlink => FileType::Symlink,
        Kind::Special => match mode & libc::S_IFMT {
            libc::S_IFIFO => FileType::NamedPipe,
            libc::S_IFSOCK => FileType::Socket,
            libc::S_IFCHR => FileType::CharDevice,
            libc::S_IFBLK => FileType::BlockDevice,
            _ => FileType::RegularFile,
        },
    }
}

/// fuser attributes of a node.
pub fn to_attr(n: &Node) -> FileAttr {
    let a = &n.attrs;
    let blocks = if a.kind == Kind::File {
        a.extents.count() * 8
    } else {
        0
    };
    FileAttr {
        ino: INodeNo(n.ino.0 as u64 + INO_OFFSET),
        size: a.size,
        blocks,
        atime: systime(a.atime),
        mtime: systime(a.mtime),
        ctime: systime(a.ctime),
        crtime: systime(a.crtime),
        kind: file_type(a.kind, a.mode),
        perm: (a.mode & 0o7777) as u16,
        nlink: n.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev,
        blksize: 4096,
        flags: 0,
    }
}

/// A virtual directory or file owned by the mounting user.
pub fn virtual_attr(
    ino: u64,
    dir: bool,
    perm: u16,
    nlink: u32,
    uid: u32,
    gid: u32,
    at: SystemTime,
) -> FileAttr {
    FileAttr {
        ino: INodeNo(ino),
        size: 0,
        blocks: 0,
        atime: at,
        mtime: at,
        ctime: at,
        crtime: at,
        kind: if dir {
            FileType::Directory
        } else {
            FileType::RegularFile
        },
        perm,
        nlink,
        uid,
        gid,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_roundtrip() {
        for t in [
            Time { sec: 0, nsec: 0 },
            Time {
                sec: 12345,
                nsec: 999,
            },
            Time { sec: -5, nsec: 250 },
        ] {
            assert_eq!(walltime(systime(t)), t);
        }
    }
}
