//! `gpusvm:WINDOW`: the DRM GPU SVM design (drm_gpusvm, used by Intel's xe
//! driver). Two levels:
//!
//! * *notifiers*: intervals over aligned, power-of-two windows of the
//!   address space (`WINDOW`, 16 KiB to 1 GiB; xe uses 512 MiB, scaled down
//!   here so that windows come and go), each created by the first fault in
//!   its window;
//! * *ranges*: inside a notifier, in its own little map. A fault takes the
//!   largest chunk (2 MiB, 64 KiB, 4 KiB) whose aligned chunk lies inside
//!   the faulting VMA and the window and overlaps no range there.
//!
//! Validity is a per-range flag, not a seq of its own: the callback (which
//! refuses when it may not block: it takes the notifier lock for write)
//! tears down the device PTEs of every range it overlaps, whole, and
//! clears their flags; on `Unmap` it also marks them unmapped (partially
//! unmapped if the event left part of them) and queues them to a garbage
//! collector. The collector runs at the top of every fault and as deferred
//! work: it unbinds each queued range (its device PTEs go) and drops it;
//! a notifier whose last range went is unlinked at once and its interval
//! removed by deferred work, never inside a callback. A fault commits only
//! if, under the driver lock, its range is still linked and not unmapped,
//! read_retry is false and a huge device entry stays inside the range.
//!
//! Not modelled: device memory eviction by the collector (device-private
//! pages stay with the address space, which migrates them back on CPU
//! access), and the range's page arrays (the shared walk samples the
//! faulting page).

use std::collections::btree_map::Entry;
use std::collections::BTreeMap;

use mm::{Mm, HUGE, PAGE};
use notifier::{Event, Interval, PlantedBug, Range};

use super::{
    in_tree, Cover, FaultEnd, FaultReq, Notify, Planted, SizeParam, Strategy, StrategyKind, Work,
};
use crate::{Dev, MirrorError};

/// The smallest notifier window: four pages.
pub const MIN_SHIFT: u8 = 14;
/// The largest notifier window: 1 GiB.
pub const MAX_SHIFT: u8 = 30;
/// The window of `gpusvm` in the codec's first choice: 64 KiB, so that a
/// 2 MiB range needs a larger window.
pub const DEFAULT_SHIFT: u8 = 16;

/// The chunk sizes a range may take, largest first.
pub const CHUNKS: [u64; 3] = [HUGE, 64 << 10, PAGE];

/// Its registry entry.
pub const KIND: StrategyKind = StrategyKind {
    name: "gpusvm",
    param: Some(SizeParam {
        min: MIN_SHIFT,
        max: MAX_SHIFT,
        default: DEFAULT_SHIFT,
        what: "GPU SVM notifier window shift",
    }),
    build,
};

fn build(shift: u8, planted: Planted) -> Box<dyn Strategy> {
    Box::new(GpuSvm {
        window: 1u64 << shift,
        notifiers: BTreeMap::new(),
        gc: Vec::new(),
        collect_queued: false,
        next_id: 0,
        planted,
    })
}

/// A range: one chunk inside a notifier.
#[derive(Debug)]
struct SvmRange {
    end: u64,
    // Unique over the mirror's life: a fault's hold.
    id: u64,
    // Its device PTEs are current (set by a fault, cleared by the callback).
    valid: bool,
    // An unmap reached it: it waits for the garbage collector.
    unmapped: bool,
    // The unmap left part of it mapped.
    partial: bool,
}

/// A notifier: the interval over one window and the ranges inside it.
#[derive(Debug)]
struct SvmNotifier {
    iv: Interval,
    ranges: BTreeMap<u64, SvmRange>,
}

/// Deferred work: run the garbage collector.
#[derive(Debug)]
struct Collect;

/// Deferred work: remove the interval of a notifier the collector emptied.
#[derive(Debug)]
struct RemoveNotifier {
    iv: Interval,
}

#[derive(Debug)]
struct GpuSvm {
    window: u64,
    // Linked notifiers by window base.
    notifiers: BTreeMap<u64, SvmNotifier>,
    // Ranges queued to the collector: window base, range start, range id.
    gc: Vec<(u64, u64, u64)>,
    // A `Collect` item waits on the deferred list.
    collect_queued: bool,
    next_id: u64,
    planted: Planted,
}

impl GpuSvm {
    /// The linked notifier of `iv`, if `iv` is still the one in use.
    fn notifier(&self, iv: &Interval) -> Option<&SvmNotifier> {
        self.notifiers
            .get(&iv.start())
            .filter(|n| n.iv.id() == iv.id())
    }

    /// The garbage collector: unbinds and drops every queued range; a
    /// notifier left empty is unlinked and its interval's removal deferred.
    fn collect(&mut self, dev: &mut Dev) {
        let unbind_partial = !self.planted.is(PlantedBug::GpuSvmRangeNotUnbound);
        for (base, start, id) in std::mem::take(&mut self.gc) {
            let Some(n) = self.notifiers.get_mut(&base) else {
                continue;
            };
            let Some(r) = n.ranges.get(&start).filter(|r| r.id == id) else {
                continue;
            };
            if unbind_partial || !r.partial {
                dev.zap(start, r.end, true);
            }
            n.ranges.remove(&start);
            if n.ranges.is_empty() {
                if let Some(n) = self.notifiers.remove(&base) {
                    dev.defer(Box::new(RemoveNotifier { iv: n.iv }));
                }
            }
        }
    }

    /// The largest chunk around `addr` inside `[lo, hi)` that overlaps no
    /// range of `ranges`.
    fn chunk(&self, addr: u64, lo: u64, hi: u64, ranges: Option<&SvmNotifier>) -> (u64, u64) {
        let free = |s: u64, e: u64| {
            ranges.is_none_or(|n| {
                n.ranges
                    .range(..e)
                    .next_back()
                    .is_none_or(|(_, r)| r.end <= s)
            })
        };
        for &size in &CHUNKS {
            if size > self.window {
                continue;
            }
            let s = addr & !(size - 1);
            let Some(e) = s.checked_add(size) else {
                continue;
            };
            if lo <= s && e <= hi && free(s, e) {
                return (s, e);
            }
        }
        (addr, addr.saturating_add(PAGE))
    }
}

impl Strategy for GpuSvm {
    // Notifiers come with faults.
    fn open(&mut self, mm: &Mm, _n: &Notify<'_>) -> Result<(), MirrorError> {
        super::refuse_released(mm)
    }

    fn interval(&mut self, f: FaultReq, mm: &Mm, n: &Notify<'_>) -> Result<Cover, MirrorError> {
        if f.reg.is_some() {
            return Err(MirrorError::Inval);
        }
        let vma = mm
            .vma_at(f.addr)
            .copied()
            .ok_or(MirrorError::Segv(mm::MmError::Fault))?;
        let base = f.addr & !(self.window - 1);
        let linked = self.notifiers.get(&base);
        // The notifier tree, then the notifier's range tree, under the
        // driver's lock.
        super::count_lookup(self.notifiers.len(), true);
        super::count_lookup(linked.map_or(0, |nf| nf.ranges.len()), false);
        if let Some(nf) = linked {
            let found = nf
                .ranges
                .range(..=f.addr)
                .next_back()
                .filter(|(_, r)| r.end > f.addr);
            if let Some((_, r)) = found {
                return Ok(Cover {
                    iv: nf.iv.clone(),
                    hold: Some(r.id),
                });
            }
        }
        let top = base.saturating_add(self.window).min(mm.config.task_size);
        let (start, end) = self.chunk(f.addr, vma.start.max(base), vma.end.min(top), linked);
        let nf = match self.notifiers.entry(base) {
            Entry::Occupied(e) => e.into_mut(),
            // Inserted before the walk takes the mmap read lock.
            Entry::Vacant(e) => e.insert(SvmNotifier {
                iv: n.insert(mm, base, top - base)?,
                ranges: BTreeMap::new(),
            }),
        };
        let id = self.next_id;
        self.next_id += 1;
        nf.ranges.insert(
            start,
            SvmRange {
                end,
                id,
                valid: false,
                unmapped: false,
                partial: false,
            },
        );
        Ok(Cover {
            iv: nf.iv.clone(),
            hold: Some(id),
        })
    }

    // The range, even the notifier, may be gone after a retry.
    fn relookup_on_retry(&self) -> bool {
        true
    }

    fn fault_begin(&mut self, dev: &mut Dev) {
        self.collect(dev);
    }

    // A fault that installed its PTEs makes its range valid.
    fn fault_end(&mut self, _dev: &mut Dev, end: FaultEnd) -> Option<Interval> {
        if end.failed {
            return None;
        }
        let (Some(iv), Some(id)) = (end.iv, end.hold) else {
            return None;
        };
        if let Some(n) = self.notifiers.get_mut(&iv.start()) {
            if n.iv.id() == iv.id() {
                if let Some(r) = n.ranges.values_mut().find(|r| r.id == id) {
                    r.valid = !r.unmapped;
                }
            }
        }
        None
    }

    // Its range must still be linked and mapped: read_retry cannot see an
    // unmap that the collector has not handled, nor a notifier it unlinked.
    fn commit_ok_for(&self, iv: &Interval, hold: Option<u64>) -> bool {
        self.notifier(iv)
            .is_some_and(|n| n.ranges.values().any(|r| Some(r.id) == hold && !r.unmapped))
    }

    // A huge entry only inside one range: the CPU mapping's order is
    // clipped to the range.
    fn huge_ok(&self, iv: &Interval, base: u64) -> bool {
        if self.planted.is(PlantedBug::GpuSvmOrderNotClipped) {
            return true;
        }
        self.notifier(iv).is_some_and(|n| {
            n.ranges
                .range(..=base)
                .next_back()
                .is_some_and(|(&s, r)| s <= base && r.end >= base.saturating_add(HUGE))
        })
    }

    // The notifier lock is a sleeping lock.
    fn must_wait(&self, range: &Range) -> bool {
        !range.blockable
    }

    fn invalidated(&mut self, dev: &mut Dev, iv: &Interval, range: &Range) {
        let base = iv.start();
        let unmap = range.event == Event::Unmap;
        let skip_partial = self.planted.is(PlantedBug::GpuSvmRangeNotUnbound);
        let Some(n) = self
            .notifiers
            .get_mut(&base)
            .filter(|n| n.iv.id() == iv.id())
        else {
            // Unlinked: its ranges are gone, their PTEs with them.
            return;
        };
        let mut queued = false;
        for (&s, r) in n.ranges.range_mut(..range.end) {
            if r.end <= range.start {
                continue;
            }
            let whole = range.start <= s && r.end <= range.end;
            // The common teardown took the event's pages; a bound range's
            // bindings go whole.
            if r.valid && !(unmap && !whole && skip_partial) {
                dev.zap(s, r.end, true);
            }
            r.valid = false;
            if unmap {
                r.partial |= !whole;
                if !r.unmapped {
                    r.unmapped = true;
                    self.gc.push((base, s, r.id));
                    queued = true;
                }
            }
        }
        if queued && !self.collect_queued {
            self.collect_queued = true;
            dev.defer(Box::new(Collect));
        }
    }

    fn run_work(
        &mut self,
        dev: &mut Dev,
        item: Work,
        _mm: &Mm,
        _n: &Notify<'_>,
    ) -> Result<Interval, &'static str> {
        let item = match item.downcast::<RemoveNotifier>() {
            Ok(r) => return Ok(r.iv),
            Err(item) => item,
        };
        if item.downcast::<Collect>().is_err() {
            return Err("nothing");
        }
        self.collect_queued = false;
        self.collect(dev);
        Err("collected")
    }

    // Only a page inside a mapped range is heard of when its notifier
    // goes: the collector unbinds ranges, not windows.
    fn covers(&self, page: u64) -> bool {
        self.notifiers
            .get(&(page & !(self.window - 1)))
            .is_some_and(|n| {
                in_tree(&n.iv)
                    && n.ranges
                        .range(..=page)
                        .next_back()
                        .is_some_and(|(_, r)| r.end > page && !r.unmapped)
            })
    }

    fn clear(&mut self) {
        self.notifiers.clear();
        self.gc.clear();
    }

    fn state_bytes(&self) -> usize {
        let ranges: usize = self.notifiers.values().map(|n| n.ranges.len()).sum();
        self.notifiers.len() * (std::mem::size_of::<(u64, SvmNotifier)>() + super::INTERVAL_BYTES)
            + ranges * std::mem::size_of::<(u64, SvmRange)>()
            + self.gc.len() * std::mem::size_of::<(u64, u64, u64)>()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use mm::{FrameId, MmConfig, MmId};

    use super::*;
    use crate::DevPte;

    fn svm(shift: u8) -> GpuSvm {
        GpuSvm {
            window: 1 << shift,
            notifiers: BTreeMap::new(),
            gc: Vec::new(),
            collect_queued: false,
            next_id: 0,
            planted: Planted::default(),
        }
    }

    fn range(end: u64, id: u64) -> SvmRange {
        SvmRange {
            end,
            id,
            valid: true,
            unmapped: false,
            partial: false,
        }
    }

    /// A notifier over `[base, base + len)` whose callback does nothing.
    fn notifier(mm: &Mm, base: u64, len: u64) -> SvmNotifier {
        let ops = Arc::new(|_: &Interval, _: &Range, _: u64| true);
        SvmNotifier {
            iv: mm.notifier.insert(base, len, ops).unwrap(),
            ranges: BTreeMap::new(),
        }
    }

    #[test]
    fn the_largest_chunk_inside_the_vma_and_the_window() {
        // 64 KiB windows: 2 MiB never fits.
        let s = svm(16);
        assert_eq!(s.chunk(0x1f000, 0x10000, 0x20000, None), (0x10000, 0x20000));
        assert_eq!(s.chunk(0x40000, 0x40000, 0x42000, None), (0x40000, 0x41000));
        // 2 MiB windows over a 4 MiB VMA.
        let s = svm(21);
        assert_eq!(
            s.chunk(0x3ff000, 0x200000, 0x400000, None),
            (0x200000, 0x400000)
        );
        // 16 KiB windows: only pages.
        let s = svm(14);
        assert_eq!(s.chunk(0x11000, 0, 0x100000, None), (0x11000, 0x12000));
    }

    #[test]
    fn a_chunk_overlaps_no_range() {
        let mm = Mm::new(MmId(0), MmConfig::default());
        let s = svm(21);
        let mut n = notifier(&mm, 0x200000, 0x200000);
        n.ranges.insert(0x210000, range(0x211000, 0));
        let (lo, hi) = (0x200000, 0x400000);
        assert_eq!(s.chunk(0x200000, lo, hi, Some(&n)), (0x200000, 0x210000));
        assert_eq!(s.chunk(0x211000, lo, hi, Some(&n)), (0x211000, 0x212000));
        assert_eq!(s.chunk(0x220000, lo, hi, Some(&n)), (0x220000, 0x230000));
    }

    #[test]
    fn a_partial_unmap_is_collected_with_its_notifier() {
        let mm = Mm::new(MmId(0), MmConfig::default());
        let spec = crate::StrategySpec::from_name("gpusvm:64k").unwrap();
        let m = crate::Mirror::open(0, &mm, spec, None).unwrap();
        let mut s = svm(16);
        let mut n = notifier(&mm, 0x10000, 0x10000);
        n.ranges.insert(0x10000, range(0x20000, 7));
        let iv = n.iv.clone();
        s.notifiers.insert(0x10000, n);
        let mut dev = Dev::default();
        dev.dpt.insert(0x10000, DevPte::small(FrameId(3), true));
        assert!(s.covers(0x10000) && !s.huge_ok(&iv, 0));
        assert!(s.commit_ok_for(&iv, Some(7)) && !s.commit_ok_for(&iv, Some(8)));
        // An unmap of the upper half: the bound range goes whole.
        s.invalidated(&mut dev, &iv, &Range::new(0x18000, 0x20000, Event::Unmap));
        assert!(dev.dpt.is_empty());
        let r = &s.notifiers[&0x10000].ranges[&0x10000];
        assert!(r.unmapped && r.partial && !r.valid);
        assert!(!s.covers(0x10000) && !s.commit_ok_for(&iv, Some(7)));
        assert_eq!((s.gc.len(), dev.work.len()), (1, 1));
        // The collector: the range, then the notifier (removed later).
        let item = dev.work.pop_front().unwrap();
        let collected = s.run_work(&mut dev, item, &mm, &m.notify());
        assert_eq!(collected.map(|r| r.id()), Err("collected"));
        assert!(s.notifiers.is_empty() && s.gc.is_empty());
        let item = dev.work.pop_front().unwrap();
        let removed = s.run_work(&mut dev, item, &mm, &m.notify());
        assert_eq!(removed.map(|r| r.id()), Ok(iv.id()));
    }
}
