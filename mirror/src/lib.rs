//! HMM-style device mirrors over the simulated address space.
//!
//! A [`Mirror`] owns a device page table and a driver lock (a logical lock
//! held by a logical thread, so that the scheduler can interleave around
//! it). It keeps the table coherent with the CPU through the notifier, using
//! one of the interval strategies of real drivers:
//!
//! * [`Strategy::FullVa`]: one interval over the whole address space,
//!   inserted at open (the HMM self-test driver; full-VA ODP).
//! * [`Strategy::PerFault`]: a temporary interval per fault, inserted before
//!   read_begin and removed after commit; teardown of installed PTEs goes
//!   through a classic subscriber (nouveau).
//!
//! A device fault is a [`Fault`], split into the steps of the kernel's
//! pattern: begin (find or insert the interval, read_begin, which may
//! wait), walk (the hmm_range_fault analogue: sample the CPU page table
//! under the mmap read lock, faulting the page in; busy if check_retry turns
//! true), commit (take the driver lock; read_retry: unlock and begin again,
//! or go on) and install (write the device PTE, unlock).

#![deny(missing_docs)]

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use mm::{Env, FrameId, Mm, MmId, MmOp, Phys, Pte, Task, PAGE};
use notifier::{
    ClassicId, ClassicOps, Event, Interval, Owner, PlantedBug, Range, ReadBegin, RemoveWait,
    SeqWait,
};

/// How a mirror chooses its intervals.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Strategy {
    /// One interval over the whole address space.
    FullVa,
    /// A temporary interval per fault; a classic subscriber tears down.
    PerFault,
    /// Intervals created on demand for aligned chunks of `1 << chunk_shift`
    /// bytes, found without the driver lock; emptied chunks are destroyed
    /// by deferred work.
    OdpImplicit {
        /// log2 of the chunk size, `ODP_MIN_SHIFT..=ODP_MAX_SHIFT`.
        chunk_shift: u8,
    },
    /// Intervals that cover VMAs, trimmed or split on unmap by deferred
    /// updates.
    VmaTracking,
    /// Explicit registrations that pin their frames.
    RegistrationCache,
}

/// The smallest ODP chunk: four pages.
pub const ODP_MIN_SHIFT: u8 = 14;
/// The largest ODP chunk: 1 GiB.
pub const ODP_MAX_SHIFT: u8 = 30;

impl Strategy {
    /// One of each kind (ODP with 2 MiB chunks).
    pub const ALL: [Strategy; 5] = [
        Strategy::FullVa,
        Strategy::PerFault,
        Strategy::OdpImplicit { chunk_shift: 21 },
        Strategy::VmaTracking,
        Strategy::RegistrationCache,
    ];

    /// Its name in `.ops` files: `fullva`, `perfault`, `odp:2m`, `vma`,
    /// `regcache`.
    pub fn name(self) -> String {
        match self {
            Strategy::FullVa => "fullva".into(),
            Strategy::PerFault => "perfault".into(),
            Strategy::OdpImplicit { chunk_shift } => {
                let (n, unit) = match chunk_shift {
                    30.. => (1u64 << (chunk_shift - 30), "g"),
                    20..=29 => (1u64 << (chunk_shift - 20), "m"),
                    _ => (1u64 << chunk_shift.saturating_sub(10), "k"),
                };
                format!("odp:{n}{unit}")
            }
            Strategy::VmaTracking => "vma".into(),
            Strategy::RegistrationCache => "regcache".into(),
        }
    }

    /// Looks a strategy up by name.
    pub fn from_name(s: &str) -> Option<Strategy> {
        match s {
            "fullva" => return Some(Strategy::FullVa),
            "perfault" => return Some(Strategy::PerFault),
            "vma" => return Some(Strategy::VmaTracking),
            "regcache" => return Some(Strategy::RegistrationCache),
            _ => {}
        }
        let size = s.strip_prefix("odp:")?;
        let (digits, shift) = match size.as_bytes().last()? {
            b'k' => (&size[..size.len() - 1], 10),
            b'm' => (&size[..size.len() - 1], 20),
            b'g' => (&size[..size.len() - 1], 30),
            _ => return None,
        };
        let n: u64 = digits.parse().ok()?;
        if !n.is_power_of_two() {
            return None;
        }
        let chunk_shift = u8::try_from(n.trailing_zeros() + shift).ok()?;
        let st = Strategy::OdpImplicit { chunk_shift };
        ((ODP_MIN_SHIFT..=ODP_MAX_SHIFT).contains(&chunk_shift) && st.name() == s).then_some(st)
    }
}

/// A device page table entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DevPte {
    /// The frame the device reaches.
    pub frame: FrameId,
    /// Write permission.
    pub write: bool,
}

/// What the driver lock protects.
#[derive(Debug, Default)]
pub struct DevState {
    /// The device page table: page address to entry.
    pub dpt: BTreeMap<u64, DevPte>,
    /// The logical thread holding the driver lock.
    pub lock: Option<u8>,
    /// Callbacks that found the driver lock taken in a blockable range:
    /// they would have slept; the scheduler must never let that happen.
    pub sleeps: u64,
    /// Device faults handled (accesses that missed the device page table).
    pub faults: u64,
}

/// Why a mirror could not be opened or a fault could not complete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MirrorError {
    /// The notifier refused (the address space has been released…).
    Notifier(notifier::Error),
    /// The CPU fault failed: no mapping, or a write to a read-only one.
    Segv(mm::MmError),
    /// The mirror is not attached to this address space.
    WrongMm,
    /// Nothing to work on: no registration covers the address, or no page
    /// in the range could be migrated (ENOENT).
    NoEnt,
    /// The operation does not apply to this mirror's strategy or state (EINVAL).
    Inval,
}

impl fmt::Display for MirrorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MirrorError::Notifier(e) => write!(f, "notifier: {e}"),
            MirrorError::Segv(e) => write!(f, "fault: {e:?}"),
            MirrorError::WrongMm => f.write_str("mirror attached to another address space"),
            MirrorError::NoEnt => f.write_str("no such entry"),
            MirrorError::Inval => f.write_str("invalid for this mirror"),
        }
    }
}

fn lock(state: &Mutex<DevState>) -> MutexGuard<'_, DevState> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Clone)]
struct Callback {
    state: Arc<Mutex<DevState>>,
    owner: Owner,
    #[cfg(feature = "planted-bugs")]
    planted: Option<PlantedBug>,
}

impl Callback {
    #[cfg(feature = "planted-bugs")]
    fn planted(&self, b: PlantedBug) -> bool {
        self.planted == Some(b)
    }

    #[cfg(not(feature = "planted-bugs"))]
    fn planted(&self, _b: PlantedBug) -> bool {
        false
    }

    /// The invalidate callback: take the driver lock, record the collision,
    /// tear down device PTEs in the range, unlock.
    fn invalidate(&self, range: &Range, iv: Option<(&Interval, u64)>) -> bool {
        let mut st = lock(&self.state);
        if st.lock.is_some() {
            // A try-lock failed: only a non-blockable range may give up.
            if !range.blockable {
                return false;
            }
            st.sleeps += 1;
        }
        let own = if self.planted(PlantedBug::OwnerSkipWrong) {
            range.owner.is_some()
        } else {
            range.owner == Some(self.owner)
        };
        // Our own migration rewrites our PTEs itself; the seq still moves so
        // that a racing fault of ours retries.
        let own_migration = range.event == Event::Migrate && own;
        if let Some((iv, seq)) = iv {
            let skip =
                self.planted(PlantedBug::MirrorSkipSetSeq) && range.event == Event::SoftDirty;
            if !skip {
                let _ = iv.set_seq(seq);
            }
        }
        if !own_migration {
            let pages: Vec<u64> = st
                .dpt
                .range(range.start / PAGE * PAGE..range.end)
                .map(|(&a, _)| a)
                .collect();
            for a in pages {
                st.dpt.remove(&a);
            }
        }
        true
    }
}

impl ClassicOps for Callback {
    fn invalidate_range_start(&self, range: &Range) -> bool {
        self.invalidate(range, None)
    }

    // After release no invalidation reaches a classic subscriber again, so
    // every device mapping must go now.
    fn release(&self) {
        lock(&self.state).dpt.clear();
    }
}

/// One device attached to one address space.
pub struct Mirror {
    /// Its slot.
    pub id: u8,
    /// The address space it mirrors.
    pub mm: MmId,
    /// Its owner token, carried by its own migrations.
    pub owner: Owner,
    /// Its strategy.
    pub strategy: Strategy,
    /// Device page table and driver lock.
    pub state: Arc<Mutex<DevState>>,
    cb: Callback,
    full: Option<Interval>,
    classic: Option<ClassicId>,
}

impl fmt::Debug for Mirror {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mirror")
            .field("id", &self.id)
            .field("mm", &self.mm)
            .field("strategy", &self.strategy)
            .finish()
    }
}

impl Mirror {
    /// Attaches device `id` to `mm` with `strategy`.
    pub fn open(
        id: u8,
        mm: &Mm,
        strategy: Strategy,
        planted: Option<PlantedBug>,
    ) -> Result<Mirror, MirrorError> {
        let state: Arc<Mutex<DevState>> = Arc::default();
        #[cfg(not(feature = "planted-bugs"))]
        let _ = planted;
        let cb = Callback {
            state: state.clone(),
            owner: Owner(u64::from(id) + 1),
            #[cfg(feature = "planted-bugs")]
            planted,
        };
        let mut m = Mirror {
            id,
            mm: mm.id,
            owner: cb.owner,
            strategy,
            state,
            cb: cb.clone(),
            full: None,
            classic: None,
        };
        match strategy {
            Strategy::FullVa
            | Strategy::OdpImplicit { .. }
            | Strategy::VmaTracking
            | Strategy::RegistrationCache => {
                m.full = Some(
                    mm.notifier
                        .insert(0, mm.config.task_size, interval_ops(cb))
                        .map_err(MirrorError::Notifier)?,
                );
            }
            Strategy::PerFault => {
                m.classic = Some(
                    mm.notifier
                        .register(Arc::new(cb))
                        .map_err(MirrorError::Notifier)?,
                );
            }
        }
        Ok(m)
    }

    /// Whether the driver lock is free.
    pub fn lock_free(&self) -> bool {
        lock(&self.state).lock.is_none()
    }

    /// Who holds the driver lock.
    pub fn lock_holder(&self) -> Option<u8> {
        lock(&self.state).lock
    }

    /// The device PTE for the page containing `addr`.
    pub fn pte(&self, addr: u64) -> Option<DevPte> {
        lock(&self.state).dpt.get(&(addr / PAGE * PAGE)).copied()
    }

    /// Runs `f` over every device PTE, ascending, without copying them.
    pub fn with_ptes<R>(&self, f: impl FnOnce(&mut dyn Iterator<Item = (u64, DevPte)>) -> R) -> R {
        let st = lock(&self.state);
        let mut it = st.dpt.iter().map(|(&a, &p)| (a, p));
        f(&mut it)
    }

    /// Every device PTE, ascending.
    pub fn ptes(&self) -> Vec<(u64, DevPte)> {
        lock(&self.state)
            .dpt
            .iter()
            .map(|(&a, &p)| (a, p))
            .collect()
    }

    /// Device faults handled so far.
    pub fn faults(&self) -> u64 {
        lock(&self.state).faults
    }

    /// Callbacks that would have slept (must stay zero).
    pub fn sleeps(&self) -> u64 {
        lock(&self.state).sleeps
    }

    /// After this device's own migration moved pages: point its PTEs for
    /// the range at the pages' new frames, as the driver maps what it migrated.
    pub fn remap_after_own_migration(&self, mm: &Mm, start: u64, end: u64) {
        let mut st = lock(&self.state);
        let pages: Vec<u64> = st.dpt.range(start..end).map(|(&a, _)| a).collect();
        for a in pages {
            match mm.pte(a) {
                Some(Pte::Present { frame, writable }) => {
                    let p = st.dpt.get_mut(&a).expect("listed");
                    p.frame = frame;
                    p.write &= writable;
                }
                _ => {
                    st.dpt.remove(&a);
                }
            }
        }
    }

    /// A device access that needs no fault: the frame, if the device PTE
    /// grants it.
    pub fn translate(&self, addr: u64, write: bool) -> Option<FrameId> {
        self.pte(addr)
            .filter(|p| p.write || !write)
            .map(|p| p.frame)
    }
}

fn interval_ops(cb: Callback) -> Arc<dyn notifier::IntervalOps> {
    Arc::new(move |iv: &Interval, r: &Range, seq: u64| cb.invalidate(r, Some((iv, seq))))
}

/// What a fault step is waiting for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FaultBlock {
    /// read_begin: the interval is being invalidated.
    ReadBegin,
    /// The mmap lock (a writer holds it).
    MmapLock,
    /// The driver lock, or a callback that would need one.
    DriverLock,
    /// Removal of the temporary interval.
    Remove,
}

/// The result of one fault step.
#[derive(Debug)]
pub enum FaultStep {
    /// A step was taken.
    Progress,
    /// Nothing could be done now.
    Blocked(FaultBlock),
    /// The device PTE was installed (with the driver lock held until this
    /// step ends): do the device access now. More steps may follow.
    Installed(DevPte),
    /// Finished.
    Done(Result<(), MirrorError>),
}

#[derive(Debug)]
enum State {
    Begin,
    Waiting(SeqWait),
    Walk,
    Commit,
    Install,
    Removing(RemoveWait),
    Done,
}

/// A device fault on one page.
#[derive(Debug)]
pub struct Fault {
    addr: u64,
    write: bool,
    state: State,
    iv: Option<Interval>,
    seq: u64,
    sample: Option<(FrameId, bool)>,
    // PerFault: the interval is ours to remove.
    temp: bool,
    failed: Option<MirrorError>,
    /// Collisions so far (times the fault began again).
    pub retries: u32,
}

impl Fault {
    /// A fault on the page containing `addr`, for write or read.
    pub fn new(addr: u64, write: bool) -> Fault {
        Fault {
            addr: addr / PAGE * PAGE,
            write,
            state: State::Begin,
            iv: None,
            seq: 0,
            sample: None,
            temp: false,
            failed: None,
            retries: 0,
        }
    }

    /// The step it is at, for traces.
    pub fn phase(&self) -> &'static str {
        match self.state {
            State::Begin => "begin",
            State::Waiting(_) => "read_begin wait",
            State::Walk => "walk",
            State::Commit => "commit",
            State::Install => "install",
            State::Removing(_) => "remove",
            State::Done => "done",
        }
    }

    fn retry(&mut self) {
        self.retries += 1;
        self.state = State::Begin;
    }

    /// Takes one step on behalf of logical thread `me`.
    pub fn step(
        &mut self,
        me: u8,
        m: &Mirror,
        mm: &mut Mm,
        phys: &mut Phys,
        env: &dyn Env,
    ) -> FaultStep {
        if m.mm != mm.id {
            return FaultStep::Done(Err(MirrorError::WrongMm));
        }
        match std::mem::replace(&mut self.state, State::Done) {
            State::Begin => {
                let iv = match (&self.iv, m.strategy) {
                    (Some(iv), _) => iv.clone(),
                    (None, _) if m.full.is_some() => m.full.clone().expect("opened with an interval"),
                    (None, _) => {
                        match mm
                            .notifier
                            .insert(self.addr, PAGE, interval_ops(m.cb.clone()))
                        {
                            Ok(iv) => {
                                self.temp = true;
                                iv
                            }
                            Err(e) => return FaultStep::Done(Err(MirrorError::Notifier(e))),
                        }
                    }
                };
                self.iv = Some(iv.clone());
                match mm.notifier.read_begin_prepare(&iv) {
                    Ok(ReadBegin::Ready(seq)) => {
                        self.seq = seq;
                        self.state = State::Walk;
                    }
                    Ok(ReadBegin::Wait(w)) => self.state = State::Waiting(w),
                    Err(e) => return FaultStep::Done(Err(MirrorError::Notifier(e))),
                }
                FaultStep::Progress
            }
            State::Waiting(w) => {
                if !mm.notifier.wait_is_ready(&w) {
                    self.state = State::Waiting(w);
                    return FaultStep::Blocked(FaultBlock::ReadBegin);
                }
                self.seq = mm.notifier.read_begin_finish(w);
                self.state = State::Walk;
                FaultStep::Progress
            }
            State::Walk => {
                self.state = State::Walk;
                if mm.lock.writer.is_some() {
                    return FaultStep::Blocked(FaultBlock::MmapLock);
                }
                let ok = matches!(mm.pte(self.addr), Some(Pte::Present { writable, .. }) if writable || !self.write);
                if !ok {
                    // Faulting in may invalidate (a COW break): its callbacks
                    // must be able to take their driver locks.
                    let page = Range::new(self.addr, self.addr.saturating_add(PAGE), Event::Clear);
                    if !env.callbacks_can_run(mm.id, &page) {
                        return FaultStep::Blocked(FaultBlock::DriverLock);
                    }
                    let t = Task::new(
                        MmOp::FaultIn {
                            addr: self.addr,
                            write: self.write,
                        },
                        me,
                    );
                    if let Err(e) = t.run_nested(mm, phys, env) {
                        self.failed = Some(MirrorError::Segv(e));
                        self.finish_or_remove(mm);
                        return self.step(me, m, mm, phys, env);
                    }
                }
                self.sample = match mm.pte(self.addr) {
                    Some(Pte::Present { frame, writable }) => Some((frame, writable)),
                    _ => None,
                };
                let iv = self.iv.as_ref().expect("begun");
                if self.sample.is_none() || iv.check_retry(self.seq) {
                    self.retry();
                } else {
                    self.state = State::Commit;
                }
                FaultStep::Progress
            }
            State::Commit => {
                let unlocked = m.cb.planted(PlantedBug::ReadRetryUnlocked);
                if !unlocked {
                    let mut st = lock(&m.state);
                    if st.lock.is_some_and(|h| h != me) {
                        drop(st);
                        self.state = State::Commit;
                        return FaultStep::Blocked(FaultBlock::DriverLock);
                    }
                    st.lock = Some(me);
                }
                let iv = self.iv.as_ref().expect("begun");
                if iv.read_retry(self.seq) {
                    if !unlocked {
                        lock(&m.state).lock = None;
                    }
                    self.retry();
                } else {
                    self.state = State::Install;
                }
                FaultStep::Progress
            }
            State::Install => {
                let mut st = lock(&m.state);
                if st.lock.is_some_and(|h| h != me) {
                    drop(st);
                    self.state = State::Install;
                    return FaultStep::Blocked(FaultBlock::DriverLock);
                }
                let (frame, writable) = self.sample.expect("walked");
                let pte = DevPte {
                    frame,
                    write: writable,
                };
                st.dpt.insert(self.addr, pte);
                st.lock = None;
                drop(st);
                self.finish_or_remove(mm);
                FaultStep::Installed(pte)
            }
            State::Removing(RemoveWait::Wait(w)) => {
                if !mm.notifier.wait_is_ready(&w) {
                    self.state = State::Removing(RemoveWait::Wait(w));
                    return FaultStep::Blocked(FaultBlock::Remove);
                }
                mm.notifier.remove_finish(RemoveWait::Wait(w));
                self.finished()
            }
            State::Removing(RemoveWait::Done) | State::Done => self.finished(),
        }
    }

    fn finished(&mut self) -> FaultStep {
        self.state = State::Done;
        FaultStep::Done(self.failed.take().map_or(Ok(()), Err))
    }

    // PerFault drops its temporary interval; removal may have to wait.
    fn finish_or_remove(&mut self, mm: &Mm) {
        let iv = self.iv.take();
        self.state = match iv {
            Some(iv) if self.temp => match mm.notifier.remove_prepare(&iv) {
                Ok(w) => State::Removing(w),
                Err(_) => State::Done,
            },
            _ => State::Done,
        };
    }

    /// Whether the fault is still in the read-side section (begun, not yet
    /// committed or retried): a test and report helper.
    pub fn in_read_section(&self) -> bool {
        matches!(self.state, State::Walk | State::Commit | State::Install)
    }
}

/// A page's state as a device sees it without faulting, in the style of
/// the HMM self tests' snapshot: what the CPU page table holds, from this
/// device's point of view.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PageState {
    /// Nothing mapped (no PTE, swapped out, or no VMA).
    None,
    /// The VMA forbids access (PROT_NONE).
    Error,
    /// The shared zero page.
    Zero,
    /// Mapped read-only.
    Read,
    /// Mapped writable.
    Write,
    /// Part of a huge (2 MiB) mapping, read-only.
    HugeRead,
    /// Part of a huge (2 MiB) mapping, writable.
    HugeWrite,
    /// In this device's private memory, read-only.
    LocalRead,
    /// In this device's private memory, writable.
    LocalWrite,
    /// In another device's private memory, read-only.
    RemoteRead,
    /// In another device's private memory, writable.
    RemoteWrite,
    /// Held exclusively by a device for atomics; no CPU mapping.
    Exclusive,
}

impl PageState {
    /// Every state.
    pub const ALL: [PageState; 12] = [
        PageState::None,
        PageState::Error,
        PageState::Zero,
        PageState::Read,
        PageState::Write,
        PageState::HugeRead,
        PageState::HugeWrite,
        PageState::LocalRead,
        PageState::LocalWrite,
        PageState::RemoteRead,
        PageState::RemoteWrite,
        PageState::Exclusive,
    ];

    /// Its name in traces and `expect` lines.
    pub fn name(self) -> &'static str {
        match self {
            PageState::None => "none",
            PageState::Error => "error",
            PageState::Zero => "zero",
            PageState::Read => "read",
            PageState::Write => "write",
            PageState::HugeRead => "read+huge",
            PageState::HugeWrite => "write+huge",
            PageState::LocalRead => "local+read",
            PageState::LocalWrite => "local+write",
            PageState::RemoteRead => "remote+read",
            PageState::RemoteWrite => "remote+write",
            PageState::Exclusive => "exclusive",
        }
    }

    /// Looks a state up by name.
    pub fn from_name(s: &str) -> Option<PageState> {
        PageState::ALL.into_iter().find(|p| p.name() == s)
    }
}

/// Each page's device state in `[addr, addr + len)`, without faulting.
pub fn snapshot(m: &Mirror, addr: u64, len: u64) -> Vec<PageState> {
    let st = lock(&m.state);
    let start = addr / PAGE * PAGE;
    // At most 64 pages, and none past the top of the address space.
    let pages = len
        .div_ceil(PAGE)
        .min(64)
        .min((u64::MAX - start) / PAGE + 1);
    (0..pages)
        .map(|i| match st.dpt.get(&(start + i * PAGE)) {
            None => PageState::None,
            Some(p) if p.write => PageState::Write,
            Some(_) => PageState::Read,
        })
        .collect()
}
