// The threads target; see main.rs for how the binary behaves outside afl-fuzz.
fn main() {
    afl::fuzz!(|data: &[u8]| harness::targets::threads(data));
}
