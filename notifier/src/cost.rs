//! Counted costs (issue 16): how often the notifier, the mm and the device
//! mirrors do each expensive thing, so that strategies can be compared on
//! the same work.
//!
//! Counting is off until [`enable`] is called, and then counts into
//! per-thread counters, so concurrent runs (tests on other threads) never
//! mix. When off, every hook is one relaxed load of a static flag and a
//! branch that is never taken: the counters cost nothing measurable (the
//! mirror target's execs/s before and after are in docs/strategy-costs.md).
//!
//! The hooks are placed where the kernel would pay: nodes of the interval
//! tree touched, locks taken, intervals inserted and removed, callbacks
//! run, device PTEs zapped, TLB flushes issued. Gauges (peak intervals,
//! bytes of driver state) keep a maximum.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};

/// One counted cost.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(usize)]
pub enum Metric {
    /// Device faults handled (accesses that missed the device page table).
    Faults,
    /// Fault retries (read_retry or check_retry collisions, a commit the
    /// strategy refused).
    Retries,
    /// Interval-tree nodes visited by inserts and removes on the fault path.
    FaultTreeVisits,
    /// Entries the driver examined to find a fault's interval in its own
    /// lookup structure (a list scan counts each entry; a chunk-indexed
    /// lookup, an xarray in the kernel, counts one).
    FaultLookups,
    /// Interval-tree nodes visited by invalidations finding overlaps.
    InvalTreeVisits,
    /// Interval-tree nodes visited by inserts and removes outside faults
    /// (deferred work, set-attributes, open).
    WorkTreeVisits,
    /// Driver lock acquisitions (fault commit, callback, deferred work).
    DriverLock,
    /// Notifier (subscriptions) lock acquisitions.
    NotifierLock,
    /// mmap lock acquisitions, read or write.
    MmapLock,
    /// Intervals inserted.
    Inserted,
    /// Intervals removed from the tree.
    Removed,
    /// Items of deferred work queued.
    Deferred,
    /// Invalidations started (mm events that reached the notifier).
    Invalidations,
    /// Interval or classic callbacks run.
    Callbacks,
    /// Callbacks that found nothing of the device mapped in their range.
    Wasted,
    /// Device PTEs removed.
    Zapped,
    /// Device TLB flushes (a zap that removed at least one entry).
    TlbFlushes,
    /// Most intervals in one tree at once (a gauge).
    PeakIntervals,
    /// Most bytes of driver state at once (a gauge).
    StateBytes,
}

/// Number of metrics.
pub const METRICS: usize = 19;

impl Metric {
    /// Every metric, in column order.
    pub const ALL: [Metric; METRICS] = [
        Metric::Faults,
        Metric::Retries,
        Metric::FaultTreeVisits,
        Metric::FaultLookups,
        Metric::InvalTreeVisits,
        Metric::WorkTreeVisits,
        Metric::DriverLock,
        Metric::NotifierLock,
        Metric::MmapLock,
        Metric::Inserted,
        Metric::Removed,
        Metric::Deferred,
        Metric::Invalidations,
        Metric::Callbacks,
        Metric::Wasted,
        Metric::Zapped,
        Metric::TlbFlushes,
        Metric::PeakIntervals,
        Metric::StateBytes,
    ];

    /// Its key in tables and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Metric::Faults => "faults",
            Metric::Retries => "retries",
            Metric::FaultTreeVisits => "fault_tree_visits",
            Metric::FaultLookups => "fault_lookups",
            Metric::InvalTreeVisits => "inval_tree_visits",
            Metric::WorkTreeVisits => "work_tree_visits",
            Metric::DriverLock => "driver_lock",
            Metric::NotifierLock => "notifier_lock",
            Metric::MmapLock => "mmap_lock",
            Metric::Inserted => "inserted",
            Metric::Removed => "removed",
            Metric::Deferred => "deferred",
            Metric::Invalidations => "invalidations",
            Metric::Callbacks => "callbacks",
            Metric::Wasted => "wasted_callbacks",
            Metric::Zapped => "ptes_zapped",
            Metric::TlbFlushes => "tlb_flushes",
            Metric::PeakIntervals => "peak_intervals",
            Metric::StateBytes => "state_bytes",
        }
    }

    /// Looks a metric up by name.
    pub fn from_name(s: &str) -> Option<Metric> {
        Metric::ALL.into_iter().find(|m| m.name() == s)
    }

    /// Whether it keeps a maximum rather than a sum.
    pub fn is_gauge(self) -> bool {
        matches!(self, Metric::PeakIntervals | Metric::StateBytes)
    }
}

/// A set of counts, one per metric.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Counts(pub [u64; METRICS]);

impl Counts {
    /// The count of `m`.
    pub fn get(&self, m: Metric) -> u64 {
        self.0[m as usize]
    }
}

static ON: AtomicBool = AtomicBool::new(false);

thread_local! {
    static COUNTS: [Cell<u64>; METRICS] = const { [const { Cell::new(0) }; METRICS] };
    // Depth of fault scopes on this thread.
    static IN_FAULT: Cell<u32> = const { Cell::new(0) };
}

/// Turns counting on for the whole process (it stays on). Each thread
/// counts into its own counters.
pub fn enable() {
    ON.store(true, Ordering::Relaxed);
}

/// Whether counting is on.
#[inline(always)]
pub fn enabled() -> bool {
    ON.load(Ordering::Relaxed)
}

#[cold]
#[inline(never)]
fn add_slow(m: Metric, n: u64) {
    COUNTS.with(|c| {
        let c = &c[m as usize];
        c.set(c.get().wrapping_add(n));
    });
}

#[cold]
#[inline(never)]
fn max_slow(m: Metric, v: u64) {
    COUNTS.with(|c| {
        let c = &c[m as usize];
        c.set(c.get().max(v));
    });
}

/// Adds `n` to `m` on this thread, if counting is on.
#[inline(always)]
pub fn add(m: Metric, n: u64) {
    if enabled() {
        add_slow(m, n);
    }
}

/// Counts one of `m`.
#[inline(always)]
pub fn one(m: Metric) {
    add(m, 1);
}

/// Raises gauge `m` to `v` if higher.
#[inline(always)]
pub fn gauge(m: Metric, v: u64) {
    if enabled() {
        max_slow(m, v);
    }
}

#[cold]
#[inline(never)]
fn visit_slow(n: u64) {
    let m = if IN_FAULT.with(Cell::get) > 0 {
        Metric::FaultTreeVisits
    } else {
        Metric::WorkTreeVisits
    };
    add_slow(m, n);
}

/// Counts `n` interval-tree nodes visited by an insert or a remove: on the
/// fault path inside a [`FaultScope`], else as maintenance work.
#[inline(always)]
pub fn tree_visit(n: u64) {
    if enabled() {
        visit_slow(n);
    }
}

/// This thread's counts, which start again from zero.
pub fn take() -> Counts {
    COUNTS.with(|c| {
        let mut out = Counts::default();
        for (o, c) in out.0.iter_mut().zip(c.iter()) {
            *o = c.replace(0);
        }
        out
    })
}

/// While alive, tree maintenance on this thread is a fault's.
#[derive(Debug)]
pub struct FaultScope(());

impl FaultScope {
    /// Enters a fault (a no-op when counting is off).
    #[inline(always)]
    pub fn enter() -> FaultScope {
        if enabled() {
            IN_FAULT.with(|f| f.set(f.get() + 1));
        }
        FaultScope(())
    }
}

impl Drop for FaultScope {
    #[inline(always)]
    fn drop(&mut self) {
        if enabled() {
            IN_FAULT.with(|f| f.set(f.get().saturating_sub(1)));
        }
    }
}
