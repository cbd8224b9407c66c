//! Per-request counts and handling times of a mount (`-o opstats=FILE`),
//! written as a table to FILE when it is unmounted.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

/// Request kinds timed: each FUSE callback of the adapter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Req {
    Lookup,
    Getattr,
    Setattr,
    Readlink,
    Mknod,
    Mkdir,
    Unlink,
    Rmdir,
    Symlink,
    Rename,
    Link,
    Open,
    Read,
    Write,
    Flush,
    Release,
    Fsync,
    Opendir,
    Readdir,
    Readdirplus,
    Releasedir,
    Fsyncdir,
    Statfs,
    Setxattr,
    Getxattr,
    Listxattr,
    Removexattr,
    Ioctl,
    Access,
    Create,
    Fallocate,
}

const NAMES: [&str; 31] = [
    "LOOKUP",
    "GETATTR",
    "SETATTR",
    "READLINK",
    "MKNOD",
    "MKDIR",
    "UNLINK",
    "RMDIR",
    "SYMLINK",
    "RENAME",
    "LINK",
    "OPEN",
    "READ",
    "WRITE",
    "FLUSH",
    "RELEASE",
    "FSYNC",
    "OPENDIR",
    "READDIR",
    "READDIRPLUS",
    "RELEASEDIR",
    "FSYNCDIR",
    "STATFS",
    "SETXATTR",
    "GETXATTR",
    "LISTXATTR",
    "REMOVEXATTR",
    "IOCTL",
    "ACCESS",
    "CREATE",
    "FALLOCATE",
];

// One name per request kind, in the enum's order.
const _: () = assert!(NAMES.len() == Req::Fallocate as usize + 1);

/// Histogram buckets: log-linear in µs, four per power of two (about 19 %
/// wide), up to 2^21 µs; longer times land in the last one.
const BUCKETS: usize = 84;

fn bucket(us: u64) -> usize {
    if us < 4 {
        return us as usize;
    }
    let e = 63 - us.leading_zeros() as usize;
    (4 * (e - 1) + ((us >> (e - 2)) & 3) as usize).min(BUCKETS - 1)
}

/// Upper bound (µs) of bucket `b`.
fn bucket_top(b: usize) -> u64 {
    if b < 4 {
        return b as u64 + 1;
    }
    let e = b / 4 + 1;
    let sub = (b % 4) as u64;
    ((4 + sub) << (e - 2)) + (1 << (e - 2))
}

struct Slot {
    n: AtomicU64,
    ns: AtomicU64,
    max_ns: AtomicU64,
    hist: [AtomicU64; BUCKETS],
}

impl Slot {
    fn new() -> Slot {
        Slot {
            n: AtomicU64::new(0),
            ns: AtomicU64::new(0),
            max_ns: AtomicU64::new(0),
            hist: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    fn add(&self, ns: u64) {
        self.n.fetch_add(1, Relaxed);
        self.ns.fetch_add(ns, Relaxed);
        self.max_ns.fetch_max(ns, Relaxed);
        self.hist[bucket(ns / 1000)].fetch_add(1, Relaxed);
    }

    /// Upper bound (µs) of the bucket holding quantile `q`.
    fn quantile(&self, q: f64) -> u64 {
        let n = self.n.load(Relaxed);
        let want = ((n as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (b, h) in self.hist.iter().enumerate() {
            seen += h.load(Relaxed);
            if seen >= want {
                return bucket_top(b);
            }
        }
        bucket_top(BUCKETS - 1)
    }
}

/// Counters of one mount.
pub struct OpStats {
    slots: Vec<Slot>,
}

/// Times one request from its creation to its drop (after the reply).
pub struct Timer<'a> {
    slot: &'a Slot,
    t0: Instant,
}

impl Drop for Timer<'_> {
    fn drop(&mut self) {
        let ns = u64::try_from(self.t0.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.slot.add(ns);
    }
}

impl Default for OpStats {
    fn default() -> Self {
        OpStats {
            slots: NAMES.iter().map(|_| Slot::new()).collect(),
        }
    }
}

impl OpStats {
    /// Start timing a request of kind `r`.
    pub fn time(&self, r: Req) -> Option<Timer<'_>> {
        self.slots.get(r as usize).map(|slot| Timer {
            slot,
            t0: Instant::now(),
        })
    }

    /// A markdown table: per request kind seen, count, total time, mean
    /// and bucketed p50 / p99 (upper bounds), max; busiest first.
    pub fn table(&self) -> String {
        let mut rows: Vec<(&str, &Slot)> = NAMES
            .iter()
            .zip(&self.slots)
            .filter(|(_, s)| s.n.load(Relaxed) > 0)
            .map(|(n, s)| (*n, s))
            .collect();
        rows.sort_by_key(|(_, s)| std::cmp::Reverse(s.ns.load(Relaxed)));
        let mut out = String::from(
            "| request | count | total s | mean µs | p50 µs (≤) | p99 µs (≤) | max µs |\n\
             |---|---:|---:|---:|---:|---:|---:|\n",
        );
        let (mut n_all, mut ns_all) = (0u64, 0u64);
        for (name, s) in rows {
            let n = s.n.load(Relaxed);
            let ns = s.ns.load(Relaxed);
            n_all += n;
            ns_all += ns;
            let _ = writeln!(
                out,
                "| {name} | {n} | {:.3} | {:.1} | {} | {} | {} |",
                ns as f64 / 1e9,
                ns as f64 / 1e3 / n as f64,
                s.quantile(0.5),
                s.quantile(0.99),
                s.max_ns.load(Relaxed) / 1000
            );
        }
        let _ = writeln!(
            out,
            "| all | {n_all} | {:.3} | {:.1} | | | |",
            ns_all as f64 / 1e9,
            if n_all == 0 {
                0.0
            } else {
                ns_all as f64 / 1e3 / n_all as f64
            }
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_ordered_and_cover() {
        let mut last = 0;
        for us in [0u64, 1, 3, 4, 5, 7, 8, 15, 16, 100, 1000, 1 << 20] {
            let b = bucket(us);
            assert!(b >= last, "bucket of {us}");
            assert!(bucket_top(b) > us, "{us} below the top of its bucket");
            last = b;
        }
        assert_eq!(bucket(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn table_counts_and_quantiles() {
        let s = OpStats::default();
        for us in [10u64, 10, 10, 1000] {
            s.slots[Req::Write as usize].add(us * 1000);
        }
        s.slots[Req::Lookup as usize].add(5000);
        let t = s.table();
        assert!(t.contains("| WRITE | 4 | 0.001 | 257.5 | 12 |"), "{t}");
        assert!(t.contains("| LOOKUP | 1 |"), "{t}");
        assert!(!t.contains("GETATTR"), "{t}");
        // Busiest first.
        assert!(t.find("WRITE") < t.find("LOOKUP"), "{t}");
        assert!(t.contains("| all | 5 |"), "{t}");
    }
}
