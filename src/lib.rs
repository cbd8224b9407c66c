//! circlefs: an encrypted FUSE filesystem for shared workspaces. Layers, from
//! the bottom: ids/error/level, crypto, format, store (all SQL), vault (all
//! permission decisions and crypto use), control (the command language),
//! fusefs (a translator only), daemon and cli.

#![forbid(unsafe_code)]

pub mod cli;
pub mod control;
pub mod crypto;
pub mod daemon;
pub mod error;
pub mod format;
pub mod fusefs;
pub mod ids;
pub mod level;
pub mod store;
pub mod vault;
