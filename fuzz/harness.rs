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
