//! Operations as schedulable state machines.
//!
//! Every operation goes through the same steps: take the mmap lock it
//! needs (write, read or none, as in the kernel), plan the ranges to
//! invalidate under that lock, then for each range `invalidate_range_start`,
//! apply, `invalidate_range_end`, and finally finish and unlock. Each call
//! to [`Task::step`] does one of those steps, so that a scheduler can
//! interleave other logical threads between them.

use notifier::{Event, InvalidateError, Invalidation, PlantedBug, Range};

use crate::{Backing, FrameId, Mm, MmId, Phys, Pte, Vma, HUGE, PAGE};

/// Most pages one device operation (migrate, evict, make exclusive) covers:
/// the simulated device's memory.
pub const DEVICE_OP_PAGES: u64 = 1024;

/// What a new mapping maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MapKind {
    /// Anonymous private memory.
    AnonPrivate,
    /// Anonymous shared memory.
    AnonShared,
    /// A shared mapping of a file.
    File(u32),
}

/// Page protection of a mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Prot {
    /// PROT_NONE: any access faults.
    None,
    /// PROT_READ.
    Read,
    /// PROT_READ | PROT_WRITE.
    ReadWrite,
}

impl Prot {
    /// Every protection.
    pub const ALL: [Prot; 3] = [Prot::None, Prot::Read, Prot::ReadWrite];

    /// Its name in `.ops` files.
    pub fn name(self) -> &'static str {
        match self {
            Prot::None => "none",
            Prot::Read => "ro",
            Prot::ReadWrite => "rw",
        }
    }

    /// Looks a protection up by name.
    pub fn from_name(s: &str) -> Option<Prot> {
        Prot::ALL.into_iter().find(|p| p.name() == s)
    }

    /// Reads allowed.
    pub fn read(self) -> bool {
        self != Prot::None
    }

    /// Writes allowed.
    pub fn write(self) -> bool {
        self == Prot::ReadWrite
    }
}

/// An operation on an address space.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MmOp {
    /// mmap(MAP_FIXED): replaces whatever is mapped there.
    Mmap {
        /// Address.
        addr: u64,
        /// Length.
        len: u64,
        /// What to map.
        kind: MapKind,
        /// Protection.
        prot: Prot,
    },
    /// munmap; may split VMAs.
    Munmap {
        /// Address.
        addr: u64,
        /// Length.
        len: u64,
    },
    /// mprotect.
    Mprotect {
        /// Address.
        addr: u64,
        /// Length.
        len: u64,
        /// New protection.
        prot: Prot,
    },
    /// mremap: shrink, grow (in place or moving), move to a fixed address, dontunmap.
    Mremap {
        /// Old address.
        addr: u64,
        /// Old length.
        old_len: u64,
        /// New length.
        new_len: u64,
        /// MREMAP_FIXED destination.
        new_addr: Option<u64>,
        /// MREMAP_DONTUNMAP.
        dontunmap: bool,
    },
    /// madvise(MADV_DONTNEED): zaps the mapped parts of the range; ENOMEM
    /// (`Fault`) when it has holes, after zapping.
    Dontneed {
        /// Address.
        addr: u64,
        /// Length.
        len: u64,
    },
    /// fork: private writable pages become copy on write in both.
    Fork,
    /// A CPU load (`write: None`) or store, with page faults.
    Access {
        /// Address.
        addr: u64,
        /// The value to store.
        write: Option<u64>,
    },
    /// Reclaim of one page to swap.
    Reclaim {
        /// Address.
        addr: u64,
    },
    /// NUMA or compaction migration of one page: new frame, same content.
    Migrate {
        /// Address.
        addr: u64,
    },
    /// KSM merge of page `b` into page `a` when their contents are equal.
    Ksm {
        /// The page that stays.
        a: u64,
        /// The page merged into it.
        b: u64,
    },
    /// THP collapse of the aligned 2 MiB around `addr` (new frames).
    ThpCollapse {
        /// Address.
        addr: u64,
    },
    /// THP split of the aligned 2 MiB around `addr`.
    ThpSplit {
        /// Address.
        addr: u64,
    },
    /// The OOM reaper: non-blockable unmap of private anonymous memory.
    OomReap,
    /// A page fault without the access: hmm_range_fault faulting a page in
    /// for a device (write: break COW and make it writable).
    FaultIn {
        /// Address.
        addr: u64,
        /// Fault for write.
        write: bool,
    },
    /// Soft-dirty reset (clear_refs): write-protects every PTE.
    ClearRefs,
    /// A device driver migrating a range itself: a `Migrate` event carrying
    /// its owner; each eligible page moves to a new frame.
    DeviceMigrate {
        /// Address.
        addr: u64,
        /// Length.
        len: u64,
        /// The migrating device.
        owner: u64,
    },
    /// make_device_exclusive: fault each page in for write, then replace
    /// its CPU PTE by a device-exclusive entry (an `Exclusive` event
    /// carrying the owner); the device gets atomic access.
    MakeExclusive {
        /// Address.
        addr: u64,
        /// Length.
        len: u64,
        /// The device.
        owner: u64,
    },
    /// A device evicting its device-private pages in the range back to
    /// system memory (a `Migrate` event carrying its owner).
    Evict {
        /// Address.
        addr: u64,
        /// Length.
        len: u64,
        /// The device.
        owner: u64,
    },
    /// Process exit: release, then unmap everything.
    Exit,
}

/// Why an operation failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MmError {
    /// EINVAL: bad alignment, length or combination.
    Inval,
    /// Nothing mapped there (ENOMEM, or SIGSEGV for an access).
    Fault,
    /// A store to a read-only mapping (SIGSEGV).
    Perm,
    /// The address space has exited.
    Exited,
    /// The notifier refused an invalidation that had to succeed.
    Notifier(InvalidateError),
}

/// What an operation produced.
#[derive(Debug)]
pub enum Outcome {
    /// Nothing to report.
    Done,
    /// The operation found nothing to do (page not present, pinned…).
    Skipped,
    /// The value a load read, or a store wrote.
    Value(u64),
    /// Where a mapping ended up.
    Addr(u64),
    /// The child of a fork.
    Forked(Box<Mm>),
    /// Pages a device operation moved or converted (migrate, evict, exclusive).
    Pages(u64),
}

/// What a step is waiting for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Blocked {
    /// The mmap lock.
    MmapLock,
    /// A driver lock that an invalidate callback would have to take.
    DriverLock,
}

/// The result of one step.
#[derive(Debug)]
pub enum TaskStep {
    /// A step was taken; more follow.
    Progress,
    /// Nothing could be done now.
    Blocked(Blocked),
    /// Finished (the mmap lock is released).
    Done(Result<Outcome, MmError>),
}

/// What the scheduler knows that the mm does not: whether the callbacks an
/// invalidation would run can take their driver locks now.
pub trait Env {
    /// False if a callback for `range` in address space `mm` would sleep on
    /// a lock held by another logical thread.
    fn callbacks_can_run(&self, mm: MmId, range: &Range) -> bool;

    /// Called right after the PTEs of `range` changed, before its end: a
    /// driver whose own migration or exclusive conversion it was, and
    /// whose callback therefore skipped it, updates its own mappings here.
    fn applied(&self, _mm: &Mm, _range: &Range) {}
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LockKind {
    Read,
    Write,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Lock,
    Plan,
    Start(usize),
    Apply(usize),
    End(usize),
    Finish,
    Done,
}

/// How mremap goes about it, decided under the lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Remap {
    Shrink,
    Grow,
    Move { dst: u64, clear_dst: bool },
}

/// A running operation.
#[derive(Debug)]
pub struct Task {
    op: MmOp,
    me: u8,
    state: State,
    locked: Option<LockKind>,
    ranges: Vec<Range>,
    inv: Option<Invalidation>,
    remap: Option<Remap>,
    skipped: bool,
    replans: u32,
    pages: u64,
}

fn aligned(addr: u64, len: u64, task_size: u64) -> Result<(u64, u64), MmError> {
    let len = len.checked_add(PAGE - 1).ok_or(MmError::Inval)? / PAGE * PAGE;
    let end = addr.checked_add(len).ok_or(MmError::Inval)?;
    if !addr.is_multiple_of(PAGE) || len == 0 || end > task_size {
        return Err(MmError::Inval);
    }
    Ok((addr, end))
}

fn range(start: u64, end: u64, event: Event) -> Range {
    Range::new(start, end, event)
}

fn page_of(addr: u64) -> u64 {
    addr / PAGE * PAGE
}

impl Task {
    /// Starts `op` on behalf of logical thread `me`.
    pub fn new(op: MmOp, me: u8) -> Task {
        Task {
            op,
            me,
            state: State::Lock,
            locked: None,
            ranges: Vec::new(),
            inv: None,
            remap: None,
            skipped: false,
            replans: 0,
            pages: 0,
        }
    }

    /// The operation.
    pub fn op(&self) -> &MmOp {
        &self.op
    }

    /// Whether the task holds an accepted invalidation right now.
    pub fn in_invalidation(&self) -> bool {
        self.inv.is_some()
    }

    /// The range of the invalidation the task holds open, if any.
    pub fn open_range(&self) -> Option<Range> {
        self.inv.as_ref().map(|i| *i.range())
    }

    /// Where a moving mremap puts the range, once planned: what it will
    /// return, known from the plan on (its moves apply before it finishes).
    pub fn destination(&self) -> Option<u64> {
        match self.remap {
            Some(Remap::Move { dst, .. }) => Some(dst),
            _ => None,
        }
    }

    /// True right after an apply step: the range's PTEs have changed and
    /// its invalidation has not ended yet.
    pub fn just_applied(&self) -> bool {
        matches!(self.state, State::End(_))
    }

    // The address and whether it is a write, for Access and FaultIn.
    fn access(&self) -> (u64, bool) {
        match self.op {
            MmOp::Access { addr, write } => (addr, write.is_some()),
            MmOp::FaultIn { addr, write } => (addr, write),
            _ => (0, false),
        }
    }

    fn lock_kind(&self) -> Option<LockKind> {
        match self.op {
            MmOp::Mmap { .. }
            | MmOp::Munmap { .. }
            | MmOp::Mprotect { .. }
            | MmOp::Mremap { .. }
            | MmOp::Fork
            | MmOp::ThpCollapse { .. }
            | MmOp::ClearRefs
            | MmOp::Exit => Some(LockKind::Write),
            MmOp::Dontneed { .. }
            | MmOp::Access { .. }
            | MmOp::FaultIn { .. }
            | MmOp::DeviceMigrate { .. }
            | MmOp::MakeExclusive { .. }
            | MmOp::Evict { .. } => Some(LockKind::Read),
            MmOp::Reclaim { .. }
            | MmOp::Migrate { .. }
            | MmOp::Ksm { .. }
            | MmOp::ThpSplit { .. }
            | MmOp::OomReap => None,
        }
    }

    fn unlock(&mut self, mm: &mut Mm) {
        match self.locked.take() {
            Some(LockKind::Write) => mm.lock.writer = None,
            Some(LockKind::Read) => {
                if let Some(i) = mm.lock.readers.iter().position(|&r| r == self.me) {
                    mm.lock.readers.remove(i);
                }
            }
            None => {}
        }
    }

    fn fail(&mut self, mm: &mut Mm, e: MmError) -> TaskStep {
        self.unlock(mm);
        self.state = State::Done;
        TaskStep::Done(Err(e))
    }

    /// Takes one step.
    pub fn step(&mut self, mm: &mut Mm, phys: &mut Phys, env: &dyn Env) -> TaskStep {
        match self.state {
            State::Lock => {
                if mm.exited {
                    return self.fail(mm, MmError::Exited);
                }
                if let MmOp::Access { addr, write } = self.op {
                    // The fast path: no fault, no lock.
                    match access_fast(mm, phys, addr, write) {
                        Ok(Some(v)) => {
                            self.state = State::Done;
                            return TaskStep::Done(Ok(Outcome::Value(v)));
                        }
                        Ok(None) => {}
                        Err(e) => return self.fail(mm, e),
                    }
                }
                if self.op == MmOp::OomReap {
                    // mmap_read_trylock: the reaper never waits.
                    if mm.lock.writer.is_some() {
                        self.state = State::Done;
                        return TaskStep::Done(Ok(Outcome::Skipped));
                    }
                    mm.lock.readers.push(self.me);
                    notifier::cost::one(notifier::cost::Metric::MmapLock);
                    self.locked = Some(LockKind::Read);
                    self.state = State::Plan;
                    return TaskStep::Progress;
                }
                match self.lock_kind() {
                    Some(LockKind::Write) => {
                        if mm.lock.writer.is_some() || !mm.lock.readers.is_empty() {
                            return TaskStep::Blocked(Blocked::MmapLock);
                        }
                        mm.lock.writer = Some(self.me);
                        notifier::cost::one(notifier::cost::Metric::MmapLock);
                        self.locked = Some(LockKind::Write);
                    }
                    Some(LockKind::Read) => {
                        if mm.lock.writer.is_some() {
                            return TaskStep::Blocked(Blocked::MmapLock);
                        }
                        mm.lock.readers.push(self.me);
                        notifier::cost::one(notifier::cost::Metric::MmapLock);
                        self.locked = Some(LockKind::Read);
                    }
                    None => {}
                }
                self.state = State::Plan;
                TaskStep::Progress
            }
            State::Plan => {
                if self.op == MmOp::Exit {
                    let whole = range(0, mm.config.task_size, Event::Release);
                    if !env.callbacks_can_run(mm.id, &whole) {
                        return TaskStep::Blocked(Blocked::DriverLock);
                    }
                    // A refused release is a driver bug; the mm goes on exiting.
                    let _ = mm.notifier.release();
                }
                match self.plan(mm, phys) {
                    Ok(r) => self.ranges = r,
                    Err(e) => return self.fail(mm, e),
                }
                self.state = if self.skipped {
                    State::Finish
                } else {
                    State::Start(0)
                };
                TaskStep::Progress
            }
            State::Start(i) => {
                let Some(r) = self.ranges.get(i).copied() else {
                    self.state = State::Finish;
                    return self.step(mm, phys, env);
                };
                if r.blockable && !env.callbacks_can_run(mm.id, &r) {
                    return TaskStep::Blocked(Blocked::DriverLock);
                }
                match mm.notifier.invalidate_range_start(&r) {
                    Ok(inv) => {
                        self.inv = Some(inv);
                        self.state = State::Apply(i);
                    }
                    // The reaper skips what it cannot reap without sleeping.
                    Err(InvalidateError::WouldBlock(_)) if !r.blockable => {
                        self.state = State::Start(i + 1);
                    }
                    Err(e) => return self.fail(mm, MmError::Notifier(e)),
                }
                TaskStep::Progress
            }
            State::Apply(i) => {
                self.apply(i, mm, phys);
                env.applied(mm, &self.ranges[i]);
                self.state = State::End(i);
                TaskStep::Progress
            }
            State::End(i) => {
                if let Some(inv) = self.inv.take() {
                    mm.notifier.invalidate_range_end(inv);
                }
                self.state = State::Start(i + 1);
                TaskStep::Progress
            }
            State::Finish => {
                // A private page may have become shared again since Plan
                // (KSM takes no lock): a write then needs a new COW plan.
                if let MmOp::Access { .. } | MmOp::FaultIn { .. } = self.op {
                    let (addr, write) = self.access();
                    let private = mm.vma_at(addr).is_some_and(|v| v.backing.is_private());
                    let again = match mm.pte(addr) {
                        Some(Pte::Present {
                            writable: false, ..
                        }) => write && private,
                        // Another reader moved it to a device meanwhile.
                        Some(Pte::Device { .. } | Pte::Exclusive { .. }) => true,
                        _ => false,
                    };
                    if again && self.replans < 8 {
                        self.replans += 1;
                        self.state = State::Plan;
                        return TaskStep::Progress;
                    }
                }
                let out = self.finish(mm, phys);
                self.unlock(mm);
                self.state = State::Done;
                TaskStep::Done(out)
            }
            State::Done => TaskStep::Done(Err(MmError::Inval)),
        }
    }

    /// Runs the task to completion without yielding; for paths that the
    /// kernel runs inside another operation (a device fault's
    /// hmm_range_fault faulting pages in). The caller holds the locks.
    pub fn run_nested(
        mut self,
        mm: &mut Mm,
        phys: &mut Phys,
        env: &dyn Env,
    ) -> Result<Outcome, MmError> {
        self.state = State::Plan;
        loop {
            match self.step(mm, phys, env) {
                TaskStep::Progress => {}
                TaskStep::Blocked(_) => return Err(MmError::Fault),
                TaskStep::Done(r) => return r,
            }
        }
    }

    fn plan(&mut self, mm: &mut Mm, phys: &mut Phys) -> Result<Vec<Range>, MmError> {
        let ts = mm.config.task_size;
        Ok(match self.op {
            MmOp::Mmap { addr, len, .. } => {
                let (s, e) = aligned(addr, len, ts)?;
                if mm.any_vma(s, e) {
                    vec![range(s, e, Event::Unmap)]
                } else {
                    vec![]
                }
            }
            MmOp::Munmap { addr, len } => {
                let (s, e) = aligned(addr, len, ts)?;
                if mm.any_vma(s, e) {
                    vec![range(s, e, Event::Unmap)]
                } else {
                    vec![]
                }
            }
            // A zero length is a no-op for mprotect and madvise (munmap
            // and mmap refuse it).
            MmOp::Mprotect { addr, len: 0, .. } | MmOp::Dontneed { addr, len: 0 }
                if addr.is_multiple_of(PAGE) && addr <= ts =>
            {
                self.skipped = true;
                vec![]
            }
            MmOp::Mprotect { addr, len, .. } => {
                // Linux changes the VMAs from the start up to the first
                // hole, then fails with ENOMEM (finish says so).
                let (s, e) = aligned(addr, len, ts)?;
                let p = covered_prefix(mm, s, e);
                if p == s {
                    return Err(MmError::Fault);
                }
                if mm.planted(PlantedBug::MprotectNoInvalidate) {
                    vec![]
                } else {
                    vec![range(s, p, Event::ProtectionVma)]
                }
            }
            MmOp::Mremap {
                addr,
                old_len,
                new_len,
                new_addr,
                dontunmap,
            } => self.plan_mremap(mm, addr, old_len, new_len, new_addr, dontunmap)?,
            MmOp::Dontneed { addr, len } => {
                let (s, e) = aligned(addr, len, ts)?;
                if !mm.any_vma(s, e) {
                    return Err(MmError::Fault);
                }
                vec![range(s, e, Event::Clear)]
            }
            MmOp::Fork => {
                if mm.planted(PlantedBug::ForkNoInvalidate) {
                    vec![]
                } else {
                    cow_vmas(mm)
                        .into_iter()
                        .map(|v| range(v.start, v.end, Event::ProtectionPage))
                        .collect()
                }
            }
            MmOp::ClearRefs => mm
                .vmas()
                .map(|v| range(v.start, v.end, Event::SoftDirty))
                .collect(),
            MmOp::DeviceMigrate { addr, len, owner } | MmOp::Evict { addr, len, owner } => {
                let (s, e) = aligned(addr, len.min(DEVICE_OP_PAGES * PAGE), ts)?;
                // migrate_vma_setup walks VMAs: a hole or an unreadable one is EINVAL.
                let vmas = mm.vmas_in(s, e);
                let covered: u64 = vmas.iter().map(|v| v.end - v.start).sum();
                if covered != e - s || vmas.iter().any(|v| !v.read) {
                    return Err(MmError::Inval);
                }
                vec![range(s, e, Event::Migrate).with_owner(notifier::Owner(owner))]
            }
            MmOp::MakeExclusive { addr, len, owner } => {
                let (s, e) = aligned(addr, len.min(DEVICE_OP_PAGES * PAGE), ts)?;
                // get_user_pages(FOLL_WRITE) on every page first.
                let vmas = mm.vmas_in(s, e);
                let covered: u64 = vmas.iter().map(|v| v.end - v.start).sum();
                if covered != e - s {
                    return Err(MmError::Fault);
                }
                if vmas.iter().any(|v| !v.write) {
                    return Err(MmError::Perm);
                }
                vec![range(s, e, Event::Exclusive).with_owner(notifier::Owner(owner))]
            }
            MmOp::Access { .. } | MmOp::FaultIn { .. } => {
                let (addr, write) = self.access();
                let vma = *mm.vma_at(addr).ok_or(MmError::Fault)?;
                if !vma.read {
                    return Err(MmError::Fault);
                }
                if write && !vma.write {
                    return Err(MmError::Perm);
                }
                let page = page_of(addr);
                match mm.pte(addr) {
                    // The owner's migrate_to_ram: a Migrate event with its owner.
                    Some(Pte::Device { owner, .. }) => {
                        vec![range(page, page + PAGE, Event::Migrate)
                            .with_owner(notifier::Owner(owner))]
                    }
                    // Revoking device-exclusive access.
                    Some(Pte::Exclusive { .. }) => vec![range(page, page + PAGE, Event::Clear)],
                    // Copy on write, or reuse when exclusive: Apply decides,
                    // under the invalidation, on the state it finds then.
                    Some(Pte::Present {
                        writable: false, ..
                    }) if write && vma.backing.is_private() => {
                        vec![range(page_of(addr), page_of(addr) + PAGE, Event::Clear)]
                    }
                    _ => vec![],
                }
            }
            MmOp::Reclaim { addr } | MmOp::Migrate { addr } => match mm.pte(addr) {
                Some(Pte::Present { frame, .. }) if movable(phys, frame) => {
                    vec![range(page_of(addr), page_of(addr) + PAGE, Event::Clear)]
                }
                _ => {
                    self.skipped = true;
                    vec![]
                }
            },
            MmOp::Ksm { a, b } => {
                if ksm_candidates(mm, phys, a, b).is_some() {
                    vec![
                        range(page_of(a), page_of(a) + PAGE, Event::Clear),
                        range(page_of(b), page_of(b) + PAGE, Event::Clear),
                    ]
                } else {
                    self.skipped = true;
                    vec![]
                }
            }
            MmOp::ThpCollapse { addr } | MmOp::ThpSplit { addr } => {
                let base = addr / HUGE * HUGE;
                let end = base.checked_add(HUGE).ok_or(MmError::Inval)?;
                let covered = mm.vmas_in(base, end);
                let ok = covered.len() == 1
                    && covered[0].start == base
                    && covered[0].end == end
                    && covered[0].backing.is_private()
                    && covered[0].read;
                if !ok {
                    return Err(MmError::Inval);
                }
                let collapse = matches!(self.op, MmOp::ThpCollapse { .. });
                if (collapse && !collapsible(mm, phys, base)) || (!collapse && !mm.is_huge(base)) {
                    self.skipped = true;
                    return Ok(vec![]);
                }
                vec![range(base, end, Event::Clear)]
            }
            MmOp::OomReap => mm
                .vmas()
                .filter(|v| v.backing.is_private())
                .map(|v| range(v.start, v.end, Event::Unmap).non_blockable())
                .collect(),
            MmOp::Exit => mm
                .vmas()
                .map(|v| range(v.start, v.end, Event::Unmap))
                .collect(),
        })
    }

    fn plan_mremap(
        &mut self,
        mm: &Mm,
        addr: u64,
        old_len: u64,
        new_len: u64,
        new_addr: Option<u64>,
        dontunmap: bool,
    ) -> Result<Vec<Range>, MmError> {
        let ts = mm.config.task_size;
        // old_len 0 duplicates a shared mapping at a new place (Linux's
        // legacy use of mremap); a private one is EINVAL.
        let (s, old_end) = if old_len == 0 && addr.is_multiple_of(PAGE) && addr < ts {
            (addr, addr)
        } else {
            aligned(addr, old_len, ts)?
        };
        let old_len = old_end - s;
        let new_len = aligned(0, new_len, ts)?.1;
        // The arguments first, as Linux checks them before it looks up
        // the VMA: the destination, and dontunmap's equal lengths.
        if let Some(d) = new_addr {
            let (d, d_end) = aligned(d, new_len, ts)?;
            if d < old_end && s < d_end {
                return Err(MmError::Inval);
            }
        }
        if dontunmap && old_len != new_len {
            return Err(MmError::Inval);
        }
        let vma = *mm.vma_at(s).ok_or(MmError::Fault)?;
        if old_len == 0 && vma.backing.is_private() {
            return Err(MmError::Inval);
        }
        // Linux allows a shrinking (or same-size) remap in place whenever
        // a VMA contains the start: it only unmaps the tail, whatever is
        // mapped there, even past that VMA's end.
        if new_addr.is_none() && !dontunmap && new_len <= old_len {
            self.remap = Some(Remap::Shrink);
            let tail = s + new_len;
            return Ok(if tail < old_end && mm.any_vma(tail, old_end) {
                vec![range(tail, old_end, Event::Unmap)]
            } else {
                vec![]
            });
        }
        // MREMAP_FIXED to a shorter length unmaps the old range's tail
        // first; what is left must lie in one VMA.
        let tail = match new_addr {
            Some(_) if new_len < old_len => Some((s + new_len, old_end)),
            _ => None,
        };
        let old_end = tail.map_or(old_end, |t| t.0);
        if old_end > vma.end {
            return Err(MmError::Fault);
        }
        // MREMAP_DONTUNMAP takes any mapping since Linux 5.13.
        if dontunmap && old_len != new_len {
            return Err(MmError::Inval);
        }
        let remap = match new_addr {
            Some(d) => {
                let (d, d_end) = aligned(d, new_len, ts)?;
                if d < old_end && s < d_end {
                    return Err(MmError::Inval);
                }
                Remap::Move {
                    dst: d,
                    clear_dst: mm.any_vma(d, d_end),
                }
            }
            None if dontunmap => Remap::Move {
                dst: mm.free_range(0, new_len).ok_or(MmError::Fault)?,
                clear_dst: false,
            },
            None if new_len <= old_len => Remap::Shrink,
            None => {
                let fits = s
                    .checked_add(new_len)
                    .is_some_and(|e| e <= ts && !mm.any_vma(old_end, e));
                if fits {
                    Remap::Grow
                } else {
                    Remap::Move {
                        dst: mm.free_range(0, new_len).ok_or(MmError::Fault)?,
                        clear_dst: false,
                    }
                }
            }
        };
        self.remap = Some(remap);
        Ok(match remap {
            Remap::Shrink if new_len < old_len => {
                vec![range(s + new_len, old_end, Event::Unmap)]
            }
            Remap::Shrink | Remap::Grow => vec![],
            Remap::Move { dst, clear_dst } => {
                let mut r = Vec::new();
                if clear_dst {
                    r.push(range(dst, dst + new_len, Event::Unmap));
                }
                if let Some((ts, te)) = tail.filter(|t| mm.any_vma(t.0, t.1)) {
                    r.push(range(ts, te, Event::Unmap));
                }
                // A duplicate (old_len 0) leaves the old range alone.
                if s < old_end {
                    r.push(range(s, old_end, Event::Unmap));
                }
                r
            }
        })
    }

    fn apply(&mut self, i: usize, mm: &mut Mm, phys: &mut Phys) {
        let r = self.ranges[i];
        match self.op {
            MmOp::Mmap { .. } | MmOp::Munmap { .. } => mm.remove_vmas(phys, r.start, r.end),
            MmOp::Mprotect { prot, .. } => protect(mm, r.start, r.end, prot),
            MmOp::Mremap {
                addr,
                new_len,
                dontunmap,
                ..
            } => match self.remap {
                // The destination's old mappings, or the old range's tail.
                // (A duplicate, old length 0, may have its destination at
                // the source, which it then unmaps: EFAULT in finish.)
                Some(Remap::Move { dst, .. }) if r.start == dst || r.start != addr => {
                    mm.remove_vmas(phys, r.start, r.end)
                }
                Some(Remap::Move { dst, .. }) => {
                    // Plan checked that the rounded length does not overflow.
                    let new_len = new_len.div_ceil(PAGE) * PAGE;
                    move_mapping(mm, phys, addr, r.end - r.start, dst, new_len, dontunmap)
                }
                _ => mm.remove_vmas(phys, r.start, r.end),
            },
            MmOp::Dontneed { .. } | MmOp::OomReap | MmOp::Exit => mm.zap(phys, r.start, r.end),
            MmOp::Fork => write_protect(mm, r.start, r.end),
            MmOp::ClearRefs => write_protect(mm, r.start, r.end),
            MmOp::DeviceMigrate { owner, .. } => {
                self.pages += migrate_to_device(mm, phys, r, owner)
            }
            MmOp::Evict { owner, .. } => {
                for page in mm.mapped_pages(r.start, r.end) {
                    if let Some(Pte::Device {
                        frame,
                        owner: o,
                        writable,
                    }) = mm.pte(page)
                    {
                        if o == owner {
                            let copy = phys.alloc(phys.data(frame));
                            mm.set_pte(
                                phys,
                                page,
                                Pte::Present {
                                    frame: copy,
                                    writable,
                                },
                            );
                            self.pages += 1;
                        }
                    }
                }
            }
            MmOp::MakeExclusive { owner, .. } => self.pages += make_exclusive(mm, phys, r, owner),
            MmOp::Access { .. } | MmOp::FaultIn { .. } => {
                let (addr, write) = self.access();
                let page = page_of(addr);
                match mm.pte(addr) {
                    Some(Pte::Device {
                        frame, writable, ..
                    }) => {
                        let copy = phys.alloc(phys.data(frame));
                        mm.set_pte(
                            phys,
                            page,
                            Pte::Present {
                                frame: copy,
                                writable,
                            },
                        );
                        return;
                    }
                    Some(Pte::Exclusive {
                        frame, writable, ..
                    }) => {
                        mm.swap_pte_in_place(page, Pte::Present { frame, writable });
                        return;
                    }
                    _ => {}
                }
                // Only a write breaks COW. A read planned to bring the page
                // back from a device may find it back already (an evict
                // meanwhile), read-only: it must stay so, whatever the VMA
                // allows.
                if !write {
                    return;
                }
                // COW break; re-checked because reclaim and migration do not
                // take the mmap lock.
                if let Some(Pte::Present {
                    frame,
                    writable: false,
                }) = mm.pte(addr)
                {
                    let f = phys.frame(frame);
                    let exclusive = frame != phys.zero() && f.mapcount == 1 && !f.cached;
                    let frame = if exclusive {
                        frame
                    } else {
                        mm.prepare_anon_vma(addr);
                        phys.alloc(phys.data(frame))
                    };
                    mm.set_pte(
                        phys,
                        page_of(addr),
                        Pte::Present {
                            frame,
                            writable: true,
                        },
                    );
                }
            }
            // The start's test again: the page may have changed under the
            // invalidation (an mmap over it that does not wait for a
            // reclaim, which holds no mmap lock), and a page-cache page
            // must never become a private swap entry or copy.
            MmOp::Reclaim { addr } => {
                if let Some(Pte::Present { frame, .. }) = mm.pte(addr) {
                    if movable(phys, frame) {
                        let slot = phys.swap_out(phys.data(frame));
                        mm.set_pte(phys, page_of(addr), Pte::Swap { slot });
                    }
                }
            }
            MmOp::Migrate { addr } => {
                if let Some(Pte::Present { frame, writable }) = mm.pte(addr) {
                    if movable(phys, frame) {
                        let copy = phys.alloc(phys.data(frame));
                        mm.set_pte(
                            phys,
                            page_of(addr),
                            Pte::Present {
                                frame: copy,
                                writable,
                            },
                        );
                    }
                }
            }
            MmOp::Ksm { a, b } => {
                // The page that stays must still be write-protected: a
                // write fault in between may have reused it in place (it
                // was mapped once), and merging into a frame that `a` can
                // write would share that write with `b`. In the kernel the
                // kept page is a KSM page by then, which a write fault
                // always copies; here the merge is simply off.
                let kept_read_only = || {
                    matches!(
                        mm.pte(a),
                        Some(Pte::Present {
                            writable: false,
                            ..
                        })
                    )
                };
                if i == 0 {
                    write_protect(mm, r.start, r.end);
                } else if let Some((fa, _)) =
                    ksm_candidates(mm, phys, a, b).filter(|_| kept_read_only())
                {
                    mm.set_pte(
                        phys,
                        page_of(b),
                        Pte::Present {
                            frame: fa,
                            writable: false,
                        },
                    );
                }
            }
            MmOp::ThpCollapse { .. } => {
                // Re-checked: reclaim and migration take no lock.
                if !collapsible(mm, phys, r.start) {
                    return;
                }
                let write = mm.vma_at(r.start).is_some_and(|v| v.write);
                // 512 new frames in a row: a compound page.
                for i in 0..HUGE / PAGE {
                    let page = r.start + i * PAGE;
                    let data = match mm.pte(page) {
                        Some(Pte::Present { frame, .. }) => phys.data(frame),
                        Some(Pte::Swap { slot }) => phys.swap_data(slot),
                        _ => 0,
                    };
                    let f = phys.alloc(data);
                    mm.set_pte(
                        phys,
                        page,
                        Pte::Present {
                            frame: f,
                            writable: write,
                        },
                    );
                }
                mm.mark_huge(r.start);
            }
            // The PTEs stay as they are: devices still had to let go of
            // their huge mappings.
            MmOp::ThpSplit { .. } => mm.split_huge(r.start),
        }
    }

    fn finish(&mut self, mm: &mut Mm, phys: &mut Phys) -> Result<Outcome, MmError> {
        let out = self.finish_op(mm, phys);
        // Linux merges a changed VMA with compatible neighbours.
        if let MmOp::Mmap { .. } | MmOp::Mprotect { .. } | MmOp::Mremap { .. } = self.op {
            mm.merge_vmas();
        }
        out
    }

    fn finish_op(&mut self, mm: &mut Mm, phys: &mut Phys) -> Result<Outcome, MmError> {
        if self.skipped {
            return Ok(Outcome::Skipped);
        }
        match self.op {
            MmOp::Mmap {
                addr,
                len,
                kind,
                prot,
            } => {
                let (s, e) = aligned(addr, len, mm.config.task_size)?;
                let backing = match kind {
                    MapKind::AnonPrivate => Backing::AnonPrivate,
                    MapKind::AnonShared => Backing::AnonShared {
                        obj: phys.new_object_of((e - s) / PAGE),
                    },
                    MapKind::File(file) => Backing::File { file },
                };
                mm.insert_vma(Vma {
                    start: s,
                    end: e,
                    backing,
                    // Linux gives anonymous memory its address as the
                    // page offset: what lets neighbours merge.
                    pgoff: if kind == MapKind::AnonPrivate {
                        s / PAGE
                    } else {
                        0
                    },
                    read: prot.read(),
                    write: prot.write(),
                    anon_vma: None,
                });
                Ok(Outcome::Addr(s))
            }
            MmOp::Dontneed { addr, len } => {
                // madvise works on the mapped parts of the range and then
                // reports the holes with ENOMEM, as Linux does.
                let (s, e) = aligned(addr, len, mm.config.task_size)?;
                let covered: u64 = mm.vmas_in(s, e).iter().map(|v| v.end - v.start).sum();
                if covered != e - s {
                    return Err(MmError::Fault);
                }
                Ok(Outcome::Done)
            }
            MmOp::Mprotect { addr, len, prot } => {
                let (s, e) = aligned(addr, len, mm.config.task_size)?;
                let p = covered_prefix(mm, s, e);
                if mm.planted(PlantedBug::MprotectNoInvalidate) {
                    protect(mm, s, p, prot);
                }
                if p < e {
                    return Err(MmError::Fault);
                }
                Ok(Outcome::Done)
            }
            MmOp::Mremap {
                addr,
                old_len,
                new_len,
                ..
            } => match self.remap {
                Some(Remap::Grow) => {
                    let old_end = aligned(addr, old_len, mm.config.task_size)?.1;
                    let v = *mm.vma_at(addr).ok_or(MmError::Fault)?;
                    let new_end = addr + aligned(0, new_len, mm.config.task_size)?.1;
                    // Grow the VMA itself when the old range ends it.
                    let grown = if v.end == old_end {
                        Vma { end: new_end, ..v }
                    } else {
                        Vma {
                            start: old_end,
                            end: new_end,
                            pgoff: v.pgoff + (old_end - v.start) / PAGE,
                            ..v
                        }
                    };
                    mm.insert_vma(grown);
                    Ok(Outcome::Addr(addr))
                }
                Some(Remap::Move { dst, .. }) => {
                    if old_len == 0 {
                        // The duplicate: no old range moved, a new VMA of
                        // the same pages.
                        let v = *mm.vma_at(addr).ok_or(MmError::Fault)?;
                        let new_len = aligned(0, new_len, mm.config.task_size)?.1;
                        mm.insert_vma(Vma {
                            start: dst,
                            end: dst + new_len,
                            pgoff: v.pgoff + (addr - v.start) / PAGE,
                            ..v
                        });
                    }
                    Ok(Outcome::Addr(dst))
                }
                _ => Ok(Outcome::Addr(addr)),
            },
            MmOp::Fork => {
                if mm.planted(PlantedBug::ForkNoInvalidate) {
                    for v in cow_vmas(mm) {
                        write_protect(mm, v.start, v.end);
                    }
                }
                Ok(Outcome::Forked(Box::new(mm.fork_into(phys, MmId(u8::MAX)))))
            }
            MmOp::Access { addr, write } => {
                access_slow(mm, phys, addr, write.is_some(), write).map(Outcome::Value)
            }
            MmOp::FaultIn { addr, write } => {
                access_slow(mm, phys, addr, write, None).map(Outcome::Value)
            }
            MmOp::DeviceMigrate { .. } | MmOp::Evict { .. } | MmOp::MakeExclusive { .. } => {
                Ok(Outcome::Pages(self.pages))
            }
            MmOp::Exit => {
                let all: Vec<(u64, u64)> = mm.vmas().map(|v| (v.start, v.end)).collect();
                for (s, e) in all {
                    mm.remove_vmas(phys, s, e);
                }
                mm.exited = true;
                Ok(Outcome::Done)
            }
            _ => Ok(Outcome::Done),
        }
    }
}

/// The end of the run of VMAs that covers `[s, e)` from `s` without a
/// hole (`s` when nothing maps `s`).
fn covered_prefix(mm: &Mm, s: u64, e: u64) -> u64 {
    let mut p = s;
    for v in mm.vmas_in(s, e) {
        if v.start != p {
            break;
        }
        p = v.end;
    }
    p
}

fn cow_vmas(mm: &Mm) -> Vec<Vma> {
    mm.vmas()
        .filter(|v| v.backing.is_private() && v.write)
        .copied()
        .collect()
}

fn write_protect(mm: &mut Mm, start: u64, end: u64) {
    for page in mm.mapped_pages(start, end) {
        let pte = match mm.pte(page) {
            // Exclusive entries are restored, read-only, as fork does.
            Some(Pte::Present { frame, .. } | Pte::Exclusive { frame, .. }) => Pte::Present {
                frame,
                writable: false,
            },
            Some(Pte::Device { frame, owner, .. }) => Pte::Device {
                frame,
                owner,
                writable: false,
            },
            _ => continue,
        };
        mm.ptes.insert(page / PAGE, pte);
    }
    // A huge mapping stays huge only when protected whole.
    let bases: Vec<u64> = mm
        .huge
        .range(start.saturating_sub(HUGE - 1)..end)
        .copied()
        .filter(|&b| b < start || b.saturating_add(HUGE) > end)
        .collect();
    for b in bases {
        mm.split_huge(b);
    }
}

/// Whether the 2 MiB at `base` can become one huge page: only system
/// pages that nothing pins.
fn collapsible(mm: &Mm, phys: &Phys, base: u64) -> bool {
    mm.ptes
        .range(base / PAGE..(base + HUGE) / PAGE)
        .all(|(_, p)| match *p {
            Pte::Present { frame, .. } => frame == phys.zero() || phys.frame(frame).pincount == 0,
            Pte::Swap { .. } => true,
            Pte::Device { .. } | Pte::Exclusive { .. } => false,
        })
}

/// Whether reclaim or migration may move `frame`: an anonymous page (not
/// the zero page, not page cache) mapped once and unpinned.
fn movable(phys: &Phys, frame: FrameId) -> bool {
    let f = phys.frame(frame);
    frame != phys.zero() && f.pincount == 0 && f.mapcount == 1 && !f.cached
}

/// migrate_vma to device-private memory: private anonymous pages that are
/// empty, the zero page, or mapped once and unpinned.
fn migrate_to_device(mm: &mut Mm, phys: &mut Phys, r: Range, owner: u64) -> u64 {
    let mut n = 0;
    for v in mm.vmas_in(r.start, r.end) {
        if !v.backing.is_private() || !v.read {
            continue;
        }
        let mut page = v.start;
        if mm.planted(PlantedBug::MigrateUnclamped) {
            page = mm.vma_at(v.start).map_or(v.start, |whole| whole.start);
        }
        while page < v.end {
            let pick = match mm.pte(page) {
                None => Some((0, v.write)),
                Some(Pte::Present { frame, writable }) if frame == phys.zero() => {
                    Some((0, writable || v.write))
                }
                Some(Pte::Present { frame, writable }) => {
                    let f = phys.frame(frame);
                    (f.mapcount == 1 && f.pincount == 0 && !f.cached && f.device.is_none())
                        .then_some((f.data, writable))
                }
                _ => None,
            };
            if let Some((data, writable)) = pick {
                let f = phys.alloc_device(data, owner);
                mm.set_pte(
                    phys,
                    page,
                    Pte::Device {
                        frame: f,
                        owner,
                        writable,
                    },
                );
                n += 1;
            }
            page += PAGE;
        }
    }
    n
}

/// make_device_exclusive: every private page becomes an exclusive entry of
/// `owner` on a frame of its own (faulted in, or copied if shared).
fn make_exclusive(mm: &mut Mm, phys: &mut Phys, r: Range, owner: u64) -> u64 {
    let mut n = 0;
    for v in mm.vmas_in(r.start, r.end) {
        if !v.backing.is_private() || !v.write {
            continue;
        }
        let mut page = v.start;
        while page < v.end {
            let own = |f: FrameId| {
                let fr = phys.frame(f);
                f != phys.zero() && fr.mapcount == 1 && !fr.cached && fr.device.is_none()
            };
            let fresh = match mm.pte(page) {
                None => Some(0),
                Some(Pte::Swap { slot }) => Some(phys.swap_data(slot)),
                Some(Pte::Present { frame, .. }) if phys.frame(frame).pincount > 0 => None,
                Some(Pte::Present { frame, .. } | Pte::Exclusive { frame, .. }) if own(frame) => {
                    mm.swap_pte_in_place(
                        page,
                        Pte::Exclusive {
                            frame,
                            owner,
                            writable: true,
                        },
                    );
                    n += 1;
                    None
                }
                Some(p) => p.frame().map(|f| phys.data(f)),
            };
            if let Some(data) = fresh {
                let f = phys.alloc(data);
                mm.set_pte(
                    phys,
                    page,
                    Pte::Exclusive {
                        frame: f,
                        owner,
                        writable: true,
                    },
                );
                n += 1;
            }
            page += PAGE;
        }
    }
    n
}

fn protect(mm: &mut Mm, start: u64, end: u64, prot: Prot) {
    mm.split_at(start);
    mm.split_at(end);
    let keys: Vec<u64> = mm.vmas.range(start..end).map(|(&k, _)| k).collect();
    for k in keys {
        if let Some(v) = mm.vmas.get_mut(&k) {
            v.read = prot.read();
            v.write = prot.write();
        }
    }
    if !prot.write() {
        write_protect(mm, start, end);
    }
}

/// Moves the mapping at `[src, src + len)` to `dst`, PTEs included.
fn move_mapping(
    mm: &mut Mm,
    phys: &mut Phys,
    src: u64,
    len: u64,
    dst: u64,
    new_len: u64,
    dontunmap: bool,
) {
    let Some(v) = mm.vma_at(src).copied() else {
        return;
    };
    let moved = len.min(new_len);
    for page in mm.mapped_pages(src, src + moved) {
        mm.split_huge(page);
        if let Some(pte) = mm.ptes.remove(&(page / PAGE)) {
            mm.ptes.insert((dst + (page - src)) / PAGE, pte);
        }
    }
    if !dontunmap {
        mm.remove_vmas(phys, src, src + len);
    }
    // copy_vma: a never-faulted anonymous VMA takes its new address as
    // its offset (so it merges there as a new mapping would).
    let pgoff = if v.backing.is_private() && v.anon_vma.is_none() {
        dst / PAGE
    } else {
        v.pgoff + (src - v.start) / PAGE
    };
    mm.insert_vma(Vma {
        start: dst,
        end: dst + new_len,
        pgoff,
        ..v
    });
}

fn ksm_candidates(
    mm: &Mm,
    phys: &Phys,
    a: u64,
    b: u64,
) -> Option<(crate::FrameId, crate::FrameId)> {
    let private = |x: u64| mm.vma_at(x).is_some_and(|v| v.backing.is_private());
    let frame = |x: u64| match mm.pte(x) {
        Some(Pte::Present { frame, .. }) if frame != phys.zero() => Some(frame),
        _ => None,
    };
    let (fa, fb) = (frame(a)?, frame(b)?);
    let alone = |f| phys.frame(f).mapcount == 1 && phys.frame(f).pincount == 0;
    (page_of(a) != page_of(b)
        && private(a)
        && private(b)
        && fa != fb
        && alone(fb)
        && phys.data(fa) == phys.data(fb))
    .then_some((fa, fb))
}

/// A load or store that needs no fault: `Ok(None)` means fault first.
fn access_fast(
    mm: &Mm,
    phys: &mut Phys,
    addr: u64,
    write: Option<u64>,
) -> Result<Option<u64>, MmError> {
    let vma = mm.vma_at(addr).ok_or(MmError::Fault)?;
    if !vma.read {
        return Err(MmError::Fault);
    }
    if write.is_some() && !vma.write {
        return Err(MmError::Perm);
    }
    Ok(match (mm.pte(addr), write) {
        (Some(Pte::Present { frame, .. }), None) => Some(phys.data(frame)),
        (
            Some(Pte::Present {
                frame,
                writable: true,
            }),
            Some(v),
        ) => {
            phys.set_data(frame, v);
            Some(v)
        }
        _ => None,
    })
}

/// The fault itself (after any COW break), then the store if any; returns
/// the value at `addr`.
fn access_slow(
    mm: &mut Mm,
    phys: &mut Phys,
    addr: u64,
    for_write: bool,
    store: Option<u64>,
) -> Result<u64, MmError> {
    let vma = *mm.vma_at(addr).ok_or(MmError::Fault)?;
    if !vma.read {
        return Err(MmError::Fault);
    }
    if for_write && !vma.write {
        return Err(MmError::Perm);
    }
    let page = page_of(addr);
    let frame = match mm.pte(addr) {
        // Moved to a device again eight times while this fault retried.
        Some(Pte::Device { .. } | Pte::Exclusive { .. }) => return Err(MmError::Fault),
        Some(Pte::Present { frame, writable }) => {
            if for_write && !writable {
                // Exclusive already (the COW step found it so): reuse in place.
                mm.split_huge(page);
                mm.ptes.insert(
                    page / PAGE,
                    Pte::Present {
                        frame,
                        writable: true,
                    },
                );
            }
            frame
        }
        Some(Pte::Swap { slot }) => {
            let f = phys.alloc(phys.swap_data(slot));
            mm.set_pte(
                phys,
                page,
                Pte::Present {
                    frame: f,
                    writable: vma.write,
                },
            );
            f
        }
        None => {
            let (f, writable) = match vma.object_page(addr) {
                // Past the end of a shared object: SIGBUS.
                Some((obj, pg)) if !phys.object_has(obj, pg) => return Err(MmError::Fault),
                Some((obj, pg)) => (phys.cache_page(obj, pg), vma.write),
                None if for_write => {
                    mm.prepare_anon_vma(addr);
                    (phys.alloc(0), true)
                }
                None => (phys.zero(), false),
            };
            mm.set_pte(phys, page, Pte::Present { frame: f, writable });
            f
        }
    };
    Ok(match store {
        Some(v) => {
            phys.set_data(frame, v);
            v
        }
        None => phys.data(frame),
    })
}
