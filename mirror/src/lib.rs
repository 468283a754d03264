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

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use mm::{Env, FrameId, Mm, MmId, MmOp, Phys, Pte, Task, HUGE, PAGE};
use notifier::{
    ClassicId, ClassicOps, Event, Interval, Owner, Phase, PlantedBug, Range, ReadBegin, RemoveWait,
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

/// An implicit-ODP chunk: one interval for an aligned range.
#[derive(Debug)]
struct Chunk {
    iv: Interval,
    gen: u64,
    // Faults between lookup and their end: a used chunk is never destroyed.
    users: u32,
}

/// A VMA-tracking interval and the unmaps it still has to be trimmed by.
#[derive(Debug)]
struct Tracked {
    iv: Interval,
    start: u64,
    end: u64,
    // On the deferred-update list: no new fault may use it.
    deferred: bool,
    holes: Vec<(u64, u64)>,
}

/// One registration of a registration cache.
#[derive(Debug)]
pub struct Registration {
    /// First byte.
    pub start: u64,
    /// End (exclusive).
    pub end: u64,
    /// Registered for write.
    pub write: bool,
    /// Its pages may be used: no invalidation since they were pinned.
    pub valid: bool,
    /// Device accesses in progress.
    pub inflight: u32,
    /// Each page's pinned frame.
    pub pins: Vec<(u64, FrameId)>,
    iv: Interval,
    id: u64,
    // A fault is revalidating it.
    busy: bool,
}

/// Deferred work, run by a logical thread of its own (`dN work`).
#[derive(Debug)]
enum Item {
    OdpDestroy { base: u64, gen: u64, iv: Interval },
    VmaUpdate { iv: Interval },
}

/// What the driver lock protects, and the lookup structures that are
/// deliberately outside it.
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
    // Implicit ODP: found without the driver lock (an xarray in the kernel).
    chunks: BTreeMap<u64, Chunk>,
    next_gen: u64,
    work: VecDeque<Item>,
    tracked: Vec<Tracked>,
    regs: Vec<Registration>,
    next_reg: u64,
}

impl DevState {
    /// Removes every entry that maps a byte of `[start, end)`. A huge entry
    /// is dropped whole when any page inside it goes.
    fn zap(&mut self, start: u64, end: u64, split_huge: bool) {
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
        for a in pages {
            self.dpt.remove(&a);
        }
    }

    /// The entry mapping `addr` and the frame it reaches there.
    fn lookup(&self, addr: u64) -> Option<(DevPte, FrameId)> {
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

    fn maps_any(&self, start: u64, end: u64) -> bool {
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
    strategy: Strategy,
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

    /// Whether the range is this device's own migration or exclusive
    /// conversion, which it maps itself.
    fn own(&self, range: &Range) -> bool {
        if self.strategy == Strategy::RegistrationCache {
            return false;
        }
        let own = if self.planted(PlantedBug::OwnerSkipWrong) {
            range.owner.is_some()
        } else {
            range.owner == Some(self.owner)
        };
        own && matches!(range.event, Event::Migrate | Event::Exclusive)
    }

    /// Whether a registration in the range has device accesses in flight:
    /// the callback would have to wait for them.
    fn must_wait(&self, st: &DevState, range: &Range) -> bool {
        !self.planted(PlantedBug::RegcacheNoWait)
            && st
                .regs
                .iter()
                .any(|r| r.inflight > 0 && r.start < range.end && range.start < r.end)
    }

    /// Whether a fault may still install PTEs under `iv` (checked under the
    /// driver lock at commit).
    fn interval_live(&self, st: &DevState, iv: &Interval) -> bool {
        if self.planted(PlantedBug::VmaCommitUnchecked) {
            return true;
        }
        match self.strategy {
            Strategy::VmaTracking => {
                let stale_ok = self.planted(PlantedBug::VmaDeferredInterval);
                st.tracked
                    .iter()
                    .any(|t| t.iv.id() == iv.id() && (stale_ok || !t.deferred))
            }
            _ => true,
        }
    }

    /// The invalidate callback: take the driver lock, bump the interval's
    /// seq, tear down device PTEs in the range, note deferred work, unlock.
    fn invalidate(&self, range: &Range, iv: Option<(&Interval, u64)>) -> bool {
        let mut st = lock(&self.state);
        if st.lock.is_some() || self.must_wait(&st, range) {
            // A try-lock or a wait: only a non-blockable range may give up.
            if !range.blockable {
                return false;
            }
            st.sleeps += 1;
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
        if !own {
            st.zap(
                range.start,
                range.end,
                !self.planted(PlantedBug::HugeNotSplit),
            );
        }
        let Some((iv, _)) = iv else {
            return true;
        };
        match self.strategy {
            Strategy::OdpImplicit { chunk_shift } => {
                let size = 1u64 << chunk_shift;
                let base = iv.start();
                let empty = !st.maps_any(base, base.saturating_add(size));
                let gen = st
                    .chunks
                    .get(&base)
                    .filter(|c| c.iv.id() == iv.id())
                    .map(|c| c.gen);
                // Never destroy from here: removal waits for this very
                // invalidation to end.
                if let (true, Some(gen)) = (empty, gen) {
                    st.work.push_back(Item::OdpDestroy {
                        base,
                        gen,
                        iv: iv.clone(),
                    });
                }
            }
            Strategy::VmaTracking if range.event == Event::Unmap => {
                let mut queue = false;
                let mut dropped = None;
                if let Some(t) = st.tracked.iter_mut().find(|t| t.iv.id() == iv.id()) {
                    if t.holes.len() < 8 {
                        t.holes.push((range.start, range.end));
                    } else {
                        // Too fragmented to trim: drop it whole.
                        t.holes = vec![(t.start, t.end)];
                        dropped = Some((t.start, t.end));
                    }
                    queue = !t.deferred;
                    t.deferred = true;
                }
                // No piece will cover what is still mapped there: once the
                // interval goes, no invalidation would reach those PTEs.
                if let Some((start, end)) = dropped {
                    st.zap(start, end, true);
                }
                if queue {
                    st.work.push_back(Item::VmaUpdate { iv: iv.clone() });
                }
            }
            Strategy::RegistrationCache => {
                for r in st.regs.iter_mut().filter(|r| r.iv.id() == iv.id()) {
                    r.valid = false;
                }
            }
            _ => {}
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

// Intervals held in the device state point back at the callback that holds
// the state: break the cycle.
impl Drop for Mirror {
    fn drop(&mut self) {
        let mut st = lock(&self.state);
        st.chunks.clear();
        st.tracked.clear();
        st.regs.clear();
        st.work.clear();
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
            strategy,
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
            Strategy::FullVa => {
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
            // Intervals come with faults, chunks, VMAs or registrations.
            Strategy::OdpImplicit { .. } | Strategy::VmaTracking | Strategy::RegistrationCache => {
                if mm.notifier.snapshot().released {
                    return Err(MirrorError::Notifier(notifier::Error::Released));
                }
            }
        }
        Ok(m)
    }

    /// Whether the driver lock is free.
    pub fn lock_free(&self) -> bool {
        lock(&self.state).lock.is_none()
    }

    /// Whether this mirror's callback could run for `range` now without
    /// sleeping: the driver lock is free and no access it must wait for is
    /// in flight.
    pub fn callback_can_run(&self, range: &Range) -> bool {
        let st = lock(&self.state);
        st.lock.is_none() && !self.cb.must_wait(&st, range)
    }

    /// Who holds the driver lock.
    pub fn lock_holder(&self) -> Option<u8> {
        lock(&self.state).lock
    }

    /// The device PTE covering `addr`, and the frame it reaches there.
    pub fn pte(&self, addr: u64) -> Option<(DevPte, FrameId)> {
        lock(&self.state).lookup(addr)
    }

    /// Runs `f` over every device page mapping, ascending, huge entries
    /// expanded page by page, without copying the table.
    pub fn with_ptes<R>(&self, f: impl FnOnce(&mut dyn Iterator<Item = (u64, DevPte)>) -> R) -> R {
        let st = lock(&self.state);
        let mut it = st.dpt.iter().flat_map(|(&a, &p)| {
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

    /// Items of deferred work waiting.
    pub fn pending_work(&self) -> usize {
        lock(&self.state).work.len()
    }

    /// Frames pinned by registrations: a pinned frame must stay live.
    pub fn pinned_frames(&self) -> Vec<FrameId> {
        lock(&self.state)
            .regs
            .iter()
            .flat_map(|r| r.pins.iter().map(|&(_, f)| f))
            .collect()
    }

    /// After an invalidation that this device's callback skipped (its own
    /// migration or exclusive conversion) changed the CPU PTEs of `range`:
    /// map what it now owns, drop the rest.
    pub fn own_range_done(&self, mm: &Mm, range: &Range) {
        // The driver's own migrate or exclusive path: it knows what it started.
        let own = range.owner == Some(self.owner)
            && matches!(range.event, Event::Migrate | Event::Exclusive)
            && self.strategy != Strategy::RegistrationCache;
        if !own {
            return;
        }
        let mut st = lock(&self.state);
        st.zap(range.start, range.end, true);
        // Another invalidation in flight may already have run our callback
        // and be about to change these PTEs: map nothing, fault later.
        if mm.notifier.snapshot().active > 1 {
            return;
        }
        // Only where an interval of ours will hear of later changes: one in
        // the tree now. An insert made while this cycle runs waits on the
        // deferred list, and an invalidation that starts before the cycle
        // ends would not call it.
        let hears = |iv: &Interval| iv.phase() == Phase::InTree;
        for (page, pte) in mm.ptes_in(range.start, range.end) {
            let covered = match self.strategy {
                Strategy::FullVa => self.full.as_ref().is_some_and(hears),
                Strategy::PerFault => true,
                Strategy::OdpImplicit { chunk_shift } => st
                    .chunks
                    .get(&(page & !((1u64 << chunk_shift) - 1)))
                    .is_some_and(|c| hears(&c.iv)),
                Strategy::VmaTracking => st
                    .tracked
                    .iter()
                    .any(|t| !t.deferred && hears(&t.iv) && t.start <= page && page < t.end),
                Strategy::RegistrationCache => false,
            };
            if !covered {
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
            st.dpt.insert(page, e);
        }
    }

    /// A device access that needs no fault: the frame, if the device PTE
    /// grants it.
    pub fn translate(&self, addr: u64, write: bool) -> Option<FrameId> {
        if self.strategy == Strategy::RegistrationCache {
            return None;
        }
        self.pte(addr)
            .filter(|(p, _)| p.write || !write)
            .map(|(_, f)| f)
    }

    /// Takes one item of deferred work, if any.
    pub fn take_work(&self) -> Option<Deferred> {
        lock(&self.state).work.pop_front().map(|item| Deferred {
            item: Some(item),
            removing: None,
        })
    }

    /// Registration cache: registers `[addr, addr + len)` (at most
    /// `MAX_REG_PAGES` pages); pin it with the returned fault.
    pub fn register(&self, mm: &Mm, addr: u64, len: u64) -> Result<Fault, MirrorError> {
        if self.strategy != Strategy::RegistrationCache {
            return Err(MirrorError::Inval);
        }
        let start = addr / PAGE * PAGE;
        let len = len.min(MAX_REG_PAGES * PAGE);
        let end = addr
            .checked_add(len)
            .and_then(|e| e.div_ceil(PAGE).checked_mul(PAGE))
            .filter(|&e| e > start && e <= mm.config.task_size)
            .ok_or(MirrorError::Inval)?;
        let write = mm.vma_at(start).is_some_and(|v| v.write);
        let iv = mm
            .notifier
            .insert(start, end - start, interval_ops(self.cb.clone()))
            .map_err(MirrorError::Notifier)?;
        let mut st = lock(&self.state);
        let id = st.next_reg;
        st.next_reg += 1;
        st.regs.push(Registration {
            start,
            end,
            write,
            valid: false,
            inflight: 0,
            pins: Vec::new(),
            iv,
            id,
            busy: true,
        });
        Ok(Fault::pin(id, start, end, write))
    }

    /// Registration cache: a device access at `addr` begins. On success the
    /// access is in flight until [`Mirror::access_end`].
    pub fn access_begin(&self, me: u8, addr: u64, write: bool) -> Access {
        let mut st = lock(&self.state);
        if st.lock.is_some_and(|h| h != me) {
            return Access::Blocked;
        }
        let page = addr / PAGE * PAGE;
        let Some(r) = st.regs.iter_mut().find(|r| r.start <= page && page < r.end) else {
            return Access::Err(MirrorError::NoEnt);
        };
        if write && !r.write {
            return Access::Err(MirrorError::Segv(mm::MmError::Perm));
        }
        if !r.valid {
            if r.busy {
                return Access::Blocked;
            }
            r.busy = true;
            return Access::Revalidate(Fault::pin(r.id, r.start, r.end, r.write));
        }
        r.inflight += 1;
        let frame = r.pins[((page - r.start) / PAGE) as usize].1;
        Access::Go { reg: r.id, frame }
    }

    /// Registration cache: the access of [`Access::Go`] is over.
    pub fn access_end(&self, reg: u64) {
        let mut st = lock(&self.state);
        if let Some(r) = st.regs.iter_mut().find(|r| r.id == reg) {
            r.inflight = r.inflight.saturating_sub(1);
        }
    }

    /// Registration cache: drops the registration starting at `addr`, once
    /// no access is in flight; returns the removal of its interval to finish.
    pub fn unregister(
        &self,
        me: u8,
        mm: &Mm,
        phys: &mut Phys,
        addr: u64,
    ) -> Result<Option<RemoveWait>, MirrorError> {
        if self.strategy != Strategy::RegistrationCache {
            return Err(MirrorError::Inval);
        }
        let mut st = lock(&self.state);
        let Some(i) = st.regs.iter().position(|r| r.start == addr / PAGE * PAGE) else {
            return Err(MirrorError::NoEnt);
        };
        let r = &st.regs[i];
        if r.inflight > 0 || r.busy || st.lock.is_some_and(|h| h != me) {
            return Ok(None);
        }
        let r = st.regs.remove(i);
        st.zap(r.start, r.end, true);
        drop(st);
        for (_, f) in r.pins {
            phys.unpin(f);
        }
        mm.notifier
            .remove_prepare(&r.iv)
            .map(Some)
            .map_err(MirrorError::Notifier)
    }
}

/// Most pages one registration covers.
pub const MAX_REG_PAGES: u64 = 64;

/// The start of a registration-cache device access.
#[derive(Debug)]
pub enum Access {
    /// In flight: access `frame`, then call [`Mirror::access_end`] with `reg`.
    Go {
        /// The registration.
        reg: u64,
        /// The pinned frame of the page.
        frame: FrameId,
    },
    /// The registration was invalidated: run this fault to pin it again,
    /// then begin again.
    Revalidate(Fault),
    /// The driver lock is held, or another thread is revalidating.
    Blocked,
    /// Failed.
    Err(MirrorError),
}

/// One item of deferred work being run.
#[derive(Debug)]
pub struct Deferred {
    item: Option<Item>,
    removing: Option<RemoveWait>,
}

/// The result of one step of deferred work.
#[derive(Debug)]
pub enum DeferredStep {
    /// A step was taken.
    Progress,
    /// Waiting for the driver lock or for an interval removal.
    Blocked,
    /// Finished; an error is a misuse of the notifier API by the driver.
    Done(Result<&'static str, MirrorError>),
}

impl Deferred {
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
        let mut st = lock(&m.state);
        // The work changes what faults look up: it takes the driver lock,
        // which a fault holds from commit to install.
        if st.lock.is_some() {
            self.item = Some(item);
            return DeferredStep::Blocked;
        }
        let iv = match item {
            Item::OdpDestroy { base, gen, iv } => {
                let size = match m.strategy {
                    Strategy::OdpImplicit { chunk_shift } => 1u64 << chunk_shift,
                    _ => 0,
                };
                let unused = !st.maps_any(base, base.saturating_add(size));
                if m.cb.planted(PlantedBug::OdpDestroyTwice) {
                    st.chunks.remove(&base);
                } else {
                    let current = st
                        .chunks
                        .get(&base)
                        .is_some_and(|c| c.gen == gen && c.users == 0);
                    if !(current && unused) {
                        return DeferredStep::Done(Ok("chunk still in use"));
                    }
                    st.chunks.remove(&base);
                }
                iv
            }
            Item::VmaUpdate { iv } => {
                let Some(i) = st.tracked.iter().position(|t| t.iv.id() == iv.id()) else {
                    return DeferredStep::Done(Ok("already updated"));
                };
                let t = st.tracked.remove(i);
                // The pieces still mapped get intervals of their own first,
                // so that no invalidation of them finds nobody.
                let mut pieces = vec![(t.start, t.end)];
                for (hs, he) in t.holes {
                    pieces = pieces
                        .into_iter()
                        .flat_map(|(s, e)| {
                            let mut out = Vec::new();
                            if s < hs.min(e) {
                                out.push((s, hs.min(e)));
                            }
                            if he.max(s) < e {
                                out.push((he.max(s), e));
                            }
                            out
                        })
                        .collect();
                }
                for (s, e) in pieces {
                    if let Ok(iv) = mm.notifier.insert(s, e - s, interval_ops(m.cb.clone())) {
                        st.tracked.push(Tracked {
                            iv,
                            start: s,
                            end: e,
                            deferred: false,
                            holes: Vec::new(),
                        });
                    }
                }
                iv
            }
        };
        drop(st);
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
    if let RemoveWait::Wait(sw) = &w {
        if !mm.notifier.wait_is_ready(sw) {
            return Some(w);
        }
    }
    mm.notifier.remove_finish(w);
    None
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
    // PerFault: the interval is ours to remove.
    temp: bool,
    // ODP: the chunk we hold a use of.
    chunk: Option<u64>,
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

    fn pin(reg: u64, start: u64, end: u64, write: bool) -> Fault {
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
            temp: false,
            chunk: None,
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

    fn retry(&mut self, m: &Mirror, phys: &mut Phys) {
        self.retries += 1;
        self.state = State::Begin;
        self.unpin(phys);
        // A VMA interval may have gone on the deferred list meanwhile:
        // look again.
        if m.strategy == Strategy::VmaTracking {
            self.iv = None;
        }
    }

    fn unpin(&mut self, phys: &mut Phys) {
        if self.reg.is_some() {
            for (f, _) in self.samples.drain(..) {
                phys.unpin(f);
            }
        }
        self.samples.clear();
    }

    fn fail(&mut self, e: MirrorError, m: &Mirror, mm: &Mm, phys: &mut Phys) -> FaultStep {
        self.unpin(phys);
        self.failed = Some(e);
        if let Some(id) = self.reg {
            let mut st = lock(&m.state);
            if let Some(r) = st.regs.iter_mut().find(|r| r.id == id) {
                r.busy = false;
            }
        }
        self.finish_or_remove(m, mm);
        FaultStep::Progress
    }

    /// Finds or creates the interval to read_begin on.
    fn interval(&mut self, m: &Mirror, mm: &Mm) -> Result<Interval, MirrorError> {
        if let Some(iv) = &self.iv {
            return Ok(iv.clone());
        }
        if let Some(id) = self.reg {
            let st = lock(&m.state);
            return st
                .regs
                .iter()
                .find(|r| r.id == id)
                .map(|r| r.iv.clone())
                .ok_or(MirrorError::NoEnt);
        }
        let ops = || interval_ops(m.cb.clone());
        match m.strategy {
            Strategy::FullVa => Ok(m.full.clone().expect("opened with an interval")),
            Strategy::PerFault => {
                let iv = mm
                    .notifier
                    .insert(self.addr, PAGE, ops())
                    .map_err(MirrorError::Notifier)?;
                self.temp = true;
                Ok(iv)
            }
            Strategy::OdpImplicit { chunk_shift } => {
                let size = 1u64 << chunk_shift;
                let base = self.addr & !(size - 1);
                let mut st = lock(&m.state);
                if let Some(c) = st.chunks.get_mut(&base) {
                    c.users += 1;
                    self.chunk = Some(base);
                    return Ok(c.iv.clone());
                }
                let len = size.min(mm.config.task_size.saturating_sub(base));
                if len == 0 {
                    return Err(MirrorError::Segv(mm::MmError::Fault));
                }
                let iv = mm
                    .notifier
                    .insert(base, len, ops())
                    .map_err(MirrorError::Notifier)?;
                let gen = st.next_gen;
                st.next_gen += 1;
                st.chunks.insert(
                    base,
                    Chunk {
                        iv: iv.clone(),
                        gen,
                        users: 1,
                    },
                );
                self.chunk = Some(base);
                Ok(iv)
            }
            Strategy::VmaTracking => {
                let stale_ok = m.cb.planted(PlantedBug::VmaDeferredInterval);
                let mut st = lock(&m.state);
                if let Some(t) = st.tracked.iter().find(|t| {
                    (stale_ok || !t.deferred) && t.start <= self.addr && self.addr < t.end
                }) {
                    return Ok(t.iv.clone());
                }
                let v = mm
                    .vma_at(self.addr)
                    .copied()
                    .ok_or(MirrorError::Segv(mm::MmError::Fault))?;
                let iv = mm
                    .notifier
                    .insert(v.start, v.end - v.start, ops())
                    .map_err(MirrorError::Notifier)?;
                st.tracked.push(Tracked {
                    iv: iv.clone(),
                    start: v.start,
                    end: v.end,
                    deferred: false,
                    holes: Vec::new(),
                });
                Ok(iv)
            }
            Strategy::RegistrationCache => Err(MirrorError::Inval),
        }
    }

    /// Whether the device may map the huge CPU page around `addr` with one
    /// entry: its interval must cover the 2 MiB whole.
    fn can_map_huge(&self, mm: &Mm) -> bool {
        let base = self.addr / HUGE * HUGE;
        self.reg.is_none()
            && mm.is_huge(base)
            && self
                .iv
                .as_ref()
                .is_some_and(|iv| iv.start() <= base && iv.last() >= base + (HUGE - 1))
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
        // The mm is gone (mmget_not_zero fails): the fault must unwind its
        // state (chunk use, busy registration, temporary interval), never
        // be dropped half-way.
        if mm.exited && matches!(self.state, State::Begin | State::Waiting(_) | State::Walk) {
            self.state = State::Begin;
            return self.fail(MirrorError::Segv(mm::MmError::Exited), m, mm, phys);
        }
        match std::mem::replace(&mut self.state, State::Done) {
            State::Begin => {
                if !self.counted {
                    self.counted = true;
                    lock(&m.state).faults += 1;
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
                let mine = m.owner.0;
                let device_ok = m.strategy != Strategy::RegistrationCache;
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
                self.unpin(phys);
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
                            self.unpin(phys);
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
                            self.retry(m, phys);
                            return FaultStep::Progress;
                        }
                    }
                    page = page.saturating_add(PAGE);
                }
                self.huge = self.can_map_huge(mm);
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
                    self.retry(m, phys);
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
                // read_retry cannot see an interval that the driver's own
                // deferred work took out of the tree meanwhile: a PTE
                // installed under it would never be invalidated.
                if iv.read_retry(self.seq) || !m.cb.interval_live(&lock(&m.state), iv) {
                    if !unlocked {
                        lock(&m.state).lock = None;
                    }
                    self.retry(m, phys);
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
                let out = if let Some(id) = self.reg {
                    let samples = std::mem::take(&mut self.samples);
                    let old;
                    if let Some(r) = st.regs.iter_mut().find(|r| r.id == id) {
                        let pins: Vec<(u64, FrameId)> = samples
                            .iter()
                            .enumerate()
                            .map(|(i, s)| (r.start + i as u64 * PAGE, s.0))
                            .collect();
                        old = std::mem::replace(&mut r.pins, pins);
                        r.valid = true;
                        r.busy = false;
                        let w = r.write;
                        let (start, end) = (r.start, r.end);
                        st.zap(start, end, true);
                        for (i, (f, writable)) in samples.into_iter().enumerate() {
                            st.dpt
                                .insert(start + i as u64 * PAGE, DevPte::small(f, writable && w));
                        }
                    } else {
                        old = samples.into_iter().map(|(f, _)| (0, f)).collect();
                    }
                    st.lock = None;
                    drop(st);
                    for (_, f) in old {
                        phys.unpin(f);
                    }
                    self.finish_or_remove(m, mm);
                    return FaultStep::Progress;
                } else if self.huge {
                    let (frame, writable) = self.samples[0];
                    let base = self.addr / HUGE * HUGE;
                    st.zap(base, base + HUGE, true);
                    st.dpt.insert(
                        base,
                        DevPte {
                            frame,
                            write: writable,
                            atomic: false,
                            huge: true,
                        },
                    );
                    FrameId(frame.0 + ((self.addr - base) / PAGE) as u32)
                } else {
                    let (frame, writable) = self.samples[0];
                    st.zap(self.addr, self.end, true);
                    st.dpt.insert(self.addr, DevPte::small(frame, writable));
                    frame
                };
                st.lock = None;
                drop(st);
                self.samples.clear();
                self.finish_or_remove(m, mm);
                FaultStep::Installed(out)
            }
            State::Removing(w) => match finish_remove(mm, w) {
                Some(w) => {
                    self.state = State::Removing(w);
                    FaultStep::Blocked(FaultBlock::Remove)
                }
                None => self.finished(),
            },
            State::Done => self.finished(),
        }
    }

    fn finished(&mut self) -> FaultStep {
        self.state = State::Done;
        FaultStep::Done(self.failed.take().map_or(Ok(()), Err))
    }

    // PerFault drops its temporary interval (removal may have to wait);
    // ODP lets go of its chunk; a failed new registration goes away.
    fn finish_or_remove(&mut self, m: &Mirror, mm: &Mm) {
        let iv = self.iv.take();
        if let (Some(base), Strategy::OdpImplicit { chunk_shift }) = (self.chunk.take(), m.strategy)
        {
            let mut st = lock(&m.state);
            let empty = !st.maps_any(base, base.saturating_add(1u64 << chunk_shift));
            if let Some(c) = st.chunks.get_mut(&base) {
                c.users -= 1;
                if c.users == 0 && empty {
                    let item = Item::OdpDestroy {
                        base,
                        gen: c.gen,
                        iv: c.iv.clone(),
                    };
                    st.work.push_back(item);
                }
            }
        }
        let mut temp = iv.filter(|_| self.temp);
        if let (Some(id), true) = (self.reg, self.failed.is_some()) {
            let mut st = lock(&m.state);
            if let Some(i) = st.regs.iter().position(|r| r.id == id && r.pins.is_empty()) {
                temp = Some(st.regs.remove(i).iv);
            }
        }
        self.state = match temp {
            Some(iv) => match mm.notifier.remove_prepare(&iv) {
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
