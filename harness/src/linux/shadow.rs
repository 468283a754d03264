//! The shadow memory (oracles::shadow) in the kvm target: kept from the
//! ops alone, as in the mirror target ([`crate::mirror::exec`]), and
//! checked at every load, CPU or guest, and every guest store.
//!
//! The linux target runs each op to completion, so the shadow learns an
//! op's effect range by range while the simulation applies it (what its
//! invalidations cover) and what it does at its finish from its result.

use mm::{MmError, MmOp, Outcome as MmOutcome, Task};
use notifier::Range;
use oracles::shadow::{page_len, Mismatch, Shadow};

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
        if !task.just_applied() {
            return Ok(());
        }
        let Some(r) = task.open_range() else {
            return Ok(());
        };
        self.apply(mm, task, r)
    }

    fn apply(&mut self, mm: usize, task: &Task, r: Range) -> Result<(), String> {
        let sh = &mut self.shadow;
        match *task.op() {
            MmOp::Mmap { .. } | MmOp::Munmap { .. } => sh.unmap(mm, r.start, r.end),
            MmOp::Mprotect { prot, .. } => sh.protect(mm, r.start, r.end, prot),
            MmOp::Dontneed { .. } | MmOp::OomReap | MmOp::Exit => sh.zap(mm, r.start, r.end),
            MmOp::Mremap {
                addr,
                old_len,
                new_len,
                new_addr,
                dontunmap,
            } => match task.destination() {
                Some(dst) if r.start == addr && page_len(old_len) != 0 => {
                    let (old_len, new_len) = (page_len(old_len), page_len(new_len));
                    if new_addr.is_none() && sh.any_mapped(mm, dst, dst.saturating_add(new_len)) {
                        return Err(format!(
                            "mremap without MREMAP_FIXED moved {addr:#x} over a mapping at {dst:#x}"
                        ));
                    }
                    sh.move_range(mm, addr, old_len, new_len, dst, dontunmap)?;
                }
                _ => sh.unmap(mm, r.start, r.end),
            },
            _ => {}
        }
        Ok(())
    }

    /// `op` on `mm` finished with `r`: what it did at its finish. A CPU
    /// load is checked; a store is recorded (and checked for permission).
    pub fn done(
        &mut self,
        mm: usize,
        op: MmOp,
        r: &Result<MmOutcome, MmError>,
    ) -> Result<(), Box<Mismatch>> {
        let Ok(out) = r else {
            return Ok(());
        };
        let inconsistent = |why: String| {
            Box::new(Mismatch {
                mm,
                addr: 0,
                got: None,
                expected: None,
                why,
            })
        };
        match (op, out) {
            (
                MmOp::Mmap {
                    len, kind, prot, ..
                },
                MmOutcome::Addr(a),
            ) => self.shadow.map(mm, *a, len, kind, prot),
            (MmOp::Mprotect { addr, len, prot }, _) => {
                self.shadow
                    .protect(mm, addr, addr.saturating_add(page_len(len)), prot)
            }
            (
                MmOp::Mremap {
                    addr,
                    old_len,
                    new_len,
                    ..
                },
                MmOutcome::Addr(a),
            ) => {
                let (old_len, new_len) = (page_len(old_len), page_len(new_len));
                if old_len == 0 && *a != addr {
                    self.shadow
                        .move_range(mm, addr, 0, new_len, *a, true)
                        .map_err(inconsistent)?;
                } else if *a == addr && new_len > old_len {
                    self.shadow
                        .grow(mm, addr, old_len, new_len)
                        .map_err(inconsistent)?;
                }
            }
            (MmOp::Fork, MmOutcome::Forked(_)) => self.shadow.fork(mm, 1),
            (MmOp::Exit, _) => self.shadow.exit(mm),
            (MmOp::Access { addr, write: None }, MmOutcome::Value(v)) => {
                self.shadow.check_load(mm, addr, *v)?
            }
            (
                MmOp::Access {
                    addr,
                    write: Some(_),
                },
                MmOutcome::Value(v),
            ) => self.shadow.store(mm, addr, *v)?,
            _ => {}
        }
        Ok(())
    }

    /// What the shadow holds at `addr` in `mm` (None: nothing readable).
    pub fn value(&self, mm: usize, addr: u64) -> Option<u64> {
        self.shadow.value(mm, addr)
    }
}
