//! The minimizer on long mirror reproducers: each line both queues an op
//! and gives its thread a turn, which plain delta debugging cannot shorten.
//! Budgets are executions, so the results are deterministic.
#![cfg(feature = "planted-bugs")]

use harness::exec::{run, RunOptions};
use harness::minimize::Minimizer;
use harness::program::Program;
use harness::targets::resolve_planted;
use harness::text::{parse, print};

/// The program of `minimize/<name>` and the options it diverges under: its
/// planted bug, expectations unchecked (as the engine runs it).
fn load(name: &str) -> (Program, RunOptions) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/minimize")
        .join(name);
    let src = std::fs::read_to_string(&path).unwrap();
    let bug = src
        .lines()
        .find_map(|l| l.strip_prefix("# planted:"))
        .map(|n| resolve_planted(n.trim()).unwrap());
    let opts = RunOptions {
        trace: false,
        planted: bug,
        expect: false,
    };
    (parse(&src).unwrap(), opts)
}

/// Minimizes `name` within `budget` executions; checks the kind is kept,
/// the result is at most `most` steps, and a second run gives the same.
fn shrinks_to(name: &str, budget: u64, most: usize) {
    let (p, opts) = load(name);
    let kind = run(&p, &opts).divergence.expect("diverges").kind;
    let min = |p: &Program| {
        let mut m = Minimizer {
            max_execs: budget,
            execs: 0,
        };
        m.minimize(p, &opts, kind)
    };
    let a = min(&p);
    let text = print(&a);
    assert_eq!(
        run(&a, &opts).divergence.map(|d| d.kind),
        Some(kind),
        "{text}"
    );
    assert!(
        a.steps.len() <= most,
        "{name}: {} -> {} steps\n{text}",
        p.steps.len(),
        a.steps.len()
    );
    assert_eq!(min(&p), a, "not deterministic");
}

#[test]
fn the_22_step_reproducer_of_issue_21_shrinks_to_10_steps_or_fewer() {
    shrinks_to("seed12.ops", 20_000, 10);
}

#[test]
fn a_fresh_46_step_finding_shrinks_to_8_steps_or_fewer() {
    shrinks_to("skip-set-seq-46.ops", 20_000, 8);
}
