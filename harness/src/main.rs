//! `mnfuzz`: the command line. Exit codes: 0 clean, 1 divergence found,
//! 2 bad input or usage.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use harness::engine::{fuzz, EngineOptions};
use harness::exec::{run, RunOptions};
use harness::files::{load_program, program_files, write_atomic, write_regression};
use harness::minimize::Minimizer;
use harness::program::Target;
use harness::targets::resolve_planted;
use harness::{codec, report, text};

mod hunt;

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

#[derive(Subcommand)]
enum Cmd {
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
    /// Time each engine to the first detection of planted bugs.
    Hunt(hunt::HuntArgs),
    /// Measure each target's execs/s with the built-in engine (one job).
    Bench(harness::bench::BenchArgs),
    /// Every target and mirror strategy (and pair), many seeds, corpus off
    /// and on, on all cores; a table, and exit 1 on any divergence.
    Soak(harness::soak::SoakArgs),
}

fn target_of(name: &str) -> Result<Target, String> {
    Target::from_name(name).ok_or_else(|| format!("unknown target '{name}'"))
}

fn planted_of(name: Option<&str>) -> Result<Option<notifier::PlantedBug>, String> {
    name.filter(|n| !n.is_empty())
        .map(resolve_planted)
        .transpose()
}

fn main() -> ExitCode {
    match real_main(Cli::parse()) {
        Ok(code) => code,
        Err(msg) => {
            eprintln!("mnfuzz: {msg}");
            ExitCode::from(2)
        }
    }
}

fn real_main(cli: Cli) -> Result<ExitCode, String> {
    match cli.cmd {
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
        } => {
            let target = target_of(&target)?;
            let planted = planted_of(planted.as_deref())?;
            let corpus = corpus.unwrap_or_else(|| Path::new("corpus").join(target.name()));
            let regressions =
                regressions.unwrap_or_else(|| Path::new("corpus/regressions").join(target.name()));
            let mut seeds = Vec::new();
            if corpus.exists() {
                for f in program_files(&corpus)? {
                    if f.extension().is_some_and(|e| e == "ops") {
                        continue;
                    }
                    seeds.push(std::fs::read(&f).map_err(|e| format!("{}: {e}", f.display()))?);
                }
            }
            eprintln!(
                "mnfuzz: fuzzing {} with seed {seed}, {jobs} job(s), {} seed input(s){}",
                target.name(),
                seeds.len(),
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
                pin: None,
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
        } => {
            let target = target_of(&target)?;
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
                if run(&p, &opts).divergence.is_some() {
                    diverged += 1;
                    println!("DIVERGED {}", f.display());
                    println!("{}", report::render(&p, &opts).unwrap_or_default());
                } else {
                    ok += 1;
                    if verbose {
                        let out = run(
                            &p,
                            &RunOptions {
                                trace: true,
                                ..opts
                            },
                        );
                        println!("ok {}\n{}", f.display(), out.trace.join("\n"));
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
                expect: true,
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
            let p = harness::targets::decode_for(target, &bytes);
            print!("{}", text::print(&p));
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Encode { path, output } => {
            let p = load_program(&path, Target::Notifier)?;
            write_atomic(&output, &codec::encode(&p))?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Bench(args) => harness::bench::cli(&args),
        Cmd::Planted => {
            for b in notifier::PlantedBug::ALL {
                println!("{}", b.name());
            }
            if !cfg!(feature = "planted-bugs") {
                eprintln!("(this build cannot plant them: rebuild with --features planted-bugs)");
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Hunt(args) => hunt::main(args),
        Cmd::Soak(args) => harness::soak::cli(&args),
    }
}
