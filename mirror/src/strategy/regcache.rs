//! `regcache`: explicit registrations that pin their frames; the callback
//! marks a registration invalid and waits for device accesses in flight;
//! use re-validates (i915 userptr, RDMA MR caches).
//!
//! Device accesses go through registrations ([`Mirror::access_begin`]),
//! never through device faults or device-private pages.

use std::any::Any;

use mm::{FrameId, Mm, Phys, PAGE};
use notifier::{Interval, PlantedBug, Range, RemoveWait};

use super::{Cover, FaultEnd, FaultReq, Notify, Planted, Strategy, StrategyKind};
use crate::{lock, Dev, DevPte, DevState, Fault, Mirror, MirrorError};

/// Most pages one registration covers.
pub const MAX_REG_PAGES: u64 = 64;

/// Its registry entry.
pub const KIND: StrategyKind = StrategyKind {
    name: "regcache",
    param: None,
    build,
};

fn build(_param: u8, planted: Planted) -> Box<dyn Strategy> {
    Box::new(RegCache {
        regs: Vec::new(),
        next_reg: 0,
        planted,
    })
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

#[derive(Debug)]
struct RegCache {
    regs: Vec<Registration>,
    next_reg: u64,
    planted: Planted,
}

impl Strategy for RegCache {
    // Intervals come with registrations.
    fn open(&mut self, mm: &Mm, _n: &Notify<'_>) -> Result<(), MirrorError> {
        super::refuse_released(mm)
    }

    fn interval(&mut self, f: FaultReq, _mm: &Mm, _n: &Notify<'_>) -> Result<Cover, MirrorError> {
        let Some(id) = f.reg else {
            return Err(MirrorError::Inval);
        };
        // The cache's tree, under its lock.
        super::count_lookup(self.regs.len(), true);
        self.regs
            .iter()
            .find(|r| r.id == id)
            .map(|r| Cover {
                iv: r.iv.clone(),
                hold: None,
            })
            .ok_or(MirrorError::NoEnt)
    }

    // A failed pin lets the registration go; a failed new one goes away.
    fn fault_end(&mut self, _dev: &mut Dev, end: FaultEnd) -> Option<Interval> {
        let id = end.reg.filter(|_| end.failed)?;
        if let Some(r) = self.regs.iter_mut().find(|r| r.id == id) {
            r.busy = false;
        }
        let i = self
            .regs
            .iter()
            .position(|r| r.id == id && r.pins.is_empty())?;
        Some(self.regs.remove(i).iv)
    }

    fn must_wait(&self, range: &Range) -> bool {
        !self.planted.is(PlantedBug::RegcacheNoWait)
            && self
                .regs
                .iter()
                .any(|r| r.inflight > 0 && r.start < range.end && range.start < r.end)
    }

    fn invalidated(&mut self, _dev: &mut Dev, iv: &Interval, _range: &Range) {
        for r in self.regs.iter_mut().filter(|r| r.iv.id() == iv.id()) {
            r.valid = false;
        }
    }

    fn covers(&self, _page: u64) -> bool {
        false
    }

    fn registrations(&self) -> bool {
        true
    }

    fn install_registration(
        &mut self,
        dev: &mut Dev,
        reg: u64,
        samples: Vec<(FrameId, bool)>,
    ) -> Vec<FrameId> {
        let Some(r) = self.regs.iter_mut().find(|r| r.id == reg) else {
            return samples.into_iter().map(|(f, _)| f).collect();
        };
        let pins: Vec<(u64, FrameId)> = samples
            .iter()
            .enumerate()
            .map(|(i, s)| (r.start + i as u64 * PAGE, s.0))
            .collect();
        let old = std::mem::replace(&mut r.pins, pins);
        r.valid = true;
        r.busy = false;
        let w = r.write;
        let (start, end) = (r.start, r.end);
        dev.zap(start, end, true);
        for (i, (f, writable)) in samples.into_iter().enumerate() {
            dev.dpt
                .insert(start + i as u64 * PAGE, DevPte::small(f, writable && w));
        }
        old.into_iter().map(|(_, f)| f).collect()
    }

    fn pinned_frames(&self) -> Vec<FrameId> {
        self.regs
            .iter()
            .flat_map(|r| r.pins.iter().map(|&(_, f)| f))
            .collect()
    }

    fn clear(&mut self) {
        self.regs.clear();
    }

    fn state_bytes(&self) -> usize {
        self.regs
            .iter()
            .map(|r| {
                std::mem::size_of::<Registration>()
                    + super::INTERVAL_BYTES
                    + r.pins.len() * std::mem::size_of::<(u64, FrameId)>()
            })
            .sum()
    }
}

fn cache(st: &mut DevState) -> Option<&mut RegCache> {
    (st.strategy.as_mut() as &mut dyn Any).downcast_mut::<RegCache>()
}

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

impl Mirror {
    /// Registration cache: registers `[addr, addr + len)` (at most
    /// `MAX_REG_PAGES` pages); pin it with the returned fault.
    pub fn register(&self, mm: &Mm, addr: u64, len: u64) -> Result<Fault, MirrorError> {
        if cache(&mut lock(&self.state)).is_none() {
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
        let iv = self.notify().insert(mm, start, end - start)?;
        let mut st = lock(&self.state);
        let c = cache(&mut st).ok_or(MirrorError::Inval)?;
        let id = c.next_reg;
        c.next_reg += 1;
        c.regs.push(Registration {
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
        if st.dev.lock.is_some_and(|h| h != me) {
            return Access::Blocked;
        }
        let page = addr / PAGE * PAGE;
        let Some(r) = cache(&mut st)
            .and_then(|c| c.regs.iter_mut().find(|r| r.start <= page && page < r.end))
        else {
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
        if let Some(r) = cache(&mut st).and_then(|c| c.regs.iter_mut().find(|r| r.id == reg)) {
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
        let mut guard = lock(&self.state);
        let st = &mut *guard;
        let held = st.dev.lock.is_some_and(|h| h != me);
        let c = cache(st).ok_or(MirrorError::Inval)?;
        let Some(i) = c.regs.iter().position(|r| r.start == addr / PAGE * PAGE) else {
            return Err(MirrorError::NoEnt);
        };
        let r = &c.regs[i];
        if r.inflight > 0 || r.busy || held {
            return Ok(None);
        }
        let r = c.regs.remove(i);
        st.dev.zap(r.start, r.end, true);
        drop(guard);
        for (_, f) in r.pins {
            phys.unpin(f);
        }
        mm.notifier
            .remove_prepare(&r.iv)
            .map(Some)
            .map_err(MirrorError::Notifier)
    }
}
