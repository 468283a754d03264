#![no_main]

use libfuzzer_sys::fuzz_target;

// The blocking API on shuttle-scheduled threads; the input seeds the schedule.
fuzz_target!(|data: &[u8]| harness::targets::threads(data));
