#![no_main]

use libfuzzer_sys::fuzz_target;

// Every device of every mirror program runs `lru`; mnfuzz's seeds
// (corpus/mirror) are a good start: cargo fuzz run lru ../../corpus/mirror
fuzz_target!(|data: &[u8]| own_strategy::fuzz_one(data));
