//! The one authorization function: every permission decision goes through `authorize`.

use crate::error::{ErrorKind, Result, err};
use crate::ids::{AccountId, CircleId};
use crate::level::TrustLevel;

/// Who is asking (facts read from the store at the time of the request).
#[derive(Clone, Debug)]
pub struct Subject {
    /// Account id.
    pub account: AccountId,
    /// The system administrator.
    pub sysadmin: bool,
    /// May manage accounts.
    pub user_admin: bool,
    /// May change own passphrase.
    pub may_change_password: bool,
}

/// What is asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Create, delete or change other accounts (and reset their passphrases).
    ManageAccounts,
    /// Grant or revoke the user-admin flag.
    GrantUserAdmin,
    /// List all accounts.
    ListAccounts,
    /// Read an account's info.
    ViewAccount,
    /// Change one's own person fields.
    EditOwnProfile,
    /// Change one's own passphrase.
    ChangeOwnPassphrase,
    /// Create a circle.
    CreateCircle,
    /// List every circle of the store (not only one's own).
    ListAllCircles,
    /// Read a circle's info (trustees and levels).
    ViewCircle,
    /// Add, remove or re-level trustees.
    ManageTrustees,
    /// Leave a circle oneself.
    LeaveCircle,
    /// Delete a circle.
    DeleteCircle,
    /// Read files and list directories.
    ReadFiles,
    /// Create, change, rename, delete files.
    WriteFiles,
}

/// What it is asked of.
#[derive(Clone, Copy, Debug)]
pub enum Object {
    /// The store as a whole.
    Store,
    /// An account (and whether it is the system administrator).
    Account {
        /// Target account.
        id: AccountId,
        /// Target is the system administrator.
        sysadmin: bool,
    },
    /// A circle, with the subject's trust level in it (None = not a trustee).
    Circle {
        /// Target circle.
        id: CircleId,
        /// Subject's level.
        level: Option<TrustLevel>,
    },
}

fn deny<T>(why: &str) -> Result<T> {
    err(ErrorKind::Forbidden, why)
}

fn need_level(level: Option<TrustLevel>, needed: TrustLevel) -> Result<()> {
    match level {
        Some(l) if l.permits(needed) => Ok(()),
        Some(l) => deny(&format!("needs trust level {needed}, you have {l}")),
        None => err(ErrorKind::NotFound, "no such circle"),
    }
}

/// Decide whether `s` may do `op` on `obj`. Every check in circlefs goes through here.
pub fn authorize(s: &Subject, op: Op, obj: &Object) -> Result<()> {
    let account_admin = s.sysadmin || s.user_admin;
    match (op, obj) {
        (Op::ManageAccounts, Object::Account { id, sysadmin }) => {
            if *sysadmin && *id != s.account {
                return deny("the system administrator account can only be changed by itself");
            }
            if account_admin {
                Ok(())
            } else {
                deny("needs user-admin")
            }
        }
        (Op::ManageAccounts, Object::Store) => {
            if account_admin {
                Ok(())
            } else {
                deny("needs user-admin")
            }
        }
        (Op::GrantUserAdmin, Object::Account { .. }) => {
            if s.sysadmin {
                Ok(())
            } else {
                deny("only the system administrator grants or revokes user-admin")
            }
        }
        (Op::ListAccounts, _) | (Op::ListAllCircles, _) => {
            if account_admin {
                Ok(())
            } else {
                deny("needs user-admin")
            }
        }
        (Op::ViewAccount, Object::Account { id, .. }) => {
            if *id == s.account || account_admin {
                Ok(())
            } else {
                deny("you may only read your own account")
            }
        }
        (Op::EditOwnProfile, Object::Account { id, .. }) => {
            if *id == s.account {
                Ok(())
            } else {
                deny("not your account")
            }
        }
        (Op::ChangeOwnPassphrase, _) => {
            if s.may_change_password || account_admin {
                Ok(())
            } else {
                deny("this account may not change its passphrase")
            }
        }
        (Op::CreateCircle, Object::Store) => Ok(()),
        (Op::ViewCircle, Object::Circle { level, .. }) => {
            if level.is_some() || account_admin {
                Ok(())
            } else {
                err(ErrorKind::NotFound, "no such circle")
            }
        }
        (Op::ManageTrustees, Object::Circle { level, .. }) => {
            if level.is_none() && account_admin {
                return deny("not a trustee of this circle (circle admins manage trustees)");
            }
            need_level(*level, TrustLevel::Admin)
        }
        (Op::LeaveCircle, Object::Circle { level, .. }) => need_level(*level, TrustLevel::Read),
        (Op::DeleteCircle, Object::Circle { level, .. }) => {
            if s.sysadmin {
                return Ok(());
            }
            if level.is_none() && account_admin {
                return deny("not a trustee of this circle");
            }
            need_level(*level, TrustLevel::Admin)
        }
        (Op::ReadFiles, Object::Circle { level, .. }) => need_level(*level, TrustLevel::Read),
        (Op::WriteFiles, Object::Circle { level, .. }) => need_level(*level, TrustLevel::Write),
        _ => deny("operation not applicable to this object"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use TrustLevel::*;

    fn subj(sys: bool, ua: bool) -> Subject {
        Subject {
            account: AccountId(7),
            sysadmin: sys,
            user_admin: ua,
            may_change_password: false,
        }
    }

    /// The committed allow/deny matrix for file and membership operations
    /// over {READ, WRITE, ADMIN, non-member} (R7).
    #[test]
    fn level_matrix() {
        let levels = [None, Some(Read), Some(Write), Some(Admin)];
        let table: &[(Op, [bool; 4])] = &[
            (Op::ReadFiles, [false, true, true, true]),
            (Op::WriteFiles, [false, false, true, true]),
            (Op::ManageTrustees, [false, false, false, true]),
            (Op::DeleteCircle, [false, false, false, true]),
            (Op::ViewCircle, [false, true, true, true]),
            (Op::LeaveCircle, [false, true, true, true]),
        ];
        let s = subj(false, false);
        for (op, expect) in table {
            for (i, level) in levels.iter().enumerate() {
                let r = authorize(
                    &s,
                    *op,
                    &Object::Circle {
                        id: CircleId(1),
                        level: *level,
                    },
                );
                assert_eq!(r.is_ok(), expect[i], "{op:?} at {level:?}");
            }
        }
    }

    #[test]
    fn account_rules() {
        let plain = subj(false, false);
        let ua = subj(false, true);
        let sys = subj(true, true);
        let other = Object::Account {
            id: AccountId(8),
            sysadmin: false,
        };
        let me = Object::Account {
            id: AccountId(7),
            sysadmin: false,
        };
        let root = Object::Account {
            id: AccountId(1),
            sysadmin: true,
        };
        assert!(authorize(&plain, Op::ManageAccounts, &other).is_err());
        assert!(authorize(&ua, Op::ManageAccounts, &other).is_ok());
        assert!(authorize(&ua, Op::ManageAccounts, &root).is_err());
        assert!(authorize(&ua, Op::GrantUserAdmin, &other).is_err());
        assert!(authorize(&sys, Op::GrantUserAdmin, &other).is_ok());
        assert!(authorize(&plain, Op::ViewAccount, &me).is_ok());
        assert!(authorize(&plain, Op::ViewAccount, &other).is_err());
        assert!(authorize(&plain, Op::ListAccounts, &Object::Store).is_err());
        assert!(authorize(&ua, Op::ListAccounts, &Object::Store).is_ok());
        assert!(authorize(&plain, Op::ChangeOwnPassphrase, &me).is_err());
        assert!(authorize(&plain, Op::CreateCircle, &Object::Store).is_ok());
        // An account admin who is not a trustee cannot manage a circle's trustees.
        let c = Object::Circle {
            id: CircleId(1),
            level: None,
        };
        assert_eq!(
            authorize(&sys, Op::ManageTrustees, &c).unwrap_err().kind,
            ErrorKind::Forbidden
        );
        assert!(authorize(&sys, Op::DeleteCircle, &c).is_ok());
        assert_eq!(
            authorize(&plain, Op::ViewCircle, &c).unwrap_err().kind,
            ErrorKind::NotFound
        );
    }
}
