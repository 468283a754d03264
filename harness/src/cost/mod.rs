//! `mnfuzz cost`: what each strategy costs on the same work (issue 16,
//! DESIGN §8). Named workloads ([`workload`]) run through every strategy
//! ([`run`]) with the counters of [`notifier::cost`] on; the counts go to a
//! table on stdout, JSON and SVG plots under `bench/cost/`. `--timed` adds
//! fault throughput and invalidation latency on real threads ([`timed`]).

pub mod run;
pub mod svg;
pub mod timed;
pub mod workload;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use mirror::StrategySpec;
use notifier::cost::Metric;
use serde::{Deserialize, Serialize};

use crate::files::write_atomic;
use timed::TimedRow;
use workload::Workload;

/// Sizes of a default run.
pub const DEFAULT_SIZES: [u64; 5] = [16, 64, 256, 1024, 4096];

/// ODP chunk shifts of the sweep: 16 KiB to 1 GiB.
pub const SWEEP_SHIFTS: [u8; 9] = [14, 16, 18, 20, 21, 22, 24, 27, 30];

/// The size the ODP sweep runs at.
pub const SWEEP_SIZE: u64 = 256;

/// `mnfuzz cost` options.
#[derive(clap::Args, Debug, Clone)]
pub struct CostArgs {
    /// Workloads (default: all): churn, sparse, stream, fork, pressure, devmig.
    #[arg(long)]
    pub workload: Vec<String>,
    /// Strategies as in `.ops` files (default: every kind, sized ones at
    /// their default size, plus the ODP chunk sweep).
    #[arg(long)]
    pub strategy: Vec<String>,
    /// Workload sizes, repeated or comma-separated (default: 16,64,256,1024,4096).
    #[arg(long, value_delimiter = ',')]
    pub size: Vec<u64>,
    /// Seed of the workload generators.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Where JSON and plots go.
    #[arg(long, default_value = "bench/cost")]
    pub out: PathBuf,
    /// Print the table only; write nothing.
    #[arg(long)]
    pub no_write: bool,
    /// No progress bar.
    #[arg(long)]
    pub no_progress: bool,
    /// Also measure fault throughput and invalidation latency on real
    /// threads (1 and 2), per strategy.
    #[arg(long)]
    pub timed: bool,
    /// Milliseconds per timed measurement (each of 4 per strategy, in
    /// 5 rounds).
    #[arg(long, default_value_t = 200)]
    pub timed_ms: u64,
}

/// One run's counts.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Row {
    /// The workload.
    pub workload: String,
    /// Its size.
    pub size: u64,
    /// The strategy.
    pub strategy: String,
    /// Steps of the trace.
    pub ops: u64,
    /// Device accesses in it.
    pub accesses: u64,
    /// Steps that failed.
    pub failed: u64,
    /// Each metric by name.
    pub counts: BTreeMap<String, u64>,
}

impl Row {
    /// The count of `m`.
    pub fn get(&self, m: Metric) -> u64 {
        self.counts.get(m.name()).copied().unwrap_or(0)
    }
}

/// Everything one `mnfuzz cost` wrote.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Report {
    /// The generators' seed.
    pub seed: u64,
    /// The workload × size × strategy matrix.
    pub rows: Vec<Row>,
    /// The ODP chunk sweep (each workload at [`SWEEP_SIZE`]).
    pub sweep: Vec<Row>,
    /// Timed costs, if asked for.
    pub timed: Vec<TimedRow>,
}

/// Counts one workload at one size through one strategy.
pub fn count(w: Workload, size: u64, seed: u64, spec: StrategySpec) -> Row {
    let trace = w.trace(seed, size);
    let r = run::run(spec, &trace);
    Row {
        workload: w.name().into(),
        size,
        strategy: spec.name(),
        ops: r.ops,
        accesses: r.accesses,
        failed: r.failed,
        counts: Metric::ALL
            .iter()
            .map(|&m| (m.name().to_string(), r.counts.get(m)))
            .collect(),
    }
}

/// Every kind of the registry at its default parameter.
pub fn default_strategies() -> Vec<StrategySpec> {
    (0..mirror::strategy::kinds().len())
        .filter_map(|i| StrategySpec::default_of(u8::try_from(i).ok()?))
        .collect()
}

/// The ODP specs of the sweep.
pub fn sweep_strategies() -> Vec<StrategySpec> {
    SWEEP_SHIFTS
        .iter()
        .filter_map(|s| {
            StrategySpec::from_name(&format!("odp:{}", mirror::strategy::size_name(*s)))
        })
        .collect()
}

const COLUMNS: [(Metric, &str); 19] = [
    (Metric::Faults, "faults"),
    (Metric::Retries, "retry"),
    (Metric::FaultLookups, "lookup"),
    (Metric::FaultTreeVisits, "f.tree"),
    (Metric::InvalTreeVisits, "i.tree"),
    (Metric::WorkTreeVisits, "w.tree"),
    (Metric::DriverLock, "drv.lk"),
    (Metric::NotifierLock, "ntf.lk"),
    (Metric::MmapLock, "mmap.lk"),
    (Metric::Inserted, "ins"),
    (Metric::Removed, "rem"),
    (Metric::Deferred, "defer"),
    (Metric::Invalidations, "inval"),
    (Metric::Callbacks, "cb"),
    (Metric::Wasted, "wasted"),
    (Metric::Zapped, "zapped"),
    (Metric::TlbFlushes, "flush"),
    (Metric::PeakIntervals, "peak"),
    (Metric::StateBytes, "bytes"),
];

/// The table of `rows` (grouped by workload and size, in order).
pub fn table(rows: &[Row]) -> String {
    let mut s = String::new();
    let mut group: Option<(&str, u64)> = None;
    for r in rows {
        if group != Some((&r.workload, r.size)) {
            group = Some((&r.workload, r.size));
            let unit = Workload::from_name(&r.workload).map_or("", |w| w.size_unit());
            let _ = writeln!(
                s,
                "\n{} size {} ({unit}): {} steps, {} device accesses",
                r.workload, r.size, r.ops, r.accesses
            );
            let _ = write!(s, "{:<12}", "strategy");
            for (_, h) in COLUMNS {
                let _ = write!(s, " {h:>8}");
            }
            let _ = writeln!(s, " {:>6}", "failed");
        }
        let _ = write!(s, "{:<12}", r.strategy);
        for (m, _) in COLUMNS {
            let _ = write!(s, " {:>8}", r.get(m));
        }
        let _ = writeln!(s, " {:>6}", r.failed);
    }
    s
}

/// The timed table: absolute numbers and ratios to the first row.
pub fn timed_table(rows: &[TimedRow]) -> String {
    let mut s = String::new();
    let Some(base) = rows.first() else {
        return s;
    };
    let _ = writeln!(
        s,
        "\n{:<12} {:>12} {:>12} {:>7} {:>7} {:>10} {:>10} {:>7} {:>7}",
        "strategy",
        "faults/s 1t",
        "faults/s 2t",
        "x1t",
        "x2t",
        "inval ns 1t",
        "inval ns 2t",
        "x1t",
        "x2t"
    );
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    for r in rows {
        let _ = writeln!(
            s,
            "{:<12} {:>12.0} {:>12.0} {:>7.2} {:>7.2} {:>10.0} {:>10.0} {:>7.2} {:>7.2}",
            r.strategy,
            r.faults_per_s_1t,
            r.faults_per_s_2t,
            ratio(r.faults_per_s_1t, base.faults_per_s_1t),
            ratio(r.faults_per_s_2t, base.faults_per_s_2t),
            r.inval_ns_1t,
            r.inval_ns_2t,
            ratio(r.inval_ns_1t, base.inval_ns_1t),
            ratio(r.inval_ns_2t, base.inval_ns_2t),
        );
    }
    let _ = writeln!(
        s,
        "(x: ratio to {}; faults/s higher is better, inval ns lower is better)",
        base.strategy
    );
    s
}

/// The metrics plotted against size, one plot per workload and metric.
pub const PLOTTED: [Metric; 8] = [
    Metric::FaultLookups,
    Metric::DriverLock,
    Metric::Inserted,
    Metric::Callbacks,
    Metric::Wasted,
    Metric::InvalTreeVisits,
    Metric::Retries,
    Metric::StateBytes,
];

/// The metrics of the ODP sweep plots.
pub const SWEEP_PLOTTED: [Metric; 5] = [
    Metric::Inserted,
    Metric::Callbacks,
    Metric::Wasted,
    Metric::Zapped,
    Metric::StateBytes,
];

/// The plots of a report: file name and SVG text.
pub fn plots(rep: &Report) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let workloads: Vec<&str> = {
        let mut v: Vec<&str> = rep.rows.iter().map(|r| r.workload.as_str()).collect();
        v.dedup();
        v
    };
    for w in &workloads {
        let rows: Vec<&Row> = rep.rows.iter().filter(|r| r.workload == *w).collect();
        let mut strategies: Vec<&str> = Vec::new();
        for r in &rows {
            if !strategies.contains(&r.strategy.as_str()) {
                strategies.push(&r.strategy);
            }
        }
        let unit = Workload::from_name(w).map_or("size", |w| w.size_unit());
        for m in PLOTTED {
            let series: Vec<svg::Series> = strategies
                .iter()
                .map(|s| {
                    (
                        s.to_string(),
                        rows.iter()
                            .filter(|r| r.strategy == *s)
                            .map(|r| (r.size as f64, r.get(m) as f64))
                            .collect(),
                    )
                })
                .collect();
            let title = format!("{w}: {} against size", m.name());
            out.push((
                format!("{w}-{}.svg", m.name()),
                svg::plot(&title, unit, m.name(), &series),
            ));
        }
    }
    if !rep.sweep.is_empty() {
        for m in SWEEP_PLOTTED {
            let series: Vec<svg::Series> = workloads
                .iter()
                .map(|w| {
                    (
                        w.to_string(),
                        rep.sweep
                            .iter()
                            .filter(|r| r.workload == *w)
                            .filter_map(|r| {
                                let spec = StrategySpec::from_name(&r.strategy)?;
                                Some(((1u64 << spec.param) as f64, r.get(m) as f64))
                            })
                            .collect(),
                    )
                })
                .collect();
            let title = format!("ODP chunk sweep (size {SWEEP_SIZE}): {}", m.name());
            out.push((
                format!("odp-sweep-{}.svg", m.name()),
                svg::plot(&title, "chunk size (bytes)", m.name(), &series),
            ));
        }
    }
    out
}

fn parse_list<T>(
    given: &[String],
    all: Vec<T>,
    parse: impl Fn(&str) -> Option<T>,
    what: &str,
) -> Result<Vec<T>, String> {
    if given.is_empty() {
        return Ok(all);
    }
    given
        .iter()
        .flat_map(|g| g.split(','))
        .map(|g| parse(g.trim()).ok_or_else(|| format!("unknown {what} {g:?}")))
        .collect()
}

/// The JSON file a selection writes: `costs.json` for the full default
/// run, else a name that says what was selected.
pub fn json_name(args: &CostArgs) -> String {
    if args.workload.is_empty() && args.strategy.is_empty() && args.size.is_empty() {
        return "costs.json".into();
    }
    let part = |v: &[String]| {
        if v.is_empty() {
            "all".to_string()
        } else {
            v.join("+").replace([':', '/', ','], "_")
        }
    };
    let sizes: Vec<String> = args.size.iter().map(u64::to_string).collect();
    format!(
        "costs-{}-{}-{}.json",
        part(&args.workload),
        part(&args.strategy),
        part(&sizes)
    )
}

/// Runs the command.
pub fn cli(args: &CostArgs) -> Result<ExitCode, String> {
    let t0 = Instant::now();
    let workloads = parse_list(
        &args.workload,
        Workload::ALL.to_vec(),
        Workload::from_name,
        "workload",
    )?;
    let strategies = parse_list(
        &args.strategy,
        default_strategies(),
        StrategySpec::from_arg,
        "strategy",
    )?;
    let sizes = if args.size.is_empty() {
        DEFAULT_SIZES.to_vec()
    } else {
        args.size.clone()
    };
    if sizes.iter().any(|&s| s == 0 || s > 1 << 20) {
        return Err("--size must be 1..=1048576".into());
    }
    let full = args.strategy.is_empty();
    let sweep = if full { sweep_strategies() } else { Vec::new() };
    let total = workloads.len() * (sizes.len() * strategies.len() + sweep.len())
        + if args.timed {
            strategies.len() * timed::REPEATS
        } else {
            0
        };
    let bar = if args.no_progress {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(total as u64)
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} {msg} [{elapsed}]")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut rep = Report {
        seed: args.seed,
        rows: Vec::new(),
        sweep: Vec::new(),
        timed: Vec::new(),
    };
    for &w in &workloads {
        for &size in &sizes {
            for &spec in &strategies {
                bar.set_message(format!("{w} {size} {}", spec.name()));
                rep.rows.push(count(w, size, args.seed, spec));
                bar.inc(1);
            }
        }
        for &spec in &sweep {
            bar.set_message(format!("{w} {SWEEP_SIZE} {} (sweep)", spec.name()));
            rep.sweep.push(count(w, SWEEP_SIZE, args.seed, spec));
            bar.inc(1);
        }
    }
    if args.timed {
        rep.timed = timed::measure_all(&strategies, Duration::from_millis(args.timed_ms), |s| {
            bar.set_message(format!("timed {s}"));
            bar.inc(1);
        });
    }
    bar.finish_and_clear();
    print!("{}", table(&rep.rows));
    if !rep.sweep.is_empty() {
        println!("\nODP chunk sweep, size {SWEEP_SIZE}:");
        print!("{}", table(&rep.sweep));
    }
    if !rep.timed.is_empty() {
        print!("{}", timed_table(&rep.timed));
    }
    if !args.no_write {
        write_report(&args.out, &json_name(args), &rep, full && sizes.len() > 1)?;
    }
    eprintln!(
        "mnfuzz cost: {} runs in {:.1} s",
        rep.rows.len() + rep.sweep.len() + rep.timed.len(),
        t0.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

/// Writes the JSON (and, with `plots`, the SVGs) under `dir`.
pub fn write_report(dir: &Path, json: &str, rep: &Report, with_plots: bool) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let text = serde_json::to_string_pretty(rep).map_err(|e| e.to_string())?;
    write_atomic(&dir.join(json), text.as_bytes())?;
    if !rep.timed.is_empty() {
        let t = serde_json::to_string_pretty(&rep.timed).map_err(|e| e.to_string())?;
        write_atomic(&dir.join("timed.json"), t.as_bytes())?;
    }
    if with_plots {
        for (name, svg) in plots(rep) {
            write_atomic(&dir.join(name), svg.as_bytes())?;
        }
    }
    Ok(())
}

/// Reads a report back.
pub fn read_report(path: &Path) -> Result<Report, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests;
