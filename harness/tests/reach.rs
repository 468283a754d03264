//! `mnfuzz reach`: the state-coverage cells of bounded, seeded engine runs
//! (one job: deterministic). Each test names cells a run must reach; a
//! change that stops the executors recording a dimension, or the engine
//! reaching a state, fails here.

use harness::engine::{fuzz, EngineOptions};
use harness::program::Target;
use harness::reach::{by_value, config_pairs, dim_pairs, render, ReachCounts};

fn run(target: Target, runs: u64) -> ReachCounts {
    let rep = fuzz(&EngineOptions {
        target,
        seed: 1,
        runs: Some(runs),
        ..EngineOptions::default()
    });
    assert!(rep.finding.is_none(), "{}", rep.summary(target));
    assert_eq!(rep.reach.execs, runs);
    rep.reach
}

/// The values of dimension `d` that `r` reached.
fn reached(r: &ReachCounts, target: Target, d: usize) -> Vec<String> {
    by_value(r, target, d)
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(v, _)| v)
        .collect()
}

fn assert_reaches(r: &ReachCounts, target: Target, d: usize, want: &[&str]) {
    let got = reached(r, target, d);
    for w in want {
        assert!(
            got.iter().any(|g| g == w),
            "dimension {d}: {w} not reached\n{}",
            render(r, target)
        );
    }
}

#[test]
fn a_bounded_mirror_run_reaches_the_named_cells() {
    let r = run(Target::Mirror, 4_000);
    // Strategies: every built-in kind.
    let kinds: Vec<&str> = mirror::strategy::BUILTIN.iter().map(|k| k.name).collect();
    assert_reaches(&r, Target::Mirror, 0, &kinds);
    // Events: mm ops and device ops, prefetch among them.
    assert_reaches(
        &r,
        Target::Mirror,
        1,
        &[
            "read",
            "mmap",
            "munmap",
            "mprotect",
            "fork",
            "dread",
            "dwrite",
            "dprefetch",
            "dmigrate",
            "dexclusive",
            "dregister",
            "dattr",
        ],
    );
    // Page states, device-private and exclusive among them.
    assert_reaches(
        &r,
        Target::Mirror,
        2,
        &[
            "no-vma",
            "none",
            "zero",
            "present-rw",
            "devpriv-local",
            "exclusive",
        ],
    );
    // Fault phases, a retry and a wait in read_begin among them.
    assert_reaches(
        &r,
        Target::Mirror,
        3,
        &[
            "begin",
            "walk",
            "commit",
            "install",
            "retry",
            "read_begin-wait",
        ],
    );
    assert_reaches(&r, Target::Mirror, 4, &["none", "local", "remote"]);
    // Faults of every common strategy reached their commit, and a fault
    // of each was in flight while an mm op ran.
    let (hit, total, missing) = dim_pairs(&r, Target::Mirror, 0, 3);
    for k in ["fullva", "perfault", "odp", "vma", "gpusvm", "kfd"] {
        for phase in ["commit", "walk"] {
            let cell = format!("{k} × {phase}");
            assert!(
                !missing.contains(&cell),
                "strategy × fault phase: {cell} unreached ({hit}/{total})"
            );
        }
    }
}

#[test]
fn a_bounded_mirror_run_covers_most_configuration_pairs() {
    let r = run(Target::Mirror, 4_000);
    let (hit, total, missing) = config_pairs(&r);
    assert!(hit * 10 >= total * 8, "{hit}/{total}: {missing:?}");
    // Two-pass flushes with each kind the config byte can give `d0`, and
    // with `d0` absent (the generator opens a config device two-pass).
    for d0 in [
        "none",
        "fullva",
        "perfault",
        "odp:small",
        "vma",
        "regcache",
        "kfd",
    ] {
        let pair = format!("d0={d0} × twopass=yes");
        assert!(!missing.contains(&pair), "{pair} not exercised");
    }
}

#[test]
fn a_bounded_notifier_run_reaches_the_named_cells() {
    let r = run(Target::Notifier, 3_000);
    assert_reaches(
        &r,
        Target::Notifier,
        0,
        &[
            "insert",
            "populate",
            "remove",
            "end",
            "read_begin",
            "commit",
            "start:unmap",
            "start:migrate",
        ],
    );
    assert_reaches(
        &r,
        Target::Notifier,
        1,
        &["0", "1", "2-3", "4-15", "16-63", "64+"],
    );
    assert_reaches(
        &r,
        Target::Notifier,
        2,
        // (`deferred` alone cannot be: removals defer only while an
        // invalidation runs, and the last end runs them.)
        &["quiet", "invalidating", "inval+deferred"],
    );
    assert_reaches(&r, Target::Notifier, 3, &["ran", "blocked", "nonblock"]);
    // Big trees under invalidation, and removals deferred behind one.
    let (_, _, missing) = dim_pairs(&r, Target::Notifier, 1, 2);
    for m in ["64+ × invalidating", "64+ × inval+deferred"] {
        assert!(!missing.iter().any(|x| x == m), "{m} unreached");
    }
}
