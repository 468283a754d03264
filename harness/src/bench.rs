//! `mnfuzz bench`: how fast each fuzz target runs with the built-in engine
//! (issue 9). The goal is [`GOAL_EXECS_PER_SEC`] on one core for programs
//! of about 64 steps.
//!
//! Per target it measures:
//! * the engine: one job, feedback on, an empty corpus, a fixed seed, for
//!   a fixed time; execs/s and the median program size, as
//!   [`EngineReport`] reports them;
//! * the executor alone: a fixed set of seeded random programs, run over
//!   and over with no generation, mutation or feedback, to separate the
//!   executor's cost from the engine's.
//!
//! The wall clock only times runs from outside; nothing it says reaches an
//! execution, so every execution stays deterministic.

use std::time::{Duration, Instant};

use crate::engine::{fuzz, EngineOptions, EngineReport, Rng};
use crate::exec::{run, RunOptions};
use crate::program::{Program, Target};
use crate::targets::decode_for;

/// Executions per second that each target must reach with the built-in
/// engine on one core (the threads target has its own, [`goal`]).
pub const GOAL_EXECS_PER_SEC: f64 = 20_000.0;

/// The threads target's goal. Each of its executions is a shuttle run:
/// tasks with their own stacks and a context switch at every lock, unlock,
/// wait and wake-up, a few hundred of them per program, and a quarter of
/// its inputs are mirror programs (device faults and mm ops on threads).
/// The goal keeps that cost from growing unseen; the split-phase targets'
/// goal is out of its reach by design.
pub const THREADS_GOAL_EXECS_PER_SEC: f64 = 2_500.0;

/// The engine's goal for `target`, in executions per second on one core.
pub fn goal(target: Target) -> f64 {
    match target {
        Target::Threads => THREADS_GOAL_EXECS_PER_SEC,
        _ => GOAL_EXECS_PER_SEC,
    }
}

/// What to measure.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Targets to measure, in order.
    pub targets: Vec<Target>,
    /// Seconds of engine time per target, and as much again for the
    /// executor alone.
    pub seconds: f64,
    /// The engine's seed, and the seed of the executor's program set.
    pub seed: u64,
    /// Programs in the executor's set.
    pub programs: usize,
}

impl Default for BenchOptions {
    fn default() -> BenchOptions {
        BenchOptions {
            targets: Target::SIMULATED.to_vec(),
            seconds: 10.0,
            seed: 1,
            programs: 2_000,
        }
    }
}

/// The figures of one target.
#[derive(Clone, Debug)]
pub struct BenchRow {
    /// The target.
    pub target: Target,
    /// The engine run.
    pub engine: EngineReport,
    /// Executions per second of the executor alone.
    pub exec_only_per_sec: f64,
    /// Median steps of the executor's program set.
    pub exec_only_median_steps: u32,
}

impl BenchRow {
    /// Whether the engine reached its target's [`goal`].
    pub fn meets_goal(&self) -> bool {
        self.engine.execs_per_sec() >= goal(self.target)
    }
}

/// Seeded random programs for `target` of about 64 steps (steps take
/// about 3 bytes).
pub fn program_set(target: Target, seed: u64, n: usize) -> Vec<Program> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|_| {
            let len = 128 + rng.below(128);
            decode_for(target, &rng.bytes(len))
        })
        .collect()
}

fn median(mut v: Vec<u32>) -> u32 {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

/// Runs `programs` round after round for about `seconds`; executions per
/// second. Fails if any program diverges: a bench of a broken target means
/// nothing.
fn exec_only(target: Target, programs: &[Program], seconds: f64) -> Result<f64, String> {
    let opts = RunOptions::default();
    for p in programs {
        if let Some(d) = run(p, &opts).divergence {
            return Err(format!(
                "{}: a benchmark program diverges ({})",
                target.name(),
                d.kind.name()
            ));
        }
    }
    let budget = Duration::from_secs_f64(seconds);
    let start = Instant::now();
    let mut execs = 0u64;
    // One round at least, however late this thread got the CPU.
    loop {
        for p in programs {
            std::hint::black_box(run(std::hint::black_box(p), &opts));
        }
        execs += programs.len() as u64;
        if start.elapsed() >= budget {
            break;
        }
    }
    Ok(execs as f64 / start.elapsed().as_secs_f64())
}

/// Measures every target of `opts`.
pub fn bench(opts: &BenchOptions) -> Result<Vec<BenchRow>, String> {
    let mut rows = Vec::new();
    for &target in &opts.targets {
        let engine = fuzz(&EngineOptions {
            target,
            seed: opts.seed,
            jobs: 1,
            seconds: Some(opts.seconds),
            progress: false,
            ..EngineOptions::default()
        });
        if let Some(f) = &engine.finding {
            return Err(format!(
                "{}: the engine found a divergence ({}); fix it before measuring",
                target.name(),
                f.divergence.kind.name()
            ));
        }
        let programs = program_set(target, opts.seed, opts.programs.max(1));
        let exec_only_median_steps =
            median(programs.iter().map(|p| p.steps.len() as u32).collect());
        let exec_only_per_sec = exec_only(target, &programs, opts.seconds)?;
        rows.push(BenchRow {
            target,
            engine,
            exec_only_per_sec,
            exec_only_median_steps,
        });
    }
    Ok(rows)
}

/// The machine, as far as the benches can tell: CPU model, cores, load.
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown CPU", |(_, m)| m.trim())
        .to_string();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".into());
    format!("{model}, {cores} cores, load average {load}")
}

/// `mnfuzz bench`'s arguments.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Target to measure; repeat for several (default: every target).
    #[arg(long = "target")]
    pub targets: Vec<String>,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Seed of the engine and of the executor's programs.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Exit with 1 if a target misses the goal.
    #[arg(long)]
    pub check: bool,
}

/// Runs `mnfuzz bench`: prints the table; exit code 1 only with `--check`
/// and a missed goal.
pub fn cli(args: &BenchArgs) -> Result<std::process::ExitCode, String> {
    let targets = if args.targets.is_empty() {
        Target::SIMULATED.to_vec()
    } else {
        args.targets
            .iter()
            .map(|t| Target::from_name(t).ok_or_else(|| format!("unknown target '{t}'")))
            .collect::<Result<_, _>>()?
    };
    let opts = BenchOptions {
        targets,
        seconds: args.seconds,
        seed: args.seed,
        ..BenchOptions::default()
    };
    let rows = bench(&opts)?;
    print!("{}", render(&opts, &rows));
    let missed = rows.iter().any(|r| !r.meets_goal());
    Ok(if args.check && missed {
        std::process::ExitCode::from(1)
    } else {
        std::process::ExitCode::SUCCESS
    })
}

/// The table that `mnfuzz bench` prints.
pub fn render(opts: &BenchOptions, rows: &[BenchRow]) -> String {
    let mut s = format!(
        "mnfuzz bench: 1 job, seed {}, {:.0} s per measurement, empty corpus\nmachine: {}\n",
        opts.seed,
        opts.seconds,
        machine()
    );
    s.push_str(&format!(
        "{:<10} {:>14} {:>13} {:>16} {:>13}  goal {:.0} execs/s (threads {:.0})\n",
        "target",
        "engine execs/s",
        "median steps",
        "executor execs/s",
        "median steps",
        GOAL_EXECS_PER_SEC,
        THREADS_GOAL_EXECS_PER_SEC
    ));
    for r in rows {
        let ratio = r.engine.execs_per_sec() / goal(r.target);
        s.push_str(&format!(
            "{:<10} {:>14.0} {:>13} {:>16.0} {:>13}  {} ({ratio:.2}x the goal)\n",
            r.target.name(),
            r.engine.execs_per_sec(),
            r.engine.median_steps(),
            r.exec_only_per_sec,
            r.exec_only_median_steps,
            if r.meets_goal() { "met" } else { "MISSED" },
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_threads_target_has_a_goal_of_its_own() {
        assert_eq!(goal(Target::Threads), THREADS_GOAL_EXECS_PER_SEC);
        assert_eq!(goal(Target::Mirror), GOAL_EXECS_PER_SEC);
        let row = |target, execs_per_sec: f64| BenchRow {
            target,
            engine: EngineReport {
                execs: execs_per_sec as u64,
                secs: 1.0,
                ..EngineReport::default()
            },
            exec_only_per_sec: 0.0,
            exec_only_median_steps: 0,
        };
        assert!(row(Target::Threads, 3_000.0).meets_goal());
        assert!(!row(Target::Threads, 2_000.0).meets_goal());
        assert!(!row(Target::Notifier, 3_000.0).meets_goal());
    }

    #[test]
    fn program_set_is_seeded_and_about_64_steps() {
        let a = program_set(Target::Notifier, 3, 200);
        assert_eq!(a, program_set(Target::Notifier, 3, 200));
        let m = median(a.iter().map(|p| p.steps.len() as u32).collect());
        assert!((48..=80).contains(&m), "median {m} steps");
    }

    #[test]
    fn a_short_bench_reports_every_target() {
        let opts = BenchOptions {
            seconds: 0.05,
            programs: 20,
            ..BenchOptions::default()
        };
        let rows = bench(&opts).expect("clean targets");
        assert_eq!(rows.len(), Target::SIMULATED.len());
        for r in &rows {
            assert!(r.engine.execs > 0 && r.exec_only_per_sec > 0.0);
        }
        let table = render(&opts, &rows);
        assert!(table.contains("notifier"), "{table}");
        assert!(table.contains("threads 2500"), "{table}");
        assert!(table.contains("machine:"), "{table}");
    }
}
