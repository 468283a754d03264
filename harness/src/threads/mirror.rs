//! The mirror form of the `threads` target: a program with devices
//! (`config target=threads devices=fullva,odp ...`) whose lines are mirror
//! ops. Each logical thread runs its own lines, in order, on a real
//! (shuttle or OS) thread: device faults run the mirror's blocking fault
//! path (begin and read_begin, walk, driver lock and read_retry, install),
//! mm ops run the simulated mm's operations, whose invalidations call the
//! mirrors' callbacks through the blocking `invalidate_range_start`/`end`.
//!
//! The locks are the threads' (`notifier::sync`): one mutex guards the
//! address space and its physical memory (the mmap lock and the page
//! table lock in one, as the simulated mm is one structure), each mirror
//! has its state mutex and a driver lock that callbacks sleep on
//! ([`Mirror::set_blocking`]), and the core its own lock and wait queue.
//! A fault holds the address space lock for its begin and walk steps only:
//! from read_retry to install it holds the driver lock alone, as a kernel
//! fault holds the driver lock but not the mmap lock there, so a munmap
//! can sit in a callback waiting for the driver lock meanwhile.
//!
//! Checks: no stale device PTE or TLB translation after every committed
//! fault, after every mm op and at the end (the mirror target's oracle,
//! `oracles::mirror::stale_pte`, on a snapshot taken under the address
//! space lock); every waiter is woken (a deadlock is every unfinished
//! thread blocked: shuttle detects it, the watchdog of the OS mode sees no
//! progress); quiescence at the end (core idle with nobody waiting, mmap
//! and driver locks free).

use std::sync::Arc;

use mirror::{FaultBlock, FaultStep, Mirror, MirrorError};
use mm::{Env, Mm, MmConfig, MmId, MmOp, Phys, Task, TaskStep};
use notifier::sync::{Condvar, Mutex, MutexGuard};
use notifier::{Range, Subscriptions};

use crate::outcome::{DivergenceKind, RunOptions};
use crate::program::{DevStep, MmStep, Op, Program};
use crate::text::format_step;
use crate::threads::exec::{diverge, sink, SinkRef, Spawn};

/// The address space and its memory, behind one lock.
struct Space {
    mm: Mm,
    phys: Phys,
    /// Moves on whenever an mm operation finishes (and so may have let go
    /// of the mmap lock): what a step blocked on the mmap lock waits for.
    gen: u64,
}

/// Everything the threads of a mirror program share.
pub(crate) struct World {
    space: Mutex<Space>,
    /// Notified when `Space::gen` moves on.
    mmap: Condvar,
    notifier: Arc<Subscriptions>,
    mirrors: Vec<Option<Mirror>>,
    sink: SinkRef,
    trace: bool,
}

/// On real threads a callback that meets a held driver lock sleeps on it,
/// so every callback may run; a device's own migration still maps what it
/// now owns.
struct Blocking<'a> {
    mirrors: &'a [Option<Mirror>],
}

impl Env for Blocking<'_> {
    fn callbacks_can_run(&self, _mm: MmId, _range: &Range) -> bool {
        true
    }

    fn applied(&self, mm: &Mm, range: &Range) {
        for m in self.mirrors.iter().flatten() {
            m.own_range_done(mm, range);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// How an op ended, for the trace and the features.
struct Said {
    ok: bool,
    text: String,
    extra: u32,
}

impl World {
    /// Sets up `m0` and the config's devices; call it on the thread whose
    /// primitives the run uses (inside the shuttle execution).
    pub(crate) fn new(p: &Program, opts: &RunOptions, sink: SinkRef) -> World {
        let cfg = MmConfig {
            task_size: p.config.task_size,
            initial_seq: p.config.initial_seq,
            planted: opts.planted,
        };
        let mm = Mm::new(MmId(0), cfg);
        let mirrors: Vec<Option<Mirror>> = p
            .config
            .devices
            .iter()
            .enumerate()
            .map(|(d, s)| {
                let m = Mirror::open(d as u8, &mm, (*s)?, opts.planted).ok()?;
                m.set_blocking();
                Some(m)
            })
            .collect();
        World {
            notifier: mm.notifier.clone(),
            space: Mutex::new(Space {
                mm,
                phys: Phys::new(),
                gen: 0,
            }),
            mmap: Condvar::new(),
            mirrors,
            sink,
            trace: opts.trace,
        }
    }

    fn tick(&self) {
        self.sink.tick();
    }

    /// Runs an mm operation to its end on thread `t`.
    fn task(&self, mut task: Task) -> Result<mm::Outcome, mm::MmError> {
        let env = Blocking {
            mirrors: &self.mirrors,
        };
        loop {
            self.tick();
            let mut sp = lock(&self.space);
            let Space { mm, phys, gen } = &mut *sp;
            match task.step(mm, phys, &env) {
                TaskStep::Progress => {}
                TaskStep::Blocked(_) => {
                    // The mmap lock (callbacks never block a step here):
                    // wait for an operation to finish.
                    let seen = *gen;
                    while sp.gen == seen {
                        sp = self.mmap.wait(sp).unwrap_or_else(|e| e.into_inner());
                    }
                }
                TaskStep::Done(r) => {
                    *gen += 1;
                    drop(sp);
                    self.mmap.notify_all();
                    return r;
                }
            }
        }
    }

    /// A device access of thread `t` on device `d`: a TLB or page table
    /// hit, or the blocking fault path. `Ok(retries)` once it is mapped.
    fn fault(
        &self,
        t: u8,
        d: usize,
        addr: u64,
        write: bool,
        line: usize,
    ) -> Result<Result<u32, MirrorError>, ()> {
        let m = self.mirrors[d].as_ref().expect("open");
        if m.translate(addr, write).is_some() {
            return Ok(Ok(0));
        }
        let env = Blocking {
            mirrors: &self.mirrors,
        };
        let mut f = mirror::Fault::new(addr, write);
        loop {
            self.tick();
            let r = if f.needs_mm() {
                let mut sp = lock(&self.space);
                let Space { mm, phys, .. } = &mut *sp;
                f.step(t, m, mm, phys, &env)
            } else {
                f.step_driver(t, m, &self.notifier)
            };
            match r {
                FaultStep::Progress => {}
                FaultStep::Installed(_) => {
                    // The fault committed: the rule holds right now.
                    self.check_stale(Some(line), "after a committed fault")?;
                }
                FaultStep::Blocked(FaultBlock::ReadBegin | FaultBlock::Remove) => {
                    f.wait_notifier(&self.notifier)
                }
                FaultStep::Blocked(FaultBlock::DriverLock) => m.wait_driver_lock(t),
                FaultStep::Blocked(FaultBlock::MmapLock) => self.wait_mmap_writer(),
                FaultStep::Done(r) => return Ok(r.map(|()| f.retries)),
            }
        }
    }

    /// Waits until no writer holds the mmap lock.
    fn wait_mmap_writer(&self) {
        let mut sp = lock(&self.space);
        while sp.mm.lock.writer.is_some() {
            sp = self.mmap.wait(sp).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// One item of device `d`'s deferred work, to its end.
    fn work(&self, t: u8, d: usize) -> Option<Result<&'static str, MirrorError>> {
        let m = self.mirrors[d].as_ref().expect("open");
        let mut item = m.take_work()?;
        loop {
            self.tick();
            let mut sp = lock(&self.space);
            let seen = sp.gen;
            // Why a step blocks is decided under this lock: the mmap lock
            // (work that takes it for write waits for every holder), else
            // the driver lock or a removal.
            let mmap_busy = sp.mm.lock.writer.is_some() || !sp.mm.lock.readers.is_empty();
            match item.step(m, &sp.mm) {
                mirror::DeferredStep::Progress => {}
                mirror::DeferredStep::Done(r) => return Some(r),
                mirror::DeferredStep::Blocked if mmap_busy => {
                    // Wait for an operation to finish.
                    while sp.gen == seen {
                        sp = self.mmap.wait(sp).unwrap_or_else(|e| e.into_inner());
                    }
                }
                mirror::DeferredStep::Blocked => {
                    drop(sp);
                    if !item.wait_notifier(&self.notifier) {
                        m.wait_driver_lock(t);
                    }
                }
            }
        }
    }

    /// No device PTE and no device TLB translation is stale, on a snapshot
    /// taken under the address space lock (device state locked inside it,
    /// the order every path takes).
    fn check_stale(&self, line: Option<usize>, when: &str) -> Result<(), ()> {
        let sp = lock(&self.space);
        for m in self.mirrors.iter().flatten() {
            let table = m.with_ptes(|p| oracles::mirror::stale_pte(&sp.mm, m.owner.0, p));
            let stale = match table {
                Some(st) => Some((st, "maps")),
                None => m
                    .with_tlb(|p| oracles::mirror::stale_pte(&sp.mm, m.owner.0, p))
                    .map(|st| (st, "TLB translates")),
            };
            if let Some((st, verb)) = stale {
                drop(sp);
                diverge(
                    &self.sink,
                    DivergenceKind::StalePte,
                    line,
                    format!("checking d{} {when}", m.id),
                    format!(
                        "d{} {verb} {:#x} to frame {} ({}), the CPU PTE is {:?}",
                        m.id,
                        st.addr,
                        st.device.frame.0,
                        if st.device.write {
                            "writable"
                        } else {
                            "read-only"
                        },
                        st.cpu
                    ),
                );
                return Err(());
            }
            if m.sleeps() > 0 {
                drop(sp);
                diverge(
                    &self.sink,
                    DivergenceKind::Result,
                    line,
                    format!("checking d{} {when}", m.id),
                    "a callback counted a sleep instead of sleeping".into(),
                );
                return Err(());
            }
        }
        Ok(())
    }

    fn said(&self, line: usize, t: u8, op: &Op, s: Said) {
        let kind = crate::codec::kind_of(op) as u32;
        let mut k = sink(&self.sink);
        k.ran += 1;
        k.features
            .insert(0x2000 | kind << 6 | s.extra << 1 | s.ok as u32);
        let order = k.order;
        k.order += 1;
        if self.trace {
            let step = crate::program::Step { thread: t, op: *op };
            k.trace.push(format!(
                "{line:>4}: {}    -> #{order} {}",
                format_step(&step),
                s.text
            ));
        }
    }

    fn skipped(&self) {
        let mut k = sink(&self.sink);
        k.skipped += 1;
    }

    /// Thread `t` runs line `line`. `Err`: a divergence was recorded.
    pub(crate) fn step(&self, t: u8, line: usize, op: &Op) -> Result<(), ()> {
        self.tick();
        let said = match *op {
            Op::Mm { mm: 0, op: mop } if mop != MmStep::Fork => {
                let (task, what) = crate::mirror::exec::mm_op(mop);
                let r = self.task(Task::new(task, t));
                let ok = r.is_ok();
                let text = match &r {
                    Ok(o) => format!("{what}: {o:?}"),
                    Err(e) => format!("{what}: error {e:?}"),
                };
                self.check_stale(Some(line), "after an mm op")?;
                Said { ok, text, extra: 0 }
            }
            Op::Dev { dev, op: dop } => {
                let d = dev as usize;
                let Some(m) = self.mirrors.get(d).and_then(Option::as_ref) else {
                    self.skipped();
                    return Ok(());
                };
                match dop {
                    DevStep::Read { addr } | DevStep::Write { addr, .. } => {
                        if m.uses_registrations() {
                            self.skipped();
                            return Ok(());
                        }
                        let write = matches!(dop, DevStep::Write { .. });
                        match self.fault(t, d, addr, write, line)? {
                            Ok(retries) => Said {
                                ok: true,
                                text: format!("mapped after {retries} retries"),
                                extra: u32::from(retries > 0) | u32::from(retries > 2) << 1,
                            },
                            Err(e) => Said {
                                ok: false,
                                text: format!("error: {e}"),
                                extra: 0,
                            },
                        }
                    }
                    // Read faults every PREFETCH_STRIDE, as the split-phase
                    // executor runs them; the first error ends it.
                    DevStep::Prefetch { addr, len } => {
                        if m.uses_registrations() {
                            self.skipped();
                            return Ok(());
                        }
                        let n = len
                            .div_ceil(crate::program::PREFETCH_STRIDE)
                            .min(crate::program::MAX_PREFETCH);
                        let mut mapped = 0u64;
                        let mut err = None;
                        for i in 0..n {
                            let a = addr.saturating_add(i * crate::program::PREFETCH_STRIDE);
                            match self.fault(t, d, a, false, line)? {
                                Ok(_) => mapped += 1,
                                Err(e) => {
                                    err = Some(e);
                                    break;
                                }
                            }
                        }
                        Said {
                            ok: err.is_none(),
                            text: match err {
                                None => format!("prefetched {mapped} pages"),
                                Some(e) => format!("prefetched {mapped} pages, then error: {e}"),
                            },
                            extra: 0,
                        }
                    }
                    DevStep::Migrate { addr, len }
                    | DevStep::Exclusive { addr, len }
                    | DevStep::Evict { addr, len } => {
                        let owner = m.owner.0;
                        let task = match dop {
                            DevStep::Migrate { .. } => MmOp::DeviceMigrate { addr, len, owner },
                            DevStep::Exclusive { .. } => MmOp::MakeExclusive { addr, len, owner },
                            _ => MmOp::Evict { addr, len, owner },
                        };
                        let r = self.task(Task::new(task, t));
                        self.check_stale(Some(line), "after a device mm op")?;
                        Said {
                            ok: r.is_ok(),
                            text: format!("{r:?}"),
                            extra: 0,
                        }
                    }
                    DevStep::Work => match self.work(t, d) {
                        None => Said {
                            ok: false,
                            text: "nothing queued".into(),
                            extra: 0,
                        },
                        Some(r) => Said {
                            ok: r.is_ok(),
                            text: format!("work: {r:?}"),
                            extra: 1,
                        },
                    },
                    DevStep::Attr { addr, len } => {
                        let r = {
                            let sp = lock(&self.space);
                            m.set_attr(&sp.mm, addr, len)
                        };
                        Said {
                            ok: r.is_ok(),
                            text: format!("attr: {r:?}"),
                            extra: 0,
                        }
                    }
                    DevStep::Snapshot { addr, len } => {
                        let states = {
                            let sp = lock(&self.space);
                            mirror::snapshot(m, &sp.mm, addr, len)
                        };
                        Said {
                            ok: true,
                            text: format!("{} pages", states.len()),
                            extra: 0,
                        }
                    }
                    DevStep::Open { .. }
                    | DevStep::Register { .. }
                    | DevStep::Unregister { .. } => {
                        self.skipped();
                        return Ok(());
                    }
                }
            }
            _ => {
                self.skipped();
                return Ok(());
            }
        };
        self.said(line, t, op, said);
        Ok(())
    }

    /// After every thread is done: the rule once more, and quiescence.
    pub(crate) fn check_end(&self) {
        if self
            .check_stale(None, "after every thread is done")
            .is_err()
        {
            return;
        }
        let snap = self.notifier.snapshot();
        let sp = lock(&self.space);
        let locked = sp.mm.lock != mm::MmapLock::default();
        let held = self.mirrors.iter().flatten().find_map(|m| {
            let h = m.lock_holder()?;
            Some((m.id, h))
        });
        drop(sp);
        if !self.notifier.is_quiescent() || snap.waiters != 0 || locked || held.is_some() {
            diverge(
                &self.sink,
                DivergenceKind::NotQuiescent,
                None,
                "every thread done".into(),
                format!(
                    "seq={:#x} active={} deferred={:?} waiters={} mmap lock held={locked} driver lock held={held:?}",
                    snap.seq, snap.active, snap.deferred, snap.waiters
                ),
            );
        }
    }
}

/// The body of one execution: the world, one thread per logical thread
/// running its lines, the checks at the end.
pub(crate) fn body(
    p: &Program,
    opts: &RunOptions,
    lines: Arc<Vec<Vec<(usize, Op)>>>,
    results: SinkRef,
    spawn: Spawn,
) {
    let world = Arc::new(World::new(p, opts, results));
    let jobs: Vec<Box<dyn FnOnce() + Send>> = (0..lines.len())
        .map(|t| {
            let (world, lines) = (world.clone(), lines.clone());
            Box::new(move || {
                for (i, op) in &lines[t] {
                    if world.step(t as u8, *i, op).is_err() {
                        // A divergence is recorded: this thread stops; the
                        // others finish what they were doing.
                        return;
                    }
                }
            }) as Box<dyn FnOnce() + Send>
        })
        .collect();
    if spawn.run_all(jobs, &world.sink) {
        world.check_end();
    }
}
