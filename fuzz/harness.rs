//! Bodies of the fuzz targets, shared by `fuzz_targets/*.rs` (cargo-fuzz)
//! and `tests/fuzz_smoke.rs` (stable, no libFuzzer), so the smoke test runs
//! exactly what the fuzzer runs. Each body panics on a broken invariant.

// Each includer uses only some of the bodies.
#![allow(dead_code)]

use circlefs::control::parse::{MAX_LINE, parse_line, parse_tokens};
use circlefs::error::ErrorKind;
use circlefs::format::attrs::Attrs;

/// What a parse outcome was, for the smoke test's coverage counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Parsed into a command.
    Ok,
    /// Refused as malformed (400).
    Bad,
    /// Refused as incomplete (406).
    Missing,
    /// Not UTF-8 (only the token path ran).
    NotUtf8,
}

fn check(r: &circlefs::error::Result<circlefs::control::Command>, len: usize) -> Outcome {
    match r {
        Ok(_) => {
            assert!(len <= MAX_LINE, "accepted a command of {len} bytes");
            Outcome::Ok
        }
        Err(e) if e.kind == ErrorKind::BadRequest => Outcome::Bad,
        Err(e) if e.kind == ErrorKind::Missing => Outcome::Missing,
        Err(e) => panic!(
            "parser returned {:?} (status {}): only 400/406 are allowed",
            e.kind,
            e.status().code()
        ),
    }
}

/// Target `control`: the line parser on arbitrary UTF-8, and the token
/// parser on the bytes split at NUL / newline (argv-like words).
pub fn control(data: &[u8]) -> Outcome {
    let words: Vec<String> = data
        .split(|b| *b == 0 || *b == b'\n')
        .map(|w| String::from_utf8_lossy(w).into_owned())
        .collect();
    let total: usize = words.iter().map(|w| w.len() + 1).sum();
    check(&parse_tokens(&words), total);
    match std::str::from_utf8(data) {
        Ok(s) => {
            let out = check(&parse_line(s), s.len());
            // Parsing is a pure function.
            assert_eq!(
                format!("{:?}", parse_line(s)),
                format!("{:?}", parse_line(s))
            );
            out
        }
        Err(_) => Outcome::NotUtf8,
    }
}

/// Target `attrs`: the attribute record decoder on arbitrary bytes. A
/// record that decodes re-encodes to exactly the same bytes (the format is
/// canonical, so no two byte strings mean the same record).
pub fn attrs(data: &[u8]) -> bool {
    match Attrs::decode(data) {
        Ok(a) => {
            assert_eq!(a.encode(), data, "decode/encode is not canonical");
            true
        }
        Err(e) => {
            assert_eq!(
                e.kind,
                ErrorKind::Integrity,
                "decode errors are integrity errors"
            );
            false
        }
    }
}

/// The file key, circle, content id and plaintext of target `block`.
fn block_setup() -> (
    circlefs::crypto::aead::Cipher,
    circlefs::ids::CircleId,
    circlefs::ids::ContentId,
    Vec<u8>,
) {
    let key = circlefs::crypto::Key32::from_bytes([7u8; 32]);
    let pt = (0..circlefs::format::block::BLOCK_SIZE)
        .map(|i| (i % 251) as u8)
        .collect();
    (
        circlefs::crypto::aead::Cipher::new(&key),
        circlefs::ids::CircleId(3),
        circlefs::ids::ContentId([9u8; 16]),
        pt,
    )
}

/// Block index the `block` target's blocks are sealed at.
pub const BLOCK_INDEX: u64 = 5;

/// A stored block as the `block` target takes it: `entry || page`, its
/// block sealed under generation 1 into half `half` (the other half
/// empty, or with `both` a header of generation 2 that opens nothing: an
/// interrupted write's remnant).
pub fn sealed_block(half: usize, both: bool) -> Vec<u8> {
    use circlefs::format::block::{ENTRY, HALF, Half};
    let (c, circle, content, pt) = block_setup();
    let mut page = pt;
    let g = circlefs::ids::KeyGen(1);
    let aad =
        circlefs::format::aad::block(circle, &content, g, circlefs::ids::BlockIndex(BLOCK_INDEX));
    let (nonce, tag) = c
        .seal_detached(
            &mut circlefs::crypto::aead::Nonces::fresh(1).unwrap(),
            &aad,
            &mut page,
        )
        .unwrap();
    let mut entry = [0u8; ENTRY];
    Half {
        keygen: g,
        nonce,
        tag,
    }
    .put(&mut entry[half * HALF..(half + 1) * HALF]);
    if both {
        let other = 1 - half;
        Half {
            keygen: circlefs::ids::KeyGen(2),
            nonce: [1u8; 12],
            tag: [2u8; 16],
        }
        .put(&mut entry[other * HALF..(other + 1) * HALF]);
    }
    [&entry[..], &page[..]].concat()
}

/// Target `block`: opening a stored block (`entry || page`, untrusted
/// bytes, any length) with the file's keys (generations 1 and 2). What
/// opens is exactly the block that was sealed; anything else is an
/// integrity error with nothing written out.
pub fn block(data: &[u8]) -> bool {
    use circlefs::format::block::{ENTRY, open_page};
    let (c, circle, content, pt) = block_setup();
    let c = std::sync::Arc::new(c);
    let entry = &data[..ENTRY.min(data.len())];
    let page = data.get(ENTRY..).unwrap_or(&[]);
    let mut out = vec![0u8; page.len()];
    let r = open_page(entry, page, &mut out, |g| {
        if g.0 == 1 || g.0 == 2 {
            Ok((
                c.clone(),
                circlefs::format::aad::block(
                    circle,
                    &content,
                    g,
                    circlefs::ids::BlockIndex(BLOCK_INDEX),
                ),
            ))
        } else {
            circlefs::error::err(ErrorKind::Integrity, "no file key for that generation")
        }
    });
    match r {
        Ok(h) => {
            assert!(h < 2);
            assert_eq!(out, pt, "a block opened to other content");
            true
        }
        Err(e) => {
            assert_eq!(
                e.kind,
                ErrorKind::Integrity,
                "open errors are integrity errors"
            );
            assert!(out.iter().all(|b| *b == 0), "a failed open left output");
            false
        }
    }
}
