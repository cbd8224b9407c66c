//! cargo-fuzz target: opening a stored content block (`format::block::open_page`).
#![no_main]

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = harness::block(data);
});
