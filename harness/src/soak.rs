//! `mnfuzz soak`: every target, every mirror strategy and strategy pair,
//! many seeds, with and without the seed corpus, on all cores.
//!
//! The soak is a list of cells. A cell is one row (a target, and for the
//! mirror target a [`DevicePin`]), one seed and the seed corpus on or off;
//! it is one run of the built-in engine with one job and a fixed budget of
//! executions, so its result is a function of the cell alone. Round `r`
//! runs every row with the corpus off and on under seed `first_seed + r`.
//! Jobs take cells in order; the wall clock only decides when no new cell
//! starts, so the cells that ran are always a prefix of the list.
//!
//! Every finding is minimized, written atomically as `<dir>/<target>/<hash>.ops`
//! (its config line carries the pinned devices) and replayed from that
//! file; the soak fails if any cell found a divergence.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use notifier::PlantedBug;

use crate::engine::{fuzz, EngineOptions, Finding};
use crate::exec::{run, RunOptions};
use crate::files::{load_program, write_regression};
use crate::pin::DevicePin;
use crate::program::Target;

/// Executions of one cell unless told otherwise: about a second of the
/// mirror target on one core of the 2-core reference machine.
pub const DEFAULT_CELL_RUNS: u64 = 20_000;

/// What to soak.
#[derive(Clone, Debug)]
pub struct SoakOptions {
    /// Targets, in order.
    pub targets: Vec<Target>,
    /// Mirror strategy pairs as well as single strategies.
    pub pairs: bool,
    /// Mirror rows only for these registry kinds (a pair if either is one
    /// of them); empty: every kind.
    pub strategies: Vec<u8>,
    /// Seed of round 0; round `r` uses `first_seed + r`.
    pub first_seed: u64,
    /// Stop after this many rounds.
    pub rounds: Option<u64>,
    /// Start no cell after this many seconds.
    pub seconds: Option<f64>,
    /// Cells run at once.
    pub jobs: usize,
    /// Executions of each cell (seed inputs included).
    pub cell_runs: u64,
    /// The seed corpus of each target (bytes); cells with the corpus on
    /// start from it.
    pub corpus: Vec<(Target, Vec<Vec<u8>>)>,
    /// Planted bug to enable.
    pub planted: Option<PlantedBug>,
    /// Longest generated input, in bytes.
    pub max_len: usize,
    /// Executions the minimizer may spend on a finding.
    pub minimize_execs: u64,
    /// Where reproducers go (`<dir>/<target>/`); `None`: nowhere.
    pub regressions: Option<PathBuf>,
    /// A progress line on stderr.
    pub progress: bool,
}

impl Default for SoakOptions {
    fn default() -> SoakOptions {
        SoakOptions {
            targets: Target::SIMULATED.to_vec(),
            pairs: true,
            strategies: Vec::new(),
            first_seed: 1,
            rounds: None,
            seconds: None,
            jobs: 1,
            cell_runs: DEFAULT_CELL_RUNS,
            corpus: Vec::new(),
            planted: None,
            max_len: 256,
            minimize_execs: 20_000,
            regressions: None,
            progress: false,
        }
    }
}

/// A row of the table: a target, and the devices of its mirror programs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Row {
    /// The target.
    pub target: Target,
    /// Mirror target: the pinned strategies.
    pub pin: Option<DevicePin>,
}

impl Row {
    /// `-` for the notifier target, else the pin's name.
    pub fn strategy(&self) -> String {
        self.pin.map_or_else(|| "-".into(), |p| p.name())
    }
}

/// One cell: a row, a seed, the corpus on or off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cell {
    /// Index into [`SoakReport::rows`].
    pub row: usize,
    /// The engine's seed.
    pub seed: u64,
    /// Started from the seed corpus.
    pub corpus: bool,
}

/// What one cell did.
#[derive(Clone, Debug)]
pub struct CellResult {
    /// Its place in the list of cells.
    pub index: u64,
    /// The cell.
    pub cell: Cell,
    /// Executions.
    pub execs: u64,
    /// The divergence it found.
    pub finding: Option<Finding>,
    /// Where the reproducer was written.
    pub written: Option<PathBuf>,
    /// Why the reproducer could not be written or does not replay.
    pub problem: Option<String>,
}

/// What a soak did.
#[derive(Clone, Debug)]
pub struct SoakReport {
    /// The rows, in table order.
    pub rows: Vec<Row>,
    /// Every cell that ran, in list order (a prefix of the list).
    pub cells: Vec<CellResult>,
    /// Wall seconds.
    pub secs: f64,
}

impl SoakReport {
    /// Cells that found a divergence.
    pub fn findings(&self) -> impl Iterator<Item = &CellResult> {
        self.cells.iter().filter(|c| c.finding.is_some())
    }

    /// Executions in all.
    pub fn execs(&self) -> u64 {
        self.cells.iter().map(|c| c.execs).sum()
    }

    /// The table: one line per row with its cells, seeds, executions and
    /// findings, then a total.
    pub fn table(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        // As wide as the longest strategy (pair) name, 18 at least.
        let w = self
            .rows
            .iter()
            .map(|r| r.strategy().len())
            .max()
            .unwrap_or(0)
            .max(18);
        let line =
            |s: &mut String, t: &str, st: &str, c: String, sd: String, e: String, f: String| {
                let _ = writeln!(s, "{t:<9} {st:<w$} {c:>6} {sd:>9} {e:>12} {f:>9}");
            };
        line(
            &mut s,
            "target",
            "strategy",
            "cells".into(),
            "seeds".into(),
            "execs".into(),
            "findings".into(),
        );
        for (i, r) in self.rows.iter().enumerate() {
            let cells: Vec<&CellResult> = self.cells.iter().filter(|c| c.cell.row == i).collect();
            let mut seeds: Vec<u64> = cells.iter().map(|c| c.cell.seed).collect();
            seeds.dedup();
            line(
                &mut s,
                r.target.name(),
                &r.strategy(),
                cells.len().to_string(),
                seed_span(&seeds),
                cells.iter().map(|c| c.execs).sum::<u64>().to_string(),
                cells
                    .iter()
                    .filter(|c| c.finding.is_some())
                    .count()
                    .to_string(),
            );
        }
        let mut seeds: Vec<u64> = self.cells.iter().map(|c| c.cell.seed).collect();
        seeds.sort_unstable();
        seeds.dedup();
        line(
            &mut s,
            "total",
            "",
            self.cells.len().to_string(),
            seed_span(&seeds),
            self.execs().to_string(),
            self.findings().count().to_string(),
        );
        s
    }
}

/// `1-4`, `3`, or `-`: the seeds run, which are always consecutive.
fn seed_span(seeds: &[u64]) -> String {
    match (seeds.first(), seeds.last()) {
        (Some(a), Some(b)) if a == b => a.to_string(),
        (Some(a), Some(b)) => format!("{a}-{b}"),
        _ => "-".into(),
    }
}

/// The rows of `opts`: the notifier target alone, the mirror target once
/// per strategy and pair.
pub fn rows(opts: &SoakOptions) -> Vec<Row> {
    let mut v = Vec::new();
    for &target in &opts.targets {
        match target {
            Target::Notifier | Target::Threads | Target::Linux | Target::Kvm => {
                v.push(Row { target, pin: None })
            }
            Target::Mirror => v.extend(
                DevicePin::all(opts.pairs)
                    .into_iter()
                    .filter(|p| {
                        let kinds = [Some(p.d0.kind), p.d1.map(|s| s.kind)];
                        opts.strategies.is_empty()
                            || kinds.iter().flatten().any(|k| opts.strategies.contains(k))
                    })
                    .map(|p| Row {
                        target,
                        pin: Some(p),
                    }),
            ),
        }
    }
    v
}

/// Cell `i` of the list: rounds of every row with the corpus off, then on.
pub fn cell(rows: usize, first_seed: u64, i: u64) -> Cell {
    let per_round = 2 * rows.max(1) as u64;
    let j = i % per_round;
    Cell {
        row: (j / 2) as usize,
        seed: first_seed.wrapping_add(i / per_round),
        corpus: j % 2 == 1,
    }
}

/// Runs one cell.
fn run_cell(opts: &SoakOptions, row: Row, cell: Cell, index: u64) -> CellResult {
    let seeds = if cell.corpus {
        opts.corpus
            .iter()
            .filter(|(t, _)| *t == row.target)
            .flat_map(|(_, s)| s.iter().cloned())
            .collect()
    } else {
        Vec::new()
    };
    let rep = fuzz(&EngineOptions {
        target: row.target,
        seed: cell.seed,
        jobs: 1,
        runs: Some(opts.cell_runs),
        seconds: None,
        seeds,
        planted: opts.planted,
        max_len: opts.max_len,
        feedback: true,
        progress: false,
        minimize_execs: opts.minimize_execs,
        pin: row.pin,
        kernel_compat: false,
    });
    let mut r = CellResult {
        index,
        cell,
        execs: rep.execs,
        finding: rep.finding,
        written: None,
        problem: None,
    };
    if let (Some(f), Some(dir)) = (&r.finding, &opts.regressions) {
        match keep(f, &dir.join(row.target.name()), opts) {
            Ok(p) => r.written = Some(p),
            Err(e) => r.problem = Some(e),
        }
    }
    r
}

/// Writes a finding and replays it from the file, as the engine ran it.
fn keep(f: &Finding, dir: &Path, opts: &SoakOptions) -> Result<PathBuf, String> {
    let run_opts = RunOptions {
        trace: false,
        planted: opts.planted,
        expect: false,
    };
    let path = write_regression(dir, &f.minimized, &f.divergence, &run_opts)?;
    let p = load_program(&path, f.minimized.config.target)?;
    if run(&p, &run_opts).divergence.is_none() {
        return Err(format!("{} does not diverge when replayed", path.display()));
    }
    Ok(path)
}

/// Runs the soak.
pub fn soak(opts: &SoakOptions) -> SoakReport {
    let start = Instant::now();
    let rows = rows(opts);
    let deadline = opts.seconds.map(|s| start + Duration::from_secs_f64(s));
    let per_round = 2 * rows.len() as u64;
    let total = opts.rounds.map(|r| r.saturating_mul(per_round));
    // Taking a cell and checking the clock under one lock keeps the cells
    // that ran a prefix of the list.
    let next = Mutex::new(0u64);
    let take = || {
        let mut n = next.lock().unwrap_or_else(|e| e.into_inner());
        let out = total.is_some_and(|t| *n >= t) || deadline.is_some_and(|d| Instant::now() >= d);
        if out || rows.is_empty() {
            return None;
        }
        *n += 1;
        Some(*n - 1)
    };
    let results = Mutex::new(Vec::new());
    let done = AtomicBool::new(false);
    let (execs, finished, found) = (AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0));
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..opts.jobs.max(1))
            .map(|_| {
                scope.spawn(|| {
                    while let Some(i) = take() {
                        let c = cell(rows.len(), opts.first_seed, i);
                        let r = run_cell(opts, rows[c.row], c, i);
                        execs.fetch_add(r.execs, Ordering::Relaxed);
                        finished.fetch_add(1, Ordering::Relaxed);
                        if let Some(f) = &r.finding {
                            found.fetch_add(1, Ordering::Relaxed);
                            eprintln!(
                                "mnfuzz soak: FINDING {} {} seed {} corpus {}: {} ({} steps){}",
                                rows[c.row].target.name(),
                                rows[c.row].strategy(),
                                c.seed,
                                if c.corpus { "on" } else { "off" },
                                f.divergence.kind.name(),
                                f.minimized.steps.len(),
                                r.written
                                    .as_ref()
                                    .map_or(String::new(), |p| format!(" -> {}", p.display()))
                            );
                        }
                        if let Some(p) = &r.problem {
                            eprintln!("mnfuzz soak: {p}");
                        }
                        results.lock().unwrap_or_else(|e| e.into_inner()).push(r);
                    }
                })
            })
            .collect();
        if opts.progress {
            let p = Progress {
                start,
                deadline,
                total,
                execs: &execs,
                finished: &finished,
                found: &found,
                done: &done,
            };
            scope.spawn(move || p.show());
        }
        for w in workers {
            if let Err(e) = w.join() {
                std::panic::resume_unwind(e);
            }
        }
        done.store(true, Ordering::Relaxed);
    });
    let mut cells = results.into_inner().unwrap_or_else(|e| e.into_inner());
    cells.sort_by_key(|c| c.index);
    SoakReport {
        rows,
        cells,
        secs: start.elapsed().as_secs_f64(),
    }
}

/// The progress line's view of a running soak.
struct Progress<'a> {
    start: Instant,
    deadline: Option<Instant>,
    total: Option<u64>,
    execs: &'a AtomicU64,
    finished: &'a AtomicU64,
    found: &'a AtomicU64,
    done: &'a AtomicBool,
}

impl Progress<'_> {
    fn show(&self) {
        let tty = std::io::stderr().is_terminal();
        let bar = indicatif::ProgressBar::new_spinner();
        if !tty {
            bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
        }
        let mut last = Instant::now();
        while !self.done.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(200));
            let secs = self.start.elapsed().as_secs_f64();
            let n = self.execs.load(Ordering::Relaxed);
            let msg = format!(
                "soak: {} cells done{}, {n} execs ({:.0}/s), {} finding(s), {}",
                self.finished.load(Ordering::Relaxed),
                self.total.map_or(String::new(), |t| format!(" of {t}")),
                n as f64 / secs.max(1e-9),
                self.found.load(Ordering::Relaxed),
                match self.deadline {
                    Some(d) => format!(
                        "{:.0} s left to start cells",
                        d.saturating_duration_since(Instant::now()).as_secs_f64()
                    ),
                    None => format!("{secs:.0} s"),
                }
            );
            if tty {
                bar.set_message(msg);
                bar.tick();
            } else if last.elapsed() >= Duration::from_secs(10) {
                eprintln!("mnfuzz {msg}");
                last = Instant::now();
            }
        }
        bar.finish_and_clear();
    }
}

/// `mnfuzz soak` arguments.
#[derive(clap::Args, Debug)]
pub struct SoakArgs {
    /// Start no new cell after this many seconds (default 60 unless
    /// --rounds is given).
    #[arg(long)]
    pub seconds: Option<f64>,
    /// Stop after this many rounds (every row, corpus off and on, one seed).
    #[arg(long)]
    pub rounds: Option<u64>,
    /// Cells run at once (default: the number of cores).
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Seed of round 0; round r uses first-seed + r.
    #[arg(long, default_value_t = 1)]
    pub first_seed: u64,
    /// Executions of one cell.
    #[arg(long, default_value_t = DEFAULT_CELL_RUNS)]
    pub cell_runs: u64,
    /// Targets (repeatable; default: all).
    #[arg(long)]
    pub target: Vec<String>,
    /// Single mirror strategies only, no pairs.
    #[arg(long)]
    pub no_pairs: bool,
    /// Mirror rows only for this strategy, alone and in pairs (repeatable;
    /// a name as in `.ops` files, e.g. one registered by another crate).
    #[arg(long)]
    pub strategy: Vec<String>,
    /// Where reproducers go, as <dir>/<target>/<hash>.ops
    /// (default: <repo>/target/soak).
    #[arg(long)]
    pub regressions: Option<PathBuf>,
    /// Planted bug to enable (needs --features planted-bugs).
    #[arg(long, env = "MNFUZZ_PLANTED_BUG")]
    pub planted: Option<String>,
    /// Longest generated input, in bytes.
    #[arg(long, default_value_t = 256)]
    pub max_len: usize,
    /// Executions the minimizer may spend on each finding.
    #[arg(long, default_value_t = 20_000)]
    pub minimize_execs: u64,
    /// No progress line.
    #[arg(long)]
    pub no_progress: bool,
    /// Run the threads target's programs on real OS threads (no shuttle,
    /// no schedule seed), with a watchdog that reports HANG_MS
    /// milliseconds without a step of any thread as a deadlock (default
    /// 2000); needs `--target threads` alone.
    #[arg(long, value_name = "HANG_MS", num_args = 0..=1, default_missing_value = "2000")]
    pub os_threads: Option<u64>,
}

/// The repository: the nearest ancestor of the working directory with
/// `corpus/` and `Cargo.toml`, else the one this binary was built from.
fn repo_root() -> PathBuf {
    std::env::current_dir()
        .ok()
        .and_then(|cwd| {
            cwd.ancestors()
                .find(|d| d.join("Cargo.toml").is_file() && d.join("corpus").is_dir())
                .map(Path::to_path_buf)
        })
        .unwrap_or_else(|| {
            let here = Path::new(env!("CARGO_MANIFEST_DIR"));
            here.parent().unwrap_or(here).to_path_buf()
        })
}

/// The byte seeds of `corpus/<target>/`, in name order.
fn seed_corpus(root: &Path, target: Target) -> Result<Vec<Vec<u8>>, String> {
    crate::files::seed_inputs(&root.join("corpus").join(target.name()))
}

/// Runs `mnfuzz soak`: prints the table on stdout; exit 1 on any finding.
pub fn cli(args: &SoakArgs) -> Result<ExitCode, String> {
    let mut targets = Vec::new();
    for t in &args.target {
        let t = Target::from_name(t).ok_or_else(|| format!("unknown target '{t}'"))?;
        if !targets.contains(&t) {
            targets.push(t);
        }
    }
    if targets.is_empty() {
        targets = Target::SIMULATED.to_vec();
    }
    if let Some(ms) = args.os_threads {
        if targets != [Target::Threads] {
            return Err("soak: --os-threads needs --target threads alone".into());
        }
        crate::threads::exec::set_os_threads(ms.max(1));
    }
    if args.seconds.is_some_and(|s| s.is_nan() || s <= 0.0) {
        return Err("soak: --seconds must be positive".into());
    }
    if args.rounds == Some(0) || args.cell_runs == 0 || args.jobs == Some(0) {
        return Err("soak: --rounds, --cell-runs and --jobs must be positive".into());
    }
    let planted = args
        .planted
        .as_deref()
        .filter(|n| !n.is_empty())
        .map(crate::targets::resolve_planted)
        .transpose()?;
    let root = repo_root();
    let mut corpus = Vec::new();
    for &t in &targets {
        corpus.push((t, seed_corpus(&root, t)?));
    }
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let seconds = match (args.seconds, args.rounds) {
        (None, None) => Some(60.0),
        (s, _) => s,
    };
    let regressions = args
        .regressions
        .clone()
        .unwrap_or_else(|| root.join("target/soak"));
    let mut strategies = Vec::new();
    for name in &args.strategy {
        let s = mirror::StrategySpec::from_arg(name)
            .ok_or_else(|| format!("soak: unknown strategy '{name}'"))?;
        strategies.push(s.kind);
    }
    let opts = SoakOptions {
        targets,
        pairs: !args.no_pairs,
        strategies,
        first_seed: args.first_seed,
        rounds: args.rounds,
        seconds,
        jobs,
        cell_runs: args.cell_runs,
        corpus,
        planted,
        max_len: args.max_len,
        minimize_execs: args.minimize_execs,
        regressions: Some(regressions.clone()),
        progress: !args.no_progress,
    };
    let rows = rows(&opts);
    eprintln!(
        "mnfuzz soak: {} rows x corpus off/on, {} execs per cell, {jobs} job(s), {}{}; \
         reproducers under {}",
        rows.len(),
        opts.cell_runs,
        match (opts.rounds, opts.seconds) {
            (Some(r), Some(s)) => format!("{r} round(s) or {s} s"),
            (Some(r), None) => format!("{r} round(s)"),
            (None, Some(s)) => format!("{s} s"),
            (None, None) => unreachable!("a default limit"),
        },
        planted.map_or(String::new(), |b| format!(", planted bug {}", b.name())),
        regressions.display()
    );
    let rep = soak(&opts);
    print!("{}", rep.table());
    let findings: Vec<&CellResult> = rep.findings().collect();
    for c in &findings {
        let row = rep.rows[c.cell.row];
        let f = c.finding.as_ref().expect("a finding");
        println!(
            "finding: {} {} seed {} corpus {}: {} after {} execs, {} -> {} steps: {}",
            row.target.name(),
            row.strategy(),
            c.cell.seed,
            if c.cell.corpus { "on" } else { "off" },
            f.divergence.kind.name(),
            f.execs_to_find,
            f.steps.0,
            f.steps.1,
            c.written.as_ref().map_or_else(
                || c.problem.clone().unwrap_or_default(),
                |p| p.display().to_string()
            )
        );
    }
    eprintln!(
        "mnfuzz soak: {} cells, {} execs in {:.1} s, {} finding(s)",
        rep.cells.len(),
        rep.execs(),
        rep.secs,
        findings.len()
    );
    let unrun = (0..rep.rows.len())
        .filter(|&r| !rep.cells.iter().any(|c| c.cell.row == r))
        .count();
    if unrun > 0 {
        eprintln!(
            "mnfuzz soak: warning: time ran out before {unrun} row(s) ran at all; \
             give more --seconds or --jobs, or fewer --cell-runs"
        );
    }
    let broken = rep.cells.iter().filter(|c| c.problem.is_some()).count();
    if broken > 0 {
        eprintln!(
            "mnfuzz soak: {broken} reproducer(s) could not be written or do not replay: \
             a harness defect"
        );
    }
    Ok(if findings.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_go_round_by_round_corpus_off_then_on() {
        let c: Vec<Cell> = (0..6).map(|i| cell(2, 5, i)).collect();
        let want = [
            (0, 5, false),
            (0, 5, true),
            (1, 5, false),
            (1, 5, true),
            (0, 6, false),
            (0, 6, true),
        ];
        for (c, (row, seed, corpus)) in c.iter().zip(want) {
            assert_eq!(*c, Cell { row, seed, corpus });
        }
    }

    #[test]
    fn rows_are_every_target_then_every_strategy_and_pair() {
        let r = rows(&SoakOptions::default());
        assert_eq!(r.len(), 1 + 8 + 8 + 28 + 1);
        assert_eq!(r[45].target, Target::Threads);
        assert_eq!(r[0].strategy(), "-");
        assert_eq!(r[1].strategy(), "fullva");
        assert_eq!(r[6].strategy(), "gpusvm");
        assert_eq!(r[8].strategy(), "kfd-noxnack");
        assert_eq!(r[9].strategy(), "fullva@twopass");
        assert_eq!(r[16].strategy(), "kfd-noxnack@twopass");
        assert_eq!(r[44].strategy(), "kfd+kfd-noxnack");
    }
}
