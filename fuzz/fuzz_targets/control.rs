//! cargo-fuzz target: the command-language parser (`parse_line`, `parse_tokens`).
#![no_main]

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = harness::control(data);
});
