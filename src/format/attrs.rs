//! The inode attribute record (sealed at rest): mode, owner, times, size,
//! written block extents, content id, key generation, symlink target.

use crate::error::{ErrorKind, Result, err};
use crate::ids::{ContentId, KeyGen};

/// Record layout version.
const RECORD_VERSION: u8 = 1;
/// Most extents a record may hold (a parser cap; adjacent ranges are merged).
pub const MAX_EXTENTS: usize = 1 << 20;

/// Kind of inode (also a clear column: the tree shape is declared as leaked).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    /// Regular file.
    File = 1,
    /// Directory.
    Dir = 2,
    /// Symbolic link.
    Symlink = 3,
    /// FIFO, socket or device node (no content).
    Special = 4,
}

impl Kind {
    /// From the stored byte.
    pub fn from_u8(v: u8) -> Option<Kind> {
        match v {
            1 => Some(Kind::File),
            2 => Some(Kind::Dir),
            3 => Some(Kind::Symlink),
            4 => Some(Kind::Special),
            _ => None,
        }
    }
}

/// Seconds and nanoseconds since the epoch.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug, Default)]
pub struct Time {
    /// Seconds (may be negative).
    pub sec: i64,
    /// Nanoseconds, < 1e9.
    pub nsec: u32,
}

impl Time {
    /// The current wall-clock time.
    pub fn now() -> Time {
        match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => Time {
                sec: d.as_secs() as i64,
                nsec: d.subsec_nanos(),
            },
            Err(_) => Time::default(),
        }
    }
}

/// Sorted, disjoint, non-adjacent half-open ranges of written block indexes.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct Extents(pub Vec<(u64, u64)>);

impl Extents {
    /// True when block `i` was written (and so must authenticate).
    pub fn contains(&self, i: u64) -> bool {
        let idx = self.0.partition_point(|&(_, end)| end <= i);
        self.0.get(idx).is_some_and(|&(s, _)| s <= i)
    }

    /// Mark blocks `[start, end)` written.
    pub fn add(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        // Fast path: extending the last range (sequential writes).
        if let Some(last) = self.0.last_mut()
            && start >= last.0
            && start <= last.1
        {
            last.1 = last.1.max(end);
            return;
        }
        let mut out = Vec::with_capacity(self.0.len() + 1);
        let (mut s, mut e) = (start, end);
        let mut placed = false;
        for &(a, b) in &self.0 {
            if b < s {
                out.push((a, b));
            } else if a > e {
                if !placed {
                    out.push((s, e));
                    placed = true;
                }
                out.push((a, b));
            } else {
                s = s.min(a);
                e = e.max(b);
            }
        }
        if !placed {
            out.push((s, e));
        }
        self.0 = out;
    }

    /// Forget every block at or after `nblocks` (truncate).
    pub fn truncate(&mut self, nblocks: u64) {
        self.0.retain(|&(s, _)| s < nblocks);
        if let Some(last) = self.0.last_mut() {
            last.1 = last.1.min(nblocks);
        }
    }

    /// Number of written blocks.
    pub fn count(&self) -> u64 {
        self.0.iter().map(|(s, e)| e - s).sum()
    }
}

/// Everything about an inode except its names.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Attrs {
    /// Kind.
    pub kind: Kind,
    /// Full st_mode (type and permission bits).
    pub mode: u32,
    /// Owner uid.
    pub uid: u32,
    /// Owner gid.
    pub gid: u32,
    /// Device number for device nodes.
    pub rdev: u32,
    /// Exact plaintext size in bytes.
    pub size: u64,
    /// Access time.
    pub atime: Time,
    /// Modification time.
    pub mtime: Time,
    /// Change time.
    pub ctime: Time,
    /// Creation time.
    pub crtime: Time,
    /// Random content identity (AAD of blocks, block file name).
    pub content: ContentId,
    /// Current key generation of the content (0 = no key yet).
    pub keygen: KeyGen,
    /// Written blocks.
    pub extents: Extents,
    /// Symlink target (empty otherwise).
    pub target: Vec<u8>,
}

fn put_time(v: &mut Vec<u8>, t: Time) {
    v.extend_from_slice(&t.sec.to_le_bytes());
    v.extend_from_slice(&t.nsec.to_le_bytes());
}

/// A bounds-checked little-endian reader over untrusted bytes.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Read from `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }
    /// Next `n` bytes.
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.buf.len())
            .ok_or_else(|| crate::error::Error::new(ErrorKind::Integrity, "record truncated"))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn arr<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.bytes(N)?);
        Ok(a)
    }
    /// u8.
    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.arr::<1>()?[0])
    }
    /// u16 LE.
    pub fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.arr()?))
    }
    /// u32 LE.
    pub fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.arr()?))
    }
    /// u64 LE.
    pub fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.arr()?))
    }
    /// i64 LE.
    pub fn i64(&mut self) -> Result<i64> {
        Ok(i64::from_le_bytes(self.arr()?))
    }
    /// Fail unless every byte was consumed.
    pub fn finish(&self) -> Result<()> {
        if self.pos != self.buf.len() {
            return err(ErrorKind::Integrity, "record has trailing bytes");
        }
        Ok(())
    }
}

fn get_time(r: &mut Reader<'_>) -> Result<Time> {
    let sec = r.i64()?;
    let nsec = r.u32()?;
    if nsec >= 1_000_000_000 {
        return err(ErrorKind::Integrity, "record time out of range");
    }
    Ok(Time { sec, nsec })
}

impl Attrs {
    /// Encode to the record bytes (plaintext; the vault seals them).
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(128 + self.extents.0.len() * 16 + self.target.len());
        v.push(RECORD_VERSION);
        v.push(self.kind as u8);
        v.extend_from_slice(&self.mode.to_le_bytes());
        v.extend_from_slice(&self.uid.to_le_bytes());
        v.extend_from_slice(&self.gid.to_le_bytes());
        v.extend_from_slice(&self.rdev.to_le_bytes());
        v.extend_from_slice(&self.size.to_le_bytes());
        for t in [self.atime, self.mtime, self.ctime, self.crtime] {
            put_time(&mut v, t);
        }
        v.extend_from_slice(&self.content.0);
        v.extend_from_slice(&self.keygen.0.to_le_bytes());
        v.extend_from_slice(&(self.extents.0.len() as u32).to_le_bytes());
        for (s, e) in &self.extents.0 {
            v.extend_from_slice(&s.to_le_bytes());
            v.extend_from_slice(&e.to_le_bytes());
        }
        v.extend_from_slice(&(self.target.len() as u16).to_le_bytes());
        v.extend_from_slice(&self.target);
        v
    }

    /// Decode and validate record bytes (after authentication, but still
    /// checked strictly: a bug or old format must not reach the kernel).
    pub fn decode(buf: &[u8]) -> Result<Attrs> {
        let mut r = Reader::new(buf);
        if r.u8()? != RECORD_VERSION {
            return err(ErrorKind::Integrity, "unknown attribute record version");
        }
        let kind = Kind::from_u8(r.u8()?)
            .ok_or_else(|| crate::error::Error::new(ErrorKind::Integrity, "bad inode kind"))?;
        let mode = r.u32()?;
        let uid = r.u32()?;
        let gid = r.u32()?;
        let rdev = r.u32()?;
        let size = r.u64()?;
        let atime = get_time(&mut r)?;
        let mtime = get_time(&mut r)?;
        let ctime = get_time(&mut r)?;
        let crtime = get_time(&mut r)?;
        let content = ContentId(r.arr()?);
        let keygen = KeyGen(r.u32()?);
        let n = r.u32()? as usize;
        if n > MAX_EXTENTS {
            return err(ErrorKind::Integrity, "too many extents");
        }
        let mut ext = Vec::with_capacity(n.min(1024));
        let mut prev_end: Option<u64> = None;
        for _ in 0..n {
            let s = r.u64()?;
            let e = r.u64()?;
            if s >= e || prev_end.is_some_and(|p| s <= p) {
                return err(ErrorKind::Integrity, "extents not sorted and disjoint");
            }
            prev_end = Some(e);
            ext.push((s, e));
        }
        let tl = r.u16()? as usize;
        let target = r.bytes(tl)?.to_vec();
        r.finish()?;
        if tl > super::name::MAX_SYMLINK
            || (kind == Kind::Symlink && target.is_empty())
            || (kind != Kind::Symlink && tl != 0)
        {
            return err(ErrorKind::Integrity, "bad symlink target");
        }
        if target.contains(&0) {
            return err(ErrorKind::Integrity, "symlink target contains NUL");
        }
        Ok(Attrs {
            kind,
            mode,
            uid,
            gid,
            rdev,
            size,
            atime,
            mtime,
            ctime,
            crtime,
            content,
            keygen,
            extents: Extents(ext),
            target,
        })
    }
}

/// A file's attributes for tests: `size` bytes, `extents` written ranges.
#[cfg(test)]
pub(crate) fn sample_file(size: u64, extents: &[(u64, u64)]) -> Attrs {
    Attrs {
        kind: Kind::File,
        mode: 0o100644,
        uid: 1,
        gid: 2,
        rdev: 0,
        size,
        atime: Time { sec: 1, nsec: 2 },
        mtime: Time { sec: -3, nsec: 4 },
        ctime: Time::default(),
        crtime: Time::default(),
        content: ContentId([7; 16]),
        keygen: KeyGen(3),
        extents: Extents(extents.to_vec()),
        target: vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Attrs {
        sample_file(12345, &[(0, 2), (5, 9)])
    }

    #[test]
    fn roundtrip() {
        let a = sample();
        assert_eq!(Attrs::decode(&a.encode()).unwrap(), a);
        let mut b = a.encode();
        b.push(0);
        assert!(Attrs::decode(&b).is_err());
        let b = a.encode();
        for cut in 0..b.len() {
            assert!(Attrs::decode(&b[..cut]).is_err());
        }
    }

    #[test]
    fn extents_ops() {
        let mut e = Extents::default();
        e.add(0, 1);
        e.add(1, 3);
        assert_eq!(e.0, vec![(0, 3)]);
        e.add(10, 12);
        e.add(5, 6);
        assert_eq!(e.0, vec![(0, 3), (5, 6), (10, 12)]);
        e.add(2, 11);
        assert_eq!(e.0, vec![(0, 12)]);
        assert!(e.contains(11) && !e.contains(12));
        e.truncate(4);
        assert_eq!(e.0, vec![(0, 4)]);
        e.add(8, 9);
        e.truncate(8);
        assert_eq!(e.0, vec![(0, 4)]);
        assert_eq!(e.count(), 4);
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Attrs::decode(&bytes);
        }

        #[test]
        fn extents_match_model(ops in proptest::collection::vec((0u64..64, 1u64..8), 0..40), cut in 0u64..80) {
            let mut e = Extents::default();
            let mut model = [false; 80];
            for (s, l) in ops {
                e.add(s, s + l);
                for i in s..s + l { model[i as usize] = true; }
            }
            for i in 0..80u64 { prop_assert_eq!(e.contains(i), model[i as usize]); }
            e.truncate(cut);
            for i in 0..80u64 { prop_assert_eq!(e.contains(i), model[i as usize] && i < cut); }
            for w in e.0.windows(2) { prop_assert!(w[0].1 < w[1].0); }
        }
    }
}
