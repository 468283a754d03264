//! The shadow memory (oracles::shadow) in the kvm target: kept from the
//! ops alone, as in the mirror target ([`crate::mirror::exec`]), and
//! checked at every load, CPU or guest, and every guest store.
//!
//! The linux target runs each op to completion, so the shadow learns an
//! op's effect range by range while the simulation applies it (what its
//! invalidations cover) and what it does at its finish from its result.

use mm::{MmError, MmOp, Outcome as MmOutcome, Task};
use oracles::shadow::{Mismatch, Refused, Shadow};

/// The shadow of the kvm target's address spaces.
pub struct Tracker {
    shadow: Shadow,
}

impl Tracker {
    /// m0 exists, empty.
    pub fn new(spaces: usize) -> Tracker {
        let mut shadow = Shadow::new(spaces);
        shadow.create(0);
        Tracker { shadow }
    }

    /// After a step of `task` on `mm`: the range it just applied, if it
    /// did. Err: the shadow's mappings do not allow what the op did.
    pub fn step(&mut self, mm: usize, task: &Task) -> Result<(), String> {
        self.shadow.follow_step(mm, task)
    }

    /// `op` on `mm` finished with `r`: what it did at its finish. A CPU
    /// load is checked; a store is recorded (and checked for permission).
    pub fn done(
        &mut self,
        mm: usize,
        op: MmOp,
        r: &Result<MmOutcome, MmError>,
    ) -> Result<(), Box<Mismatch>> {
        if let (MmOp::Access { addr, write: None }, Ok(MmOutcome::Value(v))) = (op, r) {
            return self.shadow.check_load(mm, addr, *v);
        }
        self.shadow.follow_done(mm, op, r).map_err(|e| match e {
            Refused::Store(m) => m,
            Refused::Inconsistent(why) => Box::new(Mismatch {
                mm,
                addr: 0,
                got: None,
                expected: None,
                why,
            }),
        })
    }

    /// What the shadow holds at `addr` in `mm` (None: nothing readable).
    pub fn value(&self, mm: usize, addr: u64) -> Option<u64> {
        self.shadow.value(mm, addr)
    }
}
