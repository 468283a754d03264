//! `mnfuzz soak`: the table covers every row, the accounting adds up, cells
//! do not depend on how many jobs ran them, and a planted bug fails the
//! soak with reproducers that replay. Bounded by rounds and executions,
//! never by time.

use std::path::Path;
use std::process::Command;

use harness::exec::RunOptions;
use harness::program::Target;
use harness::soak::{rows, soak, SoakOptions};

/// The checked-in byte seeds of `target`, in name order.
fn seed_corpus(target: Target) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../corpus")
        .join(target.name());
    let seeds = harness::files::seed_inputs(&dir).expect("the seed corpus");
    assert!(!seeds.is_empty(), "no seeds under {}", dir.display());
    seeds
}

fn corpus() -> Vec<(Target, Vec<Vec<u8>>)> {
    Target::ALL.iter().map(|&t| (t, seed_corpus(t))).collect()
}

const CLEAN_RUNS: u64 = 120;

/// One round of every row, corpus off and on, on seeds checked clean.
#[test]
fn a_clean_round_fills_every_row_of_the_table() {
    let opts = SoakOptions {
        rounds: Some(1),
        first_seed: 1,
        cell_runs: CLEAN_RUNS,
        corpus: corpus(),
        ..SoakOptions::default()
    };
    let rep = soak(&opts);
    let all = rows(&opts);
    assert_eq!(
        all.len(),
        46,
        "notifier, 8 strategies, 8 two-pass, 28 pairs, threads"
    );
    assert_eq!(rep.rows, all);
    assert_eq!(rep.cells.len(), 2 * all.len());
    for (i, c) in rep.cells.iter().enumerate() {
        assert_eq!(c.index, i as u64);
        assert_eq!(
            (c.cell.row, c.cell.corpus, c.cell.seed),
            (i / 2, i % 2 == 1, 1)
        );
        assert_eq!(c.execs, CLEAN_RUNS, "cell {i}");
        if let Some(f) = &c.finding {
            let r = harness::report::render(&f.minimized, &RunOptions::default());
            panic!("cell {i}: {}", r.unwrap_or_default());
        }
    }
    assert_eq!(rep.execs(), 2 * 46 * CLEAN_RUNS);
    let table = rep.table();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 1 + 46 + 1, "{table}");
    for (row, line) in all.iter().zip(&lines[1..]) {
        let words: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(
            words,
            [
                row.target.name(),
                &row.strategy(),
                "2",
                "1",
                &(2 * CLEAN_RUNS).to_string(),
                "0"
            ],
            "{table}"
        );
    }
    let total: Vec<&str> = lines[47].split_whitespace().collect();
    assert_eq!(
        total,
        ["total", "92", "1", &(92 * CLEAN_RUNS).to_string(), "0"]
    );
}

/// A cell is a function of itself: one job or two, the same results.
#[test]
fn cells_do_not_depend_on_the_number_of_jobs() {
    let base = SoakOptions {
        targets: vec![Target::Mirror],
        pairs: false,
        rounds: Some(2),
        first_seed: 1,
        cell_runs: 60,
        ..SoakOptions::default()
    };
    let one = soak(&base);
    let two = soak(&SoakOptions { jobs: 2, ..base });
    assert_eq!(one.cells.len(), 64);
    assert_eq!(one.table(), two.table());
    for (a, b) in one.cells.iter().zip(&two.cells) {
        assert_eq!((a.index, a.cell, a.execs), (b.index, b.cell, b.execs));
        assert_eq!(
            a.finding.as_ref().map(|f| &f.minimized),
            b.finding.as_ref().map(|f| &f.minimized)
        );
    }
}

#[test]
fn bad_usage_exits_2() {
    for args in [
        &["--rounds", "0"][..],
        &["--target", "nope", "--rounds", "1"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_mnfuzz"))
            .arg("soak")
            .args(args)
            .output()
            .expect("mnfuzz runs");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
}

/// Planted bugs: the soak fails.
#[cfg(feature = "planted-bugs")]
mod planted {
    use super::*;
    use harness::exec::run;
    use harness::pin::DevicePin;
    use std::path::PathBuf;

    /// A scratch directory, removed when dropped.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(tag: &str) -> Scratch {
            let p =
                std::env::temp_dir().join(format!("mnfuzz-soak-test-{}-{tag}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).expect("scratch dir");
            Scratch(p)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    const PLANTED: &str = "mm-fork-no-invalidate";

    /// A planted bug fails the soak: findings, each written, each replaying
    /// from its file with the bug and passing without it.
    #[test]
    fn a_planted_bug_fails_the_soak_and_every_reproducer_replays() {
        let bug = harness::targets::resolve_planted(PLANTED).expect("planted bug");
        let dir = Scratch::new("planted");
        let opts = SoakOptions {
            targets: vec![Target::Mirror],
            pairs: false,
            rounds: Some(1),
            first_seed: 1,
            cell_runs: 400,
            corpus: corpus(),
            planted: Some(bug),
            minimize_execs: 2_000,
            regressions: Some(dir.0.clone()),
            ..SoakOptions::default()
        };
        let rep = soak(&opts);
        let found: Vec<_> = rep.findings().collect();
        assert!(found.len() >= 5, "{}", rep.table());
        let with = RunOptions {
            planted: Some(bug),
            ..RunOptions::default()
        };
        for c in found {
            assert_eq!(c.problem, None);
            let path = c.written.as_ref().expect("a reproducer");
            assert!(path.starts_with(dir.0.join("mirror")), "{}", path.display());
            let text = std::fs::read_to_string(path).expect("readable");
            assert!(
                text.contains(" devices="),
                "no devices on the config line:\n{text}"
            );
            let p = harness::files::load_program(path, Target::Mirror).expect("parses");
            assert!(run(&p, &with).divergence.is_some(), "{text}");
            assert!(
                run(&p, &RunOptions::default()).divergence.is_none(),
                "{text}"
            );
            // The finding's bytes carry the pin: they replay without it
            // (but for a strategy no `open` code names: kfd-noxnack, which
            // the codec has only as a second device; and for a two-pass
            // pin, whose config devices have no TLB bit).
            let pin = rep.rows[c.cell.row].pin.expect("mirror rows are pinned");
            if pin.name() == "kfd-noxnack" || pin.d0.tlb == mirror::Tlb::TwoPass {
                continue;
            }
            let f = c.finding.as_ref().expect("finding");
            let q = harness::targets::decode_for(Target::Mirror, &f.input);
            let kind = |s: mirror::StrategySpec| DevicePin::single(s).name();
            assert_eq!(q.config.devices[0].map(kind), Some(kind(pin.d0)));
            assert!(run(&q, &with).divergence.is_some());
        }
        let table = rep.table();
        assert!(table.lines().count() == 1 + 16 + 1, "{table}");
    }

    /// The command line: exit 1 and the reproducers on disk.
    #[test]
    fn the_soak_command_exits_1_on_a_planted_bug() {
        let dir = Scratch::new("cli");
        let out = Command::new(env!("CARGO_BIN_EXE_mnfuzz"))
            .args(["soak", "--rounds", "1", "--target", "mirror", "--no-pairs"])
            .args([
                "--cell-runs",
                "300",
                "--minimize-execs",
                "1000",
                "--jobs",
                "1",
            ])
            .args(["--no-progress", "--planted", PLANTED, "--regressions"])
            .arg(&dir.0)
            .output()
            .expect("mnfuzz runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "{stdout}");
        assert!(stdout.starts_with("target"), "{stdout}");
        assert!(stdout.contains("\nmirror    fullva "), "{stdout}");
        assert!(stdout.contains("\nfinding: mirror "), "{stdout}");
        let written = std::fs::read_dir(dir.0.join("mirror"))
            .expect("reproducers written")
            .count();
        assert!(written > 0);
    }
}
