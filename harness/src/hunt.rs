//! `mnfuzz hunt`: how long each engine takes to find each planted bug.
//!
//! For every planted bug and every trial, an engine starts from an empty
//! corpus (or from `corpus/<target>/` with `--seeds`) on a build with that
//! bug planted, and runs until its first detection or the time limit. The
//! time and the executions to that detection are recorded. Core bugs are
//! hunted on the `notifier` target, mm and mirror bugs on `mirror`, and the
//! core's concurrent bugs ([`PlantedBug::CONCURRENT`]) on `threads`.
//!
//! * `builtin` and `random` run in this process: `harness::engine::fuzz`
//!   with one job and seeds 1..=N, with and without feedback. Trial 1 with
//!   `--runs` is exactly the run of the bounded `cargo test` checks in
//!   `harness/tests/differential.rs`.
//! * `libfuzzer`, `afl` and `honggfuzz` are built with the `planted-bugs`
//!   feature into `target/hunt/<engine>` (their own target dirs, so that
//!   other builds of `fuzz/` cannot swap the binary mid-hunt), run once per
//!   trial in a scratch directory, and their first crash is replayed here.
//!
//! Every engine's finding is replayed with the bug planted and without it.
//! It is a detection only if it diverges with the bug and the clean build
//! passes it. One that also diverges without the bug is a false alarm, never
//! a detection: it is kept under `target/hunt/false-alarms/`, and the hunt
//! reports it, records nothing and exits 1.
//!
//! Results are merged into `bench/hunt/results.json` (one record per
//! engine, bug and corpus; a new hunt replaces the records it re-measures),
//! and `bench/hunt/detection.svg` is redrawn from all of them.
//! `--report` prints the README table of everything recorded.
//!
//! This module belongs to the `mnfuzz` binary, not to the library.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime};

use clap::{Args, ValueEnum};
use notifier::{Component, PlantedBug};
use serde::{Deserialize, Serialize};

use harness::engine::{fuzz, EngineOptions};
use harness::exec::{run, DivergenceKind, RunOptions};
use harness::files::{program_files, write_atomic};
use harness::program::{Program, Target};
use harness::targets::{decode_for, resolve_planted};

/// `mnfuzz hunt` arguments.
#[derive(Args, Debug)]
pub struct HuntArgs {
    /// The planted bug to hunt (see `mnfuzz planted`).
    #[arg(long, conflicts_with = "all")]
    bug: Option<String>,
    /// Hunt every planted bug.
    #[arg(long)]
    all: bool,
    /// The engine.
    #[arg(long, value_enum, default_value_t = Engine::Builtin)]
    engine: Engine,
    /// Trials per bug; trial i uses seed first-seed + i.
    #[arg(long, default_value_t = 5)]
    trials: u32,
    /// Time limit of one trial, in seconds.
    #[arg(long, default_value_t = 30.0)]
    seconds: f64,
    /// Start from the seed corpus, corpus/<target>/, instead of an empty one.
    #[arg(long)]
    seeds: bool,
    /// builtin and random only: also end a trial after this many executions.
    #[arg(long)]
    runs: Option<u64>,
    /// Seed of the first trial.
    #[arg(long, default_value_t = 1)]
    first_seed: u64,
    /// External engines: seconds one input may run before it counts as a hang.
    #[arg(long, default_value_t = 10)]
    timeout: u64,
    /// Where results.json and detection.svg go (default: <repo>/bench/hunt).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print the results table as text but do not record it.
    #[arg(long)]
    no_save: bool,
    /// Hunt nothing: print the README table of everything in results.json
    /// and redraw the plot.
    #[arg(long)]
    report: bool,
}

/// A fuzzing engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum Engine {
    /// The built-in engine: generation, mutation, behaviour feedback.
    Builtin,
    /// The built-in generator alone: no feedback, no mutation.
    Random,
    /// libFuzzer through cargo-fuzz.
    Libfuzzer,
    /// AFL++ through afl.rs.
    Afl,
    /// honggfuzz through honggfuzz-rs.
    Honggfuzz,
}

impl Engine {
    const ALL: [Engine; 5] = [
        Engine::Builtin,
        Engine::Random,
        Engine::Libfuzzer,
        Engine::Afl,
        Engine::Honggfuzz,
    ];

    fn name(self) -> &'static str {
        match self {
            Engine::Builtin => "builtin",
            Engine::Random => "random",
            Engine::Libfuzzer => "libfuzzer",
            Engine::Afl => "afl",
            Engine::Honggfuzz => "honggfuzz",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Engine::Builtin => "built-in",
            Engine::Random => "random",
            Engine::Libfuzzer => "libFuzzer",
            Engine::Afl => "AFL++",
            Engine::Honggfuzz => "honggfuzz",
        }
    }

    fn from_name(s: &str) -> Option<Engine> {
        Engine::ALL.into_iter().find(|e| e.name() == s)
    }

    fn color(self) -> &'static str {
        match self {
            Engine::Builtin => "#1f77b4",
            Engine::Random => "#7f7f7f",
            Engine::Libfuzzer => "#d62728",
            Engine::Afl => "#2ca02c",
            Engine::Honggfuzz => "#9467bd",
        }
    }

    fn external(self) -> bool {
        matches!(self, Engine::Libfuzzer | Engine::Afl | Engine::Honggfuzz)
    }

    /// Where the executions to detection come from.
    fn execs_source(self) -> &'static str {
        match self {
            Engine::Builtin | Engine::Random => {
                "exact: the engine's execution counter at the divergent input (seed inputs included)"
            }
            Engine::Libfuzzer => {
                "exact: libFuzzer's stat::number_of_executed_units, printed at the crash"
            }
            Engine::Afl => "exact: the execs: field of AFL++'s first crash file name",
            Engine::Honggfuzz => {
                "from honggfuzz's exit summary (iterations): with --exit_upon_crash its one fuzzing thread stops after the crashing input"
            }
        }
    }

    /// Where the time to detection comes from.
    fn time_source(self) -> &'static str {
        match self {
            Engine::Builtin | Engine::Random => {
                "the engine's clock at the divergent input, from the start of the run"
            }
            Engine::Libfuzzer | Engine::Honggfuzz => {
                "the crash file's modification time, from the engine process's start (startup included)"
            }
            Engine::Afl => "the time: field (ms) of AFL++'s first crash file name",
        }
    }

    /// How the trials get different seeds.
    fn seed_note(self) -> &'static str {
        match self {
            Engine::Builtin | Engine::Random => "EngineOptions::seed = trial seed, one job",
            Engine::Libfuzzer => "-seed=<trial seed>",
            Engine::Afl => "-s <trial seed>",
            Engine::Honggfuzz => {
                "honggfuzz has no seed option: trials differ only by its own random state; seed is recorded as null"
            }
        }
    }
}

/// One trial's outcome.
#[derive(Clone, Debug, PartialEq)]
struct Trial {
    seed: Option<u64>,
    detected: bool,
    /// Seconds to the first detection.
    secs: Option<f64>,
    /// Executions to the first detection, where the engine reports them.
    execs: Option<u64>,
    /// Wall seconds the trial took (process start to exit for external engines).
    wall_secs: f64,
    /// The divergence kind of the detection.
    divergence: Option<String>,
    note: Option<String>,
    /// The engine's finding also diverges without the planted bug: not a
    /// detection, and the hunt fails. Never recorded: such a hunt is not saved.
    false_alarm: bool,
}

/// Every trial of one engine on one bug.
#[derive(Clone, Debug, PartialEq)]
struct Record {
    engine: Engine,
    bug: PlantedBug,
    target: Target,
    /// "empty" or "seeds".
    corpus: String,
    seconds: f64,
    runs: Option<u64>,
    trials: Vec<Trial>,
    machine: String,
    command: String,
    date: String,
    /// `git describe`-style revision of the sources, `-dirty` if modified.
    revision: String,
}

impl Record {
    fn detected(&self) -> usize {
        self.trials.iter().filter(|t| t.detected).count()
    }

    /// Detection times, a miss counting as infinite; None if some
    /// detection has no time.
    fn times(&self) -> Option<Vec<f64>> {
        self.trials
            .iter()
            .map(|t| match (t.detected, t.secs) {
                (true, Some(s)) => Some(s),
                (true, None) => None,
                (false, _) => Some(f64::INFINITY),
            })
            .collect()
    }

    /// Executions to detection, a miss counting as infinite; None if the
    /// engine did not report them for some detection.
    fn execs(&self) -> Option<Vec<f64>> {
        self.trials
            .iter()
            .map(|t| match (t.detected, t.execs) {
                (true, Some(n)) => Some(n as f64),
                (true, None) => None,
                (false, _) => Some(f64::INFINITY),
            })
            .collect()
    }
}

/// Median, min and max; misses (infinite values) sort last.
fn stats(v: &[f64]) -> Option<(f64, f64, f64)> {
    if v.is_empty() {
        return None;
    }
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let med = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Some((med, v[0], v[n - 1]))
}

/// Every planted bug: the split-phase ones, then the concurrent ones.
fn every_bug() -> impl Iterator<Item = PlantedBug> {
    PlantedBug::ALL.into_iter().chain(PlantedBug::CONCURRENT)
}

/// The target a bug is hunted on.
fn target_of(bug: PlantedBug) -> Target {
    if PlantedBug::CONCURRENT.contains(&bug) {
        return Target::Threads;
    }
    match bug.component() {
        Component::Notifier => Target::Notifier,
        Component::Mm | Component::Mirror => Target::Mirror,
    }
}

fn component_name(c: Component) -> &'static str {
    match c {
        Component::Notifier => "notifier",
        Component::Mm => "mm",
        Component::Mirror => "mirror",
    }
}

/// The repository: the nearest ancestor of the working directory with
/// `fuzz/Cargo.toml`, else the one this binary was built from.
fn repo_root() -> PathBuf {
    if let Ok(cwd) = std::env::current_dir() {
        if let Some(r) = cwd
            .ancestors()
            .find(|d| d.join("fuzz/Cargo.toml").is_file() && d.join("corpus").is_dir())
        {
            return r.to_path_buf();
        }
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(Path::new("."))
        .to_path_buf()
}

/// Runs `mnfuzz hunt`.
pub fn main(args: HuntArgs) -> Result<ExitCode, String> {
    let root = repo_root();
    let out = args.out.clone().unwrap_or_else(|| root.join("bench/hunt"));
    let json_path = out.join("results.json");
    let svg_path = out.join("detection.svg");
    if args.report {
        let records = load(&json_path)?;
        print!("{}", markdown(&records));
        write_atomic(&svg_path, plot(&records).as_bytes())?;
        eprintln!("mnfuzz hunt: plot redrawn: {}", svg_path.display());
        return Ok(ExitCode::SUCCESS);
    }
    if !cfg!(feature = "planted-bugs") {
        return Err(
            "hunt needs a build with the planted bugs: cargo mnfuzz-planted hunt ... \
             (or cargo run --release -p harness --features planted-bugs --bin mnfuzz -- hunt ...)"
                .into(),
        );
    }
    let bugs: Vec<PlantedBug> = match (&args.bug, args.all) {
        (Some(name), false) => vec![resolve_planted(name)?],
        (None, true) => every_bug().collect(),
        _ => return Err("hunt: give --bug NAME or --all".into()),
    };
    if args.trials == 0 || args.seconds.is_nan() || args.seconds <= 0.0 {
        return Err("hunt: --trials and --seconds must be positive".into());
    }
    if args.runs.is_some() && args.engine.external() {
        return Err("hunt: --runs is for the builtin and random engines".into());
    }
    let corpus = if args.seeds { "seeds" } else { "empty" };
    let command = std::iter::once("mnfuzz".to_string())
        .chain(std::env::args().skip(1))
        .collect::<Vec<_>>()
        .join(" ");
    warn_if_stale(&root);
    let machine = machine();
    let date = today();
    let revision = revision(&root);
    eprintln!(
        "mnfuzz hunt: engine {}, {} bug(s), {} trial(s) of at most {} s, {} corpus; machine: {machine}",
        args.engine.name(),
        bugs.len(),
        args.trials,
        args.seconds,
        corpus
    );

    // External engines: build each target once, with the bugs compiled in.
    let mut bins: BTreeMap<&'static str, External> = BTreeMap::new();
    if args.engine.external() {
        for &bug in &bugs {
            let t = target_of(bug);
            if !bins.contains_key(t.name()) {
                bins.insert(t.name(), build_external(args.engine, t, &root)?);
            }
        }
    }

    let mut records = Vec::new();
    for &bug in &bugs {
        let target = target_of(bug);
        let seeds = if args.seeds {
            seed_files(&root, target)?
        } else {
            Vec::new()
        };
        let mut trials = Vec::new();
        for i in 0..args.trials {
            let seed = args.first_seed + u64::from(i);
            let t = match args.engine {
                Engine::Builtin | Engine::Random => {
                    builtin_trial(&args, bug, target, seed, &seeds)?
                }
                e => {
                    let ext = &bins[target.name()];
                    external_trial(e, ext, &args, bug, target, seed, &seeds)?
                }
            };
            eprintln!(
                "mnfuzz hunt: {} {} trial {}: {}",
                args.engine.name(),
                bug.name(),
                i + 1,
                if t.detected {
                    format!(
                        "found in {} after {} execs ({}){}",
                        t.secs.map_or("?".into(), fmt_secs),
                        t.execs.map_or("?".into(), |n| n.to_string()),
                        t.divergence.as_deref().unwrap_or("?"),
                        t.note
                            .as_deref()
                            .map_or(String::new(), |n| format!("; {n}"))
                    )
                } else {
                    format!(
                        "not found in {:.1} s{}",
                        t.wall_secs,
                        t.note
                            .as_deref()
                            .map_or(String::new(), |n| format!(" ({n})"))
                    )
                }
            );
            trials.push(t);
        }
        records.push(Record {
            engine: args.engine,
            bug,
            target,
            corpus: corpus.into(),
            seconds: args.seconds,
            runs: args.runs,
            trials,
            machine: machine.clone(),
            command: command.clone(),
            date: date.clone(),
            revision: revision.clone(),
        });
    }

    print!("{}", table(&records));
    let false_alarms: usize = records
        .iter()
        .map(|r| r.trials.iter().filter(|t| t.false_alarm).count())
        .sum();
    if false_alarms > 0 {
        eprintln!(
            "mnfuzz hunt: FAILED: {false_alarms} finding(s) also diverge without the planted bug \
             (kept under {}). A divergence of the clean build is a bug to fix first; these \
             trials are not detections, and nothing was recorded.",
            false_alarm_dir().display()
        );
        return Ok(ExitCode::from(1));
    }
    if !args.no_save {
        let mut all = load(&json_path)?;
        all.retain(|r| {
            !records
                .iter()
                .any(|n| (n.engine, n.bug, &n.corpus) == (r.engine, r.bug, &r.corpus))
        });
        all.extend(records.iter().cloned());
        sort_records(&mut all);
        fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
        write_atomic(&json_path, to_json(&all).as_bytes())?;
        write_atomic(&svg_path, plot(&all).as_bytes())?;
        eprintln!(
            "mnfuzz hunt: results merged into {}; plot: {}",
            json_path.display(),
            svg_path.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Warns when a source file is newer than this binary: the external
/// engines are built from the current sources, and their crashes are
/// replayed by this binary.
fn warn_if_stale(root: &Path) {
    let built = std::env::current_exe()
        .and_then(fs::metadata)
        .and_then(|m| m.modified());
    let Ok(built) = built else {
        return;
    };
    let newer = ["harness", "notifier", "mm", "mirror", "oracles"]
        .iter()
        .filter_map(|c| program_files(&root.join(c).join("src")).ok())
        .flatten()
        .filter(|f| f.extension().is_some_and(|e| e == "rs"))
        .find(|f| {
            fs::metadata(f)
                .and_then(|m| m.modified())
                .is_ok_and(|t| t > built)
        });
    if let Some(f) = newer {
        eprintln!(
            "mnfuzz hunt: warning: {} is newer than this mnfuzz binary; rebuild it, or its \
             replays of the external engines' crashes may disagree with them",
            f.display()
        );
    }
}

fn sort_records(v: &mut [Record]) {
    let bug_ix = |b: PlantedBug| every_bug().position(|x| x == b);
    v.sort_by(|a, b| {
        (&a.corpus, bug_ix(a.bug), a.engine).cmp(&(&b.corpus, bug_ix(b.bug), b.engine))
    });
}

fn seed_files(root: &Path, target: Target) -> Result<Vec<PathBuf>, String> {
    let dir = root.join("corpus").join(target.name());
    Ok(program_files(&dir)?
        .into_iter()
        .filter(|f| f.extension().is_none_or(|e| e != "ops"))
        .filter(|f| fs::metadata(f).is_ok_and(|m| m.len() > 0))
        .collect())
}

fn builtin_trial(
    args: &HuntArgs,
    bug: PlantedBug,
    target: Target,
    seed: u64,
    seeds: &[PathBuf],
) -> Result<Trial, String> {
    let mut inputs = Vec::new();
    for f in seeds {
        inputs.push(fs::read(f).map_err(|e| format!("{}: {e}", f.display()))?);
    }
    // The same options as the bounded checks in harness/tests/differential.rs
    // (one job, default max_len); only the limits differ. Minimizing is not
    // part of finding.
    let opts = EngineOptions {
        target,
        seed,
        jobs: 1,
        runs: args.runs,
        seconds: Some(args.seconds),
        seeds: inputs,
        planted: Some(bug),
        feedback: args.engine == Engine::Builtin,
        progress: false,
        minimize_execs: 0,
        ..EngineOptions::default()
    };
    let rep = fuzz(&opts);
    let mut trial = Trial {
        seed: Some(seed),
        detected: false,
        secs: None,
        execs: None,
        wall_secs: rep.secs,
        divergence: None,
        note: Some(format!("{} execs, none divergent", rep.execs)),
        false_alarm: false,
    };
    if let Some(f) = rep.finding {
        trial.note = None;
        trial.secs = Some(f.secs_to_find);
        trial.execs = Some(f.execs_to_find);
        let p = decode_for(target, &f.input);
        let keep = false_alarm_dir();
        judge_into(
            &mut trial,
            &p,
            &f.input,
            bug,
            AS_ENGINES_RAN,
            args.engine,
            &keep,
        );
    }
    Ok(trial)
}

/// How every engine runs an input: expectations unchecked.
const AS_ENGINES_RAN: RunOptions = RunOptions {
    trace: false,
    planted: None,
    expect: false,
};

/// What a finding is worth.
#[derive(Clone, Debug, PartialEq)]
enum Verdict {
    /// Diverges with the bug and not without: a detection.
    Detected(DivergenceKind),
    /// Diverges without the bug too: the clean build fails it.
    FalseAlarm(DivergenceKind),
    /// Does not diverge with the bug.
    NoDivergence,
}

/// Replays `p` with `bug` planted and without it, otherwise as `base` says.
fn judge(p: &Program, bug: PlantedBug, base: RunOptions) -> Verdict {
    let with = RunOptions {
        planted: Some(bug),
        ..base
    };
    let without = RunOptions {
        planted: None,
        ..base
    };
    match (run(p, &with).divergence, run(p, &without).divergence) {
        (None, _) => Verdict::NoDivergence,
        (Some(_), Some(clean)) => Verdict::FalseAlarm(clean.kind),
        (Some(d), None) => Verdict::Detected(d.kind),
    }
}

/// Where false alarms are kept: under the repository's `target/`, so that
/// they survive the scratch directories and never dirty the tree.
fn false_alarm_dir() -> PathBuf {
    repo_root().join("target/hunt/false-alarms")
}

/// Judges a finding into `trial`: a detection, or a false alarm that is
/// kept in `keep` (bytes and `.ops`) and reported loudly. NoDivergence
/// leaves `trial` to the caller.
fn judge_into(
    trial: &mut Trial,
    p: &Program,
    bytes: &[u8],
    bug: PlantedBug,
    base: RunOptions,
    engine: Engine,
    keep: &Path,
) -> Verdict {
    let v = judge(p, bug, base);
    match &v {
        Verdict::Detected(kind) => {
            trial.detected = true;
            trial.divergence = Some(kind.name().into());
        }
        Verdict::FalseAlarm(kind) => {
            let kept = keep_false_alarm(p, bytes, engine, keep);
            mark_false_alarm(trial, &format!("{} without the bug; {kept}", kind.name()));
        }
        Verdict::NoDivergence => {}
    }
    v
}

fn mark_false_alarm(trial: &mut Trial, what: &str) {
    trial.detected = false;
    trial.false_alarm = true;
    trial.divergence = None;
    trial.secs = None;
    trial.execs = None;
    let msg = format!("FALSE ALARM: the finding also diverges on the clean build ({what})");
    eprintln!("mnfuzz hunt: {msg}");
    trial.note = Some(msg);
}

/// Writes a false alarm's input and its `.ops` into `dir`.
fn keep_false_alarm(p: &Program, bytes: &[u8], engine: Engine, dir: &Path) -> String {
    let stem = format!("{}-{:016x}", engine.name(), harness::files::fnv64(bytes));
    let ops = dir.join(format!("{stem}.ops"));
    let written = write_atomic(&dir.join(format!("{stem}.bin")), bytes).and_then(|()| {
        let body = match run(p, &AS_ENGINES_RAN).divergence {
            Some(d) => harness::report::regression_file(p, &d, &AS_ENGINES_RAN),
            None => harness::text::print(p),
        };
        write_atomic(&ops, body.as_bytes())
    });
    match written {
        Ok(()) => format!("kept as {}", ops.display()),
        Err(e) => format!("could not keep it: {e}"),
    }
}

/// A built external engine for one target.
struct External {
    /// The instrumented entry point.
    bin: PathBuf,
    /// honggfuzz's own binary.
    driver: Option<PathBuf>,
}

fn host_triple() -> Result<String, String> {
    let out = Command::new("rustc")
        .arg("-vV")
        .output()
        .map_err(|e| format!("rustc -vV: {e}"))?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_string))
        .ok_or_else(|| "rustc -vV: no host line".into())
}

/// Builds `fuzz/`'s entry point for `engine` with the planted bugs, into
/// `target/hunt/<engine>`.
fn build_external(engine: Engine, target: Target, root: &Path) -> Result<External, String> {
    let dir = root.join("target/hunt").join(engine.name());
    let triple = host_triple()?;
    let t = target.name();
    let (mut cmd, ext) = match engine {
        Engine::Libfuzzer => {
            let mut c = Command::new("cargo");
            c.current_dir(root.join("fuzz"))
                .args(["fuzz", "build", "-s", "none", "-a"])
                .args(["--features", "planted-bugs", "--target-dir"])
                .arg(&dir)
                .arg(t);
            let bin = dir.join(&triple).join("release").join(t);
            (c, External { bin, driver: None })
        }
        Engine::Afl => {
            let mut c = Command::new("cargo");
            c.current_dir(root.join("fuzz/afl"))
                .args(["afl", "build", "--release", "--features", "planted-bugs"])
                .args(["--bin", t, "--target-dir"])
                .arg(&dir);
            let bin = dir.join("release").join(t);
            (c, External { bin, driver: None })
        }
        Engine::Honggfuzz => {
            let mut c = Command::new("cargo");
            c.current_dir(root.join("fuzz/hfuzz"))
                .args(["hfuzz", "build"])
                .env("CARGO_TARGET_DIR", &dir)
                .env(
                    "HFUZZ_BUILD_ARGS",
                    format!("--features planted-bugs --bin {t}"),
                );
            let bin = dir.join(&triple).join("release").join(t);
            let driver = Some(dir.join("honggfuzz"));
            (c, External { bin, driver })
        }
        Engine::Builtin | Engine::Random => unreachable!("built in"),
    };
    if std::env::var_os("CARGO_BUILD_JOBS").is_none() {
        // The machine is shared: one rustc at a time.
        cmd.env("CARGO_BUILD_JOBS", "1");
    }
    eprintln!(
        "mnfuzz hunt: building {} {t} with planted-bugs into {}",
        engine.name(),
        dir.display()
    );
    let out = cmd
        .output()
        .map_err(|e| format!("{} build: {e} (see ci/install-fuzzers.sh)", engine.name()))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(30).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(format!(
            "{} build failed ({}):\n{}",
            engine.name(),
            out.status,
            tail.join("\n")
        ));
    }
    for p in std::iter::once(&ext.bin).chain(ext.driver.as_ref()) {
        if !p.is_file() {
            return Err(format!(
                "{} build: {} is missing",
                engine.name(),
                p.display()
            ));
        }
    }
    Ok(ext)
}

/// A scratch directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Result<Scratch, String> {
        let base = std::env::temp_dir();
        for n in 0..1000u32 {
            let p = base.join(format!("mnfuzz-hunt-{}-{tag}-{n}", std::process::id()));
            if fs::create_dir(&p).is_ok() {
                return Ok(Scratch(p));
            }
        }
        Err(format!(
            "cannot make a scratch directory in {}",
            base.display()
        ))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Runs `cmd` in its own process group with its output in `log`; kills the
/// group if it outlives `limit`. Returns the status (None if killed), the
/// wall seconds and the time it started.
fn run_limited(
    cmd: Command,
    log: &Path,
    limit: Duration,
) -> Result<(Option<ExitStatus>, f64, SystemTime), String> {
    run_limited_stdin(cmd, Stdio::null(), log, limit)
}

/// [`run_limited`] with `stdin`.
fn run_limited_stdin(
    mut cmd: Command,
    stdin: impl Into<Stdio>,
    log: &Path,
    limit: Duration,
) -> Result<(Option<ExitStatus>, f64, SystemTime), String> {
    let f = fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
    let f2 = f.try_clone().map_err(|e| e.to_string())?;
    cmd.stdin(stdin)
        .stdout(f)
        .stderr(f2)
        .process_group(0)
        .env("RUST_BACKTRACE", "0");
    let start = Instant::now();
    let started = SystemTime::now();
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("{:?}: {e}", cmd.get_program()))?;
    loop {
        if let Some(st) = child.try_wait().map_err(|e| e.to_string())? {
            return Ok((Some(st), start.elapsed().as_secs_f64(), started));
        }
        if start.elapsed() > limit {
            // Our own child's process group, by id.
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .status();
            let _ = child.kill();
            let _ = child.wait();
            return Ok((None, start.elapsed().as_secs_f64(), started));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    v.retain(|p| p.is_file());
    v.sort();
    v
}

/// `key:value` out of a `key: value` stats line.
fn stat_line<'a>(log: &'a str, key: &str) -> Option<&'a str> {
    log.lines()
        .rev()
        .find_map(|l| l.strip_prefix(key)?.trim_start().strip_prefix(':'))
        .map(str::trim)
}

/// `key:N` inside an AFL++ file name such as `id:000000,sig:06,time:190,execs:5423`.
fn afl_field(name: &str, key: &str) -> Option<u64> {
    name.split(',')
        .find_map(|f| f.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.parse().ok())
}

/// The divergence kind of the harness report in an engine's output, if
/// the report names `planted` as planted (`none` for `None`).
fn engine_report(log: &str, planted: Option<PlantedBug>) -> Option<String> {
    let at = log.find("==== mnfuzz: divergence (")?;
    let rest = &log[at + "==== mnfuzz: divergence (".len()..];
    let kind = rest.split(')').next()?.to_string();
    let named = rest.lines().nth(1)?.split("planted: ").nth(1)?.trim();
    (named == planted.map_or("none", |b| b.name())).then_some(kind)
}

fn external_trial(
    engine: Engine,
    ext: &External,
    args: &HuntArgs,
    bug: PlantedBug,
    target: Target,
    seed: u64,
    seeds: &[PathBuf],
) -> Result<Trial, String> {
    let scratch = Scratch::new(engine.name())?;
    let w = &scratch.0;
    let corpus = w.join("corpus");
    let found_dir = w.join("found");
    for d in [&corpus, &found_dir] {
        fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    // A copy: engines write into their corpus directory.
    for (i, f) in seeds.iter().enumerate() {
        let name = f.file_name().map(|n| n.to_string_lossy().into_owned());
        let dst = corpus.join(format!("seed-{i}-{}", name.unwrap_or_default()));
        fs::copy(f, &dst).map_err(|e| format!("{}: {e}", f.display()))?;
    }
    // AFL++ refuses an empty input directory: one neutral 1-byte seed, as
    // ci/engine-smoke.sh does.
    if seeds.is_empty() && engine == Engine::Afl {
        write_atomic(&corpus.join("empty"), b"\0")?;
    }
    let secs = args.seconds.ceil().max(1.0) as u64;
    let timeout = args.timeout.max(1);
    let log = w.join("log");
    let mut cmd;
    match engine {
        Engine::Libfuzzer => {
            cmd = Command::new(&ext.bin);
            cmd.arg(format!("-seed={seed}"))
                .arg(format!("-max_total_time={secs}"))
                .arg(format!("-timeout={timeout}"))
                .arg(format!("-artifact_prefix={}/", found_dir.display()))
                .arg("-print_final_stats=1")
                .arg(&corpus);
        }
        Engine::Afl => {
            cmd = Command::new("cargo");
            cmd.args(["afl", "fuzz", "-i"])
                .arg(&corpus)
                .arg("-o")
                .arg(&found_dir)
                .args(["-s", &seed.to_string(), "-V", &secs.to_string()])
                .args(["-t", &(timeout * 1000).to_string(), "--"])
                .arg(&ext.bin);
            // No tty, a shared CPU, maybe a core_pattern pipe: as in
            // ci/engine-smoke.sh. Stop at the first crash.
            for v in [
                "AFL_SKIP_CPUFREQ",
                "AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES",
                "AFL_NO_UI",
                "AFL_NO_AFFINITY",
                "AFL_FAST_CAL",
                "AFL_BENCH_UNTIL_CRASH",
                "AFL_NO_CRASH_README",
            ] {
                cmd.env(v, "1");
            }
        }
        Engine::Honggfuzz => {
            cmd = Command::new(ext.driver.as_ref().expect("built with its driver"));
            cmd.arg("-i")
                .arg(&corpus)
                .arg("-W")
                .arg(&found_dir)
                .args(["--run_time", &secs.to_string(), "-n", "1", "-v", "-Q"])
                .args(["-t", &timeout.to_string(), "-T", "--exit_upon_crash"])
                .args(["--exit_code_upon_crash", "99", "--"])
                .arg(&ext.bin);
        }
        Engine::Builtin | Engine::Random => unreachable!("built in"),
    }
    cmd.env("MNFUZZ_PLANTED_BUG", bug.name());
    let limit = Duration::from_secs(secs + 120);
    let (status, wall, started) = run_limited(cmd, &log, limit)?;
    // When a crash file was written, counted from the engine's start.
    let written = |p: &Path| -> f64 {
        fs::metadata(p)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(started).ok())
            .map_or(wall, |d| d.as_secs_f64().min(wall))
    };
    let text = String::from_utf8_lossy(&fs::read(&log).unwrap_or_default()).into_owned();

    let mut trial = Trial {
        seed: (engine != Engine::Honggfuzz).then_some(seed),
        detected: false,
        secs: None,
        execs: None,
        wall_secs: wall,
        divergence: None,
        note: None,
        false_alarm: false,
    };
    if status.is_none() {
        trial.note = Some(format!("killed after {wall:.0} s"));
    }
    // The crash file, and what the engine says about when it came.
    let crash: Option<PathBuf> = match engine {
        Engine::Libfuzzer => {
            let c = files_in(&found_dir).into_iter().next();
            if let Some(c) = &c {
                trial.secs = Some(written(c));
                trial.execs =
                    stat_line(&text, "stat::number_of_executed_units").and_then(|v| v.parse().ok());
            }
            c
        }
        Engine::Afl => {
            let d = found_dir.join("default");
            let mut crashes = files_in(&d.join("crashes"));
            crashes.extend(files_in(&d.join("hangs")));
            crashes.retain(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("id:"))
            });
            crashes.sort_by_key(|p| {
                let n = p.file_name().map(|n| n.to_string_lossy().into_owned());
                afl_field(&n.unwrap_or_default(), "time").unwrap_or(u64::MAX)
            });
            // A seed that crashes in the dry run comes first; AFL++ skips it
            // with a warning and fuzzes on.
            let skipped = text.lines().find_map(|l| {
                let (_, rest) = l.split_once("orig:")?;
                let (name, rest) = rest.split_once('\'')?;
                (rest.contains("results in a crash") || rest.contains("results in a timeout"))
                    .then(|| corpus.join(name))
            });
            if skipped.is_some() {
                // Its dry run logs neither a time nor a count.
                trial.note =
                    Some("a seed crashed in AFL++'s dry run, which logs no time or execs".into());
                skipped
            } else if let Some(c) = crashes.first() {
                let name = c.file_name().map(|n| n.to_string_lossy().into_owned());
                let name = name.unwrap_or_default();
                trial.secs = Some(afl_field(&name, "time").map_or(wall, |ms| ms as f64 / 1e3));
                trial.execs = afl_field(&name, "execs").or_else(|| {
                    let stats = fs::read_to_string(d.join("fuzzer_stats")).ok()?;
                    stat_line(&stats, "execs_done")?.parse().ok()
                });
                Some(c.clone())
            } else {
                None
            }
        }
        Engine::Honggfuzz => {
            let c = files_in(&found_dir)
                .into_iter()
                .find(|p| p.extension().is_some_and(|e| e == "fuzz"));
            if let Some(c) = &c {
                // honggfuzz notices the crash and exits on a one-second
                // tick: the crash file's time is the detection.
                trial.secs = Some(written(c));
                trial.execs = text.lines().rev().find_map(|l| {
                    let v = l.split_once("Summary iterations:")?.1;
                    v.split_whitespace().next()?.parse().ok()
                });
            }
            c
        }
        Engine::Builtin | Engine::Random => unreachable!("built in"),
    };
    let Some(crash) = crash else {
        trial.secs = None;
        if status.is_some_and(|s| !s.success()) && trial.note.is_none() {
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            return Err(format!(
                "{} exited with {} and no crash file; its log ends:\n{}",
                engine.name(),
                status.map_or("?".into(), |s| s.to_string()),
                tail.join("\n")
            ));
        }
        if trial.note.is_none() {
            trial.note = Some(format!("no crash in {secs} s"));
        }
        return Ok(trial);
    };
    // It counts only if it diverges here with the bug planted and passes
    // without it.
    let bytes = fs::read(&crash).map_err(|e| format!("{}: {e}", crash.display()))?;
    let p = decode_for(target, &bytes);
    let keep = false_alarm_dir();
    if judge_into(&mut trial, &p, &bytes, bug, AS_ENGINES_RAN, engine, &keep)
        != Verdict::NoDivergence
    {
        return Ok(trial);
    }
    // This binary does not reproduce it. If the engine's own build reports
    // a divergence with the bug planted, the two were built from different
    // sources: the engine's build then judges, replaying the input without
    // the bug as well.
    let name = crash.file_name().unwrap_or_default().to_string_lossy();
    let replay = |planted: Option<PlantedBug>, tag: &str| -> Result<Option<String>, String> {
        let mut c = Command::new(&ext.bin);
        match planted {
            Some(b) => c.env("MNFUZZ_PLANTED_BUG", b.name()),
            None => c.env_remove("MNFUZZ_PLANTED_BUG"),
        };
        let log = w.join(format!("replay-{tag}.log"));
        let limit = Duration::from_secs(timeout + 10);
        match engine {
            // afl-fuzz hides the target's stderr: outside afl-fuzz the
            // binary runs the one input on stdin.
            Engine::Afl => {
                let f = fs::File::open(&crash).map_err(|e| e.to_string())?;
                run_limited_stdin(c, f, &log, limit)?;
            }
            // A file argument: libFuzzer runs that one input.
            _ => {
                c.arg(&crash);
                run_limited(c, &log, limit)?;
            }
        }
        Ok(engine_report(
            &fs::read_to_string(&log).unwrap_or_default(),
            planted,
        ))
    };
    let report = match engine {
        Engine::Afl => replay(Some(bug), "with")?,
        _ => engine_report(&text, Some(bug)),
    };
    let Some(kind) = report else {
        trial.secs = None;
        trial.execs = None;
        trial.note = Some(format!(
            "its crash file {name} does not diverge (a hang or a harness exit?)"
        ));
        return Ok(trial);
    };
    eprintln!(
        "mnfuzz hunt: warning: {} and this mnfuzz disagree on {name}; \
         rebuild mnfuzz from the current sources",
        engine.name()
    );
    let differs = format!(
        "the engine's build reports the divergence but this mnfuzz binary does not \
         reproduce {name}: they were built from different sources"
    );
    // honggfuzz's binary only runs under honggfuzz: no clean replay.
    let clean = match engine {
        Engine::Honggfuzz => None,
        _ => Some(replay(None, "without")?),
    };
    match clean {
        Some(None) => {
            trial.detected = true;
            trial.divergence = Some(kind);
            trial.note = Some(format!(
                "{differs}; the engine's build passes it without the bug"
            ));
        }
        Some(Some(clean_kind)) => {
            let kept = keep_false_alarm(&p, &bytes, engine, &keep);
            mark_false_alarm(
                &mut trial,
                &format!("{clean_kind} without the bug, in the engine's build; {kept}"),
            );
        }
        None => {
            trial.secs = None;
            trial.execs = None;
            trial.note = Some(format!(
                "{differs}, and the engine's build cannot replay it without the bug: \
                 not counted"
            ));
        }
    }
    Ok(trial)
}

// ---------------------------------------------------------------- output

fn fmt_secs(s: f64) -> String {
    if !s.is_finite() {
        "-".into()
    } else if s < 1e-3 {
        format!("{:.0} µs", s * 1e6)
    } else if s < 1.0 {
        format!("{:.1} ms", s * 1e3)
    } else {
        format!("{s:.2} s")
    }
}

fn fmt_limit(v: f64, limit: &str) -> String {
    if v.is_nan() {
        "?".into()
    } else if v.is_finite() {
        fmt_secs(v)
    } else {
        format!(">{limit}")
    }
}

fn fmt_execs(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.0}")
    } else {
        "-".into()
    }
}

fn fmt_limit_secs(r: &Record) -> String {
    format!("{}s", r.seconds)
}

/// The text table a hunt prints.
fn table(records: &[Record]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<28} {:<9} {:<9} {:>5}  {:>10} {:>10} {:>10}  {:>10} {:>10} {:>10}",
        "bug", "engine", "target", "found", "median", "min", "max", "med.execs", "min", "max"
    );
    for r in records {
        let lim = fmt_limit_secs(r);
        let (tm, t0, t1) =
            r.times()
                .and_then(|v| stats(&v))
                .unwrap_or((f64::NAN, f64::NAN, f64::NAN));
        let (em, e0, e1) = r
            .execs()
            .and_then(|v| stats(&v))
            .map_or(("?".into(), "?".into(), "?".into()), |(a, b, c)| {
                (fmt_execs(a), fmt_execs(b), fmt_execs(c))
            });
        let _ = writeln!(
            s,
            "{:<28} {:<9} {:<9} {:>5}  {:>10} {:>10} {:>10}  {:>10} {:>10} {:>10}",
            r.bug.name(),
            r.engine.name(),
            r.target.name(),
            format!("{}/{}", r.detected(), r.trials.len()),
            fmt_limit(tm, &lim),
            fmt_limit(t0, &lim),
            fmt_limit(t1, &lim),
            em,
            e0,
            e1
        );
    }
    s
}

/// The README table: bugs down, engines across, empty corpus first.
fn markdown(records: &[Record]) -> String {
    let mut s = String::new();
    for corpus in ["empty", "seeds"] {
        let rs: Vec<&Record> = records.iter().filter(|r| r.corpus == corpus).collect();
        if rs.is_empty() {
            continue;
        }
        let engines: Vec<Engine> = Engine::ALL
            .into_iter()
            .filter(|e| rs.iter().any(|r| r.engine == *e))
            .collect();
        let _ = writeln!(
            s,
            "\n**{} corpus**: median time to first detection, median executions, detected/trials\n",
            if corpus == "empty" { "Empty" } else { "Seed" }
        );
        let _ = write!(s, "| planted bug | target |");
        for e in &engines {
            let _ = write!(s, " {} |", e.title());
        }
        let _ = write!(s, "\n|---|---|");
        for _ in &engines {
            let _ = write!(s, "---|");
        }
        s.push('\n');
        for bug in every_bug() {
            let Some(first) = rs.iter().find(|r| r.bug == bug) else {
                continue;
            };
            let _ = write!(s, "| `{}` | {} |", bug.name(), first.target.name());
            for e in &engines {
                let cell = rs.iter().find(|r| r.bug == bug && r.engine == *e).map_or(
                    "not run".to_string(),
                    |r| {
                        let lim = fmt_limit_secs(r);
                        let (tm, ..) =
                            r.times()
                                .and_then(|v| stats(&v))
                                .unwrap_or((f64::NAN, 0.0, 0.0));
                        let em = r.execs().and_then(|v| stats(&v)).map(|x| x.0);
                        let em = match em {
                            Some(v) if v.is_finite() => format!("{v:.0}"),
                            Some(_) => "-".into(),
                            None => "?".into(),
                        };
                        let found = format!("{}/{}", r.detected(), r.trials.len());
                        if r.detected() == 0 {
                            format!("**not found** ({found}, {lim} each)")
                        } else {
                            format!("{} · {em} · {found}", fmt_limit(tm, &lim))
                        }
                    },
                );
                let _ = write!(s, " {cell} |");
            }
            s.push('\n');
        }
        s.push('\n');
        for e in &engines {
            let r = rs.iter().find(|r| r.engine == *e).expect("listed");
            let _ = writeln!(
                s,
                "- {}: `{}` ({}; {})",
                e.title(),
                r.command,
                r.date,
                e.seed_note()
            );
        }
        let mut machines: Vec<&str> = rs.iter().map(|r| r.machine.as_str()).collect();
        machines.sort_unstable();
        machines.dedup();
        let _ = writeln!(s, "- machine: {}", machines.join("; "));
    }
    s
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Detection time per bug per engine: log-scale time, one row group per
/// bug, one mark per engine at the median with a min-max whisker. Misses
/// go to the right, past the axis, in the "not found" column.
fn plot(records: &[Record]) -> String {
    let rs: Vec<&Record> = records.iter().filter(|r| r.corpus == "empty").collect();
    let engines: Vec<Engine> = Engine::ALL
        .into_iter()
        .filter(|e| rs.iter().any(|r| r.engine == *e))
        .collect();
    let bugs: Vec<PlantedBug> = every_bug()
        .filter(|b| rs.iter().any(|r| r.bug == *b))
        .collect();
    let finite: Vec<f64> = rs
        .iter()
        .flat_map(|r| r.times().unwrap_or_default())
        .chain(rs.iter().map(|r| r.seconds))
        .filter(|t| t.is_finite())
        .map(|t| t.max(1e-6))
        .collect();
    let lo = finite
        .iter()
        .copied()
        .fold(f64::INFINITY, f64::min)
        .log10()
        .floor();
    let hi = finite.iter().copied().fold(0.0f64, f64::max).log10().ceil();
    let (lo, hi) = if lo.is_finite() && hi > lo {
        (lo, hi)
    } else {
        (-4.0, 2.0)
    };

    let (left, right, top) = (250.0, 830.0, 94.0);
    let miss_x = 905.0;
    let width = 960.0;
    let row = 11.0;
    let gap = 12.0;
    let group = row * engines.len().max(1) as f64 + gap;
    let height = top + group * bugs.len() as f64 + 50.0;
    let x_of = |t: f64| left + (t.max(1e-6).log10() - lo) / (hi - lo) * (right - left);

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        s,
        r#"<rect x="0" y="0" width="{width}" height="{height}" fill="white"/>"#
    );
    let trials: Vec<usize> = rs.iter().map(|r| r.trials.len()).collect();
    let (tmin, tmax) = (
        trials.iter().min().copied().unwrap_or(0),
        trials.iter().max().copied().unwrap_or(0),
    );
    let tr = if tmin == tmax {
        format!("{tmin}")
    } else {
        format!("{tmin}-{tmax}")
    };
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" font-size="15" font-weight="bold">Time to first detection of each planted bug (empty corpus)</text>"#,
        16
    );
    let _ = writeln!(
        s,
        r##"<text x="16" y="40" fill="#444">dot: median of {tr} trials; whisker: fastest to slowest trial; a hollow dot or a whisker into "not found": misses</text>"##
    );
    // Legend.
    let mut lx = left;
    for e in &engines {
        let _ = writeln!(
            s,
            r#"<circle cx="{lx}" cy="58" r="5" fill="{c}"/><text x="{}" y="62">{}</text>"#,
            lx + 9.0,
            e.title(),
            c = e.color()
        );
        lx += 110.0;
    }
    // Group backgrounds and labels.
    for (i, b) in bugs.iter().enumerate() {
        let y0 = top + group * i as f64;
        if i % 2 == 0 {
            let _ = writeln!(
                s,
                r##"<rect x="8" y="{}" width="{}" height="{}" fill="#f3f3f3"/>"##,
                y0 - gap / 2.0 + 2.0,
                width - 16.0,
                group
            );
        }
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
            left - 12.0,
            y0 + (group - gap) / 2.0 + 4.0,
            xml_escape(b.name())
        );
    }
    // Axis: decades, with gridlines.
    let bottom = top + group * bugs.len() as f64 - gap / 2.0;
    let mut d = lo as i32;
    while d as f64 <= hi {
        let x = x_of(10f64.powi(d));
        let label = match d {
            ..=-7 => format!("1e{d} s"),
            -6 => "1 µs".into(),
            -5 => "10 µs".into(),
            -4 => "100 µs".into(),
            -3 => "1 ms".into(),
            -2 => "10 ms".into(),
            -1 => "100 ms".into(),
            0 => "1 s".into(),
            1 => "10 s".into(),
            2 => "100 s".into(),
            _ => format!("1e{d} s"),
        };
        let _ = writeln!(
            s,
            r##"<line x1="{x}" y1="{}" x2="{x}" y2="{bottom}" stroke="#c8c8c8"/><text x="{x}" y="{}" text-anchor="middle">{label}</text>"##,
            top - 8.0,
            bottom + 16.0
        );
        d += 1;
    }
    let _ = writeln!(
        s,
        r##"<line x1="{miss_x}" y1="{}" x2="{miss_x}" y2="{bottom}" stroke="#c8c8c8" stroke-dasharray="3,3"/><text x="{miss_x}" y="{}" text-anchor="middle">not found</text>"##,
        top - 8.0,
        bottom + 16.0
    );
    // The time limit of a trial, when all records share it.
    let mut limits: Vec<f64> = rs.iter().map(|r| r.seconds).collect();
    limits.sort_by(f64::total_cmp);
    limits.dedup();
    if let [limit] = limits[..] {
        let x = x_of(limit);
        let _ = writeln!(
            s,
            r##"<line x1="{x}" y1="{}" x2="{x}" y2="{bottom}" stroke="#d62728" stroke-dasharray="5,3"/><text x="{}" y="{}" fill="#d62728">limit {limit} s</text>"##,
            top - 8.0,
            x + 4.0,
            top - 10.0
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">time to first detection (log scale)</text>"#,
        (left + right) / 2.0,
        bottom + 36.0
    );
    // Marks.
    for (i, b) in bugs.iter().enumerate() {
        let y0 = top + group * i as f64;
        for (j, e) in engines.iter().enumerate() {
            let y = y0 + row * j as f64 + row / 2.0;
            let Some(r) = rs.iter().find(|r| r.bug == *b && r.engine == *e) else {
                continue;
            };
            let Some((med, mn, mx)) = r.times().and_then(|v| stats(&v)) else {
                continue;
            };
            let px = |t: f64| if t.is_finite() { x_of(t) } else { miss_x };
            let c = e.color();
            let _ = writeln!(
                s,
                r#"<line x1="{}" y1="{y}" x2="{}" y2="{y}" stroke="{c}" stroke-width="1.5"/>"#,
                px(mn),
                px(mx)
            );
            for t in [mn, mx] {
                let _ = writeln!(
                    s,
                    r#"<line x1="{x}" y1="{}" x2="{x}" y2="{}" stroke="{c}" stroke-width="1.5"/>"#,
                    y - 3.0,
                    y + 3.0,
                    x = px(t)
                );
            }
            let title = format!(
                "{} / {}: {}/{} found, median {}",
                b.name(),
                e.title(),
                r.detected(),
                r.trials.len(),
                fmt_limit(med, &fmt_limit_secs(r))
            );
            if med.is_finite() {
                let _ = writeln!(
                    s,
                    r#"<circle cx="{}" cy="{y}" r="4" fill="{c}"><title>{}</title></circle>"#,
                    x_of(med),
                    xml_escape(&title)
                );
            } else {
                let _ = writeln!(
                    s,
                    r#"<circle cx="{miss_x}" cy="{y}" r="4" fill="white" stroke="{c}" stroke-width="1.5"><title>{}</title></circle>"#,
                    xml_escape(&title)
                );
            }
        }
    }
    s.push_str("</svg>\n");
    s
}

// ---------------------------------------------------------------- machine

fn machine() -> String {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
                .map(|(_, v)| v.split_whitespace().collect::<Vec<_>>().join(" "))
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            let kb: f64 = m
                .lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))?
                .split_whitespace()
                .next()?
                .parse()
                .ok()?;
            Some(format!("{:.0} GiB", kb / (1024.0 * 1024.0)))
        })
        .unwrap_or_else(|| "? GiB".into());
    let os = fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|o| {
            o.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim_matches('"').to_string())
        })
        .unwrap_or_else(|| std::env::consts::OS.into());
    let rustc = Command::new("rustc")
        .arg("--version")
        .output()
        .ok()
        .map(|o| {
            let v = String::from_utf8_lossy(&o.stdout);
            v.split_whitespace().take(2).collect::<Vec<_>>().join(" ")
        })
        .unwrap_or_else(|| "rustc ?".into());
    format!("{cpu}, {cores} cores (shared), {mem}, {os}, {rustc}, release build")
}

/// The sources' commit, `-dirty` if the work tree differs from it.
fn revision(root: &Path) -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(root)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match git(&["rev-parse", "--short", "HEAD"]) {
        Some(rev) => {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            format!("{rev}{}", if dirty { "-dirty" } else { "" })
        }
        None => "unknown".into(),
    }
}

/// Today (UTC) as YYYY-MM-DD.
fn today() -> String {
    let secs = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Days since 1970-01-01 to a proleptic Gregorian date (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

// ---------------------------------------------------------------- JSON
//
// results.json, read and written with serde. The summary fields (counts,
// medians, where the numbers come from) are written for readers of the
// file; reading takes only what they are computed from.

const ABOUT: &str = "mnfuzz hunt: time and executions to the first detection of each planted bug, \
    per engine. A missed trial has detected=false and null secs/execs; medians count misses as \
    infinite (null when the median is a miss). Written by `mnfuzz hunt`; see README.md.";

#[derive(Serialize, Deserialize)]
struct ResultsFile {
    about: String,
    records: Vec<RecordJson>,
}

#[derive(Serialize, Deserialize)]
struct RecordJson {
    engine: String,
    bug: String,
    #[serde(default, skip_deserializing)]
    component: String,
    target: String,
    corpus: String,
    seconds_per_trial: f64,
    runs_per_trial: Option<u64>,
    #[serde(default, skip_deserializing)]
    trials: usize,
    #[serde(default, skip_deserializing)]
    detected: usize,
    #[serde(default, skip_deserializing)]
    median_secs: Option<f64>,
    #[serde(default, skip_deserializing)]
    min_secs: Option<f64>,
    #[serde(default, skip_deserializing)]
    max_secs: Option<f64>,
    #[serde(default, skip_deserializing)]
    median_execs: Option<f64>,
    #[serde(default, skip_deserializing)]
    min_execs: Option<f64>,
    #[serde(default, skip_deserializing)]
    max_execs: Option<f64>,
    #[serde(default, skip_deserializing)]
    execs_source: String,
    #[serde(default, skip_deserializing)]
    time_source: String,
    #[serde(default, skip_deserializing)]
    seeds: String,
    machine: String,
    command: String,
    date: String,
    #[serde(default = "unknown")]
    revision: String,
    runs: Vec<TrialJson>,
}

fn unknown() -> String {
    "unknown".into()
}

#[derive(Serialize, Deserialize)]
struct TrialJson {
    seed: Option<u64>,
    detected: bool,
    secs: Option<f64>,
    execs: Option<u64>,
    #[serde(default)]
    wall_secs: f64,
    divergence: Option<String>,
    note: Option<String>,
}

fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

fn to_json(records: &[Record]) -> String {
    let fin = |x: f64| x.is_finite().then_some(x);
    let records = records
        .iter()
        .map(|r| {
            let t = r.times().and_then(|v| stats(&v));
            let e = r.execs().and_then(|v| stats(&v));
            RecordJson {
                engine: r.engine.name().into(),
                bug: r.bug.name().into(),
                component: component_name(r.bug.component()).into(),
                target: r.target.name().into(),
                corpus: r.corpus.clone(),
                seconds_per_trial: r.seconds,
                runs_per_trial: r.runs,
                trials: r.trials.len(),
                detected: r.detected(),
                median_secs: t.and_then(|t| fin(round6(t.0))),
                min_secs: t.and_then(|t| fin(round6(t.1))),
                max_secs: t.and_then(|t| fin(round6(t.2))),
                median_execs: e.and_then(|e| fin(e.0)),
                min_execs: e.and_then(|e| fin(e.1)),
                max_execs: e.and_then(|e| fin(e.2)),
                execs_source: r.engine.execs_source().into(),
                time_source: r.engine.time_source().into(),
                seeds: r.engine.seed_note().into(),
                machine: r.machine.clone(),
                command: r.command.clone(),
                date: r.date.clone(),
                revision: r.revision.clone(),
                runs: r
                    .trials
                    .iter()
                    .map(|t| TrialJson {
                        seed: t.seed,
                        detected: t.detected,
                        secs: t.secs.map(round6),
                        execs: t.execs,
                        wall_secs: round6(t.wall_secs),
                        divergence: t.divergence.clone(),
                        note: t.note.clone(),
                    })
                    .collect(),
            }
        })
        .collect();
    let file = ResultsFile {
        about: ABOUT.into(),
        records,
    };
    let mut out = serde_json::to_string_pretty(&file).expect("plain data serializes");
    out.push('\n');
    out
}

fn load(path: &Path) -> Result<Vec<Record>, String> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    from_json(&text).map_err(|e| format!("{}: {e}", path.display()))
}

fn from_json(text: &str) -> Result<Vec<Record>, String> {
    let file: ResultsFile = serde_json::from_str(text).map_err(|e| e.to_string())?;
    file.records
        .into_iter()
        .map(|r| {
            let unknown = |what: &str, name: &str| format!("unknown {what} `{name}`");
            Ok(Record {
                engine: Engine::from_name(&r.engine).ok_or_else(|| unknown("engine", &r.engine))?,
                bug: PlantedBug::from_name(&r.bug).ok_or_else(|| unknown("bug", &r.bug))?,
                target: Target::from_name(&r.target).ok_or_else(|| unknown("target", &r.target))?,
                corpus: r.corpus,
                seconds: r.seconds_per_trial,
                runs: r.runs_per_trial,
                trials: r
                    .runs
                    .into_iter()
                    .map(|t| Trial {
                        seed: t.seed,
                        detected: t.detected,
                        secs: t.secs,
                        execs: t.execs,
                        wall_secs: t.wall_secs,
                        divergence: t.divergence,
                        note: t.note,
                        false_alarm: false,
                    })
                    .collect(),
                machine: r.machine,
                command: r.command,
                date: r.date,
                revision: r.revision,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(engine: Engine, bug: PlantedBug, times: &[Option<f64>]) -> Record {
        Record {
            engine,
            bug,
            target: target_of(bug),
            corpus: "empty".into(),
            seconds: 30.0,
            runs: None,
            trials: times
                .iter()
                .enumerate()
                .map(|(i, t)| Trial {
                    seed: Some(i as u64 + 1),
                    detected: t.is_some(),
                    secs: *t,
                    execs: t.map(|s| (s * 1e4) as u64),
                    wall_secs: t.unwrap_or(30.0),
                    divergence: t.map(|_| "callbacks".into()),
                    note: t.is_none().then(|| "no crash in 30 s \"quoted\"\n".into()),
                    false_alarm: false,
                })
                .collect(),
            machine: "test machine".into(),
            command: "mnfuzz hunt --all".into(),
            date: "2026-01-02".into(),
            revision: "abc1234-dirty".into(),
        }
    }

    #[test]
    fn medians_count_misses_as_infinite() {
        assert_eq!(stats(&[3.0, 1.0, 2.0]), Some((2.0, 1.0, 3.0)));
        let (m, lo, hi) = stats(&[1.0, f64::INFINITY, f64::INFINITY]).unwrap();
        assert!(m.is_infinite() && hi.is_infinite());
        assert_eq!(lo, 1.0);
        assert_eq!(stats(&[1.0, 3.0]), Some((2.0, 1.0, 3.0)));
        assert_eq!(stats(&[]), None);
        let mut r = record(Engine::Afl, PlantedBug::ReleaseTwice, &[Some(1.0), None]);
        assert_eq!(r.times(), Some(vec![1.0, f64::INFINITY]));
        // A detection without a time (AFL++'s dry run) makes the times unknown.
        r.trials[0].secs = None;
        assert_eq!(r.times(), None);
        assert!(table(&[r]).contains('?'));
    }

    #[test]
    fn results_json_round_trips() {
        let rs = vec![
            record(
                Engine::Afl,
                PlantedBug::ReleaseTwice,
                &[Some(0.25), None, Some(1.5)],
            ),
            record(Engine::Random, PlantedBug::OwnerSkipWrong, &[None]),
        ];
        let text = to_json(&rs);
        assert_eq!(from_json(&text).unwrap(), rs);
        // And it is JSON another reader accepts: balanced, no NaN/inf.
        assert!(!text.contains(": inf") && !text.contains(": NaN"));
    }

    #[test]
    fn plot_and_tables_cover_every_record() {
        let rs: Vec<Record> = PlantedBug::ALL
            .into_iter()
            .flat_map(|b| {
                Engine::ALL
                    .into_iter()
                    .map(move |e| record(e, b, &[Some(1e-4), Some(0.02), None]))
            })
            .collect();
        let svg = plot(&rs);
        assert_eq!(
            svg.matches("<circle").count(),
            rs.len() + Engine::ALL.len(),
            "one mark per record, plus the legend"
        );
        assert!(svg.ends_with("</svg>\n"));
        let md = markdown(&rs);
        for b in PlantedBug::ALL {
            assert!(md.contains(b.name()));
        }
        assert!(table(&rs).lines().count() == rs.len() + 1);
    }

    /// Every planted reproducer under corpus/regressions/mirror/, with the
    /// bug it names.
    #[cfg(feature = "planted-bugs")]
    fn planted_reproducers() -> Vec<(PathBuf, PlantedBug, Program)> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../corpus/regressions/mirror");
        let mut v = Vec::new();
        for f in program_files(&dir).expect("the regressions are readable") {
            let text = fs::read_to_string(&f).expect("readable");
            let Some(name) = text.lines().find_map(|l| l.strip_prefix("# planted:")) else {
                continue;
            };
            let bug = resolve_planted(name.trim()).expect("a known planted bug");
            let p = harness::text::parse(&text).expect("a valid regression");
            v.push((f, bug, p));
        }
        v
    }

    /// A finding counts only if the clean build passes it. The clean
    /// divergence here is honest: an `expect` line that no build meets,
    /// checked as the finding was run (expectations on), so it diverges
    /// with and without the bug.
    #[cfg(feature = "planted-bugs")]
    #[test]
    fn a_finding_that_also_diverges_without_the_bug_is_no_detection() {
        let checked = RunOptions {
            expect: true,
            ..AS_ENGINES_RAN
        };
        let keep = Scratch::new("test-false-alarm").expect("scratch");
        let reproducers = planted_reproducers();
        assert!(reproducers.len() >= 3, "too few planted reproducers");
        let trial = || Trial {
            seed: Some(1),
            detected: false,
            secs: Some(0.5),
            execs: Some(100),
            wall_secs: 1.0,
            divergence: None,
            note: None,
            false_alarm: false,
        };
        for (f, bug, p) in reproducers {
            let bytes = harness::codec::encode(&p);
            let mut t = trial();
            let v = judge_into(&mut t, &p, &bytes, bug, checked, Engine::Builtin, &keep.0);
            assert!(matches!(v, Verdict::Detected(_)), "{}: {v:?}", f.display());
            assert!(t.detected && !t.false_alarm && t.execs == Some(100));

            // Its first step, then an expectation that it was skipped.
            let mut bad = p.clone();
            let t0 = bad.steps[0].thread;
            let expect = harness::text::parse(&format!(
                "config target=mirror threads={}\nt{t0} expect skipped",
                p.config.threads
            ))
            .expect("an expect line");
            bad.steps.insert(1, expect.steps[0]);
            let bytes = harness::codec::encode(&bad);
            let mut t = trial();
            let v = judge_into(&mut t, &bad, &bytes, bug, checked, Engine::Builtin, &keep.0);
            assert_eq!(
                v,
                Verdict::FalseAlarm(DivergenceKind::Expect),
                "{}",
                f.display()
            );
            assert!(!t.detected && t.false_alarm, "{t:?}");
            assert_eq!((t.secs, t.execs, &t.divergence), (None, None, &None));
            assert!(t.note.as_deref().is_some_and(|n| n.contains("FALSE ALARM")));
            // Kept, and the kept .ops diverges on the clean build.
            let stem = format!("builtin-{:016x}", harness::files::fnv64(&bytes));
            let ops = keep.0.join(format!("{stem}.ops"));
            let kept = harness::files::load_program(&ops, Target::Mirror).expect("kept .ops");
            assert!(run(&kept, &checked).divergence.is_some());
            assert_eq!(
                fs::read(keep.0.join(format!("{stem}.bin"))).ok(),
                Some(bytes)
            );

            // Without the finding's bug planted, nothing diverges.
            let clean =
                harness::text::parse(&fs::read_to_string(&f).expect("readable")).expect("valid");
            let other = PlantedBug::ALL.into_iter().find(|&b| {
                b != bug
                    && run(
                        &clean,
                        &RunOptions {
                            planted: Some(b),
                            ..checked
                        },
                    )
                    .divergence
                    .is_none()
            });
            if let Some(other) = other {
                let mut t = trial();
                let v = judge_into(
                    &mut t,
                    &clean,
                    &[],
                    other,
                    checked,
                    Engine::Builtin,
                    &keep.0,
                );
                assert_eq!(v, Verdict::NoDivergence);
                assert!(!t.detected && !t.false_alarm);
            }
        }
    }

    #[test]
    fn engine_output_parsing() {
        let name = "id:000000,sig:06,src:000000,time:190,execs:5423,op:havoc,rep:7";
        assert_eq!(afl_field(name, "time"), Some(190));
        assert_eq!(afl_field(name, "execs"), Some(5423));
        let log = "stat::number_of_executed_units: 281\nstat::average_exec_per_sec:     0\n";
        assert_eq!(
            stat_line(log, "stat::number_of_executed_units"),
            Some("281")
        );
        assert_eq!(
            stat_line("execs_done        : 5528\n", "execs_done"),
            Some("5528")
        );
        let report = "noise\n==== mnfuzz: divergence (stale-pte) ====\ntarget: mirror   planted: mm-fork-no-invalidate\n";
        assert_eq!(
            engine_report(report, Some(PlantedBug::ForkNoInvalidate)),
            Some("stale-pte".into())
        );
        assert_eq!(engine_report(report, Some(PlantedBug::ReleaseTwice)), None);
        assert_eq!(engine_report(report, None), None);
        let clean = report.replace("mm-fork-no-invalidate", "none");
        assert_eq!(engine_report(&clean, None), Some("stale-pte".into()));
        assert_eq!(
            engine_report("no report", Some(PlantedBug::ReleaseTwice)),
            None
        );
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
    }
}
