//! The virtual control file: each open handle collects the responses to
//! the command lines written through it; a handle that wrote nothing reads
//! the account's last responses (so `echo ... > control; cat control` works).

use crate::control::{self, Response};
use crate::error::{Error, ErrorKind};
use crate::vault::workspace::Workspace;

/// Most bytes buffered for one unfinished line.
const MAX_PENDING: usize = control::parse::MAX_LINE + 1;

/// Per-handle state of the control file.
#[derive(Debug, Default)]
pub struct CtlHandle {
    /// Responses readable through this handle.
    pub out: Vec<u8>,
    /// Bytes of an unfinished line.
    pending: Vec<u8>,
    /// Whether this handle has written (its reads then show its own responses).
    pub wrote: bool,
    /// Whether a read snapshot of the last responses was taken.
    pub snap: bool,
}

/// Execute one line; `--json` as the first word selects JSON output.
fn run_line(ws: &Workspace, line: &[u8]) -> (String, bool) {
    let text = match std::str::from_utf8(line) {
        Ok(t) => t.trim(),
        Err(_) => {
            let r = Response::error(&Error::new(ErrorKind::BadRequest, "command is not UTF-8"));
            return (r.text(), false);
        }
    };
    let (json, text) = match text.strip_prefix("--json") {
        Some(rest) if rest.is_empty() || rest.starts_with(char::is_whitespace) => {
            (true, rest.trim_start())
        }
        _ => (false, text),
    };
    let r = match control::parse_line(text) {
        Ok(cmd) => {
            let r = control::execute(ws.vault(), ws.session(), &cmd);
            let mutated = cmd.mutates() && r.status == crate::error::Status::Ok;
            let out = if json { r.json() } else { r.text() };
            return (out, mutated);
        }
        Err(e) => Response::error(&e),
    };
    (if json { r.json() } else { r.text() }, false)
}

impl CtlHandle {
    /// Take written bytes; execute every complete line. Returns the
    /// responses produced and whether membership may have changed.
    pub fn write(&mut self, ws: &Workspace, data: &[u8]) -> (Vec<u8>, bool) {
        self.wrote = true;
        let mut produced = Vec::new();
        let mut mutated = false;
        for &b in data {
            if b == b'\n' {
                let line = std::mem::take(&mut self.pending);
                if line.len() > control::parse::MAX_LINE {
                    let r = Response::error(&Error::new(
                        ErrorKind::BadRequest,
                        "command longer than 4096 bytes",
                    ));
                    produced.extend_from_slice(r.text().as_bytes());
                } else if !line.iter().all(u8::is_ascii_whitespace) {
                    let (out, m) = run_line(ws, &line);
                    produced.extend_from_slice(out.as_bytes());
                    mutated |= m;
                }
            } else if self.pending.len() <= MAX_PENDING {
                self.pending.push(b);
            }
        }
        self.out.extend_from_slice(&produced);
        (produced, mutated)
    }

    /// Execute an unfinished last line (written without a newline).
    pub fn finish(&mut self, ws: &Workspace) -> (Vec<u8>, bool) {
        if self.pending.is_empty() {
            return (Vec::new(), false);
        }
        self.write(ws, b"\n")
    }
}
