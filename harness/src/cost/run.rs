//! Runs a workload's trace through one strategy, on one logical thread,
//! with the same mm and mirror APIs as the executor (tasks stepped to
//! their end, faults stepped through begin, walk, commit and install, the
//! device's deferred work drained after every step), and counts.

use mirror::{Access, DeferredStep, Fault, FaultStep, Mirror, MirrorError, StrategySpec};
use mm::{Env, MapKind, Mm, MmConfig, MmId, MmOp, Outcome, Phys, Prot, Task, TaskStep};
use notifier::cost::{self, Counts, Metric};
use notifier::Range;

use super::workload::{WOp, TASK_SIZE};

/// Steps one operation may take before the driver gives up on it (a
/// serial run never needs more; a stuck op is reported, never hung on).
const STEP_LIMIT: u32 = 100_000;

/// Times a device access is tried again after `EAGAIN` (the deferred work
/// runs in between).
const AGAIN_LIMIT: u32 = 8;

/// What one run counted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunCounts {
    /// Steps of the trace.
    pub ops: u64,
    /// Device accesses in the trace.
    pub accesses: u64,
    /// Operations that failed (an error answer: a device access on a page
    /// the strategy will not map, a THP collapse with pages missing…).
    pub failed: u64,
    /// The counted costs.
    pub counts: Counts,
}

struct World<'a> {
    phys: Phys,
    mm: Mm,
    child: Option<Mm>,
    dev: Option<&'a Mirror>,
}

struct Idle<'a>(Option<&'a Mirror>);

impl Env for Idle<'_> {
    fn callbacks_can_run(&self, mm: MmId, range: &Range) -> bool {
        self.0
            .is_none_or(|m| m.mm != mm || m.callback_can_run(range))
    }

    fn applied(&self, mm: &Mm, range: &Range) {
        if let Some(m) = self.0.filter(|m| m.mm == mm.id) {
            m.own_range_done(mm, range);
        }
    }
}

/// Why an op could not finish.
#[derive(Debug)]
struct Failed;

/// Runs `trace` with strategy `spec` and returns what it cost. Counting
/// is switched on for the process; the counts are this thread's.
pub fn run(spec: StrategySpec, trace: &[WOp]) -> RunCounts {
    cost::enable();
    let _ = cost::take();
    let cfg = MmConfig {
        task_size: TASK_SIZE,
        initial_seq: 2,
        planted: None,
    };
    let mm = Mm::new(MmId(0), cfg);
    let mirror = Mirror::open(0, &mm, spec, None).ok();
    let mut w = World {
        phys: Phys::new(),
        mm,
        child: None,
        dev: mirror.as_ref(),
    };
    let mut out = RunCounts {
        ops: 0,
        accesses: 0,
        failed: 0,
        counts: Counts::default(),
    };
    for op in trace {
        out.ops += 1;
        if matches!(op, WOp::Dev { .. }) {
            out.accesses += 1;
        }
        if w.op(*op).is_err() {
            out.failed += 1;
        }
        if w.drain_work().is_err() {
            out.failed += 1;
        }
        if let Some(m) = w.dev {
            cost::gauge(Metric::StateBytes, m.state_bytes());
        }
    }
    // The child may outlive the trace.
    if w.child.is_some() {
        let _ = w.op(WOp::ChildExit);
    }
    out.counts = cost::take();
    drop(w);
    drop(mirror);
    out
}

impl World<'_> {
    fn op(&mut self, op: WOp) -> Result<(), Failed> {
        let rw = Prot::ReadWrite;
        match op {
            WOp::Mmap { addr, len } => self.task(
                MmOp::Mmap {
                    addr,
                    len,
                    kind: MapKind::AnonPrivate,
                    prot: rw,
                },
                false,
            ),
            WOp::Munmap { addr, len } => self.task(MmOp::Munmap { addr, len }, false),
            WOp::Dontneed { addr, len } => self.task(MmOp::Dontneed { addr, len }, false),
            WOp::Mprotect { addr, len, ro } => self.task(
                MmOp::Mprotect {
                    addr,
                    len,
                    prot: if ro { Prot::Read } else { rw },
                },
                false,
            ),
            WOp::DevAlloc { addr, len } => match self.dev {
                // Only a strategy with attributes has anything to do.
                Some(m) => match m.set_attr(&self.mm, addr, len) {
                    Ok(()) | Err(MirrorError::Inval) => Ok(()),
                    Err(_) => Err(Failed),
                },
                None => Ok(()),
            },
            WOp::Cpu { addr, write } => self.task(
                MmOp::Access {
                    addr,
                    write: write.then_some(addr),
                },
                false,
            ),
            WOp::Dev { addr, write } => self.device(addr, write),
            WOp::DevMigrate { addr, len } => {
                let owner = self.owner()?;
                self.task(MmOp::DeviceMigrate { addr, len, owner }, false)
            }
            WOp::DevEvict { addr, len } => {
                let owner = self.owner()?;
                self.task(MmOp::Evict { addr, len, owner }, false)
            }
            WOp::Reclaim { addr } => self.task(MmOp::Reclaim { addr }, false),
            WOp::Migrate { addr } => self.task(MmOp::Migrate { addr }, false),
            WOp::Ksm { a, b } => self.task(MmOp::Ksm { a, b }, false),
            WOp::Collapse { addr } => self.task(MmOp::ThpCollapse { addr }, false),
            WOp::Split { addr } => self.task(MmOp::ThpSplit { addr }, false),
            WOp::Fork => {
                if self.child.is_some() {
                    return Err(Failed);
                }
                self.task(MmOp::Fork, false)
            }
            WOp::ChildWrite { addr } => self.task(
                MmOp::Access {
                    addr,
                    write: Some(addr ^ 1),
                },
                true,
            ),
            WOp::ChildExit => {
                let r = self.task(MmOp::Exit, true);
                self.child = None;
                r
            }
        }
    }

    fn owner(&self) -> Result<u64, Failed> {
        self.dev.map(|m| m.owner.0).ok_or(Failed)
    }

    /// Runs an mm task on the parent (or the child) to its end.
    fn task(&mut self, op: MmOp, child: bool) -> Result<(), Failed> {
        let mut t = Task::new(op, 0);
        let env = Idle(self.dev);
        let mm = if child {
            self.child.as_mut().ok_or(Failed)?
        } else {
            &mut self.mm
        };
        for _ in 0..STEP_LIMIT {
            match t.step(mm, &mut self.phys, &env) {
                TaskStep::Progress => {}
                TaskStep::Blocked(_) => return Err(Failed),
                TaskStep::Done(Ok(Outcome::Forked(mut c))) => {
                    c.id = MmId(1);
                    self.child = Some(*c);
                    return Ok(());
                }
                TaskStep::Done(r) => return r.map(|_| ()).map_err(|_| Failed),
            }
        }
        Err(Failed)
    }

    /// A device access: a hit in the device page table, else a fault (or,
    /// for a registration cache, a lookup, a registration, a pin).
    fn device(&mut self, addr: u64, write: bool) -> Result<(), Failed> {
        let m = self.dev.ok_or(Failed)?;
        if m.uses_registrations() {
            return self.reg_access(m, addr, write);
        }
        for _ in 0..AGAIN_LIMIT {
            if m.translate(addr, write).is_some() {
                return Ok(());
            }
            match self.fault(m, Fault::new(addr, write)) {
                Ok(()) => return Ok(()),
                Err(MirrorError::Again) => self.drain_work()?,
                Err(_) => return Err(Failed),
            }
        }
        Err(Failed)
    }

    fn fault(&mut self, m: &Mirror, mut f: Fault) -> Result<(), MirrorError> {
        let env = Idle(self.dev);
        for _ in 0..STEP_LIMIT {
            match f.step(0, m, &mut self.mm, &mut self.phys, &env) {
                FaultStep::Progress | FaultStep::Installed(_) => {}
                FaultStep::Blocked(_) => return Err(MirrorError::Again),
                FaultStep::Done(r) => return r,
            }
        }
        Err(MirrorError::Again)
    }

    /// A registration cache serves the access from a valid registration,
    /// revalidates an invalid one, or registers the 64-page aligned block
    /// around it (clipped to its VMA) on a miss, as an MR cache does.
    fn reg_access(&mut self, m: &Mirror, addr: u64, write: bool) -> Result<(), Failed> {
        for _ in 0..AGAIN_LIMIT {
            match m.access_begin(0, addr, write) {
                Access::Go { reg, .. } => {
                    m.access_end(reg);
                    return Ok(());
                }
                Access::Revalidate(f) => {
                    if self.fault(m, f).is_err() {
                        // The registration cannot be pinned again (its
                        // memory went): drop it, register afresh.
                        self.unregister_at(m, addr)?;
                    }
                }
                Access::Blocked => self.drain_work()?,
                Access::Err(MirrorError::NoEnt) => {
                    let block = mirror::strategy::regcache::MAX_REG_PAGES * mm::PAGE;
                    let vma = self.mm.vma_at(addr).copied().ok_or(Failed)?;
                    let start = (addr / block * block).max(vma.start);
                    let end = (addr / block * block + block).min(vma.end);
                    let f = m
                        .register(&self.mm, start, end - start)
                        .map_err(|_| Failed)?;
                    self.fault(m, f).map_err(|_| Failed)?;
                }
                Access::Err(_) => return Err(Failed),
            }
        }
        Err(Failed)
    }

    /// Drops the registration covering `addr`, whatever its start.
    fn unregister_at(&mut self, m: &Mirror, addr: u64) -> Result<(), Failed> {
        let block = mirror::strategy::regcache::MAX_REG_PAGES * mm::PAGE;
        let vma_start = self.mm.vma_at(addr).map_or(addr, |v| v.start);
        let start = (addr / block * block).max(vma_start);
        match m.unregister(0, &self.mm, &mut self.phys, start) {
            Ok(Some(w)) => {
                if mirror::finish_remove(&self.mm, w).is_some() {
                    return Err(Failed);
                }
                Ok(())
            }
            _ => Err(Failed),
        }
    }

    /// Runs the device's deferred work until none is left.
    fn drain_work(&mut self) -> Result<(), Failed> {
        let Some(m) = self.dev else { return Ok(()) };
        let mut bad = false;
        while let Some(mut item) = m.take_work() {
            let mut done = false;
            for _ in 0..STEP_LIMIT {
                match item.step(m, &self.mm) {
                    DeferredStep::Progress => {}
                    DeferredStep::Blocked => break,
                    DeferredStep::Done(r) => {
                        bad |= r.is_err();
                        done = true;
                        break;
                    }
                }
            }
            if !done {
                return Err(Failed);
            }
        }
        if bad {
            Err(Failed)
        } else {
            Ok(())
        }
    }
}
