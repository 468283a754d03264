//! The executor: runs a program against the notifier core and
//! `ReferenceNotifier` in lock-step, on a deterministic single-threaded
//! scheduler of logical threads, and compares the two after every step.
//!
//! Scheduling rules:
//! * Lines run in order. A line whose thread is blocked waits in that
//!   thread's queue and runs as soon as the thread wakes.
//! * After every step, blocked threads whose wait is ready wake, in thread
//!   order. Core and model must agree on who is ready.
//! * A thread that holds an open invalidation may not call read_begin or
//!   remove (the kernel's lockdep map forbids it too): such ops are skipped.
//! * At the end, threads are drained: queued lines run, open invalidations
//!   are ended innermost first, lowest thread first. If every unfinished
//!   thread is blocked, that is a deadlock. Then the core must be quiescent.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use notifier::{
    ClassicOps, Culprit, Interval, IntervalId, InvalidateError, Invalidation, Owner, Range,
    ReadBegin, RemoveWait, SeqWait, Snapshot, Start, Subscriptions,
};
use oracles::{
    CallbackModel, Expected, Mark, Membership, ModelInvalidation, ModelRead, ModelRemove,
    ModelStart, ModelWait, ReferenceNotifier, Refuse,
};

use crate::outcome::{Divergence, DivergenceKind, Outcome, RunOptions};
use crate::program::{Op, Program, Step, CLASSIC_SLOTS, MAX_THREADS, SLOTS};

#[derive(Clone, Debug, PartialEq, Eq)]
enum Observed {
    Interval {
        id: IntervalId,
        range: Range,
        accepted: bool,
        cur_seq: u64,
    },
    Finish {
        id: IntervalId,
    },
    ClassicStart {
        id: usize,
        accepted: bool,
    },
    ClassicEnd {
        id: usize,
    },
    ClassicRelease {
        id: usize,
    },
}

type Log = Arc<Mutex<Vec<Observed>>>;

struct ClassicCb {
    key: usize,
    refuse: Refuse,
    log: Log,
}

impl ClassicOps for ClassicCb {
    fn invalidate_range_start(&self, range: &Range) -> bool {
        let accepted = !self.refuse.refuses(range);
        lock(&self.log).push(Observed::ClassicStart {
            id: self.key,
            accepted,
        });
        accepted
    }
    fn invalidate_range_end(&self, _range: &Range) {
        lock(&self.log).push(Observed::ClassicEnd { id: self.key });
    }
    fn release(&self) {
        lock(&self.log).push(Observed::ClassicRelease { id: self.key });
    }
}

fn lock(log: &Log) -> std::sync::MutexGuard<'_, Vec<Observed>> {
    log.lock().unwrap_or_else(|e| e.into_inner())
}

struct IntervalCb {
    model: CallbackModel,
    log: Log,
}

impl notifier::IntervalOps for IntervalCb {
    fn invalidate(&self, iv: &Interval, range: &Range, cur_seq: u64) -> bool {
        self.invalidate_start(iv, range, cur_seq).finish_now()
    }

    fn invalidate_start(&self, iv: &Interval, range: &Range, cur_seq: u64) -> Start {
        let accepted = !self.model.refuse.refuses(range);
        if accepted && self.model.sets_seq(range) {
            // Inside the callback, set_seq of its own interval cannot fail.
            let _ = iv.set_seq(cur_seq);
        }
        lock(&self.log).push(Observed::Interval {
            id: iv.id(),
            range: *range,
            accepted,
            cur_seq,
        });
        match (accepted, self.model.two_pass) {
            (false, _) => Start::Refused,
            (true, false) => Start::Done,
            (true, true) => {
                let (log, id) = (self.log.clone(), iv.id());
                Start::Finish(Box::new(move || lock(&log).push(Observed::Finish { id })))
            }
        }
    }
}

fn interval_cb(model: CallbackModel, log: Log) -> Arc<dyn notifier::IntervalOps> {
    Arc::new(IntervalCb { model, log })
}

/// See [`Exec::said`].
struct Said {
    first: u8,
    text: String,
}

struct SlotIv {
    core: Interval,
    id: IntervalId,
}

struct SlotClassic {
    core: notifier::ClassicId,
    model: notifier::ClassicId,
}

enum Blocked {
    Read {
        slot: usize,
        id: IntervalId,
        core: SeqWait,
        model: ModelWait,
        token: Mark,
    },
    Remove {
        slot: usize,
        core: RemoveWait,
        model: ModelWait,
    },
}

#[derive(Clone, Copy)]
struct Fault {
    slot: usize,
    id: IntervalId,
    seq: u64,
    token: Mark,
}

#[derive(Default)]
struct Thread {
    open: Vec<(Invalidation, ModelInvalidation)>,
    // Faults begun and not yet committed, latest last.
    reads: Vec<Fault>,
    blocked: Option<Blocked>,
    queue: VecDeque<usize>,
}

struct Exec<'p> {
    program: &'p Program,
    opts: RunOptions,
    core: Subscriptions,
    model: ReferenceNotifier,
    log: Log,
    slots: Vec<Option<SlotIv>>,
    // The intervals of `populate`, in no slot.
    bulk: Vec<Interval>,
    classic: Vec<Option<SlotClassic>>,
    threads: Vec<Thread>,
    out: Outcome,
    // The callbacks of the current step, rendered, when tracing.
    calls_seen: String,
    // Core ClassicId of each registration key, in registration order.
    classic_ids: Vec<Option<notifier::ClassicId>>,
    // Buffers reused on every step (allocating them per step was a top cost).
    observed: Vec<Observed>,
    snap: Snapshot,
    mem: Membership,
    // The tallest the core's tree has been in this run.
    peak_height: u32,
}

// Boxed: the error path is rare and the Ok path is hot.
type Checked = Result<(), Box<Divergence>>;

/// Runs a validated notifier `program` on both sides.
pub(crate) fn run_notifier(program: &Program, opts: &RunOptions) -> Outcome {
    let cfg = notifier::Config {
        initial_seq: program.config.initial_seq,
        task_size: program.config.task_size,
        planted: opts.planted,
        kernel_compat: program.config.kernel_compat,
    };
    let core = Subscriptions::new(cfg).expect("validated config");
    let mut ex = Exec {
        program,
        opts: *opts,
        core,
        model: ReferenceNotifier::new(program.config.task_size)
            .with_kernel_compat(program.config.kernel_compat),
        log: Arc::default(),
        slots: (0..SLOTS).map(|_| None).collect(),
        bulk: Vec::new(),
        classic: (0..CLASSIC_SLOTS).map(|_| None).collect(),
        threads: (0..MAX_THREADS).map(|_| Thread::default()).collect(),
        out: Outcome {
            features: Vec::with_capacity(program.steps.len() + 16),
            ..Outcome::default()
        },
        calls_seen: String::new(),
        classic_ids: Vec::new(),
        observed: Vec::new(),
        snap: Snapshot::default(),
        mem: Membership::default(),
        peak_height: 0,
    };
    let r = ex.schedule().and_then(|()| ex.drain());
    ex.out.divergence = r.err().map(|d| *d);
    ex.out
}

impl Exec<'_> {
    fn schedule(&mut self) -> Checked {
        for i in 0..self.program.steps.len() {
            let t = self.program.steps[i].thread as usize;
            if self.threads[t].blocked.is_some() {
                self.threads[t].queue.push_back(i);
                self.check_all_blocked(Some(i))?;
                continue;
            }
            self.step(i)?;
            self.wake(Some(i))?;
        }
        Ok(())
    }

    fn check_all_blocked(&self, at: Option<usize>) -> Checked {
        let live = self.program.config.threads as usize;
        if self.threads[..live].iter().all(|t| t.blocked.is_some()) {
            return Err(self.diverge(
                DivergenceKind::Deadlock,
                at,
                "scheduling".into(),
                "every logical thread is blocked".into(),
                self.model_blocked_text(),
            ));
        }
        Ok(())
    }

    fn model_blocked_text(&self) -> String {
        let live = self.program.config.threads as usize;
        let mut s = String::from("waits the model considers complete:");
        for (t, th) in self.threads[..live].iter().enumerate() {
            if let Some(b) = &th.blocked {
                let w = match b {
                    Blocked::Read { model, .. } | Blocked::Remove { model, .. } => model,
                };
                let _ = write!(s, " t{t}={}", self.model.wait_ready(w));
            }
        }
        s
    }

    fn drain(&mut self) -> Checked {
        let live = self.program.config.threads as usize;
        loop {
            let mut progress = false;
            for t in 0..live {
                if self.threads[t].blocked.is_none() && !self.threads[t].queue.is_empty() {
                    self.run_queue(t)?;
                    progress = true;
                }
            }
            if !progress {
                if let Some(t) = (0..live).find(|&t| {
                    self.threads[t].blocked.is_none() && !self.threads[t].open.is_empty()
                }) {
                    self.end(t, None)?;
                    let calls = std::mem::take(&mut self.calls_seen);
                    self.trace(|| format!("drain: t{t} end{calls}"));
                    progress = true;
                }
            }
            self.wake(None)?;
            if !progress {
                break;
            }
        }
        if self.threads[..live].iter().any(|t| t.blocked.is_some()) {
            return Err(self.diverge(
                DivergenceKind::Deadlock,
                None,
                "draining".into(),
                "a logical thread is still blocked with nothing left to run".into(),
                self.model_blocked_text(),
            ));
        }
        if !self.core.is_quiescent() || !self.model.is_quiescent() {
            return Err(self.diverge(
                DivergenceKind::NotQuiescent,
                None,
                "checking quiescence after the drain".into(),
                format!("quiescent={}", self.core.is_quiescent()),
                format!("quiescent={}", self.model.is_quiescent()),
            ));
        }
        self.compare_state(None)
    }

    fn run_queue(&mut self, t: usize) -> Checked {
        while self.threads[t].blocked.is_none() {
            let Some(i) = self.threads[t].queue.pop_front() else {
                break;
            };
            self.step(i)?;
        }
        Ok(())
    }

    // Wakes until nothing changes: a woken thread's queued lines may wake a
    // lower-numbered one.
    fn wake(&mut self, at: Option<usize>) -> Checked {
        while self.wake_once(at)? {}
        Ok(())
    }

    fn wake_once(&mut self, at: Option<usize>) -> Result<bool, Box<Divergence>> {
        let live = self.program.config.threads as usize;
        let mut woke = false;
        for t in 0..live {
            let Some(b) = &self.threads[t].blocked else {
                continue;
            };
            let (core_ready, model_ready) = match b {
                Blocked::Read { core, model, .. } => {
                    (self.core.wait_is_ready(core), self.model.wait_ready(model))
                }
                Blocked::Remove { core, model, .. } => {
                    let c = match core {
                        RemoveWait::Done => true,
                        RemoveWait::Wait(w) => self.core.wait_is_ready(w),
                    };
                    (c, self.model.wait_ready(model))
                }
            };
            if core_ready != model_ready {
                return Err(self.diverge(
                    DivergenceKind::Wake,
                    at,
                    format!("checking whether t{t}'s wait is over"),
                    format!("ready={core_ready}"),
                    format!("ready={model_ready}"),
                ));
            }
            if !core_ready {
                continue;
            }
            match self.threads[t].blocked.take().expect("checked above") {
                Blocked::Read {
                    slot,
                    id,
                    core,
                    token,
                    ..
                } => {
                    let seq = self.core.read_begin_finish(core);
                    self.threads[t].reads.push(Fault {
                        slot,
                        id,
                        seq,
                        token,
                    });
                    self.trace(|| format!("  t{t} wakes: read_begin i{slot} -> seq {seq:#x}"));
                }
                Blocked::Remove { slot, core, .. } => {
                    self.core.remove_finish(core);
                    self.slots[slot] = None;
                    self.forget_reads(slot);
                    self.trace(|| format!("  t{t} wakes: remove i{slot} done"));
                }
            }
            self.feature(0xa0 + t as u32);
            woke = true;
            self.run_queue(t)?;
        }
        Ok(woke)
    }

    fn forget_reads(&mut self, slot: usize) {
        for th in &mut self.threads {
            th.reads.retain(|r| r.slot != slot);
        }
    }

    // Lazy: formatting the line on every step, traced or not, was a top cost.
    fn trace(&mut self, line: impl FnOnce() -> String) {
        if self.opts.trace {
            self.out.trace.push(line());
        }
    }

    fn feature(&mut self, f: u32) {
        self.out.features.push(f);
    }

    /// The interval in slot `s` for an op that may block (remove,
    /// read_begin), or None when the op is skipped: the slot is empty, or
    /// the thread holds an open invalidation (the lockdep rule).
    fn may_block_on(&mut self, i: usize, t: usize, s: usize) -> Option<(Interval, IntervalId)> {
        let why = match &self.slots[s] {
            None => "empty slot",
            Some(_) if !self.threads[t].open.is_empty() => "thread holds an open invalidation",
            Some(sl) => return Some((sl.core.clone(), sl.id)),
        };
        let _ = self.skip(i, why);
        None
    }

    fn skip(&mut self, i: usize, why: &str) -> Checked {
        self.out.stats.skipped += 1;
        if self.opts.trace {
            let line = crate::text::format_step(&self.program.steps[i]);
            self.out
                .trace
                .push(format!("{i:>4}: {line}    (skipped: {why})"));
        }
        Ok(())
    }

    fn step(&mut self, i: usize) -> Checked {
        let Step { thread, op } = self.program.steps[i];
        let t = thread as usize;
        lock(&self.log).clear();
        let said = match op {
            Op::Insert {
                slot,
                start,
                len,
                cb,
            } => {
                let s = slot as usize;
                if self.slots[s].is_some() {
                    return self.skip(i, "slot in use");
                }
                let c = self
                    .core
                    .insert(start, len, interval_cb(cb, self.log.clone()));
                let m = self.model.insert(start, len, cb);
                match (c, m) {
                    (Ok(iv), Ok(id)) if iv.id() == id => {
                        let said = self.said(b'#', || format!("{id} seq={:#x}", iv.seq()));
                        self.slots[s] = Some(SlotIv { core: iv, id });
                        said
                    }
                    (Err(a), Err(b)) if a == b => self.said(b'e', || format!("error: {a}")),
                    (c, m) => {
                        let c = c.map(|iv| iv.id());
                        return Err(self.result_div(i, format!("{c:?}"), format!("{m:?}")));
                    }
                }
            }
            Op::Populate { count, start, len } => {
                let (mut ok, mut errs) = (0u32, 0u32);
                let mut first = None;
                for k in 0..u64::from(count) {
                    let a = start.wrapping_add(k * notifier::PAGE_SIZE);
                    let good = CallbackModel::GOOD;
                    let c = self
                        .core
                        .insert(a, len, interval_cb(good, self.log.clone()));
                    let m = self.model.insert(a, len, good);
                    match (c, m) {
                        (Ok(iv), Ok(id)) if iv.id() == id => {
                            first.get_or_insert(id);
                            self.bulk.push(iv);
                            ok += 1;
                        }
                        (Err(a), Err(b)) if a == b => errs += 1,
                        (c, m) => {
                            let c = c.map(|iv| iv.id());
                            return Err(self.result_div(
                                i,
                                format!("interval {k}: {c:?}"),
                                format!("interval {k}: {m:?}"),
                            ));
                        }
                    }
                }
                self.said(b'p', || match first {
                    Some(id) => format!("populated {ok} from {id}, {errs} errors"),
                    None => format!("populated none, {errs} errors"),
                })
            }
            Op::Remove { slot } => {
                let s = slot as usize;
                let Some((core_iv, id)) = self.may_block_on(i, t, s) else {
                    return Ok(());
                };
                let c = self.core.remove_prepare(&core_iv);
                let m = self.model.remove(id);
                match (c, m) {
                    (Ok(RemoveWait::Done), Ok(ModelRemove::Done)) => {
                        self.slots[s] = None;
                        self.forget_reads(s);
                        self.said(b'r', || "removed".into())
                    }
                    (Ok(RemoveWait::Wait(w)), Ok(ModelRemove::Blocks(mw))) => {
                        self.out.stats.blocked += 1;
                        self.threads[t].blocked = Some(Blocked::Remove {
                            slot: s,
                            core: RemoveWait::Wait(w),
                            model: mw,
                        });
                        self.said(b'b', || "blocks until the cycle ends".into())
                    }
                    (Err(a), Err(b)) if a == b => self.said(b'e', || format!("error: {a}")),
                    (c, m) => {
                        let kind = match (&c, &m) {
                            (Ok(_), Ok(_)) => DivergenceKind::Blocking,
                            _ => DivergenceKind::Result,
                        };
                        let (c, m) = (format!("{c:?}"), format!("{m:?}"));
                        return Err(self.diverge(kind, Some(i), self.doing(i), c, m));
                    }
                }
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
                let c = self.core.invalidate_range_start(&range);
                let mut expected = Vec::new();
                let m = self.model.invalidate_start(&range, &mut expected);
                self.compare_calls(i, &expected)?;
                match (c, m) {
                    (Ok(inv), ModelStart::Accepted(minv)) if inv.hit() == minv.hit => {
                        let said = self.said(b'o', || format!("ok hit={}", inv.hit()));
                        self.threads[t].open.push((inv, minv));
                        said
                    }
                    (Err(InvalidateError::WouldBlock(a)), ModelStart::WouldBlock(b)) if a == b => {
                        self.said(b'w', || format!("would block ({})", culprit(a)))
                    }
                    (
                        Err(InvalidateError::ContractViolation(a)),
                        ModelStart::ContractViolation(b),
                    ) if a == b => {
                        self.said(b'c', || format!("contract violation ({})", culprit(a)))
                    }
                    (Err(InvalidateError::Bad(e)), ModelStart::Bad) => {
                        self.said(b'e', || format!("error: {e}"))
                    }
                    (c, m) => {
                        let c = c.map(|inv| format!("accepted hit={}", inv.hit()));
                        return Err(self.result_div(i, format!("{c:?}"), format!("{m:?}")));
                    }
                }
            }
            Op::End => {
                if self.threads[t].open.is_empty() {
                    return self.skip(i, "no open invalidation");
                }
                self.end(t, Some(i))?;
                self.said(b'e', || "ended".into())
            }
            Op::ReadBegin { slot } => {
                let s = slot as usize;
                let Some((core_iv, id)) = self.may_block_on(i, t, s) else {
                    return Ok(());
                };
                let c = self.core.read_begin_prepare(&core_iv);
                let m = self.model.read_begin(id);
                match (c, m) {
                    (Ok(ReadBegin::Ready(seq)), Ok(ModelRead::Ready(token))) => {
                        self.threads[t].reads.push(Fault {
                            slot: s,
                            id,
                            seq,
                            token,
                        });
                        self.said(b's', || format!("seq {seq:#x}"))
                    }
                    (Ok(ReadBegin::Wait(w)), Ok(ModelRead::Blocks(mw, tok))) => {
                        self.out.stats.blocked += 1;
                        let said = self.said(b'b', || {
                            format!("blocks (seq {:#x} is the current cycle)", w.seq())
                        });
                        self.threads[t].blocked = Some(Blocked::Read {
                            slot: s,
                            id,
                            core: w,
                            model: mw,
                            token: tok,
                        });
                        said
                    }
                    (Err(a), Err(b)) if a == b => self.said(b'e', || format!("error: {a}")),
                    (c, m) => {
                        let kind = match (&c, &m) {
                            (Ok(_), Ok(_)) => DivergenceKind::Blocking,
                            _ => DivergenceKind::Result,
                        };
                        let (c, m) = (format!("{c:?}"), format!("{m:?}"));
                        return Err(self.diverge(kind, Some(i), self.doing(i), c, m));
                    }
                }
            }
            Op::Commit | Op::CheckRetry => {
                let Some(f) = self.threads[t].reads.last().copied() else {
                    return self.skip(i, "no fault in progress");
                };
                let live = self.slots[f.slot].as_ref().filter(|sl| sl.id == f.id);
                let Some(sl) = live else {
                    // Its interval was removed while the fault slept.
                    self.threads[t].reads.pop();
                    return self.skip(i, "the fault's interval is gone");
                };
                let c = sl.core.read_retry(f.seq);
                let m = self.model.read_retry(sl.id, f.token);
                if c != m {
                    return Err(self.result_div(i, format!("retry={c}"), format!("retry={m}")));
                }
                if op == Op::Commit {
                    self.threads[t].reads.pop();
                }
                self.said(b'i', || {
                    format!("i{} {}", f.slot, if c { "retry" } else { "commit" })
                })
            }
            Op::Release => {
                let c = self.core.release();
                let mut expected = Vec::new();
                let m = self.model.release(&mut expected);
                self.compare_calls(i, &expected)?;
                match (c, m) {
                    (Ok(()), Ok(None)) => self.said(b'r', || "released".into()),
                    (Err(InvalidateError::ContractViolation(a)), Ok(Some(b))) if a == b => {
                        self.said(b'c', || format!("contract violation ({})", culprit(a)))
                    }
                    (Err(InvalidateError::Bad(a)), Err(b)) if a == b => {
                        self.said(b'e', || format!("error: {a}"))
                    }
                    (c, m) => {
                        return Err(self.result_div(i, format!("{c:?}"), format!("{m:?}")));
                    }
                }
            }
            Op::Register { slot, refuse } => {
                let s = slot as usize;
                if self.classic[s].is_some() {
                    return self.skip(i, "slot in use");
                }
                let key = self.classic_ids.len();
                self.classic_ids.push(None);
                let c = self.core.register(Arc::new(ClassicCb {
                    key,
                    refuse,
                    log: self.log.clone(),
                }));
                let m = self.model.register(refuse);
                match (c, m) {
                    (Ok(a), Ok(b)) if a == b => {
                        self.classic_ids[key] = Some(a);
                        self.classic[s] = Some(SlotClassic { core: a, model: b });
                        self.said(b'c', || format!("{a}"))
                    }
                    (Err(a), Err(b)) if a == b => self.said(b'e', || format!("error: {a}")),
                    (c, m) => {
                        return Err(self.result_div(i, format!("{c:?}"), format!("{m:?}")));
                    }
                }
            }
            Op::Mm { .. } | Op::Dev { .. } | Op::Yield | Op::Expect(_) => {
                return self.skip(i, "not an op of the notifier target");
            }
            Op::Unregister { slot } => {
                let s = slot as usize;
                let Some(sl) = &self.classic[s] else {
                    return self.skip(i, "empty slot");
                };
                let c = self.core.unregister(sl.core);
                let m = self.model.unregister(sl.model);
                if c != m {
                    return Err(self.result_div(i, format!("{c:?}"), format!("{m:?}")));
                }
                self.classic[s] = None;
                self.said(b'u', || "unregistered".into())
            }
        };
        self.out.stats.ran += 1;
        self.step_feature(&op, said.first);
        if self.opts.trace {
            let line = crate::text::format_step(&self.program.steps[i]);
            let calls = std::mem::take(&mut self.calls_seen);
            self.out
                .trace
                .push(format!("{i:>4}: {line}    -> {}{calls}", said.text));
        }
        self.compare_state(Some(i))
    }

    fn end(&mut self, t: usize, at: Option<usize>) -> Checked {
        let (inv, minv) = self.threads[t].open.pop().expect("caller checked");
        lock(&self.log).clear();
        self.core.invalidate_range_end(inv);
        let mut expected = Vec::new();
        self.model.invalidate_end(&minv, &mut expected);
        self.compare_calls_at(at, Some(t), &expected)?;
        if at.is_none() {
            self.compare_state(None)?;
        }
        Ok(())
    }

    /// `said`: the first byte of what the op answered.
    fn step_feature(&mut self, op: &Op, said: u8) {
        let kind = op.keyword().len() as u32 ^ (op.keyword().as_bytes()[0] as u32) << 4;
        let outcome = said as u32;
        let m = &self.model;
        let state = (m.invalidating() as u32)
            | (m.active().min(3) as u32) << 1
            | (m.deferred().len().min(3) as u32) << 3;
        let blocked = self.threads.iter().filter(|t| t.blocked.is_some()).count() as u32;
        let calls = lock(&self.log).len();
        let small = calls.min(3) as u32;
        self.feature(kind << 16 | outcome << 8 | state << 3 | blocked << 1 | small << 24);
        // Big trees (`populate`): their size and how many callbacks a step
        // ran, by powers of two, so that feedback keeps inputs that grow them.
        let n = self.bulk.len();
        let live = n + self.slots.iter().flatten().count();
        // Reach: event × tree size × collision/deferred × blocking (the
        // engine takes cells as features too).
        let event = match op {
            Op::Start { event, .. } => Some(*event),
            _ => None,
        };
        let ev = crate::reach::notifier_event(op.keyword(), event);
        let m = &self.model;
        let st = u8::from(m.invalidating()) | u8::from(!m.deferred().is_empty()) << 1;
        let bl = match op {
            Op::Start {
                blockable: false, ..
            } => 2,
            _ => u8::from(blocked > 0),
        };
        let c = crate::reach::notifier_cell(ev, live, st, bl);
        self.out.cells.push(c);
        let peak = &mut self.out.stats.peak_intervals;
        *peak = (*peak).max(live as u64);
        // Each new height of the run, from 4 up: the log2 size buckets say
        // nothing between 64 and 127 intervals, over which an AVL tree can
        // grow from 7 to 9 levels (and every walk up it, one or two nodes
        // longer).
        let h = self.core.tree_height();
        if h > self.peak_height {
            self.peak_height = h;
            if h >= 4 {
                self.feature(0xb100_0000 | h);
            }
        }
        if n >= 16 {
            let log2 = |x: usize| usize::BITS - x.leading_zeros();
            self.feature(0xb000_0000 | log2(n) << 4 | log2(calls));
        }
    }

    /// What an op answered: the first byte of the text, which feeds the
    /// features, and the text itself only when tracing. Formatting it on
    /// every step was one of the executor's top costs.
    fn said(&self, first: u8, text: impl FnOnce() -> String) -> Said {
        let text = if self.opts.trace {
            let text = text();
            debug_assert_eq!(text.as_bytes().first(), Some(&first), "{text}");
            text
        } else {
            String::new()
        };
        Said { first, text }
    }

    fn doing(&self, i: usize) -> String {
        crate::text::format_step(&self.program.steps[i])
    }

    fn doing_at(&self, at: Option<usize>, end_of: Option<usize>) -> String {
        match (end_of, at) {
            (Some(t), _) => format!("t{t} end"),
            (None, Some(i)) => self.doing(i),
            (None, None) => "draining".into(),
        }
    }

    fn result_div(&self, i: usize, core: String, model: String) -> Box<Divergence> {
        self.diverge(DivergenceKind::Result, Some(i), self.doing(i), core, model)
    }

    fn compare_calls(&mut self, i: usize, expected: &[Expected]) -> Checked {
        self.compare_calls_at(Some(i), None, expected)
    }

    /// Checks the callbacks logged since the log was last cleared.
    /// `end_of`: the thread whose `end` is being checked, else line `at` was
    /// run; either names what was being done, rendered only on a divergence.
    fn compare_calls_at(
        &mut self,
        at: Option<usize>,
        end_of: Option<usize>,
        expected: &[Expected],
    ) -> Checked {
        // Swap buffers with the log: neither side reallocates on later steps.
        let mut observed = std::mem::take(&mut self.observed);
        observed.clear();
        std::mem::swap(&mut *lock(&self.log), &mut observed);
        let r = self.check_calls(at, end_of, expected, &observed);
        self.observed = observed;
        r
    }

    fn check_calls(
        &mut self,
        at: Option<usize>,
        end_of: Option<usize>,
        expected: &[Expected],
        observed: &[Observed],
    ) -> Checked {
        self.out.stats.callbacks += observed.len() as u64;
        let same = observed.len() == expected.len()
            && observed
                .iter()
                .zip(expected)
                .all(|(o, e)| self.to_expected(o) == *e);
        if !same || self.opts.trace && !observed.is_empty() {
            let as_model: Vec<Expected> = observed.iter().map(|o| self.to_expected(o)).collect();
            if self.opts.trace && !as_model.is_empty() {
                self.calls_seen = format!(" {}", render_calls(&as_model));
            }
            if !same {
                return Err(self.diverge(
                    DivergenceKind::Callbacks,
                    at,
                    self.doing_at(at, end_of),
                    format!("callbacks {}", render_calls(&as_model)),
                    format!("callbacks {}", render_calls(expected)),
                ));
            }
        }
        let mut first_seq = None;
        for o in observed {
            if let Observed::Interval { cur_seq, .. } = o {
                let first = *first_seq.get_or_insert(cur_seq);
                if cur_seq != first {
                    return Err(self.diverge(
                        DivergenceKind::CallbackSeq,
                        at,
                        self.doing_at(at, end_of),
                        format!(
                            "callbacks of one invalidation saw seqs {first:#x} and {cur_seq:#x}"
                        ),
                        "every callback of one start sees the same cycle".into(),
                    ));
                }
                if cur_seq & 1 == 0 {
                    return Err(self.diverge(
                        DivergenceKind::CallbackSeq,
                        at,
                        self.doing_at(at, end_of),
                        format!("callback ran with even cur_seq {cur_seq:#x}"),
                        "callbacks run only in an odd (invalidating) cycle".into(),
                    ));
                }
            }
        }
        Ok(())
    }

    fn to_expected(&self, o: &Observed) -> Expected {
        // Classic callbacks know only their registration key.
        let classic_id = |key: usize| {
            self.classic_ids
                .get(key)
                .copied()
                .flatten()
                .unwrap_or(notifier::ClassicId(u64::MAX))
        };
        match *o {
            Observed::Interval {
                id,
                range,
                accepted,
                ..
            } => Expected::Interval {
                id,
                range,
                accepted,
            },
            Observed::Finish { id } => Expected::Finish { id },
            Observed::ClassicStart { id, accepted } => Expected::ClassicStart {
                id: classic_id(id),
                accepted,
            },
            Observed::ClassicEnd { id } => Expected::ClassicEnd { id: classic_id(id) },
            Observed::ClassicRelease { id } => Expected::ClassicRelease { id: classic_id(id) },
        }
    }

    fn compare_state(&mut self, at: Option<usize>) -> Checked {
        self.core.snapshot_into(&mut self.snap);
        self.model.membership_into(&mut self.mem);
        let (snap, mem) = (&self.snap, &self.mem);
        let same = snap.tree == mem.tree
            && snap.deferred == mem.deferred
            && snap.classic == mem.classic
            && snap.released == mem.released
            && (snap.seq & 1 == 1) == self.model.invalidating()
            && snap.active == self.model.active();
        if same {
            return Ok(());
        }
        let doing = match at {
            Some(i) => self.doing(i),
            None => "draining".into(),
        };
        let compact = |s: String| {
            s.lines()
                .filter(|l| !l.starts_with('#'))
                .collect::<Vec<_>>()
                .join("; ")
        };
        Err(self.diverge(
            DivergenceKind::State,
            at,
            doing,
            compact(self.render_core()),
            compact(self.render_model()),
        ))
    }

    fn diverge(
        &self,
        kind: DivergenceKind,
        step: Option<usize>,
        doing: String,
        core: String,
        model: String,
    ) -> Box<Divergence> {
        Box::new(Divergence {
            kind,
            step,
            doing,
            core,
            model,
            states: (self.render_core(), self.render_model()),
        })
    }

    fn render_core(&self) -> String {
        let s = self.core.snapshot();
        render_state(
            s.seq & 1 == 1,
            s.active,
            &s.tree,
            &s.deferred,
            &s.classic,
            s.released,
            Some(s.seq),
        )
    }

    fn render_model(&self) -> String {
        let m = self.model.membership();
        render_state(
            self.model.invalidating(),
            self.model.active(),
            &m.tree,
            &m.deferred,
            &m.classic,
            m.released,
            None,
        )
    }
}

fn culprit(c: Culprit) -> String {
    c.to_string()
}

fn render_calls(calls: &[Expected]) -> String {
    let mut s = String::from("[");
    for (n, c) in calls.iter().enumerate() {
        if n > 0 {
            s.push_str(", ");
        }
        match c {
            Expected::Interval {
                id,
                range,
                accepted,
            } => {
                let _ = write!(s, "{id} {range}");
                if !accepted {
                    s.push_str(" refused");
                }
            }
            Expected::Finish { id } => {
                let _ = write!(s, "{id} finish");
            }
            Expected::ClassicStart { id, accepted } => {
                let _ = write!(s, "{id} start{}", if *accepted { "" } else { " refused" });
            }
            Expected::ClassicEnd { id } => {
                let _ = write!(s, "{id} end");
            }
            Expected::ClassicRelease { id } => {
                let _ = write!(s, "{id} release");
            }
        }
    }
    s.push(']');
    s
}

fn render_state(
    invalidating: bool,
    active: u64,
    tree: &[(IntervalId, u64, u64)],
    deferred: &[notifier::Deferred],
    classic: &[notifier::ClassicId],
    released: bool,
    seq: Option<u64>,
) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "invalidating: {invalidating}");
    let _ = writeln!(s, "active: {active}");
    for (id, start, last) in tree {
        let _ = writeln!(s, "tree: {id} [{start:#x}, {last:#x}]");
    }
    for d in deferred {
        let _ = match d {
            notifier::Deferred::Insert(id) => writeln!(s, "deferred: insert {id}"),
            notifier::Deferred::Remove(id) => writeln!(s, "deferred: remove {id}"),
        };
    }
    for c in classic {
        let _ = writeln!(s, "classic: {c}");
    }
    let _ = writeln!(s, "released: {released}");
    if let Some(seq) = seq {
        let _ = writeln!(s, "# core seq {seq:#x}");
    }
    s
}
