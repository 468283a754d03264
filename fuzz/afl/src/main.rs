// Build with `cargo afl build`, which links AFL++'s runtime. Run outside
// afl-fuzz, the binary runs the one input on stdin: ci/engine-smoke.sh uses
// that to print the harness report for a crash AFL++ found.
fn main() {
    afl::fuzz!(|data: &[u8]| harness::targets::notifier(data));
}
