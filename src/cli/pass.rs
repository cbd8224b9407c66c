//! Reading passphrases: no-echo prompt, a file, or an inherited fd. Never argv or env.

use std::io::Read;
use std::path::Path;

use crate::crypto::Passphrase;
use crate::error::{Error, ErrorKind, Result};

fn strip(mut b: Vec<u8>) -> Vec<u8> {
    if b.last() == Some(&b'\n') {
        b.pop();
        if b.last() == Some(&b'\r') {
            b.pop();
        }
    }
    b
}

/// Read a passphrase from a file (one trailing newline dropped).
pub fn from_file(p: &Path) -> Result<Passphrase> {
    crate::control::exec::read_pass(&crate::control::PassSource::File(p.to_path_buf()))
}

/// Read a passphrase from an inherited file descriptor (up to a newline or
/// EOF). Opened through `/proc/self/fd/N`, which needs no unsafe code.
pub fn from_fd(fd: i32) -> Result<Passphrase> {
    if fd < 0 {
        return Err(Error::new(
            ErrorKind::BadRequest,
            "--passphrase-fd must be >= 0",
        ));
    }
    let f = std::fs::File::open(format!("/proc/self/fd/{fd}"))
        .map_err(|e| Error::new(ErrorKind::BadRequest, format!("--passphrase-fd {fd}: {e}")))?;
    let mut buf = Vec::new();
    let mut limited = f.take(4097);
    let mut byte = [0u8; 1];
    loop {
        match limited.read(&mut byte) {
            Ok(0) => break,
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) => buf.push(byte[0]),
            Err(e) => {
                return Err(Error::new(
                    ErrorKind::BadRequest,
                    format!("--passphrase-fd {fd}: {e}"),
                ));
            }
        }
    }
    if buf.len() > 4096 {
        return Err(Error::new(
            ErrorKind::BadRequest,
            "passphrase longer than 4096 bytes",
        ));
    }
    Ok(Passphrase::new(strip(buf)))
}

/// Prompt without echo on the terminal.
pub fn prompt(what: &str) -> Result<Passphrase> {
    let s = rpassword::prompt_password(format!("{what}: ")).map_err(|e| {
        Error::new(
            ErrorKind::Missing,
            format!(
                "cannot prompt for a passphrase ({e}); use --passphrase-file or --passphrase-fd"
            ),
        )
    })?;
    Ok(Passphrase::new(s.into_bytes()))
}

/// Prompt twice for a new passphrase; they must match.
pub fn prompt_new(what: &str) -> Result<Passphrase> {
    let a = prompt(what)?;
    let b = prompt("Repeat it")?;
    if a != b {
        return Err(Error::new(
            ErrorKind::BadRequest,
            "the passphrases do not match",
        ));
    }
    Ok(a)
}
