//! `circlefs control`: send commands through a mount's control file.

use std::fs::OpenOptions;
use std::io::{BufRead, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::ExitCode;

use crate::control::Response;
use crate::error::{Error, ErrorKind, Status};

/// Quote a word for the command language.
fn quote(w: &str) -> String {
    if !w.is_empty()
        && !w
            .chars()
            .any(|c| c.is_whitespace() || c == '"' || c == '\'' || c == '\\')
    {
        return w.to_string();
    }
    let mut s = String::from("\"");
    for c in w.chars() {
        if c == '"' || c == '\\' {
            s.push('\\');
        }
        s.push(c);
    }
    s.push('"');
    s
}

/// Send one line through a fresh handle; returns the raw response text.
fn send(mountpoint: &Path, line: &str) -> Result<Vec<u8>, Error> {
    let path = mountpoint
        .join(crate::fusefs::CTL_DIR_NAME)
        .join(crate::fusefs::CTL_FILE_NAME);
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| {
            Error::new(
                ErrorKind::NotFound,
                format!("{} is not a circlefs mount ({e})", mountpoint.display()),
            )
        })?;
    let mut data = line.as_bytes().to_vec();
    data.push(b'\n');
    f.write_all_at(&data, 0)?;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 65536];
    loop {
        let n = f.read_at(&mut buf, out.len() as u64)?;
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    Ok(out)
}

fn status_of(resp: &[u8], json: bool) -> u8 {
    let text = String::from_utf8_lossy(resp);
    let code: Option<u16> = if json {
        serde_json::from_str::<serde_json::Value>(text.lines().next().unwrap_or(""))
            .ok()
            .and_then(|v| v["code"].as_u64())
            .map(|c| c as u16)
    } else {
        text.split_whitespace().next().and_then(|w| w.parse().ok())
    };
    let st = match code {
        Some(200) => Status::Ok,
        Some(400) => Status::BadRequest,
        Some(401) => Status::Unauthorized,
        Some(403) => Status::Forbidden,
        Some(404) => Status::NotFound,
        Some(406) => Status::NotAcceptable,
        Some(409) => Status::Conflict,
        _ => Status::Internal,
    };
    st.exit_code()
}

/// Run `circlefs control`.
pub fn run(mountpoint: &Path, json: bool, command: &[String]) -> ExitCode {
    let prefix = if json { "--json " } else { "" };
    let lines: Vec<String> = if command.len() == 1 && command[0] == "-" {
        std::io::stdin()
            .lock()
            .lines()
            .map_while(|l| l.ok())
            .filter(|l| !l.trim().is_empty())
            .collect()
    } else {
        vec![
            command
                .iter()
                .map(|w| quote(w))
                .collect::<Vec<_>>()
                .join(" "),
        ]
    };
    let mut code = 0u8;
    let mut so = std::io::stdout().lock();
    for l in lines {
        match send(mountpoint, &format!("{prefix}{l}")) {
            Ok(resp) => {
                let c = status_of(&resp, json);
                if c != 0 {
                    code = c;
                }
                let _ = so.write_all(&resp);
            }
            Err(e) => {
                let r = Response::error(&e);
                let _ = so.write_all(if json { r.json() } else { r.text() }.as_bytes());
                return ExitCode::from(r.status.exit_code());
            }
        }
    }
    let _ = so.flush();
    ExitCode::from(code)
}
