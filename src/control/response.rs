//! Command results: first line `CODE Reason[: detail]`, data lines after;
//! or one JSON object `{"code":..,"message":..,"data":..}`.

use serde_json::{Value, json};

use crate::error::{Error, Status};

/// The result of one command.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status.
    pub status: Status,
    /// Detail after the reason phrase.
    pub message: String,
    /// Data lines (text form).
    pub lines: Vec<String>,
    /// Data (JSON form).
    pub data: Value,
}

impl Response {
    /// A 200 with a message.
    pub fn ok(message: impl Into<String>) -> Response {
        Response {
            status: Status::Ok,
            message: message.into(),
            lines: Vec::new(),
            data: Value::Null,
        }
    }

    /// Attach data.
    pub fn with(mut self, lines: Vec<String>, data: Value) -> Response {
        self.lines = lines;
        self.data = data;
        self
    }

    /// The response for an error.
    pub fn error(e: &Error) -> Response {
        Response {
            status: e.status(),
            message: e.detail.clone(),
            lines: Vec::new(),
            data: Value::Null,
        }
    }

    /// First line.
    pub fn status_line(&self) -> String {
        let code = self.status.code();
        let reason = self.status.reason();
        if self.message.is_empty() {
            format!("{code} {reason}")
        } else {
            format!("{code} {reason}: {}", one_line(&self.message))
        }
    }

    /// Text form, newline-terminated.
    pub fn text(&self) -> String {
        let mut s = self.status_line();
        s.push('\n');
        for l in &self.lines {
            s.push_str(&one_line(l));
            s.push('\n');
        }
        s
    }

    /// JSON form, newline-terminated.
    pub fn json(&self) -> String {
        let v = json!({"code": self.status.code(), "message": self.message, "data": self.data});
        let mut s = v.to_string();
        s.push('\n');
        s
    }
}

/// Keep a field on one line (names may hold any characters except control ones).
fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}
