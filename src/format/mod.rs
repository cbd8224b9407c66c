//! Pure byte layouts: format version, AAD contexts, names, attribute records, blocks.

pub mod aad;
pub mod attrs;
pub mod block;
pub mod name;

/// Store format version recorded in `meta.format_version`; unknown versions are refused.
pub const FORMAT_VERSION: u32 = 1;
