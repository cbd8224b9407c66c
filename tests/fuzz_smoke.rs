//! Stable-toolchain smoke run of the cargo-fuzz targets (fuzz/harness.rs):
//! 200k mutated command lines, 200k mutated attribute records and 5,000
//! mutated stored blocks from a seed corpus of valid inputs, through
//! exactly the fuzz targets' bodies.
//! Deterministic (fixed xorshift seed); a failure prints the input.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../fuzz/harness.rs"]
mod harness;

use circlefs::format::attrs::{Attrs, Extents, Kind, Time};
use circlefs::ids::{ContentId, KeyGen};
use harness::Outcome;

/// Valid command lines (also the seed corpus in fuzz/seeds/control).
pub const SEED_LINES: &[&str] = &[
    "help",
    "user create bob --new-passphrase-file /tmp/p --may-change-password --user-admin --given-name Bob --family-name Builder --email bob@x.org",
    "user create \"bob\" --email=bob@x.org",
    "user delete bob",
    "user modify bob --may-change-password false --user-admin=true --given-name '' --email b@y",
    "user modify bob --new-passphrase-file /tmp/p",
    "user passwd --new-passphrase-file /tmp/p",
    "user passwd",
    "user info",
    "user info bob",
    "user list --query ob --status verified --start 2 --count 3",
    "user list --status any",
    "user verify bob",
    "circle create docs",
    "circle create \"Team \\\"Docs\\\"\"",
    "circle create 'Grüße 日本'",
    "circle delete docs",
    "circle info docs",
    "circle list",
    "circle set-members docs alice:admin bob carol:read",
    "circle rekey docs",
    "trustee add docs bob carol --level read",
    "trustee add docs -- --weird-name",
    "trustee remove docs bob carol",
    "trustee set docs bob --level admin",
];

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

/// Interesting fragments for the command language.
const DICT: &[&[u8]] = &[
    b" ",
    b"\"",
    b"'",
    b"\\",
    b"--",
    b"=",
    b":",
    b"--level",
    b"admin",
    b"read",
    b"write",
    b"user",
    b"circle",
    b"trustee",
    b"--start",
    b"--count",
    b"-1",
    b"99999999999999999999",
    b"\t",
    b"\n",
    b"\0",
    b"\x7f",
    "é".as_bytes(),
    "日".as_bytes(),
    b"\xff",
    b"\xc3",
    b"--new-passphrase-file",
    b"--query",
    b"%",
    b"_",
];

fn mutate(rng: &mut Rng, input: &[u8], seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        match rng.below(9) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] ^= 1 << rng.below(8);
            }
            1 => {
                let i = rng.below(v.len() + 1);
                v.insert(i, rng.next() as u8);
            }
            2 if !v.is_empty() => {
                let i = rng.below(v.len());
                let n = 1 + rng.below(8.min(v.len() - i));
                v.drain(i..i + n);
            }
            3 => {
                let i = rng.below(v.len() + 1);
                let d = DICT[rng.below(DICT.len())];
                v.splice(i..i, d.iter().copied());
            }
            4 => {
                v.truncate(rng.below(v.len() + 1));
            }
            5 => {
                let other = &seeds[rng.below(seeds.len())];
                let cut = rng.below(v.len() + 1);
                let from = rng.below(other.len() + 1);
                v.truncate(cut);
                v.extend_from_slice(&other[from..]);
            }
            6 if !v.is_empty() => {
                let i = rng.below(v.len());
                let n = 1 + rng.below(16.min(v.len() - i));
                let chunk: Vec<u8> = v[i..i + n].to_vec();
                let big = rng.below(50) == 0;
                let times = 1 + rng.below(if big { 2000 } else { 4 });
                for _ in 0..times {
                    v.extend_from_slice(&chunk);
                }
            }
            7 if v.len() >= 4 => {
                // Overwrite with an interesting integer (for binary records).
                let i = rng.below(v.len() - 3);
                let x: u32 = [
                    0,
                    1,
                    u32::MAX,
                    0x8000_0000,
                    4095,
                    4096,
                    1 << 20,
                    (1 << 20) + 1,
                ][rng.below(8)];
                v[i..i + 4].copy_from_slice(&x.to_le_bytes());
            }
            _ => {
                let i = rng.below(v.len() + 1);
                let n = rng.below(8);
                for _ in 0..n {
                    v.insert(i, rng.next() as u8);
                }
            }
        }
    }
    v
}

const ITERATIONS: usize = 200_000;

#[test]
fn control_target_smoke() {
    let seeds: Vec<Vec<u8>> = SEED_LINES.iter().map(|s| s.as_bytes().to_vec()).collect();
    // Every seed is a valid command (otherwise the corpus is stale).
    for s in SEED_LINES {
        assert_eq!(harness::control(s.as_bytes()), Outcome::Ok, "seed {s:?}");
    }
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut counts = [0usize; 4];
    let mut pool = seeds.clone();
    for i in 0..ITERATIONS {
        let base = &pool[rng.below(pool.len())];
        let input = mutate(&mut rng, base, &seeds);
        let out = std::panic::catch_unwind(|| harness::control(&input)).unwrap_or_else(|_| {
            panic!(
                "iteration {i}: panic on input {:?}",
                String::from_utf8_lossy(&input)
            )
        });
        counts[out as usize] += 1;
        // Keep inputs that still parse as further mutation bases (bounded).
        if out == Outcome::Ok && pool.len() < 4096 && input.len() < 512 {
            pool.push(input);
        }
    }
    // The mutations reached every outcome, a fair share of them deep ones.
    eprintln!("control outcomes (ok, bad, missing, not-utf8): {counts:?}");
    let [ok, bad, missing, not_utf8] = counts;
    assert!(ok > ITERATIONS / 50, "{counts:?}");
    assert!(bad > ITERATIONS / 10, "{counts:?}");
    assert!(missing > ITERATIONS / 200, "{counts:?}");
    assert!(not_utf8 > ITERATIONS / 100, "{counts:?}");
    // Edge cases: exactly at and just over the line limit.
    let at = format!("circle create {}", "x".repeat(4096 - 14));
    assert_eq!(at.len(), 4096);
    assert_ne!(harness::control(at.as_bytes()), Outcome::Missing);
    let over = format!("{at}x");
    assert_eq!(harness::control(over.as_bytes()), Outcome::Bad);
}

fn sample_attrs() -> Vec<Vec<u8>> {
    let t = Time {
        sec: 1_700_000_000,
        nsec: 5,
    };
    let file = Attrs {
        kind: Kind::File,
        mode: 0o100644,
        uid: 1000,
        gid: 1000,
        rdev: 0,
        size: 3 * 4096 + 17,
        atime: t,
        mtime: t,
        ctime: t,
        crtime: Time {
            sec: -1,
            nsec: 999_999_999,
        },
        content: ContentId([0xAB; 16]),
        keygen: KeyGen(2),
        extents: Extents(vec![(0, 2), (3, 4)]),
        target: Vec::new(),
    };
    let dir = Attrs {
        kind: Kind::Dir,
        mode: 0o40755,
        size: 0,
        keygen: KeyGen(0),
        extents: Extents::default(),
        ..file.clone()
    };
    let link = Attrs {
        kind: Kind::Symlink,
        mode: 0o120777,
        target: b"../some/where".to_vec(),
        ..dir.clone()
    };
    let special = Attrs {
        kind: Kind::Special,
        mode: 0o20644,
        rdev: 0x0801,
        ..dir.clone()
    };
    [file, dir, link, special]
        .iter()
        .map(Attrs::encode)
        .collect()
}

/// Run `target` on `n` mutations of `seeds` (xorshift from `seed`); how
/// many it accepted. A panic fails with the input.
fn accepted(seeds: &[Vec<u8>], seed: u64, n: usize, target: fn(&[u8]) -> bool) -> usize {
    let mut rng = Rng(seed);
    let mut ok = 0usize;
    for i in 0..n {
        let base = &seeds[rng.below(seeds.len())];
        let input = mutate(&mut rng, base, seeds);
        ok += std::panic::catch_unwind(|| target(&input))
            .unwrap_or_else(|_| panic!("iteration {i}: panic on input {input:02x?}"))
            as usize;
    }
    ok
}

#[test]
fn attrs_target_smoke() {
    let seeds = sample_attrs();
    for s in &seeds {
        assert!(harness::attrs(s), "seed does not decode");
    }
    let decoded = accepted(&seeds, 0xD1B5_4A32_D192_ED03, ITERATIONS, harness::attrs);
    // Most mutations must be refused, some (e.g. flipped mode bits) still decode.
    assert!(
        decoded > ITERATIONS / 100 && decoded < ITERATIONS / 2,
        "decoded {decoded}"
    );
    // Hostile lengths: a huge extent count or symlink length never allocates or panics.
    let mut huge = seeds[0].clone();
    let ext_count_at = 1 + 1 + 4 * 4 + 8 + 4 * 12 + 16 + 4;
    huge[ext_count_at..ext_count_at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(!harness::attrs(&huge));
}

#[test]
fn block_target_smoke() {
    let seeds: Vec<Vec<u8>> = [(0, false), (1, false), (0, true), (1, true)]
        .iter()
        .map(|(h, both)| harness::sealed_block(*h, *both))
        .collect();
    for s in &seeds {
        assert!(harness::block(s), "seed does not open");
    }
    let n = 5_000;
    let opened = accepted(&seeds, 0x2545_F491_4F6C_DD1D, n, harness::block);
    // Most mutations are refused; those of bytes nothing authenticates
    // (an empty half, a remnant half) still open, to the same content.
    // Each flip lands in the 32 unauthenticated bytes about 1 % of the time.
    assert!(opened >= 5 && opened < n / 10, "opened {opened}");
}

#[test]
fn committed_seed_corpus_is_valid() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
    let mut n = 0;
    for e in std::fs::read_dir(dir.join("control")).unwrap() {
        let b = std::fs::read(e.unwrap().path()).unwrap();
        assert_eq!(
            harness::control(&b),
            Outcome::Ok,
            "{}",
            String::from_utf8_lossy(&b)
        );
        n += 1;
    }
    assert_eq!(n, SEED_LINES.len());
    let mut got: Vec<Vec<u8>> = Vec::new();
    for e in std::fs::read_dir(dir.join("attrs")).unwrap() {
        got.push(std::fs::read(e.unwrap().path()).unwrap());
    }
    got.sort();
    let mut want = sample_attrs();
    want.sort();
    assert_eq!(got, want, "fuzz/seeds/attrs matches sample_attrs()");
    for b in &got {
        assert!(harness::attrs(b));
    }
    let mut blocks = 0;
    for e in std::fs::read_dir(dir.join("block")).unwrap() {
        let b = std::fs::read(e.unwrap().path()).unwrap();
        assert!(harness::block(&b), "fuzz/seeds/block: a seed does not open");
        blocks += 1;
    }
    assert_eq!(blocks, 4);
}

/// Writes fuzz/seeds/block (run with `--ignored` after a layout change).
#[test]
#[ignore]
fn regenerate_block_seeds() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/block");
    std::fs::create_dir_all(&dir).unwrap();
    for (h, both) in [(0, false), (1, false), (0, true), (1, true)] {
        let name = format!("half{h}{}", if both { "-remnant" } else { "" });
        std::fs::write(dir.join(name), harness::sealed_block(h, both)).unwrap();
    }
}
