//! Tokenizer and parser of command lines (untrusted input: bounded, never panics).

use std::path::PathBuf;

use crate::crypto::Passphrase;
use crate::error::{Error, ErrorKind, Result, err};
use crate::level::TrustLevel;

/// Longest accepted command line in bytes.
pub const MAX_LINE: usize = 4096;
/// Most tokens in one command.
pub const MAX_TOKENS: usize = 256;

/// Where a new passphrase comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PassSource {
    /// A file holding it (one trailing newline is dropped).
    File(PathBuf),
    /// Already read (prompt, by the CLI).
    Value(Passphrase),
}

/// One parsed command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `user create`.
    UserCreate {
        /// Account name.
        name: String,
        /// Passphrase.
        pass: Option<PassSource>,
        /// Flag.
        may_change_password: bool,
        /// Flag.
        user_admin: bool,
        /// Person field.
        given_name: Option<String>,
        /// Person field.
        family_name: Option<String>,
        /// Person field.
        email: Option<String>,
    },
    /// `user delete`.
    UserDelete {
        /// Account name.
        name: String,
    },
    /// `user modify`.
    UserModify {
        /// Account name.
        name: String,
        /// New passphrase.
        pass: Option<PassSource>,
        /// Flag.
        may_change_password: Option<bool>,
        /// Flag.
        user_admin: Option<bool>,
        /// Person field.
        given_name: Option<String>,
        /// Person field.
        family_name: Option<String>,
        /// Person field.
        email: Option<String>,
    },
    /// `user passwd`.
    UserPasswd {
        /// New passphrase.
        pass: Option<PassSource>,
    },
    /// `user info [NAME]`.
    UserInfo {
        /// Account (default: the requester).
        name: Option<String>,
    },
    /// `user list`.
    UserList {
        /// Substring filter.
        query: Option<String>,
        /// Only verified accounts.
        verified_only: bool,
        /// First row.
        start: i64,
        /// Rows.
        count: i64,
    },
    /// `user verify`.
    UserVerify {
        /// Account name.
        name: String,
    },
    /// `circle create`.
    CircleCreate {
        /// Circle name.
        name: String,
    },
    /// `circle delete`.
    CircleDelete {
        /// Circle name.
        name: String,
    },
    /// `circle info`.
    CircleInfo {
        /// Circle name.
        name: String,
    },
    /// `circle list`.
    CircleList,
    /// `circle set-members NAME USER[:LEVEL]...`.
    CircleSetMembers {
        /// Circle name.
        name: String,
        /// Members with levels (default write).
        members: Vec<(String, TrustLevel)>,
    },
    /// `circle rekey NAME`: start a new key epoch.
    CircleRekey {
        /// Circle name.
        name: String,
        /// Also re-encrypt every existing file under the new epoch.
        reencrypt: bool,
    },
    /// `trustee add`.
    TrusteeAdd {
        /// Circle name.
        circle: String,
        /// Accounts.
        users: Vec<String>,
        /// Level (default write).
        level: TrustLevel,
    },
    /// `trustee remove`.
    TrusteeRemove {
        /// Circle name.
        circle: String,
        /// Accounts.
        users: Vec<String>,
    },
    /// `trustee set`.
    TrusteeSet {
        /// Circle name.
        circle: String,
        /// Account.
        user: String,
        /// New level.
        level: TrustLevel,
    },
    /// `help`.
    Help,
}

impl Command {
    /// True when the command changes state (used to refresh mounts).
    pub fn mutates(&self) -> bool {
        !matches!(
            self,
            Command::UserInfo { .. }
                | Command::UserList { .. }
                | Command::CircleInfo { .. }
                | Command::CircleList
                | Command::Help
        )
    }
}

fn bad<T>(msg: impl Into<String>) -> Result<T> {
    err(ErrorKind::BadRequest, msg)
}

fn missing<T>(msg: impl Into<String>) -> Result<T> {
    err(ErrorKind::Missing, msg)
}

/// Split a line into tokens: whitespace separates; `"..."` and `'...'`
/// quote; inside double quotes `\"` and `\\` escape.
pub fn tokenize(line: &str) -> Result<Vec<String>> {
    if line.len() > MAX_LINE {
        return bad(format!("command longer than {MAX_LINE} bytes"));
    }
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_tok = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_tok {
                    out.push(std::mem::take(&mut cur));
                    in_tok = false;
                }
            }
            '"' => {
                in_tok = true;
                loop {
                    match chars.next() {
                        None => return bad("unterminated double quote"),
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(e @ ('"' | '\\')) => cur.push(e),
                            Some(o) => {
                                cur.push('\\');
                                cur.push(o);
                            }
                            None => return bad("unterminated double quote"),
                        },
                        Some(o) => cur.push(o),
                    }
                }
            }
            '\'' => {
                in_tok = true;
                loop {
                    match chars.next() {
                        None => return bad("unterminated single quote"),
                        Some('\'') => break,
                        Some(o) => cur.push(o),
                    }
                }
            }
            c if c.is_control() => return bad("control character in command"),
            c => {
                in_tok = true;
                cur.push(c);
            }
        }
        if out.len() > MAX_TOKENS {
            return bad("too many words in command");
        }
    }
    if in_tok {
        out.push(cur);
    }
    Ok(out)
}

/// Parse one command line.
pub fn parse_line(line: &str) -> Result<Command> {
    let toks = tokenize(line)?;
    parse_tokens(&toks)
}

/// Options and positionals of one command after the two command words.
struct Args {
    pos: Vec<String>,
    opts: Vec<(String, Option<String>)>,
}

/// Option spec: name and whether it takes a value (`Some(true)`), is a flag
/// (`Some(false)`), or takes an optional boolean (`None`).
type Spec<'a> = &'a [(&'a str, Option<bool>)];

fn split(words: &[String], spec: Spec<'_>) -> Result<Args> {
    let mut pos = Vec::new();
    let mut opts = Vec::new();
    let mut i = 0;
    let mut only_pos = false;
    while i < words.len() {
        let w = &words[i];
        i += 1;
        if only_pos || !w.starts_with("--") {
            pos.push(w.clone());
            continue;
        }
        if w == "--" {
            only_pos = true;
            continue;
        }
        let (name, inline) = match w.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (w.clone(), None),
        };
        let Some((_, kind)) = spec.iter().find(|(n, _)| *n == &name[2..]) else {
            return bad(format!("unknown option {name}"));
        };
        if opts.iter().any(|(n, _)| *n == name[2..]) {
            return bad(format!("option {name} given twice"));
        }
        let value = match kind {
            Some(false) => {
                if inline.is_some() {
                    return bad(format!("option {name} takes no value"));
                }
                None
            }
            Some(true) | None => match inline {
                Some(v) => Some(v),
                None => {
                    if i < words.len() && !words[i].starts_with("--") {
                        i += 1;
                        Some(words[i - 1].clone())
                    } else {
                        return missing(format!("option {name} needs a value"));
                    }
                }
            },
        };
        opts.push((name[2..].to_string(), value));
    }
    Ok(Args { pos, opts })
}

impl Args {
    fn opt(&self, name: &str) -> Option<String> {
        self.opts
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.clone())
    }
    fn flag(&self, name: &str) -> bool {
        self.opts.iter().any(|(n, _)| n == name)
    }
    fn bool_opt(&self, name: &str) -> Result<Option<bool>> {
        match self.opt(name).as_deref() {
            None => Ok(None),
            Some("true" | "yes" | "1") => Ok(Some(true)),
            Some("false" | "no" | "0") => Ok(Some(false)),
            Some(v) => bad(format!("--{name} takes true or false, not {v}")),
        }
    }
    fn int_opt(&self, name: &str, default: i64) -> Result<i64> {
        match self.opt(name) {
            None => Ok(default),
            Some(v) => match v.parse::<i64>() {
                Ok(n) if n >= 0 => Ok(n),
                _ => bad(format!("--{name} takes a non-negative integer, not {v}")),
            },
        }
    }
    fn pass(&self) -> Option<PassSource> {
        self.opt("new-passphrase-file")
            .map(|p| PassSource::File(PathBuf::from(p)))
    }
    fn one(&self, what: &str) -> Result<String> {
        match self.pos.len() {
            0 => missing(format!("{what} is missing")),
            1 => Ok(self.pos[0].clone()),
            _ => bad(format!("unexpected argument {}", self.pos[1])),
        }
    }
    fn none(&self) -> Result<()> {
        match self.pos.first() {
            Some(p) => bad(format!("unexpected argument {p}")),
            None => Ok(()),
        }
    }
}

fn level(v: &str) -> Result<TrustLevel> {
    v.parse::<TrustLevel>().map_err(|_| {
        Error::new(
            ErrorKind::BadRequest,
            format!("unknown level {v} (read|write|admin)"),
        )
    })
}

const PERSON: [(&str, Option<bool>); 3] = [
    ("given-name", Some(true)),
    ("family-name", Some(true)),
    ("email", Some(true)),
];

/// Parse already-split words (argv of `admin`/`control`, or a tokenized line).
pub fn parse_tokens(words: &[String]) -> Result<Command> {
    if words.len() > MAX_TOKENS {
        return bad("too many words in command");
    }
    let total: usize = words.iter().map(|w| w.len() + 1).sum();
    if total > MAX_LINE {
        return bad(format!("command longer than {MAX_LINE} bytes"));
    }
    let Some(noun) = words.first() else {
        return missing("empty command");
    };
    if noun == "help" {
        return Ok(Command::Help);
    }
    if !matches!(noun.as_str(), "user" | "circle" | "trustee") {
        return bad(format!("unknown command {noun} (see help)"));
    }
    let Some(verb) = words.get(1) else {
        return missing(format!("{noun}: which operation? (see help)"));
    };
    let rest = &words[2..];
    let spec_user_create: Vec<(&str, Option<bool>)> = [
        ("new-passphrase-file", Some(true)),
        ("may-change-password", Some(false)),
        ("user-admin", Some(false)),
    ]
    .into_iter()
    .chain(PERSON)
    .collect();
    let spec_user_modify: Vec<(&str, Option<bool>)> = [
        ("new-passphrase-file", Some(true)),
        ("may-change-password", None),
        ("user-admin", None),
    ]
    .into_iter()
    .chain(PERSON)
    .collect();
    match (noun.as_str(), verb.as_str()) {
        ("user", "create") => {
            let a = split(rest, &spec_user_create)?;
            Ok(Command::UserCreate {
                name: a.one("account name")?,
                pass: a.pass(),
                may_change_password: a.flag("may-change-password"),
                user_admin: a.flag("user-admin"),
                given_name: a.opt("given-name"),
                family_name: a.opt("family-name"),
                email: a.opt("email"),
            })
        }
        ("user", "delete") => Ok(Command::UserDelete {
            name: split(rest, &[])?.one("account name")?,
        }),
        ("user", "modify") => {
            let a = split(rest, &spec_user_modify)?;
            Ok(Command::UserModify {
                name: a.one("account name")?,
                pass: a.pass(),
                may_change_password: a.bool_opt("may-change-password")?,
                user_admin: a.bool_opt("user-admin")?,
                given_name: a.opt("given-name"),
                family_name: a.opt("family-name"),
                email: a.opt("email"),
            })
        }
        ("user", "passwd") => {
            let a = split(rest, &[("new-passphrase-file", Some(true))])?;
            a.none()?;
            Ok(Command::UserPasswd { pass: a.pass() })
        }
        ("user", "info") => {
            let a = split(rest, &[])?;
            let name = match a.pos.len() {
                0 => None,
                _ => Some(a.one("account name")?),
            };
            Ok(Command::UserInfo { name })
        }
        ("user", "list") => {
            let a = split(
                rest,
                &[
                    ("query", Some(true)),
                    ("status", Some(true)),
                    ("start", Some(true)),
                    ("count", Some(true)),
                ],
            )?;
            a.none()?;
            let verified_only = match a.opt("status").as_deref() {
                None | Some("any") => false,
                Some("verified") => true,
                Some(v) => return bad(format!("--status takes verified or any, not {v}")),
            };
            Ok(Command::UserList {
                query: a.opt("query"),
                verified_only,
                start: a.int_opt("start", 0)?,
                count: a.int_opt("count", 100)?.min(10_000),
            })
        }
        ("user", "verify") => Ok(Command::UserVerify {
            name: split(rest, &[])?.one("account name")?,
        }),
        ("circle", "create") => Ok(Command::CircleCreate {
            name: split(rest, &[])?.one("circle name")?,
        }),
        ("circle", "delete") => Ok(Command::CircleDelete {
            name: split(rest, &[])?.one("circle name")?,
        }),
        ("circle", "info") => Ok(Command::CircleInfo {
            name: split(rest, &[])?.one("circle name")?,
        }),
        ("circle", "rekey") => {
            let a = split(rest, &[("reencrypt", Some(false))])?;
            Ok(Command::CircleRekey {
                name: a.one("circle name")?,
                reencrypt: a.flag("reencrypt"),
            })
        }
        ("circle", "list") => {
            split(rest, &[])?.none()?;
            Ok(Command::CircleList)
        }
        ("circle", "set-members") => {
            let a = split(rest, &[])?;
            let Some((name, members)) = a.pos.split_first() else {
                return missing("circle name is missing");
            };
            if members.is_empty() {
                return missing("no members named");
            }
            let members = members
                .iter()
                .map(|m| match m.split_once(':') {
                    Some((u, l)) => Ok((u.to_string(), level(l)?)),
                    None => Ok((m.clone(), TrustLevel::Write)),
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(Command::CircleSetMembers {
                name: name.clone(),
                members,
            })
        }
        ("trustee", "add") => {
            let a = split(rest, &[("level", Some(true))])?;
            let Some((circle, users)) = a.pos.split_first() else {
                return missing("circle name is missing");
            };
            if users.is_empty() {
                return missing("no account named");
            }
            let lvl = match a.opt("level") {
                Some(l) => level(&l)?,
                None => TrustLevel::Write,
            };
            Ok(Command::TrusteeAdd {
                circle: circle.clone(),
                users: users.to_vec(),
                level: lvl,
            })
        }
        ("trustee", "remove") => {
            let a = split(rest, &[])?;
            let Some((circle, users)) = a.pos.split_first() else {
                return missing("circle name is missing");
            };
            if users.is_empty() {
                return missing("no account named");
            }
            Ok(Command::TrusteeRemove {
                circle: circle.clone(),
                users: users.to_vec(),
            })
        }
        ("trustee", "set") => {
            let a = split(rest, &[("level", Some(true))])?;
            let lvl = level(
                &a.opt("level")
                    .ok_or_else(|| Error::new(ErrorKind::Missing, "--level is missing"))?,
            )?;
            match a.pos.as_slice() {
                [c, u] => Ok(Command::TrusteeSet {
                    circle: c.clone(),
                    user: u.clone(),
                    level: lvl,
                }),
                [] | [_] => missing("usage: trustee set CIRCLE USER --level LEVEL"),
                _ => bad("usage: trustee set CIRCLE USER --level LEVEL"),
            }
        }
        ("user" | "circle" | "trustee", v) => {
            bad(format!("unknown operation {noun} {v} (see help)"))
        }
        (n, _) => bad(format!("unknown command {n} (see help)")),
    }
}

/// The `help` text: one line per command.
pub const HELP: &[&str] = &[
    "user create NAME [--new-passphrase-file F] [--may-change-password] [--user-admin] [--given-name G] [--family-name F] [--email E]",
    "user delete NAME",
    "user modify NAME [--new-passphrase-file F] [--may-change-password true|false] [--user-admin true|false] [--given-name G] [--family-name F] [--email E]",
    "user passwd [--new-passphrase-file F]",
    "user info [NAME]",
    "user list [--query Q] [--status verified|any] [--start N] [--count N]",
    "user verify NAME",
    "circle create NAME",
    "circle delete NAME",
    "circle info NAME",
    "circle list",
    "circle set-members NAME USER[:LEVEL]...",
    "circle rekey NAME [--reencrypt]",
    "trustee add CIRCLE USER... [--level read|write|admin]",
    "trustee remove CIRCLE USER...",
    "trustee set CIRCLE USER --level read|write|admin",
    "help",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Command> {
        parse_line(s)
    }

    #[test]
    fn parses_commands() {
        assert_eq!(
            p("trustee add docs bob carol --level read").unwrap(),
            Command::TrusteeAdd {
                circle: "docs".into(),
                users: vec!["bob".into(), "carol".into()],
                level: TrustLevel::Read
            }
        );
        assert_eq!(
            p("circle create \"Team Docs\"").unwrap(),
            Command::CircleCreate {
                name: "Team Docs".into()
            }
        );
        assert!(matches!(
            p("user create bob --user-admin --email=b@x").unwrap(),
            Command::UserCreate {
                user_admin: true,
                ..
            }
        ));
        assert!(matches!(
            p("user modify bob --may-change-password false").unwrap(),
            Command::UserModify {
                may_change_password: Some(false),
                ..
            }
        ));
        assert!(matches!(
            p("user list --start 2 --count 3").unwrap(),
            Command::UserList {
                start: 2,
                count: 3,
                ..
            }
        ));
        assert_eq!(p("circle list").unwrap(), Command::CircleList);
        assert!(matches!(
            p("circle set-members d a:admin b").unwrap(),
            Command::CircleSetMembers { .. }
        ));
    }

    #[test]
    fn errors_have_the_right_kind() {
        let k = |s: &str| p(s).unwrap_err().kind;
        assert_eq!(k(""), ErrorKind::Missing);
        assert_eq!(k("user"), ErrorKind::Missing);
        assert_eq!(k("user create"), ErrorKind::Missing);
        assert_eq!(k("trustee add docs"), ErrorKind::Missing);
        assert_eq!(k("trustee set docs bob"), ErrorKind::Missing);
        assert_eq!(k("frobnicate x"), ErrorKind::BadRequest);
        assert_eq!(k("frobnicate"), ErrorKind::BadRequest);
        assert_eq!(k("user fly"), ErrorKind::BadRequest);
        assert_eq!(k("user create bob --bogus"), ErrorKind::BadRequest);
        assert_eq!(
            k("trustee add docs bob --level root"),
            ErrorKind::BadRequest
        );
        assert_eq!(k("user create \"bob"), ErrorKind::BadRequest);
        assert_eq!(k(&"x".repeat(5000)), ErrorKind::BadRequest);
        assert_eq!(k("user list --count -1"), ErrorKind::BadRequest);
        assert_eq!(k("circle create a b"), ErrorKind::BadRequest);
    }

    proptest::proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,200}") {
            let _ = parse_line(&s);
        }

        #[test]
        fn never_panics_words(w in proptest::collection::vec("[a-z\\-]{0,12}", 0..8)) {
            let _ = parse_tokens(&w);
        }
    }
}
