//! The per-address-space state: interval tree, global seq, active count,
//! deferred list and wait queue, all under one short lock.

use std::cell::Cell;
use std::fmt;
use std::sync::Arc;

use crate::sync::{AtomicU64, AtomicU8, Condvar, Mutex, MutexGuard, Ordering};

use crate::error::{Culprit, Error, InvalidateError};
use crate::itree::{Handle, IntervalTree};
use crate::planted::PlantedBug;
use crate::range::{Event, Range};

/// Identifies an interval within its address space; assigned at insert, never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IntervalId(pub u64);

impl fmt::Display for IntervalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// Identifies a classic subscriber within its address space.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClassicId(pub u64);

impl fmt::Display for ClassicId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "c#{}", self.0)
    }
}

/// The driver side of an interval: the `invalidate` callback, or its
/// two-pass form.
pub trait IntervalOps: Send + Sync {
    /// Called for every invalidation that overlaps the interval, with the
    /// core lock dropped. The callback takes the driver lock, calls
    /// [`Interval::set_seq`]`(cur_seq)`, tears down device mappings in the
    /// range and unlocks. It may return false only when `!range.blockable`
    /// and it would have to sleep.
    fn invalidate(&self, interval: &Interval, range: &Range, cur_seq: u64) -> bool;

    /// The two-pass form (the kernel's `invalidate_start`, 2026): what the
    /// core actually calls. It does what [`IntervalOps::invalidate`] does,
    /// but may leave the last part of the teardown (waiting for a device
    /// TLB flush it issued) to a [`Finish`]: the core runs every collected
    /// finish after walking all overlapping intervals and before
    /// `invalidate_range_start` returns, so that flushes overlap. The
    /// device may use the old pages until its finish ran. The default is
    /// one pass: [`IntervalOps::invalidate`], with nothing to finish.
    fn invalidate_start(&self, interval: &Interval, range: &Range, cur_seq: u64) -> Start {
        if self.invalidate(interval, range, cur_seq) {
            Start::Done
        } else {
            Start::Refused
        }
    }
}

/// The second pass of a two-pass interval callback. Runs like a callback:
/// blocking calls of the core from it fail with [`Error::InCallback`].
pub type Finish = Box<dyn FnOnce() + Send>;

/// What the first pass of an interval callback returns.
pub enum Start {
    /// The teardown is complete.
    Done,
    /// The rest of the teardown, run after the walk.
    Finish(Finish),
    /// Refused: allowed only when `!range.blockable`. The finishes already
    /// collected still run; then the core ends its part.
    Refused,
}

impl Start {
    /// Completes the call in one pass: runs the finish now, if any, and
    /// says whether the call accepted. What a two-pass
    /// [`IntervalOps::invalidate`] does with its own `invalidate_start`.
    pub fn finish_now(self) -> bool {
        match self {
            Start::Done => true,
            Start::Finish(f) => {
                f();
                true
            }
            Start::Refused => false,
        }
    }
}

impl fmt::Debug for Start {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Start::Done => "Done",
            Start::Finish(_) => "Finish",
            Start::Refused => "Refused",
        })
    }
}

impl<F> IntervalOps for F
where
    F: Fn(&Interval, &Range, u64) -> bool + Send + Sync,
{
    fn invalidate(&self, interval: &Interval, range: &Range, cur_seq: u64) -> bool {
        self(interval, range, cur_seq)
    }
}

/// A classic (whole address space) subscriber: sees every invalidation,
/// after the intervals.
pub trait ClassicOps: Send + Sync {
    /// Start of an invalidation. May return false only when the range is not blockable.
    fn invalidate_range_start(&self, _range: &Range) -> bool {
        true
    }
    /// End of an invalidation whose start this subscriber accepted.
    fn invalidate_range_end(&self, _range: &Range) {}
    /// The address space is exiting.
    fn release(&self) {}
}

/// Configuration of one address space's notifier core.
#[derive(Clone, Debug)]
pub struct Config {
    /// The initial global seq; must be even. Set near `u64::MAX` to test wrap-around.
    pub initial_seq: u64,
    /// Exclusive top of the address space (the kernel's `TASK_SIZE`).
    pub task_size: u64,
    /// The planted bug to enable, if any. Present in every build so that a
    /// crate constructing a `Config` compiles whatever feature set Cargo
    /// unifies; the core only reads it with the `planted-bugs` feature.
    pub planted: Option<PlantedBug>,
    /// Behave as Linux does today when a classic subscriber refuses a
    /// non-blockable start after the intervals accepted it: the interval
    /// part is not rolled back, so the global seq stays odd and `active`
    /// stays raised (DESIGN.md §2). Off by default: the core keeps the fix.
    /// On, it lets the fuzzer show what the kernel's hole leads to.
    pub kernel_compat: bool,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            initial_seq: 2,
            task_size: u64::MAX,
            planted: None,
            kernel_compat: false,
        }
    }
}

/// Where an interval is in its life, as seen by the core.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Phase {
    /// In the tree.
    InTree,
    /// On the deferred list, waiting to enter the tree at the final end.
    PendingInsert,
    /// In the tree and queued for removal at the final end.
    PendingRemove,
    /// Gone; no callback will run again.
    Removed,
}

impl Phase {
    fn from_u8(v: u8) -> Phase {
        match v {
            0 => Phase::InTree,
            1 => Phase::PendingInsert,
            2 => Phase::PendingRemove,
            _ => Phase::Removed,
        }
    }
}

struct IntervalInner {
    id: IntervalId,
    owner: u64,
    start: u64,
    last: u64,
    seq: AtomicU64,
    // Both written only under the core lock; atomics just make that safe.
    phase: AtomicU8,
    handle: AtomicU64,
    ops: Arc<dyn IntervalOps>,
    // Planted SetSeqDedup: the cycle of the last stored set_seq, if on.
    #[cfg(feature = "planted-bugs")]
    dedup: Option<AtomicU64>,
}

/// A subscription to invalidations of `[start, last]`. Cheap to clone; all
/// clones name the same interval.
#[derive(Clone)]
pub struct Interval {
    inner: Arc<IntervalInner>,
}

impl fmt::Debug for Interval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Interval")
            .field("id", &self.inner.id)
            .field("start", &format_args!("{:#x}", self.inner.start))
            .field("last", &format_args!("{:#x}", self.inner.last))
            .field("seq", &self.inner.seq.load(Ordering::Relaxed))
            .field("phase", &self.phase())
            .finish()
    }
}

// The interval whose callback this thread is running, innermost last.
crate::sync::thread_local_const! {
    static IN_CALLBACK: Cell<Option<(u64, IntervalId)>> = Cell::new(None);
    static CALLBACK_DEPTH: Cell<u32> = Cell::new(0);
}

struct CallbackScope {
    prev: Option<(u64, IntervalId)>,
}

impl CallbackScope {
    fn enter(current: Option<(u64, IntervalId)>) -> CallbackScope {
        CALLBACK_DEPTH.with(|d| d.set(d.get() + 1));
        CallbackScope {
            prev: IN_CALLBACK.with(|c| c.replace(current)),
        }
    }
}

impl Drop for CallbackScope {
    fn drop(&mut self) {
        IN_CALLBACK.with(|c| c.set(self.prev));
        CALLBACK_DEPTH.with(|d| d.set(d.get() - 1));
    }
}

/// True while this thread runs an invalidate callback (interval or classic).
pub fn in_callback() -> bool {
    CALLBACK_DEPTH.with(|d| d.get() > 0)
}

impl Interval {
    /// This interval's id.
    pub fn id(&self) -> IntervalId {
        self.inner.id
    }

    /// First byte covered.
    pub fn start(&self) -> u64 {
        self.inner.start
    }

    /// Last byte covered (inclusive).
    pub fn last(&self) -> u64 {
        self.inner.last
    }

    /// Where the interval is in its life.
    pub fn phase(&self) -> Phase {
        Phase::from_u8(self.inner.phase.load(Ordering::Relaxed))
    }

    /// Records that this interval has been invalidated in cycle `cur_seq`.
    /// Only the interval's own invalidate callback may call it, under the
    /// driver lock that `read_retry` is also called under.
    pub fn set_seq(&self, cur_seq: u64) -> Result<(), Error> {
        let me = (self.inner.owner, self.inner.id);
        if IN_CALLBACK.with(|c| c.get()) != Some(me) {
            return Err(Error::SetSeqOutsideCallback(self.inner.id));
        }
        #[cfg(feature = "planted-bugs")]
        if let Some(last) = &self.inner.dedup {
            let prev = last.load(Ordering::Relaxed);
            last.store(cur_seq, Ordering::Relaxed);
            if prev == cur_seq.wrapping_sub(2) {
                return Ok(());
            }
        }
        self.inner.seq.store(cur_seq, Ordering::Release);
        Ok(())
    }

    /// True if an invalidation hit the interval since the `read_begin` that
    /// returned `seq`: the caller must drop what it found and retry. Call it
    /// under the driver lock that the callback takes.
    #[inline]
    pub fn read_retry(&self, seq: u64) -> bool {
        self.inner.seq.load(Ordering::Acquire) != seq
    }

    /// The same test as [`Interval::read_retry`] without the driver lock: a
    /// true answer is reliable, a false one only a hint.
    #[inline]
    pub fn check_retry(&self, seq: u64) -> bool {
        self.inner.seq.load(Ordering::Acquire) != seq
    }

    /// The raw interval seq; for reports and oracles.
    pub fn seq(&self) -> u64 {
        self.inner.seq.load(Ordering::Acquire)
    }

    fn set_phase(&self, p: Phase) {
        self.inner.phase.store(p as u8, Ordering::Relaxed);
    }

    fn handle(&self) -> Handle {
        Handle::from_raw(self.inner.handle.load(Ordering::Relaxed) as u32)
    }
}

/// A pending tree change, applied in order at the final invalidate end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deferred {
    /// The interval enters the tree.
    Insert(IntervalId),
    /// The interval leaves the tree.
    Remove(IntervalId),
}

struct ClassicSub {
    id: ClassicId,
    ops: Arc<dyn ClassicOps>,
    released: bool,
}

struct State {
    seq: u64,
    active: u64,
    tree: IntervalTree<Interval>,
    deferred: Vec<(Deferred, Interval)>,
    classic: Vec<ClassicSub>,
    released: bool,
    next_id: u64,
    waiters: u64,
    // Interval ends run so far (planted RemoveWaitsOneEnd waits for one).
    ends: u64,
}

impl State {
    fn invalidating(&self) -> bool {
        self.seq & 1 == 1
    }
}

/// A point-in-time view of the core, for oracles and reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Global seq.
    pub seq: u64,
    /// Invalidations in progress.
    pub active: u64,
    /// Intervals in the tree as `(id, start, last)`, in ascending (start, id).
    pub tree: Vec<(IntervalId, u64, u64)>,
    /// The deferred list, in order.
    pub deferred: Vec<Deferred>,
    /// Registered classic subscribers that have not been released.
    pub classic: Vec<ClassicId>,
    /// Whether `release` has run.
    pub released: bool,
    /// Threads blocked in the blocking forms of read_begin or remove.
    pub waiters: u64,
}

/// The result of [`Subscriptions::read_begin_prepare`].
#[derive(Debug)]
#[must_use]
pub enum ReadBegin {
    /// No wait needed: this is the seq to pass to `read_retry`.
    Ready(u64),
    /// The interval is being invalidated in the current cycle.
    Wait(SeqWait),
}

/// A wait for the global seq to move past a value; completes a split-phase
/// read_begin or remove.
#[derive(Debug, PartialEq, Eq)]
#[must_use]
pub struct SeqWait {
    seq: u64,
    // Planted RemoveWaitsOneEnd: a remove's wait also ends with the next
    // interval end after this count.
    ends: Option<u64>,
}

impl SeqWait {
    /// The global seq value the wait is waiting to see change.
    pub fn seq(&self) -> u64 {
        self.seq
    }
}

/// The result of [`Subscriptions::remove_prepare`].
#[derive(Debug)]
#[must_use]
pub enum RemoveWait {
    /// The interval is gone already.
    Done,
    /// Its removal is deferred to the end of the current cycle.
    Wait(SeqWait),
}

/// An invalidation that `invalidate_range_start` accepted. Pass it to
/// [`Subscriptions::invalidate_range_end`].
#[derive(Debug)]
#[must_use = "an accepted invalidation must be ended"]
pub struct Invalidation {
    range: Range,
    owner: u64,
    cur_seq: u64,
    hit: bool,
    classic: Vec<ClassicId>,
}

impl Invalidation {
    /// The range being invalidated.
    pub fn range(&self) -> &Range {
        &self.range
    }

    /// The global seq when the invalidation started (odd if it hit an interval).
    pub fn cur_seq(&self) -> u64 {
        self.cur_seq
    }

    /// Whether any interval overlapped the range.
    pub fn hit(&self) -> bool {
        self.hit
    }
}

// An id, not protocol state: std's atomic (a loom one cannot be static).
static NEXT_OWNER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// The notifier core of one address space (the kernel's
/// `mmu_notifier_subscriptions`). `Send + Sync`; share it with an `Arc`.
pub struct Subscriptions {
    owner: u64,
    config: Config,
    state: Mutex<State>,
    wq: Condvar,
}

impl fmt::Debug for Subscriptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscriptions")
            .field("snapshot", &self.snapshot())
            .finish()
    }
}

impl Subscriptions {
    /// A new, idle core.
    pub fn new(config: Config) -> Result<Subscriptions, Error> {
        if config.initial_seq & 1 == 1 {
            return Err(Error::OddInitialSeq(config.initial_seq));
        }
        // Release invalidates [0, task_size): it must not be empty.
        if config.task_size < crate::PAGE_SIZE {
            return Err(Error::TaskSizeTooSmall(config.task_size));
        }
        Ok(Subscriptions {
            owner: NEXT_OWNER.fetch_add(1, Ordering::Relaxed),
            state: Mutex::new(State {
                seq: config.initial_seq,
                active: 0,
                tree: {
                    #[allow(unused_mut)]
                    let mut tree = IntervalTree::new();
                    #[cfg(feature = "planted-bugs")]
                    if config.planted == Some(PlantedBug::DeepFixupStale) {
                        // A path stack of eight levels: AVL trees of up
                        // to 87 intervals never fill it.
                        tree.plant_fixup_depth(8);
                    }
                    tree
                },
                deferred: Vec::new(),
                classic: Vec::new(),
                released: false,
                next_id: 0,
                waiters: 0,
                ends: 0,
            }),
            config,
            wq: Condvar::new(),
        })
    }

    /// The configuration this core was built with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    #[inline]
    fn planted(&self, bug: PlantedBug) -> bool {
        #[cfg(feature = "planted-bugs")]
        {
            self.config.planted == Some(bug)
        }
        #[cfg(not(feature = "planted-bugs"))]
        {
            let _ = bug;
            false
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        crate::cost::one(crate::cost::Metric::NotifierLock);
        // A panicking callback never runs under this lock, so poisoning only
        // follows a panic inside the core itself; keep going for the report.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn check_owner(&self, iv: &Interval) -> Result<(), Error> {
        if iv.inner.owner != self.owner {
            return Err(Error::NotRegistered(iv.inner.id));
        }
        Ok(())
    }

    /// Subscribes to invalidations of `[start, start + length - 1]`. Never blocks.
    pub fn insert(
        &self,
        start: u64,
        length: u64,
        ops: Arc<dyn IntervalOps>,
    ) -> Result<Interval, Error> {
        if length == 0 {
            return Err(Error::ZeroLength);
        }
        let last = start
            .checked_add(length - 1)
            .filter(|&l| l < self.config.task_size)
            .ok_or(Error::Overflow { start, length })?;
        let mut st = self.lock();
        if st.released {
            return Err(Error::Released);
        }
        let id = IntervalId(st.next_id);
        st.next_id += 1;
        let iv = Interval {
            inner: Arc::new(IntervalInner {
                id,
                owner: self.owner,
                start,
                last,
                seq: AtomicU64::new(0),
                phase: AtomicU8::new(Phase::InTree as u8),
                handle: AtomicU64::new(0),
                ops,
                #[cfg(feature = "planted-bugs")]
                dedup: self
                    .planted(PlantedBug::SetSeqDedup)
                    .then(|| AtomicU64::new(u64::MAX)),
            }),
        };
        let seq = if st.active == 0 {
            debug_assert!(!st.invalidating());
            // Odd, so never equal to an idle global seq.
            self.tree_insert(&mut st, &iv);
            st.seq.wrapping_sub(1)
        } else if !st.invalidating() {
            // The running invalidation may cover this range without having
            // called it: make the first read_begin wait for the cycle end.
            if !self.planted(PlantedBug::InsertNoMakeOdd) {
                st.seq |= 1;
            }
            self.tree_insert(&mut st, &iv);
            self.active_insert_seq(st.seq)
        } else {
            iv.set_phase(Phase::PendingInsert);
            st.deferred.push((Deferred::Insert(id), iv.clone()));
            self.active_insert_seq(st.seq)
        };
        iv.inner.seq.store(seq, Ordering::Release);
        Ok(iv)
    }

    fn active_insert_seq(&self, global: u64) -> u64 {
        if self.planted(PlantedBug::InsertEvenSeq) {
            global.wrapping_sub(1) & !1
        } else {
            global
        }
    }

    fn tree_insert(&self, st: &mut State, iv: &Interval) {
        let h = st
            .tree
            .insert(iv.inner.start, iv.inner.last, iv.inner.id.0, iv.clone());
        iv.inner.handle.store(h.raw() as u64, Ordering::Relaxed);
        iv.set_phase(Phase::InTree);
        crate::cost::one(crate::cost::Metric::Inserted);
        crate::cost::gauge(crate::cost::Metric::PeakIntervals, st.tree.len() as u64);
    }

    /// First half of a split-phase remove. After `Done`, or after the wait
    /// is ready and [`Subscriptions::remove_finish`] ran, no callback of the
    /// interval runs now or ever again.
    pub fn remove_prepare(&self, iv: &Interval) -> Result<RemoveWait, Error> {
        self.check_owner(iv)?;
        if in_callback() {
            return Err(Error::InCallback);
        }
        let mut st = self.lock();
        match iv.phase() {
            Phase::PendingRemove | Phase::Removed => Err(Error::NotRegistered(iv.inner.id)),
            Phase::PendingInsert => {
                debug_assert!(st.invalidating());
                let id = iv.inner.id;
                st.deferred
                    .retain(|(d, _)| !matches!(d, Deferred::Insert(x) if *x == id));
                iv.set_phase(Phase::Removed);
                Ok(RemoveWait::Done)
            }
            Phase::InTree if st.invalidating() => {
                iv.set_phase(Phase::PendingRemove);
                st.deferred
                    .push((Deferred::Remove(iv.inner.id), iv.clone()));
                if self.planted(PlantedBug::RemoveEarly) {
                    return Ok(RemoveWait::Done);
                }
                Ok(RemoveWait::Wait(SeqWait {
                    seq: st.seq,
                    ends: Some(st.ends),
                }))
            }
            Phase::InTree => {
                st.tree.remove(iv.handle());
                crate::cost::one(crate::cost::Metric::Removed);
                iv.set_phase(Phase::Removed);
                Ok(RemoveWait::Done)
            }
        }
    }

    /// Whether a split-phase wait may complete now.
    pub fn wait_is_ready(&self, w: &SeqWait) -> bool {
        self.wait_over(&self.lock(), w)
    }

    fn wait_over(&self, st: &State, w: &SeqWait) -> bool {
        st.seq != w.seq
            || (self.planted(PlantedBug::RemoveWaitsOneEnd) && w.ends.is_some_and(|e| st.ends != e))
    }

    /// Completes a split-phase remove whose wait is ready.
    pub fn remove_finish(&self, w: RemoveWait) {
        if let RemoveWait::Wait(w) = w {
            debug_assert!(self.wait_is_ready(&w), "remove_finish before ready");
        }
    }

    /// Removes the interval, waiting for the current invalidation cycle if
    /// the interval is in it. Must not be called from a callback.
    pub fn remove(&self, iv: &Interval) -> Result<(), Error> {
        match self.remove_prepare(iv)? {
            RemoveWait::Done => Ok(()),
            RemoveWait::Wait(w) => {
                self.wait(&w);
                Ok(())
            }
        }
    }

    /// Blocks until a split-phase wait is ready (what the blocking
    /// `read_begin` and `remove` do after their prepare): for a driver
    /// that runs a split-phase operation on a real thread.
    pub fn wait_ready(&self, w: &SeqWait) {
        self.wait(w)
    }

    fn wait(&self, w: &SeqWait) {
        let mut st = self.lock();
        st.waiters += 1;
        while !self.wait_over(&st, w) {
            st = self.wq.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        st.waiters -= 1;
    }

    /// First half of a split-phase read_begin.
    pub fn read_begin_prepare(&self, iv: &Interval) -> Result<ReadBegin, Error> {
        self.check_owner(iv)?;
        if in_callback() {
            return Err(Error::InCallback);
        }
        if iv.phase() == Phase::Removed {
            return Err(Error::NotRegistered(iv.inner.id));
        }
        let st = self.lock();
        if self.planted(PlantedBug::ReadBeginUnlocked) {
            // Two critical sections where one is needed: a cycle can start
            // and set this interval's seq in between.
            let global = st.seq;
            drop(st);
            let seq = iv.inner.seq.load(Ordering::Relaxed);
            return Ok(if seq == global {
                ReadBegin::Wait(SeqWait { seq, ends: None })
            } else {
                ReadBegin::Ready(seq)
            });
        }
        let seq = iv.inner.seq.load(Ordering::Acquire);
        if seq == st.seq {
            Ok(ReadBegin::Wait(SeqWait { seq, ends: None }))
        } else {
            Ok(ReadBegin::Ready(seq))
        }
    }

    /// Completes a split-phase read_begin whose wait is ready; returns the seq
    /// for `read_retry`. The wait does not loop: `read_retry` may already be
    /// true.
    pub fn read_begin_finish(&self, w: SeqWait) -> u64 {
        debug_assert!(self.wait_is_ready(&w), "read_begin_finish before ready");
        w.seq
    }

    /// Begins a read-side critical section on `iv`, waiting if the interval
    /// is being invalidated in the current cycle. Returns the seq to pass to
    /// [`Interval::read_retry`].
    pub fn read_begin(&self, iv: &Interval) -> Result<u64, Error> {
        match self.read_begin_prepare(iv)? {
            ReadBegin::Ready(s) => Ok(s),
            ReadBegin::Wait(w) => {
                self.wait(&w);
                Ok(w.seq)
            }
        }
    }

    fn overlapping(&self, tree: &IntervalTree<Interval>, range: &Range) -> Vec<Interval> {
        let missed = self.planted(PlantedBug::LastPageMissed);
        tree.overlapping(range.start, range.last())
            .filter(|e| !missed || e.last != range.start)
            .map(|e| e.value.clone())
            .collect()
    }

    fn check_range(&self, range: &Range) -> Result<(), Error> {
        if range.start >= range.end || range.end > self.config.task_size {
            return Err(Error::BadRange {
                start: range.start,
                end: range.end,
            });
        }
        Ok(())
    }

    /// Starts invalidating `range`: counts it active, makes the seq odd if
    /// it hits an interval, then calls the interval callbacks (ascending
    /// start, then insertion order) and the classic subscribers, without the
    /// core lock. On error nothing is left running.
    pub fn invalidate_range_start(&self, range: &Range) -> Result<Invalidation, InvalidateError> {
        self.check_range(range).map_err(InvalidateError::Bad)?;
        crate::cost::one(crate::cost::Metric::Invalidations);
        let (cur_seq, hits, classic) = {
            let mut st = self.lock();
            st.active += 1;
            let hits = self.overlapping(&st.tree, range);
            if !hits.is_empty() {
                st.seq |= 1;
            }
            let classic: Vec<(ClassicId, Arc<dyn ClassicOps>)> = st
                .classic
                .iter()
                .filter(|c| !c.released)
                .map(|c| (c.id, c.ops.clone()))
                .collect();
            (st.seq, hits, classic)
        };
        let refuse = |c: Culprit| {
            if range.blockable {
                InvalidateError::ContractViolation(c)
            } else {
                InvalidateError::WouldBlock(c)
            }
        };
        if let Some(id) = self.call_intervals(&hits, range, cur_seq) {
            self.itree_inv_end();
            return Err(refuse(Culprit::Interval(id)));
        }
        for (i, (id, ops)) in classic.iter().enumerate() {
            let ok = {
                let _scope = CallbackScope::enter(None);
                ops.invalidate_range_start(range)
            };
            if !ok {
                for (_, done) in &classic[..i] {
                    let _scope = CallbackScope::enter(None);
                    done.invalidate_range_end(range);
                }
                // Linux's __mmu_notifier_invalidate_range_start returns the
                // hlist error without undoing mn_itree_invalidate.
                if !self.config.kernel_compat && !self.planted(PlantedBug::ClassicFailHangs) {
                    self.itree_inv_end();
                }
                return Err(refuse(Culprit::Classic(*id)));
            }
        }
        Ok(Invalidation {
            range: *range,
            owner: self.owner,
            cur_seq,
            hit: !hits.is_empty(),
            classic: classic.into_iter().map(|(id, _)| id).collect(),
        })
    }

    // Returns the first interval that refused, having skipped the rest.
    // The finishes collected run after the walk, refused or not.
    fn call_intervals(&self, hits: &[Interval], range: &Range, cur_seq: u64) -> Option<IntervalId> {
        let mut finishes: Vec<(IntervalId, Finish)> = Vec::new();
        let mut refused = None;
        for iv in hits {
            let start = {
                let _scope = CallbackScope::enter(Some((self.owner, iv.inner.id)));
                iv.inner.ops.invalidate_start(iv, range, cur_seq)
            };
            match start {
                Start::Done => {}
                Start::Finish(f) => finishes.push((iv.inner.id, f)),
                Start::Refused => {
                    refused = Some(iv.inner.id);
                    break;
                }
            }
        }
        if refused.is_some() && self.planted(PlantedBug::FinishSkippedOnRefusal) {
            finishes.clear();
        }
        for (id, finish) in finishes {
            let _scope = CallbackScope::enter(Some((self.owner, id)));
            finish();
        }
        refused
    }

    // The interval half of invalidate_range_end.
    fn itree_inv_end(&self) {
        let mut st = self.lock();
        debug_assert!(st.active > 0);
        st.active -= 1;
        st.ends += 1;
        if st.active != 0 || !st.invalidating() {
            if self.planted(PlantedBug::RemoveWaitsOneEnd) && st.waiters > 0 {
                drop(st);
                self.wq.notify_all();
            }
            return;
        }
        let woke_early = self.planted(PlantedBug::WakeBeforeSeq);
        if woke_early {
            // Waiters woken before the seq they wait on has moved go back
            // to sleep, and nobody wakes them again.
            drop(st);
            self.wq.notify_all();
            st = self.lock();
        }
        st.seq = st.seq.wrapping_add(1);
        if self.planted(PlantedBug::EndDeferredLate) {
            // The cycle looks over (a remove waiting on it returns) while
            // its deferred removals are not applied yet.
            let wake = st.waiters > 0;
            drop(st);
            if wake {
                self.wq.notify_all();
            }
            st = self.lock();
        }
        let deferred = std::mem::take(&mut st.deferred);
        for (d, iv) in deferred {
            match d {
                Deferred::Insert(_) => self.tree_insert(&mut st, &iv),
                Deferred::Remove(_) => {
                    st.tree.remove(iv.handle());
                    crate::cost::one(crate::cost::Metric::Removed);
                    iv.set_phase(Phase::Removed);
                }
            }
        }
        // Only blocking waiters sleep on the condvar, and each counts itself
        // under this lock before it sleeps: with none counted, a later one
        // sees the new seq and does not sleep. notify_all is a futex
        // syscall even with no one waiting, about half of a one-interval
        // start + end.
        let wake = st.waiters > 0 && !woke_early;
        drop(st);
        if wake {
            if self.planted(PlantedBug::WakeOne) {
                self.wq.notify_one();
            } else {
                self.wq.notify_all();
            }
        }
    }

    /// Ends an invalidation accepted by `invalidate_range_start`. The last
    /// end of a cycle makes the seq even, applies the deferred list and
    /// wakes every waiter; then the classic subscribers that accepted the
    /// start (and are still registered) see the end.
    pub fn invalidate_range_end(&self, inv: Invalidation) {
        assert_eq!(inv.owner, self.owner, "invalidation ended on another core");
        self.itree_inv_end();
        if inv.classic.is_empty() {
            return;
        }
        let classic: Vec<Arc<dyn ClassicOps>> = {
            let st = self.lock();
            inv.classic
                .iter()
                .filter_map(|id| {
                    st.classic
                        .iter()
                        .find(|c| c.id == *id && !c.released)
                        .map(|c| c.ops.clone())
                })
                .collect()
        };
        for ops in classic {
            let _scope = CallbackScope::enter(None);
            ops.invalidate_range_end(&inv.range);
        }
    }

    /// Registers a classic subscriber.
    pub fn register(&self, ops: Arc<dyn ClassicOps>) -> Result<ClassicId, Error> {
        let mut st = self.lock();
        if st.released {
            return Err(Error::Released);
        }
        let id = ClassicId(st.next_id);
        st.next_id += 1;
        st.classic.push(ClassicSub {
            id,
            ops,
            released: false,
        });
        Ok(id)
    }

    /// Unregisters a classic subscriber; fine after release.
    pub fn unregister(&self, id: ClassicId) -> Result<(), Error> {
        if in_callback() {
            return Err(Error::InCallback);
        }
        let mut st = self.lock();
        let pos = st
            .classic
            .iter()
            .position(|c| c.id == id)
            .ok_or(Error::UnknownClassic(id))?;
        st.classic.remove(pos);
        Ok(())
    }

    /// Process exit: one `Release` invalidation of the whole address space
    /// for the intervals (start, callbacks, end), then `release` for each
    /// classic subscriber. Intervals stay registered and still need remove.
    pub fn release(&self) -> Result<(), InvalidateError> {
        let has_classic = {
            let mut st = self.lock();
            if st.released {
                return Err(InvalidateError::Bad(Error::AlreadyReleased));
            }
            st.released = true;
            st.classic.iter().any(|c| !c.released)
        };
        let mut result = self.itree_release();
        if has_classic && self.planted(PlantedBug::ReleaseTwice) {
            result = result.and(self.itree_release());
        }
        let classic: Vec<Arc<dyn ClassicOps>> = {
            let mut st = self.lock();
            st.classic
                .iter_mut()
                .filter(|c| !c.released)
                .map(|c| {
                    c.released = true;
                    c.ops.clone()
                })
                .collect()
        };
        for ops in classic {
            let _scope = CallbackScope::enter(None);
            ops.release();
        }
        result
    }

    fn itree_release(&self) -> Result<(), InvalidateError> {
        let range = Range::new(0, self.config.task_size, Event::Release);
        let (cur_seq, hits) = {
            let mut st = self.lock();
            st.active += 1;
            let hits = self.overlapping(&st.tree, &range);
            if !hits.is_empty() {
                st.seq |= 1;
            }
            (st.seq, hits)
        };
        let refused = self.call_intervals(&hits, &range, cur_seq);
        self.itree_inv_end();
        match refused {
            Some(id) => Err(InvalidateError::ContractViolation(Culprit::Interval(id))),
            None => Ok(()),
        }
    }

    /// A consistent view of the core.
    pub fn snapshot(&self) -> Snapshot {
        let mut s = Snapshot::default();
        self.snapshot_into(&mut s);
        s
    }

    /// [`Subscriptions::snapshot`] into `out`, reusing its buffers; for
    /// oracles that compare after every step.
    pub fn snapshot_into(&self, out: &mut Snapshot) {
        let st = self.lock();
        out.seq = st.seq;
        out.active = st.active;
        out.tree.clear();
        out.tree
            .extend(st.tree.iter().map(|e| (e.value.inner.id, e.start, e.last)));
        out.deferred.clear();
        out.deferred.extend(st.deferred.iter().map(|(d, _)| *d));
        out.classic.clear();
        out.classic
            .extend(st.classic.iter().filter(|c| !c.released).map(|c| c.id));
        out.released = st.released;
        out.waiters = st.waiters;
    }

    /// Whether the global seq is odd: an invalidation that hit an interval is running.
    pub fn is_invalidating(&self) -> bool {
        self.lock().invalidating()
    }

    /// No invalidation running, seq even, deferred list empty.
    pub fn is_quiescent(&self) -> bool {
        let st = self.lock();
        st.active == 0 && !st.invalidating() && st.deferred.is_empty()
    }

    /// Number of intervals in the tree.
    pub fn tree_len(&self) -> usize {
        self.lock().tree.len()
    }

    /// Height of the interval tree (0 when empty). The fuzz targets take
    /// it as feedback: the shape of a balanced tree, not its size, decides
    /// how far an insert or remove walks.
    pub fn tree_height(&self) -> u32 {
        self.lock().tree.root_height()
    }
}
