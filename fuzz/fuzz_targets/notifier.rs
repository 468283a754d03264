#![no_main]

use libfuzzer_sys::fuzz_target;

// All decoding and oracle logic lives in the harness so every engine runs the same code.
fuzz_target!(|data: &[u8]| harness::targets::notifier(data));
