// Built only by `cargo afl build`; a plain `cargo build` would give a binary
// that reads one input from stdin, which is how crashes are reproduced.
fn main() {
    afl::fuzz!(|data: &[u8]| harness::targets::notifier(data));
}
