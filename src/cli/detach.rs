//! Detaching `circlefs mount`: re-run ourselves in the foreground as a child
//! in a new session, hand it the passphrase on stdin, and relay its first
//! output line (the mount result) before exiting.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::control::Response;
use crate::error::{Error, ErrorKind, Result};

use super::PassArgs;

/// Start the daemon; returns the response it reported (mounted, or why not).
pub fn spawn_daemon(
    store: &Path,
    mountpoint: &Path,
    user: &str,
    pass: &PassArgs,
    options: &[String],
    log_file: Option<&Path>,
) -> Result<Option<Response>> {
    let p = pass.read(user)?;
    let exe = std::env::current_exe()?;
    let mut cmd = Command::new(exe);
    cmd.arg("mount")
        .arg("--foreground")
        .arg("--user")
        .arg(user)
        .arg("--passphrase-fd")
        .arg("0");
    if !options.is_empty() {
        cmd.arg("-o").arg(options.join(","));
    }
    if let Some(l) = log_file {
        cmd.arg("--log-file").arg(l);
    }
    cmd.arg("--").arg(store).arg(mountpoint);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    cmd.process_group(0);
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::new(ErrorKind::Internal, format!("cannot start the daemon: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        let mut data = p.expose().to_vec();
        data.push(b'\n');
        stdin.write_all(&data)?;
        zeroize::Zeroize::zeroize(&mut data);
    }
    let Some(out) = child.stdout.take() else {
        return Err(Error::new(ErrorKind::Internal, "daemon has no stdout"));
    };
    let mut line = String::new();
    BufReader::new(out).read_line(&mut line)?;
    let line = line.trim_end();
    if line.is_empty() {
        let status = child.wait()?;
        return Err(Error::new(
            ErrorKind::Internal,
            format!("daemon exited ({status}) before mounting; see --log-file"),
        ));
    }
    // Relay the daemon's own status line.
    println!("{line}");
    let code: u16 = line
        .split_whitespace()
        .next()
        .and_then(|c| c.parse().ok())
        .unwrap_or(500);
    if code == 200 {
        std::process::exit(0);
    }
    let _ = child.wait();
    let st = match code {
        400 => crate::error::Status::BadRequest,
        401 => crate::error::Status::Unauthorized,
        403 => crate::error::Status::Forbidden,
        404 => crate::error::Status::NotFound,
        406 => crate::error::Status::NotAcceptable,
        409 => crate::error::Status::Conflict,
        _ => crate::error::Status::Internal,
    };
    std::process::exit(i32::from(st.exit_code()));
}
