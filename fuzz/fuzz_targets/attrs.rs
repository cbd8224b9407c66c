//! cargo-fuzz target: the attribute record decoder (`Attrs::decode`).
#![no_main]

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = harness::attrs(data);
});
