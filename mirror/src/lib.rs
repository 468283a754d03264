//! HMM-style device mirrors over the simulated address space.
//!
//! A [`Mirror`] owns a device page table and a driver lock (a logical lock
//! held by a logical thread, so that the scheduler can interleave around
//! it). It keeps the table coherent with the CPU through the notifier, using
//! one of the interval strategies of real drivers, each a [`Strategy`] in
//! [`strategy`] (named in programs by a [`StrategySpec`]).
//!
//! A device fault is a [`Fault`], split into the steps of the kernel's
//! pattern: begin (find or insert the interval, read_begin, which may
//! wait), walk (the hmm_range_fault analogue: sample the CPU page table
//! under the mmap read lock, faulting the page in; busy if check_retry turns
//! true), commit (take the driver lock; read_retry: unlock and begin again,
//! or go on) and install (write the device PTE, unlock).

#![deny(missing_docs)]

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::Arc;

use notifier::sync::{Condvar, Mutex, MutexGuard};

use mm::{Env, FrameId, Mm, MmId, MmOp, Phys, Pte, Task, HUGE, PAGE};
use notifier::cost::{self, Metric};
use notifier::{
    ClassicOps, Event, Interval, Owner, PlantedBug, Range, ReadBegin, RemoveWait, SeqWait, Start,
    Subscriptions,
};

pub mod strategy;

// The registration path's access type, at its earlier public path.
pub use strategy::regcache::Access;
use strategy::Cover;
pub use strategy::{
    FaultEnd, FaultReq, Notify, Planted, Strategy, StrategyKind, StrategySpec, Tlb, Work,
};

/// A device page table entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DevPte {
    /// The frame the device reaches (the first frame of a huge entry).
    pub frame: FrameId,
    /// Write permission.
    pub write: bool,
    /// Atomic access to a device-exclusive page.
    pub atomic: bool,
    /// A 2 MiB entry: the page address is 2 MiB aligned and the frames of
    /// the following pages follow `frame`.
    pub huge: bool,
}

impl DevPte {
    /// A small read or write entry.
    pub fn small(frame: FrameId, write: bool) -> DevPte {
        DevPte {
            frame,
            write,
            atomic: false,
            huge: false,
        }
    }

    /// Bytes it maps.
    pub fn span(&self) -> u64 {
        if self.huge {
            HUGE
        } else {
            PAGE
        }
    }
}

/// The shared device state: what the driver lock protects.
#[derive(Debug, Default)]
pub struct Dev {
    /// The device page table: page address to entry.
    pub dpt: BTreeMap<u64, DevPte>,
    /// The logical thread holding the driver lock.
    pub lock: Option<u8>,
    /// Callbacks that found the driver lock taken in a blockable range:
    /// they would have slept; the scheduler must never let that happen.
    pub sleeps: u64,
    /// Device faults handled (accesses that missed the device page table).
    pub faults: u64,
    // Deferred work, run by a logical thread of its own (`dN work`).
    work: VecDeque<Work>,
    // Ranges whose teardown waits for the device's next fault (only with
    // a planted bug: a correct callback tears down before it returns).
    lazy_zaps: Vec<(u64, u64)>,
    /// The device TLB: translations the device cached from the page table,
    /// keyed like it (a huge entry at its 2 MiB base). A device access
    /// goes through it; a zapped PTE stays here until a flush.
    pub tlb: BTreeMap<u64, DevPte>,
    /// TLB flushes completed.
    pub tlb_flushes: u64,
    // While a two-pass first pass runs: the flushes it issued, which its
    // finish waits for. `None`: zaps flush at once.
    issued: Option<Vec<(u64, u64)>>,
    planted: Planted,
    // Real threads (`Mirror::set_blocking`): a callback that meets the
    // driver lock sleeps until it is free, instead of counting a sleep.
    blocking: bool,
}

/// A mirror's state behind its mutex: the shared part and the strategy's.
#[derive(Debug)]
pub struct DevState {
    /// Device page table, driver lock, deferred work.
    pub dev: Dev,
    /// The strategy and its own state (chunks, tracked VMAs,
    /// registrations…), deliberately outside the driver lock.
    pub strategy: Box<dyn Strategy>,
}

impl Dev {
    /// Queues an item of deferred work.
    pub fn defer(&mut self, w: Work) {
        cost::one(Metric::Deferred);
        self.work.push_back(w);
    }

    /// Removes every entry that maps a byte of `[start, end)`. A huge entry
    /// is dropped whole when any page inside it goes.
    pub fn zap(&mut self, start: u64, end: u64, split_huge: bool) {
        let from = if split_huge {
            (start / HUGE * HUGE).min(start / PAGE * PAGE)
        } else {
            start / PAGE * PAGE
        };
        let pages: Vec<u64> = self
            .dpt
            .range(from..end)
            .filter(|(&a, p)| a.saturating_add(p.span()) > start)
            .map(|(&a, _)| a)
            .collect();
        // Nothing mapped, nothing cached: every entry the TLB holds came
        // from the table, and left it through a zap that flushed.
        if pages.is_empty() {
            return;
        }
        cost::add(Metric::Zapped, pages.len() as u64);
        for a in pages {
            self.dpt.remove(&a);
        }
        match &mut self.issued {
            Some(v) => v.push((start, end)),
            None => self.flush_tlb(start, end),
        }
    }

    /// Drops every cached translation that reaches a byte of `[start, end)`.
    pub fn flush_tlb(&mut self, start: u64, end: u64) {
        self.tlb_flushes += 1;
        cost::one(Metric::TlbFlushes);
        let from = if self.planted.is(PlantedBug::TlbFlushMissesHuge) {
            start / PAGE * PAGE
        } else {
            (start / HUGE * HUGE).min(start / PAGE * PAGE)
        };
        let hit: Vec<u64> = self
            .tlb
            .range(from..end)
            .filter(|(&a, p)| a.saturating_add(p.span()) > start)
            .map(|(&a, _)| a)
            .collect();
        for a in hit {
            self.tlb.remove(&a);
        }
    }

    /// What a device access to `addr` translates to: the TLB's entry, or
    /// the page table's, which the TLB then caches. `None`: a device fault.
    pub fn tlb_translate(&mut self, addr: u64, write: bool) -> Option<FrameId> {
        let page = addr / PAGE * PAGE;
        let base = addr / HUGE * HUGE;
        let cached = match self.tlb.get(&page) {
            Some(p) => Some((page, *p)),
            None => self.tlb.get(&base).filter(|p| p.huge).map(|p| (base, *p)),
        };
        if let Some((at, p)) = cached.filter(|(_, p)| p.write || !write) {
            return Some(FrameId(p.frame.0 + ((page - at) / PAGE) as u32));
        }
        let (pte, frame) = self.lookup(addr).filter(|(p, _)| p.write || !write)?;
        self.tlb_fill(if pte.huge { base } else { page }, pte);
        Some(frame)
    }

    /// Caches the entry at `at` (a page, or a huge entry's base).
    pub fn tlb_fill(&mut self, at: u64, pte: DevPte) {
        let end = at + pte.span();
        // A huge entry replaces the small ones it covers, and the reverse.
        let stale: Vec<u64> = self
            .tlb
            .range((at / HUGE * HUGE).min(at)..end)
            .filter(|(&a, p)| a.saturating_add(p.span()) > at)
            .map(|(&a, _)| a)
            .collect();
        for a in stale {
            self.tlb.remove(&a);
        }
        self.tlb.insert(at, pte);
    }

    /// The entry mapping `addr` and the frame it reaches there.
    pub fn lookup(&self, addr: u64) -> Option<(DevPte, FrameId)> {
        let page = addr / PAGE * PAGE;
        if let Some(p) = self.dpt.get(&page) {
            return Some((*p, p.frame));
        }
        let base = addr / HUGE * HUGE;
        self.dpt
            .get(&base)
            .filter(|p| p.huge)
            .map(|p| (*p, FrameId(p.frame.0 + ((page - base) / PAGE) as u32)))
    }

    /// Whether any entry maps a byte of `[start, end)`.
    pub fn maps_any(&self, start: u64, end: u64) -> bool {
        let from = (start / HUGE * HUGE).min(start);
        self.dpt
            .range(from..end)
            .any(|(&a, p)| a.saturating_add(p.span()) > start)
    }
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
    /// The range is busy (pending on the driver's deferred work, or the
    /// device is stopped): the device retries later (EAGAIN).
    Again,
}

impl fmt::Display for MirrorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MirrorError::Notifier(e) => write!(f, "notifier: {e}"),
            MirrorError::Segv(e) => write!(f, "fault: {e:?}"),
            MirrorError::WrongMm => f.write_str("mirror attached to another address space"),
            MirrorError::NoEnt => f.write_str("no such entry"),
            MirrorError::Inval => f.write_str("invalid for this mirror"),
            MirrorError::Again => f.write_str("busy, try again"),
        }
    }
}

pub(crate) fn lock(state: &Mutex<DevState>) -> MutexGuard<'_, DevState> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

/// The callback every interval (and the classic subscriber) of a mirror
/// runs: the common skeleton around the strategy's own part.
#[derive(Clone)]
pub(crate) struct Callback {
    state: Arc<Mutex<DevState>>,
    // Notified whenever the driver lock is released (real threads only).
    unlocked: Arc<Condvar>,
    owner: Owner,
    tlb: Tlb,
    // The strategy's accesses go through registrations: no own pages.
    registrations: bool,
    planted: Planted,
}

impl Callback {
    fn planted(&self, b: PlantedBug) -> bool {
        self.planted.is(b)
    }

    /// Whether the range is this device's own migration or exclusive
    /// conversion, which it maps itself.
    fn own(&self, range: &Range) -> bool {
        if self.registrations {
            return false;
        }
        let own = if self.planted(PlantedBug::OwnerSkipWrong) {
            range.owner.is_some()
        } else {
            range.owner == Some(self.owner)
        };
        own && matches!(range.event, Event::Migrate | Event::Exclusive)
    }

    /// The first pass of an interval's callback. One-pass TLB: the whole
    /// teardown, flush included. Two-pass: the zaps issue their flushes,
    /// and the finish waits for them (drops the cached translations).
    fn invalidate_start(&self, range: &Range, iv: (&Interval, u64)) -> Start {
        if self.tlb == Tlb::Sync {
            return match self.invalidate(range, Some(iv)) {
                true => Start::Done,
                false => Start::Refused,
            };
        }
        let Some(issued) = self.invalidate_issuing(range, Some(iv), true) else {
            return Start::Refused;
        };
        if issued.is_empty()
            || (!range.blockable && self.planted(PlantedBug::TlbFinishSkippedNonblock))
            || (range.event == Event::Migrate
                && range.owner.is_some()
                && self.planted(PlantedBug::TlbFinishSkipsMigrate))
        {
            return Start::Done;
        }
        let state = self.state.clone();
        Start::Finish(Box::new(move || {
            let mut st = lock(&state);
            for (start, end) in issued {
                st.dev.flush_tlb(start, end);
            }
        }))
    }

    /// The invalidate callback: take the driver lock, bump the interval's
    /// seq, tear down device PTEs in the range, let the strategy do its
    /// part (note deferred work…), unlock.
    fn invalidate(&self, range: &Range, iv: Option<(&Interval, u64)>) -> bool {
        self.invalidate_issuing(range, iv, false).is_some()
    }

    // The callback proper. `issue`: zaps issue their TLB flushes instead
    // of waiting for them, and the issued ranges come back; the driver
    // lock covers the whole pass, so no other zap joins them. `None`:
    // refused.
    fn invalidate_issuing(
        &self,
        range: &Range,
        iv: Option<(&Interval, u64)>,
        issue: bool,
    ) -> Option<Vec<(u64, u64)>> {
        let mut guard = lock(&self.state);
        if guard.dev.lock.is_some() || guard.strategy.must_wait(range) {
            // A try-lock or a wait: only a non-blockable range may give up.
            if !range.blockable {
                return None;
            }
            if guard.dev.blocking {
                // mutex_lock(): sleep until the holder lets go.
                while guard.dev.lock.is_some() || guard.strategy.must_wait(range) {
                    guard = self.unlocked.wait(guard).unwrap_or_else(|e| e.into_inner());
                }
            } else {
                guard.dev.sleeps += 1;
            }
        }
        let st = &mut *guard;
        cost::one(Metric::Callbacks);
        cost::one(Metric::DriverLock);
        if cost::enabled() {
            // Wasted: nothing of the device mapped where the range meets
            // this callback's interval.
            let (s, e) = match iv {
                Some((iv, _)) => (
                    range.start.max(iv.start()),
                    range.end.min(iv.last().saturating_add(1)),
                ),
                None => (range.start, range.end),
            };
            if s >= e || !st.dev.maps_any(s, e) {
                cost::one(Metric::Wasted);
            }
        }
        // Our own migration rewrites our PTEs itself; the seq still moves so
        // that a racing fault of ours retries.
        let own = self.own(range);
        if let Some((iv, seq)) = iv {
            let skip =
                self.planted(PlantedBug::MirrorSkipSetSeq) && range.event == Event::SoftDirty;
            if !skip {
                let _ = iv.set_seq(seq);
            }
        }
        if issue {
            st.dev.issued = Some(Vec::new());
        }
        if !own {
            if self.planted(PlantedBug::UnmapDeferred) {
                st.dev.lazy_zaps.push((range.start, range.end));
            } else {
                st.dev.zap(
                    range.start,
                    range.end,
                    !self.planted(PlantedBug::HugeNotSplit),
                );
            }
        }
        if let Some((iv, _)) = iv {
            st.strategy.invalidated(&mut st.dev, iv, range);
        }
        Some(st.dev.issued.take().unwrap_or_default())
    }
}

impl ClassicOps for Callback {
    fn invalidate_range_start(&self, range: &Range) -> bool {
        self.invalidate(range, None)
    }

    // After release no invalidation reaches a classic subscriber again, so
    // every device mapping must go now.
    fn release(&self) {
        let mut st = lock(&self.state);
        st.dev.dpt.clear();
        st.dev.tlb.clear();
        st.dev.tlb_flushes += 1;
        cost::one(Metric::TlbFlushes);
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
    pub spec: StrategySpec,
    /// Device page table, driver lock and the strategy's state.
    pub state: Arc<Mutex<DevState>>,
    unlocked: Arc<Condvar>,
    cb: Callback,
    // Constant answers of the strategy, asked once.
    registrations: bool,
    relookup: bool,
}

impl fmt::Debug for Mirror {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mirror")
            .field("id", &self.id)
            .field("mm", &self.mm)
            .field("strategy", &self.spec.name())
            .finish()
    }
}

// Intervals held in the device state point back at the callback that holds
// the state: break the cycle.
impl Drop for Mirror {
    fn drop(&mut self) {
        let mut st = lock(&self.state);
        st.strategy.clear();
        st.dev.work.clear();
    }
}

impl Mirror {
    /// Attaches device `id` to `mm` with strategy `spec`.
    pub fn open(
        id: u8,
        mm: &Mm,
        spec: StrategySpec,
        planted: Option<PlantedBug>,
    ) -> Result<Mirror, MirrorError> {
        let planted = Planted::new(planted);
        let strategy = spec.build(planted).ok_or(MirrorError::Inval)?;
        let registrations = strategy.registrations();
        let relookup = strategy.relookup_on_retry();
        let state = Arc::new(Mutex::new(DevState {
            dev: Dev {
                planted,
                ..Dev::default()
            },
            strategy,
        }));
        let unlocked = Arc::new(Condvar::new());
        let cb = Callback {
            state: state.clone(),
            unlocked: unlocked.clone(),
            owner: Owner(u64::from(id) + 1),
            tlb: spec.tlb,
            registrations,
            planted,
        };
        let m = Mirror {
            id,
            mm: mm.id,
            owner: cb.owner,
            spec,
            state,
            unlocked,
            cb,
            registrations,
            relookup,
        };
        {
            let mut st = lock(&m.state);
            st.strategy.open(mm, &m.notify())?;
        }
        Ok(m)
    }

    /// Inserts intervals whose callback is this mirror's.
    pub fn notify(&self) -> Notify<'_> {
        Notify(&self.cb)
    }

    /// Whether device accesses go through registrations
    /// ([`Mirror::access_begin`]) rather than device faults.
    pub fn uses_registrations(&self) -> bool {
        self.registrations
    }

    /// For real threads: from now on a callback that meets the driver lock
    /// (or an access it must wait for) sleeps until it is released, as
    /// `mutex_lock` does, instead of counting a [`Mirror::sleeps`]. The
    /// mirror must have been opened where its locks are the threads'
    /// (inside the `ShuttleScope` of a shuttle execution, or outside any).
    pub fn set_blocking(&self) {
        lock(&self.state).dev.blocking = true;
    }

    /// Blocks until the driver lock is free or held by `me` (a fault whose
    /// commit or install step answered [`FaultBlock::DriverLock`], on a
    /// real thread). Needs [`Mirror::set_blocking`].
    pub fn wait_driver_lock(&self, me: u8) {
        let mut st = lock(&self.state);
        debug_assert!(st.dev.blocking, "wait_driver_lock without set_blocking");
        while st.dev.lock.is_some_and(|h| h != me) {
            st = self.unlocked.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }

    // Releases the driver lock; wakes whoever sleeps on it.
    fn unlock_driver(&self, dev: &mut Dev) {
        dev.lock = None;
        if dev.blocking {
            self.unlocked.notify_all();
        }
    }

    /// Whether the driver lock is free.
    pub fn lock_free(&self) -> bool {
        lock(&self.state).dev.lock.is_none()
    }

    /// Whether this mirror's callback could run for `range` now without
    /// sleeping: the driver lock is free and no access it must wait for is
    /// in flight.
    pub fn callback_can_run(&self, range: &Range) -> bool {
        let st = lock(&self.state);
        st.dev.lock.is_none() && !st.strategy.must_wait(range)
    }

    /// Who holds the driver lock.
    pub fn lock_holder(&self) -> Option<u8> {
        lock(&self.state).dev.lock
    }

    /// The device PTE covering `addr`, and the frame it reaches there.
    pub fn pte(&self, addr: u64) -> Option<(DevPte, FrameId)> {
        lock(&self.state).dev.lookup(addr)
    }

    /// Runs `f` over every device page mapping, ascending, huge entries
    /// expanded page by page, without copying the table.
    pub fn with_ptes<R>(&self, f: impl FnOnce(&mut dyn Iterator<Item = (u64, DevPte)>) -> R) -> R {
        let st = lock(&self.state);
        let mut it = st.dev.dpt.iter().flat_map(|(&a, &p)| {
            let n = p.span() / PAGE;
            (0..n).map(move |i| {
                (
                    a + i * PAGE,
                    DevPte {
                        frame: FrameId(p.frame.0 + i as u32),
                        ..p
                    },
                )
            })
        });
        f(&mut it)
    }

    /// Every device PTE as stored (huge entries once), ascending.
    pub fn ptes(&self) -> Vec<(u64, DevPte)> {
        lock(&self.state)
            .dev
            .dpt
            .iter()
            .map(|(&a, &p)| (a, p))
            .collect()
    }

    /// Device faults handled so far.
    pub fn faults(&self) -> u64 {
        lock(&self.state).dev.faults
    }

    /// Callbacks that would have slept (must stay zero).
    pub fn sleeps(&self) -> u64 {
        lock(&self.state).dev.sleeps
    }

    /// Bytes of driver state now: the device page table and the
    /// strategy's own structures (an estimate from their element sizes).
    pub fn state_bytes(&self) -> u64 {
        let st = lock(&self.state);
        let dpt = st.dev.dpt.len() * std::mem::size_of::<(u64, DevPte)>();
        let work = st.dev.work.len() * std::mem::size_of::<Work>();
        (dpt + work + st.strategy.state_bytes()) as u64
    }

    /// Items of deferred work waiting, and the most changes one of them
    /// batches ([`Strategy::deepest_backlog`]).
    pub fn backlog(&self) -> (usize, usize) {
        let st = lock(&self.state);
        (st.dev.work.len(), st.strategy.deepest_backlog())
    }

    /// Frames pinned by registrations: a pinned frame must stay live.
    pub fn pinned_frames(&self) -> Vec<FrameId> {
        lock(&self.state).strategy.pinned_frames()
    }

    /// After an invalidation that this device's callback skipped (its own
    /// migration or exclusive conversion) changed the CPU PTEs of `range`:
    /// map what it now owns, drop the rest.
    pub fn own_range_done(&self, mm: &Mm, range: &Range) {
        // The driver's own migrate or exclusive path: it knows what it started.
        let own = range.owner == Some(self.owner)
            && matches!(range.event, Event::Migrate | Event::Exclusive)
            && !self.registrations;
        if !own {
            return;
        }
        let mut guard = lock(&self.state);
        let st = &mut *guard;
        cost::one(Metric::DriverLock);
        st.dev.zap(range.start, range.end, true);
        // Another invalidation in flight may already have run our callback
        // and be about to change these PTEs: map nothing, fault later.
        if mm.notifier.snapshot().active > 1 {
            return;
        }
        for (page, pte) in mm.ptes_in(range.start, range.end) {
            // Only where an interval of ours will hear of later changes.
            if !st.strategy.covers(page) {
                continue;
            }
            let e = match pte {
                Pte::Device {
                    frame,
                    owner,
                    writable,
                } if owner == self.owner.0 => DevPte::small(frame, writable),
                Pte::Exclusive { frame, owner, .. } if owner == self.owner.0 => DevPte {
                    frame,
                    write: true,
                    atomic: true,
                    huge: false,
                },
                _ => continue,
            };
            st.dev.dpt.insert(page, e);
        }
    }

    /// A device access that needs no fault: the frame, if the device PTE
    /// grants it.
    pub fn translate(&self, addr: u64, write: bool) -> Option<FrameId> {
        if self.registrations {
            return None;
        }
        let mut st = lock(&self.state);
        if st.strategy.device_quiesced() {
            return None;
        }
        st.dev.tlb_translate(addr, write)
    }

    /// Runs `f` over every cached TLB translation, ascending, huge entries
    /// expanded page by page.
    pub fn with_tlb<R>(&self, f: impl FnOnce(&mut dyn Iterator<Item = (u64, DevPte)>) -> R) -> R {
        let st = lock(&self.state);
        let mut it = st.dev.tlb.iter().flat_map(|(&a, &p)| {
            (0..p.span() / PAGE).map(move |i| {
                (
                    a + i * PAGE,
                    DevPte {
                        frame: FrameId(p.frame.0 + i as u32),
                        ..p
                    },
                )
            })
        });
        f(&mut it)
    }

    /// TLB flushes completed so far.
    pub fn tlb_flushes(&self) -> u64 {
        lock(&self.state).dev.tlb_flushes
    }

    /// Sets attributes on `[addr, addr + len)` of `mm` (a strategy without
    /// attributes answers [`MirrorError::Inval`]).
    pub fn set_attr(&self, mm: &Mm, addr: u64, len: u64) -> Result<(), MirrorError> {
        if mm.id != self.mm {
            return Err(MirrorError::WrongMm);
        }
        let mut guard = lock(&self.state);
        let st = &mut *guard;
        st.strategy
            .set_attr(&mut st.dev, mm, &self.notify(), addr, len)
    }

    /// Takes one item of deferred work, if any.
    pub fn take_work(&self) -> Option<Deferred> {
        lock(&self.state).dev.work.pop_front().map(|item| Deferred {
            item: Some(item),
            removing: None,
        })
    }
}

/// One item of deferred work being run.
#[derive(Debug)]
pub struct Deferred {
    item: Option<Work>,
    removing: Option<RemoveWait>,
}

/// The result of one step of deferred work.
#[derive(Debug)]
pub enum DeferredStep {
    /// A step was taken.
    Progress,
    /// Waiting for the driver lock or for an interval removal.
    Blocked,
    /// Finished; an error is a misuse of the notifier API (or of an exited
    /// address space) by the driver.
    Done(Result<&'static str, MirrorError>),
}

impl Deferred {
    /// Blocks until the interval removal it waits for may finish (on a
    /// real thread, after a [`DeferredStep::Blocked`]); false, at once, if
    /// it waits for no removal.
    pub fn wait_notifier(&self, notifier: &Subscriptions) -> bool {
        match &self.removing {
            Some(RemoveWait::Wait(w)) => {
                notifier.wait_ready(w);
                true
            }
            _ => false,
        }
    }

    /// Takes one step on behalf of the mirror.
    pub fn step(&mut self, m: &Mirror, mm: &Mm) -> DeferredStep {
        if let Some(w) = self.removing.take() {
            if let Some(w) = finish_remove(mm, w) {
                self.removing = Some(w);
                return DeferredStep::Blocked;
            }
            return DeferredStep::Done(Ok("removed"));
        }
        let Some(item) = self.item.take() else {
            return DeferredStep::Done(Ok("nothing"));
        };
        let mut guard = lock(&m.state);
        let st = &mut *guard;
        // The work changes what faults look up: it takes the driver lock,
        // which a fault holds from commit to install.
        // Work that takes the mmap lock for write waits for every holder,
        // and may take it only while the address space lives.
        let takes_mmap = st.strategy.work_takes_mmap_write(&item, mm);
        let mmap_busy = mm.lock.writer.is_some() || !mm.lock.readers.is_empty();
        if st.dev.lock.is_some() || (takes_mmap && mmap_busy) {
            self.item = Some(item);
            return DeferredStep::Blocked;
        }
        if takes_mmap && mm.exited {
            return DeferredStep::Done(Err(MirrorError::Segv(mm::MmError::Exited)));
        }
        cost::one(Metric::DriverLock);
        if takes_mmap {
            cost::one(Metric::MmapLock);
        }
        let iv = match st
            .strategy
            .run_work_checked(&mut st.dev, item, mm, &m.notify())
        {
            Ok(Ok(iv)) => iv,
            Ok(Err(what)) => return DeferredStep::Done(Ok(what)),
            Err(e) => return DeferredStep::Done(Err(e)),
        };
        drop(guard);
        match mm.notifier.remove_prepare(&iv) {
            Ok(w) => {
                self.removing = Some(w);
                DeferredStep::Progress
            }
            Err(e) => DeferredStep::Done(Err(MirrorError::Notifier(e))),
        }
    }
}

/// Finishes a split-phase interval removal if it may finish now; gives it
/// back while it still has to wait.
pub fn finish_remove(mm: &Mm, w: RemoveWait) -> Option<RemoveWait> {
    finish_remove_in(&mm.notifier, w)
}

fn finish_remove_in(notifier: &Subscriptions, w: RemoveWait) -> Option<RemoveWait> {
    if let RemoveWait::Wait(sw) = &w {
        if !notifier.wait_is_ready(sw) {
            return Some(w);
        }
    }
    notifier.remove_finish(w);
    None
}

struct IntervalCb(Callback);

impl notifier::IntervalOps for IntervalCb {
    fn invalidate(&self, iv: &Interval, r: &Range, seq: u64) -> bool {
        self.0.invalidate_start(r, (iv, seq)).finish_now()
    }

    fn invalidate_start(&self, iv: &Interval, r: &Range, seq: u64) -> Start {
        self.0.invalidate_start(r, (iv, seq))
    }
}

pub(crate) fn interval_ops(cb: Callback) -> Arc<dyn notifier::IntervalOps> {
    Arc::new(IntervalCb(cb))
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
    /// step ends): do the device access now on this frame. More steps may
    /// follow.
    Installed(FrameId),
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

/// A device fault on one page, or the pinning of a registration.
#[derive(Debug)]
pub struct Fault {
    addr: u64,
    end: u64,
    write: bool,
    // The registration being pinned.
    reg: Option<u64>,
    state: State,
    iv: Option<Interval>,
    seq: u64,
    // Each page's frame and writability, as walked.
    samples: Vec<(FrameId, bool)>,
    // The walk found a huge CPU mapping that the interval covers whole.
    huge: bool,
    // A use of its interval it holds until it ends (an ODP chunk).
    hold: Option<u64>,
    counted: bool,
    failed: Option<MirrorError>,
    /// Collisions so far (times the fault began again).
    pub retries: u32,
}

impl Fault {
    /// A fault on the page containing `addr`, for write or read.
    pub fn new(addr: u64, write: bool) -> Fault {
        let addr = addr / PAGE * PAGE;
        Fault::span(addr, addr.saturating_add(PAGE), write, None)
    }

    /// The pinning of registration `reg` over `[start, end)`.
    pub fn pin(reg: u64, start: u64, end: u64, write: bool) -> Fault {
        Fault::span(start, end, write, Some(reg))
    }

    fn span(addr: u64, end: u64, write: bool, reg: Option<u64>) -> Fault {
        Fault {
            addr,
            end,
            write,
            reg,
            state: State::Begin,
            iv: None,
            seq: 0,
            samples: Vec::new(),
            huge: false,
            hold: None,
            counted: false,
            failed: None,
            retries: 0,
        }
    }

    /// Pages it covers.
    pub fn pages(&self) -> u64 {
        (self.end - self.addr) / PAGE
    }

    /// Whether it pins a registration rather than faulting one page.
    pub fn is_registration(&self) -> bool {
        self.reg.is_some()
    }

    /// Whether the interval it holds has left the tree (removed, or on its
    /// way out) while the fault is in flight: the race every driver with
    /// intervals of its own must settle at commit.
    pub fn interval_gone(&self) -> bool {
        self.iv.as_ref().is_some_and(|iv| !strategy::in_tree(iv))
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

    fn retry(&mut self, m: &Mirror, phys: Option<&mut Phys>) {
        cost::one(Metric::Retries);
        self.retries += 1;
        self.state = State::Begin;
        self.unpin(phys);
        if m.relookup {
            self.iv = None;
        }
    }

    // A registration's pins go back (`phys` is None only for a fault that
    // pins nothing, see `Fault::needs_mm`).
    fn unpin(&mut self, phys: Option<&mut Phys>) {
        if let (Some(_), Some(phys)) = (self.reg, phys) {
            for (f, _) in self.samples.drain(..) {
                phys.unpin(f);
            }
        }
        self.samples.clear();
    }

    fn fail(&mut self, e: MirrorError, m: &Mirror, mm: &Mm, phys: &mut Phys) -> FaultStep {
        self.unpin(Some(phys));
        self.failed = Some(e);
        self.finish_or_remove(m, &mm.notifier);
        FaultStep::Progress
    }

    /// Finds or creates the interval to read_begin on.
    fn interval(&mut self, m: &Mirror, mm: &Mm) -> Result<Interval, MirrorError> {
        if let Some(iv) = &self.iv {
            return Ok(iv.clone());
        }
        let req = FaultReq {
            addr: self.addr,
            reg: self.reg,
        };
        let Cover { iv, hold } = lock(&m.state).strategy.interval(req, mm, &m.notify())?;
        if hold.is_some() {
            self.hold = hold;
        }
        Ok(iv)
    }

    /// Whether the device may map the huge CPU page around `addr` with one
    /// entry: its strategy must allow it (by default, its interval must
    /// cover the 2 MiB whole).
    fn can_map_huge(&self, m: &Mirror, mm: &Mm) -> bool {
        let base = self.addr / HUGE * HUGE;
        self.reg.is_none()
            && mm.is_huge(base)
            && self
                .iv
                .as_ref()
                .is_some_and(|iv| lock(&m.state).strategy.huge_ok(iv, base))
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
        let _scope = cost::FaultScope::enter();
        // The mm is gone (mmget_not_zero fails): the fault must unwind its
        // state (chunk use, busy registration, temporary interval), never
        // be dropped half-way.
        if mm.exited && matches!(self.state, State::Begin | State::Waiting(_) | State::Walk) {
            self.state = State::Begin;
            return self.fail(MirrorError::Segv(mm::MmError::Exited), m, mm, phys);
        }
        match std::mem::replace(&mut self.state, State::Done) {
            State::Begin => {
                {
                    let mut st = lock(&m.state);
                    if !self.counted {
                        self.counted = true;
                        cost::one(Metric::Faults);
                        st.dev.faults += 1;
                    }
                    for (start, end) in std::mem::take(&mut st.dev.lazy_zaps) {
                        st.dev.zap(start, end, true);
                    }
                    let st = &mut *st;
                    st.strategy.fault_begin(&mut st.dev);
                }
                let iv = match self.interval(m, mm) {
                    Ok(iv) => iv,
                    Err(e) => return self.fail(e, m, mm, phys),
                };
                self.iv = Some(iv.clone());
                match mm.notifier.read_begin_prepare(&iv) {
                    Ok(ReadBegin::Ready(seq)) => {
                        self.seq = seq;
                        self.state = State::Walk;
                    }
                    Ok(ReadBegin::Wait(w)) => self.state = State::Waiting(w),
                    Err(e) => return self.fail(MirrorError::Notifier(e), m, mm, phys),
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
                cost::one(Metric::MmapLock);
                let mine = m.owner.0;
                let device_ok = !m.registrations;
                let usable = |pte: Option<Pte>, write: bool| match pte {
                    Some(Pte::Present { frame, writable }) => {
                        Some((frame, writable)).filter(|_| writable || !write)
                    }
                    // hmm_range_fault hands the owner its own device pages.
                    Some(Pte::Device {
                        frame,
                        owner,
                        writable,
                    }) if owner == mine && device_ok => {
                        Some((frame, writable)).filter(|_| writable || !write)
                    }
                    _ => None,
                };
                self.unpin(Some(&mut *phys));
                let mut page = self.addr;
                while page < self.end {
                    // hmm_range_fault refuses VMAs without read permission.
                    if !mm.vma_at(page).is_some_and(|v| v.read) {
                        return self.fail(MirrorError::Segv(mm::MmError::Fault), m, mm, phys);
                    }
                    if usable(mm.pte(page), self.write).is_none() {
                        // Faulting in may invalidate (a COW break, a
                        // migration back): its callbacks must be able to run.
                        let r = Range::new(page, page.saturating_add(PAGE), Event::Clear);
                        if !env.callbacks_can_run(mm.id, &r) {
                            self.unpin(Some(&mut *phys));
                            return FaultStep::Blocked(FaultBlock::DriverLock);
                        }
                        let t = Task::new(
                            MmOp::FaultIn {
                                addr: page,
                                write: self.write,
                            },
                            me,
                        );
                        if let Err(e) = t.run_nested(mm, phys, env) {
                            return self.fail(MirrorError::Segv(e), m, mm, phys);
                        }
                    }
                    // Present only if nothing took it away meanwhile; a
                    // read of a read-only page may map it read-only.
                    match usable(mm.pte(page), false) {
                        Some(s) => {
                            if self.reg.is_some() {
                                phys.pin(s.0);
                            }
                            self.samples.push(s);
                        }
                        None => {
                            self.retry(m, Some(&mut *phys));
                            return FaultStep::Progress;
                        }
                    }
                    page = page.saturating_add(PAGE);
                }
                self.huge = self.can_map_huge(m, mm);
                if self.huge {
                    let base = self.addr / HUGE * HUGE;
                    match mm.pte(base) {
                        Some(Pte::Present { frame, writable }) => {
                            self.samples = vec![(frame, writable)]
                        }
                        _ => self.huge = false,
                    }
                }
                let iv = self.iv.as_ref().expect("begun");
                if iv.check_retry(self.seq) {
                    self.retry(m, Some(&mut *phys));
                } else {
                    self.state = State::Commit;
                }
                FaultStep::Progress
            }
            State::Commit => self.commit(me, m, Some(phys)),
            State::Install => self.install(me, m, &mm.notifier, Some(phys)),
            State::Removing(w) => self.removing(w, &mm.notifier),
            State::Done => self.finished(),
        }
    }

    // Commit: take the driver lock, read_retry; unlock and retry, or go on
    // to install with the lock held. Touches no address space.
    fn commit(&mut self, me: u8, m: &Mirror, phys: Option<&mut Phys>) -> FaultStep {
        let unlocked = m.cb.planted(PlantedBug::ReadRetryUnlocked);
        if !unlocked {
            let mut st = lock(&m.state);
            if st.dev.lock.is_some_and(|h| h != me) {
                drop(st);
                self.state = State::Commit;
                return FaultStep::Blocked(FaultBlock::DriverLock);
            }
            st.dev.lock = Some(me);
            cost::one(Metric::DriverLock);
        }
        let iv = self.iv.as_ref().expect("begun");
        // read_retry cannot see an interval that the driver's own
        // deferred work took out of the tree meanwhile: a PTE
        // installed under it would never be invalidated.
        // The huge entry is checked again too: what the strategy
        // allows may have changed since the walk.
        let ok = || {
            let st = lock(&m.state);
            let base = self.addr / HUGE * HUGE;
            st.strategy.commit_ok_for(iv, self.hold)
                && (!self.huge || st.strategy.huge_ok(iv, base))
        };
        if self.reg.is_none() && m.cb.planted(PlantedBug::TlbFillBeforeRecheck) {
            if let Some(&(frame, writable)) = self.samples.first() {
                let pte = DevPte::small(frame, writable);
                lock(&m.state).dev.tlb_fill(self.addr, pte);
            }
        }
        if iv.read_retry(self.seq) || !ok() {
            if !unlocked {
                m.unlock_driver(&mut lock(&m.state).dev);
            }
            self.retry(m, phys);
        } else {
            if !unlocked && m.cb.planted(PlantedBug::CommitRelock) {
                // Two critical sections where one is needed.
                m.unlock_driver(&mut lock(&m.state).dev);
                let mut st = lock(&m.state);
                if st.dev.lock.is_none() {
                    st.dev.lock = Some(me);
                }
            }
            self.state = State::Install;
        }
        FaultStep::Progress
    }

    // Install: write the device PTE under the driver lock, unlock.
    fn install(
        &mut self,
        me: u8,
        m: &Mirror,
        notifier: &Subscriptions,
        phys: Option<&mut Phys>,
    ) -> FaultStep {
        let mut guard = lock(&m.state);
        let st = &mut *guard;
        if st.dev.lock.is_some_and(|h| h != me) {
            drop(guard);
            self.state = State::Install;
            return FaultStep::Blocked(FaultBlock::DriverLock);
        }
        let out = if let Some(id) = self.reg {
            let samples = std::mem::take(&mut self.samples);
            let old = st.strategy.install_registration(&mut st.dev, id, samples);
            m.unlock_driver(&mut st.dev);
            drop(guard);
            if let Some(phys) = phys {
                for f in old {
                    phys.unpin(f);
                }
            }
            self.finish_or_remove(m, notifier);
            return FaultStep::Progress;
        } else if self.huge {
            let (frame, writable) = self.samples[0];
            let base = self.addr / HUGE * HUGE;
            st.dev.zap(base, base + HUGE, true);
            let pte = DevPte {
                frame,
                write: writable,
                atomic: false,
                huge: true,
            };
            st.dev.dpt.insert(base, pte);
            // The access that faulted goes on with this translation.
            st.dev.tlb_fill(base, pte);
            FrameId(frame.0 + ((self.addr - base) / PAGE) as u32)
        } else {
            let (frame, writable) = self.samples[0];
            st.dev.zap(self.addr, self.end, true);
            let pte = DevPte::small(frame, writable);
            st.dev.dpt.insert(self.addr, pte);
            st.dev.tlb_fill(self.addr, pte);
            frame
        };
        m.unlock_driver(&mut st.dev);
        drop(guard);
        self.samples.clear();
        self.finish_or_remove(m, notifier);
        FaultStep::Installed(out)
    }

    fn removing(&mut self, w: RemoveWait, notifier: &Subscriptions) -> FaultStep {
        match finish_remove_in(notifier, w) {
            Some(w) => {
                self.state = State::Removing(w);
                FaultStep::Blocked(FaultBlock::Remove)
            }
            None => self.finished(),
        }
    }

    /// Whether its next step reads or changes the address space (begin,
    /// the end of a read_begin wait, the walk; every step of a
    /// registration's pinning, which holds frames). Commit, install and
    /// the removal of a temporary interval need only the driver's locks
    /// and the notifier: on real threads they run without the lock that
    /// guards the address space, as a kernel fault holds the driver lock
    /// but not the mmap lock from read_retry to the PTE update.
    pub fn needs_mm(&self) -> bool {
        self.reg.is_some() || matches!(self.state, State::Begin | State::Waiting(_) | State::Walk)
    }

    /// Takes one step that does not need the address space (see
    /// [`Fault::needs_mm`]); `notifier` is the core of the mirror's
    /// address space.
    pub fn step_driver(&mut self, me: u8, m: &Mirror, notifier: &Subscriptions) -> FaultStep {
        if self.needs_mm() {
            return FaultStep::Done(Err(MirrorError::Inval));
        }
        let _scope = cost::FaultScope::enter();
        match std::mem::replace(&mut self.state, State::Done) {
            State::Commit => self.commit(me, m, None),
            State::Install => self.install(me, m, notifier, None),
            State::Removing(w) => self.removing(w, notifier),
            _ => self.finished(),
        }
    }

    /// Blocks until what a [`FaultBlock::ReadBegin`] or
    /// [`FaultBlock::Remove`] step waits for is ready (on a real thread).
    pub fn wait_notifier(&self, notifier: &Subscriptions) {
        match &self.state {
            State::Waiting(w) | State::Removing(RemoveWait::Wait(w)) => notifier.wait_ready(w),
            _ => {}
        }
    }

    fn finished(&mut self) -> FaultStep {
        self.state = State::Done;
        FaultStep::Done(self.failed.take().map_or(Ok(()), Err))
    }

    // The strategy takes back what the fault held; a temporary interval
    // goes (removal may have to wait).
    fn finish_or_remove(&mut self, m: &Mirror, notifier: &Subscriptions) {
        let end = FaultEnd {
            iv: self.iv.take(),
            hold: self.hold.take(),
            reg: self.reg,
            failed: self.failed.is_some(),
        };
        let remove = {
            let mut guard = lock(&m.state);
            let st = &mut *guard;
            st.strategy.fault_end(&mut st.dev, end)
        };
        self.state = match remove {
            Some(iv) => match notifier.remove_prepare(&iv) {
                Ok(w) => State::Removing(w),
                Err(_) => State::Done,
            },
            None => State::Done,
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
    /// Nothing mapped yet (no PTE, or swapped out).
    None,
    /// No VMA, or one that forbids reads (PROT_NONE).
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

/// Most pages one snapshot reports.
pub const SNAPSHOT_PAGES: u64 = 512;

/// Each page's state in `[addr, addr + len)` as device `m` sees it without
/// faulting anything in (at most [`SNAPSHOT_PAGES`] pages).
pub fn snapshot(m: &Mirror, mm: &Mm, addr: u64, len: u64) -> Vec<PageState> {
    let start = addr / PAGE * PAGE;
    // None past the top of the address space.
    let pages = len
        .div_ceil(PAGE)
        .min(SNAPSHOT_PAGES)
        .min((u64::MAX - start) / PAGE + 1);
    (0..pages)
        .map(|i| {
            let a = start + i * PAGE;
            match mm.vma_at(a) {
                Some(v) if v.read => {}
                // No VMA, or no read permission: hmm_range_fault fails there.
                _ => return PageState::Error,
            }
            match mm.pte(a) {
                None | Some(Pte::Swap { .. }) => PageState::None,
                Some(Pte::Present {
                    frame: FrameId(0), ..
                }) => PageState::Zero,
                Some(Pte::Present { writable, .. }) => match (mm.is_huge(a), writable) {
                    (true, true) => PageState::HugeWrite,
                    (true, false) => PageState::HugeRead,
                    (false, true) => PageState::Write,
                    (false, false) => PageState::Read,
                },
                Some(Pte::Device {
                    owner, writable, ..
                }) => match (owner == m.owner.0, writable) {
                    (true, true) => PageState::LocalWrite,
                    (true, false) => PageState::LocalRead,
                    (false, true) => PageState::RemoteWrite,
                    (false, false) => PageState::RemoteRead,
                },
                Some(Pte::Exclusive { .. }) => PageState::Exclusive,
            }
        })
        .collect()
}
