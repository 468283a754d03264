//! The `threads` target: the blocking API of the core on shuttle-scheduled
//! threads. Bounded by executions with fixed seeds, never by time.

use harness::codec::encode;
use harness::engine::{fuzz, EngineOptions, Rng};
use harness::exec::{run, RunOptions};
use harness::program::Target;
use harness::targets::decode_for;
use harness::text::{parse, print};

/// Its programs go through the byte codec and the text format unchanged,
/// schedule seed included.
#[test]
fn threads_programs_round_trip_through_bytes_and_text() {
    let mut rng = Rng::new(7);
    for _ in 0..300 {
        let n = rng.below(200);
        let bytes = rng.bytes(n);
        let p = decode_for(Target::Threads, &bytes);
        assert_eq!(p.config.target, Target::Threads);
        assert_eq!(decode_for(Target::Threads, &encode(&p)), p);
        assert_eq!(parse(&print(&p)), Ok(p.clone()));
    }
}

/// The schedule is the input's: the same program runs the same
/// interleaving, and another seed runs another one.
#[test]
fn a_schedule_replays_exactly() {
    let text = "config target=threads threads=3 schedule=0x1234\n\
                t0 insert i0 0x0 +0x2000\n\
                t1 start clear 0x0..0x1000\n\
                t2 read_begin i0\n\
                t0 remove i0\n\
                t1 end\n\
                t2 commit\n";
    let p = parse(text).unwrap();
    let traced = RunOptions {
        trace: true,
        ..RunOptions::default()
    };
    let a = run(&p, &traced);
    assert!(a.divergence.is_none(), "{:?}", a.divergence);
    for _ in 0..3 {
        assert_eq!(run(&p, &traced).trace, a.trace);
    }
    let differs = (1..20u64).any(|s| {
        let mut q = p.clone();
        q.config.schedule = s.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        run(&q, &traced).trace != a.trace
    });
    assert!(differs, "the schedule seed changes nothing");
}

/// The clean core passes a bounded run of the engine.
#[test]
fn the_clean_core_passes_bounded_runs() {
    const RUNS: u64 = 1_500;
    let rep = fuzz(&EngineOptions {
        target: Target::Threads,
        seed: 1,
        runs: Some(RUNS),
        ..EngineOptions::default()
    });
    if let Some(f) = &rep.finding {
        let r = harness::report::render(&f.minimized, &RunOptions::default());
        panic!("{}", r.unwrap_or_default());
    }
    assert!(rep.ops.0 > 10 * RUNS, "too few ops ran: {:?}", rep.ops);
    assert!(rep.corpus > 10, "feedback kept only {} inputs", rep.corpus);
}

/// Each planted bug that only real concurrency exposes is found within a
/// bounded number of executions; nothing here names a bug.
#[cfg(feature = "planted-bugs")]
#[test]
fn every_concurrent_planted_bug_is_found_within_bounded_executions() {
    const CAP: u64 = 30_000;
    let mut missed = Vec::new();
    for bug in notifier::PlantedBug::CONCURRENT {
        let rep = fuzz(&EngineOptions {
            target: Target::Threads,
            seed: 1,
            runs: Some(CAP),
            planted: Some(bug),
            minimize_execs: 3_000,
            ..EngineOptions::default()
        });
        let Some(f) = rep.finding else {
            missed.push(bug.name());
            continue;
        };
        let with = RunOptions {
            planted: Some(bug),
            ..RunOptions::default()
        };
        assert!(run(&f.minimized, &with).divergence.is_some());
        assert!(
            run(&f.minimized, &RunOptions::default())
                .divergence
                .is_none(),
            "{}: the minimized program diverges without the bug",
            bug.name()
        );
        eprintln!(
            "{}: found after {} execs, minimized to {} steps ({})",
            bug.name(),
            f.execs_to_find,
            f.steps.1,
            f.divergence.kind.name()
        );
    }
    assert!(
        missed.is_empty(),
        "not found within {CAP} execs: {missed:?}"
    );
}
