//! The command line, as a library: `mnfuzz` adds `hunt` to it, and a
//! crate with strategies of its own gets the whole tool by registering
//! them and calling [`main`]. Exit codes: 0 clean, 1 divergence found, 2
//! bad input or usage.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::engine::{fuzz, EngineOptions};
use crate::exec::{run, RunOptions};
use crate::files::{load_program, program_files, write_atomic, write_regression};
use crate::minimize::Minimizer;
use crate::pin::DevicePin;
use crate::program::Target;
use crate::targets::resolve_planted;
use crate::{codec, report, text};

#[derive(Parser)]
#[command(
    name = "mnfuzz",
    version,
    about = "Fuzzing and differential testing of mmu interval notifiers"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

/// Runs the command line of this process's arguments: every command but
/// `hunt`, with every strategy registered so far (built-in ones and those
/// of [`mirror::strategy::register`]).
///
/// ```no_run
/// fn main() -> std::process::ExitCode {
///     // mirror::strategy::register(my_strategy::KIND).unwrap();
///     harness::cli::main()
/// }
/// ```
pub fn main() -> ExitCode {
    // The linux target's child processes start as this binary.
    crate::linux::zygote_main_if_requested();
    exit(run_cmd(Cli::parse().cmd))
}

/// The process's exit code for a command's result (2 and the message on
/// stderr for an error).
pub fn exit(r: Result<ExitCode, String>) -> ExitCode {
    match r {
        Ok(code) => code,
        Err(msg) => {
            eprintln!("mnfuzz: {msg}");
            ExitCode::from(2)
        }
    }
}

/// `--os-threads`: only for the threads target; sets the process's mode.
fn os_threads_of(hang_ms: Option<u64>, target: Target) -> Result<(), String> {
    let Some(ms) = hang_ms else {
        return Ok(());
    };
    if target != Target::Threads {
        return Err("--os-threads applies to the threads target only".into());
    }
    crate::threads::exec::set_os_threads(ms.max(1));
    Ok(())
}

/// The commands every build has.
#[derive(Subcommand)]
pub enum Cmd {
    /// Run the built-in engine on a target.
    Fuzz {
        /// The target to fuzz.
        #[arg(long, default_value = "notifier")]
        target: String,
        /// Parallel jobs.
        #[arg(long, default_value_t = 1)]
        jobs: usize,
        /// Seed of every random choice.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Stop after this many seconds.
        #[arg(long)]
        seconds: Option<f64>,
        /// Stop after this many executions.
        #[arg(long)]
        runs: Option<u64>,
        /// Seed corpus directory (default: corpus/<target>).
        #[arg(long)]
        corpus: Option<PathBuf>,
        /// Where findings go (default: corpus/regressions/<target>).
        #[arg(long)]
        regressions: Option<PathBuf>,
        /// Planted bug to enable (needs --features planted-bugs).
        #[arg(long, env = "MNFUZZ_PLANTED_BUG")]
        planted: Option<String>,
        /// Longest generated input, in bytes.
        #[arg(long, default_value_t = 256)]
        max_len: usize,
        /// Plain random generation: no feedback, no mutation.
        #[arg(long)]
        no_feedback: bool,
        /// No live statistics.
        #[arg(long)]
        no_progress: bool,
        /// Executions the minimizer may spend on a finding.
        #[arg(long, default_value_t = 50_000)]
        minimize_execs: u64,
        /// Notifier target: inputs may turn on `kernel_compat` (the core
        /// leaves the interval part hanging when a classic subscriber
        /// refuses, as Linux does), so findings show what that leads to.
        #[arg(long)]
        kernel_compat: bool,
        /// Mirror target: every device gets this strategy, whatever the
        /// input asks for; given twice, `d0` gets the first and `d1` the
        /// second (a name as in `.ops` files; a sized kind alone means its
        /// default size).
        #[arg(long)]
        strategy: Vec<String>,
        /// Threads target: run on real OS threads instead of shuttle's
        /// controlled scheduler (a soak of the real interleavings: no
        /// schedule seed, not replayable), with a watchdog that reports a
        /// run in which no thread takes a step for HANG_MS milliseconds as
        /// a deadlock (default 2000).
        #[arg(long, value_name = "HANG_MS", num_args = 0..=1, default_missing_value = "2000")]
        os_threads: Option<u64>,
    },
    /// The real Linux kernel as an oracle: the built-in engine on the
    /// `linux` target (the mm ops of mirror programs on the simulated mm
    /// and on a real child process, compared after every op). Needs root
    /// and userfaultfd; exits 2 saying which the kernel refused.
    Conform {
        /// Stop after this many seconds.
        #[arg(long, default_value_t = 60.0)]
        seconds: f64,
        /// Stop after this many executions.
        #[arg(long)]
        runs: Option<u64>,
        /// Seed of every random choice.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Parallel jobs (each has its own child processes).
        #[arg(long, default_value_t = 1)]
        jobs: usize,
        /// Seed corpus directory (default: corpus/linux, and the mirror
        /// seeds of corpus/mirror, which decode as linux programs; with
        /// `--devices kvm`, corpus/kvm first).
        #[arg(long)]
        corpus: Option<PathBuf>,
        /// Where findings go (default: corpus/regressions/linux, or
        /// corpus/regressions/kvm with `--devices kvm`).
        #[arg(long)]
        regressions: Option<PathBuf>,
        /// No live statistics.
        #[arg(long)]
        no_progress: bool,
        /// Executions the minimizer may spend on a finding.
        #[arg(long, default_value_t = 5_000)]
        minimize_execs: u64,
        /// Real devices as well: `kvm` runs the kvm target (KVM guests
        /// over the child's window as device mirrors; needs /dev/kvm).
        #[arg(long)]
        devices: Option<String>,
    },
    /// Replay `.ops` files and byte inputs (files or directories).
    Replay {
        /// Files or directories.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Target for byte inputs.
        #[arg(long, default_value = "notifier")]
        target: String,
        /// Planted bug to enable.
        #[arg(long, env = "MNFUZZ_PLANTED_BUG")]
        planted: Option<String>,
        /// Print the trace of every input, not only of divergent ones.
        #[arg(long)]
        verbose: bool,
        /// Threads target: run on real OS threads instead of shuttle's
        /// controlled scheduler (a soak of the real interleavings: no
        /// schedule seed, not replayable), with a watchdog that reports a
        /// run in which no thread takes a step for HANG_MS milliseconds as
        /// a deadlock (default 2000).
        #[arg(long, value_name = "HANG_MS", num_args = 0..=1, default_missing_value = "2000")]
        os_threads: Option<u64>,
    },
    /// Minimize a divergent input and print it as `.ops`.
    Minimize {
        /// The input (`.ops` or bytes).
        path: PathBuf,
        /// Target for byte inputs.
        #[arg(long, default_value = "notifier")]
        target: String,
        /// Planted bug to enable.
        #[arg(long, env = "MNFUZZ_PLANTED_BUG")]
        planted: Option<String>,
        /// Write the result here (atomically) instead of stdout.
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Executions the minimizer may spend.
        #[arg(long, default_value_t = 200_000)]
        max_execs: u64,
    },
    /// Print a byte input decoded as `.ops`.
    Explain {
        /// The byte input.
        path: PathBuf,
        /// Target to decode for.
        #[arg(long, default_value = "notifier")]
        target: String,
    },
    /// Encode an `.ops` file as bytes, e.g. to add it to a seed corpus.
    Encode {
        /// The `.ops` file.
        path: PathBuf,
        /// Output file.
        #[arg(short, long)]
        output: PathBuf,
    },
    /// List the planted bugs this build knows.
    Planted,
    /// List the mirror strategies: built-in and registered ones.
    Strategies,
    /// Measure each target's execs/s with the built-in engine (one job).
    Bench(crate::bench::BenchArgs),
    /// What each strategy costs on named workloads (issue 16): a table,
    /// JSON and SVG plots under bench/cost/.
    Cost(crate::cost::CostArgs),
    /// Every target and mirror strategy (and pair), many seeds, corpus off
    /// and on, on all cores; a table, and exit 1 on any divergence.
    Soak(crate::soak::SoakArgs),
    /// State coverage: run the built-in engine (one job, empty corpus) and
    /// print which combinations of state dimensions its executions
    /// reached, how often, and which configuration pairs never ran.
    Reach {
        /// notifier or mirror.
        #[arg(long, default_value = "mirror")]
        target: String,
        /// Stop after this many seconds.
        #[arg(long)]
        seconds: Option<f64>,
        /// Stop after this many executions (with neither: 10,000).
        #[arg(long)]
        runs: Option<u64>,
        /// Seed of every random choice.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

fn target_of(name: &str) -> Result<Target, String> {
    Target::from_name(name).ok_or_else(|| format!("unknown target '{name}'"))
}

fn planted_of(name: Option<&str>) -> Result<Option<notifier::PlantedBug>, String> {
    name.filter(|n| !n.is_empty())
        .map(resolve_planted)
        .transpose()
}

/// The pin of `--strategy` options: none, one for every device, or one
/// per device.
pub fn pin_of(names: &[String]) -> Result<Option<DevicePin>, String> {
    let spec = |n: &String| {
        mirror::StrategySpec::from_arg(n).ok_or_else(|| {
            let all: Vec<&str> = mirror::strategy::kinds().iter().map(|k| k.name).collect();
            format!(
                "unknown strategy '{n}' (known: {}; add @twopass for two-pass TLB flushes)",
                all.join(", ")
            )
        })
    };
    match names {
        [] => Ok(None),
        [a] => Ok(Some(DevicePin::single(spec(a)?))),
        [a, b] => Ok(Some(DevicePin::pair(spec(a)?, spec(b)?))),
        _ => Err("--strategy: at most two (one per device)".into()),
    }
}

/// Runs one command.
pub fn run_cmd(cmd: Cmd) -> Result<ExitCode, String> {
    match cmd {
        Cmd::Conform {
            seconds,
            runs,
            seed,
            jobs,
            corpus,
            regressions,
            no_progress,
            minimize_execs,
            devices,
        } => run_cmd(Cmd::Fuzz {
            target: match devices.as_deref() {
                None | Some("") => Target::Linux.name().into(),
                Some("kvm") => Target::Kvm.name().into(),
                Some(other) => {
                    return Err(format!("--devices: unknown device '{other}' (known: kvm)"))
                }
            },
            jobs,
            seed,
            seconds: Some(seconds),
            runs,
            corpus,
            regressions,
            planted: None,
            max_len: 256,
            no_feedback: false,
            no_progress,
            minimize_execs,
            kernel_compat: false,
            strategy: Vec::new(),
            os_threads: None,
        }),
        Cmd::Fuzz {
            target,
            jobs,
            seed,
            seconds,
            runs,
            corpus,
            regressions,
            planted,
            max_len,
            no_feedback,
            no_progress,
            minimize_execs,
            kernel_compat,
            strategy,
            os_threads,
        } => {
            let target = target_of(&target)?;
            os_threads_of(os_threads, target)?;
            let planted = planted_of(planted.as_deref())?;
            let pin = pin_of(&strategy)?;
            if pin.is_some() && target != Target::Mirror {
                return Err("--strategy applies to the mirror target only".into());
            }
            if kernel_compat && target != Target::Notifier {
                return Err("--kernel-compat applies to the notifier target only".into());
            }
            if target == Target::Linux {
                crate::linux::probe()
                    .map_err(|e| format!("the linux target cannot run here: {e}"))?;
            }
            if target == Target::Kvm {
                crate::linux::probe_kvm()
                    .map_err(|e| format!("the kvm target cannot run here: {e}"))?;
            }
            let regressions =
                regressions.unwrap_or_else(|| Path::new("corpus/regressions").join(target.name()));
            let seeds = match corpus {
                Some(c) => crate::files::seed_inputs(&c)?,
                // Mirror inputs decode as linux (and kvm) programs of the
                // same shape.
                None if target.real() => {
                    let mut v = Vec::new();
                    let dirs: &[&str] = match target {
                        Target::Kvm => &["corpus/kvm", "corpus/linux", "corpus/mirror"],
                        _ => &["corpus/linux", "corpus/mirror"],
                    };
                    for &dir in dirs {
                        if Path::new(dir).is_dir() {
                            v.extend(crate::files::seed_inputs(Path::new(dir))?);
                        }
                    }
                    v
                }
                None => crate::files::seed_inputs(&Path::new("corpus").join(target.name()))?,
            };
            eprintln!(
                "mnfuzz: fuzzing {} with seed {seed}, {jobs} job(s), {} seed input(s){}{}",
                target.name(),
                seeds.len(),
                pin.map_or(String::new(), |p| format!(", strategies {}", p.name())),
                planted.map_or(String::new(), |b| format!(", planted bug {}", b.name()))
            );
            let opts = EngineOptions {
                target,
                seed,
                jobs,
                runs,
                seconds,
                seeds,
                planted,
                max_len,
                feedback: !no_feedback,
                progress: !no_progress,
                minimize_execs,
                pin,
                kernel_compat,
            };
            let rep = fuzz(&opts);
            eprintln!("mnfuzz: {}", rep.summary(target));
            let Some(f) = rep.finding else {
                return Ok(ExitCode::SUCCESS);
            };
            // As the engine ran it: expectations unchecked.
            let run_opts = RunOptions {
                trace: false,
                planted,
                expect: false,
            };
            let path = write_regression(&regressions, &f.minimized, &f.divergence, &run_opts)?;
            if let Some(r) = report::render(&f.minimized, &run_opts) {
                println!("{r}");
            }
            eprintln!(
                "mnfuzz: divergence after {} execs ({:.1} ms); minimized {} -> {} steps; written to {}",
                f.execs_to_find,
                f.secs_to_find * 1e3,
                f.steps.0,
                f.steps.1,
                path.display()
            );
            Ok(ExitCode::from(1))
        }
        Cmd::Replay {
            paths,
            target,
            planted,
            verbose,
            os_threads,
        } => {
            let target = target_of(&target)?;
            os_threads_of(os_threads, Target::Threads)?;
            let opts = RunOptions {
                trace: false,
                planted: planted_of(planted.as_deref())?,
                expect: true,
            };
            let mut files = Vec::new();
            for p in &paths {
                files.extend(program_files(p)?);
            }
            let (mut ok, mut diverged, mut malformed) = (0, 0, 0);
            for f in &files {
                let p = match load_program(f, target) {
                    Ok(p) => p,
                    Err(e) => {
                        eprintln!("{e}");
                        malformed += 1;
                        continue;
                    }
                };
                // A byte input runs as the engines ran it, expectations
                // unchecked: its `expect` ops are mutants' leftovers.
                let opts = RunOptions {
                    expect: crate::files::is_text(f),
                    ..opts
                };
                match crate::files::replay_verdict(f, &p, &opts) {
                    Err(why) => {
                        diverged += 1;
                        println!("DIVERGED {}", f.display());
                        println!("{why}");
                    }
                    Ok(note) => {
                        ok += 1;
                        if verbose || !note.is_empty() {
                            let out = run(
                                &p,
                                &RunOptions {
                                    trace: verbose,
                                    ..opts
                                },
                            );
                            let sep = if note.is_empty() { "" } else { ": " };
                            println!("ok {}{sep}{note}", f.display());
                            if verbose {
                                println!("{}", out.trace.join("\n"));
                            }
                        }
                    }
                }
            }
            println!("replay: {ok} passed, {diverged} failed, {malformed} malformed");
            Ok(if malformed > 0 {
                ExitCode::from(2)
            } else if diverged > 0 {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        Cmd::Minimize {
            path,
            target,
            planted,
            output,
            max_execs,
        } => {
            let target = target_of(&target)?;
            let opts = RunOptions {
                trace: false,
                planted: planted_of(planted.as_deref())?,
                // Bytes as the engines run them: expectations unchecked.
                expect: crate::files::is_text(&path),
            };
            let p = load_program(&path, target)?;
            let Some(d) = run(&p, &opts).divergence else {
                eprintln!(
                    "mnfuzz: {} shows no divergence; nothing to minimize",
                    path.display()
                );
                return Ok(ExitCode::SUCCESS);
            };
            let mut m = Minimizer {
                max_execs,
                execs: 0,
            };
            let min = m.minimize(&p, &opts, d.kind);
            let d = run(&min, &opts).divergence.unwrap_or(d);
            let file = report::regression_file(&min, &d, &opts);
            eprintln!(
                "mnfuzz: {} -> {} steps in {} execs ({})",
                p.steps.len(),
                min.steps.len(),
                m.execs,
                d.kind.name()
            );
            match output {
                Some(o) => write_atomic(&o, file.as_bytes())?,
                None => print!("{file}"),
            }
            Ok(ExitCode::from(1))
        }
        Cmd::Explain { path, target } => {
            let target = target_of(&target)?;
            let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            let p = crate::targets::decode_for(target, &bytes);
            print!("{}", text::print(&p));
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Encode { path, output } => {
            let p = load_program(&path, Target::Notifier)?;
            write_atomic(&output, &codec::encode(&p))?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Bench(args) => crate::bench::cli(&args),
        Cmd::Reach {
            target,
            seconds,
            runs,
            seed,
        } => {
            let target = target_of(&target)?;
            if !matches!(target, Target::Notifier | Target::Mirror) {
                return Err("reach: --target notifier or mirror".into());
            }
            let rep = fuzz(&EngineOptions {
                target,
                seed,
                seconds,
                runs: runs.or(seconds.is_none().then_some(10_000)),
                ..EngineOptions::default()
            });
            eprintln!("mnfuzz: {}", rep.summary(target));
            print!("{}", crate::reach::render(&rep.reach, target));
            Ok(if rep.finding.is_some() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        Cmd::Cost(args) => crate::cost::cli(&args),
        Cmd::Planted => {
            for b in notifier::PlantedBug::ALL {
                println!("{}", b.name());
            }
            for b in notifier::PlantedBug::CONCURRENT {
                let by = match b.component() {
                    notifier::Component::Notifier => "the loom models and the threads target",
                    _ => "the threads target's mirror form",
                };
                println!("{}  (real threads only: {by} find it)", b.name());
            }
            if !cfg!(feature = "planted-bugs") {
                eprintln!("(this build cannot plant them: rebuild with --features planted-bugs)");
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Strategies => {
            for (i, k) in mirror::strategy::kinds().iter().enumerate() {
                let builtin = i < mirror::strategy::BUILTIN.len();
                let param = k.param.map_or(String::new(), |p| {
                    format!(
                        ":SIZE ({} from {} to {}, default {})",
                        p.what,
                        mirror::strategy::size_name(p.min),
                        mirror::strategy::size_name(p.max),
                        mirror::strategy::size_name(p.default)
                    )
                });
                let from = if builtin { "" } else { "  (registered)" };
                println!("{}{param}{from}", k.name);
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Soak(args) => crate::soak::cli(&args),
    }
}
