//! `kfd` and `kfd-noxnack`: AMD's KFD shared virtual memory (the design
//! of amdkfd's `kfd_svm.c`).
//!
//! One interval per *range*, covering it exactly. Ranges come from an
//! explicit set-attributes op (`dN attr`: the gaps of the span get new
//! ranges, split at 2 MiB boundaries, coarser for a huge span) and, with XNACK on, from device
//! faults on addresses no range covers (a 2 MiB window clamped to the VMA
//! and to the neighbouring ranges).
//!
//! An unmap that covers a range whole queues it for removal; a partial
//! unmap splits it in the callback: the range keeps its head (or its tail),
//! and the unmapped part and the kept tail become *children*, each with an
//! operation (unmap, add), while the range itself is queued to update its
//! interval to its new bounds. The deferred-list work takes the mmap lock
//! for write, handles the children before their parent (an added child gets
//! an interval of its own), then re-inserts the parent's interval with its
//! new bounds or removes it. A fault skips a range that is pending on the
//! deferred list (the device retries later: [`MirrorError::Again`]), and
//! the commit answers "again" when the range was split meanwhile.
//!
//! With XNACK off the device cannot retry faults: only ranges set by
//! `attr` are mapped (a fault elsewhere fails), and an invalidation that is
//! not an unmap marks the range invalid and stops the device (its queues
//! are evicted: every access answers "again"). Restore work revalidates
//! every invalid range and resumes the device only if no invalidation came
//! in between; else it is queued again.
//!
//! Simplifications: attributes themselves are not kept (`attr` only
//! registers ranges); an existing range that overlaps an `attr` span is
//! left as it is rather than cloned and split.

use mm::{Mm, HUGE, PAGE};
use notifier::{Event, Interval, IntervalId, PlantedBug, Range};

use super::{in_tree, Cover, FaultReq, Notify, Planted, Strategy, StrategyKind, Work};
use crate::{Dev, MirrorError};

/// Most aligned pieces an `attr` span is split into.
const MAX_ATTR_PIECES: u64 = 64;

/// Its registry entry: XNACK on (recoverable device faults).
pub const KIND: StrategyKind = StrategyKind {
    name: "kfd",
    param: None,
    build: build_xnack,
};

/// XNACK off: no recoverable faults; invalidations stop the device until
/// the restore work ran.
pub const KIND_NOXNACK: StrategyKind = StrategyKind {
    name: "kfd-noxnack",
    param: None,
    build: build_noxnack,
};

fn build_xnack(_param: u8, planted: Planted) -> Box<dyn Strategy> {
    Box::new(Kfd::new(true, planted))
}

fn build_noxnack(_param: u8, planted: Planted) -> Box<dyn Strategy> {
    Box::new(Kfd::new(false, planted))
}

/// What the deferred work does with a range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ListOp {
    /// Drop it (and its interval).
    Unmap,
    /// Re-insert its interval with its new bounds.
    UpdateNotifier,
    /// Give it an interval of its own (a child that survives).
    Add,
}

/// A piece split off a range by a partial unmap: no interval yet.
#[derive(Debug)]
struct Child {
    start: u64,
    end: u64,
    op: ListOp,
}

#[derive(Debug)]
struct KRange {
    // Its interval; the interval's bounds are the range's bounds as of the
    // last deferred work (what lookups go by).
    iv: Interval,
    // Its bounds now (a split shrinks them before the work runs).
    start: u64,
    end: u64,
    // Pending on the deferred list with this op.
    op: Option<ListOp>,
    children: Vec<Child>,
    // XNACK off: no invalidation since it was last validated.
    valid: bool,
}

impl KRange {
    fn new(iv: Interval, start: u64, end: u64) -> KRange {
        KRange {
            iv,
            start,
            end,
            op: None,
            children: Vec::new(),
            valid: true,
        }
    }

    // The span its interval covers.
    fn tree_has(&self, a: u64) -> bool {
        self.iv.start() <= a && a <= self.iv.last()
    }
}

/// One parent on the deferred list.
#[derive(Debug)]
struct ListWork {
    id: IntervalId,
}

/// XNACK off: the restore work, in two steps.
#[derive(Debug)]
enum Restore {
    /// Revalidate every invalid range.
    Validate,
    /// Resume the device if no eviction came after the validation.
    Resume { evictions: u64 },
}

#[derive(Debug)]
struct Kfd {
    xnack: bool,
    ranges: Vec<KRange>,
    // Device stopped (XNACK off).
    quiesced: bool,
    // Evictions since the device was last resumed.
    evictions: u64,
    restore_queued: bool,
    planted: Planted,
}

/// A span `(start, end)`.
type Span = (u64, u64);

/// `(start, end)` minus `(us, ue)`: the head and the tail that stay.
fn cut(start: u64, end: u64, us: u64, ue: u64) -> (Option<Span>, Option<Span>) {
    let head = (start < us.min(end)).then(|| (start, us.min(end)));
    let tail = (ue.max(start) < end).then(|| (ue.max(start), end));
    (head, tail)
}

impl Kfd {
    fn new(xnack: bool, planted: Planted) -> Kfd {
        Kfd {
            xnack,
            ranges: Vec::new(),
            quiesced: false,
            evictions: 0,
            restore_queued: false,
            planted,
        }
    }

    fn by_iv(&self, iv: &Interval) -> Option<usize> {
        self.ranges.iter().position(|r| r.iv.id() == iv.id())
    }

    fn at(&self, a: u64) -> Option<usize> {
        self.ranges.iter().position(|r| r.tree_has(a))
    }

    // A CPU unmap of `[us, ue)` reached range `i` (svm_range_unmap_from_cpu):
    // split it and its children; returns whether it must be queued.
    fn unmap_from_cpu(&mut self, i: usize, us: u64, ue: u64) -> bool {
        let r = &mut self.ranges[i];
        let was_pending = r.op.is_some();
        // Children first: an added child loses what was unmapped.
        let mut children = Vec::new();
        for c in std::mem::take(&mut r.children) {
            if c.op == ListOp::Unmap || ue <= c.start || c.end <= us {
                children.push(c);
                continue;
            }
            let (head, tail) = cut(c.start, c.end, us, ue);
            children.push(Child {
                start: us.max(c.start),
                end: ue.min(c.end),
                op: ListOp::Unmap,
            });
            for (s, e) in [head, tail].into_iter().flatten() {
                children.push(Child {
                    start: s,
                    end: e,
                    op: c.op,
                });
            }
        }
        r.children = children;
        if r.op == Some(ListOp::Unmap) || ue <= r.start || r.end <= us {
            return !was_pending && r.op.is_some();
        }
        let (head, tail) = cut(r.start, r.end, us, ue);
        match (head, tail) {
            (None, None) => r.op = Some(ListOp::Unmap),
            (Some((hs, he)), tail) => {
                r.children.push(Child {
                    start: he,
                    end: ue.min(r.end),
                    op: ListOp::Unmap,
                });
                if let Some((ts, te)) = tail {
                    r.children.push(Child {
                        start: ts,
                        end: te,
                        op: ListOp::Add,
                    });
                }
                (r.start, r.end) = (hs, he);
                r.op = Some(ListOp::UpdateNotifier);
            }
            (None, Some((ts, te))) => {
                r.children.push(Child {
                    start: r.start,
                    end: ts,
                    op: ListOp::Unmap,
                });
                (r.start, r.end) = (ts, te);
                r.op = Some(ListOp::UpdateNotifier);
            }
        }
        !was_pending
    }

    // The deferred-list work for one parent (svm_range_deferred_list_work):
    // children first, then the parent; the interval to remove, if any.
    fn run_list(
        &mut self,
        dev: &mut Dev,
        id: IntervalId,
        mm: &Mm,
        n: &Notify<'_>,
    ) -> Result<Result<Interval, &'static str>, MirrorError> {
        // The process may have exited while the work waited for the mmap
        // lock: its address space takes no new interval.
        if mm.exited && !self.planted.is(PlantedBug::KfdWorkAfterExit) {
            return Ok(Err("process gone"));
        }
        let Some(i) = self.ranges.iter().position(|r| r.iv.id() == id) else {
            return Ok(Err("nothing"));
        };
        let buggy = self.planted.is(PlantedBug::KfdWorkAfterExit);
        let children = std::mem::take(&mut self.ranges[i].children);
        let mut added = Vec::new();
        for c in children {
            if c.op != ListOp::Add {
                continue;
            }
            match n.insert(mm, c.start, c.end - c.start) {
                Ok(iv) => added.push(KRange::new(iv, c.start, c.end)),
                Err(e) if buggy => return Err(e),
                // No interval will cover it: nothing may stay mapped there.
                Err(_) => dev.zap(c.start, c.end, true),
            }
        }
        let r = &mut self.ranges[i];
        let op = r.op.take();
        let old = r.iv.clone();
        let keep = match op {
            Some(ListOp::UpdateNotifier) => match n.insert(mm, r.start, r.end - r.start) {
                Ok(iv) => {
                    r.iv = iv;
                    true
                }
                Err(e) if buggy => return Err(e),
                Err(_) => {
                    dev.zap(r.start, r.end, true);
                    false
                }
            },
            Some(ListOp::Unmap) => false,
            Some(ListOp::Add) | None => true,
        };
        if !keep {
            self.ranges.remove(i);
        }
        self.ranges.extend(added);
        match op {
            Some(ListOp::Unmap | ListOp::UpdateNotifier) => Ok(Ok(old)),
            _ if keep => Ok(Err("children added")),
            _ => Ok(Ok(old)),
        }
    }

    // A new range for a fault at `addr` (svm_range_create_unregistered_range):
    // the 2 MiB window around it, clamped to its VMA and to its neighbours.
    fn create(&mut self, addr: u64, mm: &Mm, n: &Notify<'_>) -> Result<Interval, MirrorError> {
        let v = mm
            .vma_at(addr)
            .copied()
            .ok_or(MirrorError::Segv(mm::MmError::Fault))?;
        let base = addr / HUGE * HUGE;
        let mut start = base.max(v.start);
        let mut end = base.saturating_add(HUGE).min(v.end);
        for r in &self.ranges {
            let (s, l) = (r.iv.start(), r.iv.last());
            if l < addr {
                start = start.max(l + 1);
            } else if s > addr {
                end = end.min(s);
            }
        }
        let iv = n.insert(mm, start, end - start)?;
        self.ranges.push(KRange::new(iv.clone(), start, end));
        Ok(iv)
    }
}

impl Strategy for Kfd {
    // Ranges come with attributes and faults.
    fn open(&mut self, mm: &Mm, _n: &Notify<'_>) -> Result<(), MirrorError> {
        super::refuse_released(mm)
    }

    fn interval(&mut self, f: FaultReq, mm: &Mm, n: &Notify<'_>) -> Result<Cover, MirrorError> {
        if self.quiesced {
            return Err(MirrorError::Again);
        }
        // svms->objects, an interval tree under svms->lock.
        super::count_lookup(self.ranges.len(), true);
        let Some(i) = self.at(f.addr) else {
            if !self.xnack {
                // No recoverable faults: only registered ranges are mapped.
                return Err(MirrorError::Segv(mm::MmError::Fault));
            }
            let iv = self.create(f.addr, mm, n)?;
            return Ok(Cover { iv, hold: None });
        };
        let r = &self.ranges[i];
        // Pending on the deferred list (a split parent, an unmapped one):
        // the device retries once the work ran.
        if r.op.is_some() && !self.planted.is(PlantedBug::KfdFaultOnPendingRange) {
            return Err(MirrorError::Again);
        }
        if !r.valid {
            return Err(MirrorError::Again);
        }
        Ok(Cover {
            iv: r.iv.clone(),
            hold: None,
        })
    }

    // The range may have been split or replaced meanwhile: look again.
    fn relookup_on_retry(&self) -> bool {
        true
    }

    // The interval must still be its range's, and the range not split or
    // queued since (read_retry cannot see what the deferred work did).
    fn commit_ok(&self, iv: &Interval) -> bool {
        let skip_pending = !self.planted.is(PlantedBug::KfdFaultOnPendingRange);
        !self.quiesced
            && self
                .by_iv(iv)
                .is_some_and(|i| self.ranges[i].op.is_none() || !skip_pending)
    }

    fn invalidated(&mut self, dev: &mut Dev, iv: &Interval, range: &Range) {
        let Some(i) = self.by_iv(iv) else {
            return;
        };
        if range.event == Event::Unmap {
            if self.unmap_from_cpu(i, range.start, range.end) {
                dev.defer(Box::new(ListWork { id: iv.id() }));
            }
            return;
        }
        if self.xnack {
            return;
        }
        // XNACK off: evict the queues; the restore work brings them back.
        self.ranges[i].valid = false;
        self.quiesced = true;
        self.evictions += 1;
        if !self.restore_queued {
            self.restore_queued = true;
            dev.defer(Box::new(Restore::Validate));
        }
    }

    fn run_work_checked(
        &mut self,
        dev: &mut Dev,
        item: Work,
        mm: &Mm,
        n: &Notify<'_>,
    ) -> Result<Result<Interval, &'static str>, MirrorError> {
        let item = match item.downcast::<ListWork>() {
            Ok(w) => return self.run_list(dev, w.id, mm, n),
            Err(item) => item,
        };
        let Ok(restore) = item.downcast::<Restore>() else {
            return Ok(Err("nothing"));
        };
        match *restore {
            Restore::Validate => {
                for r in self.ranges.iter_mut() {
                    r.valid = true;
                }
                dev.defer(Box::new(Restore::Resume {
                    evictions: self.evictions,
                }));
                Ok(Err("ranges revalidated"))
            }
            Restore::Resume { evictions } if evictions == self.evictions => {
                self.quiesced = false;
                self.evictions = 0;
                self.restore_queued = false;
                Ok(Err("device resumed"))
            }
            Restore::Resume { .. } => {
                dev.defer(Box::new(Restore::Validate));
                Ok(Err("evicted meanwhile, restore again"))
            }
        }
    }

    // Only with a reference on the address space (mmget_not_zero): once
    // the process has exited the work gives up instead.
    fn work_takes_mmap_write(&self, item: &Work, mm: &Mm) -> bool {
        item.is::<ListWork>() && (!mm.exited || self.planted.is(PlantedBug::KfdWorkAfterExit))
    }

    // svm_range_set_attr: every page must be mapped; new ranges fill the
    // gaps, split at 2 MiB boundaries.
    fn set_attr(
        &mut self,
        _dev: &mut Dev,
        mm: &Mm,
        n: &Notify<'_>,
        addr: u64,
        len: u64,
    ) -> Result<(), MirrorError> {
        let aligned = addr.is_multiple_of(PAGE) && len.is_multiple_of(PAGE) && len > 0;
        let end = addr
            .checked_add(len)
            .filter(|&e| aligned && e <= mm.config.task_size)
            .ok_or(MirrorError::Inval)?;
        let mut a = addr;
        while a < end {
            a = mm
                .vma_at(a)
                .ok_or(MirrorError::Segv(mm::MmError::Fault))?
                .end;
        }
        let overlapping = || {
            self.ranges
                .iter()
                .filter(move |r| r.iv.start() < end && addr <= r.iv.last())
        };
        // The deferred list is flushed first in the kernel; here the op
        // cannot wait for it.
        if overlapping().any(|r| r.op.is_some()) {
            return Err(MirrorError::Again);
        }
        let mut taken: Vec<(u64, u64)> =
            overlapping().map(|r| (r.iv.start(), r.iv.last())).collect();
        taken.sort_unstable();
        let mut gaps = Vec::new();
        let mut at = addr;
        for (s, l) in taken {
            if s > at {
                gaps.push((at, s));
            }
            at = at.max(l.saturating_add(1));
        }
        if at < end {
            gaps.push((at, end));
        }
        // The kernel splits at its largest range size; here 2 MiB, coarser
        // for spans of more than MAX_ATTR_PIECES of them.
        let mut grain = HUGE;
        while (end - addr) / grain > MAX_ATTR_PIECES {
            grain <<= 1;
        }
        for (mut s, e) in gaps {
            while s < e {
                let piece_end = (s / grain * grain).saturating_add(grain).min(e);
                let iv = n.insert(mm, s, piece_end - s)?;
                self.ranges.push(KRange::new(iv, s, piece_end));
                s = piece_end;
            }
        }
        Ok(())
    }

    fn device_quiesced(&self) -> bool {
        self.quiesced
    }

    fn covers(&self, page: u64) -> bool {
        self.ranges
            .iter()
            .any(|r| r.op.is_none() && in_tree(&r.iv) && r.start <= page && page < r.end)
    }

    fn clear(&mut self) {
        self.ranges.clear();
    }

    fn state_bytes(&self) -> usize {
        self.ranges
            .iter()
            .map(|r| {
                std::mem::size_of::<KRange>()
                    + super::INTERVAL_BYTES
                    + r.children.len() * std::mem::size_of::<Child>()
            })
            .sum()
    }
}
