// Shared by both honggfuzz binaries.
//
// honggfuzz-rs swaps in a silent-abort panic hook on its first iteration.
// Put the std hook (which prints the harness's report; shown with
// honggfuzz -Q) back in front of the abort. Still aborts before unwinding,
// so honggfuzz's stack hash is unchanged.
pub fn run(target: fn(&[u8])) -> ! {
    let mut report = Some(std::panic::take_hook());
    loop {
        honggfuzz::fuzz!(|data: &[u8]| {
            if let Some(report) = report.take() {
                std::panic::set_hook(Box::new(move |info| {
                    report(info);
                    std::process::abort();
                }));
            }
            target(data);
        });
    }
}
