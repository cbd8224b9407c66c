//! Trust levels of trustees (`read` < `write` < `admin`).

use std::fmt;
use std::str::FromStr;

/// A trustee's level in a circle; a higher level includes every lower one.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug, Hash)]
pub enum TrustLevel {
    /// Read files and list directories.
    Read = 1,
    /// Also create, change, rename and delete files.
    Write = 2,
    /// Also manage trustees and delete the circle.
    Admin = 3,
}

impl TrustLevel {
    /// True when this level includes `needed`.
    pub fn permits(self, needed: TrustLevel) -> bool {
        self >= needed
    }

    /// Stored integer.
    pub fn to_i64(self) -> i64 {
        self as i64
    }

    /// From the stored integer; `None` for anything else (tampered row).
    pub fn from_i64(v: i64) -> Option<Self> {
        match v {
            1 => Some(Self::Read),
            2 => Some(Self::Write),
            3 => Some(Self::Admin),
            _ => None,
        }
    }

    /// Lower-case name as used in the command language.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Admin => "admin",
        }
    }
}

impl fmt::Display for TrustLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TrustLevel {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "read" => Ok(Self::Read),
            "write" => Ok(Self::Write),
            "admin" => Ok(Self::Admin),
            _ => Err(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::TrustLevel::*;

    #[test]
    fn permits_table() {
        let all = [Read, Write, Admin];
        for have in all {
            for need in all {
                let expect = (have as u8) >= (need as u8);
                assert_eq!(have.permits(need), expect, "{have} {need}");
            }
        }
        for l in all {
            assert_eq!(super::TrustLevel::from_i64(l.to_i64()), Some(l));
            assert_eq!(l.as_str().parse::<super::TrustLevel>(), Ok(l));
        }
        assert_eq!(super::TrustLevel::from_i64(0), None);
        assert!("root".parse::<super::TrustLevel>().is_err());
    }
}
