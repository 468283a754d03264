//! The randomized differential test of the core against
//! `ReferenceNotifier`: seeded, bounded by executions, over interleaved
//! split-phase operations of several logical threads.

use harness::engine::{fuzz, EngineOptions, Rng};
use harness::exec::{run, RunOptions};
use harness::program::Target;
use harness::targets::decode_for;

/// Executions per seed; the engine runs one job, so this is deterministic.
const RUNS: u64 = 3_000;
const SEEDS: [u64; 3] = [1, 2, 3];

#[test]
fn core_matches_the_reference_on_random_programs() {
    for seed in SEEDS {
        let rep = fuzz(&EngineOptions {
            seed,
            runs: Some(RUNS),
            ..EngineOptions::default()
        });
        if let Some(f) = &rep.finding {
            let r = harness::report::render(&f.minimized, &RunOptions::default());
            panic!("seed {seed}: {}", r.unwrap_or_default());
        }
        assert_eq!(rep.execs, RUNS);
        // The run must have exercised the protocol, not skipped through it.
        assert!(rep.ops.0 > 10 * RUNS, "too few ops ran: {:?}", rep.ops);
        // Fresh random programs skip about half their ops (empty slots,
        // no open invalidation); more than 60% means the generator drifted.
        assert!(
            rep.skipped_pct() < 60.0,
            "{}",
            rep.summary(Target::Notifier)
        );
        assert!(rep.corpus > 20, "feedback kept only {} inputs", rep.corpus);
        // Reach: `populate` must make trees of 64 and more common.
        assert!(
            rep.big_tree_pct() > 5.0,
            "{}",
            rep.summary(Target::Notifier)
        );
    }
}

/// Reach of the mirror target: `prefetch` over small ODP chunks or GPU SVM
/// ranges, with the engine's small sizes and tree-size feedback, must make
/// states of dozens of intervals (all trees together) a measurable share
/// of a bounded run. Measured 0.8% here (3,000 runs), 0.5-0.7% over 20,000
/// runs (seeds 1, 2), and 0.0% before `prefetch`.
#[test]
fn mirror_runs_reach_dozens_of_intervals() {
    let rep = fuzz(&EngineOptions {
        target: Target::Mirror,
        seed: 1,
        runs: Some(RUNS),
        ..EngineOptions::default()
    });
    assert!(rep.finding.is_none(), "{}", rep.summary(Target::Mirror));
    assert_eq!(rep.execs, RUNS);
    assert!(rep.big_tree_pct() > 0.5, "{}", rep.summary(Target::Mirror));
}

#[test]
fn plain_random_programs_also_match() {
    let mut rng = Rng::new(7);
    let mut blocked = 0;
    for _ in 0..2_000 {
        let n = 16 + rng.below(400);
        let bytes = rng.bytes(n);
        let p = decode_for(Target::Notifier, &bytes);
        let out = run(&p, &RunOptions::default());
        assert!(out.divergence.is_none(), "{:?}", out.divergence);
        blocked += out.stats.blocked;
    }
    // Split-phase waits must actually happen, or the scheduler is untested.
    assert!(blocked > 100, "only {blocked} blocking ops");
}

/// The checked-in seed corpus of `target`, in name order: the engines
/// start from it, as `mnfuzz fuzz` and OSS-Fuzz do.
#[cfg(feature = "planted-bugs")]
fn seed_corpus(target: Target) -> Vec<Vec<u8>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../corpus")
        .join(target.name());
    let seeds = harness::files::seed_inputs(&dir).expect("the seed corpus");
    assert!(!seeds.is_empty(), "no seeds under {}", dir.display());
    seeds
}

/// Runs the engine with `bug` planted, seed 1, at most `cap` executions;
/// returns what it found, after checking that the minimized reproducer is a
/// real regression test (diverges with the bug, not without).
#[cfg(feature = "planted-bugs")]
fn hunt(target: Target, bug: notifier::PlantedBug, cap: u64) -> bool {
    let rep = fuzz(&EngineOptions {
        target,
        seed: 1,
        runs: Some(cap),
        seeds: seed_corpus(target),
        planted: Some(bug),
        minimize_execs: 3_000,
        ..EngineOptions::default()
    });
    let Some(f) = rep.finding else {
        return false;
    };
    let with = RunOptions {
        planted: Some(bug),
        ..RunOptions::default()
    };
    assert!(run(&f.minimized, &with).divergence.is_some());
    assert!(run(&f.minimized, &RunOptions::default())
        .divergence
        .is_none());
    eprintln!(
        "{}: found after {} execs, minimized to {} steps ({})",
        bug.name(),
        f.execs_to_find,
        f.steps.1,
        f.divergence.kind.name()
    );
    true
}

/// Every planted bug of the core is found on the notifier target by the
/// same engine, seed and cap; nothing here names a bug.
#[cfg(feature = "planted-bugs")]
#[test]
fn every_planted_core_bug_is_found_within_bounded_executions() {
    const CAP: u64 = 200_000;
    let missed: Vec<&str> = notifier::PlantedBug::ALL
        .into_iter()
        .filter(|b| b.component() == notifier::Component::Notifier)
        .filter(|b| !notifier::PlantedBug::DEEP.contains(b))
        .filter(|&b| !hunt(Target::Notifier, b, CAP))
        .map(|b| b.name())
        .collect();
    assert!(
        missed.is_empty(),
        "not found within {CAP} execs: {missed:?}"
    );
}

#[test]
fn mirror_target_keeps_its_oracles_on_random_programs() {
    for seed in [1, 2] {
        let rep = fuzz(&EngineOptions {
            target: Target::Mirror,
            seed,
            runs: Some(1_500),
            ..EngineOptions::default()
        });
        if let Some(f) = &rep.finding {
            let r = harness::report::render(&f.minimized, &RunOptions::default());
            panic!("seed {seed}: {}", r.unwrap_or_default());
        }
        assert!(rep.ops.0 > 10 * 1_500, "too few ops ran: {:?}", rep.ops);
        assert!(rep.corpus > 20, "feedback kept only {} inputs", rep.corpus);
    }
}

/// Every planted bug of the mm and the mirror is found on the mirror
/// target by the same engine, seed and cap; nothing here names a bug.
#[cfg(feature = "planted-bugs")]
#[test]
fn every_planted_mm_and_mirror_bug_is_found_within_bounded_executions() {
    // The huge-page and registration-cache bugs need a 2 MiB mapping or a
    // pinned registration first: tens of thousands of executions.
    const CAP: u64 = 200_000;
    let missed: Vec<&str> = notifier::PlantedBug::ALL
        .into_iter()
        .filter(|b| b.component() != notifier::Component::Notifier)
        .filter(|b| !notifier::PlantedBug::DEEP.contains(b))
        .filter(|&b| !hunt(Target::Mirror, b, CAP))
        .map(|b| b.name())
        .collect();
    assert!(
        missed.is_empty(),
        "not found within {CAP} execs: {missed:?}"
    );
}

/// The planted bugs that need a rare state, hunted like the others (seed
/// 1, the seed corpus) with the budget they need: a release build only,
/// where a million executions take half a minute (CI runs it; a debug
/// build would take ten).
#[cfg(all(feature = "planted-bugs", not(debug_assertions)))]
#[test]
fn every_deep_planted_bug_is_found_within_bounded_executions() {
    const CAP: u64 = 3_000_000;
    let missed: Vec<&str> = notifier::PlantedBug::DEEP
        .into_iter()
        .filter(|&b| {
            let target = match b.component() {
                notifier::Component::Notifier => Target::Notifier,
                _ => Target::Mirror,
            };
            !hunt(target, b, CAP)
        })
        .map(|b| b.name())
        .collect();
    assert!(
        missed.is_empty(),
        "not found within {CAP} execs: {missed:?}"
    );
}

/// `kernel_compat` opens Linux's hole (a classic subscriber's refusal
/// leaves the interval part hanging). The engine must find its consequence,
/// a wait that never ends, on its own once inputs may turn the flag on, and
/// the same seed and budget without the flag must stay clean: the hole is
/// the flag's, not the core's.
#[test]
fn kernel_compat_hole_is_found_only_when_inputs_may_open_it() {
    const BUDGET: u64 = 20_000;
    for seed in SEEDS {
        let with = fuzz(&EngineOptions {
            seed,
            runs: Some(BUDGET),
            kernel_compat: true,
            ..EngineOptions::default()
        });
        let f = with
            .finding
            .unwrap_or_else(|| panic!("seed {seed}: no finding in {BUDGET} execs"));
        let kind = f.divergence.kind.name();
        assert!(
            matches!(kind, "deadlock" | "not-quiescent"),
            "seed {seed}: a liveness divergence was expected, got {kind}"
        );
        assert!(
            f.minimized.config.kernel_compat,
            "the flag is what it needs"
        );
        let mut fixed = f.minimized.clone();
        fixed.config.kernel_compat = false;
        assert!(run(&fixed, &RunOptions::default()).divergence.is_none());

        let without = fuzz(&EngineOptions {
            seed,
            runs: Some(BUDGET),
            ..EngineOptions::default()
        });
        assert!(without.finding.is_none(), "seed {seed}: clean run diverged");
    }
}
