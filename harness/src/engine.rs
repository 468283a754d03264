//! The built-in engine: no install needed. Seeded random generation plus
//! mutation of a corpus (byte-level and program-level), kept in check by
//! behaviour features that the executor reports (op kind, outcome, seq
//! state, waiters, callbacks), the way coverage guides libFuzzer.
//!
//! With one job and a run cap, a run is a pure function of the seed and the
//! seed corpus: the wall clock only decides when to stop and what to print.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use notifier::PlantedBug;

use crate::codec;
use crate::codec::DecodeOptions;
use crate::exec::{run, Divergence, RunOptions};
use crate::minimize::Minimizer;
use crate::pin::DevicePin;
use crate::program::{DevStep, Op, Program, ProgramConfig, Step, Target, MAX_STEPS};
use crate::reach::ReachCounts;
use crate::targets::{decode_for, decode_for_with};

/// What to run and for how long.
#[derive(Clone, Debug)]
pub struct EngineOptions {
    /// The target.
    pub target: Target,
    /// The seed of every random choice.
    pub seed: u64,
    /// Parallel jobs.
    pub jobs: usize,
    /// Stop after this many executions in all.
    pub runs: Option<u64>,
    /// Stop after this many seconds.
    pub seconds: Option<f64>,
    /// Seed inputs (bytes).
    pub seeds: Vec<Vec<u8>>,
    /// Planted bug to enable.
    pub planted: Option<PlantedBug>,
    /// Longest generated input in bytes.
    pub max_len: usize,
    /// Keep inputs that show new behaviour and mutate them. Off: plain
    /// random generation, the baseline a proptest-style test gives.
    pub feedback: bool,
    /// Show live statistics on stderr.
    pub progress: bool,
    /// Executions the minimizer may spend.
    pub minimize_execs: u64,
    /// Mirror target: the device strategies of every program, whatever its
    /// bytes say (`mnfuzz soak`'s cells).
    pub pin: Option<DevicePin>,
    /// Notifier target: let inputs turn on `kernel_compat` (Linux's
    /// rollback hole), which correct code then diverges on.
    pub kernel_compat: bool,
}

impl Default for EngineOptions {
    fn default() -> EngineOptions {
        EngineOptions {
            target: Target::Notifier,
            seed: 0,
            jobs: 1,
            runs: None,
            seconds: None,
            seeds: Vec::new(),
            planted: None,
            max_len: 256,
            feedback: true,
            progress: false,
            minimize_execs: 50_000,
            pin: None,
            kernel_compat: false,
        }
    }
}

/// A divergence the engine found.
#[derive(Clone, Debug)]
pub struct Finding {
    /// The input as found; with a pin, re-encoded from the pinned program,
    /// so that it replays without the pin.
    pub input: Vec<u8>,
    /// The minimized program.
    pub minimized: Program,
    /// The minimized program's divergence.
    pub divergence: Divergence,
    /// Executions (all jobs) up to and including the one that found it.
    pub execs_to_find: u64,
    /// Seconds to find it.
    pub secs_to_find: f64,
    /// Steps before and after minimization.
    pub steps: (usize, usize),
}

/// What a run did.
#[derive(Clone, Debug, Default)]
pub struct EngineReport {
    /// Executions in all.
    pub execs: u64,
    /// Wall seconds.
    pub secs: f64,
    /// Inputs kept.
    pub corpus: usize,
    /// Inputs that ran no op at all.
    pub rejected: u64,
    /// Ops run and ops skipped as meaningless in their state.
    pub ops: (u64, u64),
    /// Steps per executed program, summed (for the mean and the median).
    pub program_steps: Vec<u32>,
    /// Executions that reached the target's rare state: at least
    /// [`big_tree`] intervals at once; the kvm target, KSM pages or a
    /// huge page in the window.
    pub big_trees: u64,
    /// State coverage: executions that reached each cell.
    pub reach: ReachCounts,
    /// The divergence, if one was found.
    pub finding: Option<Finding>,
}

impl EngineReport {
    /// Executions per second.
    pub fn execs_per_sec(&self) -> f64 {
        self.execs as f64 / self.secs.max(1e-9)
    }

    /// Percentage of inputs that ran no op.
    pub fn rejected_pct(&self) -> f64 {
        100.0 * self.rejected as f64 / self.execs.max(1) as f64
    }

    /// Percentage of ops skipped.
    pub fn skipped_pct(&self) -> f64 {
        100.0 * self.ops.1 as f64 / (self.ops.0 + self.ops.1).max(1) as f64
    }

    /// Percentage of executions that held a big tree.
    pub fn big_tree_pct(&self) -> f64 {
        100.0 * self.big_trees as f64 / self.execs.max(1) as f64
    }

    /// Median steps per program.
    pub fn median_steps(&self) -> u32 {
        let mut v = self.program_steps.clone();
        v.sort_unstable();
        v.get(v.len() / 2).copied().unwrap_or(0)
    }

    /// One status line.
    pub fn summary(&self, target: Target) -> String {
        format!(
            "target={} execs={} secs={:.1} execs_per_sec={:.0} corpus={} rejected={:.1}% skipped_ops={:.1}% median_steps={}{} result={}",
            target.name(),
            self.execs,
            self.secs,
            self.execs_per_sec(),
            self.corpus,
            self.rejected_pct(),
            self.skipped_pct(),
            self.median_steps(),
            match target {
                Target::Notifier => format!(" trees{BIG_TREE}={:.1}%", self.big_tree_pct()),
                Target::Mirror => format!(" ivs{MIRROR_BIG}={:.1}%", self.big_tree_pct()),
                Target::Kvm => format!(" ksm_or_thp={:.1}%", self.big_tree_pct()),
                _ => String::new(),
            },
            match &self.finding {
                Some(f) => f.divergence.kind.name(),
                None => "clean",
            }
        )
    }
}

/// splitmix64: small, seeded, good enough for choosing mutations.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x6a09_e667_f3bc_c908)
    }

    /// A generator whose state is `state` as given (the cost workloads'
    /// traces were drawn that way).
    pub fn from_state(state: u64) -> Rng {
        Rng(state)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

const MAP_BITS: usize = 1 << 16;

/// Live intervals that make a tree big (issue 18's reach goal).
pub const BIG_TREE: u64 = 64;

/// Live intervals (all address spaces' trees together) that make a mirror
/// state big: dozens of ODP chunks, registrations or VMA pieces at once.
pub const MIRROR_BIG: u64 = 24;

/// What counts as a big state of `target`'s intervals.
pub fn big_tree(target: Target) -> u64 {
    match target {
        Target::Mirror => MIRROR_BIG,
        _ => BIG_TREE,
    }
}

/// A kept input and the feature bits its execution set, whose hit counts
/// rank it when a base for mutation is drawn ([`pick_base`]).
struct Entry {
    input: Vec<u8>,
    bits: Box<[u32]>,
}

struct Shared {
    corpus: Vec<Entry>,
    big: u64,
    reach: ReachCounts,
    rejected: u64,
    ops: (u64, u64),
    steps: Vec<u32>,
}

/// Most program sizes kept for the median.
const MAX_STEP_SAMPLES: usize = 1 << 20;

/// Executions a job counts on its own between two flushes to [`Shared`]:
/// taking the shared lock on every execution made the jobs queue on it.
const FLUSH_EVERY: u64 = 1024;

/// The counters of one job, added to [`Shared`] every [`FLUSH_EVERY`]
/// executions and at the end.
#[derive(Default)]
struct Local {
    /// The last run's feature bits (a buffer kept between runs).
    bits: Vec<u32>,
    big: u64,
    reach: ReachCounts,
    rejected: u64,
    ops: (u64, u64),
    steps: Vec<u32>,
}

impl Local {
    fn flush(&mut self, shared: &Mutex<Shared>) {
        let mut sh = shared.lock().unwrap_or_else(|e| e.into_inner());
        sh.rejected += std::mem::take(&mut self.rejected);
        sh.big += std::mem::take(&mut self.big);
        sh.reach.merge(std::mem::take(&mut self.reach));
        sh.ops.0 += std::mem::take(&mut self.ops.0);
        sh.ops.1 += std::mem::take(&mut self.ops.1);
        let room = MAX_STEP_SAMPLES.saturating_sub(sh.steps.len());
        sh.steps.extend(self.steps.drain(..).take(room));
    }
}

/// The feature map, one bit per hashed feature, and how many executions
/// set each bit. Atomic, so that jobs merge their features without a lock.
struct FeatureMap {
    seen: Vec<AtomicU64>,
    hits: Vec<AtomicU32>,
}

fn map_bit(h: u32) -> u32 {
    (h.wrapping_mul(0x85eb_ca6b) >> 16) % MAP_BITS as u32
}

impl FeatureMap {
    fn new() -> FeatureMap {
        FeatureMap {
            seen: (0..MAP_BITS / 64).map(|_| AtomicU64::new(0)).collect(),
            hits: (0..MAP_BITS).map(|_| AtomicU32::new(0)).collect(),
        }
    }

    /// The bits of one run: its features one by one and as consecutive
    /// pairs (so that orderings count), and its reach cells one by one
    /// (pairs of cells made the corpus five times larger with no gain).
    /// Sorted, each once.
    fn bits_of(features: &[u32], cells: &[u32], bits: &mut Vec<u32>) {
        bits.clear();
        let mut prev = 0u32;
        for &f in features {
            bits.push(map_bit(f));
            bits.push(map_bit(f ^ prev.rotate_left(7).wrapping_mul(0x9e37_79b1)));
            prev = f;
        }
        bits.extend(cells.iter().map(|&c| map_bit(c)));
        bits.sort_unstable();
        bits.dedup();
    }

    /// Counts one run's `bits` (see [`FeatureMap::bits_of`]); true if any
    /// was new.
    fn merge(&self, bits: &[u32]) -> bool {
        let mut new = false;
        for &bit in bits {
            let bit = bit as usize;
            // Load and store, not an atomic add: two jobs may lose a
            // count, and the ranking needs only an estimate.
            let h = &self.hits[bit];
            h.store(
                h.load(Ordering::Relaxed).saturating_add(1),
                Ordering::Relaxed,
            );
            let (w, b) = (&self.seen[bit / 64], 1u64 << (bit % 64));
            // Read first: a bit seen before is the common case, and a
            // plain load does not take the cache line from other jobs.
            if w.load(Ordering::Relaxed) & b == 0 && w.fetch_or(b, Ordering::Relaxed) & b == 0 {
                new = true;
            }
        }
        new
    }

    /// How rare an entry's behaviour is now: the hit count of its rarest bit.
    fn rarity(&self, e: &Entry) -> u32 {
        e.bits
            .iter()
            .map(|&b| self.hits[b as usize].load(Ordering::Relaxed))
            .min()
            .unwrap_or(u32::MAX)
    }
}

/// The first finding: its input, executions and seconds to find it, and
/// what it diverged on then (a real-kernel target, or OS threads, may not
/// repeat it on the re-run).
type Found = (Vec<u8>, u64, f64, Divergence);

/// Runs the engine.
pub fn fuzz(opts: &EngineOptions) -> EngineReport {
    let start = Instant::now();
    let shared = Mutex::new(Shared {
        corpus: Vec::new(),
        big: 0,
        reach: ReachCounts::default(),
        rejected: 0,
        ops: (0, 0),
        steps: Vec::new(),
    });
    let map = FeatureMap::new();
    let execs = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let found: Mutex<Option<Found>> = Mutex::new(None);
    // Mutants keep a seed's `expect` lines but not what made them true.
    let run_opts = RunOptions {
        trace: false,
        planted: opts.planted,
        expect: false,
    };
    let deadline = opts.seconds.map(|s| start + Duration::from_secs_f64(s));
    let big = big_tree(opts.target);

    let exec_one = |input: &[u8], keep: bool, local: &mut Local| -> bool {
        let n = execs.fetch_add(1, Ordering::Relaxed) + 1;
        let p = program_of(opts, input);
        let out = run(&p, &run_opts);
        if out.stats.ran == 0 {
            local.rejected += 1;
        }
        if out.stats.peak_intervals >= big || out.stats.layout_effects > 0 {
            local.big += 1;
        }
        local.reach.add(&out.cells);
        local.ops.0 += out.stats.ran;
        local.ops.1 += out.stats.skipped;
        if local.steps.len() < MAX_STEP_SAMPLES {
            local.steps.push(p.steps.len() as u32);
        }
        if n.is_multiple_of(FLUSH_EVERY) {
            local.flush(&shared);
        }
        if let Some(d) = out.divergence {
            let mut f = found.lock().unwrap_or_else(|e| e.into_inner());
            if f.is_none() {
                *f = Some((input.to_vec(), n, start.elapsed().as_secs_f64(), d));
            }
            stop.store(true, Ordering::Relaxed);
            return false;
        }
        // The reach cells are features too: an input that reaches a new
        // combination of the report's dimensions (a fault that commits
        // while its page is device-private, a nonblocking start over a
        // deferred tree of 64) is kept and mutated, so the engine steers
        // toward the cells the report says are unreached.
        if keep {
            let mut bits = std::mem::take(&mut local.bits);
            FeatureMap::bits_of(&out.features, &out.cells, &mut bits);
            if map.merge(&bits) {
                let mut sh = shared.lock().unwrap_or_else(|e| e.into_inner());
                if sh.corpus.len() < 1 << 14 {
                    sh.corpus.push(Entry {
                        input: input.to_vec(),
                        bits: bits.as_slice().into(),
                    });
                }
            }
            local.bits = bits;
        }
        true
    };

    let out_of_budget = || {
        stop.load(Ordering::Relaxed)
            || opts
                .runs
                .is_some_and(|r| execs.load(Ordering::Relaxed) >= r)
            || deadline.is_some_and(|d| Instant::now() >= d)
    };

    // Seeds run first, in order, on this thread: deterministic start.
    let mut local = Local::default();
    for s in &opts.seeds {
        if out_of_budget() {
            break;
        }
        exec_one(s, true, &mut local);
    }
    local.flush(&shared);

    let (execs_r, stop_r, shared_r, map_r) = (&execs, &stop, &shared, &map);
    std::thread::scope(|scope| {
        for job in 0..opts.jobs.max(1) {
            let exec_one = &exec_one;
            let out_of_budget = &out_of_budget;
            scope.spawn(move || {
                let job_seed = opts.seed ^ (job as u64).wrapping_mul(0xd6e8_feb8_6659_fd93);
                // Two streams: fresh inputs come from the first alone, so
                // the engine's fresh inputs are the random baseline's, in
                // the same order, and feedback only adds mutants between
                // them (a bug that plain generation finds at its k-th
                // input, the engine finds by its 4k/3-th to 2k-th, see
                // `next_input`).
                let mut rngs = (
                    Rng::new(job_seed),
                    Rng::new(job_seed ^ 0x5851_f42d_4c95_7f2d),
                );
                let mut n = 0u64;
                let mut local = Local::default();
                // Check the clock every few runs only; it is not free. A
                // job runs one input at least, however late it started (a
                // loaded machine, a short `--seconds`).
                while !(stop_r.load(Ordering::Relaxed)
                    || n > 0 && n.is_multiple_of(16) && out_of_budget())
                {
                    if opts
                        .runs
                        .is_some_and(|r| execs_r.load(Ordering::Relaxed) >= r)
                    {
                        break;
                    }
                    n += 1;
                    let input = next_input(&mut rngs, n, opts, shared_r, map_r);
                    exec_one(&input, opts.feedback, &mut local);
                }
                local.flush(shared_r);
            });
        }
        if opts.progress {
            let out_of_budget = &out_of_budget;
            scope.spawn(move || progress(opts, shared_r, execs_r, stop_r, start, out_of_budget));
        }
    });
    stop.store(true, Ordering::Relaxed);

    let sh = shared.into_inner().unwrap_or_else(|e| e.into_inner());
    let mut report = EngineReport {
        execs: execs.load(Ordering::Relaxed),
        secs: start.elapsed().as_secs_f64(),
        corpus: sh.corpus.len(),
        rejected: sh.rejected,
        big_trees: sh.big,
        reach: sh.reach,
        ops: sh.ops,
        program_steps: sh.steps,
        finding: None,
    };
    if let Some((input, n, secs, first)) = found.into_inner().unwrap_or_else(|e| e.into_inner()) {
        let p = program_of(opts, &input);
        let input = match opts.pin {
            Some(_) => codec::encode(&p),
            None => input,
        };
        // The simulated targets are deterministic; the real kernel's
        // timing is not, nor are OS threads (`--os-threads`): a divergence
        // the re-run does not show is still reported, as it happened.
        let d = run(&p, &run_opts).divergence.unwrap_or(first);
        let mut m = Minimizer {
            max_execs: opts.minimize_execs,
            execs: 0,
        };
        let min = m.minimize(&p, &run_opts, d.kind);
        let divergence = run(&min, &run_opts).divergence.unwrap_or(d);
        report.finding = Some(Finding {
            input,
            steps: (p.steps.len(), min.steps.len()),
            minimized: min,
            divergence,
            execs_to_find: n,
            secs_to_find: secs,
        });
    }
    report
}

/// The program an input runs as: decoded, then pinned.
fn program_of(opts: &EngineOptions, input: &[u8]) -> Program {
    let decoding = DecodeOptions {
        kernel_compat: opts.kernel_compat,
    };
    let mut p = decode_for_with(opts.target, input, decoding);
    if let Some(pin) = &opts.pin {
        pin.apply(&mut p);
    }
    p
}

fn progress(
    opts: &EngineOptions,
    shared: &Mutex<Shared>,
    execs: &AtomicU64,
    stop: &AtomicBool,
    start: Instant,
    out_of_budget: &dyn Fn() -> bool,
) {
    let tty = std::io::stderr().is_terminal();
    let bar = indicatif::ProgressBar::new_spinner();
    if !tty {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let mut last_print = Instant::now();
    while !stop.load(Ordering::Relaxed) && !out_of_budget() {
        std::thread::sleep(Duration::from_millis(200));
        let (corpus, rejected, ops) = {
            let sh = shared.lock().unwrap_or_else(|e| e.into_inner());
            (sh.corpus.len(), sh.rejected, sh.ops)
        };
        let n = execs.load(Ordering::Relaxed);
        let secs = start.elapsed().as_secs_f64();
        let msg = format!(
            "{}: {n} execs, {:.0} execs/s, corpus {corpus}, rejected {:.1}%, skipped ops {:.1}%",
            opts.target.name(),
            n as f64 / secs.max(1e-9),
            100.0 * rejected as f64 / n.max(1) as f64,
            100.0 * ops.1 as f64 / (ops.0 + ops.1).max(1) as f64,
        );
        if tty {
            bar.set_message(msg);
            bar.tick();
        } else if last_print.elapsed() >= Duration::from_secs(10) {
            eprintln!("mnfuzz: {msg}");
            last_print = Instant::now();
        }
    }
    bar.finish_and_clear();
}

/// A job's executions before it mutates one time in two instead of one
/// in four ([`next_input`]).
const EARLY: u64 = 32_768;

fn next_input(
    (fresh, rng): &mut (Rng, Rng),
    n: u64,
    opts: &EngineOptions,
    shared: &Mutex<Shared>,
    map: &FeatureMap,
) -> Vec<u8> {
    // Fresh programs 3 times in 4 for the first [`EARLY`] executions,
    // then 1 in 2. Early, fresh programs find most of what there is to
    // find: over the planted bugs (11 bugs, seeds 1-5), mutating 7 times
    // in 8 needed 27,919 executions in all, 1 in 2 needed 19,083, 1 in 4
    // needed 15,164. Later, what is left needs a rare state that only
    // mutants of the kept inputs reach (plain generation missed the
    // deepest bugs in 400,000 tries), so they get twice the share. A bug
    // that plain generation finds at its k-th program, the engine still
    // finds by its 4k/3-th (k up to 24,576) and never later than its
    // 2k-th: the fresh programs are the random baseline's, in order.
    let fresh_share = if n <= EARLY { 4 } else { 2 };
    if !opts.feedback || rng.below(fresh_share) != 0 {
        return generate_for(fresh, opts);
    }
    // Both picks under one lock, the base first.
    let picked = {
        let sh = shared.lock().unwrap_or_else(|e| e.into_inner());
        let n = sh.corpus.len();
        (n > 0).then(|| {
            let base = sh.corpus[pick_base(rng, &sh.corpus, map, opts.max_len)]
                .input
                .clone();
            (base, sh.corpus[rng.below(n)].input.clone())
        })
    };
    let Some((mut base, other)) = picked else {
        return generate_for(fresh, opts);
    };
    if rng.below(2) == 0 {
        mutate_program(rng, &mut base, &other, opts.target);
    } else {
        for _ in 0..1 + rng.below(4) {
            mutate_bytes(rng, &mut base, &other);
        }
    }
    base.truncate(opts.max_len.max(16) * 2);
    base
}

/// Candidates drawn for each base ([`pick_base`]).
const TOURNAMENT: usize = 4;

/// The base of a mutation: of [`TOURNAMENT`] entries drawn at random, the
/// one whose rarest feature bit the fewest executions have set (AFL++'s
/// "rare" schedule, by tournament so that no weight needs keeping up to
/// date). Uniform picks spend most mutations on the thousands of entries
/// that random generation reaches anyway; an entry that reached a rare
/// state (a tall tree, a long backlog of deferred work) gets picked until
/// its mutants have made that state common, and then gives way. Entries
/// longer than a fresh input (mutants grow them up to twice that) count
/// as rarer only in proportion, so that long programs do not take over
/// the picks (20-second mirror runs, seed 3: 2,829 execs/s with the
/// penalty, 2,486 without).
fn pick_base(rng: &mut Rng, corpus: &[Entry], map: &FeatureMap, max_len: usize) -> usize {
    let score = |e: &Entry| {
        let len = e.input.len().max(max_len) as u64;
        u64::from(map.rarity(e)).saturating_add(1) * len
    };
    let mut best = rng.below(corpus.len());
    let mut best_score = score(&corpus[best]);
    for _ in 1..TOURNAMENT {
        let i = rng.below(corpus.len());
        let s = score(&corpus[i]);
        if s < best_score {
            (best, best_score) = (i, s);
        }
    }
    best
}

/// A fresh input for the engine: random bytes mostly; one time in 16
/// (simulated targets) a swarm program, see [`swarm`]. A mirror input's
/// sized devices are drawn small one time in four ([`small_sizes`]).
/// Swarm programs one time in four and small sizes half the time made
/// the planted mirror bugs take 2-3 times as many executions (most: the
/// 2 MiB default size, which huge mappings need, got rarer).
pub fn generate_for(rng: &mut Rng, opts: &EngineOptions) -> Vec<u8> {
    let swarmed = matches!(opts.target, Target::Notifier | Target::Mirror) && rng.below(16) == 0;
    if swarmed {
        return swarm(rng, opts.target, opts.max_len);
    }
    let bytes = generate(rng, opts.max_len);
    if opts.target != Target::Mirror {
        return bytes;
    }
    let mut p = decode_for(opts.target, &bytes);
    let small = small_sizes(rng, &mut p.config);
    if small | two_pass(rng, &mut p) {
        codec::encode(&p)
    } else {
        bytes
    }
}

/// One time in eight, opens one of `p`'s config devices with two-pass TLB
/// flushes instead: its first step becomes that `open` (a `kfd` one the
/// `kfd-noxnack` variant half the time). The config byte
/// has no bit for the TLB mode, and a random `open` finds its slot taken
/// by the config's device most of the time, so that `mnfuzz reach` saw
/// no two-pass device with `d0` absent, and few with each kind.
fn two_pass(rng: &mut Rng, p: &mut Program) -> bool {
    let present: Vec<usize> = (0..p.config.devices.len())
        .filter(|&d| p.config.devices[d].is_some())
        .collect();
    if present.is_empty() || rng.below(8) != 0 {
        return false;
    }
    let d = present[rng.below(present.len())];
    let Some(mut spec) = p.config.devices[d].take() else {
        return false;
    };
    // `kfd-noxnack` has no config code for `d0`: a `kfd` opened by a step
    // is that variant half the time.
    let kinds = mirror::strategy::kinds();
    let name = |k: u8| kinds.get(usize::from(k)).map_or("", |k| k.name);
    if name(spec.kind) == "kfd" && rng.below(2) == 0 {
        if let Some(i) = kinds.iter().position(|k| k.name == "kfd-noxnack") {
            spec = mirror::strategy::StrategySpec::of(i as u8);
        }
    }
    let open = Step {
        thread: 0,
        op: Op::Dev {
            dev: d as u8,
            op: DevStep::Open {
                mm: 0,
                strategy: spec.with_tlb(mirror::strategy::Tlb::TwoPass),
            },
        },
    };
    p.steps.insert(0, open);
    p.steps.truncate(MAX_STEPS);
    true
}

/// Gives each sized device kind of `config` (ODP chunks, GPU SVM ranges)
/// one of its three smallest sizes one time in four: small chunks are what
/// make a big tree out of a few faults, and a uniform size byte gives
/// them 3 codes in 17. True if it changed anything.
fn small_sizes(rng: &mut Rng, config: &mut ProgramConfig) -> bool {
    let mut changed = false;
    for spec in config.devices.iter_mut().flatten() {
        if let Some(p) = crate::mirror::codec::size_param(*spec) {
            if rng.below(4) == 0 {
                spec.param = (p.min + rng.below(3) as u8).min(p.max);
                changed = true;
            }
        }
    }
    changed
}

/// Swarm testing (Groce et al., ISSTA 2012): a program whose steps use a
/// few op kinds only, drawn at random (two to five tags of the target's
/// table), and up to twice as many steps as a random input of `max_len`
/// bytes holds. Plain random programs spread their steps over every kind,
/// so that no state that needs many steps of one or two kinds gets built:
/// dozens of registrations, VMA pieces, populated trees. Swarm programs
/// build them without naming any: which kinds go together is random.
///
/// The config bytes are drawn as a random input's are
/// ([`small_sizes`] included).
pub fn swarm(rng: &mut Rng, target: Target, max_len: usize) -> Vec<u8> {
    let head = rng.bytes(16);
    let mut config = decode_for(target, &head).config;
    small_sizes(rng, &mut config);
    let prefix = codec::encode(&Program {
        config,
        steps: Vec::new(),
    });
    let tags: Vec<u8> = (0..2 + rng.below(4)).map(|_| rng.below(64) as u8).collect();
    let n = 8 + rng.below(max_len.max(16) / 2);
    let mut steps = Vec::with_capacity(n);
    let mut bytes = Vec::with_capacity(prefix.len() + 24);
    for _ in 0..n {
        bytes.clear();
        bytes.extend_from_slice(&prefix);
        let tag = tags[rng.below(tags.len())] | (rng.below(4) as u8) << 6;
        bytes.push(tag);
        bytes.extend(rng.bytes(20));
        if let Some(s) = decode_for(target, &bytes).steps.first() {
            steps.push(*s);
        }
    }
    steps.truncate(MAX_STEPS);
    codec::encode(&Program { config, steps })
}

/// A fresh random input of up to `max_len` bytes.
pub fn generate(rng: &mut Rng, max_len: usize) -> Vec<u8> {
    let n = 8 + rng.below(max_len.max(9) - 7);
    rng.bytes(n)
}

/// Classic byte mutations: flips, interesting values, chunk insert, delete,
/// duplicate and splice.
pub fn mutate_bytes(rng: &mut Rng, data: &mut Vec<u8>, other: &[u8]) {
    if data.is_empty() {
        data.extend(rng.bytes(8));
        return;
    }
    let len = data.len();
    match rng.below(8) {
        0 => {
            let i = rng.below(len);
            data[i] ^= 1 << rng.below(8);
        }
        1 => {
            let i = rng.below(len);
            data[i] = rng.next_u64() as u8;
        }
        2 => {
            let i = rng.below(len);
            data[i] = [0, 1, 0x7f, 0x80, 0xfe, 0xff][rng.below(6)];
        }
        3 => {
            let i = rng.below(len + 1);
            let chunk = {
                let k = 1 + rng.below(8);
                rng.bytes(k)
            };
            data.splice(i..i, chunk);
        }
        4 => {
            let i = rng.below(len);
            let n = 1 + rng.below((len - i).min(16));
            data.drain(i..i + n);
        }
        5 => {
            let i = rng.below(len);
            let n = 1 + rng.below((len - i).min(32));
            let chunk: Vec<u8> = data[i..i + n].to_vec();
            let at = rng.below(len + 1);
            data.splice(at..at, chunk);
        }
        6 if !other.is_empty() => {
            let cut = rng.below(len);
            let from = rng.below(other.len());
            data.truncate(cut);
            data.extend_from_slice(&other[from..]);
        }
        _ => {
            let k = 1 + rng.below(16);
            data.extend(rng.bytes(k))
        }
    }
}

/// Mutations that keep the program structure: insert, delete, duplicate,
/// swap or reassign whole steps, or splice another program's steps in.
pub fn mutate_program(rng: &mut Rng, data: &mut Vec<u8>, other: &[u8], target: Target) {
    // Every bit the bytes hold survives re-encoding, whether this run
    // honours it or not.
    let all = DecodeOptions {
        kernel_compat: true,
    };
    let mut p = decode_for_with(target, data, all);
    let fresh = |rng: &mut Rng, cfg: ProgramConfig| {
        let mut bytes = codec::encode(&Program {
            config: cfg,
            steps: Vec::new(),
        });
        let k = 4 + rng.below(24);
        bytes.extend(rng.bytes(k));
        decode_for(target, &bytes).steps
    };
    let n = p.steps.len();
    match rng.below(7) {
        0 | 1 => {
            let at = rng.below(n + 1);
            let new = fresh(rng, p.config);
            let k = new.len().min(1 + rng.below(3));
            p.steps.splice(at..at, new.into_iter().take(k));
        }
        2 if n > 0 => {
            let i = rng.below(n);
            let k = 1 + rng.below((n - i).min(4));
            p.steps.drain(i..i + k);
        }
        3 if n > 1 => {
            let (a, b) = (rng.below(n), rng.below(n));
            p.steps.swap(a, b);
        }
        4 if n > 0 => {
            let i = rng.below(n);
            p.steps[i].thread = rng.below(p.config.threads as usize) as u8;
        }
        5 if n > 0 => {
            let i = rng.below(n);
            let k = 1 + rng.below((n - i).min(8));
            let chunk: Vec<_> = p.steps[i..i + k].to_vec();
            let at = rng.below(n + 1);
            p.steps.splice(at..at, chunk);
        }
        _ => {
            let q = decode_for(target, other);
            if !q.steps.is_empty() {
                let from = rng.below(q.steps.len());
                let at = rng.below(n + 1);
                let k = (q.steps.len() - from).min(1 + rng.below(8));
                let mut chunk: Vec<_> = q.steps[from..from + k].to_vec();
                for s in &mut chunk {
                    s.thread %= p.config.threads;
                }
                p.steps.splice(at..at, chunk);
            }
        }
    }
    p.steps.truncate(MAX_STEPS);
    *data = codec::encode(&p);
}
