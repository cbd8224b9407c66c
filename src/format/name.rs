//! Name rules for file names, circle names and account names, checked on
//! input and again after decryption (a corrupted store never hands the
//! kernel a name with NUL or '/').

use crate::error::{ErrorKind, Result, err};

/// Longest file or circle name in bytes.
pub const MAX_NAME: usize = 255;
/// Longest account name in bytes.
pub const MAX_ACCOUNT_NAME: usize = 64;
/// Longest symlink target in bytes.
pub const MAX_SYMLINK: usize = 4095;

/// A file name as the kernel may pass it: 1..=255 bytes, no NUL, no '/', not `.` or `..`.
pub fn check_file_name(name: &[u8]) -> Result<()> {
    if name.is_empty() {
        return err(ErrorKind::Invalid, "empty name");
    }
    if name.len() > MAX_NAME {
        return err(ErrorKind::NameTooLong, "name longer than 255 bytes");
    }
    if name.contains(&0) || name.contains(&b'/') {
        return err(ErrorKind::Invalid, "name contains NUL or '/'");
    }
    if name == b"." || name == b".." {
        return err(ErrorKind::Invalid, "name is . or ..");
    }
    Ok(())
}

/// A circle name: a valid file name in UTF-8 without control characters,
/// and not starting with `.` (top-level dot names are reserved, e.g. `.circlefs`).
pub fn check_circle_name(name: &str) -> Result<()> {
    if name.is_empty() {
        return err(ErrorKind::Missing, "circle name is empty");
    }
    check_file_name(name.as_bytes()).map_err(|e| {
        crate::error::Error::new(
            ErrorKind::BadRequest,
            format!("bad circle name: {}", e.detail),
        )
    })?;
    if name.starts_with('.') {
        return err(
            ErrorKind::BadRequest,
            "bad circle name: may not start with '.'",
        );
    }
    if name.chars().any(char::is_control) {
        return err(ErrorKind::BadRequest, "bad circle name: control character");
    }
    Ok(())
}

/// An account name: 1..=64 of `[A-Za-z0-9._@-]`, starting with a letter or digit.
pub fn check_account_name(name: &str) -> Result<()> {
    if name.is_empty() {
        return err(ErrorKind::Missing, "account name is empty");
    }
    if name.len() > MAX_ACCOUNT_NAME {
        return err(
            ErrorKind::BadRequest,
            "bad account name: longer than 64 bytes",
        );
    }
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@');
    if !name.chars().all(ok_char) || !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return err(
            ErrorKind::BadRequest,
            "bad account name: use letters, digits, '.', '_', '-', '@', starting with a letter or digit",
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names() {
        assert!(check_file_name(b"a").is_ok());
        assert!(check_file_name(&[0xff, 0xfe]).is_ok());
        assert!(check_file_name(&[b'x'; 255]).is_ok());
        assert_eq!(
            check_file_name(&[b'x'; 256]).unwrap_err().kind,
            ErrorKind::NameTooLong
        );
        for bad in [&b""[..], b".", b"..", b"a/b", b"a\0b"] {
            assert!(check_file_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn circle_and_account_names() {
        assert!(check_circle_name("Team Docs").is_ok());
        assert!(check_circle_name(".circlefs").is_err());
        assert!(check_circle_name("a\nb").is_err());
        assert!(check_account_name("alice").is_ok());
        assert!(check_account_name("a.b-c_d@x").is_ok());
        assert!(check_account_name("-x").is_err());
        assert!(check_account_name("a b").is_err());
        assert!(check_account_name(&"a".repeat(65)).is_err());
    }
}
