//! The mirror oracles of DESIGN §5, on the data they check: the CPU page
//! table of an address space and a device's page table.

use mirror::DevPte;
use mm::{Mm, Phys, Pte};

/// A device PTE that the CPU no longer backs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StalePte {
    /// The page.
    pub addr: u64,
    /// What the device maps.
    pub device: DevPte,
    /// What the CPU maps there now.
    pub cpu: Option<Pte>,
}

/// No stale PTE: every device PTE maps a page that the CPU maps to the
/// same frame, and grants write only where the CPU PTE is writable. A
/// device-private page is reachable only by its owner, and atomic access
/// only through the device's own exclusive entry. `owner` is the device's.
pub fn stale_pte(
    mm: &Mm,
    owner: u64,
    device: impl IntoIterator<Item = (u64, DevPte)>,
) -> Option<StalePte> {
    device.into_iter().find_map(|(addr, d)| {
        let cpu = mm.pte(addr);
        let readable = mm.vma_at(addr).is_some_and(|v| v.read);
        let ok = readable
            && match cpu {
                Some(Pte::Present { frame, writable }) => {
                    frame == d.frame && (writable || !d.write) && !d.atomic
                }
                Some(Pte::Device {
                    frame,
                    owner: o,
                    writable,
                }) => frame == d.frame && o == owner && (writable || !d.write) && !d.atomic,
                Some(Pte::Exclusive {
                    frame, owner: o, ..
                }) => frame == d.frame && o == owner,
                Some(Pte::Swap { .. }) | None => false,
            };
        (!ok).then_some(StalePte {
            addr,
            device: d,
            cpu,
        })
    })
}

/// A CPU PTE that lost its mapping or a permission outside any open
/// invalidation: devices were never told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unnotified {
    /// The page.
    pub addr: u64,
    /// The PTE before the step.
    pub before: Option<Pte>,
    /// The PTE after it.
    pub after: Option<Pte>,
}

// Changes that take nothing away from a device: filling an empty or
// swapped-out page, or adding write to the same frame.
fn harmless(before: Option<Pte>, after: Option<Pte>) -> bool {
    match (before, after) {
        (None, _) | (Some(Pte::Swap { .. }), Some(Pte::Present { .. })) => true,
        (
            Some(Pte::Present {
                frame: a,
                writable: w,
            }),
            Some(Pte::Present { frame: b, writable }),
        ) => a == b && (writable || !w),
        (b, a) => b == a,
    }
}

/// CPU PTEs change only between the start and the end of an invalidation
/// that covers them (DESIGN §3). `before` and `after` are one address
/// space's PTEs around one step, ascending; `open` is the range the step's
/// operation had open while applying.
pub fn unnotified(
    before: &[(u64, Pte)],
    after: &[(u64, Pte)],
    open: Option<&notifier::Range>,
) -> Option<Unnotified> {
    let covered = |a: u64| open.is_some_and(|r| r.start <= a && a < r.end);
    let (mut i, mut j) = (0, 0);
    while i < before.len() || j < after.len() {
        let (addr, b, a) = match (before.get(i), after.get(j)) {
            (Some(&(x, p)), Some(&(y, q))) if x == y => {
                i += 1;
                j += 1;
                (x, Some(p), Some(q))
            }
            (Some(&(x, p)), Some(&(y, _))) if x < y => {
                i += 1;
                (x, Some(p), None)
            }
            (Some(&(x, p)), None) => {
                i += 1;
                (x, Some(p), None)
            }
            (_, Some(&(y, q))) => {
                j += 1;
                (y, None, Some(q))
            }
            (None, None) => break,
        };
        if !harmless(b, a) && !covered(addr) {
            return Some(Unnotified {
                addr,
                before: b,
                after: a,
            });
        }
    }
    None
}

/// A CPU mapping that must not exist: a present PTE on device-private
/// memory, or on a frame that some address space holds as device-exclusive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadCpuMapping {
    /// The address space.
    pub mm: u8,
    /// The page.
    pub addr: u64,
    /// The PTE.
    pub pte: Pte,
    /// Why it is wrong.
    pub why: &'static str,
}

/// An exclusive page has no CPU mapping while it is exclusive, and device
/// memory is never mapped by the CPU directly.
pub fn bad_cpu_mapping<'a>(
    mms: impl Iterator<Item = &'a Mm> + Clone,
    phys: &Phys,
) -> Option<BadCpuMapping> {
    let mut exclusive = Vec::new();
    for mm in mms.clone() {
        for (_, p) in mm.ptes() {
            if let Pte::Exclusive { frame, .. } = p {
                exclusive.push(frame);
            }
        }
    }
    exclusive.sort_unstable();
    for mm in mms {
        for (addr, p) in mm.ptes() {
            if let Pte::Present { frame, .. } = p {
                let why = if phys.frame(frame).device.is_some() {
                    "the CPU maps device-private memory"
                } else if exclusive.binary_search(&frame).is_ok() {
                    "the CPU maps a page held device-exclusive"
                } else {
                    continue;
                };
                return Some(BadCpuMapping {
                    mm: mm.id.0,
                    addr,
                    pte: p,
                    why,
                });
            }
        }
    }
    None
}

/// The reference mirror: no caching, every access walks the CPU page
/// table. What a device access at `addr` must see (None: no mapping).
pub fn reference_read(mm: &Mm, phys: &Phys, addr: u64) -> Option<u64> {
    mm.cpu_view(phys, addr)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mm::{FrameId, MmConfig, MmId};

    #[test]
    fn only_covered_or_harmless_pte_changes_pass() {
        let p = |f: u32, w: bool| Pte::Present {
            frame: FrameId(f),
            writable: w,
        };
        let r = notifier::Range::new(0x1000, 0x2000, notifier::Event::Clear);
        // Write-protect without an invalidation: caught.
        let lost = unnotified(&[(0x1000, p(1, true))], &[(0x1000, p(1, false))], None);
        assert_eq!(lost.map(|u| u.addr), Some(0x1000));
        // The same inside the open range: fine.
        assert!(unnotified(&[(0x1000, p(1, true))], &[(0x1000, p(1, false))], Some(&r)).is_none());
        // Populate, upgrade in place and swap-in need no invalidation.
        assert!(unnotified(&[], &[(0x5000, p(2, false))], None).is_none());
        assert!(unnotified(&[(0x5000, p(2, false))], &[(0x5000, p(2, true))], None).is_none());
        let swap = Pte::Swap { slot: 0 };
        assert!(unnotified(&[(0x5000, swap)], &[(0x5000, p(3, true))], None).is_none());
        // An unmap or a new frame outside the range: caught.
        assert!(unnotified(&[(0x5000, p(2, true))], &[], Some(&r)).is_some());
        assert!(unnotified(&[(0x5000, p(2, true))], &[(0x5000, p(4, true))], None).is_some());
    }

    #[test]
    fn a_device_pte_without_a_cpu_pte_is_stale() {
        let mm = Mm::new(MmId(0), MmConfig::default());
        let d = DevPte::small(FrameId(3), false);
        assert_eq!(
            stale_pte(&mm, 1, [(0x1000, d)]),
            Some(StalePte {
                addr: 0x1000,
                device: d,
                cpu: None
            })
        );
        assert_eq!(stale_pte(&mm, 1, []), None);
        assert_eq!(reference_read(&mm, &Phys::new(), 0x1000), None);
    }

    struct Idle;
    impl mm::Env for Idle {
        fn callbacks_can_run(&self, _: MmId, _: &notifier::Range) -> bool {
            true
        }
    }

    fn run(mm: &mut Mm, phys: &mut Phys, op: mm::MmOp) {
        let mut t = mm::Task::new(op, 0);
        loop {
            match t.step(mm, phys, &Idle) {
                mm::TaskStep::Done(r) => {
                    r.unwrap();
                    return;
                }
                mm::TaskStep::Progress => {}
                mm::TaskStep::Blocked(b) => panic!("{b:?}"),
            }
        }
    }

    #[test]
    fn device_memory_is_reachable_only_by_its_owner() {
        let (mut mm, mut phys) = (Mm::new(MmId(0), MmConfig::default()), Phys::new());
        let a = 0x10_0000;
        let op = mm::MmOp::Mmap {
            addr: a,
            len: 2 * mm::PAGE,
            kind: mm::MapKind::AnonPrivate,
            prot: mm::Prot::ReadWrite,
        };
        run(&mut mm, &mut phys, op);
        let (len, b) = (mm::PAGE, a + mm::PAGE);
        run(
            &mut mm,
            &mut phys,
            mm::MmOp::DeviceMigrate {
                addr: a,
                len,
                owner: 1,
            },
        );
        run(
            &mut mm,
            &mut phys,
            mm::MmOp::MakeExclusive {
                addr: b,
                len,
                owner: 1,
            },
        );
        let (Some(Pte::Device { frame: fa, .. }), Some(Pte::Exclusive { frame: fb, .. })) =
            (mm.pte(a), mm.pte(b))
        else {
            panic!("{:?} {:?}", mm.pte(a), mm.pte(b));
        };
        let own = [(a, DevPte::small(fa, true))];
        assert_eq!(stale_pte(&mm, 1, own), None);
        assert!(
            stale_pte(&mm, 2, own).is_some(),
            "another device's private page"
        );
        let atomic = DevPte {
            atomic: true,
            ..DevPte::small(fb, true)
        };
        assert_eq!(stale_pte(&mm, 1, [(b, atomic)]), None);
        assert!(stale_pte(&mm, 2, [(b, atomic)]).is_some());
        assert!(
            stale_pte(&mm, 1, [(a, atomic)]).is_some(),
            "atomic on a private page"
        );
        assert_eq!(bad_cpu_mapping([&mm].into_iter(), &phys), None);
    }
}
