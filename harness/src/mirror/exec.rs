//! The executor of the `mirror` target: address spaces, device mirrors and
//! CPU and device accesses on logical threads, checked after every step by
//! the oracles of DESIGN §5: no stale device PTE, coherence of every device
//! access with the CPU's view, liveness, and quiescence after the drain.
//!
//! Scheduling: each line is a turn of its thread. The line's op joins the
//! thread's queue, and the thread takes one step: of the operation it is in
//! the middle of (a munmap between its start and end, a fault between begin
//! and commit), or else of the next queued op. A thread whose step cannot
//! run (mmap lock, driver lock, read_begin, remove) stays blocked until a
//! later turn. At the end, turns go round the threads until all are done;
//! a round in which nobody moves is a deadlock.
//!
//! Each thread remembers what its last finished op answered (an
//! [`Answer`]); an `expect` line, queued like any op, compares it with the
//! expectation once the thread's earlier ops have finished.

use std::collections::VecDeque;
use std::fmt::Write as _;

use mirror::{snapshot, Fault, FaultStep, Mirror};
use mm::{Env, Mm, MmConfig, MmId, MmOp, Outcome as MmOutcome, Phys, Pte, Task, TaskStep};
use notifier::Range;

use crate::outcome::{Divergence, DivergenceKind, Outcome, RunOptions};
use crate::program::{
    DevStep, ErrKind, Expect, MmStep, Op, PageState, Program, DEVICES, MAX_PREFETCH, MAX_THREADS,
    MMS, PREFETCH_STRIDE,
};
use crate::text::{expect_text, states_text};

mod shadow;

/// Retries with no change of the global seq since the previous attempt. A
/// retry needs a callback, so a seq change; the one exception is a second
/// hit in the same cycle, after which read_begin waits for the cycle end.
/// So one quiet retry in a row is the most correct code can show.
const MAX_QUIET_RETRIES: u32 = 1;

struct Locks<'a> {
    mirrors: &'a [Option<Mirror>],
}

// A thread never starts an invalidation while holding a driver lock (a
// fault holds it only from commit to install), so any holder is another
// thread and the callback would sleep.
impl Env for Locks<'_> {
    fn callbacks_can_run(&self, mm: MmId, range: &Range) -> bool {
        self.mirrors
            .iter()
            .flatten()
            .filter(|m| m.mm == mm)
            .all(|m| m.callback_can_run(range))
    }

    // The device whose own migration or exclusive conversion this was
    // skipped it in its callback: it maps what it now owns.
    fn applied(&self, mm: &Mm, range: &Range) {
        for m in self.mirrors.iter().flatten().filter(|m| m.mm == mm.id) {
            m.own_range_done(mm, range);
        }
    }
}

/// Where a registration-cache device access is.
enum RegPhase {
    Begin,
    Revalidate(Fault),
    // In flight on this registration's pinned frame.
    Go { reg: u64, frame: mm::FrameId },
}

enum Access {
    Read,
    Write(u64),
}

/// What a logical thread's last finished op answered: what `expect`
/// lines compare with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// It succeeded without a value.
    Done,
    /// It succeeded with a value: what a CPU or device read returned or a
    /// write stored, where an mmap or mremap mapped.
    Value(u64),
    /// A device operation reported this many pages.
    Pages(u64),
    /// A snapshot reported these page states.
    States(Vec<PageState>),
    /// It failed.
    Error(ErrKind),
    /// It was skipped as meaningless in the state.
    Skipped,
}

impl Answer {
    /// The answer of a finished address space operation. mm's own
    /// `Skipped` (nothing to do) is a success.
    pub fn of_mm(r: &Result<MmOutcome, mm::MmError>) -> Answer {
        match r {
            Ok(MmOutcome::Value(v) | MmOutcome::Addr(v)) => Answer::Value(*v),
            Ok(MmOutcome::Pages(n)) => Answer::Pages(*n),
            Ok(MmOutcome::Done | MmOutcome::Skipped | MmOutcome::Forked(_)) => Answer::Done,
            Err(e) => Answer::Error(ErrKind::of_mm(e)),
        }
    }

    /// Whether `e` holds of this answer (`Faults` is not about answers:
    /// false).
    pub fn satisfies(&self, e: &Expect) -> bool {
        match (e, self) {
            (
                Expect::Ok,
                Answer::Done | Answer::Value(_) | Answer::Pages(_) | Answer::States(_),
            )
            | (Expect::Skipped, Answer::Skipped)
            | (Expect::Error(None), Answer::Error(_)) => true,
            (Expect::Value(v), Answer::Value(w)) | (Expect::Pages(v), Answer::Pages(w)) => v == w,
            (Expect::Error(Some(k)), Answer::Error(j)) => k == j,
            (Expect::States { runs, len }, Answer::States(got)) => {
                let mut at = 0;
                for &(st, n) in &runs[..usize::from(*len).min(runs.len())] {
                    let end = at + usize::from(n);
                    if end > got.len() || got[at..end].iter().any(|&g| g != st) {
                        return false;
                    }
                    at = end;
                }
                at == got.len()
            }
            _ => false,
        }
    }

    /// The answer in `expect` words: `ok`, `0x1000`, `error:efault`,
    /// `pages=3`, `[none write*3]`, `skipped`.
    pub fn text(&self) -> String {
        match self {
            Answer::Done => "ok".into(),
            Answer::Value(v) => expect_text(&Expect::Value(*v)),
            Answer::Pages(n) => expect_text(&Expect::Pages(*n)),
            Answer::Error(k) => expect_text(&Expect::Error(Some(*k))),
            Answer::Skipped => "skipped".into(),
            Answer::States(states) => {
                let mut runs: Vec<(PageState, u64)> = Vec::new();
                for &st in states {
                    match runs.last_mut() {
                        Some((last, n)) if *last == st => *n += 1,
                        _ => runs.push((st, 1)),
                    }
                }
                states_text(runs)
            }
        }
    }
}

enum Work {
    Mm {
        mm: usize,
        task: Task,
        what: &'static str,
        // A CPU load's address.
        load: Option<u64>,
    },
    Fault {
        dev: usize,
        fault: Fault,
        access: Access,
        addr: u64,
        // Retries seen so far, the global seq then, and retries with no
        // invalidation in between.
        seen: (u32, u64, u32),
        // What the access read or wrote once installed.
        value: Option<u64>,
    },
    /// Migrate, evict or make exclusive: an mm operation on behalf of a device.
    DevTask {
        dev: usize,
        task: Task,
        what: &'static str,
    },
    /// Pinning a new registration.
    Register {
        dev: usize,
        fault: Fault,
        pages: u64,
    },
    /// A registration-cache device access.
    RegAccess {
        dev: usize,
        addr: u64,
        access: Access,
        phase: RegPhase,
    },
    Unregister {
        dev: usize,
        addr: u64,
        removing: Option<notifier::RemoveWait>,
    },
    /// One item of the device's deferred work.
    Deferred { dev: usize, item: mirror::Deferred },
}

/// A `prefetch` under way: its faults run one after another as
/// [`Work::Fault`]s of its thread.
#[derive(Clone, Copy)]
struct Prefetching {
    // The next fault's address, faults left, faults that mapped their page.
    next: u64,
    left: u64,
    mapped: u64,
}

#[derive(Default)]
struct Thread {
    queue: VecDeque<usize>,
    work: Option<Work>,
    prefetch: Option<Prefetching>,
    // What its last finished op answered.
    last: Option<Answer>,
}

struct World<'p> {
    program: &'p Program,
    opts: RunOptions,
    phys: Phys,
    mms: Vec<Option<Mm>>,
    mirrors: Vec<Option<Mirror>>,
    threads: Vec<Thread>,
    // A fork is running: m1 is spoken for.
    forking: bool,
    // The last turn could not move.
    blocked: bool,
    out: Outcome,
    // Reach: each device slot's first strategy, and whether a huge page
    // and a device-private page were seen.
    opened: [Option<mirror::strategy::StrategySpec>; 2],
    seen_huge: bool,
    seen_devmem: bool,
    // Per device: the most items of deferred work waiting at once, and
    // the most changes one of them batched.
    backlog_peak: [(usize, usize); 2],
    // What every address space holds, kept from the ops alone.
    shadow: oracles::shadow::Shadow,
}

type Checked = Result<(), Box<Divergence>>;

// Trace text is built only when tracing: formatting it was most of a
// step's cost.
macro_rules! say {
    ($w:expr, $($arg:tt)*) => {
        if $w.opts.trace {
            format!($($arg)*)
        } else {
            String::new()
        }
    };
}

/// Runs a mirror-target program.
pub fn run_mirror(program: &Program, opts: &RunOptions) -> Outcome {
    let cfg = MmConfig {
        task_size: program.config.task_size,
        initial_seq: program.config.initial_seq,
        planted: opts.planted,
    };
    let mut w = World {
        program,
        opts: *opts,
        phys: Phys::new(),
        mms: (0..MMS).map(|_| None).collect(),
        mirrors: (0..DEVICES).map(|_| None).collect(),
        threads: (0..MAX_THREADS).map(|_| Thread::default()).collect(),
        forking: false,
        blocked: false,
        out: Outcome::default(),
        opened: [None, None],
        seen_huge: false,
        seen_devmem: false,
        backlog_peak: [(0, 0); 2],
        shadow: oracles::shadow::Shadow::new(MMS as usize),
    };
    w.mms[0] = Some(Mm::new(MmId(0), cfg));
    w.shadow.create(0);
    for (d, s) in program.config.devices.iter().enumerate() {
        if let Some(s) = s {
            let mm = w.mms[0].as_ref().expect("m0 exists");
            w.mirrors[d] = Mirror::open(d as u8, mm, *s, opts.planted).ok();
            if w.mirrors[d].is_some() {
                w.opened[d] = Some(*s);
            }
        }
    }
    let r = w.schedule().and_then(|()| w.drain());
    let point = crate::reach::config_point(w.opened, w.seen_huge, w.seen_devmem);
    w.out.cells.push(point);
    w.out.divergence = r.err().map(|d| *d);
    w.out
}

/// The address an mm op names first, if any.
fn op_addr(op: &MmOp) -> Option<u64> {
    match *op {
        MmOp::Mmap { addr, .. }
        | MmOp::Munmap { addr, .. }
        | MmOp::Mprotect { addr, .. }
        | MmOp::Mremap { addr, .. }
        | MmOp::Dontneed { addr, .. }
        | MmOp::Access { addr, .. }
        | MmOp::Reclaim { addr }
        | MmOp::Migrate { addr }
        | MmOp::ThpCollapse { addr }
        | MmOp::ThpSplit { addr }
        | MmOp::DeviceMigrate { addr, .. }
        | MmOp::MakeExclusive { addr, .. }
        | MmOp::Evict { addr, .. } => Some(addr),
        MmOp::Ksm { a, .. } => Some(a),
        _ => None,
    }
}

pub(crate) fn mm_op(op: MmStep) -> (MmOp, &'static str) {
    let k = op.keyword();
    let op = match op {
        MmStep::Mmap {
            addr,
            len,
            kind,
            prot,
        } => MmOp::Mmap {
            addr,
            len,
            kind,
            prot,
        },
        MmStep::Munmap { addr, len } => MmOp::Munmap { addr, len },
        MmStep::Mprotect { addr, len, prot } => MmOp::Mprotect { addr, len, prot },
        MmStep::Mremap {
            addr,
            old_len,
            new_len,
            to,
            dontunmap,
        } => MmOp::Mremap {
            addr,
            old_len,
            new_len,
            new_addr: to,
            dontunmap,
        },
        MmStep::Dontneed { addr, len } => MmOp::Dontneed { addr, len },
        MmStep::Fork => MmOp::Fork,
        MmStep::Read { addr } => MmOp::Access { addr, write: None },
        MmStep::Write { addr, value } => MmOp::Access {
            addr,
            write: Some(value),
        },
        MmStep::Reclaim { addr } => MmOp::Reclaim { addr },
        MmStep::Migrate { addr } => MmOp::Migrate { addr },
        MmStep::Ksm { a, b } => MmOp::Ksm { a, b },
        MmStep::Collapse { addr } => MmOp::ThpCollapse { addr },
        MmStep::Split { addr } => MmOp::ThpSplit { addr },
        MmStep::ClearRefs => MmOp::ClearRefs,
        MmStep::OomReap => MmOp::OomReap,
        MmStep::Exit => MmOp::Exit,
    };
    (op, k)
}

impl World<'_> {
    fn schedule(&mut self) -> Checked {
        for i in 0..self.program.steps.len() {
            let t = self.program.steps[i].thread as usize;
            if self.program.steps[i].op != Op::Yield {
                self.threads[t].queue.push_back(i);
            }
            let said = self.turn(t)?;
            if self.opts.trace {
                let line = crate::text::format_step(&self.program.steps[i]);
                self.out.trace.push(format!("{i:>4}: {line}    -> {said}"));
            }
            self.check(Some(i))?;
        }
        Ok(())
    }

    fn drain(&mut self) -> Checked {
        let live = self.program.config.threads as usize;
        loop {
            let mut moved = false;
            for t in 0..live {
                if self.threads[t].work.is_none() && self.threads[t].queue.is_empty() {
                    continue;
                }
                let before = self.out.stats.ran + self.out.stats.skipped;
                let said = self.turn(t)?;
                let blocked = self.blocked;
                moved |= !blocked || self.out.stats.ran + self.out.stats.skipped != before;
                if self.opts.trace {
                    self.out.trace.push(format!("drain: t{t}    -> {said}"));
                }
                self.check(None)?;
            }
            if !moved {
                break;
            }
        }
        let stuck: Vec<usize> = (0..live)
            .filter(|&t| self.threads[t].work.is_some() || !self.threads[t].queue.is_empty())
            .collect();
        if !stuck.is_empty() {
            return Err(self.diverge(
                DivergenceKind::Deadlock,
                None,
                "draining".into(),
                format!("threads {stuck:?} cannot move"),
                "every operation finishes once the others have".into(),
            ));
        }
        for mm in self.mms.iter().flatten() {
            let quiet = mm.notifier.is_quiescent() && mm.lock == mm::MmapLock::default();
            if !quiet {
                return Err(self.diverge(
                    DivergenceKind::NotQuiescent,
                    None,
                    "checking quiescence after the drain".into(),
                    format!(
                        "m{}: {:?}, mmap lock {:?}",
                        mm.id.0,
                        mm.notifier.snapshot(),
                        mm.lock
                    ),
                    "notifier quiescent, mmap lock free".into(),
                ));
            }
        }
        if let Some(m) = self
            .mirrors
            .iter()
            .flatten()
            .find(|m| m.lock_holder().is_some())
        {
            return Err(self.diverge(
                DivergenceKind::NotQuiescent,
                None,
                "checking driver locks after the drain".into(),
                format!("d{} lock held by t{:?}", m.id, m.lock_holder()),
                "driver locks free".into(),
            ));
        }
        self.shadow_final()
    }

    /// One step of thread `t`; returns what happened, for the trace.
    fn turn(&mut self, t: usize) -> Result<String, Box<Divergence>> {
        let r = self.turn_inner(t);
        // Reach: the intervals of every address space's tree at once.
        let live: usize = self
            .mms
            .iter()
            .flatten()
            .map(|m| m.notifier.tree_len())
            .sum();
        let peak = &mut self.out.stats.peak_intervals;
        if live as u64 > *peak {
            *peak = live as u64;
            // Tree sizes by powers of two, as the notifier target does for
            // `populate`: feedback keeps the inputs that grow them.
            if live >= 8 {
                self.feature(0xd000 | (usize::BITS - live.leading_zeros()));
            }
        }
        // Deferred work that piles up before it runs (a queue, a batch of
        // changes for one item) is where drivers' overflow and ordering
        // paths live: each new high per device is kept, so the engine can
        // grow it one step at a time.
        for d in 0..self.mirrors.len().min(2) {
            let Some(m) = self.mirrors[d].as_ref() else {
                continue;
            };
            let kind = u32::from(m.spec.kind) << 5;
            let (queued, batch) = m.backlog();
            let peak = &mut self.backlog_peak[d];
            let grew = (queued > peak.0, batch > peak.1);
            peak.0 = peak.0.max(queued);
            peak.1 = peak.1.max(batch);
            if grew.0 {
                self.feature(0xe000 | kind | queued.min(31) as u32);
            }
            if grew.1 {
                self.feature(0xe800 | kind | batch.min(31) as u32);
            }
        }
        r
    }

    fn turn_inner(&mut self, t: usize) -> Result<String, Box<Divergence>> {
        self.blocked = false;
        if self.opts.trace {
            let th = &self.threads[t];
            self.out.turns.push(crate::outcome::Turn {
                thread: t as u8,
                started: th.queue.front().copied().filter(|_| th.work.is_none()),
                busy: th.work.is_some(),
            });
        }
        if self.threads[t].work.is_none() {
            let Some(i) = self.threads[t].queue.pop_front() else {
                return Ok("idle".into());
            };
            if let Some(said) = self.start(t, i)? {
                return Ok(said);
            }
        }
        self.advance(t)
    }

    /// Thread `t`'s op is skipped: that is its answer.
    fn skip(&mut self, t: usize, why: &str) -> Option<String> {
        self.out.stats.skipped += 1;
        self.threads[t].last = Some(Answer::Skipped);
        Some(say!(self, "skipped: {why}"))
    }

    fn answer(&mut self, t: usize, a: Answer) {
        self.threads[t].last = Some(a);
    }

    /// Line `i`, thread `t`'s `expect e`: compares, and diverges on a
    /// mismatch if the run checks expectations.
    fn expect(&mut self, t: usize, i: usize, e: Expect) -> Result<Option<String>, Box<Divergence>> {
        self.out.stats.ran += 1;
        let holds = match e {
            Expect::Faults { dev, n } => self
                .mirrors
                .get(usize::from(dev))
                .and_then(Option::as_ref)
                .is_some_and(|m| m.faults() == n),
            _ => self.threads[t]
                .last
                .as_ref()
                .is_some_and(|a| a.satisfies(&e)),
        };
        self.feature(0x700 | u32::from(holds));
        if holds {
            return Ok(Some(say!(self, "expectation holds")));
        }
        if !self.opts.expect {
            return Ok(Some(say!(self, "expectation does not hold (not checked)")));
        }
        let got = match e {
            Expect::Faults { dev, .. } => match self.mirrors.get(usize::from(dev)) {
                Some(Some(m)) => format!("d{dev} has handled {} faults", m.faults()),
                _ => format!("d{dev} is not open"),
            },
            _ => match &self.threads[t].last {
                Some(a) => format!("t{t}'s last finished op answered {}", a.text()),
                None => format!("t{t} has no finished op yet"),
            },
        };
        Err(self.diverge(
            DivergenceKind::Expect,
            Some(i),
            crate::text::format_step(&self.program.steps[i]),
            got,
            format!("expected {}", expect_text(&e)),
        ))
    }

    fn mm_ready(&self, mm: usize) -> bool {
        self.mms[mm].as_ref().is_some_and(|m| !m.exited)
    }

    /// Starts the op of line `i` on thread `t`. Returns `Some` when it is
    /// already finished (or skipped); `None` when there is work to step.
    fn start(&mut self, t: usize, i: usize) -> Result<Option<String>, Box<Divergence>> {
        let op = self.program.steps[i].op;
        self.threads[t].prefetch = None;
        self.feature(op.keyword().as_bytes()[0] as u32 ^ (op.keyword().len() as u32) << 8);
        match op {
            Op::Mm { mm, op } => {
                let mm = mm as usize;
                if !self.mm_ready(mm) {
                    return Ok(self.skip(t, "no such address space"));
                }
                if op == MmStep::Fork {
                    if mm != 0 || self.mms[1].is_some() || self.forking {
                        return Ok(self.skip(t, "m0 has forked already"));
                    }
                    self.forking = true;
                }
                let (mop, what) = mm_op(op);
                let load = match op {
                    MmStep::Read { addr } => Some(addr),
                    _ => None,
                };
                self.threads[t].work = Some(Work::Mm {
                    mm,
                    task: Task::new(mop, t as u8),
                    what,
                    load,
                });
                Ok(None)
            }
            Op::Dev { dev, op } => {
                let d = dev as usize;
                if let DevStep::Open { mm, strategy } = op {
                    if self.mirrors[d].is_some() {
                        return Ok(self.skip(t, "device already open"));
                    }
                    if !self.mm_ready(mm as usize) {
                        return Ok(self.skip(t, "no such address space"));
                    }
                    let m = self.mms[mm as usize].as_ref().expect("checked");
                    self.out.stats.ran += 1;
                    return Ok(Some(
                        match Mirror::open(dev, m, strategy, self.opts.planted) {
                            Ok(mirror) => {
                                if self.opened[d].is_none() {
                                    self.opened[d] = Some(strategy);
                                }
                                self.mirrors[d] = Some(mirror);
                                self.answer(t, Answer::Done);
                                say!(self, "d{dev} open on m{mm}")
                            }
                            Err(e) => {
                                self.answer(t, Answer::Error(ErrKind::of_mirror(&e)));
                                say!(self, "error: {e}")
                            }
                        },
                    ));
                }
                // Reach: the device ops as they start (faults record their
                // phases as they go).
                let at = match op {
                    DevStep::Register { addr, .. }
                    | DevStep::Attr { addr, .. }
                    | DevStep::Unregister { addr }
                    | DevStep::Read { addr }
                    | DevStep::Write { addr, .. } => Some(Some(addr)),
                    DevStep::Work => Some(None),
                    _ => None,
                };
                if let Some(at) = at {
                    let kw = Op::Dev { dev, op }.keyword();
                    self.cell(d, kw, at, None);
                }
                let Some(m) = &self.mirrors[d] else {
                    return Ok(self.skip(t, "device not open"));
                };
                let mm = m.mm.0 as usize;
                if !self.mm_ready(mm) {
                    return Ok(self.skip(t, "its address space is gone"));
                }
                match op {
                    DevStep::Open { .. } => unreachable!("handled above"),
                    DevStep::Snapshot { addr, len } => {
                        self.out.stats.ran += 1;
                        let states =
                            snapshot(m, self.mms[mm].as_ref().expect("checked"), addr, len);
                        let answer = Answer::States(states);
                        let said = say!(self, "{}", answer.text());
                        self.answer(t, answer);
                        Ok(Some(said))
                    }
                    DevStep::Exclusive { addr, len } | DevStep::Evict { addr, len } => {
                        let owner = m.owner.0;
                        let (op, what) = match op {
                            DevStep::Exclusive { .. } => {
                                (MmOp::MakeExclusive { addr, len, owner }, "exclusive")
                            }
                            _ => (MmOp::Evict { addr, len, owner }, "evict"),
                        };
                        self.threads[t].work = Some(Work::DevTask {
                            dev: d,
                            task: Task::new(op, t as u8),
                            what,
                        });
                        Ok(None)
                    }
                    DevStep::Register { addr, len } => {
                        let mm = self.mms[mm].as_ref().expect("checked");
                        match m.register(mm, addr, len) {
                            Ok(fault) => {
                                let pages = fault.pages();
                                self.threads[t].work = Some(Work::Register {
                                    dev: d,
                                    fault,
                                    pages,
                                });
                                Ok(None)
                            }
                            Err(e) => {
                                self.out.stats.ran += 1;
                                self.answer(t, Answer::Error(ErrKind::of_mirror(&e)));
                                Ok(Some(say!(self, "d{dev} register: error {e}")))
                            }
                        }
                    }
                    DevStep::Attr { addr, len } => {
                        self.out.stats.ran += 1;
                        let mm = self.mms[mm].as_ref().expect("checked");
                        match m.set_attr(mm, addr, len) {
                            Ok(()) => {
                                self.answer(t, Answer::Done);
                                Ok(Some(say!(self, "d{dev} attr: set")))
                            }
                            Err(e) => {
                                self.answer(t, Answer::Error(ErrKind::of_mirror(&e)));
                                Ok(Some(say!(self, "d{dev} attr: error {e}")))
                            }
                        }
                    }
                    DevStep::Unregister { addr } => {
                        self.threads[t].work = Some(Work::Unregister {
                            dev: d,
                            addr,
                            removing: None,
                        });
                        Ok(None)
                    }
                    DevStep::Work => match m.take_work() {
                        Some(item) => {
                            self.threads[t].work = Some(Work::Deferred { dev: d, item });
                            Ok(None)
                        }
                        None => {
                            self.out.stats.ran += 1;
                            self.answer(t, Answer::Done);
                            Ok(Some(say!(self, "d{dev} work: nothing queued")))
                        }
                    },
                    DevStep::Read { addr } | DevStep::Write { addr, .. } => {
                        let access = match op {
                            DevStep::Write { value, .. } => Access::Write(value),
                            _ => Access::Read,
                        };
                        let write = matches!(access, Access::Write(_));
                        if m.uses_registrations() {
                            self.threads[t].work = Some(Work::RegAccess {
                                dev: d,
                                addr,
                                access,
                                phase: RegPhase::Begin,
                            });
                            return Ok(None);
                        }
                        if let Some(frame) = m.translate(addr, write) {
                            self.out.stats.ran += 1;
                            let (said, v) = self.device_access(d, addr, frame, &access, Some(i))?;
                            self.answer(t, Answer::Value(v));
                            return Ok(Some(said));
                        }
                        let seq = self.mms[mm]
                            .as_ref()
                            .expect("checked")
                            .notifier
                            .snapshot()
                            .seq;
                        self.threads[t].work = Some(Work::Fault {
                            dev: d,
                            fault: Fault::new(addr, write),
                            access,
                            addr,
                            seen: (0, seq, 0),
                            value: None,
                        });
                        Ok(None)
                    }
                    DevStep::Prefetch { addr, len } => {
                        if m.uses_registrations() {
                            self.out.stats.ran += 1;
                            self.answer(t, Answer::Error(ErrKind::Inval));
                            return Ok(Some(say!(self, "d{dev} prefetch: error EINVAL")));
                        }
                        let left = len.div_ceil(PREFETCH_STRIDE).min(MAX_PREFETCH);
                        if left == 0 {
                            self.out.stats.ran += 1;
                            self.answer(t, Answer::Pages(0));
                            return Ok(Some(say!(self, "d{dev} prefetch: nothing")));
                        }
                        self.threads[t].prefetch = Some(Prefetching {
                            next: addr,
                            left,
                            mapped: 0,
                        });
                        self.threads[t].work = Some(self.prefetch_fault(d, mm, addr));
                        Ok(None)
                    }
                    DevStep::Migrate { addr, len } => {
                        let owner = m.owner.0;
                        self.threads[t].work = Some(Work::DevTask {
                            dev: d,
                            task: Task::new(MmOp::DeviceMigrate { addr, len, owner }, t as u8),
                            what: "migrate",
                        });
                        Ok(None)
                    }
                }
            }
            Op::Expect(e) => self.expect(t, i, e),
            _ => Ok(self.skip(t, "not an op of the mirror target")),
        }
    }

    fn device_access(
        &mut self,
        d: usize,
        addr: u64,
        frame: mm::FrameId,
        access: &Access,
        at: Option<usize>,
    ) -> Result<(String, u64), Box<Divergence>> {
        let m = self.mirrors[d].as_ref().expect("open");
        let mi = m.mm.0 as usize;
        let mm = self.mms[mi].as_ref().expect("live");
        let cpu = oracles::mirror::reference_read(mm, &self.phys, addr);
        match *access {
            Access::Read => {
                let v = self.phys.data(frame);
                if cpu != Some(v) {
                    return Err(self.diverge(
                        DivergenceKind::Coherence,
                        at,
                        format!("d{d} read {addr:#x}"),
                        format!("the device read {v:#x}"),
                        format!("a CPU read returns {}", show(cpu)),
                    ));
                }
                self.feature(0x100 | (v.min(3) as u32));
                self.shadow_device(d, mi, addr, access, v, at)?;
                Ok((say!(self, "device read {v:#x}"), v))
            }
            Access::Write(v) => {
                self.phys.set_data(frame, v);
                let mm = self.mms[m.mm.0 as usize].as_ref().expect("live");
                let cpu = oracles::mirror::reference_read(mm, &self.phys, addr);
                if cpu != Some(v) {
                    return Err(self.diverge(
                        DivergenceKind::Coherence,
                        at,
                        format!("d{d} write {addr:#x} {v:#x}"),
                        format!(
                            "after the device wrote {v:#x}, a CPU read returns {}",
                            show(cpu)
                        ),
                        format!("a CPU read returns {v:#x}"),
                    ));
                }
                self.shadow_device(d, mi, addr, access, v, at)?;
                Ok((say!(self, "device wrote {v:#x}"), v))
            }
        }
    }

    fn advance(&mut self, t: usize) -> Result<String, Box<Divergence>> {
        let me = t as u8;
        let Some(mut work) = self.threads[t].work.take() else {
            return Ok("idle".into());
        };
        let said = match &mut work {
            Work::Mm {
                mm,
                task,
                what,
                load,
            } => {
                let mm_i = *mm;
                let what = *what;
                let load = *load;
                let mut m = self.mms[mm_i].take().expect("started on a live mm");
                let env = Locks {
                    mirrors: &self.mirrors,
                };
                let before: Vec<(u64, Pte)> = m.ptes().collect();
                let r = task.step(&mut m, &mut self.phys, &env);
                let after: Vec<(u64, Pte)> = m.ptes().collect();
                self.mms[mm_i] = Some(m);
                self.check_notified(t, mm_i, what, &before, &after, task.open_range())?;
                self.shadow_step(t, mm_i, task)?;
                match r {
                    TaskStep::Progress => {
                        self.feature(0x200 | u32::from(what.as_bytes()[1]));
                        self.threads[t].work = Some(work);
                        return Ok(say!(self, "m{mm_i} {what}: step"));
                    }
                    TaskStep::Blocked(b) => {
                        self.note_blocked();
                        self.feature(0x300 | b as u32);
                        self.threads[t].work = Some(work);
                        return Ok(say!(self, "blocked: m{mm_i} {what} waits for {b:?}"));
                    }
                    TaskStep::Done(r) => {
                        self.out.stats.ran += 1;
                        let at = op_addr(task.op());
                        for d in 0..self.mirrors.len() {
                            if self.mirrors[d]
                                .as_ref()
                                .is_some_and(|m| m.mm.0 as usize == mm_i)
                            {
                                self.cell(d, what, at, None);
                            }
                        }
                        if what == "fork" {
                            self.forking = false;
                        }
                        self.shadow_done(t, mm_i, *task.op(), &r)?;
                        self.answer(t, Answer::of_mm(&r));
                        match r {
                            Ok(MmOutcome::Forked(mut child)) => {
                                child.id = MmId(1);
                                self.mms[1] = Some(*child);
                                say!(self, "m{mm_i} fork: child is m1")
                            }
                            Ok(MmOutcome::Value(v)) => {
                                // Nothing else ran inside this step, and a
                                // load itself changes no content.
                                if let Some(addr) = load {
                                    let m = self.mms[mm_i].as_ref().expect("live");
                                    let now = oracles::mirror::reference_read(m, &self.phys, addr);
                                    if now != Some(v) {
                                        return Err(self.diverge(
                                            DivergenceKind::Coherence,
                                            None,
                                            format!("t{t} m{mm_i} read {addr:#x}"),
                                            format!("the CPU load returned {v:#x}"),
                                            format!("memory holds {}", show(now)),
                                        ));
                                    }
                                    self.shadow_load(t, mm_i, addr, v)?;
                                }
                                say!(self, "m{mm_i} {what}: {v:#x}")
                            }
                            Ok(MmOutcome::Addr(a)) => say!(self, "m{mm_i} {what}: at {a:#x}"),
                            Ok(o) => say!(self, "m{mm_i} {what}: {o:?}"),
                            Err(mm::MmError::Notifier(e)) => {
                                return Err(self.diverge(
                                    DivergenceKind::Result,
                                    None,
                                    format!("t{t} m{mm_i} {what}"),
                                    format!("the notifier refused: {e}"),
                                    "a blockable invalidation always proceeds".into(),
                                ));
                            }
                            Err(e) => {
                                self.feature(0x400 | what.len() as u32);
                                say!(self, "m{mm_i} {what}: error {e:?}")
                            }
                        }
                    }
                }
            }
            Work::Fault {
                dev,
                fault,
                access,
                addr,
                seen,
                value,
            } => {
                let (d, addr) = (*dev, *addr);
                // A fault in progress unwinds itself when its mm exits.
                let mi = match self.device_mm(t, d) {
                    Ok(mi) => mi,
                    Err(said) => return Ok(said),
                };
                let mut m = self.mms[mi].take().expect("live");
                let mirror = self.mirrors[d].as_ref().expect("open");
                let env = Locks {
                    mirrors: &self.mirrors,
                };
                let phase = fault.phase();
                let r = fault.step(me, mirror, &mut m, &mut self.phys, &env);
                self.mms[mi] = Some(m);
                let ev = match (self.threads[t].prefetch, &*access) {
                    (Some(_), _) => "dprefetch",
                    (None, Access::Write(_)) => "dwrite",
                    (None, Access::Read) => "dread",
                };
                let ph = crate::reach::fault_phase(phase, fault.retries);
                self.cell(d, ev, Some(addr), Some(ph));
                if fault.retries > seen.0 {
                    let seq = self.mms[mi].as_ref().expect("live").notifier.snapshot().seq;
                    let quiet = if seq == seen.1 { seen.2 + 1 } else { 0 };
                    *seen = (fault.retries, seq, quiet);
                    if quiet > MAX_QUIET_RETRIES {
                        return Err(self.diverge(
                            DivergenceKind::Livelock,
                            None,
                            format!("t{t} d{d} fault {addr:#x}"),
                            format!("{quiet} retries with no invalidation in between"),
                            format!(
                                "a retry needs a collision; at most {MAX_QUIET_RETRIES} without"
                            ),
                        ));
                    }
                }
                match r {
                    FaultStep::Progress => {
                        // A fault that steps on while its interval left
                        // the tree is a race of its own.
                        let gone = u32::from(fault.interval_gone()) << 6;
                        self.feature(0x500 | phase.len() as u32 | fault.retries.min(3) << 4 | gone);
                        let s = say!(self, "d{d} fault {addr:#x}: {phase}");
                        self.threads[t].work = Some(work);
                        return Ok(s);
                    }
                    FaultStep::Blocked(b) => {
                        self.note_blocked();
                        self.feature(0x600 | b as u32);
                        self.threads[t].work = Some(work);
                        return Ok(say!(self, "blocked: d{d} fault {addr:#x} waits for {b:?}"));
                    }
                    FaultStep::Installed(frame) => {
                        let (s, v) = self.device_access(d, addr, frame, access, None)?;
                        *value = Some(v);
                        self.threads[t].work = Some(work);
                        return Ok(say!(self, "d{d} fault {addr:#x}: installed, {s}"));
                    }
                    FaultStep::Done(r) => {
                        if let Some(p) = self.threads[t].prefetch {
                            if let Err(mirror::MirrorError::Segv(mm::MmError::Notifier(e))) = &r {
                                return Err(self.diverge(
                                    DivergenceKind::Result,
                                    None,
                                    format!("t{t} d{d} prefetch {addr:#x}"),
                                    format!("the notifier refused the fault-in: {e}"),
                                    "a blockable invalidation always proceeds".into(),
                                ));
                            }
                            return Ok(self.prefetch_next(t, d, mi, p, r.is_ok()));
                        }
                        self.out.stats.ran += 1;
                        let answer = match &r {
                            Ok(()) => value.map_or(Answer::Done, Answer::Value),
                            Err(e) => Answer::Error(ErrKind::of_mirror(e)),
                        };
                        self.answer(t, answer);
                        match r {
                            Err(mirror::MirrorError::Segv(mm::MmError::Notifier(e))) => {
                                return Err(self.diverge(
                                    DivergenceKind::Result,
                                    None,
                                    format!("t{t} d{d} fault {addr:#x}"),
                                    format!("the notifier refused the fault-in: {e}"),
                                    "a blockable invalidation always proceeds".into(),
                                ));
                            }
                            Ok(()) => say!(self, "d{d} fault {addr:#x}: done"),
                            Err(e) => say!(self, "d{d} fault {addr:#x}: error {e}"),
                        }
                    }
                }
            }
            Work::DevTask { dev, task, what } => {
                let (d, what) = (*dev, *what);
                let mi = match self.live_device(t, d, what) {
                    Ok(mi) => mi,
                    Err(said) => return Ok(said),
                };
                let mut m = self.mms[mi].take().expect("live");
                let env = Locks {
                    mirrors: &self.mirrors,
                };
                let before: Vec<(u64, Pte)> = m.ptes().collect();
                let r = task.step(&mut m, &mut self.phys, &env);
                let after: Vec<(u64, Pte)> = m.ptes().collect();
                let open = task.open_range();
                self.mms[mi] = Some(m);
                self.check_notified(t, mi, what, &before, &after, open)?;
                match r {
                    TaskStep::Progress => {
                        self.feature(0x800 | what.len() as u32);
                        self.threads[t].work = Some(work);
                        return Ok(say!(self, "d{d} {what}: step"));
                    }
                    TaskStep::Blocked(b) => {
                        self.note_blocked();
                        self.threads[t].work = Some(work);
                        return Ok(say!(self, "blocked: d{d} {what} waits for {b:?}"));
                    }
                    TaskStep::Done(r) => {
                        self.out.stats.ran += 1;
                        let at = op_addr(task.op());
                        let ev = match what {
                            "migrate" => "dmigrate",
                            "exclusive" => "dexclusive",
                            _ => "devict",
                        };
                        self.cell(d, ev, at, None);
                        // The driver reads back what it migrated: nothing is ENOENT.
                        let answer = match r {
                            Ok(MmOutcome::Pages(0)) if what == "migrate" => {
                                Answer::Error(ErrKind::NoEnt)
                            }
                            ref r => Answer::of_mm(r),
                        };
                        let said = say!(self, "d{d} {what}: {}", answer.text());
                        self.feature(
                            0x900
                                | what.len() as u32
                                | u32::from(matches!(answer, Answer::Error(_))) << 4,
                        );
                        self.answer(t, answer);
                        said
                    }
                }
            }
            Work::Register { dev, fault, pages } => {
                let (d, pages) = (*dev, *pages);
                let mi = match self.device_mm(t, d) {
                    Ok(mi) => mi,
                    Err(said) => return Ok(said),
                };
                let phase = fault.phase();
                let ph = crate::reach::fault_phase(phase, fault.retries);
                self.cell(d, "dregister", None, Some(ph));
                match self.reg_fault_step(me, d, mi, fault)? {
                    None => {
                        self.feature(0xa00 | phase.len() as u32);
                        self.threads[t].work = Some(work);
                        return Ok(say!(self, "d{d} register: {phase}"));
                    }
                    Some(Ok(())) => {
                        self.out.stats.ran += 1;
                        self.answer(t, Answer::Pages(pages));
                        say!(self, "d{d} register: {pages} pages pinned")
                    }
                    Some(Err(e)) => {
                        self.out.stats.ran += 1;
                        self.answer(t, Answer::Error(ErrKind::of_mirror(&e)));
                        say!(self, "d{d} register: error {e}")
                    }
                }
            }
            Work::RegAccess {
                dev,
                addr,
                access,
                phase,
            } => {
                let (d, addr) = (*dev, *addr);
                // An access in flight finishes even if the mm exits
                // meanwhile, and a revalidation unwinds itself.
                let live = match phase {
                    RegPhase::Begin => self.live_device(t, d, "access"),
                    _ => self.device_mm(t, d),
                };
                let mi = match live {
                    Ok(mi) => mi,
                    Err(said) => return Ok(said),
                };
                let write = matches!(access, Access::Write(_));
                match phase {
                    RegPhase::Begin => {
                        let m = self.mirrors[d].as_ref().expect("open");
                        match m.access_begin(me, addr, write) {
                            mirror::Access::Go { reg, frame } => {
                                *phase = RegPhase::Go { reg, frame };
                                self.feature(0xb01);
                                self.threads[t].work = Some(work);
                                return Ok(say!(self, "d{d} access {addr:#x}: in flight"));
                            }
                            mirror::Access::Revalidate(f) => {
                                *phase = RegPhase::Revalidate(f);
                                self.feature(0xb02);
                                self.threads[t].work = Some(work);
                                return Ok(say!(self, "d{d} access {addr:#x}: revalidate"));
                            }
                            mirror::Access::Blocked => {
                                self.note_blocked();
                                self.threads[t].work = Some(work);
                                return Ok(say!(self, "blocked: d{d} access {addr:#x}"));
                            }
                            mirror::Access::Err(e) => {
                                self.out.stats.ran += 1;
                                self.answer(t, Answer::Error(ErrKind::of_mirror(&e)));
                                say!(self, "d{d} access {addr:#x}: error {e}")
                            }
                        }
                    }
                    RegPhase::Revalidate(f) => {
                        let step = f.phase();
                        match self.reg_fault_step(me, d, mi, f)? {
                            None => {
                                self.feature(0xb00 | step.len() as u32);
                                self.threads[t].work = Some(work);
                                return Ok(say!(self, "d{d} revalidate: {step}"));
                            }
                            Some(Ok(())) => {
                                *phase = RegPhase::Begin;
                                self.threads[t].work = Some(work);
                                return Ok(say!(self, "d{d} revalidated"));
                            }
                            Some(Err(e)) => {
                                self.out.stats.ran += 1;
                                self.answer(t, Answer::Error(ErrKind::of_mirror(&e)));
                                say!(self, "d{d} revalidate: error {e}")
                            }
                        }
                    }
                    RegPhase::Go { reg, frame } => {
                        let (reg, frame) = (*reg, *frame);
                        // The pinned frame: the callback waited for us, so it
                        // is still the CPU's.
                        let r = self.device_access(d, addr, frame, access, None);
                        self.mirrors[d].as_ref().expect("open").access_end(reg);
                        let (said, v) = r?;
                        self.out.stats.ran += 1;
                        self.answer(t, Answer::Value(v));
                        said
                    }
                }
            }
            Work::Unregister {
                dev,
                addr,
                removing,
            } => {
                let (d, addr) = (*dev, *addr);
                let Some(mi) = self.mirrors[d].as_ref().map(|m| m.mm.0 as usize) else {
                    self.answer(t, Answer::Skipped);
                    return Ok("skipped: device gone".into());
                };
                let Some(mm) = self.mms[mi].as_ref() else {
                    self.answer(t, Answer::Skipped);
                    return Ok("skipped: address space gone".into());
                };
                match removing.take() {
                    None => {
                        let m = self.mirrors[d].as_ref().expect("open");
                        match m.unregister(me, mm, &mut self.phys, addr) {
                            Ok(None) => {
                                self.note_blocked();
                                self.threads[t].work = Some(work);
                                return Ok(say!(
                                    self,
                                    "blocked: d{d} unregister waits for accesses"
                                ));
                            }
                            Ok(Some(w)) => {
                                *removing = Some(w);
                                self.threads[t].work = Some(work);
                                return Ok(say!(self, "d{d} unregister: removing"));
                            }
                            Err(e) => {
                                self.out.stats.ran += 1;
                                self.answer(t, Answer::Error(ErrKind::of_mirror(&e)));
                                say!(self, "d{d} unregister: error {e}")
                            }
                        }
                    }
                    Some(w) => {
                        if let Some(w) = mirror::finish_remove(mm, w) {
                            *removing = Some(w);
                            self.note_blocked();
                            self.threads[t].work = Some(work);
                            return Ok(say!(self, "blocked: d{d} unregister waits for remove"));
                        }
                        self.out.stats.ran += 1;
                        self.answer(t, Answer::Done);
                        say!(self, "d{d} unregister: done")
                    }
                }
            }
            Work::Deferred { dev, item } => {
                let d = *dev;
                let Some(mi) = self.mirrors[d].as_ref().map(|m| m.mm.0 as usize) else {
                    self.answer(t, Answer::Skipped);
                    return Ok("skipped: device gone".into());
                };
                let Some(mm) = self.mms[mi].as_ref() else {
                    self.answer(t, Answer::Skipped);
                    return Ok("skipped: address space gone".into());
                };
                let m = self.mirrors[d].as_ref().expect("open");
                match item.step(m, mm) {
                    mirror::DeferredStep::Progress => {
                        self.feature(0xc01);
                        self.threads[t].work = Some(work);
                        return Ok(say!(self, "d{d} work: step"));
                    }
                    mirror::DeferredStep::Blocked => {
                        self.note_blocked();
                        self.threads[t].work = Some(work);
                        return Ok(say!(
                            self,
                            "blocked: d{d} work waits for the driver lock or a removal"
                        ));
                    }
                    mirror::DeferredStep::Done(Ok(what)) => {
                        self.out.stats.ran += 1;
                        self.answer(t, Answer::Done);
                        say!(self, "d{d} work: {what}")
                    }
                    mirror::DeferredStep::Done(Err(e)) => {
                        return Err(self.diverge(
                            DivergenceKind::Result,
                            None,
                            format!("t{t} d{d} work"),
                            format!(
                                "the driver's deferred work misused the notifier or the \
                                 address space: {e}"
                            ),
                            "a driver removes each of its intervals once, and locks only a \
                             live address space"
                                .into(),
                        ));
                    }
                }
            }
        };
        Ok(said)
    }

    /// A read fault of device `d` (on address space `mi`) at `addr`, as a
    /// `prefetch` takes it.
    fn prefetch_fault(&self, d: usize, mi: usize, addr: u64) -> Work {
        let seq = self.mms[mi]
            .as_ref()
            .map_or(0, |m| m.notifier.snapshot().seq);
        Work::Fault {
            dev: d,
            fault: Fault::new(addr, false),
            access: Access::Read,
            addr,
            seen: (0, seq, 0),
            value: None,
        }
    }

    /// One fault of thread `t`'s prefetch `p` finished (`ok`): the next
    /// one starts, or the prefetch answers how many pages it mapped.
    fn prefetch_next(
        &mut self,
        t: usize,
        d: usize,
        mi: usize,
        mut p: Prefetching,
        ok: bool,
    ) -> String {
        p.mapped += u64::from(ok);
        p.left -= 1;
        let next = p.next.checked_add(PREFETCH_STRIDE);
        match next.filter(|_| p.left > 0) {
            Some(next) => {
                p.next = next;
                self.threads[t].prefetch = Some(p);
                self.threads[t].work = Some(self.prefetch_fault(d, mi, next));
                say!(self, "d{d} prefetch: next {next:#x}")
            }
            None => {
                self.threads[t].prefetch = None;
                self.out.stats.ran += 1;
                self.answer(t, Answer::Pages(p.mapped));
                say!(self, "d{d} prefetch: {} pages mapped", p.mapped)
            }
        }
    }

    /// The thread's step could not run: it stays blocked until a later turn.
    fn note_blocked(&mut self) {
        self.out.stats.blocked += 1;
        self.blocked = true;
    }

    /// The address space of device `d` while both are there; else thread
    /// `t`'s op is abandoned, and the words for the trace come back.
    fn live_device(&mut self, t: usize, d: usize, what: &str) -> Result<usize, String> {
        let Some(mi) = self.mirrors[d].as_ref().map(|m| m.mm.0 as usize) else {
            self.answer(t, Answer::Skipped);
            return Err("skipped: device gone".into());
        };
        if !self.mm_ready(mi) {
            self.out.stats.skipped += 1;
            self.answer(t, Answer::Skipped);
            return Err(format!("{what} abandoned: its address space exited"));
        }
        Ok(mi)
    }

    /// The address space of device `d`, exited or not.
    fn device_mm(&mut self, t: usize, d: usize) -> Result<usize, String> {
        match self.mirrors[d].as_ref() {
            Some(m) => Ok(m.mm.0 as usize),
            None => {
                self.answer(t, Answer::Skipped);
                Err("skipped: device gone".into())
            }
        }
    }

    /// One step of a registration's pinning fault: None while it goes on.
    fn reg_fault_step(
        &mut self,
        me: u8,
        d: usize,
        mi: usize,
        fault: &mut Fault,
    ) -> Result<Option<Result<(), mirror::MirrorError>>, Box<Divergence>> {
        let mut m = self.mms[mi].take().expect("live");
        let mirror = self.mirrors[d].as_ref().expect("open");
        let env = Locks {
            mirrors: &self.mirrors,
        };
        let r = fault.step(me, mirror, &mut m, &mut self.phys, &env);
        self.mms[mi] = Some(m);
        Ok(match r {
            FaultStep::Progress | FaultStep::Installed(_) => None,
            FaultStep::Blocked(_) => {
                self.note_blocked();
                None
            }
            FaultStep::Done(Err(mirror::MirrorError::Segv(mm::MmError::Notifier(e)))) => {
                return Err(self.diverge(
                    DivergenceKind::Result,
                    None,
                    format!("t{me} d{d} registration fault"),
                    format!("the notifier refused the fault-in: {e}"),
                    "a blockable invalidation always proceeds".into(),
                ));
            }
            FaultStep::Done(r) => Some(r),
        })
    }

    fn feature(&mut self, f: u32) {
        self.out.features.push(f);
    }

    /// Records a reach cell of device `d` ([`crate::reach`]): `event` at
    /// `addr`, during fault phase `phase` (else the phase of the device's
    /// fault in flight, if any). The engine takes cells as features too.
    fn cell(&mut self, d: usize, event: &str, addr: Option<u64>, phase: Option<u8>) {
        let Some(m) = self.mirrors[d].as_ref() else {
            return;
        };
        let Some(mm) = self.mms[m.mm.0 as usize].as_ref() else {
            return;
        };
        let owner = m.owner.0;
        let page = addr.map_or(0, |a| crate::reach::page_state(mm, a, owner));
        let dm = crate::reach::devmem(mm, owner);
        let phase = phase.unwrap_or_else(|| {
            self.threads
                .iter()
                .find_map(|th| match &th.work {
                    Some(Work::Fault { dev, fault, .. }) if *dev == d => {
                        Some(crate::reach::fault_phase(fault.phase(), fault.retries))
                    }
                    _ => None,
                })
                .unwrap_or(0)
        });
        self.seen_huge |= page == 7;
        self.seen_devmem |= dm != 0;
        let c = crate::reach::mirror_cell(m.spec.kind, event, page, phase, dm);
        self.out.cells.push(c);
    }

    /// DESIGN §3: CPU PTEs change only inside the invalidation that covers them.
    fn check_notified(
        &self,
        t: usize,
        mm: usize,
        what: &str,
        before: &[(u64, Pte)],
        after: &[(u64, Pte)],
        open: Option<Range>,
    ) -> Checked {
        match oracles::mirror::unnotified(before, after, open.as_ref()) {
            None => Ok(()),
            Some(u) => Err(self.diverge(
                DivergenceKind::Unnotified,
                None,
                format!("t{t} m{mm} {what}"),
                format!(
                    "the PTE at {:#x} went from {:?} to {:?}",
                    u.addr, u.before, u.after
                ),
                "no invalidation covering that page was open".into(),
            )),
        }
    }

    /// The oracles that hold after every step.
    fn check(&self, at: Option<usize>) -> Checked {
        if let Some(b) = oracles::mirror::bad_cpu_mapping(self.mms.iter().flatten(), &self.phys) {
            return Err(self.diverge(
                DivergenceKind::StalePte,
                at,
                "checking CPU page tables after the step".into(),
                format!("m{} maps {:#x} as {:?}", b.mm, b.addr, b.pte),
                b.why.into(),
            ));
        }
        for m in self.mirrors.iter().flatten() {
            if m.sleeps() > 0 {
                return Err(self.diverge(
                    DivergenceKind::Result,
                    at,
                    format!("d{} invalidate callback", m.id),
                    "a callback had to sleep on the driver lock".into(),
                    "the scheduler never lets a callback meet a held lock".into(),
                ));
            }
            if m.uses_registrations() {
                if let Some(f) = m
                    .pinned_frames()
                    .into_iter()
                    .find(|&f| !self.phys.frame(f).live)
                {
                    return Err(self.diverge(
                        DivergenceKind::StalePte,
                        at,
                        format!("checking d{} pins after the step", m.id),
                        format!("frame {} is pinned by a registration but free", f.0),
                        "a pinned frame is never freed".into(),
                    ));
                }
            }
            let Some(mm) = self.mms[m.mm.0 as usize].as_ref() else {
                continue;
            };
            // The page table first, then the TLB: the translations the
            // device still uses. Once a start has returned (a two-pass start
            // after its finishes) every one of them obeys the rule of a PTE.
            let table = m.with_ptes(|ptes| oracles::mirror::stale_pte(mm, m.owner.0, ptes));
            let stale = match table {
                Some(st) => Some((st, "", "maps")),
                None => m
                    .with_tlb(|tlb| oracles::mirror::stale_pte(mm, m.owner.0, tlb))
                    .map(|st| (st, " TLB", "'s TLB translates")),
            };
            if let Some((st, what, verb)) = stale {
                let access = if st.device.write {
                    "writable"
                } else {
                    "read-only"
                };
                return Err(self.diverge(
                    DivergenceKind::StalePte,
                    at,
                    format!("checking d{}{what} after the step", m.id),
                    format!(
                        "d{}{verb} {:#x} to frame {} {access}",
                        m.id, st.addr, st.device.frame.0
                    ),
                    format!("the CPU PTE of m{} is {:?}", m.mm.0, st.cpu),
                ));
            }
        }
        Ok(())
    }

    fn diverge(
        &self,
        kind: DivergenceKind,
        step: Option<usize>,
        doing: String,
        core: String,
        model: String,
    ) -> Box<Divergence> {
        let doing = match step {
            Some(i) if !doing.starts_with('t') => {
                format!(
                    "{} ({doing})",
                    crate::text::format_step(&self.program.steps[i])
                )
            }
            _ => doing,
        };
        Box::new(Divergence {
            kind,
            step,
            doing,
            core,
            model,
            states: (self.render(), self.render_reference()),
        })
    }

    /// The device side: every device PTE.
    fn render(&self) -> String {
        let mut s = String::new();
        for m in self.mirrors.iter().flatten() {
            for (a, p) in m.ptes() {
                let _ = writeln!(
                    s,
                    "d{} {a:#x} -> frame {} {}",
                    m.id,
                    p.frame.0,
                    if p.write { "rw" } else { "ro" }
                );
            }
        }
        s
    }

    /// What the device PTEs may be: for each device PTE's page, the CPU PTE
    /// that the device must agree with.
    fn render_reference(&self) -> String {
        let mut s = String::new();
        for m in self.mirrors.iter().flatten() {
            let Some(mm) = self.mms[m.mm.0 as usize].as_ref() else {
                continue;
            };
            for (a, p) in m.ptes() {
                let line = match mm.pte(a) {
                    Some(Pte::Present { frame, writable }) => format!(
                        "d{} {a:#x} -> frame {} {}",
                        m.id,
                        frame.0,
                        if writable && p.write { "rw" } else { "ro" }
                    ),
                    other => format!("d{} {a:#x} -> (unmapped: CPU has {other:?})", m.id),
                };
                let _ = writeln!(s, "{line}");
            }
        }
        s
    }
}

fn show(v: Option<u64>) -> String {
    v.map_or("SIGSEGV".into(), |v| format!("{v:#x}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_satisfy_the_expectations_they_should() {
        let states = |v: &[PageState]| Expect::states(v).expect("few runs");
        let w3 = [PageState::None, PageState::Write, PageState::Write];
        let cases: Vec<(Answer, Vec<Expect>)> = vec![
            (Answer::Done, vec![Expect::Ok]),
            (Answer::Value(7), vec![Expect::Ok, Expect::Value(7)]),
            (Answer::Pages(3), vec![Expect::Ok, Expect::Pages(3)]),
            (Answer::States(w3.to_vec()), vec![Expect::Ok, states(&w3)]),
            (Answer::States(vec![]), vec![Expect::Ok, states(&[])]),
            (
                Answer::Error(ErrKind::Fault),
                vec![Expect::Error(None), Expect::Error(Some(ErrKind::Fault))],
            ),
            (Answer::Skipped, vec![Expect::Skipped]),
        ];
        let all = [
            Expect::Ok,
            Expect::Skipped,
            Expect::Value(7),
            Expect::Value(8),
            Expect::Pages(3),
            Expect::Pages(7),
            Expect::Error(None),
            Expect::Error(Some(ErrKind::Fault)),
            Expect::Error(Some(ErrKind::Perm)),
            Expect::Faults { dev: 0, n: 0 },
            states(&w3),
            states(&w3[..2]),
            states(&[PageState::None, PageState::Write, PageState::Read]),
            states(&[]),
        ];
        for (answer, holds) in cases {
            for e in &all {
                assert_eq!(answer.satisfies(e), holds.contains(e), "{answer:?} {e:?}");
            }
        }
    }

    #[test]
    fn answers_print_as_expectations() {
        assert_eq!(Answer::Done.text(), "ok");
        assert_eq!(Answer::Value(255).text(), "255");
        assert_eq!(Answer::Value(0x1000).text(), "0x1000");
        assert_eq!(Answer::Pages(3).text(), "pages=3");
        assert_eq!(Answer::Error(ErrKind::NoEnt).text(), "error:enoent");
        assert_eq!(Answer::Skipped.text(), "skipped");
        // More runs than an expectation may have still print.
        let mut v = Vec::new();
        for i in 0..10 {
            v.push(if i % 2 == 0 {
                PageState::Read
            } else {
                PageState::Zero
            });
        }
        v.push(PageState::Zero);
        assert_eq!(
            Answer::States(v).text(),
            "[read zero read zero read zero read zero read zero*2]"
        );
    }

    #[test]
    fn errors_map_to_their_kinds() {
        let e = notifier::Error::ZeroLength;
        let mm_cases = [
            (mm::MmError::Inval, ErrKind::Inval),
            (mm::MmError::Fault, ErrKind::Fault),
            (mm::MmError::Perm, ErrKind::Perm),
            (mm::MmError::Exited, ErrKind::Exited),
        ];
        for (err, kind) in mm_cases {
            assert_eq!(Answer::of_mm(&Err(err.clone())), Answer::Error(kind));
            let m = mirror::MirrorError::Segv(err);
            assert_eq!(ErrKind::of_mirror(&m), kind);
        }
        assert_eq!(
            ErrKind::of_mirror(&mirror::MirrorError::Notifier(e)),
            ErrKind::Notifier
        );
        assert_eq!(
            ErrKind::of_mirror(&mirror::MirrorError::WrongMm),
            ErrKind::Inval
        );
        assert_eq!(
            ErrKind::of_mirror(&mirror::MirrorError::Inval),
            ErrKind::Inval
        );
        assert_eq!(
            ErrKind::of_mirror(&mirror::MirrorError::NoEnt),
            ErrKind::NoEnt
        );
        assert_eq!(Answer::of_mm(&Ok(MmOutcome::Skipped)), Answer::Done);
        assert_eq!(Answer::of_mm(&Ok(MmOutcome::Addr(5))), Answer::Value(5));
        assert_eq!(Answer::of_mm(&Ok(MmOutcome::Pages(2))), Answer::Pages(2));
        for k in ErrKind::ALL {
            assert_eq!(ErrKind::from_name(k.name()), Some(k));
        }
    }
}
