//! `vma`: intervals that cover VMAs, trimmed or split on unmap through
//! deferred updates (the 2020 nouveau proposal; fragile on purpose).

use mm::Mm;
use notifier::{Event, Interval, PlantedBug, Range};

use super::{in_tree, Cover, FaultReq, Notify, Planted, Strategy, StrategyKind, Work};
use crate::{Dev, MirrorError};

/// Its registry entry.
pub const KIND: StrategyKind = StrategyKind {
    name: "vma",
    param: None,
    build,
};

fn build(_param: u8, planted: Planted) -> Box<dyn Strategy> {
    Box::new(Vma {
        tracked: Vec::new(),
        planted,
    })
}

/// A VMA-tracking interval and the unmaps it still has to be trimmed by.
/// Holes a tracked VMA remembers before its deferred update; past that
/// the update drops the whole interval (and the device PTEs under it).
/// Small, so that the fallback is exercised: four holes in one VMA before
/// its work runs are common in fuzzed programs, nine were not.
const MAX_HOLES: usize = 4;

#[derive(Debug)]
struct Tracked {
    iv: Interval,
    start: u64,
    end: u64,
    // On the deferred-update list: no new fault may use it.
    deferred: bool,
    holes: Vec<(u64, u64)>,
}

/// Deferred update of a tracked interval.
#[derive(Debug)]
struct Update {
    iv: Interval,
}

#[derive(Debug)]
struct Vma {
    tracked: Vec<Tracked>,
    planted: Planted,
}

impl Strategy for Vma {
    // Intervals come with faults.
    fn open(&mut self, mm: &Mm, _n: &Notify<'_>) -> Result<(), MirrorError> {
        super::refuse_released(mm)
    }

    fn interval(&mut self, f: FaultReq, mm: &Mm, n: &Notify<'_>) -> Result<Cover, MirrorError> {
        let stale_ok = self.planted.is(PlantedBug::VmaDeferredInterval);
        // A tree of tracked intervals under the driver lock.
        super::count_lookup(self.tracked.len(), true);
        if let Some(t) = self
            .tracked
            .iter()
            .find(|t| (stale_ok || !t.deferred) && t.start <= f.addr && f.addr < t.end)
        {
            return Ok(Cover {
                iv: t.iv.clone(),
                hold: None,
            });
        }
        let v = mm
            .vma_at(f.addr)
            .copied()
            .ok_or(MirrorError::Segv(mm::MmError::Fault))?;
        let iv = n.insert(mm, v.start, v.end - v.start)?;
        self.tracked.push(Tracked {
            iv: iv.clone(),
            start: v.start,
            end: v.end,
            deferred: false,
            holes: Vec::new(),
        });
        Ok(Cover { iv, hold: None })
    }

    // The interval may have gone on the deferred list meanwhile: look
    // again.
    fn relookup_on_retry(&self) -> bool {
        true
    }

    // read_retry cannot see an interval that the deferred update took out
    // of the tree meanwhile: a PTE installed under it would never be
    // invalidated.
    fn commit_ok(&self, iv: &Interval) -> bool {
        // read_retry cannot see a removal by our own deferred work.
        if self.planted.is(PlantedBug::VmaCommitUnchecked) {
            return true;
        }
        let stale_ok = self.planted.is(PlantedBug::VmaDeferredInterval);
        self.tracked
            .iter()
            .any(|t| t.iv.id() == iv.id() && (stale_ok || !t.deferred))
    }

    fn deepest_backlog(&self) -> usize {
        self.tracked
            .iter()
            .filter(|t| t.deferred)
            .map(|t| t.holes.len())
            .max()
            .unwrap_or(0)
    }

    fn invalidated(&mut self, dev: &mut Dev, iv: &Interval, range: &Range) {
        if range.event != Event::Unmap {
            return;
        }
        let mut queue = false;
        let mut dropped = None;
        if let Some(t) = self.tracked.iter_mut().find(|t| t.iv.id() == iv.id()) {
            if t.holes.len() < MAX_HOLES {
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
            if !self.planted.is(PlantedBug::VmaHolesOverflow) {
                dev.zap(start, end, true);
            }
        }
        if queue {
            dev.defer(Box::new(Update { iv: iv.clone() }));
        }
    }

    fn run_work(
        &mut self,
        _dev: &mut Dev,
        item: Work,
        mm: &Mm,
        n: &Notify<'_>,
    ) -> Result<Interval, &'static str> {
        let Ok(u) = item.downcast::<Update>() else {
            return Err("nothing");
        };
        let Update { iv } = *u;
        let Some(i) = self.tracked.iter().position(|t| t.iv.id() == iv.id()) else {
            return Err("already updated");
        };
        let t = self.tracked.remove(i);
        // The pieces still mapped get intervals of their own first, so
        // that no invalidation of them finds nobody.
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
            if let Ok(iv) = n.insert(mm, s, e - s) {
                self.tracked.push(Tracked {
                    iv,
                    start: s,
                    end: e,
                    deferred: false,
                    holes: Vec::new(),
                });
            }
        }
        Ok(iv)
    }

    fn covers(&self, page: u64) -> bool {
        self.tracked
            .iter()
            .any(|t| !t.deferred && in_tree(&t.iv) && t.start <= page && page < t.end)
    }

    fn clear(&mut self) {
        self.tracked.clear();
    }

    fn state_bytes(&self) -> usize {
        self.tracked
            .iter()
            .map(|t| {
                std::mem::size_of::<Tracked>()
                    + super::INTERVAL_BYTES
                    + t.holes.len() * std::mem::size_of::<(u64, u64)>()
            })
            .sum()
    }
}
