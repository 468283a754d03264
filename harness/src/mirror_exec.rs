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

use std::collections::VecDeque;
use std::fmt::Write as _;

use mirror::{snapshot, Fault, FaultStep, Mirror};
use mm::{Env, Mm, MmConfig, MmId, MmOp, Outcome as MmOutcome, Phys, Pte, Task, TaskStep};
use notifier::Range;

use crate::exec::{Divergence, DivergenceKind, Outcome, RunOptions};
use crate::program::{DevStep, MmStep, Op, Program, DEVICES, MAX_THREADS, MMS};

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
    fn callbacks_can_run(&self, mm: MmId, _range: &Range) -> bool {
        self.mirrors
            .iter()
            .flatten()
            .filter(|m| m.mm == mm)
            .all(|m| m.lock_free())
    }
}

enum Access {
    Read,
    Write(u64),
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
    },
    DevMigrate {
        dev: usize,
        task: Task,
        start: u64,
        end: u64,
    },
}

#[derive(Default)]
struct Thread {
    queue: VecDeque<usize>,
    work: Option<Work>,
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
    };
    w.mms[0] = Some(Mm::new(MmId(0), cfg));
    for (d, s) in program.config.devices.iter().enumerate() {
        if let Some(s) = s {
            let mm = w.mms[0].as_ref().expect("m0 exists");
            w.mirrors[d] = Mirror::open(d as u8, mm, *s, opts.planted).ok();
        }
    }
    let r = w.schedule().and_then(|()| w.drain());
    w.out.divergence = r.err().map(|d| *d);
    w.out
}

fn mm_op(op: MmStep) -> (MmOp, &'static str) {
    let k = op.keyword();
    let op = match op {
        MmStep::Mmap {
            addr,
            len,
            kind,
            write,
        } => MmOp::Mmap {
            addr,
            len,
            kind,
            prot: if write { mm::Prot::ReadWrite } else { mm::Prot::Read },
        },
        MmStep::Munmap { addr, len } => MmOp::Munmap { addr, len },
        MmStep::Mprotect { addr, len, write } => MmOp::Mprotect {
            addr,
            len,
            prot: if write { mm::Prot::ReadWrite } else { mm::Prot::Read },
        },
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
        Ok(())
    }

    /// One step of thread `t`; returns what happened, for the trace.
    fn turn(&mut self, t: usize) -> Result<String, Box<Divergence>> {
        self.blocked = false;
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

    fn skip(&mut self, why: &str) -> Option<String> {
        self.out.stats.skipped += 1;
        Some(say!(self, "skipped: {why}"))
    }

    fn mm_ready(&self, mm: usize) -> bool {
        self.mms[mm].as_ref().is_some_and(|m| !m.exited)
    }

    /// Starts the op of line `i` on thread `t`. Returns `Some` when it is
    /// already finished (or skipped); `None` when there is work to step.
    fn start(&mut self, t: usize, i: usize) -> Result<Option<String>, Box<Divergence>> {
        let op = self.program.steps[i].op;
        self.feature(op.keyword().as_bytes()[0] as u32 ^ (op.keyword().len() as u32) << 8);
        match op {
            Op::Mm { mm, op } => {
                let mm = mm as usize;
                if !self.mm_ready(mm) {
                    return Ok(self.skip("no such address space"));
                }
                if op == MmStep::Fork {
                    if mm != 0 || self.mms[1].is_some() || self.forking {
                        return Ok(self.skip("m0 has forked already"));
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
                        return Ok(self.skip("device already open"));
                    }
                    if !self.mm_ready(mm as usize) {
                        return Ok(self.skip("no such address space"));
                    }
                    let m = self.mms[mm as usize].as_ref().expect("checked");
                    self.out.stats.ran += 1;
                    return Ok(Some(
                        match Mirror::open(dev, m, strategy, self.opts.planted) {
                            Ok(mirror) => {
                                self.mirrors[d] = Some(mirror);
                                say!(self, "d{dev} open on m{mm}")
                            }
                            Err(e) => say!(self, "error: {e}"),
                        },
                    ));
                }
                let Some(m) = &self.mirrors[d] else {
                    return Ok(self.skip("device not open"));
                };
                let mm = m.mm.0 as usize;
                if !self.mm_ready(mm) {
                    return Ok(self.skip("its address space is gone"));
                }
                match op {
                    DevStep::Open { .. } => unreachable!("handled above"),
                    DevStep::Snapshot { addr, len } => {
                        self.out.stats.ran += 1;
                        let states: Vec<&str> =
                            snapshot(m, addr, len).iter().map(|s| s.name()).collect();
                        Ok(Some(say!(self, "[{}]", states.join(" "))))
                    }
                    DevStep::Read { addr } | DevStep::Write { addr, .. } => {
                        let access = match op {
                            DevStep::Write { value, .. } => Access::Write(value),
                            _ => Access::Read,
                        };
                        let write = matches!(access, Access::Write(_));
                        if let Some(frame) = m.translate(addr, write) {
                            self.out.stats.ran += 1;
                            return self
                                .device_access(d, addr, frame, &access, Some(i))
                                .map(Some);
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
                        });
                        Ok(None)
                    }
                    DevStep::Migrate { addr, len } => {
                        let owner = m.owner.0;
                        self.threads[t].work = Some(Work::DevMigrate {
                            dev: d,
                            task: Task::new(MmOp::DeviceMigrate { addr, len, owner }, t as u8),
                            start: addr,
                            end: addr.saturating_add(len),
                        });
                        Ok(None)
                    }
                }
            }
            _ => Ok(self.skip("not an op of the mirror target")),
        }
    }

    fn device_access(
        &mut self,
        d: usize,
        addr: u64,
        frame: mm::FrameId,
        access: &Access,
        at: Option<usize>,
    ) -> Result<String, Box<Divergence>> {
        let m = self.mirrors[d].as_ref().expect("open");
        let mm = self.mms[m.mm.0 as usize].as_ref().expect("live");
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
                Ok(say!(self, "device read {v:#x}"))
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
                Ok(say!(self, "device wrote {v:#x}"))
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
                match r {
                    TaskStep::Progress => {
                        self.feature(0x200 | u32::from(what.as_bytes()[1]));
                        self.threads[t].work = Some(work);
                        return Ok(say!(self, "m{mm_i} {what}: step"));
                    }
                    TaskStep::Blocked(b) => {
                        self.out.stats.blocked += 1;
                        self.blocked = true;
                        self.feature(0x300 | b as u32);
                        self.threads[t].work = Some(work);
                        return Ok(say!(self, "blocked: m{mm_i} {what} waits for {b:?}"));
                    }
                    TaskStep::Done(r) => {
                        self.out.stats.ran += 1;
                        if what == "fork" {
                            self.forking = false;
                        }
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
            } => {
                let (d, addr) = (*dev, *addr);
                let Some(mi) = self.mirrors[d].as_ref().map(|m| m.mm.0 as usize) else {
                    return Ok("skipped: device gone".into());
                };
                if !self.mm_ready(mi) {
                    self.out.stats.skipped += 1;
                    return Ok("fault abandoned: its address space exited".into());
                }
                let mut m = self.mms[mi].take().expect("live");
                let mirror = self.mirrors[d].as_ref().expect("open");
                let env = Locks {
                    mirrors: &self.mirrors,
                };
                let phase = fault.phase();
                let r = fault.step(me, mirror, &mut m, &mut self.phys, &env);
                self.mms[mi] = Some(m);
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
                        self.feature(0x500 | phase.len() as u32 | fault.retries.min(3) << 4);
                        let s = say!(self, "d{d} fault {addr:#x}: {phase}");
                        self.threads[t].work = Some(work);
                        return Ok(s);
                    }
                    FaultStep::Blocked(b) => {
                        self.out.stats.blocked += 1;
                        self.blocked = true;
                        self.feature(0x600 | b as u32);
                        self.threads[t].work = Some(work);
                        return Ok(say!(self, "blocked: d{d} fault {addr:#x} waits for {b:?}"));
                    }
                    FaultStep::Installed(pte) => {
                        let s = self.device_access(d, addr, pte.frame, access, None)?;
                        self.threads[t].work = Some(work);
                        return Ok(say!(self, "d{d} fault {addr:#x}: installed, {s}"));
                    }
                    FaultStep::Done(r) => {
                        self.out.stats.ran += 1;
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
            Work::DevMigrate {
                dev,
                task,
                start,
                end,
            } => {
                let (d, s, e) = (*dev, *start, *end);
                let Some(mi) = self.mirrors[d].as_ref().map(|m| m.mm.0 as usize) else {
                    return Ok("skipped: device gone".into());
                };
                if !self.mm_ready(mi) {
                    self.out.stats.skipped += 1;
                    return Ok("migration abandoned: its address space exited".into());
                }
                let mut m = self.mms[mi].take().expect("live");
                let env = Locks {
                    mirrors: &self.mirrors,
                };
                let before: Vec<(u64, Pte)> = m.ptes().collect();
                let r = task.step(&mut m, &mut self.phys, &env);
                let after: Vec<(u64, Pte)> = m.ptes().collect();
                let open = task.open_range();
                if task.just_applied() {
                    self.mirrors[d]
                        .as_ref()
                        .expect("open")
                        .remap_after_own_migration(&m, s, e);
                }
                self.mms[mi] = Some(m);
                self.check_notified(t, mi, "device migrate", &before, &after, open)?;
                match r {
                    TaskStep::Progress => {
                        self.threads[t].work = Some(work);
                        return Ok(say!(self, "d{d} migrate: step"));
                    }
                    TaskStep::Blocked(b) => {
                        self.out.stats.blocked += 1;
                        self.blocked = true;
                        self.threads[t].work = Some(work);
                        return Ok(say!(self, "blocked: d{d} migrate waits for {b:?}"));
                    }
                    TaskStep::Done(r) => {
                        self.out.stats.ran += 1;
                        say!(self, "d{d} migrate: {r:?}")
                    }
                }
            }
        };
        Ok(said)
    }

    fn feature(&mut self, f: u32) {
        self.out.features.push(f);
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
            let Some(mm) = self.mms[m.mm.0 as usize].as_ref() else {
                continue;
            };
            if let Some(st) = m.with_ptes(|ptes| oracles::mirror::stale_pte(mm, ptes)) {
                return Err(self.diverge(
                    DivergenceKind::StalePte,
                    at,
                    format!("checking d{} after the step", m.id),
                    format!(
                        "d{} maps {:#x} to frame {} {}",
                        m.id,
                        st.addr,
                        st.device.frame.0,
                        if st.device.write {
                            "writable"
                        } else {
                            "read-only"
                        }
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
