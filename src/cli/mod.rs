//! Command-line interface: `init`, `admin`, `mount`, `umount`, `control`.

pub mod client;
pub mod detach;
pub mod pass;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::control::{self, Command, PassSource, Response};
use crate::crypto::Passphrase;
use crate::error::{Error, Result, Status};
use crate::vault::Vault;

/// circlefs: encrypted shared workspaces.
#[derive(Parser, Debug)]
#[command(
    name = "circlefs",
    version,
    about = "Encrypted FUSE filesystem for shared workspaces"
)]
pub struct Cli {
    #[command(subcommand)]
    cmd: Sub,
}

#[derive(Subcommand, Debug)]
enum Sub {
    /// Create a store with its system administrator account.
    Init {
        /// Store directory (created; must be empty if it exists).
        store: PathBuf,
        /// Name of the system administrator account.
        #[arg(long, default_value = "admin")]
        admin: String,
        /// KDF profile: default (Argon2id 64 MiB, t=3, p=4) or fast (19 MiB, t=2, p=1; tests and demos).
        #[arg(long, default_value = "default")]
        kdf: String,
        /// Read the new passphrase from this file instead of prompting twice.
        #[arg(long)]
        new_passphrase_file: Option<PathBuf>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run one management command against a store as an authenticated account.
    Admin {
        /// Store directory.
        store: PathBuf,
        /// Requester account.
        #[arg(long)]
        user: String,
        #[command(flatten)]
        pass: PassArgs,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
        /// The command, e.g. `user create bob --new-passphrase-file F`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        command: Vec<String>,
    },
    /// Mount a store for one account; its circles appear as directories.
    Mount {
        /// Store directory.
        store: PathBuf,
        /// Mount point (an existing directory).
        mountpoint: PathBuf,
        /// Account to unlock.
        #[arg(long)]
        user: String,
        #[command(flatten)]
        pass: PassArgs,
        /// Stay in the foreground (default: detach once mounted).
        #[arg(long)]
        foreground: bool,
        /// Mount options: ro, rw, allow_other, threads=N, readahead=KIB, nobatch, nowritebehind, opstats=FILE.
        #[arg(short = 'o', value_delimiter = ',')]
        options: Vec<String>,
        /// Append the daemon's log (RUST_LOG) to this file.
        #[arg(long)]
        log_file: Option<PathBuf>,
    },
    /// Unmount a circlefs mount point.
    Umount {
        /// Mount point.
        mountpoint: PathBuf,
    },
    /// Send a command through a running mount's control file (no passphrase).
    Control {
        /// Mount point.
        mountpoint: PathBuf,
        /// Print results as JSON.
        #[arg(long)]
        json: bool,
        /// The command, or `-` to read commands from stdin, one a line.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        command: Vec<String>,
    },
}

/// Where the requester's passphrase comes from (never argv or env).
#[derive(Args, Debug, Clone)]
pub struct PassArgs {
    /// Read the passphrase from this file.
    #[arg(long, conflicts_with = "passphrase_fd")]
    pub passphrase_file: Option<PathBuf>,
    /// Read the passphrase from this inherited file descriptor.
    #[arg(long)]
    pub passphrase_fd: Option<i32>,
}

impl PassArgs {
    /// Read the passphrase as requested, or prompt.
    pub fn read(&self, user: &str) -> Result<Passphrase> {
        match (&self.passphrase_file, self.passphrase_fd) {
            (Some(f), _) => pass::from_file(f),
            (None, Some(fd)) => pass::from_fd(fd),
            (None, None) => pass::prompt(&format!("Passphrase for {user}")),
        }
    }
}

fn emit(r: &Response, json: bool) -> ExitCode {
    let out = if json { r.json() } else { r.text() };
    let mut so = std::io::stdout().lock();
    // A closed stdout (e.g. `| head`) is not an error of the command.
    let _ = so.write_all(out.as_bytes());
    let _ = so.flush();
    ExitCode::from(r.status.exit_code())
}

fn emit_err(e: &Error, json: bool) -> ExitCode {
    emit(&Response::error(e), json)
}

/// Commands that need a new passphrase get one from a double prompt when
/// no file was given.
fn fill_new_pass(cmd: &mut Command) -> Result<()> {
    let slot = match cmd {
        Command::UserCreate { pass, .. } | Command::UserPasswd { pass } => pass,
        _ => return Ok(()),
    };
    if slot.is_none() && std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        *slot = Some(PassSource::Value(pass::prompt_new("New passphrase")?));
    }
    Ok(())
}

/// Parse argv and run; the process exit code follows docs/cli.md.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    run(cli)
}

fn run(cli: Cli) -> ExitCode {
    match cli.cmd {
        Sub::Init {
            store,
            admin,
            kdf,
            new_passphrase_file,
            json,
        } => {
            let r = (|| {
                let pass = match &new_passphrase_file {
                    Some(f) => pass::from_file(f)?,
                    None => pass::prompt_new(&format!("New passphrase for {admin}"))?,
                };
                Vault::init(&store, &admin, &pass, &kdf)?;
                Ok::<_, Error>(Response::ok(format!(
                    "store created at {} with system administrator {admin}",
                    store.display()
                )))
            })();
            match r {
                Ok(r) => emit(&r, json),
                Err(e) => emit_err(&e, json),
            }
        }
        Sub::Admin {
            store,
            user,
            pass,
            json,
            command,
        } => {
            let r = (|| {
                let mut cmd = control::parse_tokens(&command)?;
                let vault = Vault::open(&store)?;
                let p = pass.read(&user)?;
                let session = vault.unlock(&user, &p)?;
                fill_new_pass(&mut cmd)?;
                Ok::<_, Error>(control::execute(&vault, &session, &cmd))
            })();
            match r {
                Ok(r) => emit(&r, json),
                Err(e) => emit_err(&e, json),
            }
        }
        Sub::Mount {
            store,
            mountpoint,
            user,
            pass,
            foreground,
            options,
            log_file,
        } => run_mount(store, mountpoint, user, pass, foreground, options, log_file),
        Sub::Umount { mountpoint } => run_umount(mountpoint),
        Sub::Control {
            mountpoint,
            json,
            command,
        } => crate::cli::client::run(&mountpoint, json, &command),
    }
}

fn run_mount(
    store: PathBuf,
    mountpoint: PathBuf,
    user: String,
    pass: PassArgs,
    foreground: bool,
    options: Vec<String>,
    log_file: Option<PathBuf>,
) -> ExitCode {
    let r = (|| {
        let opts = crate::daemon::MountOptions::parse(&options)?;
        crate::daemon::sanity_checks(&store, &mountpoint)?;
        if !foreground {
            return crate::cli::detach::spawn_daemon(
                &store,
                &mountpoint,
                &user,
                &pass,
                &options,
                log_file.as_deref(),
            );
        }
        init_logging(log_file.as_deref());
        let vault = std::sync::Arc::new(Vault::open(&store)?);
        let p = pass.read(&user)?;
        let session = vault.unlock(&user, &p)?;
        drop(p);
        let mp = mountpoint.clone();
        crate::daemon::serve(
            vault,
            session,
            store.clone(),
            &mountpoint,
            &opts,
            move || {
                let r = Response::ok(format!("mounted at {}", mp.display()));
                let mut so = std::io::stdout().lock();
                let _ = so.write_all(r.text().as_bytes());
                let _ = so.flush();
            },
        )?;
        Ok::<_, Error>(None)
    })();
    match r {
        Ok(Some(resp)) => emit(&resp, false),
        Ok(None) => ExitCode::SUCCESS,
        Err(e) => emit_err(&e, false),
    }
}

fn init_logging(file: Option<&std::path::Path>) {
    let mut b = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"));
    // fuser logs request arguments (plaintext file names) at debug/trace:
    // never let them reach a log, whatever RUST_LOG says.
    b.filter_module("fuser", log::LevelFilter::Warn);
    if let Some(f) = file
        && let Ok(fh) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(f)
    {
        b.target(env_logger::Target::Pipe(Box::new(fh)));
    }
    let _ = b.try_init();
}

fn run_umount(mountpoint: PathBuf) -> ExitCode {
    let r = {
        let out = std::process::Command::new("fusermount3")
            .arg("-u")
            .arg("--")
            .arg(&mountpoint)
            .output();
        match out {
            Ok(o) if o.status.success() => {
                Ok(Response::ok(format!("unmounted {}", mountpoint.display())))
            }
            Ok(o) => {
                // Fall back to umount(2) (root), e.g. when fusermount3 refuses.
                match nix::mount::umount(&mountpoint) {
                    Ok(()) => Ok(Response::ok(format!("unmounted {}", mountpoint.display()))),
                    Err(e) => Err(Error::new(
                        crate::error::ErrorKind::BadRequest,
                        format!(
                            "cannot unmount {}: {} ({e})",
                            mountpoint.display(),
                            String::from_utf8_lossy(&o.stderr).trim()
                        ),
                    )),
                }
            }
            Err(_) => nix::mount::umount(&mountpoint)
                .map(|()| Response::ok(format!("unmounted {}", mountpoint.display())))
                .map_err(|e| {
                    Error::new(
                        crate::error::ErrorKind::BadRequest,
                        format!("cannot unmount {}: {e}", mountpoint.display()),
                    )
                }),
        }
    };
    match r {
        Ok(r) => emit(&r, false),
        Err(e) => emit_err(&e, false),
    }
}

/// Exit code for a status (re-exported for docs and tests).
pub fn exit_code(s: Status) -> u8 {
    s.exit_code()
}
