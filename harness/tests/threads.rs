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

/// A mirror-form program: device faults on two threads against mm ops on
/// a third, over fullva and an ODP device.
const MIRROR_PROGRAM: &str =
    "config target=threads threads=3 devices=fullva,odp:16k schedule=0x5\n\
     t0 m0 mmap 0x10000 +0x6000 anon\n\
     t1 d0 read 0x10000\n\
     t1 d1 write 0x11000 7\n\
     t2 m0 munmap 0x10000 +0x2000\n\
     t1 d0 write 0x12000 3\n\
     t2 m0 mprotect 0x12000 +0x1000 ro\n\
     t1 d1 work\n\
     t0 m0 dontneed 0x10000 +0x6000\n\
     t0 d0 read 0x13000\n";

/// The mirror form runs clean under many schedules, and some of them
/// make a fault collide with an invalidation and retry (the checks ran
/// where they matter). Its text and bytes round-trip.
#[test]
fn the_mirror_form_runs_clean_and_collides() {
    let p = parse(MIRROR_PROGRAM).unwrap();
    assert!(p.config.speaks_mm());
    assert_eq!(parse(&print(&p)), Ok(p.clone()));
    assert_eq!(decode_for(Target::Threads, &encode(&p)), p);
    let traced = RunOptions {
        trace: true,
        ..RunOptions::default()
    };
    let mut retried = 0;
    let mut mapped = 0;
    for s in 0..64u64 {
        let mut q = p.clone();
        q.config.schedule = s.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let out = run(&q, &traced);
        assert!(out.divergence.is_none(), "{s}: {:?}", out.divergence);
        assert_eq!(out.stats.ran, 9, "{s}: every line runs");
        for l in &out.trace {
            if let Some(n) = l.split("mapped after ").nth(1) {
                mapped += 1;
                retried += usize::from(!n.starts_with("0 "));
            }
        }
    }
    assert!(mapped > 64, "too few faults mapped: {mapped}");
    assert!(retried > 0, "no schedule made a fault retry");
}

/// An input whose ignored target byte is 1 mod 4 is a mirror-form
/// program; 0 (every older threads input) is not.
#[test]
fn the_target_byte_chooses_the_mirror_form() {
    let mut bytes = vec![0u8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    let p = decode_for(Target::Threads, &bytes);
    assert!(!p.config.has_devices());
    bytes[0] = 1;
    let q = decode_for(Target::Threads, &bytes);
    assert!(q.config.has_devices() && q.config.speaks_mm());
    assert_eq!(q.config.target, Target::Threads);
}

/// On real OS threads, a correct program completes without a finding
/// (the watchdog's bound is far above any step's time).
#[test]
fn correct_programs_complete_on_os_threads() {
    let p = parse(MIRROR_PROGRAM).unwrap();
    for _ in 0..20 {
        let out = harness::threads::exec::run_os_threads(
            &p,
            &RunOptions::default(),
            std::time::Duration::from_secs(30),
        );
        assert!(out.divergence.is_none(), "{:?}", out.divergence);
        assert_eq!(out.stats.ran, 9);
    }
    // The notifier form too.
    let q = parse(
        "config target=threads threads=3\n\
         t0 insert i0 0x0 +0x2000\n\
         t1 start clear 0x0..0x1000\n\
         t2 read_begin i0\n\
         t0 remove i0\n\
         t1 end\n\
         t2 commit\n",
    )
    .unwrap();
    for _ in 0..20 {
        let out = harness::threads::exec::run_os_threads(
            &q,
            &RunOptions::default(),
            std::time::Duration::from_secs(30),
        );
        assert!(out.divergence.is_none(), "{:?}", out.divergence);
        assert_eq!(out.stats.ran + out.stats.skipped, 6);
    }
}
