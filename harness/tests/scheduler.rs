//! The scheduler's rules, one test each, on hand-written programs.

use harness::exec::{run, DivergenceKind, RunOptions};
use harness::text::parse;

fn traced(src: &str) -> harness::exec::Outcome {
    let p = parse(src).expect("test program parses");
    run(
        &p,
        &RunOptions {
            trace: true,
            ..RunOptions::default()
        },
    )
}

const HEADER: &str = "config target=notifier threads=2\n";

#[test]
fn a_blocked_threads_lines_wait_and_run_when_it_wakes() {
    let out = traced(&format!(
        "{HEADER}t0 insert i0 0x0 +0x1000\nt1 start unmap 0x0..0x1000\n\
         t0 read_begin i0\nt0 commit\nt1 end\n"
    ));
    assert!(out.divergence.is_none(), "{:?}", out.divergence);
    let at = |needle: &str| {
        out.trace
            .iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("{needle} not in {:#?}", out.trace))
    };
    // The commit line comes before `t1 end` in the program but runs after
    // t0 wakes, which needs the end.
    assert!(at("blocks") < at("t1 end"));
    assert!(at("t1 end") < at("t0 wakes"));
    assert!(at("t0 wakes") < at("t0 commit"));
    assert_eq!(out.stats.blocked, 1);
}

#[test]
fn a_thread_holding_an_invalidation_may_not_block() {
    let out = traced(&format!(
        "{HEADER}t0 insert i0 0x0 +0x1000\nt0 start unmap 0x0..0x1000\n\
         t0 read_begin i0\nt0 remove i0\nt0 end\n"
    ));
    assert!(out.divergence.is_none());
    assert_eq!(out.stats.skipped, 2, "{:#?}", out.trace);
    assert!(out
        .trace
        .iter()
        .any(|l| l.contains("holds an open invalidation")));
}

#[test]
fn the_drain_ends_open_invalidations_and_wakes_waiters() {
    let out = traced(&format!(
        "{HEADER}t0 insert i0 0x0 +0x1000\nt1 start unmap 0x0..0x1000\n\
         t1 start clear 0x0..0x1000\nt0 read_begin i0\nt0 remove i0\n"
    ));
    assert!(out.divergence.is_none(), "{:?}", out.divergence);
    let drains = out
        .trace
        .iter()
        .filter(|l| l.starts_with("drain: t1 end"))
        .count();
    assert_eq!(drains, 2, "{:#?}", out.trace);
    // t0 wakes in the drain and runs its queued remove, which no longer waits.
    assert!(out
        .trace
        .iter()
        .any(|l| l.contains("t0 wakes: read_begin i0")));
    assert!(out
        .trace
        .iter()
        .any(|l| l.contains("t0 remove i0    -> removed")));
}

#[test]
fn skipped_ops_are_counted_and_change_nothing() {
    let out = traced(&format!(
        "{HEADER}t0 end\nt0 commit\nt0 remove i1\nt1 unregister c0\nt0 read_begin i2\n"
    ));
    assert!(out.divergence.is_none());
    assert_eq!(out.stats.skipped, 5);
    assert_eq!(out.stats.ran, 0);
}

#[test]
fn an_invalid_program_is_not_run() {
    let mut p = parse(&format!("{HEADER}t0 insert i0 0x0 +0x1000\n")).unwrap();
    p.steps[0].thread = 3;
    let out = run(&p, &RunOptions::default());
    assert!(out.divergence.is_none());
    assert_eq!(out.stats.ran, 0);
}

#[test]
fn divergence_kinds_have_distinct_names() {
    let mut names: Vec<&str> = DivergenceKind::ALL.iter().map(|k| k.name()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), DivergenceKind::ALL.len());
}

/// The minimizer keeps the divergence kind and strips what does not matter.
#[cfg(feature = "planted-bugs")]
#[test]
fn the_minimizer_shrinks_a_padded_reproducer() {
    use harness::minimize::Minimizer;
    let noise = "t1 insert i3 0x8000 +0x2000 refuse-nb\nt1 start clear 0x8000..0x9000 nonblock\n\
                 t1 end\nt1 register c2\nt1 read_begin i3\nt1 commit\n";
    let src = format!(
        "config target=notifier threads=3 initial_seq=0xfffffffffffffffe\n{noise}\
         t2 start unmap 0x0..0x1000\n{noise}t0 insert i1 0x0 +0x1000\n{noise}t0 read_begin i1\n{noise}"
    );
    let p = parse(&src).unwrap();
    let opts = RunOptions {
        trace: false,
        planted: Some(notifier::PlantedBug::InsertEvenSeq),
        expect: true,
    };
    let d = run(&p, &opts)
        .divergence
        .expect("the padded program diverges");
    let mut m = Minimizer::default();
    let min = m.minimize(&p, &opts, d.kind);
    assert_eq!(run(&min, &opts).divergence.map(|d| d.kind), Some(d.kind));
    assert!(min.steps.len() <= 3, "{}", harness::text::print(&min));
    assert_eq!(min.config.threads, 2);
    assert_eq!(min.config.initial_seq, 2);
}
