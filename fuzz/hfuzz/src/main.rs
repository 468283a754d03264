use std::sync::Once;

fn main() {
    loop {
        honggfuzz::fuzz!(|data: &[u8]| {
            // honggfuzz-rs installs a hook that aborts silently on its first
            // iteration; replace it once so the harness's report reaches stderr
            // (visible with honggfuzz -Q). Still aborts before unwinding.
            static HOOK: Once = Once::new();
            HOOK.call_once(|| {
                std::panic::set_hook(Box::new(|info| {
                    eprintln!("{info}\n{}", std::backtrace::Backtrace::capture());
                    std::process::abort();
                }))
            });
            harness::targets::notifier(data);
        });
    }
}
