//! The command language shared by the control file, `circlefs admin` and
//! `circlefs control`: parse a line into a `Command`, execute it as a
//! session, render the `Response`.

pub mod exec;
pub mod parse;
pub mod response;

pub use exec::execute;
pub use parse::{Command, PassSource, parse_line, parse_tokens};
pub use response::Response;
