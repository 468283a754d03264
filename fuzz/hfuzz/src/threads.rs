mod hook;

fn main() {
    hook::run(harness::targets::threads);
}
