//! Execute a parsed command as a session's account and build its response.

use serde_json::json;

use crate::crypto::Passphrase;
use crate::error::{Error, ErrorKind, Result};
use crate::vault::accounts::{NewUser, UserChanges};
use crate::vault::{Person, Session, Vault};

use super::parse::{Command, HELP, PassSource};
use super::response::Response;

/// Read a passphrase source (a file: one trailing newline dropped).
pub fn read_pass(src: &PassSource) -> Result<Passphrase> {
    match src {
        PassSource::Value(p) => Ok(p.clone()),
        PassSource::File(path) => {
            let meta = std::fs::metadata(path).map_err(|e| {
                Error::new(
                    ErrorKind::BadRequest,
                    format!("cannot read passphrase file {}: {e}", path.display()),
                )
            })?;
            if meta.len() > 4096 || !meta.is_file() {
                return Err(Error::new(
                    ErrorKind::BadRequest,
                    format!("{} is not a passphrase file", path.display()),
                ));
            }
            let mut b = std::fs::read(path).map_err(|e| {
                Error::new(
                    ErrorKind::BadRequest,
                    format!("cannot read passphrase file {}: {e}", path.display()),
                )
            })?;
            if b.last() == Some(&b'\n') {
                b.pop();
                if b.last() == Some(&b'\r') {
                    b.pop();
                }
            }
            Ok(Passphrase::new(b))
        }
    }
}

fn pass_opt(p: &Option<PassSource>) -> Result<Option<Passphrase>> {
    p.as_ref().map(read_pass).transpose()
}

fn account_json(a: &crate::store::rows::AccountRow) -> serde_json::Value {
    json!({
        "name": a.name,
        "given_name": a.given_name,
        "family_name": a.family_name,
        "email": a.email,
        "verified": a.verified,
        "may_change_password": a.may_change_password,
        "user_admin": a.user_admin,
        "sysadmin": a.sysadmin,
        "created": a.created,
    })
}

fn flags_text(a: &crate::store::rows::AccountRow) -> String {
    let mut f = vec![if a.verified { "verified" } else { "unverified" }];
    if a.sysadmin {
        f.push("sysadmin");
    }
    if a.user_admin {
        f.push("user-admin");
    }
    if a.may_change_password {
        f.push("may-change-password");
    }
    f.join(",")
}

/// Execute `cmd` as `s`; every outcome, success or failure, is a response.
pub fn execute(v: &Vault, s: &Session, cmd: &Command) -> Response {
    let r = match run(v, s, cmd) {
        Ok(r) => r,
        Err(e) => Response::error(&e),
    };
    // Membership changes are durable before the response is seen.
    if cmd.mutates()
        && let Err(e) = v.store().sync()
    {
        return Response::error(&Error::from(e));
    }
    r
}

fn run(v: &Vault, s: &Session, cmd: &Command) -> Result<Response> {
    match cmd {
        Command::Help => Ok(Response::ok("commands")
            .with(HELP.iter().map(|l| l.to_string()).collect(), json!(HELP))),
        Command::UserCreate {
            name,
            pass,
            may_change_password,
            user_admin,
            given_name,
            family_name,
            email,
        } => {
            v.user_create(
                s,
                NewUser {
                    name: name.clone(),
                    pass: pass_opt(pass)?,
                    may_change_password: *may_change_password,
                    user_admin: *user_admin,
                    person: Person {
                        given_name: given_name.clone(),
                        family_name: family_name.clone(),
                        email: email.clone(),
                    },
                },
            )?;
            Ok(Response::ok(format!("account {name} created")))
        }
        Command::UserDelete { name } => {
            v.user_delete(s, name)?;
            Ok(Response::ok(format!("account {name} deleted")))
        }
        Command::UserModify {
            name,
            pass,
            may_change_password,
            user_admin,
            given_name,
            family_name,
            email,
        } => {
            v.user_modify(
                s,
                name,
                UserChanges {
                    pass: pass_opt(pass)?,
                    may_change_password: *may_change_password,
                    user_admin: *user_admin,
                    given_name: given_name.clone(),
                    family_name: family_name.clone(),
                    email: email.clone(),
                },
            )?;
            Ok(Response::ok(format!("account {name} modified")))
        }
        Command::UserPasswd { pass } => {
            let p = pass_opt(pass)?.ok_or_else(|| {
                Error::new(
                    ErrorKind::Missing,
                    "a new passphrase is required (--new-passphrase-file)",
                )
            })?;
            v.user_passwd(s, &p)?;
            Ok(Response::ok("passphrase changed"))
        }
        Command::UserInfo { name } => {
            let name = name.clone().unwrap_or_else(|| s.name.clone());
            let info = v.user_info(s, &name)?;
            let a = &info.account;
            let mut lines = vec![
                format!("name: {}", a.name),
                format!("given-name: {}", a.given_name.as_deref().unwrap_or("")),
                format!("family-name: {}", a.family_name.as_deref().unwrap_or("")),
                format!("email: {}", a.email.as_deref().unwrap_or("")),
                format!("verified: {}", a.verified),
                format!("user-admin: {}", a.user_admin),
                format!("may-change-password: {}", a.may_change_password),
                format!("sysadmin: {}", a.sysadmin),
            ];
            for (c, l) in &info.circles {
                lines.push(format!("circle: {} {}", c, l));
            }
            let mut data = account_json(a);
            data["circles"] = json!(
                info.circles
                    .iter()
                    .map(|(c, l)| json!({"circle": c.0, "level": l.as_str()}))
                    .collect::<Vec<_>>()
            );
            Ok(Response::ok(format!("account {name}")).with(lines, data))
        }
        Command::UserList {
            query,
            verified_only,
            start,
            count,
        } => {
            let (rows, total) = v.user_list(s, query.as_deref(), *verified_only, *start, *count)?;
            let mut lines = vec![format!(
                "total: {total} start: {start} count: {}",
                rows.len()
            )];
            lines.extend(rows.iter().map(|a| format!("{} {}", a.name, flags_text(a))));
            let data = json!({"total": total, "start": start, "count": rows.len(), "accounts": rows.iter().map(account_json).collect::<Vec<_>>()});
            Ok(Response::ok(format!("{} of {total} accounts", rows.len())).with(lines, data))
        }
        Command::UserVerify { name } => {
            v.user_verify(s, name)?;
            Ok(Response::ok(format!("account {name} verified")))
        }
        Command::CircleCreate { name } => {
            v.circle_create(s, name)?;
            Ok(Response::ok(format!("circle {name} created")))
        }
        Command::CircleDelete { name } => {
            v.circle_delete(s, name)?;
            Ok(Response::ok(format!("circle {name} deleted")))
        }
        Command::CircleInfo { name } => {
            let i = v.circle_info(s, name)?;
            let mut lines = vec![format!("circle: {}", i.name), format!("epoch: {}", i.epoch)];
            lines.extend(i.trustees.iter().map(|(n, l)| format!("trustee: {n} {l}")));
            let data = json!({
                "circle": i.name.0,
                "epoch": i.epoch.0,
                "trustees": i.trustees.iter().map(|(n, l)| json!({"name": n, "level": l.as_str()})).collect::<Vec<_>>(),
            });
            Ok(Response::ok(format!("circle {name}")).with(lines, data))
        }
        Command::CircleList => {
            let list = v.circle_list(s)?;
            let lines = list
                .iter()
                .map(|(n, l)| format!("{} {}", n, l.map(|l| l.as_str()).unwrap_or("-")))
                .collect();
            let data = json!(
                list.iter()
                    .map(|(n, l)| json!({"circle": n.0, "level": l.map(|l| l.as_str())}))
                    .collect::<Vec<_>>()
            );
            Ok(Response::ok(format!("{} circles", list.len())).with(lines, data))
        }
        Command::CircleSetMembers { name, members } => {
            v.circle_set_members(s, name, members)?;
            Ok(Response::ok(format!(
                "circle {name} now has {} trustees",
                members.len()
            )))
        }
        Command::CircleRekey {
            name,
            reencrypt: true,
        } => {
            // A separate connection and session: the job runs its own
            // transactions while mounts keep using the circle.
            let v2 = std::sync::Arc::new(Vault::open(v.store().root())?);
            let s2 = std::sync::Arc::new(s.duplicate()?);
            let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
            let (e, rep) = v2.circle_reencrypt(s2, name, |done, total| {
                if tty {
                    let w = 40usize;
                    let fill = if total == 0 {
                        w
                    } else {
                        (done as usize * w) / total as usize
                    };
                    eprint!(
                        "\rre-encrypting [{}{}] {done}/{total} inodes",
                        "#".repeat(fill),
                        " ".repeat(w - fill)
                    );
                    if done == total {
                        eprintln!();
                    }
                }
            })?;
            Ok(Response::ok(format!(
                "circle {name} re-encrypted under key epoch {e}: {} inodes ({} blocks) re-encrypted, {} already done",
                rep.done, rep.blocks, rep.skipped
            ))
            .with(
                vec![format!("epoch: {e}"), format!("inodes: {}", rep.total), format!("blocks: {}", rep.blocks)],
                json!({"epoch": e.0, "inodes": rep.total, "reencrypted": rep.done, "skipped": rep.skipped, "blocks": rep.blocks}),
            ))
        }
        Command::CircleRekey {
            name,
            reencrypt: false,
        } => {
            let e = v.circle_rekey(s, name)?;
            Ok(Response::ok(format!("circle {name} is at key epoch {e}"))
                .with(vec![format!("epoch: {e}")], json!({"epoch": e.0})))
        }
        Command::TrusteeAdd {
            circle,
            users,
            level,
        } => {
            v.trustee_add(s, circle, users, *level)?;
            Ok(Response::ok(format!(
                "{} added to {circle} as {level}",
                users.join(", ")
            )))
        }
        Command::TrusteeRemove { circle, users } => {
            let e = v.trustee_remove(s, circle, users)?;
            Ok(Response::ok(format!(
                "{} removed from {circle}; key epoch {e}",
                users.join(", ")
            ))
            .with(vec![format!("epoch: {e}")], json!({"epoch": e.0})))
        }
        Command::TrusteeSet {
            circle,
            user,
            level,
        } => {
            v.trustee_set(s, circle, user, *level)?;
            Ok(Response::ok(format!("{user} is now {level} in {circle}")))
        }
    }
}
