//! `expect` lines in the mirror executor: what a thread's last finished op
//! answered, checked only when the run asks for it.

use harness::exec::{run, DivergenceKind, Outcome, RunOptions};
use harness::program::{Op, Program};
use harness::text::parse;

const CHECKED: RunOptions = RunOptions {
    trace: true,
    planted: None,
    expect: true,
};
const UNCHECKED: RunOptions = RunOptions {
    expect: false,
    ..CHECKED
};

fn program(src: &str) -> Program {
    parse(src).unwrap_or_else(|e| panic!("{e}\n{src}"))
}

fn expects(p: &Program) -> u64 {
    p.steps
        .iter()
        .filter(|s| matches!(s.op, Op::Expect(_)))
        .count() as u64
}

fn clean(out: &Outcome) {
    assert!(
        out.divergence.is_none(),
        "{:#?}\n{}",
        out.divergence,
        out.trace.join("\n")
    );
}

/// One thread, so that every op has finished before the next starts, and
/// every expectation that this executor can answer today.
const HOLDS: &str = "\
config target=mirror threads=1 devices=fullva
t0 expect d0 faults=0
t0 m0 mmap 0x10000 +0x2000 anon
t0 expect 0x10000
t0 expect ok
t0 m0 write 0x10000 7
t0 expect 7
t0 d0 read 0x10000
t0 expect 7
t0 expect d0 faults=1
t0 d0 read 0x10000
t0 expect 7
t0 expect d0 faults=1
t0 d0 write 0x11000 9
t0 expect 9
t0 expect d0 faults=2
t0 m0 read 0x11000
t0 expect 9
t0 m0 mmap 0x10001 +0x1000 anon
t0 expect error:einval
t0 expect error
t0 m0 read 0x80000
t0 expect error:efault
t0 m0 mmap 0x30000 +0x1000 anon ro
t0 m0 write 0x30000 1
t0 expect error:eperm
t0 d1 read 0x10000
t0 expect skipped
t0 m0 mmap 0x40000 +0x2000 anon
t0 d0 snapshot 0x40000 +0x2000
t0 expect [none*2]
t0 m0 fork
t0 expect ok
t0 d1 open m1 perfault
t0 expect ok
t0 d1 open m1 perfault
t0 expect skipped
";

#[test]
fn expectations_that_hold_pass() {
    let p = program(HOLDS);
    let out = run(&p, &CHECKED);
    clean(&out);
    let held = out
        .trace
        .iter()
        .filter(|l| l.ends_with("-> expectation holds"))
        .count() as u64;
    assert_eq!(held, expects(&p), "{}", out.trace.join("\n"));
    // Unchecked, nothing changes: the same ops run, none diverges.
    let plain = run(&p, &UNCHECKED);
    clean(&plain);
    assert_eq!(plain.stats, out.stats);
    assert_eq!(plain.features, out.features);
}

#[test]
fn a_wrong_expectation_diverges_only_when_checked() {
    for (wrong, core) in [
        ("t0 expect 42", "t0's last finished op answered 0x10000"),
        ("t0 expect error", "t0's last finished op answered 0x10000"),
        (
            "t0 expect pages=1",
            "t0's last finished op answered 0x10000",
        ),
        (
            "t0 expect skipped",
            "t0's last finished op answered 0x10000",
        ),
        ("t0 expect []", "t0's last finished op answered 0x10000"),
        ("t0 expect d1 faults=0", "d1 is not open"),
    ] {
        let src = format!(
            "config target=mirror threads=2 devices=fullva\n\
             t0 m0 mmap 0x10000 +0x1000 anon\n\
             {wrong}\n\
             t1 m0 write 0x10000 1\n"
        );
        let p = program(&src);
        let d = run(&p, &CHECKED)
            .divergence
            .unwrap_or_else(|| panic!("{wrong} holds"));
        assert_eq!(d.kind, DivergenceKind::Expect, "{wrong}");
        assert_eq!(d.kind.name(), "expect");
        assert_eq!(d.step, Some(1), "{wrong}");
        assert_eq!(d.doing, wrong);
        assert_eq!(d.core, core, "{wrong}");
        assert_eq!(
            d.model,
            format!("expected {}", &wrong["t0 expect ".len()..])
        );
        // The report says both.
        let report = harness::report::render(&p, &CHECKED).expect("diverges");
        assert!(report.contains(core), "{report}");
        // Unchecked: counted as run, no divergence.
        let out = run(&p, &UNCHECKED);
        clean(&out);
        let ok = run(
            &program(&src.replace(&format!("{wrong}\n"), "")),
            &UNCHECKED,
        );
        assert_eq!(out.stats.ran, ok.stats.ran + 1, "{wrong}");
    }
    // Before the thread has finished any op there is nothing to expect of.
    let p = program("config target=mirror threads=2 devices=fullva\nt1 expect ok\n");
    let d = run(&p, &CHECKED).divergence.expect("nothing finished");
    assert_eq!(d.kind, DivergenceKind::Expect);
    assert_eq!(d.core, "t1 has no finished op yet");
    clean(&run(&p, &UNCHECKED));
}

/// t1's munmap holds the mmap lock, so t0's load of a page not yet
/// faulted in waits for it; the expectation queued behind the load waits
/// too, and sees the load's answer, not the store's before it.
fn blocked(expectation: &str) -> String {
    format!(
        "config target=mirror threads=2 devices=fullva
t0 m0 mmap 0x10000 +0x2000 anon
t0 m0 write 0x10000 5
t0 step
t0 step
t0 step
t0 step
t1 m0 munmap 0x10000 +0x2000
t1 step
t0 m0 read 0x11000
t0 expect {expectation}
t0 step
t1 step
t0 step
t1 step
t0 step
"
    )
}

#[test]
fn an_expectation_waits_for_the_threads_blocked_op() {
    let out = run(&program(&blocked("error:efault")), &CHECKED);
    clean(&out);
    let at = |needle: &str| {
        out.trace
            .iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("{needle} not in {:#?}", out.trace))
    };
    // The expect's own turn finds t0 blocked; it runs after the load fails.
    assert!(out.trace[at("t0 expect error:efault")].contains("waits for MmapLock"));
    assert!(at("m0 read: error") < at("expectation holds"));
    // Had it not waited, it would have seen the store's 5.
    let d = run(&program(&blocked("5")), &CHECKED)
        .divergence
        .expect("the expectation sees the load");
    assert_eq!(d.kind, DivergenceKind::Expect);
    assert_eq!(d.core, "t0's last finished op answered error:efault");
}

#[test]
fn notifier_programs_have_no_expectations() {
    let e = parse("config threads=1\nt0 expect ok\n").unwrap_err();
    assert_eq!((e.line, e.column), (2, 4), "{e}");
}
