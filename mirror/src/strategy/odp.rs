//! `odp:SIZE`: intervals created on demand for aligned chunks (a
//! power-of-two size standing for a hardware page-table level), found
//! through a map without the driver lock; an emptied chunk is destroyed by
//! deferred work, never inside a callback (RDMA implicit ODP).

use std::collections::BTreeMap;

use mm::Mm;
use notifier::{Interval, PlantedBug, Range};

use super::{
    in_tree, Cover, FaultEnd, FaultReq, Notify, Planted, SizeParam, Strategy, StrategyKind, Work,
};
use crate::{Dev, MirrorError};

/// The smallest ODP chunk: four pages.
pub const ODP_MIN_SHIFT: u8 = 14;
/// The largest ODP chunk: 1 GiB.
pub const ODP_MAX_SHIFT: u8 = 30;
/// The chunk of `odp` in the codec's first choice: 2 MiB.
pub const DEFAULT_SHIFT: u8 = 21;

/// Its registry entry.
pub const KIND: StrategyKind = StrategyKind {
    name: "odp",
    param: Some(SizeParam {
        min: ODP_MIN_SHIFT,
        max: ODP_MAX_SHIFT,
        default: DEFAULT_SHIFT,
        what: "ODP chunk shift",
    }),
    build,
};

fn build(chunk_shift: u8, planted: Planted) -> Box<dyn Strategy> {
    Box::new(Odp {
        size: 1u64 << chunk_shift,
        chunks: BTreeMap::new(),
        next_gen: 0,
        planted,
    })
}

/// An implicit-ODP chunk: one interval for an aligned range.
#[derive(Debug)]
struct Chunk {
    iv: Interval,
    gen: u64,
    // Faults between lookup and their end: a used chunk is never destroyed.
    users: u32,
}

/// Deferred destruction of an emptied chunk.
#[derive(Debug)]
struct Destroy {
    base: u64,
    gen: u64,
    iv: Interval,
}

#[derive(Debug)]
struct Odp {
    size: u64,
    // Found without the driver lock (an xarray in the kernel).
    chunks: BTreeMap<u64, Chunk>,
    next_gen: u64,
    planted: Planted,
}

impl Strategy for Odp {
    // Intervals come with faults.
    fn open(&mut self, mm: &Mm, _n: &Notify<'_>) -> Result<(), MirrorError> {
        super::refuse_released(mm)
    }

    fn interval(&mut self, f: FaultReq, mm: &Mm, n: &Notify<'_>) -> Result<Cover, MirrorError> {
        let base = f.addr & !(self.size - 1);
        // One xarray lookup, no driver lock.
        notifier::cost::one(notifier::cost::Metric::FaultLookups);
        if let Some(c) = self.chunks.get_mut(&base) {
            c.users += 1;
            return Ok(Cover {
                iv: c.iv.clone(),
                hold: Some(base),
            });
        }
        let len = self.size.min(mm.config.task_size.saturating_sub(base));
        if len == 0 {
            return Err(MirrorError::Segv(mm::MmError::Fault));
        }
        let iv = n.insert(mm, base, len)?;
        let gen = self.next_gen;
        self.next_gen += 1;
        self.chunks.insert(
            base,
            Chunk {
                iv: iv.clone(),
                gen,
                users: 1,
            },
        );
        Ok(Cover {
            iv,
            hold: Some(base),
        })
    }

    // Lets go of the chunk; the last user of an empty one queues it.
    fn fault_end(&mut self, dev: &mut Dev, end: FaultEnd) -> Option<Interval> {
        let base = end.hold?;
        let empty = !dev.maps_any(base, base.saturating_add(self.size));
        if let Some(c) = self.chunks.get_mut(&base) {
            c.users -= 1;
            if c.users == 0 && empty {
                dev.defer(Box::new(Destroy {
                    base,
                    gen: c.gen,
                    iv: c.iv.clone(),
                }));
            }
        }
        None
    }

    // Never destroy from here: removal waits for this very invalidation to
    // end.
    fn invalidated(&mut self, dev: &mut Dev, iv: &Interval, _range: &Range) {
        let base = iv.start();
        let empty = !dev.maps_any(base, base.saturating_add(self.size));
        let gen = self
            .chunks
            .get(&base)
            .filter(|c| c.iv.id() == iv.id())
            .map(|c| c.gen);
        if let (true, Some(gen)) = (empty, gen) {
            dev.defer(Box::new(Destroy {
                base,
                gen,
                iv: iv.clone(),
            }));
        }
    }

    fn run_work(
        &mut self,
        dev: &mut Dev,
        item: Work,
        _mm: &Mm,
        _n: &Notify<'_>,
    ) -> Result<Interval, &'static str> {
        let Ok(d) = item.downcast::<Destroy>() else {
            return Err("nothing");
        };
        let Destroy { base, gen, iv } = *d;
        let unused = !dev.maps_any(base, base.saturating_add(self.size));
        if self.planted.is(PlantedBug::OdpDestroyTwice) {
            self.chunks.remove(&base);
        } else {
            let current = self
                .chunks
                .get(&base)
                .is_some_and(|c| c.gen == gen && c.users == 0);
            if !(current && unused) {
                return Err("chunk still in use");
            }
            self.chunks.remove(&base);
        }
        Ok(iv)
    }

    fn covers(&self, page: u64) -> bool {
        self.chunks
            .get(&(page & !(self.size - 1)))
            .is_some_and(|c| in_tree(&c.iv))
    }

    fn clear(&mut self) {
        self.chunks.clear();
    }

    fn state_bytes(&self) -> usize {
        self.chunks.len() * (std::mem::size_of::<(u64, Chunk)>() + super::INTERVAL_BYTES)
    }
}
