//! `lru:SIZE`, a device-mirror strategy written outside mnfuzz: a
//! registration cache of at most [`SLOTS`] intervals, each over one aligned
//! block of SIZE bytes. A device fault in a block without an interval takes
//! one; when a fault ends with more than [`SLOTS`] blocks cached, the block
//! faulted in longest ago that no fault is using is evicted (device hits
//! never reach the driver, so faults are all it knows of use): its device PTEs
//! go at once, its interval by deferred work (never from inside a
//! callback, and never from the fault path, where removal could wait).
//!
//! [`register`] adds it to mnfuzz's registry; from then on the whole suite
//! runs it: `.ops` files (`devices=lru:64k`), the byte codec, the built-in
//! engine, replay, minimization and soak (`src/main.rs` is the `mnfuzz`
//! command line with `lru` in it) and a cargo-fuzz target
//! (`fuzz/fuzz_targets/lru.rs`).
//!
//! [`register`] also adds `lru-nozap`, the same cache with one line left
//! out: eviction removes the interval but leaves the block's device PTEs.
//! A later munmap is then never heard, and the device keeps reading a
//! frame the CPU gave back. It is there to show what a finding looks like
//! (see `tests/fuzz.rs`).

use std::collections::BTreeMap;

use mirror::strategy::{
    self, in_tree, Cover, FaultEnd, FaultReq, Notify, RegisterError, SizeParam, Strategy,
    StrategyKind, StrategySpec, Work,
};
use mirror::{Dev, MirrorError};
use mm::Mm;
use notifier::Interval;

/// Blocks the cache keeps once no fault is using them.
pub const SLOTS: usize = 2;

/// The block size: a page to 2 MiB, 16 KiB unless the config says (the
/// codec's addresses fall in a 16-page window: four blocks, two slots).
const PARAM: SizeParam = SizeParam {
    min: 12,
    max: 21,
    default: 14,
    what: "LRU block shift",
};

/// The strategy's registry entry.
pub const KIND: StrategyKind = StrategyKind {
    name: "lru",
    param: Some(PARAM),
    build: |shift, _| Box::new(Lru::new(shift, true)),
};

/// The same cache, but eviction forgets the device PTEs.
pub const KIND_NOZAP: StrategyKind = StrategyKind {
    name: "lru-nozap",
    param: Some(PARAM),
    build: |shift, _| Box::new(Lru::new(shift, false)),
};

/// Registers `lru` and `lru-nozap` (again: a no-op) and returns `lru` at
/// its default block size.
pub fn register() -> Result<StrategySpec, RegisterError> {
    // `lru` first: the codec reaches the first registered kind unpinned.
    let kind = strategy::register(KIND)?;
    strategy::register(KIND_NOZAP)?;
    Ok(StrategySpec::default_of(kind).expect("just registered"))
}

/// One cached block.
#[derive(Debug)]
struct Block {
    iv: Interval,
    // Faults between lookup and their end: a used block is never evicted.
    users: u32,
    // The cache's clock at its last use.
    used: u64,
}

/// An evicted block's interval, removed by deferred work.
#[derive(Debug)]
struct Evicted(Interval);

/// The cache.
#[derive(Debug)]
pub struct Lru {
    size: u64,
    blocks: BTreeMap<u64, Block>,
    clock: u64,
    zap_on_evict: bool,
}

impl Lru {
    fn new(shift: u8, zap_on_evict: bool) -> Lru {
        Lru {
            size: 1 << shift,
            blocks: BTreeMap::new(),
            clock: 0,
            zap_on_evict,
        }
    }

    /// Evicts least recently used blocks nobody uses until at most
    /// [`SLOTS`] are left (or only used ones).
    fn shrink(&mut self, dev: &mut Dev) {
        while self.blocks.len() > SLOTS {
            let victim = self
                .blocks
                .iter()
                .filter(|(_, b)| b.users == 0)
                .min_by_key(|(_, b)| b.used)
                .map(|(&base, _)| base);
            let Some(base) = victim else { return };
            let Some(b) = self.blocks.remove(&base) else {
                return;
            };
            // Once the interval is gone nothing tells us about this block:
            // its PTEs must go with it.
            if self.zap_on_evict {
                dev.zap(base, base.saturating_add(self.size), true);
            }
            dev.defer(Box::new(Evicted(b.iv)));
        }
    }
}

impl Strategy for Lru {
    // Intervals come with faults; a released mm takes none.
    fn open(&mut self, mm: &Mm, _n: &Notify<'_>) -> Result<(), MirrorError> {
        strategy::refuse_released(mm)
    }

    fn interval(&mut self, f: FaultReq, mm: &Mm, n: &Notify<'_>) -> Result<Cover, MirrorError> {
        let base = f.addr & !(self.size - 1);
        self.clock += 1;
        if let Some(b) = self.blocks.get_mut(&base) {
            b.users += 1;
            b.used = self.clock;
            return Ok(Cover {
                iv: b.iv.clone(),
                hold: Some(base),
            });
        }
        let len = self.size.min(mm.config.task_size.saturating_sub(base));
        if len == 0 {
            return Err(MirrorError::Segv(mm::MmError::Fault));
        }
        let iv = n.insert(mm, base, len)?;
        let block = Block {
            iv: iv.clone(),
            users: 1,
            used: self.clock,
        };
        self.blocks.insert(base, block);
        Ok(Cover {
            iv,
            hold: Some(base),
        })
    }

    fn fault_end(&mut self, dev: &mut Dev, end: FaultEnd) -> Option<Interval> {
        if let Some(b) = end.hold.and_then(|base| self.blocks.get_mut(&base)) {
            b.users = b.users.saturating_sub(1);
        }
        self.shrink(dev);
        None
    }

    fn run_work(
        &mut self,
        _dev: &mut Dev,
        item: Work,
        _mm: &Mm,
        _n: &Notify<'_>,
    ) -> Result<Interval, &'static str> {
        match item.downcast::<Evicted>() {
            Ok(e) => Ok(e.0),
            Err(_) => Err("nothing"),
        }
    }

    fn covers(&self, page: u64) -> bool {
        self.blocks
            .get(&(page & !(self.size - 1)))
            .is_some_and(|b| in_tree(&b.iv))
    }

    fn clear(&mut self) {
        self.blocks.clear();
    }
}

/// The libFuzzer / AFL++ / honggfuzz entry point: every device runs `lru`.
pub fn fuzz_one(data: &[u8]) {
    let lru = register().expect("registered");
    harness::targets::mirror_pinned(data, &harness::pin::DevicePin::single(lru));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_once_by_name() {
        let a = register().unwrap();
        assert_eq!(register().unwrap(), a);
        assert_eq!(StrategySpec::from_name("lru:16k"), Some(a));
        assert_eq!(a.name(), "lru:16k");
        let nozap = StrategySpec::from_arg("lru-nozap").unwrap();
        assert_ne!(nozap.kind, a.kind);
        assert!(StrategySpec::from_name("lru:4m").is_none());
    }
}
