//! Status codes, the core error type and the one table from error kind to
//! status code and errno.

use std::fmt;

/// Result status of every command (HTTP-like, see docs/control-file.md).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Status {
    /// 200: success.
    Ok,
    /// 400: malformed request (bad syntax, bad value).
    BadRequest,
    /// 401: requester unknown or credential wrong.
    Unauthorized,
    /// 403: requester not permitted.
    Forbidden,
    /// 404: no such account, circle or file.
    NotFound,
    /// 406: request missing information.
    NotAcceptable,
    /// 409: already exists, or conflicts with the current state.
    Conflict,
    /// 500: internal failure (store unreadable, integrity, I/O).
    Internal,
}

impl Status {
    /// Numeric code.
    pub fn code(self) -> u16 {
        match self {
            Status::Ok => 200,
            Status::BadRequest => 400,
            Status::Unauthorized => 401,
            Status::Forbidden => 403,
            Status::NotFound => 404,
            Status::NotAcceptable => 406,
            Status::Conflict => 409,
            Status::Internal => 500,
        }
    }

    /// Reason phrase printed after the code.
    pub fn reason(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::BadRequest => "Bad Request",
            Status::Unauthorized => "Unauthorized",
            Status::Forbidden => "Forbidden",
            Status::NotFound => "Not Found",
            Status::NotAcceptable => "Not Acceptable",
            Status::Conflict => "Conflict",
            Status::Internal => "Internal Error",
        }
    }

    /// Process exit status for a command that ended with this status
    /// (stable, documented in docs/cli.md).
    pub fn exit_code(self) -> u8 {
        match self {
            Status::Ok => 0,
            Status::BadRequest => 40,
            Status::Unauthorized => 41,
            Status::Forbidden => 43,
            Status::NotFound => 44,
            Status::NotAcceptable => 46,
            Status::Conflict => 49,
            Status::Internal => 50,
        }
    }
}

/// What went wrong, independent of the layer that noticed it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ErrorKind {
    /// Bad syntax or value.
    BadRequest,
    /// Unknown requester or wrong passphrase.
    Unauthorized,
    /// Not permitted for this requester (or below the needed trust level).
    Forbidden,
    /// A mutating operation that is never allowed in this place (EPERM).
    NotPermitted,
    /// No such account, circle, file.
    NotFound,
    /// A required argument is missing.
    Missing,
    /// Already exists.
    Conflict,
    /// Conflicts with current state (e.g. last admin).
    StateConflict,
    /// Authentication of stored data failed (tampering or corruption).
    Integrity,
    /// Stored KDF parameters outside the accepted floor/cap.
    KdfParamsOutOfRange,
    /// Store cannot be read or written (SQLite, I/O).
    Internal,
    /// Not a directory.
    NotDir,
    /// Is a directory.
    IsDir,
    /// Directory not empty.
    NotEmpty,
    /// Name longer than 255 bytes.
    NameTooLong,
    /// Invalid argument for a filesystem operation.
    Invalid,
    /// Operation not supported.
    NotSupported,
    /// No such extended attribute.
    NoAttr,
    /// Value does not fit (e.g. xattr buffer, file too large).
    TooBig,
    /// Too many symbolic links / loop.
    Loop,
    /// Rename or hard link between two circles (each has its own keys):
    /// EXDEV, so `mv` and `cp -l` fall back to copying.
    CrossCircle,
}

impl ErrorKind {
    /// The one table: kind -> (status code, errno).
    pub fn table(self) -> (Status, i32) {
        use ErrorKind::*;
        match self {
            BadRequest => (Status::BadRequest, libc::EINVAL),
            Unauthorized => (Status::Unauthorized, libc::EACCES),
            Forbidden => (Status::Forbidden, libc::EACCES),
            NotPermitted => (Status::Forbidden, libc::EPERM),
            NotFound => (Status::NotFound, libc::ENOENT),
            Missing => (Status::NotAcceptable, libc::EINVAL),
            Conflict => (Status::Conflict, libc::EEXIST),
            StateConflict => (Status::Conflict, libc::EBUSY),
            Integrity => (Status::Internal, libc::EIO),
            KdfParamsOutOfRange => (Status::Internal, libc::EIO),
            Internal => (Status::Internal, libc::EIO),
            NotDir => (Status::BadRequest, libc::ENOTDIR),
            IsDir => (Status::BadRequest, libc::EISDIR),
            NotEmpty => (Status::Conflict, libc::ENOTEMPTY),
            NameTooLong => (Status::BadRequest, libc::ENAMETOOLONG),
            Invalid => (Status::BadRequest, libc::EINVAL),
            NotSupported => (Status::BadRequest, libc::EOPNOTSUPP),
            NoAttr => (Status::NotFound, libc::ENODATA),
            TooBig => (Status::BadRequest, libc::E2BIG),
            CrossCircle => (Status::BadRequest, libc::EXDEV),
            Loop => (Status::BadRequest, libc::ELOOP),
        }
    }
}

/// The core (vault/control) error: a kind plus a human detail. The detail
/// never contains secrets or plaintext file names.
#[derive(Clone, PartialEq, Eq)]
pub struct Error {
    /// What went wrong.
    pub kind: ErrorKind,
    /// Human-readable detail (printed after the status reason).
    pub detail: String,
}

impl Error {
    /// New error of `kind` with `detail`.
    pub fn new(kind: ErrorKind, detail: impl Into<String>) -> Self {
        Self {
            kind,
            detail: detail.into(),
        }
    }

    /// Status code of this error.
    pub fn status(&self) -> Status {
        self.kind.table().0
    }

    /// errno of this error.
    pub fn errno(&self) -> i32 {
        self.kind.table().1
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.kind, self.detail)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.status();
        if self.detail.is_empty() {
            write!(f, "{} {}", s.code(), s.reason())
        } else {
            write!(f, "{} {}: {}", s.code(), s.reason(), self.detail)
        }
    }
}

impl std::error::Error for Error {}

/// Shorthand result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Build an error quickly: `err(ErrorKind::NotFound, "no such account bob")`.
pub fn err<T>(kind: ErrorKind, detail: impl Into<String>) -> Result<T> {
    Err(Error::new(kind, detail))
}

impl From<crate::crypto::CryptoError> for Error {
    fn from(e: crate::crypto::CryptoError) -> Self {
        use crate::crypto::CryptoError as C;
        match e {
            C::Integrity(what) => Error::new(
                ErrorKind::Integrity,
                format!("integrity check failed: {what}"),
            ),
            C::KdfParamsOutOfRange(what) => Error::new(ErrorKind::KdfParamsOutOfRange, what),
            C::Rng => Error::new(ErrorKind::Internal, "random number generator failed"),
            C::Internal(what) => Error::new(ErrorKind::Internal, what),
        }
    }
}

impl From<crate::store::StoreError> for Error {
    fn from(e: crate::store::StoreError) -> Self {
        Error::new(ErrorKind::Internal, format!("store: {e}"))
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::new(ErrorKind::Internal, format!("I/O: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_has_code_and_reason() {
        let e = Error::new(ErrorKind::Conflict, "account bob already exists");
        assert_eq!(e.to_string(), "409 Conflict: account bob already exists");
        assert_eq!(e.errno(), libc::EEXIST);
        assert_eq!(Status::Unauthorized.exit_code(), 41);
    }
}
