//! The built-in engine on `lru`, by executions with fixed seeds: the clean
//! cache survives, the cache that forgets its PTEs on eviction is caught,
//! and its minimized reproducer is a ready regression test.

use std::path::{Path, PathBuf};

use harness::engine::{fuzz, EngineOptions};
use harness::exec::{run, RunOptions};
use harness::files::{load_program, program_files};
use harness::pin::DevicePin;
use harness::program::Target;
use mirror::StrategySpec;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// mnfuzz's own mirror seeds: they map, fault, migrate and unmap, and the
/// pin turns every device in them into the strategy under test.
fn seeds() -> Vec<Vec<u8>> {
    let dir = repo().join("corpus/mirror");
    let v = harness::files::seed_inputs(&dir).expect("the seed corpus");
    assert!(v.len() > 20, "seeds under {}", dir.display());
    v
}

fn engine(strategy: &str, runs: u64) -> (harness::engine::EngineReport, StrategySpec) {
    own_strategy::register().expect("registered");
    let s = StrategySpec::from_arg(strategy).expect("a registered strategy");
    let opts = EngineOptions {
        target: Target::Mirror,
        seed: 1,
        runs: Some(runs),
        seeds: seeds(),
        minimize_execs: 20_000,
        pin: Some(DevicePin::single(s)),
        ..EngineOptions::default()
    };
    (fuzz(&opts), s)
}

const CLEAN: RunOptions = RunOptions {
    trace: false,
    planted: None,
    expect: true,
};

#[test]
fn the_clean_cache_survives_the_engine() {
    let (rep, _) = engine("lru", 30_000);
    if let Some(f) = &rep.finding {
        panic!(
            "lru diverged:\n{}",
            harness::report::render(&f.minimized, &CLEAN).unwrap_or_default()
        );
    }
    assert_eq!(rep.execs, 30_000);
}

#[test]
fn eviction_without_the_zap_is_caught_and_minimized() {
    let (rep, nozap) = engine("lru-nozap", 30_000);
    let f = rep.finding.expect("lru-nozap found within 30,000 execs");
    println!(
        "found after {} execs, minimized {} -> {} steps ({})",
        f.execs_to_find,
        f.steps.0,
        f.steps.1,
        f.divergence.kind.name()
    );
    let min = f.minimized;
    assert!(min.steps.len() <= 16, "{} steps", min.steps.len());
    assert!(min.config.devices.iter().flatten().all(|d| *d == nozap));
    // The reproducer, as text, is a regression test: it fails on the
    // broken cache and passes on the clean one.
    let as_ops = harness::text::print(&min);
    let back = harness::text::parse(&as_ops).expect("the reproducer parses");
    let engine_run = RunOptions {
        expect: false,
        ..CLEAN
    };
    assert!(run(&back, &engine_run).divergence.is_some());
    let mut fixed = back.clone();
    DevicePin::single(StrategySpec::from_arg("lru").unwrap()).apply(&mut fixed);
    assert!(
        run(&fixed, &engine_run).divergence.is_none(),
        "{}",
        harness::text::print(&fixed)
    );
}

#[test]
fn scenarios_replay_with_their_expectations() {
    own_strategy::register().expect("registered");
    let files = program_files(&Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios")).unwrap();
    assert!(!files.is_empty());
    for f in files {
        let p = load_program(&f, Target::Mirror).expect("a valid scenario");
        let out = run(&p, &CLEAN);
        assert!(
            out.divergence.is_none(),
            "{}:\n{}",
            f.display(),
            harness::report::render(&p, &CLEAN).unwrap_or_default()
        );
    }
}
