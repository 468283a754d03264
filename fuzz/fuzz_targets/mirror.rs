#![no_main]

use libfuzzer_sys::fuzz_target;

// Device mirrors on the simulated address space; the logic lives in the harness.
fuzz_target!(|data: &[u8]| harness::targets::mirror(data));
