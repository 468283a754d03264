//! The executor of the `threads` target: each logical thread of a program
//! runs its own lines, in order, on a shuttle task over the *blocking* API
//! of the notifier core (whose locks are shuttle's inside the execution,
//! see `notifier/src/sync.rs`), and a [`SeededScheduler`] seeded by
//! `config.schedule` chooses the interleaving at every lock, unlock, wait
//! and wake-up, so that a run replays exactly.
//!
//! A driver shadow kept under the driver's lock (a shuttle mutex, as a
//! driver's is) checks what DESIGN.md §2 guarantees, the same invariants
//! as the loom models in `notifier/tests/loom.rs`:
//!
//! * no callback of an interval after its `remove` returned;
//! * no commit across a collision: a fault whose `read_retry` is false
//!   under the driver lock must have sampled the CPU page versions that
//!   are still current, and after every `invalidate_range_end` the device
//!   maps no page of the range at an older version than the CPU;
//! * callbacks run with an odd seq;
//! * every waiter is woken: a run in which every unfinished task is blocked
//!   is a [`DivergenceKind::Deadlock`] (shuttle detects it);
//! * quiescence at the end: when every thread is done (its open
//!   invalidations ended, innermost first), the core is idle, its seq even,
//!   its deferred list empty and nobody waits; every classic subscriber
//!   saw an end for each start it accepted.
//!
//! Lockdep's rule holds as in the split-phase target: a thread holding an
//! open invalidation skips `read_begin` and `remove` (they could wait on
//! its own cycle). Callbacks keep the contract (set_seq on acceptance): a
//! callback model's `set_seq` breaches are for the split-phase target,
//! whose reference model predicts them; here they would only be driver
//! bugs. Refusals (and so the non-blockable rollback) and two-pass
//! callbacks follow the model.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::Arc;

use notifier::sync::Mutex;
use notifier::{
    ClassicOps, Config, Interval, IntervalId, Invalidation, Owner, Range, Start, Subscriptions,
};
use oracles::{CallbackModel, Refuse};

use crate::outcome::{Divergence, DivergenceKind, Outcome, RunOptions};
use crate::program::{Op, Program, CLASSIC_SLOTS, PAGE, SLOTS};
use crate::text::format_step;
use crate::threads::sched::{Log, SeededScheduler};

/// Most pages of an interval a fault maps (from its first page on).
const FAULT_PAGES: u64 = 4;
/// The scheduling points one execution may take before it is a livelock.
/// A program has at most `MAX_STEPS` lines, each a few dozen points.
const MAX_POINTS: usize = 200_000;
/// Stack of each shuttle task.
const STACK: usize = 0x8_0000;

/// What the driver lock protects.
#[derive(Default)]
struct Driver {
    /// Intervals the driver stopped mirroring: before it calls `remove`, it
    /// marks the interval here (no fault commits under it any more) and
    /// tears its device PTEs down, so that nothing it mapped outlives its
    /// notifier.
    dying: BTreeSet<IntervalId>,
    /// Intervals whose `remove` returned.
    removed: BTreeSet<IntervalId>,
    /// Device PTEs: (interval, page) -> the CPU page version it maps.
    dev: BTreeMap<(IntervalId, u64), u64>,
}

/// Results of the execution, written by every task. A std mutex: it is
/// never held across a scheduling point.
#[derive(Default)]
pub(crate) struct Sink {
    pub(crate) divergence: Option<Divergence>,
    pub(crate) trace: Vec<String>,
    pub(crate) features: BTreeSet<u32>,
    pub(crate) ran: u64,
    pub(crate) skipped: u64,
    pub(crate) callbacks: u64,
    pub(crate) order: u32,
}

/// The sink and a progress count, which every step of every thread moves
/// on: what the watchdog of the OS-thread mode watches.
#[derive(Default)]
pub(crate) struct Shared {
    sink: std::sync::Mutex<Sink>,
    progress: std::sync::atomic::AtomicU64,
}

impl Shared {
    /// A thread took a step.
    pub(crate) fn tick(&self) {
        self.progress
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    fn progress(&self) -> u64 {
        self.progress.load(std::sync::atomic::Ordering::Relaxed)
    }
}

pub(crate) type SinkRef = Arc<Shared>;

pub(crate) fn sink(s: &SinkRef) -> std::sync::MutexGuard<'_, Sink> {
    s.sink.lock().unwrap_or_else(|e| e.into_inner())
}

/// Records the run's divergence (the first one wins).
pub(crate) fn diverge(
    s: &SinkRef,
    kind: DivergenceKind,
    step: Option<usize>,
    doing: String,
    core: String,
) {
    let mut s = sink(s);
    if s.divergence.is_none() {
        s.divergence = Some(Divergence {
            kind,
            step,
            doing,
            core,
            model: "DESIGN.md §2".into(),
            states: (String::new(), String::new()),
        });
    }
}

/// A registered classic subscriber: its id and its callbacks.
type Classic = (notifier::ClassicId, Arc<ClassicCb>);

/// Everything the tasks share.
struct World {
    subs: Subscriptions,
    slots: Mutex<[Option<Interval>; SLOTS as usize]>,
    classic: Mutex<[Option<Classic>; CLASSIC_SLOTS as usize]>,
    driver: Arc<Mutex<Driver>>,
    /// The CPU page table: each page's version moves on at every change,
    /// between an invalidation's start and its end.
    cpu: Arc<Mutex<BTreeMap<u64, u64>>>,
    sink: SinkRef,
    trace: bool,
    /// Intervals `populate` inserted so far (see [`MAX_BULK`]).
    bulk: std::sync::atomic::AtomicU64,
}

/// Most intervals all `populate` lines of a run insert: every insert and
/// every callback is a scheduling point, and shuttle's step bound is for
/// runs, not for trees of thousands.
const MAX_BULK: u64 = crate::program::MAX_POPULATE as u64;

fn lock<T>(m: &Mutex<T>) -> notifier::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The pages a fault on `iv` maps: whole pages inside the interval (so
/// that every range that changes one overlaps the interval), at most
/// [`FAULT_PAGES`] from its first.
fn fault_pages(iv: &Interval) -> std::ops::Range<u64> {
    let first = iv.start().div_ceil(PAGE);
    // `last` < task_size <= u64::MAX, so `last + 1` does not overflow.
    let end = (iv.last() + 1) / PAGE;
    first..end.min(first.saturating_add(FAULT_PAGES)).max(first)
}

struct IntervalCb {
    model: CallbackModel,
    driver: Arc<Mutex<Driver>>,
    sink: SinkRef,
}

impl IntervalCb {
    fn teardown(driver: &Mutex<Driver>, id: IntervalId, iv_first: u64, iv_last: u64, r: &Range) {
        let (lo, hi) = (r.start.max(iv_first), (r.end - 1).min(iv_last));
        if lo > hi {
            return;
        }
        let mut d = lock(driver);
        let keys: Vec<_> = d
            .dev
            .range((id, lo / PAGE)..=(id, hi / PAGE))
            .map(|(k, _)| *k)
            .collect();
        for k in keys {
            d.dev.remove(&k);
        }
    }
}

impl notifier::IntervalOps for IntervalCb {
    fn invalidate(&self, iv: &Interval, range: &Range, cur_seq: u64) -> bool {
        self.invalidate_start(iv, range, cur_seq).finish_now()
    }

    fn invalidate_start(&self, iv: &Interval, range: &Range, cur_seq: u64) -> Start {
        sink(&self.sink).callbacks += 1;
        if cur_seq & 1 == 0 {
            diverge(
                &self.sink,
                DivergenceKind::CallbackSeq,
                None,
                format!("callback of {} for {range:?}", iv.id()),
                format!("cur_seq {cur_seq:#x} is even"),
            );
        }
        if self.model.refuse.refuses(range) {
            return Start::Refused;
        }
        {
            let d = lock(&self.driver);
            if d.removed.contains(&iv.id()) {
                drop(d);
                diverge(
                    &self.sink,
                    DivergenceKind::Callbacks,
                    None,
                    format!("callback of {} for {range:?}", iv.id()),
                    "the callback ran after remove of its interval returned".into(),
                );
                return Start::Done;
            }
            // Inside the callback set_seq of its own interval cannot fail.
            let _ = iv.set_seq(cur_seq);
        }
        let (id, first, last) = (iv.id(), iv.start(), iv.last());
        if self.model.two_pass {
            let (driver, range) = (self.driver.clone(), *range);
            Start::Finish(Box::new(move || {
                IntervalCb::teardown(&driver, id, first, last, &range)
            }))
        } else {
            IntervalCb::teardown(&self.driver, id, first, last, range);
            Start::Done
        }
    }
}

/// A classic subscriber counting its accepted starts that still wait for
/// their end.
struct ClassicCb {
    refuse: Refuse,
    open: std::sync::atomic::AtomicI64,
    /// Released: it sees no end of what it started before (the core drops
    /// released subscribers from every later call, as the kernel unlinks them).
    released: std::sync::atomic::AtomicBool,
    sink: SinkRef,
}

impl ClassicOps for ClassicCb {
    fn invalidate_range_start(&self, range: &Range) -> bool {
        if self.refuse.refuses(range) {
            return false;
        }
        self.open.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        true
    }
    fn invalidate_range_end(&self, range: &Range) {
        if self.open.fetch_sub(1, std::sync::atomic::Ordering::Relaxed) <= 0 {
            diverge(
                &self.sink,
                DivergenceKind::Callbacks,
                None,
                format!("classic end for {range:?}"),
                "an end without an accepted start".into(),
            );
        }
    }
    fn release(&self) {
        self.released
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A fault between its read_begin and its commit.
struct Fault {
    iv: Interval,
    seq: u64,
    sample: Vec<(u64, u64)>,
}

/// One logical thread's state.
#[derive(Default)]
struct Thread {
    open: Vec<Invalidation>,
    fault: Option<Fault>,
}

impl World {
    fn said(&self, line: usize, t: u8, op: &Op, effect: impl FnOnce() -> String, feature: u32) {
        self.sink.tick();
        let mut s = sink(&self.sink);
        s.ran += 1;
        s.features.insert(feature);
        let order = s.order;
        s.order += 1;
        if self.trace {
            let step = crate::program::Step { thread: t, op: *op };
            let e = effect();
            s.trace.push(format!(
                "{line:>4}: {}    -> #{order} {e}",
                format_step(&step)
            ));
        }
    }

    fn skipped(&self) {
        self.sink.tick();
        sink(&self.sink).skipped += 1;
    }

    /// After an invalidation of `r` ended: no device PTE of the range maps
    /// an older page version than the CPU.
    fn check_fresh(&self, r: &Range, line: Option<usize>, doing: &str) {
        let d = lock(&self.driver);
        let cpu = lock(&self.cpu);
        let (lo, hi) = (r.start / PAGE, (r.end - 1) / PAGE);
        for (&(id, page), &v) in &d.dev {
            if page < lo || page > hi {
                continue;
            }
            let now = cpu.get(&page).copied().unwrap_or(0);
            if v != now {
                diverge(
                    &self.sink,
                    DivergenceKind::StalePte,
                    line,
                    doing.to_string(),
                    format!(
                        "after the end, the device maps page {:#x} of {id} at version {v}, the CPU is at {now}",
                        page * PAGE
                    ),
                );
                return;
            }
        }
    }

    fn end(&self, inv: Invalidation, line: Option<usize>, doing: &str) {
        let r = *inv.range();
        self.subs.invalidate_range_end(inv);
        self.check_fresh(&r, line, doing);
    }

    fn step(&self, th: &mut Thread, line: usize, t: u8, op: &Op) {
        let kind = crate::codec::kind_of(op) as u32;
        match *op {
            Op::Insert {
                slot,
                start,
                len,
                cb,
            } => {
                let mut slots = lock(&self.slots);
                if slots[slot as usize].is_some() {
                    return self.skipped();
                }
                let ops = Arc::new(IntervalCb {
                    model: cb,
                    driver: self.driver.clone(),
                    sink: self.sink.clone(),
                });
                let r = self.subs.insert(start, len, ops);
                let ok = r.is_ok();
                let text = match &r {
                    Ok(iv) => format!("ok {} seq={:#x}", iv.id(), iv.seq()),
                    Err(e) => format!("error: {e}"),
                };
                if let Ok(iv) = r {
                    slots[slot as usize] = Some(iv);
                }
                drop(slots);
                self.said(line, t, op, || text, kind << 4 | ok as u32);
            }
            Op::Populate { count, start, len } => {
                // Intervals no line names again: a bigger tree under the
                // same blocking calls. The core holds them until release.
                use std::sync::atomic::Ordering::Relaxed;
                let room = MAX_BULK.saturating_sub(self.bulk.load(Relaxed));
                let count = u64::from(count).min(room);
                self.bulk.fetch_add(count, Relaxed);
                let mut ok = 0u32;
                for k in 0..count {
                    let ops = Arc::new(IntervalCb {
                        model: oracles::CallbackModel::GOOD,
                        driver: self.driver.clone(),
                        sink: self.sink.clone(),
                    });
                    let a = start.wrapping_add(k * notifier::PAGE_SIZE);
                    ok += u32::from(self.subs.insert(a, len, ops).is_ok());
                }
                self.said(
                    line,
                    t,
                    op,
                    || format!("populated {ok}"),
                    kind << 4 | (ok > 0) as u32,
                );
            }
            Op::Remove { slot } => {
                if !th.open.is_empty() {
                    return self.skipped();
                }
                let Some(iv) = lock(&self.slots)[slot as usize].take() else {
                    return self.skipped();
                };
                {
                    // The driver stops mirroring what the interval covers.
                    let mut d = lock(&self.driver);
                    d.dying.insert(iv.id());
                    let keys: Vec<_> = d
                        .dev
                        .range((iv.id(), 0)..=(iv.id(), u64::MAX))
                        .map(|(k, _)| *k)
                        .collect();
                    for k in keys {
                        d.dev.remove(&k);
                    }
                }
                let r = self.subs.remove(&iv);
                if r.is_ok() {
                    lock(&self.driver).removed.insert(iv.id());
                }
                let ok = r.is_ok();
                self.said(
                    line,
                    t,
                    op,
                    || match r {
                        Ok(()) => format!("ok {} removed", iv.id()),
                        Err(e) => format!("error: {e}"),
                    },
                    kind << 4 | ok as u32,
                );
            }
            Op::ReadBegin { slot } => {
                if !th.open.is_empty() {
                    return self.skipped();
                }
                let Some(iv) = lock(&self.slots)[slot as usize].clone() else {
                    return self.skipped();
                };
                match self.subs.read_begin(&iv) {
                    Ok(seq) => {
                        let sample: Vec<(u64, u64)> = {
                            let mut cpu = lock(&self.cpu);
                            fault_pages(&iv)
                                .map(|p| (p, *cpu.entry(p).or_insert(0)))
                                .collect()
                        };
                        let id = iv.id();
                        th.fault = Some(Fault { iv, seq, sample });
                        self.said(
                            line,
                            t,
                            op,
                            || format!("ok {id} seq={seq:#x}"),
                            kind << 4 | 1,
                        );
                    }
                    Err(e) => self.said(line, t, op, || format!("error: {e}"), kind << 4),
                }
            }
            Op::Commit => {
                let Some(f) = th.fault.take() else {
                    return self.skipped();
                };
                let mut d = lock(&self.driver);
                if d.dying.contains(&f.iv.id()) {
                    drop(d);
                    return self.said(line, t, op, || "dropped: removed".into(), kind << 4 | 2);
                }
                if f.iv.read_retry(f.seq) {
                    drop(d);
                    return self.said(line, t, op, || "retry".into(), kind << 4);
                }
                let stale = {
                    let cpu = lock(&self.cpu);
                    f.sample
                        .iter()
                        .find(|(p, v)| cpu.get(p).copied().unwrap_or(0) != *v)
                        .map(|&(p, v)| (p, v, cpu.get(&p).copied().unwrap_or(0)))
                };
                if let Some((p, v, now)) = stale {
                    drop(d);
                    diverge(
                        &self.sink,
                        DivergenceKind::StalePte,
                        Some(line),
                        format_step(&crate::program::Step { thread: t, op: *op }),
                        format!(
                            "read_retry({:#x}) is false, but page {:#x} of {} changed since read_begin (version {v}, now {now}): a commit across a collision",
                            f.seq,
                            p * PAGE,
                            f.iv.id()
                        ),
                    );
                    return;
                }
                for &(p, v) in &f.sample {
                    d.dev.insert((f.iv.id(), p), v);
                }
                drop(d);
                let id = f.iv.id();
                self.said(line, t, op, || format!("committed {id}"), kind << 4 | 1);
            }
            Op::CheckRetry => {
                let Some(f) = &th.fault else {
                    return self.skipped();
                };
                let r = f.iv.check_retry(f.seq);
                self.said(line, t, op, || format!("{r}"), kind << 4 | r as u32);
            }
            Op::Start {
                event,
                start,
                end,
                blockable,
                owner,
            } => {
                let range = Range {
                    start,
                    end,
                    event,
                    blockable,
                    owner: owner.map(|o| Owner(o.into())),
                };
                match self.subs.invalidate_range_start(&range) {
                    Ok(inv) => {
                        let hit = inv.hit();
                        {
                            // The CPU page table changes now, inside the bracket.
                            let mut cpu = lock(&self.cpu);
                            let (lo, hi) = (start / PAGE, (end - 1) / PAGE);
                            for (_, v) in cpu.range_mut(lo..=hi) {
                                *v += 1;
                            }
                        }
                        th.open.push(inv);
                        self.said(
                            line,
                            t,
                            op,
                            || format!("ok hit={hit}"),
                            kind << 4 | 1 | (hit as u32) << 1,
                        );
                    }
                    Err(e) => self.said(line, t, op, || format!("error: {e}"), kind << 4),
                }
            }
            Op::End => {
                let Some(inv) = th.open.pop() else {
                    return self.skipped();
                };
                let doing = format_step(&crate::program::Step { thread: t, op: *op });
                self.end(inv, Some(line), &doing);
                self.said(line, t, op, || "ok".into(), kind << 4 | 1);
            }
            Op::Release => {
                let r = self.subs.release();
                let ok = r.is_ok();
                self.said(
                    line,
                    t,
                    op,
                    || match r {
                        Ok(()) => "ok".into(),
                        Err(e) => format!("error: {e}"),
                    },
                    kind << 4 | ok as u32,
                );
            }
            Op::Register { slot, refuse } => {
                let mut cl = lock(&self.classic);
                if cl[slot as usize].is_some() {
                    return self.skipped();
                }
                let cb = Arc::new(ClassicCb {
                    refuse,
                    open: std::sync::atomic::AtomicI64::new(0),
                    released: std::sync::atomic::AtomicBool::new(false),
                    sink: self.sink.clone(),
                });
                let r = self.subs.register(cb.clone());
                let ok = r.is_ok();
                let text = match &r {
                    Ok(id) => format!("ok {id}"),
                    Err(e) => format!("error: {e}"),
                };
                if let Ok(id) = r {
                    cl[slot as usize] = Some((id, cb));
                }
                drop(cl);
                self.said(line, t, op, || text, kind << 4 | ok as u32);
            }
            Op::Unregister { slot } => {
                let Some((id, _)) = lock(&self.classic)[slot as usize].take() else {
                    return self.skipped();
                };
                let r = self.subs.unregister(id);
                let ok = r.is_ok();
                self.said(
                    line,
                    t,
                    op,
                    || match r {
                        Ok(()) => "ok".into(),
                        Err(e) => format!("error: {e}"),
                    },
                    kind << 4 | ok as u32,
                );
            }
            Op::Yield | Op::Mm { .. } | Op::Dev { .. } | Op::Expect(_) => self.skipped(),
        }
    }

    /// A thread's end: its open invalidations end, innermost first.
    fn finish(&self, th: &mut Thread, t: u8) {
        while let Some(inv) = th.open.pop() {
            let doing = format!("t{t} end (thread exit)");
            if self.trace {
                sink(&self.sink)
                    .trace
                    .push(format!("drain: t{t} end {:?}", inv.range()));
            }
            self.end(inv, None, &doing);
        }
    }

    /// After every thread is done.
    fn check_quiescent(&self) {
        let snap = self.subs.snapshot();
        if !self.subs.is_quiescent() || snap.waiters != 0 {
            diverge(
                &self.sink,
                DivergenceKind::NotQuiescent,
                None,
                "every thread done".into(),
                format!(
                    "seq={:#x} active={} deferred={:?} waiters={}",
                    snap.seq, snap.active, snap.deferred, snap.waiters
                ),
            );
        }
        for (id, cb) in lock(&self.classic).iter().flatten() {
            let open = cb.open.load(std::sync::atomic::Ordering::Relaxed);
            if open != 0 && !cb.released.load(std::sync::atomic::Ordering::Relaxed) {
                diverge(
                    &self.sink,
                    DivergenceKind::Callbacks,
                    None,
                    "every thread done".into(),
                    format!("classic {id} has {open} accepted start(s) without an end"),
                );
            }
        }
    }
}

std::thread_local! {
    static IN_RUN: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Shuttle installs, once per process, a panic hook that reports a failing
/// task's schedule and hides the panics it uses to tear tasks down; for
/// every other panic of the process it only prints "Task failed" noise
/// first. Keep its hook for panics inside a threads run, and the hook the
/// process had for all others.
fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let own = std::panic::take_hook();
        // An empty execution makes shuttle install its hook now.
        let log = Arc::new(std::sync::Mutex::new(Log::default()));
        shuttle::Runner::new(SeededScheduler::new(0, log), shuttle::Config::new()).run(|| {});
        let shuttle_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if IN_RUN.with(|c| c.get()) {
                shuttle_hook(info)
            } else {
                own(info)
            }
        }));
    });
}

/// Sets [`IN_RUN`] for its lifetime.
struct RunScope(bool);

impl RunScope {
    fn enter() -> RunScope {
        RunScope(IN_RUN.with(|c| c.replace(true)))
    }
}

impl Drop for RunScope {
    fn drop(&mut self) {
        IN_RUN.with(|c| c.set(self.0));
    }
}

/// How the threads of a run are made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Spawn {
    /// Shuttle tasks of the current execution.
    Shuttle,
    /// Real OS threads.
    Os,
}

impl Spawn {
    /// Runs the jobs on threads of their own and joins them. False if one
    /// panicked (recorded as a divergence; under shuttle the panic fails
    /// the execution before the join returns).
    pub(crate) fn run_all(self, jobs: Vec<Box<dyn FnOnce() + Send>>, s: &SinkRef) -> bool {
        let joined: Vec<Result<(), String>> = match self {
            Spawn::Shuttle => {
                let hs: Vec<_> = jobs.into_iter().map(shuttle::thread::spawn).collect();
                hs.into_iter()
                    .map(|h| h.join().map_err(|_| "a thread panicked".to_string()))
                    .collect()
            }
            Spawn::Os => {
                let hs: Vec<_> = jobs
                    .into_iter()
                    .map(|j| {
                        std::thread::Builder::new()
                            .stack_size(STACK)
                            .spawn(j)
                            .map_err(|e| e.to_string())
                    })
                    .collect();
                hs.into_iter()
                    .map(|h| h?.join().map_err(|p| panic_text(&*p)))
                    .collect()
            }
        };
        let mut ok = true;
        for r in joined {
            if let Err(msg) = r {
                ok = false;
                diverge(
                    s,
                    DivergenceKind::Panic,
                    None,
                    "running the threads".into(),
                    msg,
                );
            }
        }
        ok
    }
}

fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "non-string panic".into())
}

/// The notifier form: a core, the driver shadow, one thread per logical
/// thread running its lines, quiescence at the end.
fn notifier_body(
    config: Config,
    trace: bool,
    lines: Arc<Vec<Vec<(usize, Op)>>>,
    results: SinkRef,
    spawn: Spawn,
) {
    let subs = match Subscriptions::new(config) {
        Ok(s) => s,
        Err(e) => {
            sink(&results).trace.push(format!("invalid config: {e}"));
            return;
        }
    };
    let world = Arc::new(World {
        subs,
        slots: Mutex::new(Default::default()),
        classic: Mutex::new(Default::default()),
        driver: Arc::new(Mutex::new(Driver::default())),
        cpu: Arc::new(Mutex::new(BTreeMap::new())),
        sink: results.clone(),
        trace,
        bulk: Default::default(),
    });
    let jobs: Vec<Box<dyn FnOnce() + Send>> = (0..lines.len())
        .map(|t| {
            let (world, lines) = (world.clone(), lines.clone());
            Box::new(move || {
                let mut th = Thread::default();
                for (i, op) in &lines[t] {
                    world.step(&mut th, *i, t as u8, op);
                }
                world.finish(&mut th, t as u8);
            }) as Box<dyn FnOnce() + Send>
        })
        .collect();
    if spawn.run_all(jobs, &results) {
        world.check_quiescent();
    }
}

/// The body of one execution of `p`, for either form.
fn body(p: &Program, opts: &RunOptions, results: SinkRef, spawn: Spawn) -> impl Fn() + Send + Sync {
    let nthreads = p.config.threads as usize;
    let mut lines: Vec<Vec<(usize, Op)>> = vec![Vec::new(); nthreads];
    for (i, s) in p.steps.iter().enumerate() {
        lines[s.thread as usize].push((i, s.op));
    }
    let lines = Arc::new(lines);
    let config = Config {
        initial_seq: p.config.initial_seq,
        task_size: p.config.task_size,
        planted: opts.planted,
        ..Config::default()
    };
    let (p, opts) = (p.clone(), *opts);
    move || {
        if p.config.has_devices() {
            crate::threads::mirror::body(&p, &opts, lines.clone(), results.clone(), spawn);
        } else {
            notifier_body(
                config.clone(),
                opts.trace,
                lines.clone(),
                results.clone(),
                spawn,
            );
        }
    }
}

/// Whether `run_threads` uses real OS threads (see [`set_os_threads`]).
static OS_THREADS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// From now on, `threads` programs of this process run on real OS threads
/// instead of shuttle tasks (`mnfuzz fuzz|soak|replay --os-threads`):
/// the OS schedules them, no schedule seed is read, and a watchdog reports
/// a run in which no thread has taken a step for `hang_ms` milliseconds
/// as a [`DivergenceKind::Deadlock`]. 0 goes back to shuttle.
pub fn set_os_threads(hang_ms: u64) {
    OS_THREADS.store(hang_ms, std::sync::atomic::Ordering::Relaxed);
}

/// Runs a `threads` program: its lines split per thread, one shuttle task
/// each, interleaved by `config.schedule` (or on OS threads, see
/// [`set_os_threads`]).
pub fn run_threads(p: &Program, opts: &RunOptions) -> Outcome {
    let hang_ms = OS_THREADS.load(std::sync::atomic::Ordering::Relaxed);
    if hang_ms > 0 {
        return run_os_threads(p, opts, std::time::Duration::from_millis(hang_ms));
    }
    run_shuttle(p, opts)
}

/// Runs `p` on real OS threads under a watchdog: the run is a hang (a
/// [`DivergenceKind::Deadlock`]) once no thread has taken a step for
/// `hang_after` while some are unfinished. The verdict depends on
/// progress, not on how long a run takes; the hung threads are left
/// behind (they cannot be stopped), so a process that finds a hang
/// should report it and exit.
pub fn run_os_threads(p: &Program, opts: &RunOptions, hang_after: std::time::Duration) -> Outcome {
    let results: SinkRef = Arc::default();
    let body = body(p, opts, results.clone(), Spawn::Os);
    run_watched(body, &results, hang_after, p.config.threads);
    finish_outcome(&results, None, opts.trace, p.config.schedule)
}

/// Runs `f` on a thread of its own while watching `results`' progress:
/// see [`run_os_threads`]. A panic of `f` is recorded as a divergence.
pub(crate) fn run_watched(
    f: impl FnOnce() + Send + 'static,
    results: &SinkRef,
    hang_after: std::time::Duration,
    threads: u8,
) {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let handle = std::thread::Builder::new()
        .stack_size(STACK)
        .spawn(move || {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
            // The watchdog wakes at once (a send to a gone receiver is fine).
            let _ = tx.send(());
            r
        });
    let handle = match handle {
        Ok(h) => h,
        Err(e) => {
            diverge(
                results,
                DivergenceKind::Panic,
                None,
                "starting the threads".into(),
                e.to_string(),
            );
            return;
        }
    };
    let poll = (hang_after / 20).clamp(
        std::time::Duration::from_micros(100),
        std::time::Duration::from_millis(20),
    );
    let mut last = results.progress();
    let mut since = std::time::Instant::now();
    while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(poll) {
        let now = results.progress();
        if now != last {
            last = now;
            since = std::time::Instant::now();
        } else if since.elapsed() >= hang_after {
            diverge(
                results,
                DivergenceKind::Deadlock,
                None,
                format!("running {threads} OS threads"),
                format!(
                    "no thread took a step for {} ms ({last} steps so far): a deadlock or a lost wake-up",
                    hang_after.as_millis()
                ),
            );
            // The hung threads stay behind; the handle is dropped.
            return;
        }
    }
    if let Ok(Err(p)) = handle.join() {
        diverge(
            results,
            DivergenceKind::Panic,
            None,
            "running the threads".into(),
            panic_text(&*p),
        );
    }
}

fn run_shuttle(p: &Program, opts: &RunOptions) -> Outcome {
    install_panic_hook();
    let results: SinkRef = Arc::default();
    let log = Arc::new(std::sync::Mutex::new(Log::default()));
    let scheduler = SeededScheduler::new(p.config.schedule, log.clone());
    let mut sc = shuttle::Config::new();
    sc.failure_persistence = shuttle::FailurePersistence::None;
    sc.silence_warnings = true;
    sc.max_steps = shuttle::MaxSteps::FailAfter(MAX_POINTS);
    sc.stack_size = STACK;
    let runner = shuttle::Runner::new(scheduler, sc);
    let body = body(p, opts, results.clone(), Spawn::Shuttle);
    let result = {
        let _scope = notifier::ShuttleScope::enter();
        let _run = RunScope::enter();
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| runner.run(body)))
    };
    if let Err(payload) = result {
        let msg = panic_text(&*payload);
        let mut s = sink(&results);
        if s.divergence.is_none() {
            let kind = if msg.starts_with("deadlock") {
                DivergenceKind::Deadlock
            } else if msg.starts_with("exceeded max_steps") {
                DivergenceKind::Livelock
            } else {
                DivergenceKind::Panic
            };
            s.divergence = Some(Divergence {
                kind,
                step: None,
                doing: "running the threads".into(),
                core: msg,
                model: "DESIGN.md §2: every waiter is woken, no panic".into(),
                states: (String::new(), String::new()),
            });
        }
    }
    let log = std::mem::take(&mut *log.lock().unwrap_or_else(|e| e.into_inner()));
    finish_outcome(&results, Some(log), opts.trace, p.config.schedule)
}

fn finish_outcome(results: &SinkRef, log: Option<Log>, trace: bool, schedule: u64) -> Outcome {
    let mut s = std::mem::take(&mut *sink(results));
    let mut features: Vec<u32> = s.features.into_iter().collect();
    if let Some(log) = log {
        // How much the schedule interleaved, in powers of two.
        features.push(0x1_0000 | (32 - (log.switches.len() as u32).leading_zeros()));
        if trace {
            let mut line = format!(
                "drain: schedule {:#x}: {} scheduling points, {} switches:",
                schedule,
                log.points,
                log.switches.len()
            );
            for sw in log.switches.iter().take(64) {
                let who = match sw.task {
                    0 => "main".to_string(),
                    n => format!("t{}", n - 1),
                };
                let _ = write!(line, " {}@{}", who, sw.point);
            }
            if log.switches.len() > 64 {
                line.push_str(" ...");
            }
            s.trace.push(line);
        }
    }
    Outcome {
        divergence: s.divergence,
        trace: s.trace,
        features,
        cells: Vec::new(),
        stats: crate::outcome::ExecStats {
            ran: s.ran,
            skipped: s.skipped,
            blocked: 0,
            callbacks: s.callbacks,
            peak_intervals: 0,
            layout_effects: 0,
        },
        turns: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The watchdog reports a run whose threads stop taking steps, and
    /// returns within its bound: the verdict comes from the absence of
    /// progress, not from a race.
    #[test]
    fn the_watchdog_reports_a_hung_run() {
        let results: SinkRef = Arc::default();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let r = results.clone();
        run_watched(
            move || {
                r.tick();
                // Hangs until the test lets it go.
                let _ = rx.recv();
            },
            &results,
            std::time::Duration::from_millis(50),
            1,
        );
        let d = sink(&results).divergence.take().expect("a hang");
        assert_eq!(d.kind, DivergenceKind::Deadlock);
        assert!(d.core.contains("no thread took a step"), "{}", d.core);
        drop(tx);
    }

    /// A run that ends is no hang, and its panic is a divergence.
    #[test]
    fn the_watchdog_passes_a_finished_run_and_reports_a_panic() {
        let results: SinkRef = Arc::default();
        let r = results.clone();
        run_watched(
            move || r.tick(),
            &results,
            std::time::Duration::from_secs(30),
            1,
        );
        assert!(sink(&results).divergence.is_none());
        run_watched(
            || panic!("boom"),
            &results,
            std::time::Duration::from_secs(30),
            1,
        );
        let d = sink(&results).divergence.take().expect("the panic");
        assert_eq!(d.kind, DivergenceKind::Panic);
        assert!(d.core.contains("boom"));
    }
}
